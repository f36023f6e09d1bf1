"""Reliability of ``dreamshift train`` and friends against the outside world: ``SIGTERM``/``SIGUSR2`` stop a run
like Ctrl-C (checkpoint, one line naming ``--resume``), one writer per run directory, foreign directories refused,
divergence and bad ranges as one ``error:`` line, orphaned temp files cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RUN, assert_user_error, override, tree, write_untrained_run

from mbrl.runs import checkpoint


def _env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's code (not an installed copy), one thread."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _start_train(tmp_path: Path, args: list[str], log: str = "train.log") -> subprocess.Popen:
    out = open(tmp_path / log, "w")  # noqa: SIM115 - closed with the process (the child holds its own copy)
    try:
        return subprocess.Popen([sys.executable, "-m", "dreamshift", "train", *args], cwd=tmp_path, stdout=out,
                                stderr=subprocess.PIPE, text=True, env=_env())
    finally:
        out.close()


def _wait_for(proc: subprocess.Popen, path: Path, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, f"no {path} in time"
        time.sleep(0.05)


def _env_steps(run_dir: Path) -> int:
    return int(checkpoint.load_state(run_dir)["counters"]["env_steps"])


BASE = [a for a in TINY_RUN if not a.startswith(("steps=", "save_every="))]


@pytest.mark.parametrize("signum, seeds", [(signal.SIGTERM, None), (signal.SIGUSR2, [0, 1])],
                         ids=["sigterm-single", "sigusr2-seeds"])
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_names_resume_and_resume_finishes(cli, tmp_path, signum, seeds):
    run_dir, steps = tmp_path / "run", 400
    members = [run_dir / f"seed-{s}" for s in seeds] if seeds else [run_dir]
    extra = [f"seeds=[{','.join(map(str, seeds))}]"] if seeds else []
    proc = _start_train(tmp_path, [*BASE, f"steps={steps}", "save_every=100", f"run_dir={run_dir}", *extra])
    try:
        _wait_for(proc, members[-1] / "checkpoint" / "checkpoint.json")
        before = [_env_steps(m) for m in members]
        # one writer per run: the running process holds RUN/.lock; a second `train --resume` is refused
        assert (run_dir / ".lock").read_text().strip() == str(proc.pid)
        assert_user_error(cli("train", "--resume", str(run_dir)), f"pid {proc.pid}", str(run_dir))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, err[-3000:]
    assert signal.Signals(signum).name in lines[0]
    assert f"dreamshift train --resume {run_dir}" in lines[0]
    after = [_env_steps(m) for m in members]
    assert all(a >= b for a, b in zip(after, before, strict=True)) and max(after) < steps
    assert not (run_dir / ".lock").exists()  # released (and removed) on the way out

    res = subprocess.run([sys.executable, "-m", "dreamshift", "train", "--resume", str(run_dir)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert [_env_steps(m) for m in members] == [steps] * len(members)


def test_stop_requests_restores_the_previous_handlers():
    from mbrl.runs import signals

    before = signal.getsignal(signal.SIGTERM)
    with signals.stop_requests():
        assert signal.getsignal(signal.SIGTERM) is not before
        signals.check()  # nothing requested: no raise
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.time() + 5
        while signals.requested() is None and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(signals.Terminated) as info:
            signals.check()
        assert info.value.signum == signal.SIGUSR2 and isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


# --- one writer per run directory ---------------------------------------------------------------------------------

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """``holder(run_dir)``: another live process that holds ``run_dir/.lock`` (flock, its pid written)."""
    procs = []

    def hold(run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir / ".lock")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args", [
    ["train", *TINY_RUN, "run_dir=run"],
    ["train", *TINY_RUN, "run_dir=run", "seeds=[0,1]"],
    ["train", "--resume", "run"],
], ids=["new", "seeds", "resume"])
def test_a_second_writer_is_refused_naming_the_holder_pid(cli, tmp_path, holder, args):
    if "--resume" in args:
        write_untrained_run(tmp_path / "run", TINY_RUN)
    proc = holder(tmp_path / "run")
    before = tree(tmp_path)
    assert_user_error(cli(*args), f"pid {proc.pid}", "'run'", "in use")
    assert tree(tmp_path) == before


def test_adapt_into_a_locked_directory_is_refused(cli, tmp_path, holder):
    write_untrained_run(tmp_path / "base", TINY_RUN)
    proc = holder(tmp_path / "out")
    before = tree(tmp_path)
    res = cli("adapt", "base", "--target", "color:5", "--steps", "10", "--out", "out")
    assert_user_error(res, f"pid {proc.pid}", "in use")
    assert tree(tmp_path) == before


def test_a_stale_lock_of_a_dead_process_is_taken(cli, tmp_path, holder):
    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    proc = holder(run_dir)
    proc.kill()  # dies holding the lock: the kernel releases it, the file stays with the dead pid
    proc.wait()
    assert (run_dir / ".lock").read_text() == str(proc.pid)
    res = cli("train", "--resume", "run", "steps=60", "log_every=60")
    assert res.returncode == 0, res.stderr
    assert _env_steps(run_dir) == 60 and not (run_dir / ".lock").exists()


# --- a run directory is ours or refused ---------------------------------------------------------------------------

def _foreign(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text('{"lr": 0.1}\n')
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    return run_dir


@pytest.mark.parametrize("extra", [[], ["seeds=[0,1]"]], ids=["single", "seeds"])
def test_train_into_a_foreign_directory_is_refused_and_nothing_written(cli, tmp_path, extra):
    _foreign(tmp_path / "theirs")
    before = tree(tmp_path)
    res = cli("train", *TINY_RUN, "run_dir=theirs", *extra)
    assert_user_error(res, "'theirs'", "config.json, metrics.jsonl", "no dreamshift checkpoint")
    assert tree(tmp_path) == before


def test_train_into_an_empty_existing_directory_works(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".lock").write_text("999999\n")  # left by a killed run: not a file of a run
    res = cli("train", *[a for a in TINY_RUN if not a.startswith("steps=")], "steps=60", "run_dir=empty")
    assert res.returncode == 0, res.stderr
    assert _env_steps(tmp_path / "empty") == 60


def test_sweep_trial_killed_before_its_first_checkpoint_restarts(tmp_path):
    from experiments import trial as trials

    overrides = dict(a.split("=", 1) for a in TINY_RUN if not a.startswith("steps="))
    spec = {"id": "t0", "overrides": {**overrides, "steps": "60"}, "group": "g", "suite": "contrast:5",
            "episodes": 1, "eval_seed": 0}
    run = trials.paths(tmp_path, "t0")["run"]
    _foreign(run)  # what a trial killed before its first checkpoint leaves (config.json, metrics.jsonl)
    records = trials.train_and_evaluate(spec, tmp_path)
    assert records and _env_steps(run) == 60


@pytest.mark.slow
def test_learning_launch_moves_a_run_without_checkpoint_aside(tmp_path, capsys):
    from conftest import load_benchmark

    learning = load_benchmark("learning")
    run_dir = _foreign(tmp_path / "check" / "dmc_cartpole_balance-s0")
    job = learning.Job("dmc_cartpole_balance-s0", run_dir, [sys.executable, "-c", "pass"], "new")
    assert learning.launch([job], 1) == 0
    assert not run_dir.exists()
    kept = [p.name for p in run_dir.parent.iterdir() if p.is_dir()]
    assert len(kept) == 1 and kept[0].startswith("dmc_cartpole_balance-s0.stale-")
    assert "old directory kept" in capsys.readouterr().out


# --- divergence: one error line, the last checkpoint kept ----------------------------------------------------------

def test_a_diverging_run_stops_with_one_line_before_the_env_sees_a_nan(cli, tmp_path):
    res = cli("train", *TINY_RUN, "optim.lr=1e30", "run_dir=run")
    line = assert_user_error(res, "training diverged at env step", "(update ", "new run_dir")
    assert "action must be finite" not in res.stderr
    assert not checkpoint.checkpoint_path(tmp_path / "run").exists(), line


def test_a_run_diverging_after_a_checkpoint_keeps_it(cli, tmp_path):
    base = [a for a in TINY_RUN if not a.startswith(("prefill=", "save_every="))]
    res = cli("train", *base, "prefill=100", "save_every=50", "optim.lr=1e30", "run_dir=run")
    assert_user_error(res, "training diverged at env step", "the last checkpoint is kept", "checkpoint.json")
    run = checkpoint.load_run(tmp_path / "run")  # loads: its weights are finite (but diverged)
    assert 50 <= run.env_steps < 200
    before = tree(tmp_path)
    res = cli("evaluate", "run", "--episodes", "1")  # its policy acts NaN: one line, no episode, nothing written
    assert_user_error(res, "action is NaN/inf", "earlier checkpoint")
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_seeds_member_with_a_nan_action_stops_while_the_other_finishes(cli, tmp_path, monkeypatch):
    # member seed=1 acts NaN once it leaves the prefill (as a diverged actor would); seed=0 is unchanged
    from mbrl import policy

    real = policy.AgentPolicy.__call__

    def call(self, obs, is_first):
        action, outs = real(self, obs, is_first)
        return (action * float("nan") if self.agent.cfg.seed == 1 else action), outs

    monkeypatch.setattr(policy.AgentPolicy, "__call__", call)
    steps = [a for a in TINY_RUN if not a.startswith("steps=")]
    res = cli("train", *steps, "steps=100", "run_dir=run", "seeds=[0,1]")
    assert res.returncode == 0, res.stderr
    assert "member seed=1 stopped: training diverged at env step 50" in res.stderr
    assert _env_steps(tmp_path / "run" / "seed-0") == 100
    doc = json.loads((tmp_path / "run" / "members.json").read_text())
    assert list(doc["stopped"]) == ["1"]


def test_evaluate_a_run_with_nan_weights_is_one_line_and_writes_nothing(cli, tmp_path):
    from mbrl import safe_state

    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    path = next((run_dir / "checkpoint").glob("agent-*.safetensors"))
    weights = safe_state.read_tensors(path)
    name = next(k for k in weights if k.startswith("ac.actor") and weights[k].is_floating_point())
    weights[name] = weights[name] * float("nan")
    safe_state.write_tensors(path, weights)
    before = tree(tmp_path)
    res = cli("evaluate", "run", "--episodes", "1")
    assert_user_error(res, "'run'", "not finite", name, "actor")
    assert tree(tmp_path) == before


# --- ranges checked before any work -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["evaluate", "run", "--seed", "-1"], ["--seed", "[0, "]),
    (["evaluate", "run", "--seed", "-1", "--suite", "contrast:5"], ["--seed", "[0, "]),
    (["evaluate", "run", "--seed", str(2**32)], ["--seed", "2**32"]),
    (["evaluate", "run", "--episodes", "100000000000"], ["--episodes", ">= 1 and <= 10000"]),
    (["evaluate", "run", "--episodes", "0", "--suite", "contrast:5"], ["--episodes", ">= 1 and <= 10000"]),
    (["plot", "run", "--out", "p.png", "--window", "nan"], ["--window", "finite"]),
    (["plot", "run", "--out", "p.png", "--window", "inf"], ["--window", "finite"]),
    (["shifts", "gallery", "--seed", "-1"], ["--seed", "[0, 4294967295]"]),
    (["shifts", "gallery", "--out", "g.jpg"], ["'g.jpg'", ".png"]),
    (["leaderboard", "run", "--reps", "1e12"], ["--reps"]),
    (["leaderboard", "run", "--reps", "1000000000000"], ["--reps", "[100, 100000]"]),
    (["train", *override(TINY_RUN, "threads=100000")], ["threads=100000", "[0, 1024]"]),
    (["config", "threads=100000"], ["threads=100000", "[0, 1024]"]),
], ids=["evaluate-seed", "suite-seed", "evaluate-seed-2**32", "evaluate-episodes-huge", "suite-episodes-0",
        "plot-window-nan", "plot-window-inf", "gallery-seed", "gallery-jpg", "leaderboard-reps-float",
        "leaderboard-reps-huge", "train-threads", "config-threads"])
def test_a_value_out_of_range_is_one_line_before_any_work(cli, tmp_path, args, needles):
    write_untrained_run(tmp_path / "run", TINY_RUN)
    before = tree(tmp_path)
    t0 = time.time()
    assert_user_error(cli(*args), *needles)
    assert tree(tmp_path) == before
    assert time.time() - t0 < 20  # refused up front, not after running episodes


# --- grid files and command lines: each key once, bounded documents ---------------------------------------------

GRID = """name: tiny
envs: [dmc:cartpole_balance]
encoders: [cnn]
seeds: [0]
steps: 150
overrides: {size: XS, image_size: 32, model.deter: 64, model.hidden: 32, model.units: 32, model.cnn_depth: 4,
            prefill: 50, batch_size: 2, batch_length: 8, train_ratio: 4, threads: 1}
