"""End-to-end tests of :mod:`mbrl.runs.train`, :mod:`mbrl.runs.checkpoint` and :mod:`mbrl.runs.evaluate` on real
dm_control pixels with a tiny model: run files, checkpoint contents, kill -9 and resume, refused resume, evaluation.

Budgets are in env steps; with ``action_repeat=2`` one agent step is 2 env steps."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, override

from envs.errors import ConfigError
from mbrl.config import build_config, model_hash, to_dict
from mbrl.replay import Replay
from mbrl.runs import checkpoint
from mbrl.runs.train import train

BASE = TINY_RUN
STEPS = 200


def records(run_dir: Path, complete_only: bool = False) -> list[dict]:
    """Records of metrics.jsonl; ``complete_only`` skips a last line still being written by a live run."""
    text = (run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""
    lines = text.splitlines(keepends=True)
    if complete_only:
        lines = [line for line in lines if line.endswith("\n")]
    return [json.loads(line) for line in lines if line.strip()]


def load_replay(run_dir: Path, state: dict) -> Replay:
    cfg = checkpoint.config_of(state)
    replay = Replay(cfg.replay_capacity, cfg.num_envs, (cfg.image_size,) * 2 + (3,), state["action_dim"])
    replay.load(run_dir / "checkpoint" / state["replay_file"])
    return replay


def snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file of a run."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of ``STEPS`` env steps trained in-process (shared by the tests below; they must not modify it)."""
    threads = torch.get_num_threads()
    run_dir = tmp_path_factory.mktemp("train") / "run"
    try:
        out = train(build_config(override(BASE, f"steps={STEPS}", f"run_dir={run_dir}")))
    finally:
        torch.set_num_threads(threads)
    assert out == run_dir
    return run_dir


