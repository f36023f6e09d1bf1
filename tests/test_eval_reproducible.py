"""Issue 19 (items 1 and 2): every evaluation is reproducible bit for bit and runs with the run's ``threads``.

Every evaluation rolls out through :func:`mbrl.runs.evaluate.run_episodes`, which seeds each episode's random draws
(RSSM posterior samples; the policy's samples, ``eval_policy=sample``, the default) from its episode seed, leaves
the caller's RNG streams untouched and sets torch's CPU threads (:func:`mbrl.runs.evaluate.resolve_threads`). A tiny run
(``TINY_RUN``: 200 env steps on dmc:cartpole_balance, episodes of 100 env steps) is trained once per module; the
global RNGs are reseeded differently before the two evaluations compared, so a rollout that drew from them
would differ."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

from envs.errors import ConfigError
from mbrl.config import build_config
from mbrl.runs import checkpoint
from mbrl.runs.evaluate import EVAL_SEED_OFFSET, evaluate, resolve_threads, run_episodes
from mbrl.runs.train import train


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny trained run with ``threads=1`` (shared; tests copy it before writing eval files into it)."""
    threads = torch.get_num_threads()
    try:
        return train(build_config(TINY_RUN + [f"run_dir={tmp_path_factory.mktemp('repro') / 'run'}"]))
    finally:
        torch.set_num_threads(threads)


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _rng_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _same_rng(a: tuple, b: tuple) -> bool:
    return (torch.equal(a[0], b[0]) and a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1])
            and a[1][2:] == b[1][2:] and a[2] == b[2])


def _twice(fn, *args, **kwargs) -> tuple[dict, dict]:
    """The JSON ``fn`` writes, from two calls after different global reseeds."""
    out = []
    for seed in (1, 2):
        _reseed(seed)
        out.append(json.loads(Path(fn(*args, **kwargs)).read_text()))
    return out[0], out[1]


def _agent(run: Path):
    loaded = checkpoint.load_run(run)
    return loaded.agent, loaded.config


# ------------------------------------------------------------------------------------------------ rollouts
@pytest.mark.parametrize("mode", ["mode", "sample"])
@pytest.mark.slow
def test_run_episodes_is_reproducible_and_leaves_global_rngs_alone(run_dir, mode):
    agent, cfg = _agent(run_dir)
    results = []
    for seed in (1, 2):
        _reseed(seed)
        before = _rng_state()
        results.append(run_episodes(agent, cfg, 2, seed=EVAL_SEED_OFFSET, mode=mode))
        assert _same_rng(before, _rng_state()), "evaluation advanced the caller's (training's) RNG streams"
    assert results[0] == results[1]
    assert [r["episode_seed"] for r in results[0]] == [EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 1]
    # the episodes are seeded individually: episode 1 alone is episode 1 of the pair
    assert run_episodes(agent, cfg, 1, seed=EVAL_SEED_OFFSET + 1, mode=mode) == results[0][1:]


