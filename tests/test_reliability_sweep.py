"""The bad-input sweep's other failures (issue 28): each bad invocation is one ``error:`` line with nothing
written, and inputs that used to be accepted silently (disagreeing records, a wrong base run, stale sweep results,
missing conditions) are refused or said."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import TINY_RUN, assert_user_error, override, tree, write_untrained_run
from test_train import _ckpt_counters


def _links(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file\n")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    os.symlink("nowhere", tmp_path / "dangling")


# --- 1: run_dir a file, a symbolic link loop, a link to nothing ---------------------------------------------------

@pytest.mark.parametrize("run_dir, needles", [
    ("f", ["'f' is a file"]),
    ("loop1", ["'loop1'", "loop of symbolic links"]),
    ("loop1/x", ["loop of symbolic links"]),
    ("dangling", ["'dangling'", "symbolic link to 'nowhere', which does not exist"]),
    ("dangling/x", ["'dangling'", "symbolic link to 'nowhere'"]),
], ids=["file", "loop", "under-loop", "dangling", "under-dangling"])
@pytest.mark.parametrize("extra", [[], ["seeds=[0,1]"]], ids=["single", "seeds"])
def test_train_into_a_run_dir_that_cannot_be_a_directory_is_one_line(cli, tmp_path, run_dir, needles, extra):
    _links(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli("train", *TINY_RUN, f"run_dir={run_dir}", *extra), "run_dir", *needles)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("run_dir", ["loop1", "dangling"])
def test_resume_of_a_symbolic_link_loop_or_dangling_link_is_one_line(cli, tmp_path, run_dir):
    _links(tmp_path)
    before = tree(tmp_path)
    assert_user_error(cli("train", "--resume", run_dir), f"--resume '{run_dir}'", "symbolic link")
    assert tree(tmp_path) == before


# --- 2: one trial's records agree on what was trained ------------------------------------------------------------

def _record(**change):
    rec = {"schema": 1, "env": "dmc:cartpole_balance", "suite": "dmc", "task": "cartpole_balance",
           "encoder": "cnn", "label": "cnn", "encoder_mode": "full", "size": "XS", "shift": "none", "severity": 0,
           "seed": 0, "eval_seed": 0, "episode_seed": 10000, "return": 123.5, "success": None, "length": 1000,
           "env_steps_trained": 3000, "code_version": "0.1.0", "config_hash": "abc", "trial": "t0"}
    rec.update(change)
    return rec


def _write_records(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("change, needles", [
    ({"size": "S"}, ["disagree", "size \"S\" here but \"XS\""]),
    ({"config_hash": "def"}, ["disagree", "config_hash"]),
    ({"encoder_mode": "frozen"}, ["disagree", "encoder_mode"]),
    ({"env_steps_trained": 6000}, ["disagree", "env_steps_trained 6000 here but 3000"]),
    ({"encoder": "dinov2:small", "label": "dinov2:small"}, ["shared by two encoders", "encoder"]),
    ({"label": "cnn-small"}, ["shared by two encoders", "label"]),
], ids=["size", "config-hash", "encoder-mode", "env-steps", "encoder", "label"])
def test_a_trial_whose_records_disagree_is_refused_naming_both_places(cli, tmp_path, change, needles):
    res = tmp_path / "results"
    _write_records(res / "a.jsonl", [_record(), _record(episode_seed=10001)])
    _write_records(res / "b.jsonl", [_record(shift="fog", severity=3, **change)])
    before = tree(tmp_path)
    assert_user_error(cli("leaderboard", "results", "--out", "board"), "b.jsonl:1", "trial 't0'", "a.jsonl:1",
                      *needles)
    assert tree(tmp_path) == before


def test_a_merge_variant_of_a_trial_is_not_a_disagreement(tmp_path):
    from experiments import results

    res = tmp_path / "results"
    _write_records(res / "a.jsonl", [_record(), _record(encoder_mode="full+merge:0.5")])
    assert len(results.read_dir(res)) == 2


# --- 3: adapt-eval / merge with a BASE the adapted run was not adapted from -------------------------------------

@pytest.mark.slow
def test_merging_an_adapted_run_with_a_base_it_was_not_adapted_from_is_refused(cli, tmp_path):
    import shutil

    from mbrl.runs import checkpoint
    from mbrl.runs.merge import check_adapted_from

    write_untrained_run(tmp_path / "base", TINY_RUN)
    write_untrained_run(tmp_path / "other", [*TINY_RUN, "seed=1"])  # same model config, unrelated weights
    res = cli("adapt", "base", "--target", "color:5", "--steps", "20", "--mix", "0", "--out", "ad")
    assert res.returncode == 0, res.stderr
    before = tree(tmp_path)
    for args in (["adapt-eval", "other", "ad", "--alpha", "0,1", "--episodes", "1"],
                 ["merge", "other", "ad", "--alpha", "0.5", "--out", "m"]):
        assert_user_error(cli(*args), "ad was not adapted from other", "lineage: 'base'", "give the run it was "
                          "adapted from ('base') as BASE")
    assert tree(tmp_path) == before
    ad = checkpoint.load_run(tmp_path / "ad", agent=False)
    shutil.copytree(tmp_path / "base", tmp_path / "copy")  # a copy (or a move) of the base is still the base
    check_adapted_from(checkpoint.load_run(tmp_path / "copy", agent=False), ad)
    write_untrained_run(tmp_path / "base", TINY_RUN)  # the base saved again since (trained on): another checkpoint
    before = tree(tmp_path)
    assert_user_error(cli("adapt-eval", "base", "ad", "--alpha", "0.5", "--episodes", "1"),
                      "ad was adapted from base at 2 env steps", "trained on since")
    assert tree(tmp_path) == before


# --- 4 and 9: continual's stages, --resume and --mix checked before the base run's evaluation ----------------------

def _no_replay_run(run_dir: Path, base: Path) -> Path:
    """A run whose checkpoint stores no replay (as a merged run's): the weights of ``base``."""
    import shutil

    from mbrl.runs import checkpoint

    run = checkpoint.load_run(base)
    checkpoint.save(run_dir, run.agent, None, dict(run.counters))
    shutil.copy(base / "config.json", run_dir / "config.json")
    return run_dir


@pytest.mark.parametrize("args, needles", [
    (["--stages", "color:5;;fog:1"], ["'color:5;;fog:1'", "stage 2 of 3 is empty"]),
    (["--stages", "color:5;"], ["stage 2 of 2 is empty"]),
    (["--stages", "color:5", "--resume"], ["--resume", "--out 'c' does not exist", "drop --resume"]),
    (["--stages", "color:5", "--mix", "0.5", "--run", "merged"], ["'merged' stores no replay", "--mix 0"]),
], ids=["empty-stage", "trailing-semicolon", "resume-missing-out", "merged-with-mix"])
def test_continual_refuses_bad_stages_resume_and_mix_before_any_evaluation(cli, tmp_path, args, needles):
    import time

    base = write_untrained_run(tmp_path / "base", TINY_RUN)
    _no_replay_run(tmp_path / "merged", base)
    run = "base"
    if "--run" in args:
        run = args[args.index("--run") + 1]
        args = args[:args.index("--run")]
    before = tree(tmp_path)
    t0 = time.time()
    assert_user_error(cli("continual", run, *args, "--steps", "10", "--out", "c", "--eval-episodes", "1"), *needles)
    assert time.time() - t0 < 10  # up front, not after the base run's evaluation
    assert tree(tmp_path) == before


def test_continual_interrupted_before_anything_was_written_says_so(tmp_path, monkeypatch):
    import argparse

    from dreamshift import common

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(command="continual", out="c")
    argv = ["continual", "base", "--stages", "color:5", "--steps", "10", "--out", "c"]
    line = common.interrupted_message(args, argv, KeyboardInterrupt())
    assert "nothing was written to resume" in line and "--resume" not in line
    (tmp_path / "c" / "stage1-color5").mkdir(parents=True)
    assert common.interrupted_message(args, argv, KeyboardInterrupt()).endswith("--out c --resume")


# --- 5: resume keeps garbled metrics lines aside, stays in its run_dir, only trains on ---------------------------

def test_resume_keeps_garbled_metrics_lines_aside_and_says_so(cli, tmp_path):
    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    good = [json.dumps({"kind": "train", "env_steps": s, "agent_steps": s}) for s in (1, 2)]
    after = json.dumps({"kind": "train", "env_steps": 50, "agent_steps": 50})  # after the checkpoint: dropped
    (run_dir / "metrics.jsonl").write_text(f"{good[0]}\n{{garbled\n{good[1]}\n{after}\n{{\"kind\": \"tr")
    res = cli("train", "--resume", "run", "steps=60", "log_every=60")
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "not JSON records" in line]
    assert len(notes) == 1 and "(line 2)" in notes[0] and "metrics.jsonl.garbled" in notes[0], res.stderr
    assert (run_dir / "metrics.jsonl.garbled").read_text() == "{garbled\n"  # the cut-short last line is not kept
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert lines[:2] == good and after not in lines and all(json.loads(x) for x in lines)


