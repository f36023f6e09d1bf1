"""World-model diagnostics under visual shift: how well a trained run's world model explains shifted
observations (``dreamshift analyze wm RUN_DIR``).

Per condition ``(kind, severity)`` of a suite (the clean env first), ``episodes`` episodes are collected with
the agent's policy (``mode`` ``eval`` = policy mean, as :func:`mbrl.runs.evaluate.run_episodes`; episode seeds
``EVAL_SEED_OFFSET + seed + i``, the same for every condition; at most ``max_steps`` agent steps each) in the
env wrapped by :class:`shifts.base.ShiftWrapper`. Then the world model filters each episode as in training
(:meth:`mbrl.world_model.WorldModel.loss`: encoder -> :meth:`RSSM.observe` with the previous actions) and
reports, averaged over the steps:

- ``recon_mse``: mean squared error of the decoded image vs the observation, per pixel value in ``[0, 1]``
  units; ``recon_sse``: the same summed over the image (the training loss's reconstruction term,
  DreamerV3 Eq. 4); for a ``decoder=features`` run they measure the decoder's own target instead: ``recon_sse``
  is its feature loss (``loss.feat_loss``) and ``recon_mse`` that divided by the feature size ``F``;
- ``reward_mae``: ``|E[r_hat] - r|`` of the reward head's two-hot mean vs the env reward (steps after the
  first: the first observation has no reward); ``reward_nll``: its negative log-likelihood (the loss term);
- ``kl``: ``KL(posterior || prior)`` in nats summed over the stochastic latents (the raw KL of DreamerV3 Eq. 5
  before free bits), steps after the first (the first prior comes from the zero state);
- ``return``: the episode return (env reward sum) of the collected episodes.

The RSSM samples its stochastic state: torch is seeded with ``seed`` once per condition, so the numbers are
reproducible. A shift that the world model never saw should raise ``recon`` and ``kl``: the posterior (which
sees the image) departs from the prior (which only predicts), exactly the signal robust encoders suppress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch

import envs
from encoders.registry import resolve_mode
from envs.driver import Driver, Step
from envs.errors import ConfigError
from mbrl.config import model_hash
from mbrl.distributions import categorical_kl
from mbrl.policy import AgentPolicy
from mbrl.runs import checkpoint
from mbrl.runs.evaluate import EVAL_SEED_OFFSET, episode_rng_seed, seeded_rng
from mbrl.runtime import env_kwargs
from shifts.base import ShiftWrapper, make_shift
from shifts.suites import for_env, parse_suite

METRICS = ("recon_mse", "recon_sse", "reward_mae", "reward_nll", "kl")


def collect_episode(agent: Any, env: Any, seed: int, max_steps: int, mode: str = "sample") -> dict[str, np.ndarray]:
    """One episode with the agent's policy (``mode``: :meth:`mbrl.agent.Agent.act`), in the replay layout of
    :mod:`mbrl.world_model` (``T`` steps).

    Returns:
        ``image`` ``(T, H, W, 3)`` uint8, ``action`` ``(T, A)`` float32 (action taken after seeing each frame),
        ``reward`` ``(T,)`` float32 (received on arriving at each frame; 0 at the first), ``is_first`` and
        ``is_terminal`` ``(T,)`` bool, ``return`` (scalar array).
    """
    with seeded_rng(episode_rng_seed(seed), agent.device):  # the same episode for the same seed, as evaluation
        return _collect(agent, env, seed, max_steps, mode)


def _collect(agent: Any, env: Any, seed: int, max_steps: int, mode: str) -> dict[str, np.ndarray]:
    images, actions, rewards = [], [], []

    def on_step(step: Step) -> None:
        images.append(step.obs["image"][0])
        actions.append(step.action[0])
        rewards.append(float(step.reward[0]))

    episode = Driver(env, AgentPolicy(agent, 1, mode), on_step=[on_step]).episode(seed, max_steps=max_steps)
    images.append(episode.last_obs["image"])
    actions.append(np.zeros_like(actions[-1]))  # the last frame's action is never taken
    rewards.append(float(episode.last_reward))
    t = len(images)
    terminal = np.zeros(t, bool)
    terminal[-1] = episode.terminated
    return {"image": np.stack(images), "action": np.stack(actions).astype(np.float32),
            "reward": np.asarray(rewards, np.float32), "is_first": np.eye(1, t, dtype=bool)[0],
            "is_terminal": terminal, "return": np.asarray(episode.record["return"], np.float64)}


@torch.no_grad()
def world_model_errors(agent: Any, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step errors of the world model on one episode (definitions in the module docstring).

    Args:
        episode: from :func:`collect_episode` (``T`` steps).

    Returns:
        ``{"recon_mse", "recon_sse"}`` ``(T,)`` and ``{"reward_mae", "reward_nll", "kl"}`` ``(T - 1,)`` float64.
    """
    wm = agent.wm
    agent.eval()
    dev = agent.device
    image = torch.from_numpy(episode["image"])[None].to(dev)
    action = torch.from_numpy(episode["action"])[None].to(dev)
    embed = wm.embed(image)
    prev_action = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
    is_first = torch.from_numpy(episode["is_first"])[None].to(dev)
    post, prior = wm.rssm.observe(embed, prev_action, is_first)
    feat = wm.rssm.features(post)
    if wm.feature_decoder is not None:  # decoder=features: the error of the reconstructed backbone features
        feats = agent.encode_features(image[0])
        sse = wm.feature_decoder.loss(feat[0], feats)
        mse = sse / wm.feature_decoder.feature_dim
    else:
        recon = wm.decoder(einops.rearrange(feat, "b t f -> (b t) f"))
        target = einops.rearrange(image, "b t h w c -> (b t) c h w").to(torch.float32) / 255.0
        sq = (recon - target).pow(2).flatten(1)
        mse, sse = sq.mean(1), sq.sum(1)
    reward = torch.from_numpy(episode["reward"])[None].to(dev)
    dist = wm.reward(feat)
    mae = (dist.mean - reward).abs()[0, 1:]
    nll = -dist.log_prob(reward)[0, 1:]
    kl = categorical_kl(post["logits"], prior["logits"])[0, 1:]
    as_np = lambda x: x.double().cpu().numpy()  # noqa: E731
    return {"recon_mse": as_np(mse), "recon_sse": as_np(sse), "reward_mae": as_np(mae),
            "reward_nll": as_np(nll), "kl": as_np(kl)}


