"""Run a sweep grid (:mod:`experiments.spec`) on a backend: each trial trains then evaluates
(:func:`experiments.trial.run_trial`), complete trials are skipped, failed ones retried and recorded.

Backends:

- ``local``: up to ``workers`` trials at once, each in its own process (``concurrent.futures`` with the
  ``spawn`` start method, one trial per process), torch threads per trial = cores / workers unless set.
- ``slurm``: a submitit job array on a SLURM cluster (partition, GPUs, CPUs, memory, time limit, array
  parallelism from the file's ``slurm:`` section); a preempted or timed-out job is requeued by submitit's
  checkpointing (:class:`TrialJob`) and resumes from the trial's last checkpoint.
- ``submitit-local``: the same submitit code path with submitit's local executor (no scheduler): what the
  tests run to cover the SLURM backend on a machine without SLURM.

Ray is deliberately not used: at start-up it probes a non-loopback metadata address.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import submitit

from envs import files
from envs.errors import ConfigError, DreamshiftError
from experiments.spec import Sweep
from experiments.trial import has_results, is_complete, run_trial, set_aside, stale_reason


class SweepError(DreamshiftError):
    """Some trials failed after their retries (their errors are in ``status/<trial>.json``)."""


def run_trials(trials: list[dict[str, Any]], out: str, retries: int, threads: int,
               wandb_mode: str | None = None) -> list[dict[str, Any]]:
    """:func:`experiments.trial.run_trial` of each trial in turn: one job's work. A job is one trial, or with
    ``seed_batch`` the trials of one batch of seeds (the first trains the whole batch, the rest only evaluate)."""
    return [run_trial(t, out, retries=retries, threads=threads, wandb_mode=wandb_mode) for t in trials]


class TrialJob(submitit.helpers.Checkpointable):
    """The submitit job of one trial (or one batch of seeds' trials). Checkpointable: on preemption or timeout
    submitit requeues the same call, which resumes the trial from its last training checkpoint."""

    def __call__(self, trials: list[dict[str, Any]], out: str, retries: int, threads: int,
                 wandb_mode: str | None = None) -> list[dict[str, Any]]:
        return run_trials(trials, out, retries, threads, wandb_mode)


def jobs_of(todo: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The incomplete trials grouped into jobs: one per trial, or one per batch of seeds (``seed_batch``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in todo:
        groups.setdefault(t.get("batch") or t["id"], []).append(t)
    return list(groups.values())


def _describe(status: dict[str, Any]) -> str:
    state = status.get("state")
    if state == "failed":
        last = status["errors"][-1]["error"] if status.get("errors") else "unknown error"
        return f"FAILED after {status.get('attempts', 0)} attempt(s): {last}"
    clean, shifted = status.get("clean_return"), status.get("shifted_return")
    numbers = "" if clean is None else f", clean return {clean:.1f}" + (
        "" if shifted is None else f", shifted {shifted:.1f}")
    took = f" in {status['seconds']:.0f} s" if status.get("seconds") and state == "done" else ""
    return f"{state}{took}{numbers}"


def set_aside_stale(trials: list[dict[str, Any]], out: Path, say: Callable[[str], None]) -> list[str]:
    """Trials whose results an earlier grid made (:func:`experiments.trial.stale_reason`) are rerun: their
    results, status and (when they cannot go on from it) run directory are moved to ``OUT/stale/<time>/``
    (:func:`experiments.trial.set_aside`), with one line saying which trials and what changed. Returns their ids."""
    stale = [(t, why) for t in trials if has_results(out, t) and (why := stale_reason(out, t)) is not None]
    if not stale:
        return []
    where = out / "stale" / time.strftime("%Y%m%d-%H%M%S")
    for t, _ in stale:
        set_aside(out, t, where)
    shown = "; ".join(f"{t['id']}: {why}" for t, why in stale[:3]) + (f"; and {len(stale) - 3} more"
                                                                      if len(stale) > 3 else "")
    say(f"the grid changed since {len(stale)} trial(s) were run ({shown}): their old results are kept in {where}; "
        f"rerunning them")
    return [t["id"] for t, _ in stale]


def _threads(sweep: Sweep, workers: int) -> int:
    return sweep.threads or max(1, (os.cpu_count() or 1) // workers)


def run(sweep: Sweep, out: Path | str, backend: str | None = None, workers: int | None = None,
        wandb_mode: str | None = None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run every incomplete trial of ``sweep``; returns the statuses of all trials (grid order).

    Args:
        out: sweep directory (runs/, results/, status/, logs/ are created under it).
        backend, workers: override the file's ``backend`` section.
        wandb_mode: ``offline`` | ``online`` | ``disabled`` for every trial (default: the trial's config).
        progress: called with one line per started/finished trial.

    Raises:
        SweepError: one or more trials failed after their retries (the others' results are kept).
        OutputPathError: ``out`` cannot be created or written (before any trial runs).
    """
    out = files.check_output_dir(out, "sweep directory")  # before any trial: a file or an unwritable directory
    backend = backend or sweep.backend
    workers = workers or sweep.workers
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / "sweep.json", {"name": sweep.name, "file": sweep.path, "description": sweep.description,
                                       "trials": [t.to_dict() for t in sweep.trials]})
    trials = [t.to_dict() for t in sweep.trials]
    set_aside_stale(trials, out, say)
    todo = [t for t in trials if not is_complete(out, t)]
    say(f"sweep {sweep.name}: {len(trials)} trials, {len(trials) - len(todo)} already complete, "
        f"{len(todo)} to run on backend {backend}" + (f" ({workers} workers)" if backend == "local" else ""))
    statuses: dict[str, dict[str, Any]] = {t["id"]: {"id": t["id"], "state": "skipped"} for t in trials}
    finished = 0

    def done(status: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        statuses[status["id"]] = status
        say(f"[{finished}/{len(todo)}] {status['id']}: {_describe(status)}")

    def failed(group: list[dict[str, Any]], error: str) -> None:
        for t in group:
            done({"id": t["id"], "state": "failed", "attempts": 1, "errors": [{"error": error}]})

    groups = jobs_of(todo)

    if backend == "local":
        threads = _threads(sweep, workers)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {}
            for group in groups:
                futures[pool.submit(run_trials, group, str(out), sweep.retries, threads, wandb_mode)] = group
            for fut in as_completed(futures):
                group = futures[fut]
                try:
                    for status in fut.result():
                        done(status)
                except Exception as exc:  # the worker process itself died (e.g. killed for memory)
                    failed(group, f"worker process died: {type(exc).__name__}: {exc}")
    elif backend in ("slurm", "submitit-local"):
        executor = submitit.AutoExecutor(folder=str(out / "submitit" / "%j"),
                                         cluster="local" if backend == "submitit-local" else "slurm")
        s = sweep.slurm
        params: dict[str, Any] = {"timeout_min": s.get("timeout_min", 60), "cpus_per_task": s.get("cpus_per_task",
                                  os.cpu_count() or 1), "gpus_per_node": s.get("gpus_per_node", 0),
                                  "name": f"dreamshift-{sweep.name}"}
        if "mem_gb" in s:
            params["mem_gb"] = s["mem_gb"]
        if backend == "slurm":
            params["slurm_array_parallelism"] = s.get("array_parallelism", 16)
            for key in ("partition", "account", "qos", "constraint"):
                if key in s:
                    params[f"slurm_{key}"] = s[key]
        executor.update_parameters(**params)
        # a SLURM job owns its CPUs; submitit-local shares this machine's cores between the workers
        threads = _threads(sweep, workers) if backend == "submitit-local" else sweep.threads or params["cpus_per_task"]
        jobs = []
        with executor.batch():
            for group in groups:
                jobs.append(executor.submit(TrialJob(), group, str(out), sweep.retries, threads, wandb_mode))
        say(f"submitted {len(jobs)} job(s): {', '.join(sorted({str(j.job_id).split('_')[0] for j in jobs}))}"
            if jobs else "nothing to submit")
        pending = dict(zip(jobs, groups, strict=True))
        while pending:
            for job in [j for j in pending if j.done()]:
                group = pending.pop(job)
                try:
                    for status in job.result():
                        done(status)
                except Exception as exc:  # the job itself failed (node failure, out of memory, ...)
                    failed(group, f"job {job.job_id} failed: {str(exc)[-500:]}")
            time.sleep(1.0)
    else:
        raise ConfigError(f"unknown backend {backend!r}; allowed: local, slurm, submitit-local")

    ordered = [statuses[t["id"]] for t in trials]
    failed = [s for s in ordered if s.get("state") == "failed"]
    if failed:
        raise SweepError(f"{len(failed)} of {len(trials)} trial(s) failed: "
                         + "; ".join(f"{s['id']} ({_describe(s)})" for s in failed)
                         + f"; errors in {out / 'status'}, logs in {out / 'logs'}; rerun the sweep to retry them")
    return ordered

