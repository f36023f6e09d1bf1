"""``dreamshift pretrain`` (mbrl.runs.pretrain, encoders.pretrain_data, dreamshift.pretrain) and the bundled
``dreamshift-vit`` encoder. Tiny configs (``vit-micro``, a few frames of one dm_control env, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from encoders.pretrain_data import collect_frames, expand_envs
from envs.errors import ConfigError
from mbrl.config import build_config
from mbrl.runs.pretrain import (
    DINO,
    PretrainConfig,
    build_backbone,
    pretrain,
    save_model,
)

ENV = "dmc:cartpole_balance"


def _cfg(out, **kw) -> PretrainConfig:
    base = dict(envs=ENV, frames=24, arch="vit-micro", objective="dino", out=str(out), steps=6, batch_size=8,
                out_dim=64, n_local=1, episode_len=7, log_every=1, save_every=3, threads=1, progress=False)
    return PretrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def frames():
    """``(24, 64, 64, 3) uint8`` frames of cartpole, half the episodes shifted."""
    return collect_frames([ENV], 24, diversity=0.5, seed=0, episode_len=3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, frames):
    """A vit-micro DINO teacher after 3 steps, saved with save_model -> (dir, in-memory backbone, mean, std)."""
    torch.manual_seed(0)
    x = torch.from_numpy(frames.frames).permute(0, 3, 1, 2).contiguous()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    obj = DINO(build_backbone("vit-micro", 0), 64, 1, mean, std)
    opt = torch.optim.AdamW(obj.student.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss, _ = obj.loss(x[:8], gen, 0.04)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.update_teacher(0.9)
    out = tmp_path_factory.mktemp("micro")
    backbone = obj.export_backbone().eval()
    save_model(backbone, out, mean.tolist(), std.tolist())
    return out, backbone, mean, std


def _hf_cfg(path, **extra):
    return build_config({"encoder": f"hf:{path}", "encoder_input_size": "64", **extra})


# ------------------------------------------------------------------------------------------------- data


def test_expand_envs_globs_and_lists():
    names = expand_envs("dmc:cartpole_*,dmc:walker_walk,dmc:cartpole_balance")
    assert names[-1] == "dmc:walker_walk" and "dmc:cartpole_swingup" in names
    assert len(names) == len(set(names)) and all(n.startswith("dmc:cartpole_") for n in names[:-1])
    assert len(expand_envs("dmc:*")) > 20


def test_collect_frames_shapes_labels_and_shift_fraction(frames):
    assert frames.frames.shape == (24, 64, 64, 3) and frames.frames.dtype == np.uint8
    assert set(frames.env_ids.tolist()) == {0} and frames.env_names == [ENV]
    shifted = frames.kinds > 0
    assert (frames.severities[shifted] >= 1).all() and (frames.severities[~shifted] == 0).all()
    assert 0 < shifted.sum() < 24  # diversity 0.5 over 6 episodes: seed 0 gives both
    clean = collect_frames([ENV], 8, diversity=0.0, seed=0, episode_len=7)
    assert (clean.kinds == 0).all()
    assert frames.frames.std() > 1.0  # not blank


# ------------------------------------------------------------------------------------------- objectives


def test_dino_student_fits_a_fixed_teacher(frames, single_thread):
    """With the teacher frozen (momentum 1) and the same views, the student's cross-entropy must fall."""
    torch.manual_seed(0)
    x = torch.from_numpy(frames.frames).permute(0, 3, 1, 2)[:8]
    obj = DINO(build_backbone("vit-micro", 0), 32, 0, torch.full((3,), 0.5), torch.full((3,), 0.25))
    obj.center_momentum = 1.0  # keep the target fixed too
    opt = torch.optim.Adam(obj.student.parameters(), 1e-3)
    losses = []
    for _ in range(12):
        loss, stats = obj.loss(x, torch.Generator().manual_seed(1), 0.04)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert 0 < stats["teacher_entropy"] <= np.log(32) + 1e-6