@pytest.mark.slow
def test_train_writes_config_metrics_and_checkpoint(trained):
    cfg = build_config(override(BASE, f"steps={STEPS}", f"run_dir={trained}"))
    stored = json.loads((trained / "config.json").read_text())
    assert stored["config"] == json.loads(json.dumps(to_dict(cfg)))
    assert stored["config_hash"] == model_hash(cfg)

    recs = records(trained)
    assert all(r["agent_steps"] * 2 == r["env_steps"] for r in recs)
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert [r["env_steps"] for r in train_recs] == list(range(50, STEPS + 1, 50))  # log_every=50
    learned = [r for r in train_recs if "wm/loss" in r]
    assert learned and all(math.isfinite(r["wm/loss"]) for r in learned)
    assert train_recs[-1]["updates"] > 0 and train_recs[-1]["replay_size"] > 0
    episodes = [r for r in recs if r["kind"] == "episode"]
    assert [r["env_steps"] for r in episodes] == [100, 200]
    assert all(r["length"] == 100 and 0.0 <= r["return"] <= 100.0 for r in episodes)

    ckpt = trained / "checkpoint"
    assert (ckpt / "checkpoint.json").is_file() and not (ckpt / "agent.pt").exists()
    assert len(list(ckpt.glob("agent-*.safetensors"))) == len(list(ckpt.glob("state-*.safetensors"))) == 1
    replays = sorted(p.name for p in ckpt.glob("replay-*.npz"))
    assert len(replays) == 1
    assert not [p.name for p in trained.rglob(".*")], "temp files left behind"

    state = checkpoint.load_state(trained)
    assert state["replay_file"] == replays[0]
    c = state["counters"]
    assert (c["env_steps"], c["agent_steps"], c["episodes"]) == (STEPS, STEPS // 2, 2)
    assert c["updates"] == train_recs[-1]["updates"]
    # updates * batch_size * batch_length ~= train_ratio * agent steps after prefill = 4 * 75
    assert abs(c["updates"] * 2 * 8 - 4 * (STEPS // 2 - 25)) <= 2 * 8
    assert checkpoint.config_of(state) == cfg

    replay = load_replay(trained, state)
    # every agent step plus the final observation of each of the 2 episodes
    assert len(replay) == replay.total_added == STEPS // 2 + 2
    first = replay.data["is_first"][0, : len(replay)]
    assert first.sum() == 2 and first[0]
    assert not replay.data["is_terminal"].any()  # cartpole episodes end by the time limit only
    assert replay.data["image"][0, : len(replay)].std() > 0  # real rendered frames, not zeros


def test_resume_with_changed_model_key_is_refused_and_touches_nothing(trained):
    before = snapshot(trained)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match=r"model\.deter") as err:
            train(build_config(override(BASE, f"steps={STEPS + 100}", "model.deter=128")), resume=trained)
    finally:
        torch.set_num_threads(threads)
    assert "64" in str(err.value) and "128" in str(err.value)
    assert snapshot(trained) == before


def test_evaluate_writes_clean_json(trained, tmp_path):
    from mbrl.runs.evaluate import EVAL_SEED_OFFSET, evaluate

    # evaluate a copy: the shared run must stay unchanged for the other tests
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = evaluate(run, episodes=1, device="cpu")
    assert path == run / "eval" / "clean.json"
    data = json.loads(path.read_text())
    assert math.isfinite(data["return_mean"]) and 0.0 <= data["return_mean"] <= 100.0
    assert len(data["episodes"]) == 1
    ep = data["episodes"][0]
    assert ep["length"] == 100  # time_limit, in env steps
    assert ep["episode_seed"] == EVAL_SEED_OFFSET and ep["return"] == data["return_mean"]
    assert data["env_steps_trained"] == STEPS and data["env"] == "dmc:cartpole_balance"
    assert data["config_hash"] == json.loads((run / "config.json").read_text())["config_hash"]
    assert data["return_std"] == 0.0 and data["return_stderr"] == 0.0
    assert not list((run / "eval").glob(".*")), "temp files left behind"


def _ckpt_counters(path: Path) -> dict | None:
    """The counters of a run's ``checkpoint.json`` (None while there is none)."""
    try:
        return json.loads(path.read_text())["counters"]
    except (OSError, ValueError, KeyError):  # not written yet
        return None


@pytest.mark.slow
def test_kill_9_then_resume_without_overrides_continues_the_run(tmp_path):
    """kill -9 once a checkpoint exists and metrics were logged after it; ``train --resume RUN`` with no settings
    continues from the checkpoint (not from 0) to the stored budget: counters, replay, records and config as one
    uninterrupted run would leave them."""
    run_dir, steps = tmp_path / "run", 400
    agent_pt = run_dir / "checkpoint" / "checkpoint.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dreamshift", "train",
                             *override(BASE, f"steps={steps}", "save_every=200", f"run_dir={run_dir}")],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.time() < deadline, "no checkpoint with env_steps >= 200 in time"
            c = _ckpt_counters(agent_pt) if agent_pt.exists() else None
            # kill once a checkpoint exists *and* metrics were logged after it (resume must drop those)
            if c and c["env_steps"] >= 200 and any(r["env_steps"] > c["env_steps"] for r in records(run_dir, True)):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()

    state = checkpoint.load_state(run_dir)
    stored = state["counters"]
    stored_replay = load_replay(run_dir, state)
    assert 200 <= stored["env_steps"] < steps and stored["updates"] > 0
    assert stored_replay.total_added == len(stored_replay) > 0
    assert any(r["env_steps"] > stored["env_steps"] for r in records(run_dir))  # logged after the checkpoint

    res = subprocess.run([sys.executable, "-m", "dreamshift", "train", "--resume", str(run_dir)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(run_dir) in res.stdout

    final_state = checkpoint.load_state(run_dir)
    final = final_state["counters"]
    assert (final["env_steps"], final["agent_steps"]) == (steps, steps // 2)  # to the stored budget, not from 0
    assert checkpoint.config_of(final_state).steps == steps and checkpoint.config_of(final_state).save_every == 200
    assert final["updates"] > stored["updates"]  # not reset, and training went on
    assert final["episodes"] >= stored["episodes"] + 1  # the resumed env starts a new episode of 50 agent steps
    final_replay = load_replay(run_dir, final_state)
    assert final_replay.total_added >= stored_replay.total_added + 50
    # the stored part of the buffer survived the resume (the ring has not wrapped: capacity 5000)
    n = len(stored_replay)
    assert np.array_equal(final_replay.data["reward"][0, :n], stored_replay.data["reward"][0, :n])
    assert np.array_equal(final_replay.data["image"][0, :n], stored_replay.data["image"][0, :n])
    assert final_replay.data["is_first"][0, n]  # the resumed stream starts a fresh episode
    assert [p.name for p in (run_dir / "checkpoint").glob("replay-*.npz")] == [final_state["replay_file"]]

    recs = records(run_dir)
    train_steps = [r["env_steps"] for r in recs if r["kind"] == "train"]
    # the records the killed run logged after its checkpoint were dropped: no duplicates, none lost
    assert train_steps == list(range(50, steps + 1, 50)), train_steps
    assert max(r["env_steps"] for r in recs) == steps
    episode_steps = [r["env_steps"] for r in recs if r["kind"] == "episode"]
    assert episode_steps == sorted(set(episode_steps))
    updates = [r["updates"] for r in recs if r["kind"] == "train"]
    assert updates == sorted(updates) and updates[-1] == final["updates"]


def _resume_in_process(run_dir: Path, steps: int) -> None:
    threads = torch.get_num_threads()
    try:
        train(build_config(override(BASE, f"steps={steps}")), resume=run_dir)
    finally:
        torch.set_num_threads(threads)


def test_resume_drops_metrics_logged_after_the_checkpoint(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    kept = records(run)
    with open(run / "metrics.jsonl", "a") as f:  # what a killed run logged after its last checkpoint
        f.write(json.dumps({"kind": "train", "env_steps": STEPS + 50, "agent_steps": STEPS // 2 + 25}) + "\n")
    _resume_in_process(run, STEPS)  # budget already reached: restore, truncate the log, save again
    assert records(run) == kept
    assert checkpoint.load_state(run)["counters"] == checkpoint.load_state(trained)["counters"]
    assert len(list((run / "checkpoint").glob("replay-*.npz"))) == 1


def test_resume_tolerates_a_metrics_line_cut_by_the_kill(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    kept = records(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "env_st')
    _resume_in_process(run, STEPS)
    assert records(run) == kept


@pytest.mark.slow
def test_vectorised_collection_with_two_env_processes(tmp_path):
    """num_envs=2 collects through gymnasium's AsyncVectorEnv: two replay streams, both episodes logged."""
    run = train(build_config(override(BASE, "num_envs=2", "steps=200", "save_every=0", f"run_dir={tmp_path / 'vec'}")))
    state = checkpoint.load_state(run)
    assert state["counters"]["env_steps"] == 200  # 50 agent steps x 2 envs x action repeat 2
    assert state["counters"]["agent_steps"] == 100
    replay = Replay(5000, 2, (32, 32, 3), state["action_dim"])
    replay.load(run / "checkpoint" / state["replay_file"])
    assert replay.count.tolist() == [51, 51]  # 50 steps + the final observation of each env's episode
    episodes = [r for r in records(run) if r["kind"] == "episode"]
    assert len(episodes) == 2 and all(r["length"] == 100 for r in episodes)
    assert episodes[0]["return"] != episodes[1]["return"]  # different seeds per env