def test_resume_with_another_run_dir_is_refused_and_the_same_one_accepted(cli, tmp_path):
    from mbrl.runs.train import resume_config

    write_untrained_run(tmp_path / "run", TINY_RUN)
    before = tree(tmp_path)
    assert_user_error(cli("train", "--resume", "run", "run_dir=other", "steps=60"), "run_dir=other",
                      "continues in its own directory", "drop run_dir=")
    assert tree(tmp_path) == before
    assert resume_config(tmp_path / "run", [f"run_dir={tmp_path}/./run/", "steps=60"]).steps == 60  # itself: fine


def test_resume_with_steps_below_the_env_steps_reached_is_refused(cli, tmp_path):
    write_untrained_run(tmp_path / "run", TINY_RUN)  # at 2 env steps
    before = tree(tmp_path)
    assert_user_error(cli("train", "--resume", "run", "steps=1"), "steps=1", "already at 2 env steps",
                      "steps >= 2")
    assert tree(tmp_path) == before


# --- 6: a second Ctrl-C while the first one's checkpoint is written -----------------------------------------------

@pytest.fixture
def sigint_delivered():
    """Ctrl-C raises KeyboardInterrupt here and in children started meanwhile, also when this test process was
    started with SIGINT ignored (a background job of a non-interactive shell: Python then keeps it ignored, and so
    would every child it starts)."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler, not SIG_IGN: exec resets it
    yield
    signal.signal(signal.SIGINT, old)


def test_deferred_interrupts_hold_ctrl_c_until_the_block_ends(sigint_delivered):
    import signal
    import time

    from mbrl.runs import signals

    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here: nothing is raised inside the block
            done.append(True)
    assert done and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(ValueError):  # an exception leaving the block wins over a held Ctrl-C
        with signals.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise ValueError("first")


def test_a_second_ctrl_c_after_the_save_reports_the_first_interrupt(tmp_path):
    """The race the two-Ctrl-C test can hit: the second Ctrl-C lands after the checkpoint was written, while the
    loop's TrainingInterrupted is on its way out (in a ``finally``): the CLI still names the saved checkpoint."""
    from dreamshift import common
    from mbrl.runs.train import TrainingInterrupted, first_interrupt

    first = TrainingInterrupted(tmp_path / "run", tmp_path / "run" / "checkpoint" / "checkpoint.json", 120)
    with pytest.raises(KeyboardInterrupt) as info:
        try:
            raise first
        finally:
            raise KeyboardInterrupt  # the second Ctrl-C, raised by Python's handler inside the cleanup
    assert type(info.value) is KeyboardInterrupt and first_interrupt(info.value) is first
    plain = KeyboardInterrupt()
    assert first_interrupt(plain) is plain
    args = type("Args", (), {"command": "train"})()
    line = common.interrupted_message(args, ["train"], info.value)  # the CLI's own call: it finds the first
    assert "checkpoint saved at 120 env steps" in line and "--resume" in line, line


