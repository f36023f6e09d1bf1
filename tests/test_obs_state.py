"""State observations in the agent (``obs=state`` / ``obs=pixels+state``): the MLP encoder/decoder path of the
world model, end-to-end training on real dm_control, and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, override

from mbrl.agent import Agent
from mbrl.distributions import symlog
from mbrl.world_model import StateDecoder, StateEncoder

pytestmark = pytest.mark.usefixtures("single_thread")

B, T, D, A = 2, 8, 5, 2


def _state_batch(with_image: bool = False) -> dict[str, torch.Tensor]:
    t = torch.arange(T).float().view(1, T, 1)
    b = torch.arange(B).float().view(B, 1, 1)
    d = torch.arange(D).float().view(1, 1, D)
    state = torch.sin(0.3 * t + b + d) * (1 + 10 * d)  # several scales, as physics observations have
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"state": state, "action": torch.linspace(-1, 1, B * T * A).view(B, T, A),
             "reward": (torch.arange(T).float() / T).expand(B, T).contiguous(), "is_first": is_first,
             "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    if with_image:
        batch["image"] = (torch.arange(B * T * 32 * 32 * 3) % 251).view(B, T, 32, 32, 3).to(torch.uint8)
    return batch


def test_state_encoder_applies_symlog_and_decoder_loss_is_symlog_squared_error():
    torch.manual_seed(0)
    enc = StateEncoder(D, 16, 2)
    x = torch.tensor([[100.0, -3.0, 0.0, 2.0, -50.0]])
    assert torch.allclose(enc(x), enc.net(symlog(x)))
    dec = StateDecoder(8, D, 16, 1)
    feat = torch.randn(3, 8)
    target = torch.randn(3, D) * 20
    expect = (dec(feat) - torch.sign(target) * torch.log1p(target.abs())).pow(2).sum(-1)
    assert torch.allclose(dec.loss(feat, target), expect)


@pytest.mark.slow
def test_state_only_world_model_has_no_pixel_parts_and_its_state_loss_falls(tiny_cfg):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", optim__warmup="0", optim__lr="1e-3"), action_dim=A, state_dim=D)
    assert agent.wm.encoder is None and agent.wm.decoder is None
    assert agent.wm.obs_keys == ("state",)
    batch = _state_batch()
    losses = []
    for _ in range(40):
        loss, _, metrics = agent.wm.loss(batch)
        agent.wm_opt.step(loss)
        losses.append(float(metrics["wm/rec_state"]))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses


def test_pixels_plus_state_encodes_and_reconstructs_both(tiny_cfg):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="pixels+state"), action_dim=A, state_dim=D)
    assert agent.wm.obs_keys == ("image", "state")
    loss, _, metrics = agent.wm.loss(_state_batch(with_image=True))
    assert {"wm/rec_image", "wm/rec_state"} <= set(metrics)
    assert float(metrics["wm/rec"]) == pytest.approx(float(metrics["wm/rec_image"] + metrics["wm/rec_state"]),
                                                     rel=1e-5)
    loss.backward()
    for module in (agent.wm.encoder, agent.wm.state_encoder, agent.wm.decoder, agent.wm.state_decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_state_obs_needs_a_state_dim(tiny_cfg):
    from envs.errors import ConfigError

    with pytest.raises(ConfigError, match="state dimension"):
        Agent(tiny_cfg(obs="state"), action_dim=A)


@pytest.mark.parametrize("obs", ["state", "pixels+state"])
@pytest.mark.slow
def test_train_end_to_end_on_dm_control(obs, cli, tmp_path):
    res = cli("train", *override(TINY_RUN, f"obs={obs}", "steps=300", "run_dir=run"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and r.get("updates", 0) > 0]
    assert train and all(math.isfinite(r["wm/rec_state"]) for r in train if "wm/rec_state" in r)
    assert any("wm/rec_state" in r for r in train)
    assert ("wm/rec_image" in train[-1]) == (obs == "pixels+state")
    from mbrl.runs import checkpoint

    state = checkpoint.load_state(run)
    assert state["state_dim"] == 5  # cartpole: position (3) + velocity (2)
    res = cli("evaluate", "run", "--episodes", "1")
    assert res.returncode == 0, res.stderr


def test_bad_obs_value_is_one_error_line(cli, tmp_path):
    res = cli("train", *TINY_RUN, "obs=depth", "run_dir=run")
    assert_user_error(res, "obs", "pixels", "state")
    assert not (tmp_path / "run").exists()


def test_state_on_a_pixel_only_suite_is_refused(cli, tmp_path):
    res = cli("train", *override(TINY_RUN, "env=driving:carracing", "obs=state", "run_dir=run"))
    assert_user_error(res, "state", "dmc", "metaworld")
    assert not (tmp_path / "run").exists()
