"""Run a table of bad ``dreamshift`` invocations as a user would (subprocesses of the installed console script)
and check the README's promise for each: exit status 2, exactly one ``error:`` line on stderr, no traceback,
and nothing written. Prints one row per case and ``N of M still fail``.

    python benchmarks/bad_input_sweep.py                 # every case, 2 at a time
    python benchmarks/bad_input_sweep.py --jobs 1 -k sweep --verbose

Each case runs in its own copy of a scratch directory (a file ``f``, a directory ``d``, a tiny run ``run`` with
a real checkpoint, grid files, results files), so a case that writes is caught (``tree`` before and after) and
cannot disturb the others. Cases that would train use a tiny model and must fail before training; a case that
runs past ``--timeout`` fails. Three cases send Ctrl-C (SIGINT) and ``kill -TERM`` (SIGTERM) to a training run once
its first checkpoint exists (a third sends Ctrl-C twice, 0.1 s apart) and expect status 130 (143), one line naming
``--resume`` and a loadable checkpoint instead.

Exit status: 0 when every case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# a tiny model and budget (tests/conftest.py TINY_RUN): cases that would train fail before, or end in seconds
TINY = ["env=dmc:cartpole_balance", "size=XS", "model.deter=64", "model.hidden=32", "model.stoch=4",
        "model.classes=4", "model.blocks=4", "model.units=32", "model.cnn_depth=4", "model.bins=31", "image_size=32",
        "batch_size=2", "batch_length=8", "train_ratio=4", "prefill=50", "steps=200", "time_limit=100",
        "log_every=50", "save_every=100", "replay_capacity=5000", "wandb_mode=disabled", "progress=false",
        "threads=1", "device=cpu"]
GRID = """name: {name}
envs: [dmc:cartpole_balance]
encoders: [cnn]
seeds: {seeds}
steps: 150
overrides: {{size: XS, image_size: 32, model.deter: 64, model.hidden: 32, model.units: 32, model.cnn_depth: 4,
            prefill: 50, batch_size: 2, batch_length: 8, train_ratio: 4, threads: 1}}
evaluation: {{suite: "contrast:5", episodes: 1}}
retries: 0
"""


@dataclass
class Case:
    """One bad invocation: ``args`` after ``dreamshift`` (``{RUN}`` = the tiny run); the error line must contain
    every ``must`` and none of ``must_not``; ``usage``: stderr must show this sub-command's usage."""

    name: str
    item: str
    args: list[str]
    must: list[str] = field(default_factory=list)
    must_not: list[str] = field(default_factory=list)
    usage: str | None = None


