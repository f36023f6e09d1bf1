"""The fast paths of an update (``precision=bf16``, ``compile=on``, metrics kept on the device) and numerical
safety (a non-finite loss stops a run with one error line and a loadable checkpoint)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, load_benchmark, override

from mbrl.agent import COMPILE_REGIONS, CPU_COMPILE_REGIONS, OBSERVE_CHUNK, Agent, compile_regions, fetch_metrics
from mbrl.members import MemberBatch, stack_batches
from mbrl.rssm import chunk_start

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
@pytest.mark.slow
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


@pytest.mark.slow
def test_compiled_update_has_no_graph_breaks_and_learns(tiny_cfg):
    """``compile=on`` compiles the per-step regions and the larger ones (the no-grad imagination rollout, the two
    halves of the actor-critic loss, the world model's observe chunks) without a graph break, and a compiled tiny
    agent's losses stay finite and fall on a fixed batch. Graph breaks are dynamo's, the same for every backend, so
    this uses ``aot_eager`` (dynamo and AOTAutograd, no code generation: seconds instead of ~3 min cold here);
    inductor's code is checked against eager in :func:`test_compiled_actor_critic_loss_matches_eager`."""
    torch._dynamo.reset()
    from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

    counters.clear()
    clear_compilation_metrics()
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", optim__warmup="0", optim__lr="1e-3", loss__imag_horizon="4"),
                  action_dim=A, state_dim=D)  # a short rollout compiles faster
    agent.compile_steps(COMPILE_REGIONS, backend="aot_eager")  # every region, as on CUDA
    agent.wm.rssm.observe_chunk = 2  # chunks of 2 filter steps trace in half the time of OBSERVE_CHUNK's 4
    history = _train(agent, 12)
    losses = [m["wm/loss"] for m in history]
    assert all(math.isfinite(v) for m in history for v in m.values())
    assert losses[-1] < losses[0], losses
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    names = [m.co_name for m in get_compilation_metrics() if m.co_name]
    assert names.count("observe_steps") == 1, names  # one graph for every chunk (chunk_start)
    assert {"imagine", "critic_terms", "actor_terms", "observe_steps"} <= set(names), names
    assert not any(n.startswith("torch_dynamo_resume") for n in names), names  # resume frames = graph breaks


def test_chunked_observe_gives_the_step_by_step_states(tiny_cfg):
    """``RSSM.observe_chunk`` (what ``compile=on`` compiles) only regroups the filter steps: with the same RNG
    state the posterior and prior states are those of the step-by-step loop, also with a shorter last chunk."""
    agent = Agent(tiny_cfg(obs="state"), action_dim=A, state_dim=D)
    rssm, batch = agent.wm.rssm, _batch()
    embed = agent.wm.embed(batch)
    prev_action = torch.cat([torch.zeros_like(batch["action"][:, :1]), batch["action"][:, :-1]], 1)
    outs = []
    for chunk in (0, 3):
        rssm.observe_chunk = chunk
        torch.manual_seed(1)
        outs.append(rssm.observe(embed, prev_action, batch["is_first"]))
    for step, chunked in zip(*outs, strict=True):
        assert all(torch.equal(step[k], chunked[k]) for k in step)


def _record_chunk_starts(monkeypatch: pytest.MonkeyPatch, state_arg: int) -> list[dict[str, tuple]]:
    """Stand in for ``torch.compile``: the returned list gets, per call of the compiled function, what dynamo would
    guard on in its start state (argument ``state_arg``): ``requires_grad``, strides, dtype."""
    seen: list[dict[str, tuple]] = []

    def compile_(fn, **_):
        def call(*args):
            seen.append({k: (v.requires_grad, v.stride(), v.dtype) for k, v in args[state_arg].items()})
            return fn(*args)
        return call

    monkeypatch.setattr(torch, "compile", compile_)
    return seen