@pytest.mark.slow
def test_two_ctrl_c_while_saving_keep_one_true_line_and_a_whole_checkpoint(tmp_path, sigint_delivered):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    from mbrl.runs import checkpoint

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    base = [a for a in TINY_RUN if not a.startswith(("steps=", "save_every="))]
    proc = subprocess.Popen([sys.executable, "-m", "dreamshift", "train", *base, "steps=100000", "save_every=50",
                             "run_dir=run"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.time() + 150
        ckpt = tmp_path / "run" / "checkpoint" / "checkpoint.json"
        # a checkpoint of trained steps (not the one a new run writes before its first env step)
        while not (ckpt.exists() and (_ckpt_counters(ckpt) or {}).get("env_steps", 0) > 0):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # the first Ctrl-C's checkpoint is being written
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "checkpoint saved at" in lines[0] and "--resume run" in lines[0], err[-3000:]
    doc = checkpoint.read_doc(tmp_path / "run")
    assert f"at {doc['counters']['env_steps']} env steps" in lines[0]
    named = {doc["weights_file"], doc["state_file"], doc["replay_file"], "checkpoint.json"}
    assert {p.name for p in (tmp_path / "run" / "checkpoint").iterdir()} == named  # nothing half-written left
    checkpoint.load_state(tmp_path / "run")


def test_resume_removes_checkpoint_files_a_killed_save_left_unnamed(cli, tmp_path):
    import shutil

    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    ckpt_dir = run_dir / "checkpoint"
    replay = next(ckpt_dir.glob("replay-*.npz"))
    stale = [ckpt_dir / "replay-999.npz", ckpt_dir / "agent-5-deadbeef.safetensors"]
    for path in stale:
        shutil.copy(replay, path)
    (ckpt_dir / "replay-notes.txt").write_text("not ours")
    res = cli("train", "--resume", "run", "steps=60", "log_every=60")
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in stale) and (ckpt_dir / "replay-notes.txt").exists()
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: removed 2 ")]
    assert len(notes) == 1, res.stderr


def test_the_interrupted_line_is_true_about_the_checkpoint_kept(tmp_path, monkeypatch):
    import argparse

    from dreamshift import common
    from mbrl.runs.train import interrupted_before_loop

    monkeypatch.chdir(tmp_path)
    write_untrained_run(tmp_path / "run", TINY_RUN)
    args = argparse.Namespace(command="train", resume="run")
    line = common.interrupted_message(args, ["train", "--resume", "run"],
                                      interrupted_before_loop(Path("run"), False, None))
    assert "the checkpoint at 2 env steps in 'run/checkpoint/checkpoint.json' is kept as it was" in line
    assert line.endswith("--resume run")
    line = common.interrupted_message(args, ["train", "--resume", "run"], KeyboardInterrupt())
    assert "no checkpoint was written" not in line and "is kept as it was" in line


def test_a_new_run_stopped_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    from mbrl.runs.train import discard_new_run

    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "config.json").write_text("{}")
    discard_new_run(tmp_path / "made", created=True)
    assert not (tmp_path / "made").exists()
    given = tmp_path / "given"  # an empty directory the user gave: it stays, what the run wrote goes
    (given / "checkpoint").mkdir(parents=True)
    (given / "config.json").write_text("{}")
    (given / "metrics.jsonl").write_text("")
    discard_new_run(given, created=False)
    assert given.is_dir() and not any(given.iterdir())


