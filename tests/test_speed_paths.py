"""The fast paths of an update (``precision=bf16``, ``compile=on``, metrics kept on the device) and numerical
safety (a non-finite loss stops a run with one error line and a loadable checkpoint)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_RUN, assert_user_error

from mbrl.agent import Agent, fetch_metrics

pytestmark = pytest.mark.usefixtures("single_thread")

B, T, D, A = 2, 8, 5, 2


def _batch() -> dict[str, torch.Tensor]:
    t = torch.arange(T).float().view(1, T, 1)
    d = torch.arange(D).float().view(1, 1, D)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"state": (torch.sin(0.3 * t + d) * (1 + 3 * d)).expand(B, T, D).contiguous(),
            "action": torch.linspace(-1, 1, B * T * A).view(B, T, A),
            "reward": (torch.arange(T).float() / T).expand(B, T).contiguous(), "is_first": is_first,
            "is_terminal": torch.zeros(B, T, dtype=torch.bool)}


def _train(agent: Agent, updates: int) -> list[dict[str, float]]:
    batch = _batch()
    return [fetch_metrics([agent.train_step(batch)]) for _ in range(updates)]


def test_train_step_metrics_are_device_tensors_fetched_once(tiny_cfg):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", optim__warmup="0"), action_dim=A, state_dim=D)
    metrics = agent.train_step(_batch())
    assert metrics and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    means = fetch_metrics([metrics, metrics])
    assert means.keys() == metrics.keys()
    assert all(isinstance(v, float) for v in means.values())
    assert means["wm/loss"] == pytest.approx(float(metrics["wm/loss"]))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_update_losses_are_finite_and_fall(tiny_cfg, precision):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", precision=precision, optim__warmup="0", optim__lr="1e-3"),
                  action_dim=A, state_dim=D)
    history = _train(agent, 30)
    losses = [m["wm/loss"] for m in history]
    assert all(math.isfinite(v) for m in history for v in m.values())
    assert losses[-1] < 0.7 * losses[0], losses
    agent.check_finite()
    # fp32 master weights under autocast
    assert all(p.dtype == torch.float32 for p in agent.parameters())


def test_bf16_runs_the_networks_in_bf16_and_the_losses_in_fp32(tiny_cfg):
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", precision="bf16"), action_dim=A, state_dim=D)
    seen = {}
    handle = agent.wm.reward_head.out.register_forward_hook(lambda m, i, o: seen.update(out=o.dtype))
    with agent.autocast():
        loss, post, _ = agent.wm.loss(_batch())
    handle.remove()
    assert seen["out"] == torch.bfloat16
    assert loss.dtype == torch.float32 and post["logits"].dtype == torch.float32
    assert post["deter"].dtype == torch.float32


def test_compiled_update_has_no_graph_breaks_and_learns(tiny_cfg):
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", compile="on", optim__warmup="0", optim__lr="1e-3"), action_dim=A,
                  state_dim=D)
    history = _train(agent, 12)
    losses = [m["wm/loss"] for m in history]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])


def test_non_finite_loss_stops_with_one_line_and_leaves_a_loadable_checkpoint(cli, tmp_path, monkeypatch):
    from mbrl import checkpoint
    from mbrl.world_model import WorldModel

    original = WorldModel.loss
    calls = {"n": 0}

    def poisoned(self, data, state=None):
        loss, post, metrics = original(self, data, state)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 12 else loss), post, metrics

    monkeypatch.setattr(WorldModel, "loss", poisoned)
    res = cli("train", *TINY_RUN, "obs=state", "steps=400", "save_every=100", "log_every=50", "run_dir=run")
    assert_user_error(res, "non-finite", "world model", "update 13")
    state = checkpoint.load_state(tmp_path / "run")
    assert 0 < state["counters"]["env_steps"] < 400
    assert state["counters"]["updates"] <= 12
    checkpoint.load_run(tmp_path / "run")  # the last good checkpoint loads
    assert all(torch.isfinite(v).all() for v in state["agent"].values() if v.is_floating_point())