def diagnose(run_dir: Path | str, suite: str = "quick", episodes: int = 2, seed: int = 0, max_steps: int = 100,
             device: str = "cpu",
             progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """World-model diagnostics of a trained run on every condition of ``suite`` (clean first).

    Returns:
        ``(summary, records)``: ``summary["results"]`` one row per condition with each metric's mean over
        all steps of its episodes and the change vs clean (``<metric>_ratio`` = shifted / clean); ``records`` one
        per ``(condition, metric)`` with ``n`` = steps averaged.

    Raises:
        CheckpointError: no run / checkpoint; ShiftError: bad suite or kind;
        ConfigError: ``episodes`` or ``max_steps`` < 1.
    """
    if episodes < 1 or max_steps < 1:
        raise ConfigError(f"--episodes and --max-steps must be >= 1, got {episodes}, {max_steps}")
    name, conditions = parse_suite(suite)
    run = checkpoint.load_run(run_dir, device)
    cfg, agent = run.config, run.agent
    conditions = for_env(name, conditions, cfg.env)
    base = {"env": cfg.env, "encoder": cfg.encoder, "encoder_mode": resolve_mode(cfg),
            "config_hash": model_hash(cfg)}
    results: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    t0 = time.time()
    for kind, severity in conditions:
        env = envs.make_env(cfg.env, **env_kwargs(cfg))
        if kind != "none":
            env = ShiftWrapper(env, [make_shift(kind, severity, seed)])
        per: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
        returns = []
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for i in range(episodes):
                    ep = collect_episode(agent, env, EVAL_SEED_OFFSET + seed + i, max_steps, cfg.eval_policy)
                    returns.append(float(ep["return"]))
                    for metric, values in world_model_errors(agent, ep).items():
                        per[metric].append(values)
        finally:
            env.close()
        row: dict[str, Any] = {"shift": kind, "severity": severity, "episodes": episodes,
                               "return_mean": float(np.mean(returns))}
        for metric in METRICS:
            values = np.concatenate(per[metric])
            row[metric] = float(values.mean()) if len(values) else float("nan")
            row[f"{metric}_n"] = int(len(values))
            records.append({"analysis": "wm", **base, "shift": kind, "severity": severity, "metric": metric,
                            "value": row[metric], "n": int(len(values))})
        records.append({"analysis": "wm", **base, "shift": kind, "severity": severity, "metric": "return",
                        "value": row["return_mean"], "n": episodes})
        results.append(row)
        if progress is not None:
            progress(f"{kind}:{severity} recon_mse {row['recon_mse']:.4f} kl {row['kl']:.2f} "
                     f"reward_mae {row['reward_mae']:.3f} ({time.time() - t0:.0f} s)")
    clean = results[0]
    for row in results:
        for metric in METRICS:
            ref = clean[metric]
            row[f"{metric}_ratio"] = None if not ref else row[metric] / ref
    summary = {"analysis": "wm", **base, "run_dir": str(run_dir), "suite": name, "episodes": episodes,
               "max_steps": max_steps, "seed": seed, "env_steps_trained": run.env_steps,
               "results": results}
    return summary, records
