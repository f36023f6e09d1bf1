"""The training loop: collect with the current policy in (vectorised) envs (an :class:`envs.driver.Driver`),
store in replay (:class:`ReplayWriter`, the one place that writes it), update the agent at the configured train
ratio, log, checkpoint, resume.

Units: ``cfg.steps`` counts env steps; each agent step of ``N`` parallel envs adds ``N * action_repeat`` env
steps. Updates happen so that ``updates * batch_size * batch_length ~= train_ratio * agent_steps_after_prefill``
(DreamerV3's train ratio, replayed agent steps per agent step).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs import files
from envs.driver import Driver, Episode, Step
from envs.errors import CheckpointError, ConfigError
from mbrl.agent import Agent, fetch_metrics, module_of, use_inductor_cache
from mbrl.config import (
    _RESUMABLE,
    _SECTIONS,
    Config,
    _convert,
    _field_types,
    allowed_keys,
    incompatible_keys,
    model_hash,
    parse_overrides,
    to_dict,
    validate,
)
from mbrl.logger import Logger
from mbrl.optim import NonFiniteError
from mbrl.policy import AgentPolicy
from mbrl.replay import Replay
from mbrl.runs import checkpoint, run_lock, signals
from mbrl.runs.evaluate.episodes import run_episodes
from mbrl.runtime import check_env_encoder, env_kwargs, resolve_device


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or ``SIGTERM``/``SIGUSR2``, :mod:`mbrl.runs.signals`) in :func:`run_loop`, after the checkpoint was
    saved: ``checkpoint`` is the path of its ``checkpoint.json`` written at ``env_steps`` (None when no env step
    was taken, so nothing was saved); ``saved`` is False when the stop came before the loop, so ``checkpoint``
    is the run's earlier one, kept as it was; ``signum`` is the signal that asked for the stop (None for
    Ctrl-C). A
    ``KeyboardInterrupt``, so callers that catch that keep working; the CLI turns it into one line naming the
    ``--resume`` command."""

    def __init__(self, run_dir: Path, checkpoint: Path | None, env_steps: int, signum: int | None = None,
                 saved: bool = True) -> None:
        super().__init__(f"interrupted at {env_steps} env steps")
        self.run_dir, self.checkpoint, self.env_steps = Path(run_dir), checkpoint, int(env_steps)
        self.signum, self.saved = signum, saved


def first_interrupt(exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """The :class:`TrainingInterrupted` that ``exc`` arrived on top of, else ``exc``.

    A second Ctrl-C that lands after the first one's checkpoint was written (while its ``TrainingInterrupted``
    is still on its way to the caller) raises a plain ``KeyboardInterrupt`` in a ``finally`` or ``except`` block
    on the way, whose ``__context__`` chain holds the first: that one says what was saved.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TrainingInterrupted):
            return cause
        seen.add(id(cause))
        cause = cause.__context__
    return exc


def state_dim_of(space: Any) -> int:
    """``D`` of an env's (single) observation space's ``state`` entry; 0 when it has none."""
    entry = getattr(space, "spaces", {}).get("state")
    return int(entry.shape[0]) if entry is not None else 0


def default_run_dir(cfg: Config) -> Path:
    """``runs/<env>-<encoder>-<size>-s<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env.replace(':', '_')}-{cfg.encoder}-{cfg.size}-s{cfg.seed}-{stamp}"


def _prepare_run(cfg: Config, resume: Path | None) -> tuple[Config, Path, dict[str, Any] | None]:
    """Validate everything that can fail before any file is written; returns (cfg, run_dir, ckpt state)."""
    check_env_encoder(cfg)  # env, obs, encoder, mode, decoder, encoder_path: EnvError/ConfigError before any write
    if resume is not None:
        files.check_run_dir(resume, "--resume", writable=True)  # a file or a read-only run: say so, before loading
        run_lock.check_free(resume)  # another process is training it: its pid, before anything else
        state = checkpoint.load_state(resume)
        checkpoint.check_resumable(resume, state)
        check_steps_grow(resume, cfg.steps, int(state["counters"]["env_steps"]))
        old = checkpoint.config_of(state)
        cfg.run_dir = str(resume)
        diff = incompatible_keys(old, cfg)
        if diff:
            shown = ", ".join(f"{k} (checkpoint {_get(old, k)!r}, now {_get(cfg, k)!r})" for k in diff[:5])
            raise ConfigError(f"cannot resume {str(resume)!r} with a different config: {shown}; only "
                              f"budgets/logging/device may change on resume")
        return cfg, Path(resume), state
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    files.check_output_dir(run_dir, "run_dir")  # a file, a file parent, a symlink loop, an unwritable directory
    run_lock.check_free(run_dir)
    files.check_output_dir(run_dir / checkpoint.CHECKPOINT_DIR, "run_dir")
    existing = checkpoint.checkpoint_path(run_dir)
    if existing.name in checkpoint.LEGACY_FILES:  # an older run (a pickle): say how to convert it, never open it
        raise CheckpointError(checkpoint.legacy_message(run_dir, existing))
    if existing.exists():
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a checkpoint; continue it with "
                          f"`dreamshift train --resume {run_dir}` or choose another run_dir")
    check_fresh_run_dir(run_dir)
    cfg.run_dir = str(run_dir)
    return cfg, run_dir, None