CASES = [
    # --- item 3: output paths (a file where a directory is wanted, a parent that is a file, the reverse) ---
    Case("train run_dir=FILE", "3", ["train", *TINY, "run_dir=f"], ["run_dir", "is a file"]),
    Case("train run_dir=FILE/x", "3", ["train", *TINY, "run_dir=f/run"], ["run_dir", "'f' is a file"]),
    Case("train --resume FILE", "3", ["train", "--resume", "f", *TINY], ["is a file, not a run directory"]),
    Case("demo run_dir=FILE", "3", ["demo", "run_dir=f"], ["run_dir", "is a file"]),
    Case("merge --out FILE", "3", ["merge", "{RUN}", "--alpha", "0.5", "--out", "f"], ["--out", "is a file"]),
    Case("merge --out FILE/x", "3", ["merge", "{RUN}", "--alpha", "0.5", "--out", "f/m"], ["--out", "'f' is a file"]),
    Case("merge A B --out FILE", "3", ["merge", "{RUN}", "{RUN}", "--alpha", "0.5", "--out", "f"], ["--out"]),
    Case("merge FILE", "3", ["merge", "f", "--alpha", "0.5"], ["is a file, not a run directory"], ["does not exist"]),
    Case("adapt --out FILE", "3", ["adapt", "{RUN}", "--target", "color:5", "--steps", "10", "--out", "f"],
         ["--out", "is a file"]),
    Case("adapt --out FILE/x", "3", ["adapt", "{RUN}", "--target", "color:5", "--steps", "10", "--out", "f/a"],
         ["--out", "'f' is a file"]),
    Case("adapt FILE", "3", ["adapt", "f", "--target", "color:5", "--steps", "10", "--out", "new"],
         ["is a file, not a run directory"], ["does not exist"]),
    Case("adapt --resume FILE", "3", ["adapt", "--resume", "f"], ["is a file, not a run directory"]),
    Case("continual --out FILE", "3", ["continual", "{RUN}", "--stages", "color:5", "--steps", "10", "--out", "f"],
         ["--out", "is a file"]),
    Case("continual --out FILE/x", "3",
         ["continual", "{RUN}", "--stages", "color:5", "--steps", "10", "--out", "f/c"], ["--out", "'f' is a file"]),
    Case("pretrain --out FILE", "3", ["pretrain", "--envs", "dmc:cartpole_balance", "--frames", "4", "--out", "f"],
         ["--out", "is a file"]),
    Case("pretrain --out FILE/x", "3",
         ["pretrain", "--envs", "dmc:cartpole_balance", "--frames", "4", "--out", "f/p"], ["--out", "'f' is a file"]),
    Case("analyze --out FILE", "3", ["analyze", "calibration", "--out", "f"], ["--out", "is a file"]),
    Case("analyze --out FILE/x", "3", ["analyze", "calibration", "--out", "f/a"], ["--out", "'f' is a file"]),
    Case("analyze wm FILE", "3", ["analyze", "wm", "f"], ["is a file, not a run directory"]),
    Case("gallery --out FILE/x.png", "3", ["shifts", "gallery", "--out", "f/g.png"], ["--out", "'f' is a file"]),
    Case("gallery --out DIR", "3", ["shifts", "gallery", "--out", "d"], ["--out", "is a directory"]),
    Case("leaderboard --out FILE", "3", ["leaderboard", "results", "--out", "f"], ["--out", "is a file"]),
    Case("sweep --out FILE", "3", ["sweep", "good.yaml", "--out", "f"], ["--out", "is a file"]),
    Case("sweep --out FILE/x --dry-run", "3", ["sweep", "good.yaml", "--out", "f/s", "--dry-run"], ["--out"]),
    Case("plot --out FILE/x.png", "3", ["plot", "{RUN}", "--out", "f/p.png"], ["--out"]),
    Case("evaluate FILE", "3", ["evaluate", "f"], ["is a file, not a run directory"], ["does not exist"]),
    Case("evaluate FILE --suite", "3", ["evaluate", "f", "--suite", "quick"], ["is a file, not a run directory"]),
    Case("evaluate RUN (eval/ is a file)", "3", ["evaluate", "evalfile_run", "--episodes", "1"], ["eval", "is a file"]),
    # --- item 6: sweep grids ---
    Case("sweep seeds: -3", "6", ["sweep", "seeds_neg.yaml"], ["seeds", "-3"]),
    Case("sweep seeds: 0 --dry-run", "6", ["sweep", "seeds_zero.yaml", "--dry-run"], ["seeds"]),
    Case("sweep seeds: [0, -1]", "6", ["sweep", "seeds_list.yaml", "--dry-run"], ["seeds", "-1"]),
    Case("sweep non-UTF-8 file", "6", ["sweep", "latin1.yaml"], ["UTF-8"]),
    Case("sweep name: ../../../escape", "6", ["sweep", "escape.yaml"], ["name", "../../../escape"]),
    Case("sweep name: ../../../escape --dry-run", "6", ["sweep", "escape.yaml", "--dry-run"], ["name"]),
    Case("sweep name: a/b", "6", ["sweep", "slash.yaml", "--dry-run"], ["name", "a/b"]),
    # --- item 8: smaller ones ---
    Case("train --bogus", "8", ["train", "--bogus"], ["--bogus"], usage="dreamshift train"),
    Case("evaluate RUN --bogus", "8", ["evaluate", "{RUN}", "--bogus"], ["--bogus"], usage="dreamshift evaluate"),
    Case("shifts gallery --bogus", "8", ["shifts", "gallery", "--bogus"], ["--bogus"],
         usage="dreamshift shifts gallery"),
    Case("evaluate --device foo", "8", ["evaluate", "{RUN}", "--device", "foo"], ["--device", "foo", "cpu"]),
    Case("evaluate --policy greedy", "8", ["evaluate", "{RUN}", "--policy", "greedy"], ["--policy", "sample", "mode"]),
    Case("analyze wm --device foo", "8", ["analyze", "wm", "{RUN}", "--device", "foo"], ["--device", "foo"]),
    Case("adapt-eval /nope RUN", "8", ["adapt-eval", "/nope", "{RUN}"], ["/nope"]),
    Case("analyze (no arguments)", "8", ["analyze"], ["calibration", "wm"], ["required"]),
    Case("train --resume (truncated replay)", "8", ["train", "--resume", "trunc_run", *TINY],
         ["replay file", "trunc_run"]),
    Case("gallery --size 100000", "8", ["shifts", "gallery", "--size", "100000"], ["--size", "1024"]),
    Case("gallery --scale 100000", "8", ["shifts", "gallery", "--scale", "100000"], ["--scale", "16"]),
    Case("evaluate --threads 0", "8", ["evaluate", "{RUN}", "--threads", "0"], ["--threads"],
         usage="dreamshift evaluate"),
    # --- other helpers' items (config ranges, leaderboard inputs) ---
    Case("train optim.lr=nan", "cfg", ["train", *TINY, "optim.lr=nan"], ["optim.lr"]),
    Case("train model.units=-1", "cfg", ["train", *[a for a in TINY if not a.startswith("model.units=")],
                                         "model.units=-1"], ["model.units"]),
    Case("train seed=-1", "cfg", ["train", *TINY, "seed=-1"], ["seed"]),
    Case("leaderboard empty .jsonl", "lb", ["leaderboard", "empty_results", "--out", "lb"], []),
    # --- reliability (R4: a run directory is ours or refused) ---
    Case("train into a foreign dir", "R4", ["train", *TINY, "run_dir=foreign"],
         ["'foreign'", "no dreamshift checkpoint"]),
    Case("train seeds into a foreign dir", "R4", ["train", *TINY, "run_dir=foreign", "seeds=[0,1]"],
         ["'foreign'", "no dreamshift checkpoint"]),
    # --- reliability (R6: ranges checked before any work) ---
    Case("evaluate --seed -1", "R6", ["evaluate", "{RUN}", "--seed", "-1"], ["--seed"]),
    Case("evaluate --episodes huge", "R6", ["evaluate", "{RUN}", "--episodes", "100000000000"], ["--episodes"]),
    Case("plot --window nan", "R6", ["plot", "{RUN}", "--out", "p.png", "--window", "nan"], ["--window"]),
    Case("plot --window inf", "R6", ["plot", "{RUN}", "--out", "p.png", "--window", "inf"], ["--window"]),
    Case("gallery --seed -1", "R6", ["shifts", "gallery", "--seed", "-1"], ["--seed"]),
    Case("gallery --out .jpg", "R6", ["shifts", "gallery", "--out", "g.jpg"], ["--out", ".png"]),
    Case("leaderboard --reps 1e12", "R6", ["leaderboard", "{RUN}", "--reps", "1e12"], ["--reps"],
         usage="dreamshift leaderboard"),
    Case("leaderboard --reps huge", "R6", ["leaderboard", "{RUN}", "--reps", "1000000000000"], ["--reps"]),
    Case("train threads=100000", "R6", ["train", *[a for a in TINY if not a.startswith("threads=")], "threads=100000"],
         ["threads", "1024"]),
    # --- reliability (R7: grid files and command lines: each key once, bounded documents) ---
    Case("sweep grid with a duplicate key", "R7", ["sweep", "dupkey.yaml", "--dry-run"], ["duplicate key 'steps'"]),
    Case("sweep grid with an anchor/alias", "R7", ["sweep", "alias.yaml", "--dry-run"], ["anchor"]),
    Case("sweep grid over 1 MiB", "R7", ["sweep", "huge.yaml", "--dry-run"], ["1 MiB"]),
    Case("sweep description > 2000 chars", "R7", ["sweep", "longdesc.yaml", "--dry-run"], ["description"]),
    Case("train seed=1 seed=2", "R7", ["train", *TINY, "seed=1", "seed=2"], ["seed is given twice"]),
    # --- issue 28 item 1: run_dir a symbolic link loop or a link to nothing ---
    Case("train run_dir=LOOP", "28.1", ["train", *TINY, "run_dir=loop1"], ["'loop1'", "loop of symbolic links"]),
    Case("train run_dir=LOOP seeds", "28.1", ["train", *TINY, "run_dir=loop1", "seeds=[0,1]"],
         ["loop of symbolic links"]),
    Case("train run_dir=DANGLING", "28.1", ["train", *TINY, "run_dir=dangling"], ["'dangling'", "symbolic link"]),
    Case("train --resume LOOP", "28.1", ["train", "--resume", "loop1"], ["loop of symbolic links"]),
    Case("adapt --out LOOP", "28.1", ["adapt", "{RUN}", "--target", "color:5", "--steps", "10", "--out", "loop1"],
         ["--out", "loop of symbolic links"]),
    # --- issue 28 item 2: one trial's records must agree ---
    Case("leaderboard trial with env steps 400 and 600", "28.2", ["leaderboard", "mixed_results", "--out", "lb"],
         ["b.jsonl:1", "trial 't0'", "env_steps_trained", "a.jsonl:1"]),
    Case("leaderboard trial id shared by two encoders", "28.2", ["leaderboard", "shared_results", "--out", "lb"],
         ["b.jsonl:1", "shared by two encoders"]),
    # --- issue 28 item 3: merging an adapted run with a BASE it was not adapted from ---
    Case("adapt-eval RUN ADAPTED-from-elsewhere", "28.3",
         ["adapt-eval", "{RUN}", "adapted_run", "--alpha", "0,1", "--episodes", "1"],
         ["adapted_run was not adapted from run", "'elsewhere'"]),
    Case("merge RUN ADAPTED-from-elsewhere", "28.3", ["merge", "{RUN}", "adapted_run", "--alpha", "0.5", "--out", "m"],
         ["not adapted from"]),
    # --- issue 28 items 4 and 9: continual's stages, --resume, --mix from a run without replay ---
    Case("continual --stages 'color:5;;fog:1'", "28.4",
         ["continual", "{RUN}", "--stages", "color:5;;fog:1", "--steps", "10", "--out", "c"],
         ["stage 2 of 3 is empty"]),
    Case("continual --resume (no such --out)", "28.4",
         ["continual", "{RUN}", "--stages", "color:5", "--steps", "10", "--out", "c", "--resume"],
         ["--out 'c' does not exist"]),
    Case("continual MERGED --mix 0.5", "28.9",
         ["continual", "merged_run", "--stages", "color:5", "--steps", "10", "--mix", "0.5", "--out", "c"],
         ["stores no replay", "--mix 0"]),
    # --- issue 28 item 5: a resumed run stays in its directory and only trains on ---
    Case("train --resume RUN run_dir=OTHER", "28.5", ["train", "--resume", "{RUN}", "run_dir=other", "steps=300"],
         ["run_dir=other", "own directory"]),
    Case("train --resume RUN steps=1 (at 2)", "28.5", ["train", "--resume", "{RUN}", "steps=1"],
         ["steps=1", "already at 2 env steps"]),
    # --- issue 28 item 7: a replay .npz holding the wrong arrays ---
    Case("train --resume (replay .npz of other arrays)", "28.7", ["train", "--resume", "wrongnpz_run", "steps=300"],
         ["replay file", "wrongnpz_run", "not a replay buffer"]),
    Case("adapt (replay .npz of other arrays)", "28.7",
         ["adapt", "wrongnpz_run", "--target", "color:5", "--steps", "10", "--out", "a"],
         ["replay file", "wrongnpz_run", "not a replay buffer"]),
    # --- issue 28 item 9: config and leaderboard refuse what train refuses ---
    Case("config encoder=hf:/nonexistent", "28.9", ["config", "encoder=hf:/nonexistent"],
         ["'/nonexistent'", "not available"]),
    Case("leaderboard env dmc:nope", "28.9", ["leaderboard", "nope_results", "--out", "lb"],
         ["a.jsonl:1", "unknown env 'dmc:nope'"]),
    # --- reliability (R5: divergence) ---
    Case("evaluate a run with NaN weights", "R5", ["evaluate", "nan_run", "--episodes", "1"],
         ["'nan_run'", "not finite", "actor"]),
]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256) plus every directory (-> "dir") and symbolic link
    (-> "link:<target>", not followed: it may dangle or loop)."""
    return {str(p.relative_to(root)): f"link:{os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def make_scratch(root: Path) -> Path:
    """The scratch directory copied for every case: ``f``, ``d``, ``run`` (tiny checkpoint), grids, results."""
    import numpy as np
    import torch

    from envs import files
    from mbrl.agent import Agent
    from mbrl.config import build_config, model_hash, to_dict
    from mbrl.replay import Replay
    from mbrl.runs import checkpoint

    base = root / "scratch"
    base.mkdir()
    (base / "f").write_text("a file\n")
    (base / "d").mkdir()
    os.symlink("loop2", base / "loop1")  # a loop of symbolic links, and a link to nothing
    os.symlink("loop1", base / "loop2")
    os.symlink("nowhere", base / "dangling")
    (base / "foreign").mkdir()  # another program's run directory: files but no dreamshift checkpoint
    (base / "foreign" / "config.json").write_text('{"lr": 0.1}\n')
    (base / "foreign" / "metrics.jsonl").write_text('{"step": 1}\n')
    run_dir = base / "run"
    cfg = build_config(TINY + [f"run_dir={run_dir}"])
    torch.manual_seed(0)
    agent = Agent(cfg, action_dim=1)
    replay = Replay(cfg.replay_capacity, cfg.num_envs, (cfg.image_size, cfg.image_size, 3), 1)
    replay.add(0, {"image": np.zeros((32, 32, 3), np.uint8), "action": np.zeros(1, np.float32), "reward": 0.0,
                   "is_first": True, "is_terminal": False})
    files.write_json(run_dir / "config.json", {"config": to_dict(cfg), "config_hash": model_hash(cfg)})
    checkpoint.save(run_dir, agent, replay, {"env_steps": 2, "agent_steps": 1, "updates": 0, "episodes": 0})
    checkpoint.save(base / "merged_run", agent, None, {"env_steps": 2, "agent_steps": 1, "updates": 0,
                                                       "episodes": 0})  # weights without replay, as merged
    shutil.copy(run_dir / "config.json", base / "merged_run" / "config.json")
    shutil.copytree(run_dir, base / "evalfile_run")
    (base / "evalfile_run" / "eval").write_text("not a directory\n")
    shutil.copytree(run_dir, base / "nan_run")  # a diverged run: NaN actor weights
    from mbrl import safe_state

    agent_file = next((base / "nan_run" / "checkpoint").glob("agent-*.safetensors"))
    weights = safe_state.read_tensors(agent_file)
    weights = {k: v * float("nan") if k.startswith("ac.actor") and v.is_floating_point() else v
               for k, v in weights.items()}
    safe_state.write_tensors(agent_file, weights)
    shutil.copytree(run_dir, base / "adapted_run")  # "adapted" from another run than `run`: merging them is refused
    meta = json.loads((base / "adapted_run" / "config.json").read_text())
    meta.update(adapted_from="elsewhere", target="color:5", conditions=[["color", 5]], mix=0.0, lr_scale=0.1,
                lineage=[{"run": "elsewhere", "target": "clean", "env_steps": 2,
                          "checkpoint": "agent-2-00000000.safetensors"}], replay_sources=["elsewhere"],
                base_env_steps=2, lineage_target_env_steps=0, shift_seed=0)
    files.write_json(base / "adapted_run" / "config.json", meta)
    shutil.copytree(run_dir, base / "wrongnpz_run")  # its replay .npz holds other arrays than a replay's
    with open(next((base / "wrongnpz_run" / "checkpoint").glob("replay-*.npz")), "wb") as f:
        np.savez(f, x=np.zeros(3))
    shutil.copytree(run_dir, base / "trunc_run")
    npz = next((base / "trunc_run" / "checkpoint").glob("replay-*.npz"))
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    for name, stem, seeds in (("good", "good", "[0]"), ("seeds_neg", "t", "-3"), ("seeds_zero", "t", "0"),
                              ("seeds_list", "t", "[0, -1]"), ("escape", '"../../../escape"', "[0]"),
                              ("slash", '"a/b"', "[0]")):
        (base / f"{name}.yaml").write_text(GRID.format(name=stem, seeds=seeds))
    good = GRID.format(name="t", seeds="[0]")
    (base / "dupkey.yaml").write_text(good + "steps: 300\n")
    (base / "alias.yaml").write_text(good.replace("seeds: [0]", "seeds: &s [0]") + "description: *s\n")
    (base / "huge.yaml").write_text(good + "# " + "x" * (1 << 20) + "\n")
    (base / "longdesc.yaml").write_text(good + f"description: {'x' * 2001}\n")
    (base / "latin1.yaml").write_bytes(GRID.format(name="t", seeds="[0]").encode() + "# caf\xe9\n".encode("latin-1"))
    (base / "results").mkdir()
    (base / "empty_results").mkdir()
    (base / "empty_results" / "t.jsonl").write_text("")
    record = {"schema": 1, "env": "dmc:cartpole_balance", "suite": "dmc", "task": "cartpole_balance",
              "encoder": "cnn", "label": "cnn", "encoder_mode": "full", "size": "XS", "shift": "none", "severity": 0,
              "seed": 0, "eval_seed": 0, "episode_seed": 10000, "return": 12.5, "success": None, "length": 100,
              "env_steps_trained": 400, "code_version": "0", "config_hash": "abc", "trial": "t0"}
    (base / "mixed_results").mkdir()  # one trial whose records disagree (env steps), one shared by two encoders
    (base / "mixed_results" / "a.jsonl").write_text(json.dumps(record) + "\n")
    (base / "mixed_results" / "b.jsonl").write_text(json.dumps({**record, "env_steps_trained": 600,
                                                                 "episode_seed": 10001}) + "\n")
    (base / "nope_results").mkdir()  # an env train refuses
    (base / "nope_results" / "a.jsonl").write_text(json.dumps({**record, "env": "dmc:nope", "task": "nope"}) + "\n")
    (base / "shared_results").mkdir()
    (base / "shared_results" / "a.jsonl").write_text(json.dumps(record) + "\n")
    (base / "shared_results" / "b.jsonl").write_text(json.dumps({**record, "encoder": "dinov2:small",
                                                                  "label": "dinov2:small"}) + "\n")
    return base


def exe_path(given: str | None) -> str:
    if given:
        return given
    local = Path(sys.executable).parent / "dreamshift"
    return str(local) if local.exists() else "dreamshift"


def run_case(case: Case, scratch: Path, work: Path, exe: str, timeout: float) -> tuple[str, str, str]:
    """``(verdict, rc, reason)`` of one case, run in a fresh copy of ``scratch``."""
    cwd = work / case.name.replace("/", "_").replace(" ", "_")
    shutil.copytree(scratch, cwd, symlinks=True)
    before = tree(cwd)
    args = [a.replace("{RUN}", "run") for a in case.args]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    t0 = time.time()
    try:
        res = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "FAIL", "-", f"ran past {timeout:.0f} s (did work instead of refusing)"
    took = time.time() - t0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    reasons = []
    if res.returncode != 2:
        reasons.append(f"exit {res.returncode}")
    if "Traceback" in res.stderr:
        last = [line for line in res.stderr.splitlines() if line.strip()][-1:]
        reasons.append(f"traceback ({last[0][:80] if last else ''})")
    if len(errors) != 1:
        reasons.append(f"{len(errors)} error: lines")
    line = errors[0] if errors else ""
    reasons += [f"error line lacks {m!r}" for m in case.must if errors and m not in line]
    reasons += [f"error line says {m!r}" for m in case.must_not if m in line]
    if case.usage and f"usage: {case.usage} " not in res.stderr:
        reasons.append(f"usage is not {case.usage!r}'s")
    after = tree(cwd)
    if after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        reasons.append("wrote " + ", ".join(sorted({p for p, _ in changed}))[:80])
    shutil.rmtree(cwd, ignore_errors=True)
    detail = line[len("error: "):] if line else (res.stderr.strip().splitlines() or [""])[-1]
    return ("FAIL", str(res.returncode), "; ".join(reasons)) if reasons else ("OK", "2", f"{detail} ({took:.0f} s)")


def run_ctrl_c(scratch: Path, work: Path, exe: str, timeout: float,
               signum: int = signal.SIGINT, again: float | None = None) -> tuple[str, str, str]:
    """Ctrl-C (SIGINT; or ``signum``, e.g. SIGTERM) to ``dreamshift train`` once its first checkpoint exists
    (with ``again``, a second one that many seconds later, while the first one's checkpoint is written):
    status 130 (128 + ``signum``), one line naming ``--resume``, no traceback, a checkpoint that loads and no
    checkpoint file it does not name."""
    status = 130 if signum == signal.SIGINT else 128 + signum
    cwd = work / f"ctrl_c_{signal.Signals(signum).name}{'_twice' if again is not None else ''}"
    cwd.mkdir()
    args = [exe, "train", *[a for a in TINY if not a.startswith(("steps=", "save_every="))], "steps=100000",
            "save_every=100", "run_dir=r"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt = cwd / "r" / "checkpoint" / "checkpoint.json"
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.5)
    if proc.poll() is not None or not ckpt.exists():
        proc.kill()
        out, err = proc.communicate()
        return "FAIL", str(proc.returncode), f"no checkpoint appeared ({(err.strip().splitlines() or [''])[-1]})"
    time.sleep(1.0)
    proc.send_signal(signum)
    if again is not None:
        time.sleep(again)
        if proc.poll() is None:
            proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "FAIL", "-", f"did not stop after {signal.Signals(signum).name}"
    lines = [line for line in err.splitlines() if "interrupted" in line]
    reasons = []
    if proc.returncode != status:
        reasons.append(f"exit {proc.returncode}")
    if "Traceback" in err:
        reasons.append("traceback")
    if len(lines) != 1 or "--resume" not in lines[0]:
        reasons.append(f"{len(lines)} 'interrupted' lines" + ("" if lines and "--resume" in lines[0] else
                                                              ", no --resume"))
    from mbrl.runs import checkpoint

    try:
        state = checkpoint.load_state(cwd / "r")
        steps = state["counters"]["env_steps"]
        doc = checkpoint.read_doc(cwd / "r")
        named = {doc["weights_file"], doc["state_file"], doc["replay_file"], checkpoint.CHECKPOINT_FILE}
        extra = sorted(p.name for p in (cwd / "r" / "checkpoint").iterdir() if p.name not in named)
        if extra:
            reasons.append(f"files the checkpoint does not name were left: {', '.join(extra)}")
    except Exception as exc:  # noqa: BLE001 - any failure to load is this case's failure
        reasons.append(f"checkpoint does not load: {exc}")
        steps = None
    shutil.rmtree(cwd, ignore_errors=True)
    if reasons:
        return "FAIL", str(proc.returncode), "; ".join(reasons)
    return "OK", str(status), f"{lines[0]} (checkpoint at {steps} env steps)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exe", help="the dreamshift executable (default: next to this Python, else on PATH)")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds a case may run")
    p.add_argument("-k", default="", help="only cases whose name contains this")
    p.add_argument("--no-ctrl-c", action="store_true", help="skip the Ctrl-C and SIGTERM cases (each trains for ~20 s)")
    p.add_argument("--verbose", action="store_true", help="print the error line of passing cases too")
    args = p.parse_args()
    exe = exe_path(args.exe)
    cases = [c for c in CASES if args.k in c.name]
    os.environ.setdefault("MUJOCO_GL", "egl")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="dreamshift-bad-input-") as tmp:
        root = Path(tmp)
        scratch = make_scratch(root)
        work = root / "cases"
        work.mkdir()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_case, c, scratch, work, exe, args.timeout) for c in cases]
            stops = []
            if not args.no_ctrl_c and args.k in "ctrl-c train":
                stops = [(item, name, pool.submit(run_ctrl_c, scratch, work, exe, args.timeout, signum, again))
                         for item, name, signum, again in (
                             ("7", "Ctrl-C during train (SIGINT)", signal.SIGINT, None),
                             ("R1", "kill -TERM during train (SIGTERM)", signal.SIGTERM, None),
                             ("28.6", "two Ctrl-C 0.1 s apart during train", signal.SIGINT, 0.1))]
            rows = [(c.item, c.name, *f.result()) for c, f in zip(cases, futures, strict=True)]
            rows += [(item, name, *f.result()) for item, name, f in stops]
    width = max(len(r[1]) for r in rows)
    print(f"{'item':<4} {'case':<{width}}  {'rc':>3}  result")
    for item, name, verdict, rc, reason in rows:
        text = reason if verdict == "FAIL" or args.verbose else ""
        print(f"{item:<4} {name:<{width}}  {rc:>3}  {verdict}{'  ' + text if text else ''}")
    failed = sum(r[2] == "FAIL" for r in rows)
    print(f"{failed} of {len(rows)} still fail ({time.time() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