evaluation: {suite: "contrast:5", episodes: 1}
retries: 0
"""


def _grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_the_base_grid_loads(tmp_path):
    from experiments import spec

    sweep = spec.load(_grid_file(tmp_path, GRID + "description: a tiny grid\n"))
    assert len(sweep.trials) == 1 and sweep.description == "a tiny grid"


@pytest.mark.parametrize("text, match", [
    (GRID + "seeds: [0, 1]\n", r"duplicate key 'seeds' at line 10 \(first given at line 4\)"),
    (GRID.replace("steps: 150", "steps: 150\nsteps: 300"),
     r"duplicate key 'steps' at line 6 \(first given at line 5\)"),
    (GRID.replace("prefill: 50,", "prefill: 50, prefill: 60,"), r"duplicate key 'prefill' at line 7"),
    (GRID + "evaluation: {suite: quick}\n", "duplicate key 'evaluation'"),
    (GRID.replace("seeds: [0]", "seeds: &s [0]"), r"anchor \(&s\) at line 4"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n",
     r"anchor \(&a\) at line 1"),
    (GRID + "description: [not, a, string]\n", "description must be a string of at most 2000 characters, got a list"),
    (GRID + f"description: {'x' * 2001}\n", "at most 2000 characters, got 2001 characters"),
    (GRID + "# " + "x" * (1 << 20) + "\n", r"at most 1048576 bytes \(1 MiB\)"),
], ids=["dup-top", "dup-adjacent", "dup-nested", "dup-mapping", "anchor", "billion-laughs", "description-list",
        "description-long", "over-1MiB"])
def test_a_grid_file_is_held_to_what_a_grid_needs(tmp_path, text, match):
    from envs.errors import ConfigError
    from experiments import spec

    with pytest.raises(ConfigError, match=match):
        spec.load(_grid_file(tmp_path, text))


def test_a_grid_with_a_duplicate_key_is_one_line_from_the_cli(cli, tmp_path):
    _grid_file(tmp_path, GRID + "steps: 300\n")
    before = tree(tmp_path)
    assert_user_error(cli("sweep", "grid.yaml", "--dry-run", "--out", "out"), "duplicate key 'steps'", "line 10")
    assert tree(tmp_path) == before


def test_a_description_of_2000_characters_is_fine(tmp_path):
    from experiments import spec

    assert len(spec.load(_grid_file(tmp_path, GRID + f"description: {'x' * 2000}\n")).description) == 2000


@pytest.mark.parametrize("args, needles", [
    (["train", *TINY_RUN, "seed=1", "seed=2"], ["seed is given twice", "seed=1", "seed=2"]),
    (["train", *TINY_RUN], ["threads is given twice"]),  # + one more threads= below
    (["config", "steps=1", " steps=2"], ["steps is given twice"]),
    (["demo", "steps=100", "steps=200"], ["steps is given twice"]),
], ids=["train-seed", "train-tiny-key", "config-steps", "demo-steps"])
def test_a_key_given_twice_on_the_command_line_is_one_line(cli, tmp_path, args, needles):
    if args == ["train", *TINY_RUN]:
        args = [*args, "threads=2"]
    before = tree(tmp_path)
    assert_user_error(cli(*args), *needles)
    assert tree(tmp_path) == before


# --- orphaned temp files of interrupted atomic writes ----------------------------------------------------------

KILLED_WRITE = """
import sys, time
from envs.files import atomic_write

