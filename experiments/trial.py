"""Run one sweep trial: train on the clean env (or resume), evaluate under the suite, write its results file.

Layout under the sweep directory ``OUT``:

- ``runs/<trial>/``: the trial's run directory (checkpoint, metrics.jsonl, wandb/, eval/);
- ``results/<trial>.jsonl``: its evaluation records (:mod:`experiments.results`), written atomically last, so a
  trial is *complete* exactly when this file exists and validates;
- ``status/<trial>.json``: state (``done`` | ``failed`` | ``running``), attempts, timings and every error;
- ``logs/<trial>.log``: the trial's stdout/stderr.

With ``seed_batch`` (:mod:`experiments.spec`) the trials of a batch train together first (:func:`run_batch`,
``dreamshift train seeds=[...]``) into ``runs/<batch>/``, each trial's run directory being its member
``runs/<batch>/seed-<s>/``; each trial is then evaluated and recorded as above.

Resumption: a complete trial is skipped; a trial whose run holds a checkpoint resumes training from it (or only
evaluates, when its budget is spent); a run directory without a checkpoint (killed before its first save) is
started afresh. A trial's results are keyed by its :func:`fingerprint` (config hash, steps, evaluation), kept in
its status file: when the grid changed since they were made, :func:`stale_reason` says what changed and the sweep
moves them aside (:func:`set_aside`) and reruns the trial, going on from its run when the config hash is the
same and the new budget is not below the steps it trained (e.g. ``steps`` 400 -> 600), else from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import DreamshiftError
from experiments import results
from experiments.wandb_log import log_evaluation
from mbrl.config import build_config, model_hash
from mbrl.runs import checkpoint
from mbrl.runs.evaluate import evaluate_suite
from mbrl.runs.merge import merge_run
from mbrl.runs.train import resume_config, train
from mbrl.runs.train_members import MEMBERS_FILE, train_members


def paths(out: Path | str, trial_id: str, trial: dict[str, Any] | None = None) -> dict[str, Path]:
    """The files of trial ``trial_id`` under sweep directory ``out`` (a batched ``trial``'s run directory is its
    member directory ``runs/<batch>/seed-<s>``)."""
    out = Path(out)
    run = out / "runs" / trial["batch"] / f"seed-{trial['seed']}" if trial and trial.get("batch") else \
        out / "runs" / trial_id
    return {"run": run, "results": out / "results" / f"{trial_id}.jsonl",
            "status": out / "status" / f"{trial_id}.json", "log": out / "logs" / f"{trial_id}.log"}


# what a trial's results depend on besides its config hash (the grid's evaluation settings)
DEFINITION = ("overrides", "suite", "episodes", "eval_seed", "alphas", "label")


def definition(trial: dict[str, Any]) -> dict[str, Any]:
    """The parts of a trial that make its results (:data:`DEFINITION`), as recorded in its status file."""
    return {k: trial.get(k) for k in DEFINITION}


def fingerprint(trial: dict[str, Any]) -> str:
    """What the trial's results are keyed by: its run's config hash (:func:`mbrl.config.model_hash`, every
    experiment-defining setting), its env-step budget, and its evaluation (suite, episodes, evaluation seed,
    WiSE-FT alphas, label). Settings that change no result (threads, logging, device, wandb) are left out."""
    cfg = build_config(trial["overrides"])
    data = {"config_hash": model_hash(cfg), "steps": int(cfg.steps), "suite": trial["suite"],
            "episodes": trial["episodes"], "eval_seed": trial["eval_seed"], "alphas": trial.get("alphas", []),
            "label": trial.get("label")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def has_results(out: Path | str, trial: dict[str, Any]) -> bool:
    """Whether the trial's results file exists and validates (a corrupt one counts as missing)."""
    path = paths(out, trial["id"])["results"]
    if not path.is_file():
        return False
    try:
        return len(results.read(path)) > 0
    except results.ResultsError:
        return False