def test_every_compiled_filter_chunk_starts_from_a_state_of_one_kind(tiny_cfg, monkeypatch):
    """Dynamo guards on ``requires_grad`` and strides, so a zero start state (no grad) would compile the first
    chunk as a second graph: every chunk of an update's filter starts from a state of the same kind, single agent
    and member batch; :func:`chunk_start` keeps values and leaves states alone under ``no_grad``."""
    seen = _record_chunk_starts(monkeypatch, 0)
    agent = Agent(tiny_cfg(obs="state"), action_dim=A, state_dim=D)
    agent.compile_steps(("observe",))
    agent.train_step(_batch())
    assert len(seen) == T // OBSERVE_CHUNK and all(s == seen[0] for s in seen), seen
    assert all(requires_grad for requires_grad, _, _ in seen[0].values())

    seen = _record_chunk_starts(monkeypatch, 1)
    cfg = tiny_cfg(obs="state", compile="on")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    members = MemberBatch(cfg, [0, 1], A, D)
    members._compiled = {"observe"}
    members.train_step(stack_batches([_batch(), _batch()]))
    assert len(seen) == T // OBSERVE_CHUNK and all(s == seen[0] for s in seen), seen

    start = agent.wm.rssm.initial(B)
    with torch.no_grad():
        assert chunk_start(start) is start
    leaf = chunk_start(start)
    assert all(v.requires_grad and v.is_leaf and torch.equal(v, start[k]) for k, v in leaf.items())
    assert chunk_start(leaf)["deter"] is leaf["deter"]  # already requires grad: passed through