@pytest.mark.slow
def test_tiny_mae_run_lowers_its_loss(tmp_path, single_thread):
    s = pretrain(_cfg(tmp_path / "mae", objective="mae", steps=24, lr=3e-3, log_every=4))
    log = [json.loads(line) for line in (tmp_path / "mae" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(4, 25, 4))
    assert log[-1]["loss"] < 0.9 * log[0]["loss"], [r["loss"] for r in log]
    assert s["final_loss"] == log[-1]["loss"] and s["finished"] and s["num_frames"] == 24
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "loss_curve.png",
                 "MODEL_CARD.md", "pretrain_summary.json"):
        assert (tmp_path / "mae" / name).is_file(), name
    assert not (tmp_path / "mae" / "checkpoint.json").exists() and not (tmp_path / "mae" / "frames.npz").exists()
    assert not list((tmp_path / "mae").glob("checkpoint*"))
    assert "mae" in (tmp_path / "mae" / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, monkeypatch, single_thread):
    ref = pretrain(_cfg(tmp_path / "ref"))
    calls = {"n": 0}
    original = DINO.loss

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the checkpoint at step 3
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DINO, "loss", failing)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoint.json").is_file() and not (tmp_path / "run" / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*.safetensors")] == ["checkpoint-3.safetensors"]
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(_cfg(tmp_path / "run"))
    with pytest.raises(ConfigError, match="different arguments"):
        pretrain(_cfg(tmp_path / "run", resume=True, seed=1))
    monkeypatch.setattr(DINO, "loss", original)
    got = pretrain(_cfg(tmp_path / "run", resume=True))
    assert got["final_loss"] == ref["final_loss"]
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x)["step"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------ encoder round trip


@pytest.mark.slow
def test_saved_model_reloads_bit_identically_through_registry(tiny_model, single_thread):
    from encoders.registry import build_encoder

    out, backbone, mean, std = tiny_model
    enc = build_encoder(f"hf:{out}", image_size=64, cfg=_hf_cfg(out, encoder_mode="frozen", encoder_feature="cls"))
    saved, loaded = backbone.state_dict(), enc.backbone.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(enc.mean.flatten(), mean) and torch.equal(enc.std.flatten(), std)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    x = (images.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        expected = backbone(pixel_values=x).pooler_output
        assert torch.equal(enc(images), expected)


@pytest.mark.parametrize("mode", ["frozen", "partial:1", "full", "adapter", "lora"])
def test_every_finetune_mode_builds_and_backpropagates(tiny_model, mode, single_thread):
    from encoders.registry import build_encoder

    out = tiny_model[0]
    enc = build_encoder(f"hf:{out}", image_size=64, cfg=_hf_cfg(out, encoder_mode=mode, encoder_feature="mean"))
    enc.train()
    feats = enc(torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8))
    assert feats.shape == (3, 64) and torch.isfinite(feats).all()
    params = enc.encoder_parameters()
    if mode == "frozen":
        assert params == [] and not feats.requires_grad
        return
    feats.square().mean().backward()
    named = [(n, p) for n, p in [*enc.backbone.named_parameters(), *enc.adapters.named_parameters()] if p.requires_grad]
    assert named and len(named) == len(params)
    # every trainable tensor gets a gradient, except Dinov2's mask token (used only with bool_masked_pos)
    assert all(p.grad is not None for n, p in named if "mask_token" not in n)
    assert any(p.grad.abs().sum() > 0 for n, p in named if p.grad is not None)


# ------------------------------------------------------------------------------------- bundled encoder


@pytest.mark.parametrize("mode", ["frozen", "partial:1"])
def test_bundled_dreamshift_vit_builds_and_gives_finite_features(mode, single_thread):
    from encoders.hf import DREAMSHIFT_VIT_DIR
    from encoders.registry import build_encoder

    assert (DREAMSHIFT_VIT_DIR / "model.safetensors").is_file()
    assert (DREAMSHIFT_VIT_DIR / "MODEL_CARD.md").is_file()
    cfg = build_config({"encoder": "dreamshift-vit", "encoder_mode": mode})
    enc = build_encoder("dreamshift-vit", image_size=64, cfg=cfg)
    assert enc.input_size == 64 and enc.feature == "cls" and enc.out_dim == 192
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    feats = enc(images)
    assert feats.shape == (2, 192) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    trainable = enc.encoder_parameters()
    assert (len(trainable) > 0) == (mode == "partial:1")
    # the bundled weights, not a fresh init: every stored tensor is in the backbone (transformers 5 renames
    # attention keys on load, e.g. attention.attention.query -> attention.q_proj, so match by value)
    state = load_file(DREAMSHIFT_VIT_DIR / "model.safetensors")
    loaded = list(enc.backbone.state_dict().values())
    assert len(state) == len(loaded)
    assert all(any(v.shape == w.shape and torch.equal(v, w) for w in loaded) for v in state.values())


def test_dreamshift_vit_rejects_variant():
    from encoders.registry import build_encoder

    with pytest.raises(ConfigError, match="no variant"):
        build_encoder("dreamshift-vit:big", image_size=64, cfg=build_config({}))


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, match", [
    ({"envs": "dmc:nope_*"}, "matches no env"),
    ({"envs": " , "}, "empty"),
    ({"arch": "vit-huge"}, "unknown --arch"),
    ({"objective": "simclr"}, "unknown --objective"),
    ({"frames": 0}, "--frames must be >= 1"),
    ({"diversity": 1.5}, "--diversity"),
    ({"resume": True}, "no checkpoint"),
])
def test_bad_input_raises_config_error(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists()  # nothing written


def test_finished_out_is_not_overwritten(tmp_path, single_thread):
    out = tmp_path / "done"
    pretrain(_cfg(out, steps=2))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="finished model"):
        pretrain(_cfg(out, steps=2))
    with pytest.raises(ConfigError, match="finished model"):
        pretrain(_cfg(out, steps=2, resume=True))
    assert (out / "model.safetensors").read_bytes() == before


def test_cli_reports_one_error_line(tmp_path, capsys):
    from dreamshift import main

    rc = main(["pretrain", "--envs", "dmc:*", "--arch", "vit-huge", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: unknown --arch 'vit-huge'")
    rc = main(["pretrain", "--envs", "atari:*", "--out", str(tmp_path / "o")])
    assert rc == 2 and "matches no env" in capsys.readouterr().err
