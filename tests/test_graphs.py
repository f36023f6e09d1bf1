"""The graph-ready update (:mod:`mbrl.graphs`): static inputs, device-side optimiser numbers and a host-sync-free
percentile give the plain update's losses and weights on the CPU; the capturable LaProp step equals the reference
step; the CUDA capture itself is tested only where CUDA is (skipped cleanly elsewhere)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from envs.errors import ConfigError
from mbrl.actor_critic import percentiles
from mbrl.agent import Agent
from mbrl.graphs import GraphedStep, graphs_enabled
from mbrl.optim import Optimizer
from mbrl.replay import Replay

A, D = 2, 5
CUDA = torch.cuda.is_available()


def _replay(seed: int, device: str = "cpu") -> Replay:
    rng = np.random.default_rng(seed)
    replay = Replay(200, 1, None, A, seed=seed, state_dim=D)
    for t in range(200):
        replay.add(0, {"state": rng.normal(size=D).astype(np.float32),
                       "action": rng.uniform(-1, 1, A).astype(np.float32), "reward": np.float32(rng.uniform()),
                       "is_first": t % 50 == 0, "is_terminal": False})
    return replay


@pytest.mark.parametrize("n", [1, 2, 7, 1024, 5000])
def test_percentiles_equal_torch_quantile(n):
    q = torch.tensor([0.05, 0.5, 0.95])
    gen = torch.Generator().manual_seed(n)
    for _ in range(5):
        x = torch.randn(n, generator=gen) * 7
        assert torch.allclose(percentiles(x, q), torch.quantile(x, q), rtol=0, atol=1e-6)


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 3, generator=gen)), torch.nn.Parameter(torch.randn(7, generator=gen))]


@pytest.mark.parametrize("warmup", [0, 3])
def test_capturable_optimiser_step_equals_the_reference(warmup):
    """Same gradients into a reference and a capturable LaProp + AGC + warm-up: the same parameters, moments, flags
    and counters after 6 updates, one of them non-finite (skipped on both)."""
    ref_p, cap_p = _params(0), _params(0)
    ref = Optimizer([(ref_p, 1e-2)], "laprop", 1e-20, (0.9, 0.999), 0.3, 0.0, warmup)
    cap = Optimizer([(cap_p, 1e-2)], "laprop", 1e-20, (0.9, 0.999), 0.3, 0.0, warmup)
    cap.set_capturable(True)
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        grads = [torch.randn(p.shape, generator=gen) for p in ref_p]
        if i == 3:
            grads[0][0, 0] = float("nan")
        for ps in (ref_p, cap_p):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
        n1, n2 = ref.update(), cap.update()
        assert torch.equal(n1.isfinite(), n2.isfinite())
    for a, b in zip(ref_p, cap_p, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(ref_p, cap_p, strict=True):
        sa, sb = ref.opt.state[a], cap.opt.state[b]
        assert torch.allclose(sa["m"], sb["m"], rtol=1e-5, atol=1e-9) and torch.allclose(sa["v"], sb["v"])
        assert sa["step"] == 6 and torch.is_tensor(sb["step"]) and float(sb["step"]) == 6.0
    assert ref.updates == cap.updates == 6
    assert int(ref.nonfinite_count) == int(cap.nonfinite_count) == 1
    assert int(ref.first_nonfinite) == int(cap.first_nonfinite) == 4
    # the capturable state loads into a plain optimiser (steps back to ints) and back
    plain = Optimizer([(_params(0), 1e-2)], "laprop", 1e-20, (0.9, 0.999), 0.3, 0.0, warmup)
    plain.load_state_dict(copy.deepcopy(cap.state_dict()))
    assert all(isinstance(st["step"], int) for st in plain.opt.state.values()) and plain.updates == 6


def test_graph_ready_update_equals_the_plain_update(tiny_cfg, single_thread):
    """An agent whose optimisers keep their numbers on the device, updated from static input tensors (the path a
    CUDA graph replays), gives the plain agent's losses (<= 1e-6) and weights after 4 updates."""
    cfg = tiny_cfg(obs="state", batch_size="3", batch_length="8", optim__warmup="2")
    torch.manual_seed(0)
    plain = Agent(cfg, A, D)
    torch.manual_seed(0)
    ready = Agent(cfg, A, D)
    for opt in (ready.wm_opt, ready.actor_opt, ready.critic_opt):
        opt.set_capturable(True)
    step = GraphedStep(ready.train_step, ready.host_step, capture=False)
    replay = _replay(0)
    for i in range(4):
        batch = replay.sample(3, 8, "cpu")
        torch.manual_seed(10 + i)
        m1 = plain.train_step(batch)
        torch.manual_seed(10 + i)
        m2 = step(batch)
        for key in ("wm/loss", "ac/actor_loss", "ac/critic_loss", "ac/repval_loss"):
            assert abs(float(m1[key]) - float(m2[key])) <= 1e-6 * max(1.0, abs(float(m1[key]))), (i, key)
    s1, s2 = plain.state_dict(), ready.state_dict()
    assert all(torch.allclose(s1[k], s2[k], rtol=1e-5, atol=1e-6) for k in s1)
    assert plain.wm_opt.updates == ready.wm_opt.updates == 4
    with pytest.raises(ConfigError, match="batch shapes must not change"):
        step(replay.sample(2, 8, "cpu"))


def test_graphs_enabled_and_refused_without_cuda():
    assert not graphs_enabled("auto", "on", "cpu") and not graphs_enabled("off", "on", "cpu")
    assert graphs_enabled("auto", "on", "cuda") and not graphs_enabled("auto", "off", "cuda")
    assert graphs_enabled("on", "off", "cuda") and not graphs_enabled("off", "on", "cuda")
    with pytest.raises(ConfigError, match="cuda_graphs=on needs device=cuda"):
        graphs_enabled("on", "off", "cpu")
    if not CUDA:
        with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
            GraphedStep(lambda b, o: {}, lambda: None, capture=True)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
def test_captured_updates_match_eager_updates_on_cuda(tiny_cfg):
    """On CUDA: after warm-up and capture, replayed updates give the eager agent's losses (sampling draws differ
    between the two streams, so the check is on the world-model loss of a fixed batch and finite metrics)."""
    cfg = tiny_cfg(obs="state", batch_size="3", batch_length="8", optim__warmup="0", device="cuda")
    torch.manual_seed(0)
    agent = Agent(cfg, A, D).cuda()
    for opt in (agent.wm_opt, agent.actor_opt, agent.critic_opt):
        opt.set_capturable(True)
    step = GraphedStep(agent.train_step, agent.host_step, capture=True, warmup=2)
    replay = _replay(0)
    history = [step(replay.sample(3, 8, "cuda")) for _ in range(6)]
    assert step.graph is not None and agent.wm_opt.updates == 6
    losses = torch.stack([m["wm/loss"] for m in history])
    assert torch.isfinite(losses).all() and len({float(x) for x in losses}) > 1  # replays are new updates