def test_bf16_filter_runs_in_fp32_on_cpu(tiny_cfg):
    """With ``precision=bf16`` the CPU filter ignores autocast: under autocast it returns exactly the fp32 filter's
    states; switched off, the same call under autocast gives bf16-rounded (different) states."""
    agent = Agent(tiny_cfg(obs="state", precision="bf16"), action_dim=A, state_dim=D)
    rssm, batch = agent.wm.rssm, _batch()
    assert rssm.observe_fp32_on_cpu
    embed = agent.wm.embed(batch).detach()
    prev_action = torch.cat([torch.zeros_like(batch["action"][:, :1]), batch["action"][:, :-1]], 1)

    def observe(autocast: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return rssm.observe(embed, prev_action, batch["is_first"])[1]

    fp32 = observe(False)
    assert all(torch.equal(fp32[k], v) for k, v in observe(True).items())
    rssm.observe_fp32_on_cpu = False
    assert not torch.equal(fp32["logits"], observe(True)["logits"])


def test_compiled_actor_critic_loss_matches_eager(tiny_cfg):
    """The compiled halves of the actor-critic loss compute what the eager ones do (fp32, the same imagined
    trajectory): losses, returns, the return normaliser's update and the critic's and actor's gradients."""
    torch.manual_seed(0)
    agent = Agent(tiny_cfg(obs="state", optim__warmup="0"), action_dim=A, state_dim=D)
    _train(agent, 2)  # the critic's output layer starts at zero
    start = {k: v.reshape(B * T, *v.shape[2:]).detach() for k, v in agent.wm.loss(_batch())[1].items()}
    with torch.no_grad():
        traj = agent.ac.imagine(agent.wm, start, torch.ones(B * T), 5)
    retnorm = agent.ac.retnorm.clone()

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        agent.ac.retnorm.copy_(retnorm)
        agent.zero_grad(set_to_none=True)
        data = dict(traj)
        actor_loss, critic_loss, metrics = agent.ac.loss(data)
        (actor_loss + critic_loss).backward()
        grads = [p.grad.clone() for p in (*agent.ac.actor.parameters(), *agent.ac.critic.parameters())]
        return [actor_loss.detach(), critic_loss.detach(), data["ret"], agent.ac.retnorm.clone(),
                metrics["ac/adv_std"], metrics["ac/entropy"]], grads

    eager, eager_grads = run()
    agent.compile_steps(("losses",))
    compiled, compiled_grads = run()
    for a, b in zip(eager + eager_grads, compiled + compiled_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_non_finite_loss_stops_with_one_line_and_leaves_a_loadable_checkpoint(cli, tmp_path, monkeypatch):
    from mbrl.runs import checkpoint
    from mbrl.world_model import WorldModel

    original = WorldModel.loss
    calls = {"n": 0}

    def poisoned(self, data, state=None):
        loss, post, metrics = original(self, data, state)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 12 else loss), post, metrics

    monkeypatch.setattr(WorldModel, "loss", poisoned)
    res = cli("train", *override(TINY_RUN, "obs=state", "steps=400", "save_every=100", "log_every=50", "run_dir=run"))
    assert_user_error(res, "non-finite", "world model", "update 13")
    state = checkpoint.load_state(tmp_path / "run")
    assert 0 < state["counters"]["env_steps"] < 400
    assert state["counters"]["updates"] <= 12
    checkpoint.load_run(tmp_path / "run")  # the last good checkpoint loads
    assert all(torch.isfinite(v).all() for v in state["agent"].values() if v.is_floating_point())


@pytest.mark.slow
def test_flop_bound_counts_an_update_that_scales_with_the_batch(capsys):
    """The FLOP count of one update is positive, mostly matmuls, and doubles with the batch (every part of an
    update -- observe, imagination from every replay step, the heads -- is linear in B); bad targets are one
    error line; a tiny run prints its bound."""
    import argparse

    fb = load_benchmark("flop_bound")
    args = argparse.Namespace(image_size=16, batch=2, length=8, action_dim=2, state_dim=5, replay_steps=40, seed=0)
    variant = {"size": "size1m", "obs": "state", "precision": "fp32", "compile": "off"}
    small = fb.update_flops(variant, args)
    large = fb.update_flops(variant, argparse.Namespace(**{**vars(args), "batch": 4}))
    assert small["total"] > 0 and small["mm"] > 0.5 * small["total"]
    assert large["total"] == pytest.approx(2 * small["total"], rel=0.02)
    assert fb.parse_targets(["S:pixels:bf16=3.1"]) == {"S:pixels:bf16": 3.1}
    for bad in ("S:pixels:bf16", "S:pixels:bf16=0", "=3", "S:pixels:bf16=fast"):
        with pytest.raises(SystemExit, match="^error: --target"):
            fb.parse_targets([bad])
    assert fb.main(["--variants", "size1m:state", "--batch", "2", "--length", "8", "--image-size", "16",
                    "--replay-steps", "40", "--threads", "1", "--target", "size1m:state:fp32=1000",
                    "--measure", "1"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP" in out and "measured" in out and "target 1000.000 s needs" in out


def test_update_speed_times_the_bf16_filter_against_the_fp32_one(tmp_path):
    """``update_speed.py --bf16-filter`` times a bf16 CPU agent with its filter under autocast as well and reports
    the fp32 filter's speed-up (fp32 rows have none)."""
    import json

    us = load_benchmark("update_speed")
    out = tmp_path / "speed.json"
    assert us.main(["--variants", "size1m:state:fp32:off,size1m:state:bf16:off", "--updates", "1", "--warmup", "0",
                    "--batch", "2", "--length", "8", "--replay-steps", "40", "--threads", "1", "--bf16-filter",
                    "--json", str(out)]) == 0
    fp32, bf16 = json.loads(out.read_text())["rows"]
    assert "fp32_filter_speedup" not in fp32
    assert bf16["fp32_filter_speedup"] > 0 and bf16["bf16_filter_s_per_update"] > 0


def test_compile_steps_compiles_only_the_regions_asked_for(tiny_cfg):
    """``compile_steps(regions)`` wraps only those regions (compiling happens at the first call, not here); CUDA
    compiles every region, a CPU the measured subset; an unknown region is refused."""
    agent = Agent(tiny_cfg(obs="state"), action_dim=A, state_dim=D)
    agent.compile_steps(("imagine",))
    assert agent.compiled_regions == ("imagine",)
    assert hasattr(agent.ac.imagine, "_torchdynamo_orig_callable")
    for eager in (agent.ac.critic_terms, agent.ac.actor_terms, agent.wm.rssm.obs_step, agent.wm.rssm.observe_steps):
        assert not hasattr(eager, "_torchdynamo_orig_callable"), eager
    assert agent.ac.actor._compiled_call_impl is None
    agent.compile_steps(("steps",))  # idempotent: the first call decided
    assert agent.compiled_regions == ("imagine",)
    other = Agent(tiny_cfg(obs="state"), action_dim=A, state_dim=D)
    other.compile_steps(("steps", "losses"))
    assert other.ac.actor._compiled_call_impl is not None
    assert hasattr(other.ac.critic_terms, "_torchdynamo_orig_callable")
    assert not hasattr(other.ac.imagine, "_torchdynamo_orig_callable")
    assert compile_regions(torch.device("cuda")) == COMPILE_REGIONS
    assert compile_regions(torch.device("cpu")) == CPU_COMPILE_REGIONS
    assert set(CPU_COMPILE_REGIONS) <= set(COMPILE_REGIONS)
    with pytest.raises(ValueError, match="unknown compile regions"):
        Agent(tiny_cfg(obs="state"), action_dim=A, state_dim=D).compile_steps(("everything",))


def test_compile_regions_benchmark_parses_sets_and_refuses_unknown_regions():
    bench = load_benchmark("compile_regions")
    assert bench.parse_set("none") == () and bench.parse_set("all") == COMPILE_REGIONS
    assert bench.parse_set("imagine+losses") == ("imagine", "losses")
    with pytest.raises(SystemExit, match="error: compile set 'imagine\\+fast'"):
        bench.parse_set("imagine+fast")
