"""Evaluate a trained run's checkpoint on every ``(kind, severity)`` condition of a suite (:mod:`shifts.suites`),
or on its clean env: the clean evaluation (:func:`evaluate`) is the ``none:0`` condition of a suite.

Every condition runs the same episode seeds (``EVAL_SEED_OFFSET + seed + i``) through
:func:`~mbrl.runs.evaluate.episodes.run_episodes`, in a fresh env wrapped by :class:`~shifts.base.ShiftWrapper`; the
shift's own seed is ``seed``, so its per-episode randomness is a function of ``(seed, episode seed, kind)`` and the
whole file is reproducible. A suite's results go atomically to ``RUN_DIR/eval/suite-<name>.json``: one record per
episode and an aggregate per condition with the drop ``100 (clean - shifted) / |clean|`` of the mean return (Jones
et al. 2025's drop %; ``null`` when the clean mean is 0); the clean evaluation's to ``RUN_DIR/eval/clean.json``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from encoders.registry import resolve_mode
from envs import files
from envs.errors import ConfigError
from envs.validation import MAX_SEED
from mbrl.agent import Agent
from mbrl.config import POLICY_MODES, Config, model_hash
from mbrl.runs import checkpoint
from mbrl.runs.evaluate.episodes import EVAL_SEED_OFFSET, eval_threads, resolve_threads, run_episodes
from mbrl.runs.merge import merged_agent
from mbrl.runtime import resolve_device
from shifts.conditions import CLEAN, Condition, condition_name, condition_wrapper, suite_condition
from shifts.suites import for_env, parse_suite


def _suite_progress(conditions: list[tuple[str, int]], progress: Callable[[str], None]
                    ) -> Callable[[int, Condition, list[dict[str, Any]]], None]:
    """The :func:`run_conditions` callback printing ``[i/n] kind:severity return R`` for a suite."""
    def done(i: int, cond: Condition, results: list[dict[str, Any]]) -> None:
        kind, severity = conditions[i]
        progress(f"[{i + 1}/{len(conditions)}] {kind}:{severity} return {np.mean([r['return'] for r in results]):.1f}")

    return done


def _slug(name: str) -> str:
    """A file-name-safe form of a suite name (ad-hoc lists contain ``:`` ``,`` ``+``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace(":", "").replace("+", "-"))


def drop_pct(clean: float, shifted: float) -> float | None:
    """``100 · (ID − OOD) / |ID|`` (Jones et al. 2025); ``None`` when the clean score is 0."""
    return None if clean == 0 else 100.0 * (clean - shifted) / abs(clean)


MAX_EPISODES = 10_000  # episodes per condition an evaluation may ask for (a day of dm_control episodes per core)


