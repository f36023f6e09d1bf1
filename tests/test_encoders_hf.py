"""Hugging Face backbones (``encoders.hf``) on tiny random models saved to disk: no network, a few seconds.

The tiny models go through the real registry path (``cfg.encoder_path`` / ``hf:<dir>``), so loading, structure
discovery, fine-tuning modes, feature choices and weight merging are tested as in a run.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from encoders.finetune import count_trainable, merge_weights
from envs.errors import ConfigError
from mbrl.config import build_config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft -> transformers

D, LAYERS = 32, 4
SMALL = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64)
# name -> (encoder setting with {dir}, encoder_input_size, patch tokens P at that size)
KINDS = {"dinov2": ("dinov2", 28, 4), "clip": ("clip", 32, 4), "vit": ("hf:{dir}", 32, 4)}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Tiny random checkpoints (``save_pretrained``) of each architecture."""
    import transformers as tf

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    models = {
        "dinov2": tf.Dinov2Model(tf.Dinov2Config(**SMALL, image_size=28, patch_size=14)),
        "clip": tf.CLIPVisionModel(tf.CLIPVisionConfig(**SMALL, image_size=32, patch_size=16)),
        "vit": tf.ViTModel(tf.ViTConfig(**SMALL, image_size=32, patch_size=16)),
        "vit_nopool": tf.ViTModel(tf.ViTConfig(**SMALL, image_size=32, patch_size=16), add_pooling_layer=False),
        "dinov2_reg": tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**SMALL, image_size=28, patch_size=14,
                                                                                num_register_tokens=4)),
        "clip_full": tf.CLIPModel(tf.CLIPConfig(
            text_config=dict(hidden_size=D, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64,
                             vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
            vision_config=dict(**SMALL, image_size=32, patch_size=16), projection_dim=16)),
    }
    dirs = {}
    for name, model in models.items():
        dirs[name] = str(root / name)
        model.save_pretrained(dirs[name])
    return dirs


def _cfg(model_dirs, kind: str, **extra: str):
    encoder, size, _ = KINDS[kind]
    over = {"encoder": encoder.format(dir=model_dirs[kind]), "encoder_input_size": str(size)}
    if "{dir}" not in encoder:
        over["encoder_path"] = model_dirs[kind]
    return build_config({**over, **extra})


def _build(model_dirs, kind: str, **extra: str):
    from encoders.registry import build_encoder

    cfg = _cfg(model_dirs, kind, **extra)
    return build_encoder(cfg.encoder, image_size=cfg.image_size, cfg=cfg)


