"""Learning checks: train dreamshift on dm_control tasks and compare its training-episode returns with DreamerV3's
published learning curves at the same env steps.

    python benchmarks/learning.py run CHECK [--seeds 0,1] [--batch] [--steps 50000] [--parallel K]
                                            [--runs runs/learning] [--set key=value ...] [--dry-run]
    python benchmarks/learning.py report CHECK [--runs runs/learning] [--reference DIR|FILE] [--out PNG]

Checks (:data:`CHECKS`; their presets and train ratios are the ``*_OVERRIDES`` constants below):

- ``cpu-state``: ``dmc:cartpole_swingup``, ``dmc:walker_stand``, ``dmc:reacher_easy``, ``dmc:finger_spin`` from
  proprioceptive state (``obs=state``, ``size=size1m train_ratio=512``) against ``dmc_proprio``. PASS when, at
  50k env steps, our return is inside or above the reference's seed range (>= its seed minimum) on >= 3 of the 4
  tasks, and the mean over tasks of ours / reference mean is >= 0.8.
- ``gpu-pixels``: ``dmc:walker_stand`` from pixels, ``size=S``, against ``dmc_vision``; PASS when ours >= 0.8 x
  the reference mean at 50k.
- ``cpu-features``: ``dmc:cartpole_swingup`` and ``dmc:walker_stand`` from 64 px pixels through a frozen
  ``efficientnet-lite0`` (64 px input) or ``dreamshift-vit`` encoder whose cached features the world model
  reconstructs (``decoder=features``, ``size=size1m train_ratio=512``, bf16, compiled), against ``dmc_vision``;
  PASS per (encoder, task) when ours >= 0.6 x the reference mean at 50k.

``run`` launches (or resumes) the check's training runs, ``dreamshift train`` in subprocesses, ``--parallel K`` at
a time with ``threads=1`` each, into ``RUNS/<check>/<task>[-<variant>]-s<seed>`` (``<task>`` as in
``dmc_walker_stand``), each run's output in ``<run dir>.log``. A run directory that holds a checkpoint is resumed
(``dreamshift train --resume DIR`` with the same overrides and ``steps=N``); one that already reached the
budget is skipped. ``--batch`` trains the seeds of each (variant, task) as one batch in one process
(``dreamshift train seeds=[...]``, :mod:`mbrl.runs.train_members`) into ``RUNS/<check>/<task>[-<variant>]-seeds/`` with
one ``seed-<s>/`` run directory per seed; ``report`` reads those as seeds too. ``--tasks`` limits a run to some of
the check's tasks. ``--set key=value ...`` adds train overrides to every run (e.g. ``--set size=size12m
train_ratio=1024``); they must be given again when resuming.

``report`` reads the run directories (finished or still running) and prints, per run group, a table ``env
steps | ours | eval | ref mean | ref min-max | ours/ref``, then the PASS/FAIL lines, and writes a PNG of our
runs over the reference mean and seed range (default ``RUNS/<check>/report.png``).

Statistic: "our return at env step s" is the mean of the training-episode returns logged at env steps in
``(s - 10k, s]`` (the last 10k env steps up to s: 10 episodes of dm_control's 1000 env steps), averaged over
seeds; "eval" is the mean of the eval records' ``return_mean`` in the same window (when the runs evaluated, e.g.
``--set eval_every=10000``); it is shown but not used by the targets, since the reference curves are
training-episode returns. The reference is smoothed the same way per seed before its mean and min-max over
seeds are taken (:func:`experiments.plot.reference_band`); with this window its 50k means are those quoted in
the reference README (proprio: cartpole_swingup 322, walker_stand 400, reacher_easy 631, finger_spin 498;
vision: walker_stand 674, cartpole_swingup 306). A run group that has not reached 50k is judged at the furthest
env step all its seeds reached, and its verdict line says so (``partial``).

Reference data: DreamerV3's published DMC curves (``dmc_proprio-dreamerv3.json.gz``,
``dmc_vision-dreamerv3.json.gz``: the ``scores/`` folder of the public danijar/dreamerv3 repository), read from
``--reference`` (a directory holding them, default ``../shared/reference/`` next to the repository, or one
file); they are never copied into this repository. Both count x in env steps at action repeat 2, as our
``env_steps`` do.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import ConfigError
from experiments.plot import (
    WINDOW,
    Curves,
    Run,
    colours,
    draw_returns,
    load_reference,
    load_run,
    reference_band,
    reference_task,
    save_figure,
    window_mean,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference"
DEFAULT_RUNS = Path("runs/learning")

# --- defaults of the checks: edit here ------------------------------------------------------------------------
# every run: no progress bar (logs go to files) and no wandb files; threads=1 is added by `run`
COMMON_OVERRIDES = {"progress": "false", "wandb_mode": "disabled"}
CPU_STATE_OVERRIDES = {"size": "size1m", "train_ratio": "512", "obs": "state"}
GPU_PIXELS_OVERRIDES = {"size": "S", "train_ratio": "512"}
# frozen encoder, cached features reconstructed by an MLP (decoder=features); efficientnet-lite0 at 64 px input
# (mean-pooled features keep the cart's position and pole angle as well as at 224 px -- linear-probe R^2 0.82 vs
# 0.79 on random cartpole states, benchmarks/input_size_probe.py -- at ~1/20 of the cost a frame); dreamshift-vit
# has its own 64 px
# prefill 5000: the value its runs started with (the default before 2026-11-30), kept so its encoders compare on
# equal terms
CPU_FEATURES_OVERRIDES = {"size": "size1m", "train_ratio": "512", "decoder": "features",
                          "encoder_input_size": "64", "precision": "bf16", "compile": "on", "prefill": "5000"}
FEATURE_ENCODERS = {"efficientnet-lite0": {"encoder": "efficientnet-lite0", "encoder_mode": "frozen"},
                    "dreamshift-vit": {"encoder": "dreamshift-vit", "encoder_mode": "frozen"}}
STEPS = 50_000  # training budget and the env step the targets are judged at
TABLE_EVERY = 10_000  # env steps between table rows


@dataclass(frozen=True)
class Check:
    """A learning check: runs of ``tasks`` x ``variants`` x seeds and its target.

    ``variants`` maps a name (part of the run directory; ``""`` = none) to extra overrides. Target: ours /
    reference mean >= ``min_ratio`` at ``target_step`` — averaged over the tasks of a variant when
    ``min_in_range`` is set (which also asks for ``min_in_range`` tasks at or above the reference's seed
    minimum), else for every (variant, task)."""

    name: str
    reference: str  # file name in the reference directory
    tasks: tuple[str, ...]
    overrides: dict[str, str]
    min_ratio: float
    min_in_range: int | None = None
    variants: dict[str, dict[str, str]] = field(default_factory=lambda: {"": {}})
    target_step: int = STEPS
    description: str = ""


CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("cpu-state", "dmc_proprio-dreamerv3.json.gz",
          ("dmc:cartpole_swingup", "dmc:walker_stand", "dmc:reacher_easy", "dmc:finger_spin"),
          CPU_STATE_OVERRIDES, min_ratio=0.8, min_in_range=3,
          description="proprioceptive state vs DreamerV3 dmc_proprio: >= 3/4 tasks within or above the seed "
                      "range and mean ratio >= 0.8 at 50k"),
    Check("gpu-state", "dmc_proprio-dreamerv3.json.gz",
          ("dmc:cartpole_swingup", "dmc:walker_stand", "dmc:reacher_easy", "dmc:finger_spin"),
          CPU_STATE_OVERRIDES, min_ratio=0.8, min_in_range=3,
          description="cpu-state's runs and target, trained on a GPU (benchmarks/gpu_check.sh)"),
    Check("gpu-pixels", "dmc_vision-dreamerv3.json.gz", ("dmc:walker_stand",), GPU_PIXELS_OVERRIDES,
          min_ratio=0.8, description="pixels vs DreamerV3 dmc_vision: >= 80 % of the reference mean at 50k"),
    Check("cpu-features", "dmc_vision-dreamerv3.json.gz", ("dmc:cartpole_swingup", "dmc:walker_stand"),
          CPU_FEATURES_OVERRIDES, min_ratio=0.6, variants=FEATURE_ENCODERS,
          description="frozen pretrained features vs DreamerV3 dmc_vision: >= 60 % of the reference mean at 50k"),
)}


def get_check(name: str) -> Check:
    if name not in CHECKS:
        raise ConfigError(f"unknown check {name!r}; allowed: {', '.join(CHECKS)}")
    return CHECKS[name]


def run_name(task: str, variant: str, seed: int) -> str:
    """``dmc:walker_stand``, ``dreamshift-vit``, 0 -> ``dmc_walker_stand-dreamshift-vit-s0``."""
    return "-".join(p for p in (task.replace(":", "_"), variant) if p) + f"-s{seed}"


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["size=S", "train_ratio=64"]`` -> dict (values are validated by ``dreamshift train``)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set size=size1m train_ratio=512")
        out[key] = value
    return out


def run_overrides(check: Check, task: str, variant: str, seed: int, steps: int, run_dir: Path,
                  extra: dict[str, str] | None = None) -> dict[str, str]:
    """The ``dreamshift train`` overrides of one run (later entries win)."""
    return {**COMMON_OVERRIDES, **check.overrides, **check.variants[variant], "env": task, "seed": str(seed),
            **(extra or {}), "steps": str(steps), "run_dir": str(run_dir), "threads": "1"}


def train_command(overrides: dict[str, str], resume: bool) -> list[str]:
    """``python -m dreamshift train [--resume RUN_DIR] key=value ...``."""
    cmd = [sys.executable, "-m", "dreamshift", "train"]
    if resume:
        cmd += ["--resume", overrides["run_dir"]]
    return cmd + [f"{k}={v}" for k, v in overrides.items()]


def furthest_step(run_dir: Path) -> int:
    """The largest env step logged in ``run_dir/metrics.jsonl`` (0 when there is none)."""
    try:
        return load_run(run_dir).furthest
    except ConfigError:
        return 0


@dataclass
class Job:
    name: str
    run_dir: Path
    cmd: list[str]
    status: str  # "new" | "resume" | "done"


def batch_name(task: str, variant: str) -> str:
    """``dmc:walker_stand``, ``""`` -> ``dmc_walker_stand-seeds`` (the directory of a batch of seeds)."""
    return run_name(task, variant, 0)[:-len("-s0")] + "-seeds"


def plan_batch(check: Check, seeds: list[int], steps: int, runs_root: Path, extra: dict[str, str]) -> list[Job]:
    """``--batch``: one job per (variant, task) training ``seeds`` together; resumed when its members have
    checkpoints, skipped when every member's log reached ``steps``."""
    jobs = []
    for variant in check.variants:
        for task in check.tasks:
            name = batch_name(task, variant)
            run_dir = runs_root / check.name / name
            members = [run_dir / f"seed-{s}" for s in seeds]
            resume = (run_dir / "members.json").is_file() and all(
                (m / "checkpoint" / "checkpoint.json").exists() for m in members)
            status = "resume" if resume else "new"
            if resume and all(furthest_step(m) >= steps for m in members):
                status = "done"
            overrides = run_overrides(check, task, variant, seeds[0], steps, run_dir, extra)
            del overrides["seed"]
            if not resume:
                overrides["seeds"] = "[" + ",".join(map(str, seeds)) + "]"
            jobs.append(Job(name, run_dir, train_command(overrides, resume), status))
    return jobs


