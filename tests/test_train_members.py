"""``dreamshift train ... seeds=[...]`` (:mod:`mbrl.runs.train_members`) on real dm_control with a tiny model: the run
directory layout, every member read by evaluate / leaderboard / plot, kill -9 then resume, a diverging member
stopped while the others go on, and bad seed lists refused with one line."""

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
from conftest import TINY_RUN, assert_user_error, override
from test_train import _ckpt_counters, records

from dreamshift.train import split_seeds
from mbrl.config import build_config
from mbrl.runs import checkpoint
from mbrl.runs.train_members import member_dir, read_members, train_members

STATE_RUN = [*TINY_RUN, "obs=state"]


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory) -> Path:
    """Two members (seeds 3 and 5) of 200 env steps, trained in-process (tests copy it before changing it)."""
    threads = torch.get_num_threads()
    run_dir = tmp_path_factory.mktemp("members") / "run"
    try:
        train_members(build_config([*STATE_RUN, f"run_dir={run_dir}"]), [3, 5])
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.mark.slow
def test_layout_and_members_are_single_runs(batch_run):
    doc = read_members(batch_run)
    assert doc["seeds"] == [3, 5] and doc["stopped"] == {}
    for seed in (3, 5):
        d = member_dir(batch_run, seed)
        cfg = json.loads((d / "config.json").read_text())["config"]
        assert cfg["seed"] == seed and cfg["run_dir"] == str(d)
        state = checkpoint.load_state(d)
        assert state["counters"]["env_steps"] == 200 and state["counters"]["updates"] > 0
        assert checkpoint.config_of(state).seed == seed
        assert [r["env_steps"] for r in records(d) if r["kind"] == "train"] == [50, 100, 150, 200]
    w3 = checkpoint.load_state(member_dir(batch_run, 3))["agent"]
    w5 = checkpoint.load_state(member_dir(batch_run, 5))["agent"]
    assert set(w3) == set(w5) and any(not torch.equal(w3[k], w5[k]) for k in w3)  # own seeds, own weights