# --- 7: a replay .npz holding the wrong arrays ------------------------------------------------------------------

def _replace_replay(run_dir: Path, arrays: dict) -> Path:
    import numpy as np

    path = next((run_dir / "checkpoint").glob("replay-*.npz"))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize("kind", ["other-arrays", "other-capacity"])
@pytest.mark.parametrize("command", ["resume", "adapt"])
def test_a_replay_file_of_the_wrong_arrays_is_one_line_naming_it(cli, tmp_path, kind, command):
    import numpy as np

    from mbrl.replay import Replay

    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    if kind == "other-arrays":
        path = _replace_replay(run_dir, {"x": np.zeros(3)})
        needles = ["is not a replay buffer", "no head", "it holds x"]
    else:
        other = Replay(1000, 1, (32, 32, 3), 1)
        other.add(0, {"image": np.zeros((32, 32, 3), np.uint8), "action": np.zeros(1, np.float32), "reward": 0.0,
                      "is_first": True, "is_terminal": False})
        path = _replace_replay(run_dir, other.state_dict())
        needles = ["does not fit", "capacity"]
    before = tree(tmp_path)
    args = ["train", "--resume", "run", "steps=60"] if command == "resume" else \
        ["adapt", "run", "--target", "color:5", "--steps", "20", "--out", "ad"]
    assert_user_error(cli(*args), f"replay file '{path.relative_to(tmp_path)}'", *needles)
    assert tree(tmp_path) == before


# --- 8: leaderboard.md shows labels verbatim: no raw HTML, no extra column or row --------------------------------