def check_eval_range(episodes: int, seed: int, what: str = "--episodes", seed_what: str = "--seed") -> None:
    """Check an evaluation's ``episodes`` (1 to :data:`MAX_EPISODES`) and ``seed`` (>= 0, and the episode seeds
    ``EVAL_SEED_OFFSET + seed + i`` at most the envs' largest seed, 2**32 - 1) before anything is loaded or run.

    Raises:
        ConfigError: either is out of range (one line naming the option and the bounds).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or not 1 <= episodes <= MAX_EPISODES:
        raise ConfigError(f"{what} must be >= 1 and <= {MAX_EPISODES}, got {episodes}")
    top = MAX_SEED - EVAL_SEED_OFFSET - (episodes - 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= top:
        raise ConfigError(f"{seed_what} must be in [0, {top}] (episode seeds {EVAL_SEED_OFFSET} + seed + i must stay "
                          f"below 2**32), got {seed}")


def check_policy(policy: str | None) -> None:
    """``policy`` is ``None`` (the run's ``eval_policy``) or one of :data:`mbrl.config.POLICY_MODES`.

    Raises:
        ConfigError: any other value (one line naming the allowed ones).
    """
    if policy is not None and policy not in POLICY_MODES:
        raise ConfigError(f"--policy {policy!r} is not allowed; allowed: {', '.join(POLICY_MODES)} (sample: draw "
                          f"actions from the policy, as the reference code evaluates; mode: its deterministic mode)")


def with_policy(cfg: Config, policy: str | None) -> Config:
    """``cfg`` with ``eval_policy`` set to ``policy`` (unchanged when ``None``)."""
    return cfg if policy is None else dataclasses.replace(cfg, eval_policy=policy)


def evaluate_suite(run_dir: Path | str, suite: str = "quick", episodes: int = 10, seed: int = 0,
                   device: str = "auto", progress: Callable[[str], None] | None = None,
                   threads: int | None = None, policy: str | None = None) -> Path:
    """Evaluate the checkpoint of ``run_dir`` on every condition of ``suite``; returns the JSON path.

    Args:
        suite: a suite name or an ad-hoc ``KIND[:SEVERITIES],...`` list (:func:`shifts.suites.parse_suite`).
        episodes: episodes per condition.
        seed: evaluation seed (episode seeds and shift seed).
        progress: called with one line per finished condition.
        threads: torch CPU threads (:func:`mbrl.runs.evaluate.resolve_threads`: default the run's ``threads``, else
            all cores); restored on return.
        policy: how the agent acts, ``sample`` or ``mode`` (:meth:`mbrl.agent.Agent.act`); default the run's
            ``eval_policy``. The file records it as ``eval_policy``.

    Every condition runs through :func:`mbrl.runs.evaluate.run_episodes`, which seeds each episode's random draws from
    its episode seed: the same run, suite, episodes, seed and threads give the same file, bit for bit.

    Raises:
        ShiftError: unknown suite/kind or a kind that is not registered (before anything is loaded).
        ConfigError: ``episodes`` or ``seed`` out of range (:func:`check_eval_range`), ``threads`` < 0, an unknown
            ``policy``.
        CheckpointError: no checkpoint in ``run_dir``.
    """
    name, conditions = parse_suite(suite)
    check_eval_range(episodes, seed)
    check_policy(policy)
    resolve_threads(None, threads)  # validate before loading
    run = checkpoint.load_run(run_dir, device)
    cfg, agent = with_policy(run.config, policy), run.agent
    conditions = for_env(name, conditions, cfg.env)
    with eval_threads(cfg, threads) as n:
        per_condition = run_conditions(agent, cfg, [suite_condition(k, s) for k, s in conditions], episodes, seed,
                                       n, None if progress is None else _suite_progress(conditions, progress))
    base = run_metadata(run, seed)
    records = [{**base, "shift": kind, "severity": severity, "episode_seed": r["episode_seed"], "return": r["return"],
                "success": r.get("success"), "length": r["length"]}
               for (kind, severity), results in zip(conditions, per_condition, strict=True) for r in results]
    summary = aggregate(records)
    out = {**base, "suite": name, "episodes_per_condition": episodes, "eval_policy": cfg.eval_policy,
           "conditions": [{"shift": k, "severity": s} for k, s in conditions], **summary, "episodes": records}
    return files.write_json(Path(run_dir) / "eval" / f"suite-{_slug(name)}.json", out)


def run_metadata(run: Any, seed: int) -> dict[str, Any]:
    """What identifies an evaluated run in its results records (:func:`experiments.results.episode_records`):
    ``env``, ``encoder``, ``encoder_mode`` (resolved), ``size``, ``seed`` (training), ``eval_seed`` (``seed``),
    ``env_steps_trained`` and ``config_hash`` of a loaded run (:func:`mbrl.runs.checkpoint.load_run`)."""
    cfg = run.config
    return {"env": cfg.env, "encoder": cfg.encoder, "encoder_mode": resolve_mode(cfg), "size": cfg.size,
            "seed": cfg.seed, "eval_seed": seed, "env_steps_trained": int(run.counters["env_steps"]),
            "config_hash": model_hash(cfg)}


def run_conditions(agent: Agent, cfg: Any, conditions: list[Condition], episodes: int, seed: int, threads: int,
                   done: Callable[[int, Condition, list[dict[str, Any]]], None] | None = None
                   ) -> list[list[dict[str, Any]]]:
    """Roll ``agent`` out for ``episodes`` episodes under each condition (:mod:`shifts.conditions`;
    :data:`~shifts.conditions.CLEAN`, a suite's ``none:0``, is the clean env), every condition on the same episode
    seeds ``EVAL_SEED_OFFSET + seed + i`` and with shift seed ``seed``; returns the
    :func:`~mbrl.runs.evaluate.episodes.run_episodes` records of each condition, in order. ``done(i, condition,
    records)`` is called after each condition."""
    out: list[list[dict[str, Any]]] = []
    for i, cond in enumerate(conditions):
        wrap = condition_wrapper(cond, seed) if cond else None
        results = run_episodes(agent, cfg, episodes, seed=EVAL_SEED_OFFSET + seed, wrap=wrap, threads=threads)
        out.append(results)
        if done is not None:
            done(i, cond, results)
    return out


def evaluate_agent(agent: Agent, cfg: Any, conditions: list[Condition], episodes: int, seed: int = 0,
                   progress: Callable[[str], None] | None = None,
                   threads: int | None = None) -> list[dict[str, Any]]:
    """Returns of ``agent`` (acting as ``cfg.eval_policy`` says) under each condition (:func:`run_conditions`: the
    same episode seeds for all, ``EVAL_SEED_OFFSET + seed + i``; shift seed ``seed``), each episode's random draws
    seeded from its episode seed: reproducible bit for bit. The evaluation of adaptation stages, alpha sweeps and
    continual runs.

    Args:
        threads: torch CPU threads (:func:`~mbrl.runs.evaluate.episodes.resolve_threads`: default the run's
            ``cfg.threads``, else all cores); restored on return.

    Returns:
        one record per condition: ``condition`` (name), ``shifts`` (``[[kind, severity], ...]``), ``n``,
        ``returns``, ``return_mean``, ``return_stderr`` and ``episodes`` (the
        :func:`~mbrl.runs.evaluate.episodes.run_episodes` records: ``episode_seed``, ``return``, ``length``, optional
        ``success``), from which the CLI writes results-schema records.

    Raises:
        ConfigError: ``episodes`` or ``seed`` out of range (:func:`check_eval_range`), ``threads`` < 0.
    """
    check_eval_range(episodes, seed, "--eval-episodes")
    out: list[dict[str, Any]] = []

    def record(i: int, cond: Condition, results: list[dict[str, Any]]) -> None:
        returns = np.array([r["return"] for r in results], dtype=np.float64)
        rec = {"condition": condition_name(cond), "shifts": [list(c) for c in cond], "n": len(returns),
               "returns": returns.tolist(), "return_mean": float(returns.mean()),
               "return_stderr": float(returns.std(ddof=1) / np.sqrt(len(returns))) if len(returns) > 1 else 0.0,
               "episodes": results}
        out.append(rec)
        if progress is not None:
            progress(f"  {rec['condition']}: return {rec['return_mean']:.1f}")

    run_conditions(agent, cfg, conditions, episodes, seed, resolve_threads(cfg, threads), record)
    return out


def evaluate(run_dir: Path | str, episodes: int = 10, seed: int = 0, device: str = "auto",
             alpha: float | None = None, threads: int | None = None, policy: str | None = None) -> Path:
    """Evaluate the checkpoint of ``run_dir`` on its clean env, the ``none:0`` condition of a suite
    (:func:`run_conditions`); returns the path of ``eval/clean.json`` (``eval/clean-alpha<alpha>.json`` when
    ``alpha`` is given: the encoder merged with its pretrained weights, see :mod:`mbrl.runs.merge`). Reproducible bit
    for bit (:func:`~mbrl.runs.evaluate.episodes.run_episodes`).

    Args:
        threads: torch CPU threads (:func:`~mbrl.runs.evaluate.episodes.resolve_threads`; default the run's
            ``threads``, else all cores).
        policy: how the agent acts, ``sample`` or ``mode`` (:meth:`mbrl.agent.Agent.act`); default the run's
            ``eval_policy``. The file records it as ``eval_policy``.

    Raises:
        CheckpointError: no checkpoint in ``run_dir``.
        ConfigError: ``episodes`` or ``seed`` out of range (:func:`check_eval_range`), ``threads`` < 0, an unknown
            ``policy``.
    """
    check_eval_range(episodes, seed)
    check_policy(policy)
    resolve_threads(None, threads)  # validate before loading
    # a merged agent is built on the CPU, where the pretrained weights it interpolates with are loaded
    run = checkpoint.load_run(run_dir, device if alpha is None else "cpu")
    cfg = with_policy(run.config, policy)
    with eval_threads(cfg, threads) as n:
        agent = run.agent if alpha is None else merged_agent(run, alpha).to(resolve_device(device))
        (results,) = run_conditions(agent, cfg, [CLEAN], episodes, seed, n)
    returns = np.array([r["return"] for r in results])
    summary = {
        "env": cfg.env, "encoder": cfg.encoder, "size": cfg.size, "seed": cfg.seed, "shift": "none",
        "severity": 0, "alpha": alpha, "env_steps_trained": run.counters["env_steps"],
        "encoder_mode": resolve_mode(cfg), "config_hash": model_hash(cfg), "eval_policy": cfg.eval_policy,
        "episodes": results, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
        "return_stderr": float(returns.std(ddof=1) / np.sqrt(len(returns))) if len(returns) > 1 else 0.0,
    }
    name = "clean.json" if alpha is None else f"clean-alpha{alpha:g}.json"
    return files.write_json(Path(run_dir) / "eval" / name, summary)


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-condition mean/std/stderr of the return and drop % vs the clean condition, per-kind mean drop, and the
    mean over all shifted conditions."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in records:
        groups.setdefault((r["shift"], r["severity"]), []).append(float(r["return"]))
    clean = float(np.mean(groups[("none", 0)])) if ("none", 0) in groups else None
    results = []
    for (kind, severity), returns in groups.items():
        a = np.asarray(returns)
        results.append({
            "shift": kind, "severity": severity, "n": len(a), "return_mean": float(a.mean()),
            "return_std": float(a.std()),
            "return_stderr": float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0,
            "drop_pct": None if clean is None else drop_pct(clean, float(a.mean())),
        })
    shifted = [r for r in results if r["shift"] != "none"]
    per_kind: dict[str, Any] = {}
    for r in shifted:
        per_kind.setdefault(r["shift"], []).append(r)
    kinds = {k: {"return_mean": float(np.mean([r["return_mean"] for r in rs])),
                 "drop_pct": None if clean is None or clean == 0
                 else float(np.mean([r["drop_pct"] for r in rs]))} for k, rs in per_kind.items()}
    mean_shifted = float(np.mean([r["return_mean"] for r in shifted])) if shifted else None
    return {"clean_return_mean": clean, "results": results, "kinds": kinds, "shifted_return_mean": mean_shifted,
            "mean_drop_pct": None if clean is None or mean_shifted is None else drop_pct(clean, mean_shifted)}


def format_table(summary: dict[str, Any]) -> str:
    """Kind x severity table of mean returns with the drop % vs clean."""
    results = summary["results"]
    severities = sorted({r["severity"] for r in results if r["shift"] != "none"})
    cell = {(r["shift"], r["severity"]): r for r in results}
    kinds = list(dict.fromkeys(r["shift"] for r in results if r["shift"] != "none"))
    width = max([len("kind")] + [len(k) for k in kinds])

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        drop = "" if r["drop_pct"] is None else f" ({round(-r['drop_pct']) + 0:+d}%)"
        return f"{r['return_mean']:.1f}{drop}"

    clean = summary["clean_return_mean"]
    lines = [f"clean: {clean:.1f}" if clean is not None else "clean: -"]
    cells = [[fmt(cell.get((k, s))) for s in severities] for k in kinds]
    col = max([len(c) for row in cells for c in row] + [6])
    lines.append(f"{'kind':<{width}}  " + "  ".join(f"{'sev ' + str(s):>{col}}" for s in severities))
    for k, row in zip(kinds, cells, strict=True):
        lines.append(f"{k:<{width}}  " + "  ".join(f"{c:>{col}}" for c in row))
    if summary.get("mean_drop_pct") is not None:
        lines.append(f"mean over shifted conditions: {summary['shifted_return_mean']:.1f} "
                     f"({round(-summary['mean_drop_pct']) + 0:+d}% vs clean)")
    return "\n".join(lines)