def _images(n: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


# ------------------------------------------------------------------------------------------------ import


@pytest.mark.slow
def test_import_is_lazy():
    code = "import sys, encoders.hf; assert 'transformers' not in sys.modules and 'peft' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("feature", ["cls", "mean", "patch", "patch_flatten"])
@pytest.mark.slow
def test_output_shapes(model_dirs, kind, feature, single_thread):
    _, size, p = KINDS[kind]
    enc = _build(model_dirs, kind, encoder_feature=feature, encoder_token_dim="8")
    x = _images()
    assert enc.preprocess(x).shape == (3, 3, size, size)
    feats = enc.features(x)
    want_f = D if feature in ("cls", "mean") else p * D
    assert feats.shape == (3, want_f) == (3, enc.feature_dim)
    want_out = {"cls": D, "mean": D, "patch": p * 8, "patch_flatten": p * D}[feature]
    out = enc(x)
    assert out.shape == (3, want_out) == (3, enc.out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_defaults_and_token_layout(model_dirs, single_thread):
    dino, clip, vit = (_build(model_dirs, k) for k in ("dinov2", "clip", "vit"))
    assert (dino.feature, clip.feature, vit.feature) == ("patch", "cls", "mean")
    assert dino.mode.kind == clip.mode.kind == "frozen" and dino.cacheable
    assert dino.model_id == "facebook/dinov2-small" and clip.model_id == "openai/clip-vit-base-patch32"
    assert vit.model_id == model_dirs["vit"]
    assert dino.lora_targets == clip.lora_targets == ["q_proj", "v_proj"]
    pixels = dino.preprocess(_images(2))
    out = dino.backbone(pixel_values=pixels)
    pooled, tokens = dino.backbone_tokens(pixels)
    assert torch.equal(pooled, out.last_hidden_state[:, 0]) and torch.equal(tokens, out.last_hidden_state[:, 1:])
    pixels = clip.preprocess(_images(2))
    out = clip.backbone(pixel_values=pixels)
    pooled, tokens = clip.backbone_tokens(pixels)
    assert torch.equal(pooled, out.pooler_output) and torch.equal(tokens, out.last_hidden_state[:, 1:])
    assert dino.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert clip.std.flatten().tolist() == pytest.approx([0.26862954, 0.26130258, 0.27577711])


@pytest.mark.parametrize(("kind", "size", "p"), [("dinov2", 42, 9), ("clip", 48, 9)])
def test_input_size_other_than_config(model_dirs, kind, size, p, single_thread):
    enc = _build(model_dirs, kind, encoder_input_size=str(size), encoder_feature="patch_flatten")
    assert enc.num_tokens == p and enc(_images(2)).shape == (2, p * D)


def test_input_size_not_divisible_by_patch(model_dirs):
    with pytest.raises(ConfigError, match="divisible by the patch size 14"):
        _build(model_dirs, "dinov2", encoder_input_size="30")


# ---------------------------------------------------------------------------------------- modes


def _numel(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _trainable(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", list(KINDS))
def test_requires_grad_per_mode(model_dirs, kind):
    total = None
    for mode in ("frozen", "partial:2", "full", "adapter:top", "adapter:bottom", "adapter:all", "lora:4"):
        enc = _build(model_dirs, kind, encoder_mode=mode)
        blocks, after = enc.blocks, enc.after_modules
        assert len(blocks) == LAYERS and after, mode
        n_backbone = count_trainable(enc.backbone)
        if mode == "frozen":
            total = _numel([enc.backbone])
            assert n_backbone == 0 and enc.encoder_parameters() == [] and len(enc.adapters) == 0
        elif mode == "partial:2":
            assert [_trainable([b]) for b in blocks] == [0, 0, _numel([blocks[2]]), _numel([blocks[3]])]
            assert _trainable(after) == _numel(after) > 0
            assert n_backbone == _numel(blocks[2:]) + _numel(after) < total
            # embeddings (everything outside the last blocks and after-modules) stay frozen
            trainable_ids = {id(p) for m in [*blocks[2:], *after] for p in m.parameters()}
            assert all(not p.requires_grad for p in enc.backbone.parameters() if id(p) not in trainable_ids)
        elif mode == "full":
            assert n_backbone == total
            assert sum(p.numel() for p in enc.encoder_parameters()) == total
        elif mode.startswith("adapter"):
            want = {"adapter:top": 1, "adapter:bottom": 1, "adapter:all": LAYERS}[mode]
            assert n_backbone == 0 and len(enc.adapters) == want
            assert count_trainable(enc.adapters) == _numel([enc.adapters]) > 0
            assert {id(p) for p in enc.encoder_parameters()} == {id(p) for p in enc.adapters.parameters()}
        else:
            names = [n for n, p in enc.backbone.named_parameters() if p.requires_grad]
            assert names and all("lora_" in n for n in names)
            lora = sum(p.numel() for n, p in enc.backbone.named_parameters() if "lora_" in n)
            assert n_backbone == lora == LAYERS * 2 * 2 * (4 * D)  # blocks x {q, v} x {A, B} x rank*D
            assert sum(p.numel() for p in enc.encoder_parameters()) == lora


def test_frozen_backbone_stays_in_eval_mode(model_dirs):
    enc = _build(model_dirs, "dinov2", encoder_mode="adapter")
    enc.train()
    assert not enc.backbone.training and enc.adapters.training
    enc = _build(model_dirs, "dinov2", encoder_mode="partial:2")
    enc.train()
    assert enc.backbone.training


def _fit(enc, steps: int = 8) -> list[float]:
    """A few Adam steps on ``MSE(head(enc(x)), target)``; returns the losses."""
    torch.manual_seed(0)
    head = nn.Linear(enc.out_dim, 4)
    x, target = _images(4, seed=1), torch.randn(4, 4)
    params = [*enc.encoder_parameters(), *head.parameters()]
    if enc.token_head is not None:
        params += list(enc.token_head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    enc.train()
    losses = []
    for _ in range(steps):
        loss = (head(enc(x)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _base_weights(enc) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in enc.backbone.state_dict().items() if "lora_" not in k}


@pytest.mark.parametrize(("kind", "mode"), [("dinov2", "frozen"), ("dinov2", "adapter:all"), ("dinov2", "lora:4"),
                                            ("clip", "lora:4"), ("vit", "adapter:middle"), ("dinov2", "full"),
                                            ("clip", "partial:2")])
def test_backbone_weights_fixed_unless_trained(model_dirs, kind, mode, single_thread):
    enc = _build(model_dirs, kind, encoder_mode=mode)
    before = _base_weights(enc)
    extra_before = [p.detach().clone() for p in enc.encoder_parameters()]
    losses = _fit(enc)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    after = _base_weights(enc)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if enc.mode.backbone_frozen:
        assert changed == []
        if mode != "frozen":  # adapters / LoRA did train
            assert any(not torch.equal(a, p) for a, p in zip(extra_before, enc.encoder_parameters(), strict=True))
    elif mode == "full":
        assert len(changed) > len(before) // 2
    else:  # partial:2: only the last 2 blocks and the final norm
        assert changed and all(k.startswith(("encoder.layers.2.", "encoder.layers.3.", "post_layernorm."))
                               for k in changed), changed


# ------------------------------------------------------------------------------------------- merging


@pytest.mark.parametrize(("kind", "mode"), [("dinov2", "full"), ("clip", "partial:2"), ("vit", "full")])
@pytest.mark.slow
def test_pretrained_state_dict_and_merge(model_dirs, kind, mode, single_thread):
    import transformers as tf

    enc = _build(model_dirs, kind, encoder_mode=mode)
    cls = {"dinov2": tf.Dinov2Model, "clip": tf.CLIPVisionModel, "vit": tf.AutoModel}[kind]
    fresh = cls.from_pretrained(model_dirs[kind]).state_dict()
    pre = enc.pretrained_state_dict()
    assert pre.keys() == fresh.keys() == enc.backbone.state_dict().keys()
    assert all(torch.equal(pre[k], fresh[k]) for k in pre)
    _fit(enc, steps=3)
    ft = {k: v.detach().clone() for k, v in enc.backbone.state_dict().items()}
    assert any(not torch.equal(pre[k], ft[k]) for k in pre)
    m0, m1, mh = merge_weights(pre, ft, 0.0), merge_weights(pre, ft, 1.0), merge_weights(pre, ft, 0.5)
    assert all(torch.equal(m0[k], pre[k]) and torch.equal(m1[k], ft[k]) for k in pre)
    enc.backbone.load_state_dict(mh)  # keys match in full/partial modes
    enc.eval()
    x = _images(2)
    enc.backbone.load_state_dict(m0)
    ref = _build(model_dirs, kind, encoder_mode="frozen")
    ref.token_head = enc.token_head  # same head: outputs then depend on the backbone only
    assert torch.allclose(enc(x), ref(x), atol=1e-6)


def test_lora_merge_scales_update(model_dirs, single_thread):
    enc = _build(model_dirs, "dinov2", encoder_mode="lora:4", encoder_feature="mean")
    ref = _build(model_dirs, "dinov2", encoder_mode="frozen", encoder_feature="mean")
    _fit(enc, steps=4)
    pre = enc.pretrained_state_dict()
    ft = {k: v.detach().clone() for k, v in enc.backbone.state_dict().items()}
    assert not any("lora_A" in k for k in pre) and all(not pre[k].any() for k in pre if "lora_B" in k)
    x = _images(2)
    enc.eval()
    tuned = enc(x)
    enc.backbone.load_state_dict(merge_weights(pre, ft, 0.0))
    assert torch.allclose(enc(x), ref(x), atol=1e-6) and not torch.allclose(tuned, ref(x), atol=1e-4)
    enc.backbone.load_state_dict(merge_weights(pre, ft, 1.0))
    assert torch.equal(enc(x), tuned)


def test_untrained_pooler_is_not_used_and_reproduced(model_dirs):
    """A ViT checkpoint without pooler weights: AutoModel initialises the pooler randomly; the encoder pools the
    CLS token instead, and pretrained_state_dict() returns the pooler it started from."""
    from encoders.registry import build_encoder

    cfg = build_config({"encoder": f"hf:{model_dirs['vit_nopool']}", "encoder_input_size": "32",
                        "encoder_feature": "cls", "encoder_mode": "full"})
    enc = build_encoder(cfg.encoder, image_size=64, cfg=cfg)
    assert enc.pooled_from == "first"
    start = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    pre = enc.pretrained_state_dict()
    assert all(torch.equal(pre[k], start[k]) for k in start)


# ------------------------------------------------------------------------------------------- generic hf


def test_generic_hf_structure(model_dirs, single_thread):
    from encoders.hf import find_blocks, modules_after

    vit = _build(model_dirs, "vit")
    assert len(vit.blocks) == LAYERS and vit.pooled_from == "pooler" and vit.num_prefix_tokens == 1
    assert [type(m).__name__ for m in vit.after_modules] == ["LayerNorm", "ViTPooler"]
    assert vit.lora_targets == ["q_proj", "v_proj"]
    path, blocks = find_blocks(vit.backbone)
    assert len(blocks) == LAYERS and modules_after(vit.backbone, path) == vit.after_modules


def test_generic_hf_register_tokens(model_dirs, single_thread):
    from encoders.registry import build_encoder

    cfg = build_config({"encoder": f"hf:{model_dirs['dinov2_reg']}", "encoder_input_size": "28",
                        "encoder_feature": "patch_flatten"})
    enc = build_encoder(cfg.encoder, image_size=64, cfg=cfg)
    assert enc.num_prefix_tokens == 5 and enc.num_tokens == 4  # CLS + 4 registers dropped
    assert enc(_images(2)).shape == (2, 4 * D)


def test_generic_hf_uses_vision_model(model_dirs, single_thread):
    from encoders.registry import build_encoder

    cfg = build_config({"encoder": f"hf:{model_dirs['clip_full']}", "encoder_input_size": "32",
                        "encoder_mode": "partial:1"})
    enc = build_encoder(cfg.encoder, image_size=64, cfg=cfg)
    assert len(enc.blocks) == LAYERS  # vision layers, not the 6 text layers
    assert not any(k.startswith("text_model") for k in enc.backbone.state_dict())
    assert enc(_images(2)).shape == (2, D)
    pre = enc.pretrained_state_dict()
    assert pre.keys() == enc.backbone.state_dict().keys()


# ---------------------------------------------------------------------------------------------- errors


def test_missing_local_dir_raises_config_error():
    from encoders.registry import build_encoder

    cfg = build_config({"encoder": "dinov2", "encoder_path": "/nonexistent/dreamshift-weights"})
    with pytest.raises(ConfigError, match="download") as info:
        build_encoder(cfg.encoder, image_size=64, cfg=cfg)
    assert "facebook/dinov2-small" in str(info.value) and "\n" not in str(info.value)


def test_dir_without_weights_raises_config_error(tmp_path):
    from encoders.registry import build_encoder

    for over in ({"encoder": "clip", "encoder_path": str(tmp_path)}, {"encoder": f"hf:{tmp_path / 'missing'}"}):
        cfg = build_config(over)
        with pytest.raises(ConfigError, match="download") as info:
            build_encoder(cfg.encoder, image_size=64, cfg=cfg)
        assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("offline", [True, False])
def test_unknown_model_id_fails_fast_without_network(monkeypatch, offline):
    import encoders.hf
    from encoders.registry import build_encoder

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # no network in tests: the Hub probe reports it unreachable
        monkeypatch.setattr(encoders.hf, "_hub_reachable", lambda: False)
    for name in ("hf:dreamshift-test/no-such-model", "clip:b16"):
        cfg = build_config({"encoder": name})
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            build_encoder(cfg.encoder, image_size=64, cfg=cfg)
        message = str(info.value)
        model_id = name.partition(":")[2] if name.startswith("hf:") else "openai/clip-vit-base-patch16"
        assert model_id in message and "download" in message and "\n" not in message
        assert time.perf_counter() - start < 10.0


def test_unknown_variants():
    from encoders.registry import build_encoder

    with pytest.raises(ConfigError, match="small, base, large"):
        build_encoder("dinov2:huge", image_size=64, cfg=build_config({"encoder": "dinov2:huge"}))
    with pytest.raises(ConfigError, match="b32, b16"):
        build_encoder("clip:l14", image_size=64, cfg=build_config({"encoder": "clip:l14"}))
    with pytest.raises(ConfigError, match="hf:<model id"):
        build_encoder("hf", image_size=64, cfg=build_config({"encoder": "hf"}))


# ----------------------------------------------------------------------------------------------- agents


def _batch(b: int = 2, t: int = 4, size: int = 32, a: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    return {"image": torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g),
            "action": torch.rand(b, t, a, generator=g) * 2 - 1, "reward": torch.rand(b, t, generator=g),
            "is_first": is_first, "is_terminal": torch.zeros(b, t, dtype=torch.bool)}


@pytest.mark.parametrize(("kind", "mode"), [("dinov2", "partial:2"), ("clip", "lora:4"), ("dinov2", "frozen")])
def test_agent_train_step(model_dirs, kind, mode, tiny_cfg, single_thread):
    from mbrl.agent import Agent

    cfg = tiny_cfg(encoder=kind, encoder_path=model_dirs[kind], encoder_input_size=str(KINDS[kind][1]),
                   encoder_mode=mode, optim__warmup="0")
    assert cfg.image_size == 32
    torch.manual_seed(0)
    agent = Agent(cfg, action_dim=1)
    enc = agent.wm.encoder
    before = _base_weights(enc)
    metrics = agent.train_step(_batch())
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    after = _base_weights(enc)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert (not changed) == enc.mode.backbone_frozen
