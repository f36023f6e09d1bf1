"""Adapting a trained agent to a visually shifted domain without forgetting the clean one.

``adapt(RUN, target, steps, mix, lr_scale, out)`` continues a trained run on its env wrapped by
:class:`shifts.base.ShiftWrapper` with the target shift(s) (the physics and the reward are unchanged), as in
"Never Stop Learning" (Julian et al. 2020, Sec. 4): the pretrained agent keeps training on the new condition
with a small learning rate (every optimiser's learning rates times ``lr_scale``; the base run's optimiser moments
are kept, so there is no new warm-up) while each replay batch draws a ``mix`` fraction of its sequences from the
earlier data (:class:`mbrl.replay.MixedReplay`) -- the base run's replay, read from its checkpoint and never
written -- and the rest from the new target data. Which parts train follows the run's encoder mode (a frozen
encoder stays frozen, its features cached in replay as in training).

Units: ``steps`` and ``prefill`` count target **env steps**, as in training. Before the first update the agent
collects ``prefill`` env steps with its own policy (no random actions: it is already trained); updates then keep
the run's train ratio (replayed agent steps, from both sources, per target agent step).

A lineage: adapting an adapted run continues from it and mixes in *all* earlier data (the root run's replay and
every earlier stage's target replay, an equal share each), which :mod:`mbrl.runs.continual` uses for sequences of
shifts. ``config.json`` of an adapted run holds, besides the config: ``adapted_from`` (the parent run),
``target`` (``"kind:severity[,...]"``), ``conditions``, ``mix``, ``lr_scale``, ``shift_seed``,
``replay_sources`` (run directories whose checkpoint replays are mixed in), ``lineage`` (every earlier stage:
run, target, env steps and ``checkpoint``, the weights file adapted from, which names that one save: merging
checks a BASE against it, :func:`mbrl.runs.merge.check_adapted_from`), ``base_env_steps`` (env steps of the root
run) and ``lineage_target_env_steps`` (target env steps of the earlier stages).

Evaluation (:func:`stage_report`): the run on its target, the clean env, every earlier target of the lineage and
the other severities of the target's kind, with fixed episode seeds (``mbrl.runs.evaluate.EVAL_SEED_OFFSET + seed +
i``), and the data used: target env steps as a fraction of the root run's env steps.

The conditions (``--target``, the clean env ``()``, other levels) are :mod:`shifts.conditions`; every evaluation
runs through the one evaluator (:func:`mbrl.runs.evaluate.evaluate_agent`), runs load through
:mod:`mbrl.runs.checkpoint`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from envs import files
from envs.errors import CheckpointError, ConfigError
from envs.vector import AUTORESET_MODE
from mbrl.agent import Agent
from mbrl.config import Config, _convert, model_hash, to_dict, validate
from mbrl.replay import MixedReplay, Replay, read_npz
from mbrl.runs import checkpoint, run_lock
from mbrl.runs.evaluate import eval_threads, evaluate_agent, resolve_threads, run_metadata
from mbrl.runs.merge import check_adapted_from, check_mergeable, format_alpha, merge_agent_states, parse_alpha
from mbrl.runs.train import (
    check_steps_grow,
    discard_new_run,
    first_interrupt,
    interrupted_new_run,
    make_replay,
    remove_orphans,
    run_loop,
)
from mbrl.runtime import env_kwargs, resolve_device
from shifts.conditions import CLEAN, Condition, as_condition, condition_name, other_levels, parse_target, shifted_env

#: Config keys ``adapt`` lets a user set (budgets, logging, hardware, update rate); the model stays the run's.
ADAPT_KEYS = ("train_ratio", "prefill", "batch_size", "threads", "device", "log_every", "save_every", "eval_every",
              "eval_episodes", "progress", "wandb_mode", "wandb_project", "wandb_group")
REPORT_FILE = "adapt-report.json"


# ----------------------------------------------------------------------------------------------- conditions
def make_shifted_vector_env(cfg: Config, conditions: Condition, shift_seed: int) -> gymnasium.vector.VectorEnv:
    """``cfg.num_envs`` shifted copies of the run's env as a vector env with the autoreset convention of
    :func:`envs.make_vector_env` (sub-env ``i`` seeded ``cfg.seed + i``; async workers when ``num_envs > 1``)."""
    from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv


    fns = [functools.partial(shifted_env, cfg.env, conditions, shift_seed, seed=cfg.seed + i, **env_kwargs(cfg))
           for i in range(cfg.num_envs)]
    if cfg.num_envs > 1:
        return AsyncVectorEnv(fns, context="spawn", autoreset_mode=AUTORESET_MODE)
    return SyncVectorEnv(fns, autoreset_mode=AUTORESET_MODE)


# ----------------------------------------------------------------------------------------------- run metadata
def lineage_info(run: checkpoint.LoadedRun) -> dict[str, Any]:
    """What a run adapted from ``run`` inherits: ``replay_sources`` (earlier data, oldest first),
    ``lineage`` (earlier stages), ``base_env_steps`` (root run) and ``lineage_target_env_steps``.

    Args:
        run: the parent run (:func:`mbrl.runs.checkpoint.load_run`).

    Raises:
        CheckpointError: the parent's ``config.json`` is missing or unreadable.
    """
    meta, run_dir, env_steps = run.meta, str(run.run_dir), run.env_steps
    weights = checkpoint.read_doc(run.run_dir)["weights_file"]  # names this very checkpoint (new at every save)
    if run.adapted_from is None:  # a run trained on the clean env: the root of a lineage
        return {"replay_sources": [run_dir], "lineage": [{"run": run_dir, "target": "clean",
                                                          "env_steps": env_steps, "checkpoint": weights}],
                "base_env_steps": env_steps, "lineage_target_env_steps": 0}
    stage = {"run": run_dir, "target": meta["target"], "env_steps": env_steps, "checkpoint": weights}
    return {"replay_sources": [*run.replay_sources, run_dir], "lineage": [*run.lineage, stage],
            "base_env_steps": int(meta["base_env_steps"]),
            "lineage_target_env_steps": int(meta["lineage_target_env_steps"]) + env_steps}


def _replay_path(run_dir: Path | str, replay_file: str | None) -> Path:
    """The replay file of a run's checkpoint, which must exist.

    Raises:
        CheckpointError: the checkpoint stores no replay (e.g. a merged run), or its file is missing.
    """
    if not replay_file:
        raise CheckpointError(f"run {str(run_dir)!r} stores no replay buffer to mix in (a merged run?); adapt "
                              f"from a trained run, or use --mix 0")
    path = Path(run_dir) / checkpoint.CHECKPOINT_DIR / replay_file
    if not path.is_file():
        raise CheckpointError(f"checkpoint of {str(run_dir)!r} names replay file {str(path)!r}, which is missing")
    return path


def check_replay_sources(run: checkpoint.LoadedRun, mix: float) -> list[str]:
    """The run directories whose replays an adaptation of ``run`` with ``mix`` mixes in (none for ``mix`` 0),
    each checked to store a replay file (only their ``checkpoint.json`` is read: a cheap check before any work).

    Raises:
        CheckpointError: a source without checkpoint, without replay (a merged run) or with its file missing.
    """
    if mix <= 0:
        return []
    sources = lineage_info(run)["replay_sources"]
    for src in sources:
        _replay_path(src, checkpoint.read_doc(src)["replay_file"])
    return sources


def load_source_replay(run_dir: Path | str) -> Replay:
    """The replay buffer stored in a run's checkpoint (read only; the run is not modified).

    Raises:
        CheckpointError: no checkpoint, or a checkpoint without replay (e.g. a merged run).
    """
    run = checkpoint.load_run(run_dir, agent=False)
    cfg = run.config
    path = _replay_path(run_dir, run.replay_file)
    arrays = read_npz(path)  # read once: the feature width sizes the buffer the arrays then fill
    image_shape = (cfg.image_size, cfg.image_size, 3) if "pixels" in cfg.obs else None
    try:
        features = arrays["data_features"].shape[-1] if "data_features" in arrays else 0
        latent = (arrays["data_deter"].shape[-1], *arrays["data_stoch"].shape[-2:]) if "data_deter" in arrays \
            else None
        replay = Replay(cfg.replay_capacity, cfg.num_envs, image_shape, run.action_dim, seed=cfg.seed,
                        feature_dim=features, state_dim=run.state_dim, latent=latent)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"replay file {str(path)!r} does not fit the replay of {str(run_dir)!r} ({exc}); the "
                              f"checkpoint is damaged: restore the file or restart the run") from None
    replay.load_arrays(arrays, path)
    return replay


def _override(cfg: Config, overrides: dict[str, str]) -> Config:
    """Apply ``key=value`` overrides restricted to :data:`ADAPT_KEYS`; raises :class:`ConfigError`."""
    types = typing.get_type_hints(Config)
    for key, raw in overrides.items():
        if key not in ADAPT_KEYS:
            raise ConfigError(f"adapt cannot change {key!r} (the model is the run's); allowed: {', '.join(ADAPT_KEYS)}")
        setattr(cfg, key, _convert(key, str(raw), types[key]))
    validate(cfg)
    return cfg


def _scaled_config(base: Config, lr_scale: float) -> Config:
    """A copy of ``base`` with every learning rate times ``lr_scale`` (an automatic ``encoder_lr`` < 0 follows
    ``lr``)."""
    cfg = copy.deepcopy(base)
    o = cfg.optim
    o.lr, o.actor_lr, o.critic_lr = o.lr * lr_scale, o.actor_lr * lr_scale, o.critic_lr * lr_scale
    if o.encoder_lr >= 0:
        o.encoder_lr *= lr_scale
    return cfg


def _load_base_into(agent: Agent, state: dict[str, Any]) -> None:
    """Load a checkpoint's weights and optimiser moments into ``agent`` but keep ``agent``'s (scaled) learning
    rates: torch's ``load_state_dict`` would restore the saved ones."""
    agent.load_state_dict(state["agent"])
    opts = (agent.wm_opt, agent.actor_opt, agent.critic_opt)
    lrs = [[g["base_lr"] for g in o.opt.param_groups] if o.opt is not None else [] for o in opts]
    if state["optim"] is None:  # an evaluation-only base (a zoo entry): fresh optimiser moments
        return
    agent.load_optim_state(state["optim"])
    for opt, group_lrs in zip(opts, lrs, strict=True):
        if opt.opt is None:
            continue
        scale = min(1.0, opt.updates / opt.warmup) if opt.warmup > 0 else 1.0
        for group, lr in zip(opt.opt.param_groups, group_lrs, strict=True):
            group["base_lr"], group["lr"] = lr, lr * scale