def plan(check: Check, seeds: list[int], steps: int, runs_root: Path, extra: dict[str, str]) -> list[Job]:
    """The check's runs: resume those with a checkpoint, skip those whose log reached ``steps``."""
    jobs = []
    for variant in check.variants:
        for task in check.tasks:
            for seed in seeds:
                name = run_name(task, variant, seed)
                run_dir = runs_root / check.name / name
                # checkpoint.json, or an older run's agent.pt (its resume then names `dreamshift convert-run`)
                has_ckpt = any((run_dir / "checkpoint" / f).exists() for f in ("checkpoint.json", "agent.pt"))
                status = "resume" if has_ckpt else "new"
                if has_ckpt and furthest_step(run_dir) >= steps:
                    status = "done"
                overrides = run_overrides(check, task, variant, seed, steps, run_dir, extra)
                jobs.append(Job(name, run_dir, train_command(overrides, has_ckpt), status))
    return jobs


def launch(jobs: list[Job], parallel: int) -> int:
    """Run the jobs, ``parallel`` at a time, output to ``<run dir>.log``; returns how many failed."""
    pending = [j for j in jobs if j.status != "done"]
    running: list[tuple[Job, subprocess.Popen, Any]] = []
    failed = 0
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            if job.status == "new" and job.run_dir.is_dir() and any(job.run_dir.iterdir()):
                # killed before its first checkpoint: `train` writes a new run only into a new or empty
                # directory, so keep the old one aside (a sibling that find_runs does not match)
                stale = job.run_dir.with_name(f"{job.run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
                job.run_dir.rename(stale)
                print(f"note: {job.run_dir} had no checkpoint; restarting it (old directory kept as {stale.name})")
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.run_dir.parent / f"{job.name}.log", "a")
            print(f"[{time.strftime('%H:%M:%S')}] start {job.name} ({job.status}): log {log.name}", flush=True)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            running.append((job, subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(2)
        for item in list(running):
            job, proc, log = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                failed += proc.returncode != 0
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log.name})"
                print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {state}", flush=True)
    return failed


