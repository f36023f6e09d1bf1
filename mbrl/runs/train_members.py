"""Training a batch of seeds in one process (``dreamshift train ... seeds=[0,1,2,3]``): ``E`` members collect in
their own envs into their own replays (each a :class:`mbrl.runs.train.Collector`), and every update trains all of them
at once (:class:`mbrl.members.MemberBatch`).

Run directory ``RUN/``:

- ``RUN/members.json``: ``{"seeds": [...], "config": {...}, "stopped": {seed: reason}}`` (written atomically at
  the start and whenever a member stops);
- ``RUN/seed-<s>/``: member ``s``'s complete single-agent run directory (``config.json`` with ``seed = s``,
  ``metrics.jsonl``, ``checkpoint/``), which every command reads as it reads any run (evaluate, leaderboard, plot,
  adapt, merge, analyze).

The members keep one schedule (same budgets, same env-step counters), so they log, checkpoint and evaluate at the
same env steps. ``--resume RUN`` restores every live member from its own checkpoint. A member whose loss or
gradient goes non-finite is stopped at the next log or checkpoint (one line naming the member and the update;
its last good checkpoint is kept, the batch's optimiser never steps it again) while the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs import files
from envs.errors import CheckpointError, ConfigError
from mbrl.config import Config, model_hash, to_dict, validate
from mbrl.logger import Logger
from mbrl.members import MemberBatch, check_members, check_seed_list, stack_batches
from mbrl.optim import NonFiniteError
from mbrl.runs import checkpoint, run_lock, signals
from mbrl.runs.train import (
    Collector,
    TrainingInterrupted,
    _prepare_run,
    announce_compile,
    check_fresh_run_dir,
    default_run_dir,
    first_interrupt,
    interrupted_before_loop,
    interrupted_new_run,
    make_replay,
    remove_orphans,
    state_dim_of,
)
from mbrl.runtime import check_env_encoder, env_kwargs, resolve_device

MEMBERS_FILE = "members.json"


def member_dir(run_dir: Path | str, seed: int) -> Path:
    """``RUN/seed-<seed>``: member ``seed``'s own run directory."""
    return Path(run_dir) / f"seed-{seed}"


def read_members(run_dir: Path | str) -> dict[str, Any] | None:
    """``RUN/members.json`` as a dict, or None when ``run_dir`` is not a batch of seeds."""
    path = Path(run_dir) / MEMBERS_FILE
    if not path.is_file():
        return None
    import json

    try:
        doc = json.loads(path.read_text())
        seeds = [int(s) for s in doc["seeds"]]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{str(path)!r} is not a dreamshift members file ({err}); it lists a batch of "
                              f"seeds' run directories") from None
    doc["seeds"] = seeds
    doc.setdefault("stopped", {})
    return doc


def member_runs(run_dir: Path | str) -> list[Path]:
    """The member run directories of a batch ``RUN/`` (``[RUN]`` itself for a single run)."""
    doc = read_members(run_dir)
    if doc is None:
        return [Path(run_dir)]
    return [member_dir(run_dir, s) for s in doc["seeds"]]


def _write_members(run_dir: Path, seeds: list[int], cfg: Config, stopped: dict[str, str]) -> None:
    doc = {"seeds": seeds, "config": to_dict(dataclasses.replace(cfg, seed=seeds[0], run_dir=str(run_dir))),
           "stopped": stopped}
    files.write_json(run_dir / MEMBERS_FILE, doc)