@pytest.mark.slow
def test_every_member_is_read_by_evaluate_leaderboard_and_plot(cli, batch_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(batch_run, run)
    for seed in (3, 5):
        res = cli("evaluate", str(member_dir(run, seed)), "--episodes", "1")
        assert res.returncode == 0, res.stderr
        assert (member_dir(run, seed) / "eval" / "clean.json").is_file()
    res = cli("leaderboard", str(run), "--out", str(tmp_path / "lb"), "--reps", "100")
    assert res.returncode == 0, res.stderr
    board = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "|       2 |" in board  # the two members are the row's two seeds
    res = cli("plot", str(run), "--out", str(tmp_path / "curves.png"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_kill_9_then_resume_finishes_every_member(tmp_path):
    run_dir, steps = tmp_path / "run", 400
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    base = [a for a in STATE_RUN if not a.startswith(("steps=", "save_every="))]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dreamshift", "train", *base, f"steps={steps}", "save_every=200",
                             f"run_dir={run_dir}", "seeds=[0,1]"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    ckpts = [member_dir(run_dir, s) / "checkpoint" / "checkpoint.json" for s in (0, 1)]
    try:
        deadline = time.time() + 200
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.time() < deadline, "no checkpoint in time"
            if all(c.exists() for c in ckpts) and _ckpt_counters(ckpts[1])["env_steps"] >= 200:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    res = subprocess.run([sys.executable, "-m", "dreamshift", "train", "--resume", str(run_dir)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for seed in (0, 1):
        d = member_dir(run_dir, seed)
        c = checkpoint.load_state(d)["counters"]
        assert c["env_steps"] == steps
        train_steps = [r["env_steps"] for r in records(d) if r["kind"] == "train"]
        assert train_steps == list(range(50, steps + 1, 50))  # none duplicated, none lost


@pytest.mark.slow
def test_a_diverging_member_stops_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    """NaN rewards in member 1's batches: member 1 stops at its first check (its last good checkpoint kept,
    members.json says why), member 0 trains to the end with finite weights."""
    from mbrl import members as members_mod

    real = members_mod.MemberBatch.train_step

    def poisoned(self, batch, out=None):
        batch = {k: v.clone() for k, v in batch.items()}
        batch["state"][1] = float("nan")
        return real(self, batch, out)

    monkeypatch.setattr(members_mod.MemberBatch, "train_step", poisoned)
    run_dir = tmp_path / "run"
    train_members(build_config(override(STATE_RUN, f"run_dir={run_dir}", "steps=300")), [0, 1])
    doc = read_members(run_dir)
    assert list(doc["stopped"]) == ["1"] and "world model at update 1" in doc["stopped"]["1"]
    assert "member seed=1 stopped" in capsys.readouterr().err
    assert checkpoint.load_state(member_dir(run_dir, 0))["counters"]["env_steps"] == 300
    assert not (member_dir(run_dir, 1) / "checkpoint" / "checkpoint.json").exists()  # never a bad checkpoint
    weights = checkpoint.load_state(member_dir(run_dir, 0))["agent"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.slow
def test_a_new_batch_stopped_before_its_first_env_step_can_start_again(tmp_path, monkeypatch):
    """Ctrl-C after the members' config files were written but before any env step: what the batch wrote is
    removed (the same command starts it again) and the interrupt says nothing was saved; an empty run_dir given
    by the user is kept, emptied of what the batch wrote."""
    from mbrl.runs import train_members as tm
    from mbrl.runs.train import TrainingInterrupted

    real_run = tm._run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tm, "_run", interrupted)
    for made in (False, True):
        run_dir = tmp_path / f"run{int(made)}"
        if made:
            run_dir.mkdir()
        cfg = build_config(override(STATE_RUN, f"run_dir={run_dir}", "steps=100"))
        with pytest.raises(TrainingInterrupted) as info:
            train_members(cfg, [0, 1])
        assert info.value.checkpoint is None and info.value.run_dir == run_dir
        assert run_dir.is_dir() == made and (not made or not any(run_dir.iterdir()))
    monkeypatch.setattr(tm, "_run", real_run)
    assert train_members(cfg, [0, 1]) == run_dir  # the same command again: refused before, runs now
    assert checkpoint.load_state(member_dir(run_dir, 1))["counters"]["env_steps"] == 100


@pytest.mark.slow
def test_a_resumed_batch_stopped_before_its_loop_keeps_its_checkpoints(batch_run, tmp_path, monkeypatch):
    from mbrl.runs import train_members as tm
    from mbrl.runs.train import TrainingInterrupted

    run = tmp_path / "run"
    shutil.copytree(batch_run, run)
    monkeypatch.setattr(tm, "_run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(TrainingInterrupted) as info:
        train_members(build_config(override(STATE_RUN, f"run_dir={run}", "steps=400")), resume=run)
    assert info.value.run_dir == run and not info.value.saved and info.value.env_steps == 200
    assert info.value.checkpoint == checkpoint.checkpoint_path(member_dir(run, 3))
    assert checkpoint.load_state(member_dir(run, 5))["counters"]["env_steps"] == 200


@pytest.mark.parametrize("tokens, needle", [
    (["seeds=[]"], "empty"), (["seeds=[0,0]"], "twice"), (["seeds=[-1,2]"], ">= 0"),
    (["seeds=[a]"], "not a list of integers"), (["seeds=[0]", "seeds=[1]"], "given 2 times"),
    (["seed=1", "seeds=[0,1]"], "both given")])
def test_bad_seed_lists_are_one_line(cli, tokens, needle, tmp_path):
    res = cli("train", *STATE_RUN, f"run_dir={tmp_path / 'r'}", *tokens)
    assert_user_error(res, needle)
    assert not (tmp_path / "r").exists()


def test_split_seeds():
    assert split_seeds(["env=dmc:x", "seeds=[0, 1,2]"]) == (["env=dmc:x"], [0, 1, 2])
    assert split_seeds(["seeds=3,4"]) == ([], [3, 4])
    assert split_seeds(["seed=2"]) == (["seed=2"], None)