def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

atomic_write(sys.argv[1], write)
"""


def _killed_write(target: Path) -> Path:
    """Kill -9 a real process in the middle of ``atomic_write(target)``; returns the temp file it left."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(target)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    (orphan,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return orphan


def test_remove_temp_files_takes_only_atomic_write_orphans(tmp_path):
    from envs import files

    orphan = _killed_write(tmp_path / "agent-9.safetensors")
    assert files.is_temp_file(orphan.name)
    keep = [tmp_path / n for n in ("notes.tmp", ".hidden", "agent.tmp", ".x.tmp", "checkpoint.json")]
    for p in keep:
        p.write_text("mine")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a directory with the pattern's name: not a temp file of ours
    assert files.remove_temp_files(tmp_path) == [orphan]
    assert all(p.exists() for p in keep) and (tmp_path / ".dir.abcdefgh.tmp").is_dir()


def test_train_resume_removes_orphans_left_in_the_checkpoint_directory(cli, tmp_path):
    run_dir = write_untrained_run(tmp_path / "run", TINY_RUN)
    ckpt_dir = run_dir / "checkpoint"
    orphans = [_killed_write(ckpt_dir / "agent-99.safetensors"), _killed_write(ckpt_dir / "checkpoint.json")]
    (ckpt_dir / "notes.tmp").write_text("not ours")
    res = cli("train", "--resume", "run", "steps=60", "log_every=60")
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in orphans) and (ckpt_dir / "notes.tmp").exists()
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: removed 2 temporary")]
    assert len(notes) == 1 and orphans[0].name in notes[0]
    assert _env_steps(run_dir) == 60