def train_members(cfg: Config, seeds: list[int] | None = None, resume: Path | str | None = None) -> Path:
    """Train ``seeds`` as one batch (module docstring); returns the run directory ``RUN/``.

    Args:
        cfg: the shared configuration (its ``seed`` is replaced per member); with ``resume``, the configuration
            stored by the batch (budgets, logging and device may differ, as for a single run).
        seeds: the members' seeds (new runs); with ``resume`` they are read from ``RUN/members.json``.
        resume: a batch's run directory to continue.

    Raises:
        ConfigError, CheckpointError, envs.EnvError: bad input, before anything is written.
        mbrl.runs.run_lock.RunLockedError: another process is writing ``RUN`` or a member's directory (held here while
            training).
    """
    stopped: dict[str, str] = {}
    if resume is not None:
        run_dir = Path(resume)
        doc = read_members(run_dir)
        if doc is None:
            raise CheckpointError(f"{str(run_dir)!r} has no {MEMBERS_FILE}; it is not a batch of seeds")
        seeds, stopped = doc["seeds"], {str(k): v for k, v in doc["stopped"].items()}
        run_lock.check_free(run_dir)
    else:
        check_seed_list(seeds or [])
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(dataclasses.replace(cfg, seed=seeds[0]))
        files.check_output_dir(run_dir, "run_dir")  # a file, a symlink loop or to nothing: before the lock's check
        run_lock.check_free(run_dir)
        if (run_dir / MEMBERS_FILE).exists():
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a batch of seeds; continue it with "
                              f"`dreamshift train --resume {run_dir}` or choose another run_dir")
        check_fresh_run_dir(run_dir)
    check_members(cfg, seeds)
    check_env_encoder(cfg)
    live = [s for s in seeds if str(s) not in stopped]
    if not live:
        raise ConfigError(f"every member of {str(run_dir)!r} has stopped ({', '.join(stopped.values())}); nothing "
                          f"to resume")
    member_cfgs, states = [], []
    for s in live:
        mcfg = dataclasses.replace(cfg, seed=s, run_dir=str(member_dir(run_dir, s)))
        validate(mcfg)  # the seed's own range (derived env seeds)
        mcfg, _, state = _prepare_run(mcfg, member_dir(run_dir, s) if resume is not None else None)
        member_cfgs.append(mcfg)
        states.append(state)
    if resume is not None:
        steps = {int(st["counters"]["env_steps"]) for st in states}
        if len(steps) > 1:
            raise CheckpointError(f"the members of {str(run_dir)!r} were checkpointed at different env steps "
                                  f"({sorted(steps)}); resume each member as its own run: dreamshift train "
                                  f"--resume {member_dir(run_dir, live[0])}")
    created = not run_dir.exists()
    try:
        _setup_and_run(cfg, run_dir, seeds, live, member_cfgs, states, stopped, resume is not None)
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, run_dir, created, live, resume is not None) from None
    return run_dir


def _interrupted(exc: KeyboardInterrupt, run_dir: Path, created: bool, live: list[int],
                 resumed: bool) -> TrainingInterrupted:
    """What a batch stopped by ``exc`` reports (as :func:`mbrl.runs.train.train` does for one run): the loop's
    :class:`TrainingInterrupted` when it saved the members; a new batch stopped before its first env step removes
    what it wrote (so the same command starts it again); a resumed one keeps its checkpoints as they were."""
    if not resumed:
        return interrupted_new_run(exc, run_dir, lambda: discard_new_batch(run_dir, created, live))
    first = first_interrupt(exc)
    if isinstance(first, TrainingInterrupted) and first.checkpoint is not None:
        return first
    signum = getattr(first, "signum", None)
    kept = interrupted_before_loop(member_dir(run_dir, live[0]), False, signum)
    return TrainingInterrupted(run_dir, kept.checkpoint, kept.env_steps, signum, saved=False)


def discard_new_batch(run_dir: Path, created: bool, seeds: list[int]) -> None:
    """Remove what a new batch stopped before its first checkpoint wrote: ``run_dir`` when this process created
    it, else (it was empty: :func:`mbrl.runs.train.check_fresh_run_dir`) its members file and member directories.
    Nothing is removed once a member holds a checkpoint."""
    if any(checkpoint.checkpoint_path(member_dir(run_dir, s)).exists() for s in seeds):
        return
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    (run_dir / MEMBERS_FILE).unlink(missing_ok=True)
    for s in seeds:
        shutil.rmtree(member_dir(run_dir, s), ignore_errors=True)


