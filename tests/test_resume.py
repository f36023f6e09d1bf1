"""``dreamshift train --resume RUN`` continues a run from the run alone: its config comes from the checkpoint,
settings given with it may change only budgets, logging and device, and a run killed with ``kill -9`` finishes
with its counters continued and every metrics line logged exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, override, tree
from test_train import _ckpt_counters, records

from mbrl.config import build_config
from mbrl.runs import checkpoint
from mbrl.runs.train import resume_config, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run of 200 env steps (tests copy it before changing it)."""
    threads = torch.get_num_threads()
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    try:
        train(build_config([*TINY_RUN, f"run_dir={run_dir}"]))
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
def test_kill_9_then_resume_without_overrides_finishes_the_run(tmp_path):
    run_dir, steps = tmp_path / "run", 1000
    ckpt = run_dir / "checkpoint" / "checkpoint.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    base = [a for a in TINY_RUN if not a.startswith(("steps=", "save_every="))]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dreamshift", "train", *base, f"steps={steps}", "save_every=200",
                             f"run_dir={run_dir}"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.time() < deadline, "no checkpoint in time"
            c = _ckpt_counters(ckpt) if ckpt.exists() else None
            # kill once a checkpoint exists *and* metrics were logged after it (resume must drop those)
            if c and any(r["env_steps"] > c["env_steps"] for r in records(run_dir, True)):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    stored = checkpoint.load_state(run_dir)["counters"]
    assert 200 <= stored["env_steps"] < steps and stored["updates"] > 0

    res = subprocess.run([sys.executable, "-m", "dreamshift", "train", "--resume", str(run_dir)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    final = checkpoint.load_state(run_dir)
    c = final["counters"]
    assert (c["env_steps"], c["agent_steps"]) == (steps, steps // 2)  # continued to the stored budget
    assert c["updates"] > stored["updates"] and c["episodes"] >= stored["episodes"]
    assert checkpoint.config_of(final).steps == steps and checkpoint.config_of(final).save_every == 200
    recs = records(run_dir)
    train_steps = [r["env_steps"] for r in recs if r["kind"] == "train"]
    assert train_steps == list(range(50, steps + 1, 50))  # none duplicated, none lost
    episode_steps = [r["env_steps"] for r in recs if r["kind"] == "episode"]
    assert episode_steps == sorted(set(episode_steps))
    updates = [r["updates"] for r in recs if r["kind"] == "train"]
    assert updates == sorted(updates) and updates[-1] == c["updates"]


@pytest.mark.slow
def test_resume_with_steps_extends_the_budget(cli, run):
    before = records(run)
    res = cli("train", "--resume", "run", "steps=300", "log_every=100")
    assert res.returncode == 0, res.stderr
    state = checkpoint.load_state(run)
    assert state["counters"]["env_steps"] == 300
    cfg = checkpoint.config_of(state)
    assert (cfg.steps, cfg.log_every, cfg.model.deter, cfg.batch_size) == (300, 100, 64, 2)  # the rest: stored
    recs = records(run)
    assert recs[: len(before)] == before
    assert [r["env_steps"] for r in recs[len(before):] if r["kind"] == "train"] == [300]


@pytest.mark.parametrize("overrides, needles", [
    (["size=M"], ["size=M", "'XS'"]),
    (["steps=400", "model.deter=128", "batch_size=4"], ["model.deter=128", "batch_size=4", "only"]),
    (["env=dmc:walker_walk"], ["env=dmc:walker_walk"]),
])
def test_resume_with_a_non_resumable_override_is_one_error(cli, run, tmp_path, overrides, needles):
    before = tree(tmp_path)
    res = assert_user_error(cli("train", "--resume", "run", *overrides), "cannot resume", *needles)
    assert "steps=400" not in res
    assert tree(tmp_path) == before


def test_resume_with_the_full_original_overrides_still_works(run):
    """benchmarks/learning.py passes every original override again (identical values) plus a larger budget."""
    cfg = resume_config(run, override(TINY_RUN, "steps=250", f"run_dir={run}"))
    assert cfg.steps == 250 and cfg.run_dir == str(run)
    stored = checkpoint.read_config(run)
    cfg.steps, cfg.run_dir = stored.steps, stored.run_dir  # the copied run was trained elsewhere
    assert cfg == stored


def test_resume_config_errors(tmp_path, run):
    from envs.errors import CheckpointError, ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        resume_config(run, ["nope=1"])
    with pytest.raises(ConfigError, match="steps"):
        resume_config(run, ["steps=abc"])
    with pytest.raises(CheckpointError, match="does not exist"):
        resume_config(tmp_path / "missing", [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resume_config(tmp_path / "empty", [])
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["config"]["steps"] == 200
