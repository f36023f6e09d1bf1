"""``dreamshift analyze``: Jaccard, attention maps, CKA, k-NN forgetting, severity calibration and world-model
diagnostics, on synthetic data, real dm_control renders, a tiny random ViT saved locally and a tiny run trained
with it (full fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, override

from dreamshift import main
from envs.errors import ConfigError
from experiments.analysis.attention import attention_grid, cls_attention, keep_mass, require_vit, upsample
from experiments.analysis.cka import linear_cka
from experiments.analysis.jaccard import jaccard_index, jaccard_per_frame
from experiments.analysis.knn import knn_accuracy
from experiments.analysis.report import RECORD_KEYS

pytest.importorskip("transformers")
pytest.importorskip("skimage")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

# tiny ViT: 32 px input, 8 px patches -> 4 x 4 = 16 patch tokens + CLS, 2 heads, 2 blocks
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> str:
    import transformers as tf

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "tiny-vit"
    tf.ViTModel(tf.ViTConfig(**VIT), add_pooling_layer=False).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory, vit_dir) -> Path:
    """A tiny run (dmc:cartpole_balance, 32 px) whose tiny ViT encoder is fully fine-tuned."""
    from mbrl.config import build_config
    from mbrl.runs.train import train

    threads = torch.get_num_threads()
    run_dir = tmp_path_factory.mktemp("runs") / "vit-full"
    try:
        train(build_config(override(TINY_RUN, f"run_dir={run_dir}", f"encoder=hf:{vit_dir}", "encoder_mode=full",
                                    "encoder_input_size=32", "encoder_feature=cls", "optim.encoder_lr=1e-3",
                                    "optim.warmup=1", "steps=150")))
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert recs and all(set(RECORD_KEYS) <= set(r) for r in recs)
    return recs


# ------------------------------------------------------------------------------------------- pure maths


def test_jaccard_index_self_complement_and_value():
    rng = np.random.default_rng(0)
    mask = rng.random((5, 16, 16)) < 0.3
    assert np.all(jaccard_per_frame(mask, mask) == 1.0)
    assert np.all(jaccard_per_frame(mask, ~mask) == 0.0)
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    assert jaccard_index(a, b) == pytest.approx(1 / 3)
    assert jaccard_index(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError):
        jaccard_index(a, b.T)


def test_keep_mass_follows_dino_thresholding():
    attn = torch.tensor([[0.1, 0.5, 0.1, 0.3]])
    assert keep_mass(attn, 0.6).tolist() == [[False, True, False, True]]  # 0.5 + 0.3 >= 0.6, 0.5 alone is not
    assert keep_mass(attn, 0.4).tolist() == [[False, True, False, False]]
    assert keep_mass(attn, 1.0).all()
    grid = keep_mass(torch.rand(3, 4, 4), 0.6)
    up = upsample(grid, (32, 32))
    assert up.shape == (3, 32, 32) and up.dtype == torch.bool
    assert torch.equal(up[:, ::8, ::8], grid)  # nearest: each patch becomes an 8 x 8 block
    with pytest.raises(ConfigError):
        keep_mass(attn, 0.0)


def test_linear_cka_identity_and_invariances():
    g = torch.Generator().manual_seed(0)
    for n, d in ((60, 12), (10, 40)):  # feature-space and Gram-matrix paths
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)  # orthogonal transform
        assert linear_cka(x, 3.7 * x + 5.0) == pytest.approx(1.0, abs=1e-10)  # isotropic scaling (+ shift)
        assert linear_cka(x @ q, 0.01 * x) == pytest.approx(1.0, abs=1e-10)
        scale = torch.linspace(0.1, 10.0, d, dtype=torch.float64)
        assert linear_cka(x, x * scale) < 0.99  # not invariant to anisotropic scaling
        other = torch.randn(n, d, generator=g, dtype=torch.float64)
        assert linear_cka(x, other) < 0.9
    with pytest.raises(ConfigError):
        linear_cka(torch.randn(5, 3), torch.randn(6, 3))


def test_knn_separable_set_is_perfect_and_shuffled_labels_are_not():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 10
    labels = torch.arange(4).repeat_interleave(50)
    x = centres[labels] + torch.randn(200, 16, generator=g)
    train, test = torch.arange(200) % 2 == 0, torch.arange(200) % 2 == 1
    assert knn_accuracy(x[train], labels[train], x[test], labels[test], k=5) >= 0.99
    shuffled = labels[torch.randperm(200, generator=g)]
    assert knn_accuracy(x[train], shuffled[train], x[test], labels[test], k=5) < 0.6


# ------------------------------------------------------------------------------------------ attention


def test_cls_attention_shape_and_no_side_effect(vit_dir, single_thread):
    from encoders.registry import build_encoder
    from mbrl.config import build_config

    cfg = build_config({"encoder": f"hf:{vit_dir}", "encoder_input_size": "32"})
    enc = build_encoder(cfg.encoder, image_size=64, cfg=cfg).eval()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    before = enc.features(images)
    implementation = enc.backbone.config._attn_implementation
    attn = cls_attention(enc, images)
    assert attn.shape == (3, 2, 16)  # (N, heads, P)
    assert torch.all(attn >= 0) and torch.all(attn.sum(-1) < 1.0) and torch.all(attn.sum(-1) > 0.5)
    assert attention_grid(attn).shape == (3, 4, 4)
    assert enc.backbone.config._attn_implementation == implementation != "eager"  # restored
    assert torch.allclose(enc.features(images), before, atol=1e-6)
    # the same frames as (N, H, W, 3) arrays give the same maps
    assert torch.allclose(cls_attention(enc, images.permute(0, 2, 3, 1).numpy()), attn)


def test_bad_input_is_a_config_error(capsys, tmp_path):
    from encoders.efficientnet import EfficientNetLiteEncoder
    from encoders.finetune import FinetuneMode
    from experiments.analysis.sources import from_settings

    with pytest.raises(ConfigError, match="ViT"):
        require_vit(EfficientNetLiteEncoder(FinetuneMode("frozen"), "mean", 32), "efficientnet-lite0")
    with pytest.raises(ConfigError, match="efficientnet-lite0"):  # names what is allowed
        from_settings({"encoder": "cnn"}, "jaccard")
    assert main(["analyze", "nope"]) == 2
    assert "unknown analysis 'nope'; allowed: jaccard, forgetting, drift, calibration, wm" in capsys.readouterr().err
    assert main(["analyze", "drift", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", "wm", "--out", str(tmp_path)]) == 2
    assert "needs RUN_DIR" in capsys.readouterr().err
    assert main(["analyze", "jaccard", "encoder=cnn", "--out", str(tmp_path)]) == 2
    assert "allowed encoders" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------------------- calibration


@pytest.mark.slow
def test_calibration_zero_at_severity_zero_and_growing(tmp_path, single_thread):
    out = tmp_path / "cal"
    assert main(["analyze", "calibration", "--env", "dmc:cartpole_balance", "--suite", "gaussian_noise:1+3+5,"
                 "color:1+3+5", "--frames", "4", "--episodes", "2", "--stride", "3", "--size", "32",
                 "--reference-size", "64", "--out", str(out)]) == 0
    summary = json.loads((out / "calibration.json").read_text())
    rows = summary["rows"]
    assert {(r["kind"], r["severity"]) for r in rows} == {(k, s) for k in ("gaussian_noise", "color")
                                                         for s in (0, 1, 3, 5)}
    for row in rows:
        assert row["n"] == 4 and row["state_diff"] == 0.0  # same physical states clean and shifted
        if row["severity"] == 0:
            assert row["ssim_distance"] == 0.0 and row["rmse"] == 0.0 and row["l2"] == 0.0
            assert row["feature_distance"] == pytest.approx(0.0, abs=1e-9)
    for kind in ("gaussian_noise", "color"):
        by_sev = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["severity"])
        for metric in ("ssim_distance", "rmse", "l2"):
            values = [r[metric] for r in by_sev]
            assert all(b > a for a, b in zip(values, values[1:], strict=False)), (kind, metric, values)
        assert by_sev[-1]["feature_distance"] > by_sev[1]["feature_distance"] > 0
    recs = _records(out / "calibration.jsonl")
    assert len(recs) == len(rows) * 4
    csv = (out / "calibration.csv").read_text().splitlines()
    assert csv[0].startswith("env,kind,level,severity") and len(csv) == len(rows) + 1


# ------------------------------------------------------------------------------------------- on a run


@pytest.mark.slow
def test_jaccard_on_run_writes_json_records_and_png(run, single_thread):
    from PIL import Image

    assert main(["analyze", "jaccard", str(run), "--frames", "4", "--stride", "3"]) == 0
    out = run / "analysis"
    summary = json.loads((out / "jaccard.json").read_text())
    assert set(summary["results"]) == {"pretrained", "finetuned", "random"}
    assert 0.0 < summary["foreground_fraction"] < 0.5  # cart and pole are foreground, floor/sky/rails are not
    for res in summary["results"].values():
        assert 0.0 <= res["jaccard"] <= 1.0 and len(res["jaccard_per_frame"]) == 4
        assert res["heads"] == 2 and res["patches"] == 16
        assert 0.0 < res["kept_fraction"] < 1.0
    recs = _records(out / "jaccard.jsonl")
    assert {r["weights"] for r in recs if r["metric"] == "jaccard"} == {"pretrained", "finetuned", "random"}
    assert all(r["n"] == 4 and r["encoder_mode"] == "full" and r["config_hash"] for r in recs)
    with Image.open(out / "jaccard.png") as im:
        assert im.format == "PNG" and im.width > 4 * 32 * 6 and im.height > 3 * 32 * 6  # 3 rows of 4 cells


def test_pretrained_and_finetuned_encoders_of_a_run(run, vit_dir):
    from experiments.analysis.sources import from_run

    eset = from_run(run, "drift", with_random=True)
    import transformers as tf

    pre, ft, rnd = (eset.encoders[k].backbone.state_dict() for k in ("pretrained", "finetuned", "random"))
    original = tf.ViTModel.from_pretrained(vit_dir).state_dict()
    key = next(k for k in pre if k.endswith(("q_proj.weight", "query.weight")))  # first block's query projection
    assert torch.equal(pre[key], original[key])
    assert not torch.equal(ft[key], pre[key])  # full fine-tuning moved the weights
    assert not torch.allclose(rnd[key], pre[key])


def test_drift_cka_per_block(run, single_thread):
    assert main(["analyze", "drift", str(run), "--frames", "6", "--stride", "3"]) == 0
    summary = json.loads((run / "analysis" / "drift.json").read_text())
    cka = summary["cka_vs_pretrained"]
    assert summary["layers"] == ["block0", "block1", "pooled", "features"]  # forward order (JSON keys are sorted)
    assert set(cka["finetuned"]) == set(cka["random"]) == set(summary["layers"])
    assert all(0.0 <= v <= 1.0 + 1e-9 for layers in cka.values() for v in layers.values())
    assert cka["finetuned"]["pooled"] < 1.0 - 1e-6  # the fine-tuned encoder drifted
    assert cka["random"]["pooled"] < cka["finetuned"]["pooled"]  # but much less than a random init
    recs = _records(run / "analysis" / "drift.jsonl")
    assert len(recs) == 8 and {r["metric"] for r in recs} == {"linear_cka"}


def test_forgetting_on_image_folder_and_missing_datasets(run, tmp_path, capsys, single_thread):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(10):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "set" / cls / f"{i}.png")
    out = tmp_path / "out"
    assert main(["analyze", "forgetting", str(run), "--dataset", str(tmp_path / "set"), "--out", str(out)]) == 0
    summary = json.loads((out / "forgetting.json").read_text())
    assert summary["classes"] == ["blue", "red"] and summary["test_images"] == 6
    assert summary["knn_accuracy"]["pretrained"] == 1.0 and summary["knn_accuracy"]["finetuned"] == 1.0
    recs = _records(out / "forgetting.jsonl")
    assert {r["weights"]: r["value"] for r in recs}.keys() == {"pretrained", "finetuned", "random"}
    import importlib.util

    if importlib.util.find_spec("datasets") is None:  # without `datasets`, hf:NAME is a clear one-line error
        assert main(["analyze", "forgetting", str(run), "--dataset", "hf:cifar10", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "datasets" in err and "ImageFolder" in err


@pytest.mark.slow
def test_world_model_diagnostics_under_shift(run, single_thread):
    out = run / "wm-out"
    assert main(["analyze", "wm", str(run), "--suite", "gaussian_noise:5", "--episodes", "1", "--max-steps", "12",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "wm.json").read_text())
    clean, noisy = summary["results"]
    assert (clean["shift"], noisy["shift"], noisy["severity"]) == ("none", "gaussian_noise", 5)
    for row in (clean, noisy):
        assert row["recon_mse_n"] == 13 and row["kl_n"] == 12 and row["reward_mae_n"] == 12
        assert all(np.isfinite(row[m]) and row[m] >= 0 for m in ("recon_mse", "recon_sse", "reward_mae", "kl"))
    assert noisy["recon_mse"] > clean["recon_mse"]  # noise the decoder never saw is not reconstructed
    assert noisy["recon_mse_ratio"] == pytest.approx(noisy["recon_mse"] / clean["recon_mse"])
    recs = _records(out / "wm.jsonl")
    assert {r["metric"] for r in recs} == {"recon_mse", "recon_sse", "reward_mae", "reward_nll", "kl", "return"}