# ----------------------------------------------------------------------------------------------- adaptation
def adapt(run: Path | str | None, target: str | Condition | None, steps: int | None, mix: float = 0.5,
          lr_scale: float = 0.1, out: Path | str | None = None, seed: int | None = None,
          overrides: dict[str, str] | None = None, resume: Path | str | None = None) -> Path:
    """Adapt the agent of ``run`` to the shifted env ``target`` for ``steps`` target env steps; returns ``out``.

    Args:
        run: trained run directory (read only). Ignored with ``resume``.
        target: ``"kind:severity[,kind:severity...]"`` (:func:`shifts.conditions.parse_target`) or a
            :data:`~shifts.conditions.Condition`.
        steps: target env steps (> 0); with ``resume``, a new total budget (None keeps the stored one).
        mix: fraction of each batch's sequences from earlier data (:class:`~mbrl.replay.MixedReplay`), [0, 1].
        lr_scale: factor on every learning rate, in (0, 1] (Julian et al. 2020 fine-tune with a smaller rate).
        out: new run directory; must not exist or be empty.
        seed: seed of the adaptation (env episodes, shift, sampling); default the run's seed.
        overrides: ``{key: value}`` of :data:`ADAPT_KEYS` (e.g. ``train_ratio``, ``threads``, ``prefill``:
            target env steps collected with the policy before the first update, default
            ``max(batch_length * action_repeat, min(1000, steps // 10))``).
        resume: an adapted run directory killed before the end: continue it from its checkpoint.

    Raises:
        ConfigError: unknown kind, severity outside 1-5, ``mix`` outside [0, 1], ``lr_scale`` outside (0, 1],
            ``steps`` < 1, a key outside :data:`ADAPT_KEYS`, ``out`` existing and not empty, resuming a run that
            was not adapted. CheckpointError: missing run/checkpoint/replay. All before anything is written.
    """
    overrides = dict(overrides or {})
    if resume is not None:
        run_lock.check_free(resume)  # another process is adapting it: its pid, before anything else
        return _resume(Path(resume), steps, overrides)
    if run is None or out is None or target is None or steps is None:
        raise ConfigError("adapt needs RUN, --target, --steps and --out (or --resume OUT)")
    if not 0.0 <= mix <= 1.0:  # also NaN
        raise ConfigError(f"--mix must be in [0, 1], got {mix}")
    if not 0.0 < lr_scale <= 1.0:
        raise ConfigError(f"--lr-scale must be in (0, 1], got {lr_scale}")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1 target env steps, got {steps}")
    run, out = Path(run), Path(out)
    run_lock.check_free(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = f"; continue it with `dreamshift adapt --resume {out}`" if checkpoint.checkpoint_path(out).exists() \
            else ""
        raise ConfigError(f"--out {str(out)!r} already exists and is not empty{hint}; choose another --out")
    base = checkpoint.load_run(run, agent=False, train_state=True)
    base_cfg = base.config
    conditions = target if isinstance(target, tuple) else parse_target(target, base_cfg.env)
    if not conditions:
        raise ConfigError("--target names no shift; adapting to the clean env is training: `dreamshift train`")
    cfg = _scaled_config(base_cfg, lr_scale)
    cfg.steps, cfg.run_dir, cfg.eval_every = int(steps), str(out), 0
    cfg.seed = base_cfg.seed if seed is None else int(seed)
    cfg.prefill = max(cfg.batch_length * cfg.action_repeat, min(1000, cfg.steps // 10))
    cfg = _override(cfg, overrides)
    info = lineage_info(base)
    meta = {"adapted_from": str(run), "target": condition_name(conditions),
            "conditions": [list(c) for c in conditions], "mix": float(mix), "lr_scale": float(lr_scale),
            "shift_seed": cfg.seed, **info}
    sources = [load_source_replay(src) for src in info["replay_sources"]] if mix > 0 else []
    return _run(cfg, meta, conditions, sources, base, resume=False)


def _resume(out: Path, steps: int | None, overrides: dict[str, str]) -> Path:
    run = checkpoint.load_run(out, agent=False, train_state=True)
    meta = run.meta
    if run.adapted_from is None:
        raise ConfigError(f"{str(out)!r} is not an adapted run (no adapted_from in its config.json); "
                          f"resume it with `dreamshift train --resume`")
    cfg = run.config
    cfg.run_dir = str(out)  # the directory may have been moved or copied since
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be >= 1 target env steps, got {steps}")
        check_steps_grow(out, int(steps), run.env_steps, "--steps")
        cfg.steps = int(steps)
    budget_only = {k: v for k, v in overrides.items() if k not in ("train_ratio", "prefill", "batch_size")}
    if budget_only != overrides:
        raise ConfigError("train_ratio, prefill and batch_size cannot change on resume")
    cfg = _override(cfg, budget_only)
    conditions = as_condition(meta["conditions"])
    sources = [load_source_replay(src) for src in meta["replay_sources"]] if meta["mix"] > 0 else []
    return _run(cfg, meta, conditions, sources, run, resume=True)


def _run(cfg: Config, meta: dict[str, Any], conditions: Condition, sources: list[Replay],
         start: checkpoint.LoadedRun, resume: bool) -> Path:
    """Build the agent and the mixed replay, write config.json (new runs) and run the training loop.

    Args:
        start: the run trained on from (loaded with its train state): the parent run of a new adaptation, whose
            weights and optimiser moments the agent starts from, or the adapted run itself when ``resume``.
    """
    out = Path(cfg.run_dir)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    assert start.state is not None
    agent = Agent(cfg, start.action_dim, start.state_dim).to(device)
    target = make_replay(cfg, agent)
    counters: dict[str, Any] = {"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0}
    if resume:
        counters = checkpoint.restore(out, start.state, agent, target)
    mixed = MixedReplay(target, sources, meta["mix"], seed=cfg.seed + 104_729 + counters["updates"])
    if resume and "mix_counts" in counters:
        mixed.counts = counters["mix_counts"]
    counters["mix_counts"] = mixed.counts
    venv = make_shifted_vector_env(cfg, conditions, meta["shift_seed"])
    created = not out.exists()
    try:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(run_lock.hold(out))  # one writer per run directory (creates it)
                remove_orphans(out)
                if not resume:
                    _load_base_into(agent, start.state)
                    files.write_json(out / "config.json", {"config": to_dict(cfg), "config_hash": model_hash(cfg),
                                                           **meta})
            except BaseException:
                venv.close()
                raise
            run_loop(cfg, venv, agent, mixed, counters, out, device, resumed=resume,
                     random_prefill=False)
    except KeyboardInterrupt as exc:
        if resume:
            raise first_interrupt(exc) from None
        # a new adaptation stopped before its first env step: the same command (or continual) starts it again
        raise interrupted_new_run(exc, out, lambda: discard_new_run(out, created)) from None
    return out


# ----------------------------------------------------------------------------------------------- evaluation
def report_conditions(meta: dict[str, Any], levels: bool = True) -> list[tuple[str, Condition]]:
    """``(role, condition)`` to evaluate an adapted run on: ``target``, ``clean``, each earlier target of the
    lineage (``earlier``) and, with ``levels``, the target's other severities (``level``)."""
    cond = as_condition(meta["conditions"])
    out: list[tuple[str, Condition]] = [("target", cond), ("clean", CLEAN)]
    seen = {cond, CLEAN}
    for stage in meta.get("lineage", []):
        if stage["target"] != "clean":
            earlier = parse_target(stage["target"])
            if earlier not in seen:
                out.append(("earlier", earlier))
                seen.add(earlier)
    if levels:
        out += [("level", c) for c in other_levels(cond) if c not in seen]
    return out


def data_used(meta: dict[str, Any], counters: dict[str, Any]) -> dict[str, Any]:
    """Data of an adapted run: target env steps of this stage and of the whole lineage, as fractions of the root
    run's env steps, and the replayed sequences per source."""
    base = int(meta["base_env_steps"])
    stage = int(counters["env_steps"])
    total = stage + int(meta["lineage_target_env_steps"])
    counts = counters.get("mix_counts") or {"target": 0, "sources": []}
    seqs = counts["target"] + sum(counts["sources"])
    return {"target_env_steps": stage, "lineage_target_env_steps": total, "base_env_steps": base,
            "fraction": stage / base if base else None, "lineage_fraction": total / base if base else None,
            "updates": int(counters.get("updates", 0)), "mix": meta["mix"],
            "sequences_target": counts["target"],
            "sequences_sources": dict(zip(meta["replay_sources"], counts["sources"], strict=False)),
            "source_fraction_sampled": sum(counts["sources"]) / seqs if seqs else None}


def stage_report(run_dir: Path | str, episodes: int = 3, seed: int = 0, levels: bool = True,
                 device: str = "cpu", progress: Callable[[str], None] | None = None,
                 threads: int | None = None) -> Path:
    """Evaluate an adapted run (:func:`report_conditions`) and write ``RUN/eval/adapt-report.json`` atomically;
    returns its path. See :func:`format_report` for the printed table. Reproducible bit for bit
    (:func:`mbrl.runs.evaluate.evaluate_agent`).

    Args:
        threads: torch CPU threads of the evaluation (:func:`mbrl.runs.evaluate.resolve_threads`: default the run's
            ``threads``, else all cores).

    Raises:
        ConfigError: the run was not adapted, ``episodes`` < 1 or ``threads`` < 0. CheckpointError: no checkpoint.
    """
    meta = checkpoint.read_meta(run_dir)
    if "adapted_from" not in meta:
        raise ConfigError(f"{str(run_dir)!r} is not an adapted run (no adapted_from in its config.json)")
    if episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, got {episodes}")
    run = checkpoint.load_run(run_dir, device)
    agent, cfg = run.agent, run.config
    roles = report_conditions(meta, levels)
    results = evaluate_agent(agent, cfg, [c for _, c in roles], episodes, seed, progress, threads)
    for (role, _), rec in zip(roles, results, strict=True):
        rec["role"] = role
    report = {"run": str(run_dir), "adapted_from": meta["adapted_from"], "target": meta["target"],
              "env": cfg.env, "encoder": cfg.encoder, "mix": meta["mix"], "lr_scale": meta["lr_scale"],
              "eval_seed": seed, "episodes_per_condition": episodes, "data": data_used(meta, run.counters),
              "run_meta": run_metadata(run, seed), "results": results}
    return files.write_json(Path(run_dir) / "eval" / REPORT_FILE, report)


def format_report(report: dict[str, Any]) -> str:
    """A table of one stage report: one row per condition (role, mean return +- stderr) and the data line."""
    rows = [(r["role"], r["condition"], f"{r['return_mean']:.1f} +- {r['return_stderr']:.1f}")
            for r in report["results"]]
    w0 = max(len("role"), *(len(r[0]) for r in rows))
    w1 = max(len("condition"), *(len(r[1]) for r in rows))
    lines = [f"{report['run']}: adapted from {report['adapted_from']} to {report['target']} (mix {report['mix']:g}, "
             f"lr x{report['lr_scale']:g}), {report['episodes_per_condition']} episode(s) per condition",
             f"{'role':<{w0}}  {'condition':<{w1}}  return"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    d = report["data"]
    frac = "" if d["fraction"] is None else f" = {100 * d['fraction']:.1f}% of the base run's {d['base_env_steps']}"
    lines.append(f"data: {d['target_env_steps']} target env steps{frac}; lineage {d['lineage_target_env_steps']}; "
                 f"{d['updates']} updates, sampled source fraction {d['source_fraction_sampled'] or 0:.2f}")
    return "\n".join(lines)


def alpha_sweep(base_run: Path | str, adapted_run: Path | str, alphas: list[str], episodes: int = 3,
                seed: int = 0, levels: bool = False, device: str = "cpu",
                progress: Callable[[str], None] | None = None, threads: int | None = None) -> Path:
    """Evaluate the merged agents ``(1 - alpha) * base + alpha * adapted`` (per module, :mod:`mbrl.runs.merge`) for
    each alpha spec on the adapted run's target, the clean env and earlier targets (and the target's other
    levels with ``levels``); writes ``ADAPTED/eval/alpha-sweep.json`` atomically and returns its path.

    Args:
        alphas: specs of :func:`mbrl.runs.merge.parse_alpha`, e.g. ``["0", "0.5", "1", "encoder=0,world_model=1"]``.
        threads: torch CPU threads (:func:`mbrl.runs.evaluate.resolve_threads`: default the adapted run's
            ``threads``, else all cores); restored on return.

    Every merged agent is evaluated on the same seeded episodes (:func:`mbrl.runs.evaluate.evaluate_agent`):
    reproducible bit for bit, and differences between alphas come from the weights alone.

    Raises:
        ConfigError: a bad alpha spec, incompatible runs, a BASE the adapted run was not adapted from
            (:func:`mbrl.runs.merge.check_adapted_from`), an adapted run without adaptation metadata,
            ``episodes`` < 1 or ``threads`` < 0 (all before any evaluation). CheckpointError: a missing
            checkpoint.
    """
    if not alphas:
        raise ConfigError("--alpha: give at least one alpha")
    specs = [parse_alpha(a) for a in alphas]
    if episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, got {episodes}")
    resolve_threads(None, threads)
    meta = checkpoint.read_meta(adapted_run)
    if "conditions" not in meta:
        raise ConfigError(f"{str(adapted_run)!r} is not an adapted run (no target in its config.json)")
    base = checkpoint.load_run(base_run, agent=False)
    adapted = checkpoint.load_run(adapted_run, agent=False)
    check_mergeable(base, adapted, str(base_run), str(adapted_run))
    check_adapted_from(base, adapted, str(base_run), str(adapted_run))
    cfg = adapted.config
    roles = report_conditions(meta, levels)
    rows = []
    with eval_threads(cfg, threads) as n:
        for spec in specs:
            agent = adapted.build_agent(merge_agent_states(base.weights, adapted.weights, spec), device)
            if progress is not None:
                progress(f"alpha {format_alpha(spec)}")
            results = evaluate_agent(agent, cfg, [c for _, c in roles], episodes, seed, progress, n)
            for (role, _), rec in zip(roles, results, strict=True):
                rec["role"] = role
            rows.append({"alpha": spec, "alpha_name": format_alpha(spec), "results": results})
    out = {"base": str(base_run), "adapted": str(adapted_run), "target": meta["target"], "eval_seed": seed,
           "episodes_per_condition": episodes, "data": data_used(meta, adapted.counters),
           "run_meta": run_metadata(adapted, seed), "sweep": rows}
    return files.write_json(Path(adapted_run) / "eval" / "alpha-sweep.json", out)


def format_sweep(sweep: dict[str, Any]) -> str:
    """Alpha x condition table of mean returns."""
    conds = [r["condition"] for r in sweep["sweep"][0]["results"]]
    names = [row["alpha_name"] for row in sweep["sweep"]]
    w = max(len("alpha"), *(len(n) for n in names))
    col = max(10, *(len(c) for c in conds))
    lines = [f"{'alpha':<{w}}  " + "  ".join(f"{c:>{col}}" for c in conds)]
    for name, row in zip(names, sweep["sweep"], strict=True):
        lines.append(f"{name:<{w}}  " + "  ".join(f"{r['return_mean']:>{col}.1f}" for r in row["results"]))
    return "\n".join(lines)