def check_fresh_run_dir(run_dir: Path | str, what: str = "run_dir") -> None:
    """A new run is written only into a directory that does not exist or is empty (a lock file left by a killed
    process does not count): a directory holding anything else (another program's ``config.json`` or
    ``metrics.jsonl``, a run killed before its first checkpoint) would be appended to or overwritten.

    Raises:
        ConfigError: ``run_dir`` holds files; the message names some of them.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    found = sorted(p.name for p in run_dir.iterdir() if p.name != run_lock.LOCK_FILE)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(f"{what} {str(run_dir)!r} already exists and holds files ({shown}) but no dreamshift "
                          f"checkpoint; a new run is written only into a new or empty directory: choose another "
                          f"run_dir, or move that one aside")


def check_steps_grow(run_dir: Path | str, steps: int, env_steps: int, what: str = "steps") -> None:
    """A resumed run trains on: its budget ``steps`` may not be below the ``env_steps`` it already reached (the
    checkpoint would be saved again with a budget it has passed).

    Raises:
        ConfigError: ``steps < env_steps``; the message says what is allowed.
    """
    if steps < env_steps:
        raise ConfigError(f"cannot resume {str(run_dir)!r} with {what}={steps}: it is already at {env_steps} env "
                          f"steps, and a resumed run only trains on; give {what} >= {env_steps} (e.g. "
                          f"{what}={2 * env_steps}), or use the run as it is")


def check_same_run_dir(run_dir: Path | str, given: str | None) -> None:
    """``run_dir=...`` given with ``--resume RUN``: a resumed run stays in its own directory, so ``given`` may
    only name ``run_dir`` itself (a full original command line repeats it).

    Raises:
        ConfigError: ``given`` names another directory.
    """
    if given is None or os.path.realpath(given) == os.path.realpath(run_dir):
        return
    raise ConfigError(f"--resume {str(run_dir)!r} with run_dir={given}: a resumed run continues in its own "
                      f"directory; drop run_dir=... (to continue elsewhere, copy the run directory there and "
                      f"resume the copy)")


def resume_config(run_dir: Path | str, overrides: dict[str, str] | list[str] | None = None) -> Config:
    """The configuration that continues ``run_dir``: the one stored in its checkpoint, with ``overrides`` applied
    to the keys a resume may change (budgets, logging, device: ``mbrl.config._RESUMABLE``). An override of any
    other key is accepted only when it repeats the stored value (so a full original command line with a larger
    ``steps`` still works). ``run_dir`` in the result is ``run_dir`` itself.

    Raises:
        CheckpointError: no run directory or checkpoint, or an older (pickle) checkpoint (only its
            ``checkpoint.json`` is read here).
        ConfigError: an unknown key, a bad value, overrides that would change the run (all named in one
            message), or ``run_dir=`` naming another directory (:func:`check_same_run_dir`).
    """
    given = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    allowed = set(allowed_keys())
    unknown = [k for k in given if k not in allowed]
    if unknown:
        top = ", ".join(k for k in allowed_keys() if "." not in k)
        raise ConfigError(f"unknown config key {unknown[0]!r}; allowed: {top}, "
                          f"{', '.join(f'{s}.*' for s in _SECTIONS)} (`dreamshift config` prints them)")
    files.check_run_dir(run_dir, "--resume")
    check_same_run_dir(run_dir, given.pop("run_dir", None))
    stored = checkpoint.read_config(run_dir)
    cfg = copy.deepcopy(stored)
    changed = []
    for key, raw in given.items():
        owner: Any = cfg
        name = key
        if "." in key:
            sec, name = key.split(".", 1)
            owner = getattr(cfg, sec)
        value = _convert(key, raw, _field_types(type(owner))[name])
        if key in _RESUMABLE:
            setattr(owner, name, value)
        elif value != getattr(owner, name):
            changed.append(f"{key}={raw} (the run has {getattr(owner, name)!r})")
    if changed:
        may = ", ".join(sorted(_RESUMABLE - {"run_dir"}))
        raise ConfigError(f"cannot resume {str(run_dir)!r} with {'; '.join(changed)}: a resumed run keeps the "
                          f"settings stored in its checkpoint; only budgets, logging and device may change ({may})")
    cfg.run_dir = str(run_dir)
    validate(cfg)
    return cfg


def _check_cache_memory(cfg: Config, feature_dim: int) -> None:
    """Refuse a feature cache that cannot fit in half the machine's memory (float16 per stored step)."""
    if not feature_dim:
        return
    steps = min(cfg.replay_capacity, cfg.steps // cfg.action_repeat + cfg.num_envs * 4)
    need = steps * feature_dim * 2
    try:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > avail // 2:
        raise ConfigError(f"the frozen-feature cache needs {need / 2**30:.1f} GiB ({feature_dim} float16 features x "
                          f"{steps} steps) but the machine has {avail / 2**30:.1f} GiB; use encoder_feature=cls or "
                          f"mean, a smaller replay_capacity, or encoder_cache=false")


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def train(cfg: Config, resume: Path | str | None = None) -> Path:
    """Train an agent; returns the run directory (config, metrics.jsonl, checkpoint/).

    Args:
        cfg: validated configuration (:func:`mbrl.config.build_config`).
        resume: run directory of a killed run to continue; its config must match ``cfg`` except for budgets,
            logging and device (:func:`resume_config` builds that ``cfg`` from the run itself).

    Raises:
        ConfigError, CheckpointError, envs.EnvError: bad input, before anything is written.
        mbrl.runs.run_lock.RunLockedError: another process is writing ``run_dir`` (its ``.lock``, held here while
            training).
    """
    cfg, run_dir, state = _prepare_run(cfg, Path(resume) if resume is not None else None)
    created = not run_dir.exists()
    try:
        _train(cfg, run_dir, state)
    except KeyboardInterrupt as exc:
        if state is None:
            raise interrupted_new_run(exc, run_dir, lambda: discard_new_run(run_dir, created)) from None
        first = first_interrupt(exc)
        if isinstance(first, TrainingInterrupted):  # the loop saved its checkpoint
            raise first from None
        with signals.deferred_interrupts():  # before the loop (building the agent, loading the replay)
            raise interrupted_before_loop(run_dir, False, getattr(exc, "signum", None)) from None
    return run_dir


def interrupted_new_run(exc: KeyboardInterrupt, run_dir: Path, discard: Callable[[], None]) -> TrainingInterrupted:
    """What a new run (one agent, a batch of seeds, an adaptation) stopped by ``exc`` reports: the loop's
    :class:`TrainingInterrupted` when it saved a checkpoint; else ``discard()`` removes what the run wrote (a
    further Ctrl-C waits for it, then is dropped: the run is stopping already), so the same command starts it
    again, and the interrupt says nothing was saved."""
    first = first_interrupt(exc)
    if isinstance(first, TrainingInterrupted) and first.checkpoint is not None:
        return first
    try:
        with signals.deferred_interrupts():
            discard()
    except KeyboardInterrupt:
        pass
    return TrainingInterrupted(run_dir, None, 0, getattr(first, "signum", None))


def discard_new_run(run_dir: Path, created: bool) -> None:
    """Remove what a new run stopped before its first checkpoint wrote (``run_dir`` itself when this process
    ``created`` it; else its ``config.json``, ``metrics.jsonl`` and empty ``checkpoint/``), so the same command
    can start it again (a directory holding files without a checkpoint is refused)."""
    if checkpoint.checkpoint_path(run_dir).exists():
        return
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in ("config.json", "metrics.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (run_dir / checkpoint.CHECKPOINT_DIR).rmdir()


def interrupted_before_loop(run_dir: Path, new: bool, signum: int | None) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` of a run stopped before its training loop: a resumed run keeps its
    checkpoint as it was (``saved`` False), a new run has none."""
    if new:
        return TrainingInterrupted(run_dir, None, 0, signum)
    ckpt = checkpoint.checkpoint_path(run_dir)
    try:
        steps = int(checkpoint.read_doc(run_dir)["counters"]["env_steps"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return TrainingInterrupted(run_dir, None, 0, signum, saved=False)
    return TrainingInterrupted(run_dir, ckpt, steps, signum, saved=False)


def _train(cfg: Config, run_dir: Path, state: dict[str, Any] | None) -> None:
    """:func:`train` after its checks: build, restore or start, and run the loop."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    venv = envs.make_vector_env(cfg.env, cfg.num_envs, seed=cfg.seed, **env_kwargs(cfg))
    with contextlib.ExitStack() as held:
        try:
            action_dim = int(venv.single_action_space.shape[0])
            agent = Agent(cfg, action_dim, state_dim_of(venv.single_observation_space)).to(device)
            replay = make_replay(cfg, agent)
            counters: dict[str, Any] = {"env_steps": 0, "agent_steps": 0, "updates": 0, "episodes": 0}
            held.enter_context(run_lock.hold(run_dir))  # one writer per run directory (creates it)
            remove_orphans(run_dir)  # only now: no other writer can be mid-write in it
            if state is not None:
                counters = checkpoint.restore(run_dir, state, agent, replay)
            else:
                files.write_json(run_dir / "config.json", {"config": to_dict(cfg), "config_hash": model_hash(cfg)})
        except BaseException:
            venv.close()
            raise
        run_loop(cfg, venv, agent, replay, counters, run_dir, device, resumed=state is not None)


def remove_orphans(run_dir: Path | str) -> list[Path]:
    """Remove the temp files of interrupted atomic writes (a process killed while saving a checkpoint) from
    ``RUN/checkpoint/`` (:func:`envs.files.remove_temp_files`: only files named as ours) and the checkpoint files
    its ``checkpoint.json`` does not name (:func:`mbrl.runs.checkpoint.remove_unnamed`: a save killed half-way),
    with a note on stderr naming them; returns them. Call it while holding the run's lock
    (:func:`mbrl.runs.run_lock.hold`)."""
    ckpt_dir = Path(run_dir) / checkpoint.CHECKPOINT_DIR
    removed = files.remove_temp_files(ckpt_dir) + checkpoint.remove_unnamed(run_dir)
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"note: removed {len(removed)} temporary file(s) left in {str(ckpt_dir)!r} by an interrupted write: "
              f"{names}", file=sys.stderr, flush=True)
    return removed


def make_replay(cfg: Config, agent: Agent) -> Replay:
    """An empty replay buffer for ``agent`` (feature cache when the agent caches encoder features).

    Raises:
        ConfigError: the feature cache would not fit in half the machine's memory.
    """
    image_shape = (cfg.image_size, cfg.image_size, 3) if agent.wm.encoder is not None else None
    feature_dim = agent.wm.encoder.feature_dim if agent.caches_features else 0
    _check_cache_memory(cfg, feature_dim)
    m = cfg.model
    return Replay(cfg.replay_capacity, cfg.num_envs, image_shape, agent.action_dim, seed=cfg.seed,
                  feature_dim=feature_dim, state_dim=agent.state_dim,
                  latent=(m.deter, m.stoch, m.classes) if cfg.replay_context else None)


# --- what the training loop writes into replay (besides the env's observations), in one place --------------------

def policy_extras(extra: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """What replay stores with a collected step from the policy's outputs (:meth:`Agent.act` ``out``): the frozen
    encoder's ``features`` (float16) and, with ``replay_context``, the policy-time posterior ``deter``/``stoch``.
    Arrays have the leading env dim ``N``."""
    out = {k: v.cpu().numpy() for k, v in extra.items()}
    if "features" in out:
        out["features"] = out["features"].astype(np.float16)
    return out


def train_on_replay(cfg: Config, agent: Agent, replay: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """One update of ``agent`` on a batch sampled from ``replay``; with ``replay_context`` K >= 1 the batch starts
    from stored latents (K more steps sampled) and the update's posterior latents of the batch's steps are written
    back into replay (reference code: after each update, the replayed steps' entries; on a GPU this copies the
    posterior to the host once per update). Returns the update's metrics (:meth:`Agent.train_step`)."""
    batch = replay.sample(cfg.batch_size, cfg.batch_length, device, context=cfg.replay_context)
    if not cfg.replay_context:
        return agent.update(batch)
    out: dict[str, torch.Tensor] = {}
    metrics = agent.update(batch, out=out)
    replay.write_latents(batch["slot"], out["deter"], out["stoch"])
    return metrics


def run_loop(cfg: Config, venv: Any, agent: Agent, replay: Any, counters: dict[str, Any], run_dir: Path,
             device: torch.device, resumed: bool = False, random_prefill: bool = True) -> None:
    """Collect and update until ``counters["env_steps"] >= cfg.steps`` with logging and periodic checkpoints,
    then write the final checkpoint; on Ctrl-C, ``SIGTERM`` or ``SIGUSR2`` (:mod:`mbrl.runs.signals`: checked between
    steps, so the current update finishes) a checkpoint is written first (when any step was taken) and
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) is raised; a second Ctrl-C waits until that checkpoint
    is written and ``venv`` and the logger are closed (:func:`mbrl.runs.signals.deferred_interrupts`). Closes ``venv``
    and the logger.

    Args:
        venv: vector env (``obs["image"]`` ``(N, H, W, 3)`` uint8, SAME_STEP autoreset, :mod:`envs.vector`).
        replay: :class:`~mbrl.replay.Replay` or anything with its interface (e.g.
            :class:`~mbrl.replay.MixedReplay`).
        counters: ``env_steps``, ``agent_steps``, ``updates``, ``episodes`` (updated in place; extra keys are
            stored in the checkpoint as they are).
        resumed: the run continues from a checkpoint (metrics after ``counters["env_steps"]`` are dropped).
        random_prefill: the first ``cfg.prefill`` env steps take uniform random actions (training from
            scratch); False acts with the policy throughout and only delays updates (adaptation).
    """
    logger = None
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            venv.close()
            if logger is not None:
                logger.close()

    with signals.stop_requests():
        try:
            logger = Logger(run_dir, cfg.steps, cfg.wandb_mode, cfg.wandb_project, to_dict(cfg), cfg.progress,
                            resume_step=counters["env_steps"] if resumed else None,
                            run_id=f"{run_dir.name}-{model_hash(cfg)}", group=cfg.wandb_group)
            _loop(cfg, venv, agent, replay, counters, logger, run_dir, device, random_prefill)
            checkpoint.save(run_dir, agent, replay, counters)
        except KeyboardInterrupt as exc:
            with signals.deferred_interrupts():  # a second Ctrl-C waits for the checkpoint and the cleanup
                try:
                    saved = checkpoint.save(run_dir, agent, replay, counters) if counters["env_steps"] > 0 else None
                finally:
                    close()
                raise TrainingInterrupted(run_dir, saved, counters["env_steps"],
                                          getattr(exc, "signum", None)) from None
        finally:
            close()


class ReplayWriter:
    """The one place where training writes experience to replay: a step and an episode callback of
    :class:`envs.driver.Driver`, in the replay layout of :mod:`mbrl.replay` (each observation with the action
    taken from it and the reward received on arriving at it).

    Per driver step (:meth:`step`): one ``replay.add_batch`` of the ``N`` current observations (the agent's
    ``obs_keys``), ``action`` ``(N, A)`` float32, ``reward`` ``(N,)`` float32, ``is_first``, ``is_terminal``
    (all False: an observation that is acted on is never terminal) and what the policy's ``outs`` carry
    (:func:`policy_extras`: cached encoder ``features`` ``(N, F)`` float16; with ``replay_context`` the
    policy-time posterior ``deter``/``stoch``). Per ended episode (:meth:`episode`):
    ``replay.add(i, ...)`` of its last observation with a zero action, its reward and ``is_terminal``; cached
    features of that frame are computed here (the policy never saw it).
    """

    def __init__(self, replay: Any, agent: Agent) -> None:
        self.replay, self.agent = replay, agent
        self.keys = agent.wm.obs_keys

    def step(self, step: Step) -> None:
        """Store the current observations of every env with the action taken from them."""
        n = len(step.is_first)
        data = {**{k: step.obs[k] for k in self.keys}, "action": step.action, "reward": step.reward,
                "is_first": step.is_first, "is_terminal": np.zeros(n, bool)}
        data.update(policy_extras(step.outs))
        self.replay.add_batch(data)

    def episode(self, episode: Episode) -> None:
        """Store the last observation of an ended episode (never acted on: zero action)."""
        final = episode.last_obs
        last = {**{k: final[k] for k in self.keys}, "action": np.zeros(self.agent.action_dim, np.float32),
                "reward": episode.last_reward, "is_first": False, "is_terminal": episode.terminated}
        if self.agent.caches_features:
            feats = self.agent.encode_features(torch.from_numpy(final["image"][None]))
            last["features"] = feats[0].cpu().numpy().astype(np.float16)
        self.replay.add(episode.index, last)


_ANNOUNCED: set[int] = set()


def announce_compile(cfg: Config) -> None:
    """Say once per process, before the first update of a ``compile=on`` run, that it compiles (minutes on a CPU,
    during which nothing else is printed)."""
    if cfg.compile != "on" or 0 in _ANNOUNCED:
        return
    _ANNOUNCED.add(0)
    cache = use_inductor_cache()
    print(f"compiling the update (compile=on): the first update takes minutes on a CPU, less from the inductor cache "
          f"in {cache}…", file=sys.stderr, flush=True)


def diverged(agent: Agent, counters: dict[str, Any], run_dir: Path) -> NonFiniteError:
    """The error that stops a run whose policy produced a NaN/inf action: what went non-finite first (an
    optimiser's loss or gradient: module and update; else the weights: module and tensor), the env step, and
    where the last good checkpoint is (nothing is saved after this)."""
    at = f" at env step {counters['env_steps']} (update {counters['updates']})"
    try:
        agent.check_finite()
        agent.check_weights()
        name, weight = max(((k, t) for k, t in agent.state_dict().items() if t.is_floating_point()),
                           key=lambda kv: float(kv[1].abs().max()) if kv[1].numel() else 0.0)
        cause = (f"the policy's action is NaN/inf (weights finite, the largest {float(weight.abs().max()):.3g} in "
                 f"the {module_of(name)}: a learning rate too large?)")
    except NonFiniteError as err:
        cause = str(err).split("; the last checkpoint")[0]
    ckpt = checkpoint.checkpoint_path(run_dir)
    kept = f"the last checkpoint is kept: {str(ckpt)!r}" if ckpt.exists() else \
        "no checkpoint was written before it; train again into a new run_dir"
    return NonFiniteError(f"training diverged{at}: {cause}; {kept}")


class Collector:
    """One agent's side of the training loop: collection (an :class:`envs.driver.Driver` writing through
    :class:`ReplayWriter`), episode records, and at its schedule the train log, checkpoints and periodic
    evaluation. The updates themselves are the caller's (:func:`_loop` for one agent, :mod:`mbrl.runs.train_members`
    for a batch of seeds): :meth:`updates_due` says how many, :attr:`train_metrics` takes their metrics.

    A NaN/inf action from the policy (after the prefill) stops :meth:`collect` with
    :class:`mbrl.optim.NonFiniteError` (:func:`diverged`) before the env sees it: nothing is saved after it.
    """

    def __init__(self, cfg: Config, venv: Any, agent: Agent, replay: Any, counters: dict[str, Any],
                 logger: Logger, run_dir: Path, random_prefill: bool = True) -> None:
        self.cfg, self.agent, self.replay, self.counters = cfg, agent, replay, counters
        self.logger, self.run_dir = logger, run_dir
        n, a = cfg.num_envs, agent.action_dim
        rng = np.random.default_rng(cfg.seed + counters["agent_steps"])
        agent_policy = AgentPolicy(agent, n, "sample", outs=True)
        device = agent.device

        def policy(obs: dict[str, np.ndarray], is_first: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
            action, outs = agent_policy(obs, is_first)  # always called: the policy state follows every frame
            if random_prefill and counters["env_steps"] < cfg.prefill:
                action = rng.uniform(-1, 1, (n, a)).astype(np.float32)
                agent_policy.state = (agent_policy.state[0], torch.from_numpy(action).to(device))
            elif not np.isfinite(action).all():  # diverged: stop before the env sees it (one line, no traceback)
                raise diverged(agent, counters, run_dir)
            return action, outs

        writer = ReplayWriter(replay, agent)
        self.driver = Driver(venv, policy, on_step=[writer.step], on_episode=[writer.episode])
        self.driver.reset(seed=cfg.seed + 7919 * counters["episodes"])
        self.last_return: float | None = counters.get("last_return")
        self.prefill_agent = cfg.prefill // (cfg.action_repeat * n) * n
        self.next_log = (counters["env_steps"] // cfg.log_every + 1) * cfg.log_every
        self.next_save = (counters["env_steps"] // cfg.save_every + 1) * cfg.save_every if cfg.save_every else None
        self.next_eval = (counters["env_steps"] // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
        self.train_metrics: list[dict[str, torch.Tensor]] = []
        self.log_start = (counters["env_steps"], counters["updates"])

    @property
    def done(self) -> bool:
        return self.counters["env_steps"] >= self.cfg.steps

    def collect(self) -> None:
        """One driver step of every env (``N * action_repeat`` env steps) and the records of ended episodes."""
        cfg, counters = self.cfg, self.counters
        ended = self.driver.step()
        counters["agent_steps"] += cfg.num_envs
        counters["env_steps"] += cfg.num_envs * cfg.action_repeat
        for episode in ended:
            counters["episodes"] += 1
            self.last_return = episode.record["return"]
            counters["last_return"] = self.last_return
            record = {"return": self.last_return, "length": episode.record["steps"] * cfg.action_repeat}
            if "success" in episode.record:
                record["success"] = episode.record["success"]
            self.logger.log("episode", counters["env_steps"], counters["agent_steps"], record)

    def updates_due(self) -> int:
        """How many updates the train ratio asks for now (0 during the prefill or before replay can be sampled)."""
        cfg, counters = self.cfg, self.counters
        if counters["env_steps"] < cfg.prefill or not self.replay.can_sample(cfg.batch_length + cfg.replay_context):
            return 0
        batch_steps = cfg.batch_size * cfg.batch_length
        due = int(max(0, counters["agent_steps"] - self.prefill_agent) * cfg.train_ratio / batch_steps) + 1
        return max(0, due - counters["updates"])

    def after_updates(self) -> None:
        """At their schedule: the train log record, a checkpoint, a periodic evaluation.

        Raises:
            mbrl.optim.NonFiniteError: the agent met a non-finite loss or gradient, or a weight is NaN/inf
                (checked before logging and saving; the previous checkpoint stays the last good one).
        """
        cfg, counters, agent = self.cfg, self.counters, self.agent
        if counters["env_steps"] >= self.next_log or counters["env_steps"] >= cfg.steps:
            agent.check_finite()
            agent.check_weights(f" at env step {counters['env_steps']} (update {counters['updates']})")
            rates = self.logger.update_progress(counters["env_steps"], counters["updates"], self.last_return)
            record = fetch_metrics(self.train_metrics)
            span = counters["env_steps"] - self.log_start[0]
            record.update(rates, updates=counters["updates"], replay_size=len(self.replay),
                          updates_per_env_step=(counters["updates"] - self.log_start[1]) / span if span else 0.0)
            self.log_start = (counters["env_steps"], counters["updates"])
            self.logger.log("train", counters["env_steps"], counters["agent_steps"], record)
            self.train_metrics.clear()
            self.next_log += cfg.log_every
        if self.next_save is not None and counters["env_steps"] >= self.next_save:
            agent.check_finite()
            checkpoint.save(self.run_dir, agent, self.replay, counters)
            self.next_save += cfg.save_every
        if self.next_eval is not None and counters["env_steps"] >= self.next_eval:
            results = run_episodes(agent, cfg, cfg.eval_episodes, seed=10_000 + cfg.seed)
            returns = [r["return"] for r in results]
            self.logger.log("eval", counters["env_steps"], counters["agent_steps"],
                            {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
                             "episodes": len(returns)})
            self.next_eval += cfg.eval_every


def _loop(cfg: Config, venv: Any, agent: Agent, replay: Any, counters: dict[str, Any], logger: Logger,
          run_dir: Path, device: torch.device, random_prefill: bool = True) -> None:
    """Collection and the schedule of one agent (:class:`Collector`), with its updates at the train ratio."""
    run = Collector(cfg, venv, agent, replay, counters, logger, run_dir, random_prefill)
    while not run.done:
        signals.check()  # SIGTERM/SIGUSR2: stop here, between whole steps (run_loop saves the checkpoint)
        run.collect()
        due = run.updates_due()
        if due:
            announce_compile(cfg)
        for _ in range(due):
            run.train_metrics.append(train_on_replay(cfg, agent, replay, device))
            counters["updates"] += 1
        run.after_updates()