def _setup_and_run(cfg: Config, run_dir: Path, seeds: list[int], live: list[int], member_cfgs: list[Config],
                   states: list[dict[str, Any] | None], stopped: dict[str, str], resumed: bool) -> None:
    """:func:`train_members` after its checks: envs, the batch, replays and locks, then :func:`_run`."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    venvs = []
    with contextlib.ExitStack() as held:
        try:
            for mcfg in member_cfgs:
                venvs.append(envs.make_vector_env(cfg.env, cfg.num_envs, seed=mcfg.seed, **env_kwargs(mcfg)))
            action_dim = int(venvs[0].single_action_space.shape[0])
            batch = MemberBatch(cfg, live, action_dim, state_dim_of(venvs[0].single_observation_space), device)
            for agent, mcfg in zip(batch.members, member_cfgs, strict=True):
                agent.cfg = mcfg
            replays = [make_replay(mcfg, agent) for mcfg, agent in zip(member_cfgs, batch.members, strict=True)]
            torch.manual_seed(live[0])
            np.random.seed(live[0])
            for locked in (run_dir, *(Path(mcfg.run_dir) for mcfg in member_cfgs)):  # one writer: batch and members
                held.enter_context(run_lock.hold(locked))
            for mcfg in member_cfgs:
                remove_orphans(mcfg.run_dir)
            counters = []
            for mcfg, agent, replay, state in zip(member_cfgs, batch.members, replays, states, strict=True):
                mdir = Path(mcfg.run_dir)
                if state is not None:
                    counters.append(checkpoint.restore(mdir, state, agent, replay))
                else:
                    counters.append({"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0})
                    files.write_json(mdir / "config.json", {"config": to_dict(mcfg), "config_hash": model_hash(mcfg)})
            batch.bind()
            _write_members(run_dir, seeds, cfg, stopped)
        except BaseException:
            for v in venvs:
                v.close()
            raise
        _run(cfg, run_dir, batch, venvs, replays, counters, member_cfgs, seeds, stopped, resumed=resumed)


def _run(cfg: Config, run_dir: Path, batch: MemberBatch, venvs: list[Any], replays: list[Any],
         counters: list[dict[str, Any]], member_cfgs: list[Config], seeds: list[int], stopped: dict[str, str],
         resumed: bool) -> None:
    """The lock-step loop of the live members; checkpoints every live member at the end or on Ctrl-C, ``SIGTERM``
    or ``SIGUSR2`` (:mod:`mbrl.runs.signals`)."""
    loggers: list[Logger] = []
    runs: list[Collector] = []
    active = list(range(batch.size))

    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            for v in venvs:
                v.close()
            for logger in loggers:
                logger.close()

    def save_all() -> Path | None:
        last = None
        for e in active:
            last = checkpoint.save(member_cfgs[e].run_dir, batch.members[e], replays[e], counters[e])
        return last

    def stop(e: int, err: NonFiniteError) -> None:
        active.remove(e)
        batch.stop(e)
        seed = member_cfgs[e].seed
        stopped[str(seed)] = f"member seed={seed}: {err}"
        print(f"error: member seed={seed} stopped: {err}; the other members go on", file=sys.stderr, flush=True)
        _write_members(run_dir, seeds, cfg, stopped)

    with signals.stop_requests():
        try:
            for e, mcfg in enumerate(member_cfgs):
                loggers.append(Logger(Path(mcfg.run_dir), mcfg.steps, mcfg.wandb_mode, mcfg.wandb_project,
                                      to_dict(mcfg), mcfg.progress and e == 0,
                                      resume_step=counters[e]["env_steps"] if resumed else None,
                                      run_id=f"{run_dir.name}-seed-{mcfg.seed}-{model_hash(mcfg)}",
                                      group=mcfg.wandb_group or run_dir.name))
                runs.append(Collector(mcfg, venvs[e], batch.members[e], replays[e], counters[e], loggers[e],
                                      Path(mcfg.run_dir)))
            while True:
                lead = runs[active[0]]
                if lead.done:
                    break
                signals.check()  # SIGTERM/SIGUSR2: stop between whole steps; every live member is saved below
                for e in list(active):
                    try:
                        runs[e].collect()
                    except NonFiniteError as err:  # a NaN/inf action: diverged (its env never saw the action)
                        stop(e, err)
                if not active:
                    raise NonFiniteError(f"every member of {str(run_dir)!r} diverged ({'; '.join(stopped.values())})")
                lead = runs[active[0]]
                for e in range(batch.size):  # stopped members follow the schedule's counters (their batch rows idle)
                    if e not in active:
                        counters[e]["env_steps"] = lead.counters["env_steps"]
                        counters[e]["agent_steps"] = lead.counters["agent_steps"]
                due = lead.updates_due()
                if due:
                    announce_compile(cfg)
                for _ in range(due):
                    metrics = _update(cfg, batch, replays)
                    for e in range(batch.size):
                        counters[e]["updates"] += 1
                        runs[e].train_metrics.append({k: v[e] for k, v in metrics.items()})
                for e in list(active):
                    try:
                        runs[e].after_updates()
                    except NonFiniteError as err:
                        stop(e, err)
                if not active:
                    raise NonFiniteError(f"every member of {str(run_dir)!r} diverged ({'; '.join(stopped.values())})")
            save_all()
        except KeyboardInterrupt as exc:
            with signals.deferred_interrupts():  # a second Ctrl-C waits for the checkpoints and the cleanup
                try:
                    saved = save_all() if counters[0]["env_steps"] > 0 else None
                finally:
                    close()
                raise TrainingInterrupted(run_dir, saved, counters[0]["env_steps"],
                                          getattr(exc, "signum", None)) from None
        finally:
            close()


def _update(cfg: Config, batch: MemberBatch, replays: list[Any]) -> dict[str, torch.Tensor]:
    """One update of every member on a batch from its own replay (replay context: latents written back)."""
    device = batch.device
    data = stack_batches([r.sample(cfg.batch_size, cfg.batch_length, device, context=cfg.replay_context)
                          for r in replays])
    if not cfg.replay_context:
        return batch.update(data)
    out: dict[str, torch.Tensor] = {}
    metrics = batch.update(data, out=out)
    for e, replay in enumerate(replays):
        replay.write_latents(data["slot"][e], out["deter"][e], out["stoch"][e])
    return metrics
