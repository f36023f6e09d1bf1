"""Tests for the ``dreamshift`` command line (:mod:`dreamshift`): every bad input exits with status 2, one
``error:`` line saying what is allowed, no traceback and no files written; plus ``envs list`` and ``config``.

Each bad input is checked in-process through :func:`dreamshift.main` (cheap: a fresh interpreter costs seconds
on a loaded machine, mostly importing torch), and the main ones again in a real ``python -m dreamshift``
subprocess so that the exit status, stderr and the absence of a traceback are those a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, assert_user_error, override, tree, write_untrained_run

TINY = TINY_RUN


def cli_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamshift", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory) -> Path:
    """A run directory with a real (untrained) checkpoint of the TINY config, written in-process."""
    return write_untrained_run(tmp_path_factory.mktemp("cli") / "run", TINY)


BAD_OVERRIDES = [
    pytest.param(["env=dmc:walker_fly"], ("walker_fly", "dmc:walker_walk"), id="unknown-env"),
    pytest.param(["env=atari:pong"], ("atari", "known suites: dmc"), id="unknown-suite"),
    pytest.param(["env=walker_walk"], ("suite:task",), id="env-without-suite"),
    pytest.param(["foo=1"], ("'foo'", "allowed:", "steps", "model.*"), id="unknown-key"),
    pytest.param(["model.foo=1"], ("'model.foo'", "allowed:"), id="unknown-section-key"),
    pytest.param(["steps=abc"], ("steps", "expected int"), id="wrong-type"),
    pytest.param(["steps=1.5"], ("steps", "expected int"), id="non-integer"),
    pytest.param(["progress=maybe"], ("progress", "expected bool"), id="wrong-bool"),
    pytest.param(["size=XXL"], ("size", "XXL", "allowed:", "XS", "size200m"), id="bad-choice"),
    pytest.param(["model.norm=batch"], ("model.norm", "rms"), id="bad-section-choice"),
    pytest.param(["steps=0"], ("steps", ">= 1"), id="out-of-range"),
    pytest.param(["image_size=48"], ("image_size", "power of two"), id="bad-image-size"),
    pytest.param(["steps"], ("'steps'", "key=value"), id="token-without-equals"),
    pytest.param(["encoder=vit_huge"], ("encoder", "allowed:", "cnn"), id="unknown-encoder"),
]


@pytest.mark.parametrize(("overrides", "needles"), BAD_OVERRIDES)
def test_train_rejects_bad_overrides_and_writes_nothing(cli, tmp_path, overrides, needles):
    # the bad token replaces TINY's valid value of the same key (a key given twice is refused)
    res = cli("train", *override(TINY, *overrides))
    assert_user_error(res, *needles)
    assert tree(tmp_path) == {}, "a failed train must not create a run directory"


def test_demo_rejects_bad_override(cli, tmp_path):
    assert_user_error(cli("demo", "foo=1"), "'foo'", "allowed:")
    assert tree(tmp_path) == {}


def test_config_command_rejects_bad_override(cli, tmp_path):
    res = cli("config", "size=XXL")
    assert_user_error(res, "size", "allowed:")
    assert res.stdout == "" and tree(tmp_path) == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_gpu(cli, tmp_path):
    assert_user_error(cli("train", *override(TINY, "device=cuda")), "cuda", "device=cpu")
    assert tree(tmp_path) == {}


def test_evaluate_missing_run_dir(cli, tmp_path):
    assert_user_error(cli("evaluate", "no_such_run"), "no_such_run", "does not exist")
    assert tree(tmp_path) == {}


def test_evaluate_dir_without_checkpoint(cli, tmp_path):
    (tmp_path / "empty_run").mkdir()
    assert_user_error(cli("evaluate", "empty_run"), "no checkpoint",
                      str(Path("empty_run") / "checkpoint" / "checkpoint.json"))
    assert tree(tmp_path) == {"empty_run": "dir"}


def test_evaluate_bad_episode_count(cli, tmp_path, ckpt_run):
    before = tree(ckpt_run)
    assert_user_error(cli("evaluate", str(ckpt_run), "--episodes", "0"), "--episodes", ">= 1")
    assert tree(ckpt_run) == before and tree(tmp_path) == {}


def test_evaluate_bad_policy(cli, tmp_path, ckpt_run):
    before = tree(ckpt_run)
    assert_user_error(cli("evaluate", str(ckpt_run), "--policy", "greedy"), "--policy", "sample", "mode")
    assert_user_error(cli("evaluate", str(ckpt_run), "--policy", "greedy", "--suite", "fog:1"), "--policy")
    assert tree(ckpt_run) == before and tree(tmp_path) == {}


def test_resume_dir_without_checkpoint(cli, tmp_path):
    (tmp_path / "empty_run").mkdir()
    assert_user_error(cli("train", "--resume", "empty_run", *TINY), "no checkpoint")
    assert tree(tmp_path) == {"empty_run": "dir"}


def test_resume_missing_dir(cli, tmp_path):
    assert_user_error(cli("train", "--resume", "gone", *TINY), "gone", "does not exist")
    assert tree(tmp_path) == {}


def test_resume_with_incompatible_config(cli, tmp_path, ckpt_run):
    before = tree(ckpt_run)
    line = assert_user_error(cli("train", "--resume", str(ckpt_run), *override(TINY, "model.deter=128", "seed=3")),
                             "cannot resume", "model.deter=128 (the run has 64)", "seed=3 (the run has 0)")
    assert "only budgets, logging and device may change" in line
    assert tree(ckpt_run) == before, "a refused resume must not touch the run"
    assert tree(tmp_path) == {}


def test_train_into_run_dir_that_has_a_checkpoint(cli, tmp_path, ckpt_run):
    before = tree(ckpt_run)
    assert_user_error(cli("train", *TINY, f"run_dir={ckpt_run}"), "already holds a checkpoint", "--resume")
    assert tree(ckpt_run) == before
    assert tree(tmp_path) == {}


# --- the same user errors through a real interpreter: status, stderr, no traceback, nothing written ---

@pytest.mark.parametrize(("args", "needles"), [
    pytest.param(["train", *override(TINY, "env=dmc:walker_fly")], ("walker_fly", "known dmc tasks"), id="unknown-env"),
    pytest.param(["train", *TINY, "steps"], ("key=value",), id="token-without-equals"),
])
@pytest.mark.slow
def test_subprocess_user_errors(tmp_path, args, needles):
    res = cli_subprocess(*args, cwd=tmp_path)
    assert_user_error(res, *needles)
    assert tree(tmp_path) == {}


@pytest.mark.slow
def test_subprocess_refuses_incompatible_resume(tmp_path, ckpt_run):
    before = tree(ckpt_run)
    res = cli_subprocess("train", "--resume", str(ckpt_run), *override(TINY, "model.deter=128"), cwd=tmp_path)
    assert_user_error(res, "cannot resume", "model.deter")
    assert tree(ckpt_run) == before and tree(tmp_path) == {}


@pytest.mark.slow
def test_envs_list_console_script(tmp_path):
    exe = Path(sys.executable).parent / "dreamshift"
    assert exe.exists(), "the dreamshift console script is not installed"
    res = subprocess.run([str(exe), "envs", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names = res.stdout.split()
    assert "dmc:walker_walk" in names and "dmc:cartpole_balance" in names
    assert names == sorted(names) and all(n.split(":")[0] in ("dmc", "metaworld", "driving", "carla") for n in names)
    assert not any("lqr" in n for n in names)
    # availability per suite goes to stderr; no CARLA server runs here
    assert "dmc        available" in res.stderr and "missing: a CARLA server at localhost:2000" in res.stderr


@pytest.mark.slow
def test_config_prints_resolved_json(tmp_path):
    res = cli_subprocess("config", "size=XS", "model.units=100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["size"] == "XS"
    assert data["model"]["deter"] == 256 and data["model"]["cnn_depth"] == 24  # Table B.1, XS
    assert data["model"]["units"] == 100  # explicit override beats the preset
    assert "allowed keys:" in res.stderr and "model.deter" in res.stderr
    assert tree(tmp_path) == {}
