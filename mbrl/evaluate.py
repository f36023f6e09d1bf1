"""Evaluation of a trained run on the clean env: returns per episode with fixed episode seeds, written
atomically to ``RUN_DIR/eval/clean.json``. Under graded visual shifts: :mod:`shifts.evaluate`
(``dreamshift evaluate RUN_DIR --suite NAME``) runs the same episodes through ``run_episodes(..., wrap=...)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

import envs
from encoders.registry import resolve_mode
from mbrl import checkpoint, io
from mbrl.agent import Agent
from mbrl.config import Config, model_hash
from mbrl.errors import ConfigError
from mbrl.train import env_kwargs, resolve_device

EVAL_SEED_OFFSET = 10_000  # episode seeds of evaluation never coincide with training seeds


def run_episodes(agent: Agent, cfg: Config, episodes: int, seed: int, mode: str = "eval",
                 wrap: Callable[[gymnasium.Env], gymnasium.Env] | None = None) -> list[dict[str, Any]]:
    """Run ``episodes`` episodes with the agent's policy on one env, episode ``i`` seeded ``seed + i``.

    Args:
        mode: ``eval`` acts with the policy mean, ``train`` samples.
        wrap: applied to the env before the first episode (e.g. a :class:`shifts.base.ShiftWrapper` for a
            visual shift); the wrapped env is closed at the end.

    Returns:
        ``[{"episode_seed": int, "return": float, "length": env steps}, ...]``, plus ``success`` (max over
        the episode) for envs that report it.
    """
    env = envs.make_env(cfg.env, **env_kwargs(cfg))
    out = []
    try:
        if wrap is not None:
            env = wrap(env)
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            state = agent.initial_state(1)
            is_first = torch.ones(1, dtype=torch.bool)
            total, length, done, success = 0.0, 0, False, None
            while not done:
                obs_t = {k: torch.from_numpy(obs[k][None]) for k in agent.wm.obs_keys}
                action, state = agent.act(obs_t, is_first, state, mode)
                obs, reward, term, trunc, info = env.step(action[0].cpu().numpy())
                total += float(reward)
                length = int(info["env_steps"])
                if "success" in info:
                    success = max(success or 0.0, float(info["success"]))
                done = term or trunc
                is_first = torch.zeros(1, dtype=torch.bool)
            record = {"episode_seed": seed + i, "return": total, "length": length}
            if success is not None:
                record["success"] = success
            out.append(record)
    finally:
        env.close()
    return out


def evaluate(run_dir: Path | str, episodes: int = 10, seed: int = 0, device: str = "auto",
             alpha: float | None = None) -> Path:
    """Evaluate the checkpoint of ``run_dir`` on its clean env; returns the path of ``eval/clean.json``
    (``eval/clean-alpha<alpha>.json`` when ``alpha`` is given: the encoder merged with its pretrained weights,
    see :mod:`mbrl.merge`).

    Raises:
        CheckpointError: no checkpoint in ``run_dir``.
        ConfigError: ``episodes`` < 1.
    """
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    state = checkpoint.load_state(run_dir)
    cfg = checkpoint.config_of(state)
    if alpha is None:
        agent = checkpoint.build_agent(state, cfg)
        agent.load_state_dict(state["agent"])
    else:
        from mbrl.merge import merged_agent

        agent = merged_agent(run_dir, alpha)
    agent = agent.to(resolve_device(device))
    results = run_episodes(agent, cfg, episodes, seed=EVAL_SEED_OFFSET + seed)
    returns = np.array([r["return"] for r in results])
    summary = {
        "env": cfg.env, "encoder": cfg.encoder, "size": cfg.size, "seed": cfg.seed, "shift": "none",
        "severity": 0, "alpha": alpha, "env_steps_trained": state["counters"]["env_steps"],
        "encoder_mode": resolve_mode(cfg), "config_hash": model_hash(cfg),
        "episodes": results, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
        "return_stderr": float(returns.std(ddof=1) / np.sqrt(len(returns))) if len(returns) > 1 else 0.0,
    }
    name = "clean.json" if alpha is None else f"clean-alpha{alpha:g}.json"
    return io.write_json(Path(run_dir) / "eval" / name, summary)