def stale_reason(out: Path | str, trial: dict[str, Any]) -> str | None:
    """Why the trial's results were made by another definition of the trial (the grid changed since), e.g.
    ``"steps 400 -> 600"``; None when they are current. Keyed by :func:`fingerprint` as recorded in the trial's
    status; results without one (an older sweep) are checked against their records' config hash and env steps."""
    status = read_status(out, trial["id"])
    if "fingerprint" in status:
        if status["fingerprint"] == fingerprint(trial):
            return None
        return _changes(status.get("definition") or {}, definition(trial)) or "its config hash changed"
    cfg = build_config(trial["overrides"])
    recs = [r for r in results.read(paths(out, trial["id"])["results"]) if "+merge:" not in r["encoder_mode"]]
    hashes = {r["config_hash"] for r in recs}
    if hashes and hashes != {model_hash(cfg)}:
        return f"config hash {', '.join(sorted(hashes))} -> {model_hash(cfg)}"
    trained = min((r["env_steps_trained"] for r in recs), default=cfg.steps)
    return f"results at {trained} env steps, steps {cfg.steps}" if trained < cfg.steps else None


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"steps 400 -> 600, suite quick -> full"``: what differs between two :func:`definition`-s."""
    out = []
    for key in DEFINITION:
        a, b = old.get(key), new.get(key)
        if key == "overrides":
            a, b = a or {}, b or {}
            out += [f"{k} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key} {a} -> {b}")
    return ", ".join(out)


def is_complete(out: Path | str, trial: dict[str, Any]) -> bool:
    """Whether the trial's results file exists, validates and is current (:func:`stale_reason`: made by this
    definition of the trial, not by an earlier grid)."""
    return has_results(out, trial) and stale_reason(out, trial) is None


def _resumable(run_dir: Path, trial: dict[str, Any]) -> bool:
    """Whether the trial's new definition can go on from the checkpoint in ``run_dir``: the same config hash, and
    no more env steps trained than its budget."""
    if not checkpoint.checkpoint_path(run_dir).exists():
        return False
    try:
        run = checkpoint.read_config(run_dir)
        doc = checkpoint.read_doc(run_dir)
    except DreamshiftError:
        return False
    cfg = build_config(trial["overrides"])
    return model_hash(run) == model_hash(cfg) and int(doc["counters"].get("env_steps", 0)) <= cfg.steps


def set_aside(out: Path | str, trial: dict[str, Any], stale_dir: Path) -> None:
    """Move a stale trial's results and status (and its run directory, or its batch's, when the new definition
    cannot resume from it) under ``stale_dir``, so that the trial reruns and nothing it made is lost."""
    p = paths(out, trial["id"], trial)
    for key in ("results", "status"):
        if p[key].exists():
            (stale_dir / key).mkdir(parents=True, exist_ok=True)
            os.replace(p[key], stale_dir / key / p[key].name)
    run = p["run"].parent if trial.get("batch") else p["run"]
    if run.exists() and not _resumable(p["run"], trial):
        (stale_dir / "runs").mkdir(parents=True, exist_ok=True)
        os.replace(run, stale_dir / "runs" / run.name)


def read_status(out: Path | str, trial_id: str) -> dict[str, Any]:
    """The trial's status record (``{}`` when it never ran)."""
    path = paths(out, trial_id)["status"]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_status(out: Path | str, trial_id: str, status: dict[str, Any]) -> None:
    files.write_json(paths(out, trial_id)["status"], status)


def train_and_evaluate(trial: dict[str, Any], out: Path | str, threads: int = 0, wandb_mode: str | None = None,
                       ) -> list[dict[str, Any]]:
    """Train (or resume) the trial's agent and evaluate it; returns its records (also written to its results file).

    Raises:
        whatever training or evaluation raises (the caller records it and retries).
    """
    p = paths(out, trial["id"], trial)
    overrides = {**trial["overrides"], "run_dir": str(p["run"]), "wandb_group": trial["group"],
                 "progress": "false"}
    if threads and "threads" not in trial["overrides"]:
        overrides["threads"] = str(threads)
    if wandb_mode is not None:
        overrides["wandb_mode"] = wandb_mode
    cfg = build_config(overrides)
    if trial.get("batch"):
        _train_batch(trial, out, threads, wandb_mode)
    elif checkpoint.checkpoint_path(p["run"]).exists():
        done = checkpoint.load_run(p["run"], agent=False).env_steps
        if done < cfg.steps:
            print(f"resuming {trial['id']} at {done} env steps", flush=True)
            train(cfg, resume=p["run"])
    else:
        if p["run"].exists():  # killed before its first checkpoint: nothing to resume
            shutil.rmtree(p["run"])
        train(cfg)
    eval_threads = cfg.threads or threads or None  # as the trial trained (mbrl.runs.evaluate.resolve_threads)
    summary_path = evaluate_suite(p["run"], trial["suite"], episodes=trial["episodes"], seed=trial["eval_seed"],
                                  progress=lambda line: print(line, flush=True), threads=eval_threads)
    records = results.from_suite(json.loads(summary_path.read_text()), trial["id"], trial.get("label"))
    for alpha in trial.get("alphas", []):  # WiSE-FT: evaluate (1 - a) * pretrained + a * fine-tuned encoders
        merged = p["run"].parent / f"{trial['id']}-merged-a{alpha:g}"
        if not checkpoint.checkpoint_path(merged).exists():
            merge_run(p["run"], alpha, merged)
        merged_summary = evaluate_suite(merged, trial["suite"], episodes=trial["episodes"], seed=trial["eval_seed"],
                                        progress=lambda line: print(line, flush=True), threads=eval_threads)
        for r in results.from_suite(json.loads(merged_summary.read_text()), trial["id"],
                                    trial.get("label")):
            records.append({**r, "encoder_mode": f"{r['encoder_mode']}+merge:{alpha:g}"})
    if cfg.wandb_mode != "disabled":
        log_evaluation(trial, records, p["run"], mode=cfg.wandb_mode, project=cfg.wandb_project)
    results.write(p["results"], records)
    return records


