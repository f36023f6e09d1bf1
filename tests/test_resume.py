"""``dreamshift train --resume RUN`` continues a run from the run alone: its config comes from the checkpoint,
settings given with it may change only budgets, logging and device. (A run killed with ``kill -9`` and resumed:
``tests/test_train.py``.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, override, tree
from test_train import records

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