def test_leaderboard_markdown_escapes_html_pipes_and_newlines(cli, tmp_path):
    labels = ["<script>alert(1)</script>", "a|b\n| fake | row |"]
    records = [_record(label=label, trial=f"t{i}", seed=i, shift=shift, severity=sev, episode_seed=10000 + e)
               for i, label in enumerate(labels) for shift, sev in (("none", 0), ("fog", 3)) for e in range(2)]
    _write_records(tmp_path / "results" / "r.jsonl", records)
    res = cli("leaderboard", "results", "--out", "board", "--reps", "100")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "<script>" not in md and "&lt;script>alert(1)&lt;/script>" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(labels)  # header, rule, one row per label: no fake row
    cells = {line.replace("\\|", "").count("|") for line in rows}
    assert len(cells) == 1  # every row has the header's columns
    assert "a\\|b \\| fake \\| row \\|" in md


# --- 9: config and leaderboard refuse what train refuses ----------------------------------------------------------

@pytest.mark.parametrize("encoder", ["hf:/nonexistent", "hf:."], ids=["missing-dir", "dir-without-model"])
def test_config_refuses_an_hf_directory_as_train_does(cli, tmp_path, encoder):
    before = tree(tmp_path)
    config = assert_user_error(cli("config", f"encoder={encoder}"), "pretrained weights", "not available")
    train = assert_user_error(cli("train", *TINY_RUN, f"encoder={encoder}", "run_dir=run"))
    assert config == train
    assert tree(tmp_path) == before


def test_leaderboard_refuses_an_unknown_env_as_train_does(cli, tmp_path):
    _write_records(tmp_path / "results" / "a.jsonl", [_record()])
    _write_records(tmp_path / "results" / "b.jsonl", [_record(env="dmc:nope", task="nope", trial="t1")])
    before = tree(tmp_path)
    line = assert_user_error(cli("leaderboard", "results", "--out", "board"), "b.jsonl:1", "unknown env 'dmc:nope'")
    train = assert_user_error(cli("train", "env=dmc:nope"))
    assert line.endswith(train[len("error: "):])
    assert tree(tmp_path) == before


# --- 10: a changed grid reruns its changed trials; the old results are kept aside ---------------------------------

SWEEP_GRID = """name: tiny
envs: [dmc:cartpole_balance]
encoders: [cnn]
seeds: [0]
steps: {steps}
overrides: {{size: XS, image_size: 32, model.deter: 64, model.hidden: 32, model.units: 32, model.cnn_depth: 4,
            prefill: 50, batch_size: 2, batch_length: 8, train_ratio: 4, threads: 1, time_limit: 100}}
evaluation: {{suite: "contrast:5", episodes: 1}}
retries: 0
"""


@pytest.mark.slow
def test_a_changed_grid_reruns_the_changed_trial_and_keeps_the_old_results(tmp_path):
    from experiments import results, spec
    from experiments import sweep as sweeps
    from experiments import trial as trials
    from mbrl.runs import checkpoint

    grid, out = tmp_path / "grid.yaml", tmp_path / "out"
    grid.write_text(SWEEP_GRID.format(steps=100))
    first = spec.load(grid).trials[0].to_dict()
    assert trials.run_trial(first, out, retries=0)["state"] == "done"  # the 100-step sweep, in-process
    run = trials.paths(out, first["id"])["run"]
    old = results.read(trials.paths(out, first["id"])["results"])
    assert {r["env_steps_trained"] for r in old} == {100}

    grid.write_text(SWEEP_GRID.format(steps=150))
    sweep = spec.load(grid)
    said: list[str] = []
    statuses = sweeps.run(sweep, out, workers=1, wandb_mode="disabled", progress=said.append)
    assert [s["state"] for s in statuses] == ["done"]
    changed = [line for line in said if line.startswith("the grid changed")]
    assert len(changed) == 1 and "steps 100 -> 150" in changed[0], said
    assert any("0 already complete, 1 to run" in line for line in said), said
    new = results.read(trials.paths(out, first["id"])["results"])
    assert {r["env_steps_trained"] for r in new} == {150}
    kept = list((out / "stale").glob(f"*/results/{first['id']}.jsonl"))
    assert len(kept) == 1 and results.read(kept[0]) == old  # nothing lost
    assert checkpoint.load_run(run, agent=False).env_steps == 150  # went on from its 100-step checkpoint
    assert not list((out / "stale").glob("*/runs"))

    said.clear()  # unchanged: nothing reruns
    sweeps.run(sweep, out, workers=1, wandb_mode="disabled", progress=said.append)
    assert any("1 already complete, 0 to run" in line for line in said), said