def _train_batch(trial: dict[str, Any], out: Path | str, threads: int, wandb_mode: str | None) -> None:
    """Train (or resume, or leave as it is when every member reached its budget) the batch of seeds ``trial``
    belongs to: ``dreamshift train seeds=[...]`` into ``runs/<batch>/`` (:mod:`mbrl.runs.train_members`)."""
    batch_dir = Path(out) / "runs" / trial["batch"]
    overrides = {k: v for k, v in trial["overrides"].items() if k != "seed"}
    overrides.update(run_dir=str(batch_dir), wandb_group=trial["group"], progress="false")
    if threads and "threads" not in trial["overrides"]:
        overrides["threads"] = str(threads)
    if wandb_mode is not None:
        overrides["wandb_mode"] = wandb_mode
    cfg = build_config(overrides)
    seeds = trial["batch_seeds"]
    members = [batch_dir / f"seed-{s}" for s in seeds]
    if (batch_dir / MEMBERS_FILE).is_file() and all(checkpoint.checkpoint_path(m).exists() for m in members):
        done = min(checkpoint.load_run(m, agent=False).env_steps for m in members)
        if done < cfg.steps:
            print(f"resuming batch {trial['batch']} at {done} env steps", flush=True)
            train_members(resume_config(members[0], {"steps": str(cfg.steps)}), resume=batch_dir)
        return
    if batch_dir.exists():  # killed before its first checkpoint: nothing to resume
        shutil.rmtree(batch_dir)
    train_members(cfg, seeds)


def run_trial(trial: dict[str, Any], out: Path | str, retries: int = 1, threads: int = 0,
              wandb_mode: str | None = None) -> dict[str, Any]:
    """Run a trial with retries, its output going to its log file; never raises for a failing trial.

    Returns:
        its status: ``{"id", "state": "done" | "skipped" | "failed", "attempts", "errors": [...], "seconds",
        "clean_return", "shifted_return"}`` (also written to ``status/<trial>.json``).
    """
    if is_complete(out, trial):
        return {**read_status(out, trial["id"]), "id": trial["id"], "state": "skipped"}
    p = paths(out, trial["id"], trial)
    p["log"].parent.mkdir(parents=True, exist_ok=True)
    previous = read_status(out, trial["id"])
    status: dict[str, Any] = {"id": trial["id"], "state": "running", "attempts": previous.get("attempts", 0),
                              "errors": previous.get("errors", []), "host": os.uname().nodename}
    start = time.time()
    for _ in range(retries + 1):
        status["attempts"] += 1
        _write_status(out, trial["id"], status)
        try:
            with open(p["log"], "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                print(f"--- attempt {status['attempts']} of {trial['id']} at {time.ctime()}", flush=True)
                records = train_and_evaluate(trial, out, threads=threads, wandb_mode=wandb_mode)
        except Exception as exc:  # recorded and retried: a sweep never drops a failing trial silently
            status["errors"].append({"attempt": status["attempts"], "error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-4000:], "time": time.time()})
            status["state"] = "failed"
            _write_status(out, trial["id"], status)
            continue
        own = [r for r in records if "+merge:" not in r["encoder_mode"]]  # the trained agent, not its merges
        clean = [r["return"] for r in own if r["shift"] == "none"]
        shifted = [r["return"] for r in own if r["shift"] != "none"]
        status.update(state="done", seconds=round(time.time() - start, 1), fingerprint=fingerprint(trial),
                      definition=definition(trial),
                      clean_return=sum(clean) / len(clean) if clean else None,
                      shifted_return=sum(shifted) / len(shifted) if shifted else None)
        _write_status(out, trial["id"], status)
        return status
    status["seconds"] = round(time.time() - start, 1)
    _write_status(out, trial["id"], status)
    return status