# --- report -----------------------------------------------------------------------------------------------

def reference_path(reference: Path, check: Check) -> Path:
    """``reference`` itself when it is a file, else the check's file in that directory."""
    return reference if reference.is_file() else reference / check.reference


def find_runs(check: Check, runs_root: Path) -> dict[tuple[str, str], list[Run]]:
    """``{(variant, task): [Run per seed]}`` of the run directories found (seeds in name order)."""
    out: dict[tuple[str, str], list[Run]] = {}
    base = runs_root / check.name
    for variant in check.variants:
        for task in check.tasks:
            prefix = run_name(task, variant, 0)[:-len("-s0")]
            pattern = re.compile(re.escape(prefix) + r"-s(\d+)")
            dirs = sorted((p for p in base.glob(f"{prefix}-s*") if pattern.fullmatch(p.name)),
                          key=lambda p: int(pattern.fullmatch(p.name).group(1))) if base.is_dir() else []
            member = re.compile(r"seed-(\d+)")
            batch = base / batch_name(task, variant)
            dirs += sorted((p for p in batch.glob("seed-*") if member.fullmatch(p.name)),
                           key=lambda p: int(member.fullmatch(p.name).group(1))) if batch.is_dir() else []
            runs = []
            for d in dirs:
                try:
                    runs.append(load_run(d))
                except ConfigError:
                    continue  # started but nothing logged yet
            out[(variant, task)] = runs
    return out