def test_results_of_an_older_sweep_without_a_fingerprint_are_checked_by_their_records(tmp_path):
    from experiments import results
    from experiments import trial as trials

    trial = {"id": "t0", "overrides": {"env": "dmc:cartpole_balance", "steps": "600"}, "suite": "contrast:5",
             "episodes": 1, "eval_seed": 0, "alphas": [], "label": "cnn"}
    from mbrl.config import build_config, model_hash

    hashed = model_hash(build_config(trial["overrides"]))
    path = trials.paths(tmp_path, "t0")["results"]
    results.write(path, [_record(trial="t0", env_steps_trained=400, config_hash=hashed)])
    assert trials.stale_reason(tmp_path, trial) == "results at 400 env steps, steps 600"
    assert not trials.is_complete(tmp_path, trial)
    results.write(path, [_record(trial="t0", env_steps_trained=600, config_hash=hashed)])
    assert trials.is_complete(tmp_path, trial)


def test_a_trial_whose_config_hash_changed_moves_its_run_aside(tmp_path):
    from experiments import trial as trials

    trial = {"id": "t0", "overrides": dict(a.split("=", 1) for a in TINY_RUN), "suite": "contrast:5",
             "episodes": 1, "eval_seed": 0, "alphas": [], "label": "cnn"}
    p = trials.paths(tmp_path, "t0")
    write_untrained_run(p["run"], override(TINY_RUN, "model.units=16"))  # trained with another model: cannot go on
    trials.set_aside(tmp_path, trial, tmp_path / "stale" / "x")
    assert not p["run"].exists() and (tmp_path / "stale" / "x" / "runs" / "t0" / "checkpoint").is_dir()
    write_untrained_run(p["run"], TINY_RUN)  # the same model at 2 env steps: goes on, stays
    trials.set_aside(tmp_path, trial, tmp_path / "stale" / "y")
    assert p["run"].is_dir() and not (tmp_path / "stale" / "y").exists()


# --- 11: a condition some seed lacks is left out of the row's scores, with one warning -------------------------

def _board_records(skip: set[tuple[int, str, int]] = frozenset()) -> list[dict]:
    out = []
    for seed in (0, 1):
        for shift, sev, ret in (("none", 0, 800.0), ("fog", 3, 500.0), ("fog", 5, 100.0)):
            if (seed, shift, sev) in skip:
                continue
            out += [_record(trial=f"t{seed}", seed=seed, shift=shift, severity=sev, episode_seed=10000 + e,
                            **{"return": ret + 10 * seed + e}) for e in range(2)]
    return out


def test_a_condition_missing_for_one_seed_is_left_out_with_one_warning(cli, tmp_path):
    import pandas as pd

    _write_records(tmp_path / "gap" / "r.jsonl", _board_records({(1, "fog", 5)}))
    _write_records(tmp_path / "common" / "r.jsonl",
                   _board_records({(0, "fog", 5), (1, "fog", 5)}))  # what every seed has
    res = cli("leaderboard", "gap", "--out", "gap-board", "--reps", "100")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fog@5 (seed 1)" in warnings[0] and "dmc:cartpole_balance cnn (full)" in warnings[0]
    assert cli("leaderboard", "common", "--out", "common-board", "--reps", "100").returncode == 0
    gap = pd.read_csv(tmp_path / "gap-board" / "leaderboard.csv").iloc[0]
    common = pd.read_csv(tmp_path / "common-board" / "leaderboard.csv").iloc[0]
    assert gap["seeds"] == 2 and gap["missing"] == "fog@5 (seed 1)"
    for key in ("id_score", "ood_score", "iqm"):  # the missing file does not move the scores
        assert gap[key] == pytest.approx(common[key]), key
    md = (tmp_path / "gap-board" / "leaderboard.md").read_text()
    assert "missing (left out)" in md and "fog@5 (seed 1)" in md
    full = cli("leaderboard", "common", "--out", "again", "--reps", "100")
    assert "warning:" not in full.stderr and "missing" not in (tmp_path / "again" / "leaderboard.md").read_text()
