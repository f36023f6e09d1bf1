"""Seeds as a batch (:mod:`mbrl.members`): E=1 is the single agent, members are independent, a NaN stays in its
member, optimiser state round-trips through the members' own checkpoints format."""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch

from envs.errors import ConfigError
from mbrl.agent import Agent
from mbrl.members import MemberBatch, check_members, stack_batches
from mbrl.replay import Replay

A, D = 2, 5


def _replay(seed: int, steps: int = 200, pixels: bool = False) -> Replay:
    rng = np.random.default_rng(seed)
    replay = Replay(steps, 1, (32, 32, 3) if pixels else None, A, seed=seed, state_dim=0 if pixels else D)
    for t in range(steps):
        step = {"action": rng.uniform(-1, 1, A).astype(np.float32), "reward": np.float32(rng.uniform()),
                "is_first": t % 50 == 0, "is_terminal": t % 50 == 49 and t % 100 == 99}
        if pixels:
            step["image"] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        else:
            step["state"] = rng.normal(size=D).astype(np.float32)
        replay.add(0, step)
    return replay


@pytest.fixture
def state_cfg(tiny_cfg):
    return tiny_cfg(obs="state", batch_size="3", batch_length="8", optim__warmup="0")


def _params(agent: Agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def test_one_member_is_the_single_agent(state_cfg, single_thread):
    """E=1: same initial weights as a single agent of that seed, same losses (<= 1e-6) and weights after
    updates on the same batches from the same RNG state, and the same checkpoint keys and shapes."""
    replay = _replay(0)
    batches = [replay.sample(3, 8, "cpu") for _ in range(3)]
    torch.manual_seed(5)
    single = Agent(dataclasses.replace(state_cfg, seed=5), A, D)
    batch_of = MemberBatch(state_cfg, [5], A, D)
    member = batch_of.members[0]
    for k, v in _params(single).items():
        assert torch.equal(v, member.state_dict()[k]), k
    for i, b in enumerate(batches):
        torch.manual_seed(100 + i)
        m1 = single.train_step(b)
        torch.manual_seed(100 + i)
        m2 = batch_of.train_step(stack_batches([b]))
        for key in ("wm/loss", "ac/actor_loss", "ac/critic_loss", "wm/grad_norm", "ac/repval_loss"):
            assert abs(float(m1[key]) - float(m2[key][0])) <= 1e-6 * max(1.0, abs(float(m1[key]))), (i, key)
    for k, v in _params(single).items():
        assert torch.allclose(v, member.state_dict()[k], atol=1e-6, rtol=1e-5), k
    assert set(single.state_dict()) == set(member.state_dict())
    assert {k: v.shape for k, v in single.state_dict().items()} == {k: v.shape for k, v in member.state_dict().items()}
    o1, o2 = single.optim_state(), member.optim_state()
    assert o1["wm"]["updates"] == o2["wm"]["updates"] == 3
    s1, s2 = o1["wm"]["opt"]["state"], o2["wm"]["opt"]["state"]
    assert set(s1) == set(s2) and all(s1[i]["step"] == s2[i]["step"] for i in s1)
    assert all(torch.allclose(s1[i]["v"], s2[i]["v"], atol=1e-9, rtol=1e-4) for i in s1)


@pytest.mark.slow
@pytest.mark.parametrize("repval_grad", ["true", "false"])
def test_compiled_batch_update_runs_and_matches_eager(tiny_cfg, single_thread, monkeypatch, repval_grad):
    """compile=on's loss regions (actor, critic, replay value): two updates run (also with the replay value loss
    training the world model, whose two losses two optimiser steps backpropagate) and give the eager batch's
    losses. aot_eager stands in for inductor: the graphs and their backward are the same."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cfg = tiny_cfg(obs="state", batch_size="3", batch_length="8", optim__warmup="0", loss__repval="0.3",
                   loss__repval_grad=repval_grad)
    replay = _replay(0)
    batches = [stack_batches([replay.sample(3, 8, "cpu")] * 2) for _ in range(2)]
    losses = []
    for compile_ in ("off", "on"):
        batch = MemberBatch(dataclasses.replace(cfg, compile=compile_), [0, 1], A, D)
        if compile_ == "on":  # inductor's cache in dreamshift's directory (torch's default in /tmp is lost)
            assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith(os.path.join("dreamshift", "inductor"))
            batch._compiled &= {"losses"}  # the region with two losses; the rest costs compile time only
        for i, b in enumerate(batches):
            torch.manual_seed(100 + i)
            m = batch.train_step(b)
        losses.append({k: m[k].detach().clone() for k in ("wm/loss", "ac/critic_loss", "ac/repval_loss")})
    for k in losses[0]:
        assert torch.isfinite(losses[1][k]).all() and torch.allclose(losses[0][k], losses[1][k], rtol=1e-3,
                                                                       atol=1e-4), k


def test_members_are_independent(state_cfg, single_thread):
    """Changing member 1's replay batch leaves member 0's weights after the update bit-identical."""
    r0, r1, r2 = _replay(0), _replay(1), _replay(2)
    b0, b1, b2 = (r.sample(3, 8, "cpu") for r in (r0, r1, r2))
    after = []
    for other in (b1, b2):
        batch = MemberBatch(state_cfg, [0, 1], A, D)
        torch.manual_seed(7)
        batch.train_step(stack_batches([b0, other]))
        after.append((_params(batch.members[0]), _params(batch.members[1])))
    (a0, a1), (c0, c1) = after
    assert all(torch.equal(a0[k], c0[k]) for k in a0)
    assert any(not torch.equal(a1[k], c1[k]) for k in a1)  # the changed batch did change member 1


def test_nan_stays_in_its_member(state_cfg, single_thread):
    """A NaN forced into member 1's batch skips member 1's update (weights unchanged, flagged with the module and
    update) and leaves member 0's update as it is without the NaN."""
    b0, b1 = _replay(0).sample(3, 8, "cpu"), _replay(1).sample(3, 8, "cpu")
    bad = {k: v.clone() for k, v in b1.items()}
    bad["state"][0, 3, 0] = float("nan")
    results = []
    for other in (b1, bad):
        batch = MemberBatch(state_cfg, [0, 1], A, D)
        before1 = _params(batch.members[1])
        torch.manual_seed(3)
        batch.train_step(stack_batches([b0, other]))
        results.append((batch, before1))
    (clean, _), (broken, before1) = results
    m0_clean, m0_broken = _params(clean.members[0]), _params(broken.members[0])
    assert all(torch.equal(m0_clean[k], m0_broken[k]) for k in m0_clean)
    m1 = _params(broken.members[1])
    assert [k for k, v in m1.items() if v.is_floating_point() and not torch.isfinite(v).all()] == []
    assert torch.equal(m1["wm.rssm.dynhid.weight"], before1["wm.rssm.dynhid.weight"])
    flags = broken.nonfinite()
    assert flags[0] is None and flags[1] == ("world model", 1)
    with pytest.raises(Exception, match="non-finite gradient in the world model at update 1"):
        broken.members[1].check_finite()
    broken.members[0].check_finite()


def test_member_state_reloads(state_cfg, single_thread, tmp_path):
    """A member's weights and optimiser state load into a new batch (resume) and the next update matches."""
    b = [_replay(0).sample(3, 8, "cpu"), _replay(1).sample(3, 8, "cpu")]
    batch = MemberBatch(state_cfg, [0, 1], A, D)
    batch.train_step(stack_batches(b))
    saved = [(copy.deepcopy(m.state_dict()), copy.deepcopy(m.optim_state())) for m in batch.members]
    fresh = MemberBatch(state_cfg, [0, 1], A, D)
    for m, (w, o) in zip(fresh.members, saved, strict=True):
        m.load_state_dict(w)
        m.load_optim_state(o)
    fresh.bind()
    torch.manual_seed(9)
    batch.train_step(stack_batches(b))
    torch.manual_seed(9)
    fresh.train_step(stack_batches(b))
    for m1, m2 in zip(batch.members, fresh.members, strict=True):
        p1, p2 = _params(m1), _params(m2)
        assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_pixel_members_update(tiny_cfg, single_thread):
    """The scratch CNN encoder and pixel decoder train inside a batch (E=2) and stay finite."""
    cfg = tiny_cfg(batch_size="2", batch_length="8", optim__warmup="0")
    batch = MemberBatch(cfg, [0, 1], A, 0)
    before = _params(batch.members[0])
    b = [_replay(s, pixels=True).sample(2, 8, "cpu") for s in (0, 1)]
    metrics = batch.train_step(stack_batches(b))
    assert metrics["wm/loss"].shape == (2,) and torch.isfinite(metrics["wm/loss"]).all()
    after = _params(batch.members[0])
    assert not torch.equal(before["wm.encoder.convs.0.weight"] if "wm.encoder.convs.0.weight" in before else
                           next(v for k, v in before.items() if k.startswith("wm.encoder")),
                           after["wm.encoder.convs.0.weight"] if "wm.encoder.convs.0.weight" in after else
                           next(v for k, v in after.items() if k.startswith("wm.encoder")))


@pytest.mark.parametrize("seeds, needle", [([], "empty"), ([0, 0], "twice"), ([-1], ">= 0")])
def test_bad_seed_lists(state_cfg, seeds, needle):
    with pytest.raises(ConfigError, match=needle):
        check_members(state_cfg, seeds)