def ours_at(runs: list[Run], steps: np.ndarray, window: float = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """``(training return, eval return)`` at ``steps``: per seed the window mean, then the mean over the seeds
    with data in the window (NaN where none)."""
    steps = np.atleast_1d(np.asarray(steps, float))

    def mean_over(per_seed: list[np.ndarray]) -> np.ndarray:
        if not per_seed:
            return np.full(len(steps), np.nan)
        stack = np.stack(per_seed)
        out = np.full(len(steps), np.nan)
        ok = ~np.isnan(stack).all(0)
        out[ok] = np.nanmean(stack[:, ok], 0)
        return out

    train = [window_mean(*r.series("episode", "return"), steps, window) for r in runs]
    evals = [window_mean(*r.eval_series(), steps, window) for r in runs if len(r.eval_series()[0])]
    return mean_over(train), mean_over(evals)


def judged_step(runs: list[Run], target: int) -> int:
    """The env step a run group is judged at: ``target``, or the furthest step all its seeds reached."""
    if not runs:
        return 0
    return min(target, min(r.furthest for r in runs))


@dataclass
class Row:
    """One run group at its judged step."""

    variant: str
    task: str
    step: int
    ours: float
    ref_mean: float
    ref_lo: float
    ref_hi: float
    seeds: int

    @property
    def ratio(self) -> float:
        return self.ours / self.ref_mean if self.ref_mean and not math.isnan(self.ref_mean) else float("nan")

    @property
    def in_range(self) -> bool:
        """Inside or above the reference's seed range."""
        return not math.isnan(self.ours) and not math.isnan(self.ref_lo) and self.ours >= self.ref_lo


def judge_row(variant: str, task: str, runs: list[Run], curves: Curves, target: int,
              window: float = WINDOW) -> Row:
    """Our value and the reference's mean and range at the group's judged step."""
    step = judged_step(runs, target)
    ours = float(ours_at(runs, [step], window)[0][0]) if step else float("nan")
    mean, lo, hi = (float(v[0]) for v in reference_band(curves, [step], window)) if step else (float("nan"),) * 3
    return Row(variant, task, step, ours, mean, lo, hi, len(runs))


def verdicts(check: Check, rows: list[Row]) -> list[tuple[bool, str]]:
    """``(passed, line)`` per target of ``check`` (see :class:`Check`); missing data fails."""
    out = []
    for variant in check.variants:
        vrows = [r for r in rows if r.variant == variant]
        vname = f" [{variant}]" if variant else ""
        partial = [r for r in vrows if 0 < r.step < check.target_step]
        missing = [r.task for r in vrows if not r.step or math.isnan(r.ours)]
        note = ""
        if partial:
            note += " (partial: " + ", ".join(f"{r.task} at {r.step}" for r in partial) + \
                    f" < {check.target_step} env steps)"
        if missing:
            note += f" (no data: {', '.join(missing)})"
        if check.min_in_range is not None:
            n_in = sum(r.in_range for r in vrows)
            out.append((n_in >= check.min_in_range and not missing,
                        f"{check.name}{vname}: {n_in}/{len(vrows)} tasks within or above the reference seed "
                        f"range (need {check.min_in_range}){note}"))
            ratios = [r.ratio for r in vrows if not math.isnan(r.ratio)]
            mean_ratio = float(np.mean(ratios)) if ratios else float("nan")  # over the tasks with data
            out.append((mean_ratio >= check.min_ratio and not missing,
                        f"{check.name}{vname}: mean ours/reference {mean_ratio:.2f} (need >= {check.min_ratio:g})"
                        f"{note}"))
        else:
            for r in vrows:
                ok = not math.isnan(r.ratio) and r.ratio >= check.min_ratio
                where = f"at {r.step}" + (" (partial)" if 0 < r.step < check.target_step else "")
                out.append((ok, f"{check.name}{vname} {r.task}: ours/reference {r.ratio:.2f} {where} "
                                f"(need >= {check.min_ratio:g})" + ("" if r.step else " (no data)")))
    return out


def _fmt(v: float, width: int = 8) -> str:
    return f"{'-':>{width}}" if math.isnan(v) else f"{v:>{width}.1f}"


def table(runs: list[Run], curves: Curves, every: int = TABLE_EVERY, window: float = WINDOW,
          upto: int | None = None) -> list[str]:
    """Lines ``env steps | ours | eval | ref mean | ref min-max | ours/ref`` every ``every`` env steps up to the
    furthest step reached (or ``upto``), plus that step."""
    furthest = upto if upto is not None else max([r.furthest for r in runs] + [0])
    steps = list(range(every, furthest + 1, every))
    if furthest and (not steps or steps[-1] != furthest):
        steps.append(furthest)
    lines = [f"{'env steps':>10} {'ours':>8} {'eval':>8} {'ref mean':>9} {'ref min-max':>15} {'ours/ref':>8}"]
    if not steps:
        return lines + ["  (no steps logged yet)"]
    ours, evals = ours_at(runs, steps, window)
    mean, lo, hi = reference_band(curves, steps, window)
    for i, s in enumerate(steps):
        rng = "-" if math.isnan(lo[i]) else f"{lo[i]:.0f}-{hi[i]:.0f}"
        ratio = ours[i] / mean[i] if mean[i] and not math.isnan(mean[i]) else float("nan")
        ratio_s = "-" if math.isnan(ratio) else f"{ratio:.2f}"
        lines.append(f"{s:>10} {_fmt(ours[i])} {_fmt(evals[i])} {_fmt(mean[i], 9)} {rng:>15} {ratio_s:>8}")
    return lines


def report(check: Check, runs_root: Path, reference: Path, out: Path | None = None,
           window: float = WINDOW) -> tuple[list[tuple[bool, str]], Path]:
    """Print the tables and verdicts of ``check`` and write its PNG; returns ``(verdicts, png path)``."""
    from experiments.plot import check_out, pyplot, reference_label

    out = check_out(out or runs_root / check.name / "report.png")
    ref_file = reference_path(reference, check)
    ref = load_reference(ref_file)
    groups = find_runs(check, runs_root)
    rows = []
    print(f"== {check.name}: {check.description}")
    print(f"   runs {runs_root / check.name}, reference {ref_file}; ours = mean training-episode return over the "
          f"last {window / 1000:g}k env steps (mean over seeds)")
    for (variant, task), runs in groups.items():
        curves = ref.get(reference_task(task) or "", [])
        if not curves:
            raise ConfigError(f"reference file {str(ref_file)!r} has no curve for {reference_task(task)!r}")
        seeds = ", ".join(str(r.config.get("seed", r.path.name)) for r in runs) or "none"
        print(f"\n{task}{f' [{variant}]' if variant else ''}  (seeds: {seeds})")
        print("\n".join(table(runs, curves, window=window)))
        rows.append(judge_row(variant, task, runs, curves, check.target_step, window))
    results = verdicts(check, rows)
    print()
    for ok, line in results:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    overall = all(ok for ok, _ in results)
    partial = any(0 < r.step < check.target_step for r in rows) or any(not r.step for r in rows)
    print(f"{check.name}: {'PASS' if overall else 'FAIL'}" + (" (partial runs)" if partial else ""))
    # the PNG: one panel per task, every run of that task over the reference band up to the target step
    plt = pyplot()
    tasks = list(check.tasks)
    ncols = min(len(tasks), 4)
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks, strict=False):
        runs = [r for (v, t), rs in groups.items() if t == task for r in rs]
        xmax = max([r.furthest for r in runs] + [check.target_step])
        draw_returns(ax, runs, ref, window, xmax=xmax, run_colours=colours(len(runs)),
                     ref_name=reference_label(ref_file), tasks=[reference_task(task)])
        ax.axvline(check.target_step, color="0.6", lw=0.8, ls=":")
        ax.set_title(task, fontsize=9)
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"learning check {check.name}", fontsize=10)
    fig.tight_layout()
    path = save_figure(fig, out)
    print(f"plot: {path}")
    return results, path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="launch or resume the training runs of a check, then report")
    r.add_argument("check", help=", ".join(CHECKS))
    r.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    r.add_argument("--tasks", default="", help="comma-separated subset of the check's tasks (default: all)")
    r.add_argument("--batch", action="store_true",
                   help="train each task's seeds as one batch in one process (dreamshift train seeds=[...])")
    r.add_argument("--steps", type=int, default=STEPS, help=f"env-step budget of each run (default {STEPS})")
    r.add_argument("--parallel", type=int, default=1, help="runs at a time, threads=1 each (default 1)")
    r.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="extra dreamshift train overrides, e.g. --set size=size12m train_ratio=1024")
    r.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    q = sub.add_parser("report", help="tables, PASS/FAIL and a PNG from the check's run directories")
    q.add_argument("check", help=", ".join(CHECKS))
    q.add_argument("--out", type=Path, help="PNG path (default RUNS/<check>/report.png)")
    for s in (r, q):
        s.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"runs root (default {DEFAULT_RUNS})")
        s.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                       help=f"directory with the reference .json.gz files, or one file (default {DEFAULT_REFERENCE})")
    args = p.parse_args(argv)
    try:
        check = get_check(args.check)
        if args.cmd == "report":
            report(check, args.runs, args.reference, args.out)
            return 0
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
        if not seeds or args.parallel < 1 or args.steps < 1:
            raise ConfigError("--seeds must name a seed, --parallel and --steps must be >= 1")
        extra = parse_sets(args.set)
        if args.tasks:
            tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
            unknown = [t for t in tasks if t not in check.tasks]
            if unknown or not tasks:
                raise ConfigError(f"--tasks {args.tasks!r}: allowed: {', '.join(check.tasks)}")
            check = dataclasses.replace(check, tasks=tasks)
        from mbrl.config import build_config

        jobs = (plan_batch if args.batch else plan)(check, seeds, args.steps, args.runs.resolve(), extra)
        for job in jobs:  # bad overrides fail here, once, before any process starts
            build_config([a for a in job.cmd[job.cmd.index("train") + 1:] if "=" in a and
                          not a.startswith("seeds=")])
        for job in jobs:
            print(f"{job.status:>6}  {' '.join(job.cmd)}")
        if args.dry_run:
            return 0
        failed = launch(jobs, args.parallel)
        report(check, args.runs, args.reference)
        return 1 if failed else 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
