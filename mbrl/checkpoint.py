"""Run checkpoints: agent weights, optimiser states, RNG states, step counters, config and replay.

Layout in ``RUN_DIR/checkpoint/``: ``replay-<n>.npz`` (``n`` = steps ever added to replay, which counts each
episode's final observation too) is written first, then ``agent.pt``, which
names that replay file; older replay files are removed last. Both writes are atomic, so a run killed at any
moment resumes from a consistent (agent, replay) pair.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl import io
from mbrl.agent import Agent
from mbrl.config import Config, from_dict, to_dict
from mbrl.errors import CheckpointError
from mbrl.optim import NonFiniteError
from mbrl.replay import Replay

CHECKPOINT_DIR = "checkpoint"
AGENT_FILE = "agent.pt"


def checkpoint_path(run_dir: Path | str) -> Path:
    """``RUN_DIR/checkpoint/agent.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / AGENT_FILE


def save(run_dir: Path | str, agent: Agent, replay: Replay | None, counters: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; returns the path of ``agent.pt``.

    Args:
        counters: step counters of the loop (``env_steps``, ``agent_steps``, ``updates``, episodes, ...).

    Raises:
        mbrl.optim.NonFiniteError: an optimiser met a non-finite loss/gradient or a weight is NaN/inf; nothing
            is written, so the previous checkpoint stays the last good one.
    """
    agent.check_finite()
    bad = [name for name, p in agent.state_dict().items() if p.is_floating_point() and not bool(p.isfinite().all())]
    if bad:
        raise NonFiniteError(f"non-finite weights in {bad[0]} (and {len(bad) - 1} more tensors); not saving a "
                             f"checkpoint, the previous one in {str(run_dir)!r} stays loadable")
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    replay_name = None
    if replay is not None:
        replay_name = f"replay-{replay.total_added}.npz"
        replay.save(ckpt_dir / replay_name)
    state = {
        "config": to_dict(agent.cfg),
        "action_dim": agent.action_dim,
        "state_dim": agent.state_dim,
        "agent": agent.state_dict(),
        "optim": agent.optim_state(),
        "counters": dict(counters),
        "replay_file": replay_name,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "replay": replay.rng.bit_generator.state if replay is not None else None},
    }
    path = io.torch_save(ckpt_dir / AGENT_FILE, state)
    for old in ckpt_dir.glob("replay-*.npz"):
        if old.name != replay_name:
            old.unlink()
    return path


def load_state(run_dir: Path | str) -> dict[str, Any]:
    """Read ``agent.pt`` of a run.

    Raises:
        CheckpointError: the run directory or its checkpoint is missing or unreadable (the message says which
            file was looked for).
    """
    path = checkpoint_path(run_dir)
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise CheckpointError(f"{str(run_dir)!r} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; train first with `dreamshift train` "
                              f"or pass a run directory that has one")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {exc}") from None


def config_of(state: dict[str, Any]) -> Config:
    """The :class:`Config` stored in a checkpoint state."""
    return from_dict(state["config"])


def build_agent(state: dict[str, Any], cfg: Config | None = None) -> Agent:
    """A fresh (untrained) :class:`Agent` of the architecture a checkpoint state describes (``cfg`` defaults to
    the stored config); load the weights with ``agent.load_state_dict(state["agent"])``."""
    return Agent(cfg if cfg is not None else config_of(state), state["action_dim"], state.get("state_dim", 0))


def restore(run_dir: Path | str, state: dict[str, Any], agent: Agent, replay: Replay | None) -> dict[str, Any]:
    """Load weights, optimiser and RNG states (and the replay, if given) into existing objects.

    Returns:
        the stored counters.
    """
    agent.load_state_dict(state["agent"])
    agent.load_optim_state(state["optim"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if replay is not None and state["replay_file"]:
        path = Path(run_dir) / CHECKPOINT_DIR / state["replay_file"]
        if not path.is_file():
            raise CheckpointError(f"checkpoint names replay file {str(path)!r}, which is missing")
        replay.load(path)
        if state["rng"]["replay"] is not None:
            replay.rng.bit_generator.state = state["rng"]["replay"]
    return dict(state["counters"])
