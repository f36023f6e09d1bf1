"""The rollouts of evaluation: an agent's episodes with fixed episode seeds (:func:`run_episodes`) and the CPU
threads they run with. :mod:`mbrl.runs.evaluate.suite` evaluates a run's checkpoint with them, clean (the ``none:0``
condition, ``RUN_DIR/eval/clean.json``) or under every condition of a shift suite (``run_episodes(..., wrap=...)``).

Every evaluation (clean, suites, sweep trials, adaptation reports, alpha sweeps, continual stages, the periodic
evaluation of training) rolls out through :func:`run_episodes`, the single place where evaluation is made
reproducible and where its CPU threads are set:

- episode ``i`` resets the env with seed ``seed + i`` (shifts derive their randomness from it) and runs under
  :func:`seeded_rng` with :func:`episode_rng_seed` of that episode seed: torch's (CPU and the agent's device),
  numpy's and Python's global generators are forked and seeded, so the RSSM's posterior samples and (``mode``
  ``train``) the policy's samples are a function of the episode alone, and the caller's streams (training's) are
  left exactly as they were;
- torch's CPU threads follow :func:`resolve_threads` for the duration (and are restored afterwards).

The same checkpoint, seed and thread count therefore give the same records, bit for bit, on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import numpy as np
import torch

import envs
from envs.driver import Driver
from envs.errors import ConfigError
from mbrl.agent import Agent
from mbrl.config import Config
from mbrl.optim import NonFiniteError
from mbrl.policy import AgentPolicy
from mbrl.runtime import env_kwargs

EVAL_SEED_OFFSET = 10_000  # episode seeds of evaluation never coincide with training seeds
_RNG_SALT = 0x45564C  # separates the torch/numpy seeds of an episode from its env seed


def resolve_threads(cfg: Config | None = None, threads: int | None = None, workers: int = 1) -> int:
    """torch CPU threads of an evaluation: ``threads`` if given (> 0), else the run's ``cfg.threads`` if > 0,
    else ``os.cpu_count() // workers`` (at least 1).

    Args:
        workers: evaluations the caller runs in parallel on this machine (they share the cores).

    Raises:
        ConfigError: ``threads`` < 0 or ``workers`` < 1.
    """
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = the run's threads), got {threads}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if threads:
        return int(threads)
    if cfg is not None and getattr(cfg, "threads", 0) > 0:
        return int(cfg.threads)
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def eval_threads(cfg: Config | None = None, threads: int | None = None, workers: int = 1) -> Iterator[int]:
    """Run the block with torch's CPU threads set to :func:`resolve_threads`; the previous count is restored on
    exit. Yields the thread count."""
    n = resolve_threads(cfg, threads, workers)
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def episode_rng_seed(episode_seed: int) -> int:
    """The seed of torch's, numpy's and Python's generators for the evaluation episode with env seed
    ``episode_seed`` (a hash of it, in ``[0, 2**63)``)."""
    ss = np.random.SeedSequence([int(episode_seed) % 2**64, _RNG_SALT])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's CPU generator, the generator of ``device`` (when an accelerator), numpy's global
    generator and Python's ``random`` seeded with ``seed``; all of them are restored on exit, so the caller's
    streams neither influence the block nor are advanced by it."""
    dev = torch.device(device)
    accel = dev.type != "cpu"
    index = 0
    if accel:
        module = getattr(torch, dev.type)
        index = dev.index if dev.index is not None else (module.current_device()
                                                         if hasattr(module, "current_device") else 0)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[index] if accel else [], device_type=dev.type if accel else "cuda"):
            torch.default_generator.manual_seed(seed)
            if dev.type == "cuda":
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            elif accel:
                module.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def run_episodes(agent: Agent, cfg: Config, episodes: int, seed: int, mode: str | None = None,
                 wrap: Callable[[gymnasium.Env], gymnasium.Env] | None = None,
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Run ``episodes`` episodes with the agent's policy on one env (:meth:`envs.driver.Driver.episode`), episode
    ``i`` seeded ``seed + i``: the env reset and every random draw of the episode (:func:`seeded_rng`), so the
    records are a function of the agent, ``seed``, ``mode`` and ``wrap`` only, and the global RNG streams are
    left untouched.

    Args:
        mode: how the policy acts (:meth:`mbrl.agent.Agent.act`): ``sample`` (draws, seeded per episode: the
            reference code's evaluation) or ``mode`` (deterministic); default the run's ``cfg.eval_policy``.
        wrap: applied to the env before the first episode (e.g. a :class:`shifts.base.ShiftWrapper` for a
            visual shift); the wrapped env is closed at the end.
        threads: torch CPU threads during the rollout (:func:`resolve_threads`: default the run's
            ``cfg.threads``, else all cores); restored afterwards.

    Returns:
        ``[{"episode_seed": int, "return": float, "length": env steps}, ...]``, plus ``success`` (max over
        the episode) for envs that report it.

    Raises:
        mbrl.optim.NonFiniteError: the policy gave a NaN/inf action (the env never gets it).
    """
    out = []
    with eval_threads(cfg, threads):
        env = envs.make_env(cfg.env, **env_kwargs(cfg))
        try:
            if wrap is not None:
                env = wrap(env)
            policy = AgentPolicy(agent, 1, cfg.eval_policy if mode is None else mode)

            def act(obs: dict[str, np.ndarray], is_first: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
                action, outs = policy(obs, is_first)
                if not np.isfinite(action).all():  # diverged (finite but huge) weights: never hand the env a NaN
                    raise NonFiniteError(f"the agent's action is NaN/inf (episode seed {seed + len(out)}): its "
                                         f"weights diverged; evaluate an earlier checkpoint of the run")
                return action, outs

            driver = Driver(env, act)
            for i in range(episodes):
                with seeded_rng(episode_rng_seed(seed + i), agent.device):
                    policy.reset()
                    record = driver.episode(seed + i).record
                out.append(_record(record))
        finally:
            env.close()
    return out


def _record(record: dict[str, Any]) -> dict[str, Any]:
    """The evaluation record of a driver's episode record: ``episode_seed``, ``return``, ``length`` (env steps)
    and ``success`` when the env reports it."""
    out: dict[str, Any] = {"episode_seed": record["seed"], "return": record["return"], "length": record["length"]}
    if "success" in record:
        out["success"] = record["success"]
    return out