def test_training_rng_stream_is_unchanged_by_evaluation(run_dir):
    """What training draws after an evaluation is what it would have drawn without it."""
    agent, cfg = _agent(run_dir)
    _reseed(7)
    expected = (torch.rand(5), np.random.rand(5), random.random())
    _reseed(7)
    run_episodes(agent, cfg, 1, seed=EVAL_SEED_OFFSET, mode="sample")
    got = (torch.rand(5), np.random.rand(5), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


# ------------------------------------------------------------------------------------------------ entry points
@pytest.mark.slow
def test_evaluate_clean_twice_gives_identical_files(run_dir, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    first, second = _twice(evaluate, run, episodes=2, seed=0, device="cpu")
    assert first == second
    assert len(first["episodes"]) == 2


@pytest.mark.slow
def test_evaluate_suite_twice_gives_identical_files(run_dir, tmp_path):
    from mbrl.runs.evaluate import evaluate_suite
    from shifts.base import kinds

    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    suite = "color:5,gaussian_noise:3" if "color" in kinds() else "gaussian_noise:3,contrast:5"
    first, second = _twice(evaluate_suite, run, suite, episodes=1, seed=0, device="cpu")
    assert first == second
    assert [(r["shift"], r["severity"]) for r in first["results"]][0] == ("none", 0)
    assert len(first["results"]) == 3


def _fake_adapted(run_dir: Path, out: Path) -> Path:
    """A copy of ``run_dir`` with the adaptation metadata of a run adapted to gaussian_noise:3 (enough for the
    report and the alpha sweep, which only evaluate)."""
    run = Path(shutil.copytree(run_dir, out))
    meta = json.loads((run / "config.json").read_text())
    steps = int(checkpoint.load_state(run_dir)["counters"]["env_steps"])
    meta.update(adapted_from=str(run_dir), target="gaussian_noise:3", conditions=[["gaussian_noise", 3]], mix=0.5,
                lr_scale=0.1, shift_seed=0, replay_sources=[str(run_dir)],
                lineage=[{"run": str(run_dir), "target": "clean", "env_steps": steps}], base_env_steps=steps,
                lineage_target_env_steps=0)
    (run / "config.json").write_text(json.dumps(meta))
    return run


@pytest.mark.slow
def test_stage_report_and_alpha_sweep_twice_give_identical_files(run_dir, tmp_path):
    from mbrl.runs.adapt import alpha_sweep, stage_report

    adapted = _fake_adapted(run_dir, tmp_path / "adapted")
    first, second = _twice(stage_report, adapted, episodes=1, levels=False)
    assert first == second
    assert [r["condition"] for r in first["results"]] == ["gaussian_noise:3", "clean"]
    first, second = _twice(alpha_sweep, run_dir, adapted, ["0", "0.5"], episodes=1)
    assert first == second
    assert [row["alpha_name"] for row in first["sweep"]] == ["0", "0.5"]


# ------------------------------------------------------------------------------------------------ threads
def _record_threads(monkeypatch) -> list[int]:
    """Record torch's thread count at every policy step."""
    from mbrl.agent import Agent

    seen: list[int] = []
    act = Agent.act

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return act(self, *args, **kwargs)

    monkeypatch.setattr(Agent, "act", spy)
    return seen


@pytest.mark.slow
def test_evaluation_runs_with_the_runs_threads_and_restores_the_callers(run_dir, tmp_path, monkeypatch):
    from mbrl.runs.evaluate import evaluate_suite

    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    assert checkpoint.config_of(checkpoint.load_state(run)).threads == 1
    seen = _record_threads(monkeypatch)
    torch.set_num_threads(2)
    evaluate(run, episodes=1, device="cpu")
    assert seen and set(seen) == {1}  # the run's threads=1
    assert torch.get_num_threads() == 2  # the caller's count is back
    seen.clear()
    evaluate_suite(run, "gaussian_noise:3", episodes=1, device="cpu", threads=2)
    assert seen and set(seen) == {2}  # an explicit count wins
    torch.set_num_threads(1)
    seen.clear()
    agent, cfg = _agent(run)
    cfg.threads = 0
    run_episodes(agent, cfg, 1, seed=EVAL_SEED_OFFSET)
    assert seen and set(seen) == {max(1, os.cpu_count() or 1)}  # no threads anywhere: every core
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------------------------------ policy
def _record_modes(monkeypatch) -> list[str]:
    """Record the ``mode`` of every policy step."""
    from mbrl.agent import Agent

    seen: list[str] = []
    act = Agent.act

    def spy(self, obs, is_first, state, mode="sample", out=None):
        seen.append(mode)
        return act(self, obs, is_first, state, mode, out=out)

    monkeypatch.setattr(Agent, "act", spy)
    return seen


@pytest.mark.slow
def test_evaluation_samples_the_policy_unless_told_otherwise(run_dir, tmp_path, monkeypatch):
    """The reference code samples its policy when it evaluates (danijar/dreamerv3 ``agent.py`` ``policy``), so
    evaluation does too by default; ``policy="mode"`` (``--policy mode``) or a run's ``eval_policy=mode`` takes the
    deterministic mode; the files say which."""
    from mbrl.runs.evaluate import evaluate_suite

    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    seen = _record_modes(monkeypatch)
    clean = json.loads(evaluate(run, episodes=1, device="cpu").read_text())
    assert seen and set(seen) == {"sample"} and clean["eval_policy"] == "sample"
    seen.clear()
    clean = json.loads(evaluate(run, episodes=1, device="cpu", policy="mode").read_text())
    assert seen and set(seen) == {"mode"} and clean["eval_policy"] == "mode"
    seen.clear()
    suite = json.loads(evaluate_suite(run, "gaussian_noise:3", episodes=1, device="cpu", policy="mode").read_text())
    assert seen and set(seen) == {"mode"} and suite["eval_policy"] == "mode"
    seen.clear()
    agent, cfg = _agent(run)
    cfg.eval_policy = "mode"
    run_episodes(agent, cfg, 1, seed=EVAL_SEED_OFFSET)
    assert seen and set(seen) == {"mode"}
    with pytest.raises(ConfigError, match="--policy 'greedy' is not allowed; allowed: sample, mode"):
        evaluate(run, episodes=1, device="cpu", policy="greedy")


def test_eval_policy_is_a_resumable_choice():
    """``eval_policy`` may change on resume (it is not part of what was trained) and takes sample or mode only."""
    from mbrl.config import incompatible_keys, model_hash

    sample, mode = build_config(TINY_RUN), build_config(TINY_RUN + ["eval_policy=mode"])
    assert sample.eval_policy == "sample" and mode.eval_policy == "mode"
    assert incompatible_keys(sample, mode) == [] and model_hash(sample) == model_hash(mode)
    with pytest.raises(ConfigError, match="eval_policy='greedy' is not allowed; allowed: sample, mode"):
        build_config(TINY_RUN + ["eval_policy=greedy"])


def test_resolve_threads():
    cfg = build_config(TINY_RUN)
    assert resolve_threads(cfg) == 1
    assert resolve_threads(cfg, 3) == 3
    assert resolve_threads(cfg, 0) == 1  # 0 = not given
    cfg.threads = 0
    cores = os.cpu_count() or 1
    assert resolve_threads(cfg) == cores
    assert resolve_threads(cfg, workers=2) == max(1, cores // 2)
    assert resolve_threads(None, workers=10 * cores) == 1
    with pytest.raises(ConfigError, match="--threads"):
        resolve_threads(cfg, -1)
