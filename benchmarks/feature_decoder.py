"""Which loss should ``decoder=features`` train with? World models trained on the same real frames, compared.

    MUJOCO_GL=egl python benchmarks/feature_decoder.py                      # cartpole_swingup, efficientnet-lite0
    python benchmarks/feature_decoder.py --variants symlog_mse,cosine,pixels --updates 400 --seeds 0,1

Frames: ``--episodes`` episodes of ``--env`` with uniform random actions (``obs=pixels+state``: the state vector
is only a probe target, the world models see pixels), the last one held out. The frozen encoder's backbone
features are computed once (float16, as the replay cache stores them). For each variant (``symlog_mse`` /
``cosine``: ``decoder=features`` with that ``loss.feat_loss``; ``pixels``: the pixel decoder on the same frozen
encoder; ``untrained``: no update) one world model is trained for ``--updates`` world-model updates on random
``--batch`` x ``--length`` windows of the training episodes, then scored on the held-out episode (posterior
filtered through the whole episode):

- ``probe_r2``: ``1 - MSE / Var`` of a ridge probe from the model state to the true proprioceptive state (fitted
  on the training episodes' posterior states, its strength by leave-one-episode-out; ``Var`` over all episodes,
  so a held-out episode that moves little does not blow it up), averaged over state dims: what the latent keeps
  about the scene;
- ``open_r2``: the same probe on open-loop priors ``--horizon`` steps after a posterior, driven by the true
  actions: what imagination keeps (the actor learns from imagined states);
- ``reward_mae``: ``|E[r_hat] - r|`` of the reward head on the held-out posteriors;
- ``feat_cos``: cosine of the reconstructed to the true features (symlog_mse predictions symexp'd first);
  ``wm_s``: wall seconds of the updates.

No assertions; prints one row per variant and seed, then the means.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs  # noqa: E402
from envs.driver import Driver, Step  # noqa: E402
from mbrl.agent import Agent  # noqa: E402
from mbrl.config import build_config  # noqa: E402
from mbrl.distributions import symexp  # noqa: E402


def collect(env_name: str, episodes: int, image_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``episodes`` random-action episodes: ``image`` (T, H, W, 3), ``state`` (T, D), ``action`` (T, A) (a_t after
    x_t), ``reward`` (T,) (r_t on arriving at x_t), ``is_first``."""
    env = envs.make_env(env_name, size=image_size, action_repeat=2, obs="pixels+state", seed=seed)
    steps: list[Step] = []
    driver = Driver(env, rng=np.random.default_rng(seed), on_step=[steps.append])
    out = []
    for ep in range(episodes):
        steps.clear()
        last = driver.episode(seed + ep)
        images = [s.obs["image"][0] for s in steps] + [last.last_obs["image"]]
        states = [s.obs["state"][0] for s in steps] + [last.last_obs["state"]]
        actions = [s.action[0] for s in steps] + [np.zeros_like(steps[-1].action[0])]
        rewards = [s.reward[0] for s in steps] + [last.last_reward]
        t = len(images)
        out.append({"image": np.stack(images), "state": np.stack(states).astype(np.float32),
                    "action": np.stack(actions), "reward": np.asarray(rewards, np.float32),
                    "is_first": np.eye(1, t, dtype=bool)[0], "is_terminal": np.zeros(t, bool)})
    driver.close()
    return out


def windows(eps: list[dict[str, np.ndarray]], batch: int, length: int, rng: np.random.Generator) -> dict[str, Any]:
    """``batch`` random windows of ``length`` steps (the first flagged ``is_first``, as the replay does)."""
    picks = []
    for _ in range(batch):
        ep = eps[rng.integers(len(eps))]
        start = rng.integers(len(ep["reward"]) - length + 1)
        picks.append({k: v[start:start + length] for k, v in ep.items()})
    out = {k: torch.from_numpy(np.stack([p[k] for p in picks])) for k in picks[0] if k != "state"}
    out["is_first"] = out["is_first"].clone()
    out["is_first"][:, 0] = True
    return out


def full(ep: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None] for k, v in ep.items() if k != "state"}


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised inputs; returns (mean, std, weights incl. bias)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
    w = np.linalg.solve(z.T @ z + lam * len(x) * np.eye(z.shape[1]), z.T @ y)
    return mu, sd, w


def r2(probe: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray, y: np.ndarray,
       var: np.ndarray | None = None) -> np.ndarray:
    """Per-dim ``1 - MSE / var`` of the probe's predictions of ``y`` from ``x`` (``var``: the state's variance over
    all episodes; default ``y``'s own, i.e. R^2)."""
    mu, sd, w = probe
    pred = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1) @ w
    return 1 - ((pred - y) ** 2).mean(0) / (y.var(0) if var is None else var).clip(1e-8)


LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_probe(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge probe, its strength chosen per state dim by leave-one-episode-out error over the training episodes."""
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(xs) < 2:
        return ridge(x, y, 1e-2)
    var = y.var(0)

    def cv(lam: float) -> np.ndarray:
        return np.mean([r2(ridge(np.concatenate(xs[:i] + xs[i + 1:]), np.concatenate(ys[:i] + ys[i + 1:]), lam),
                           xs[i], ys[i], var) for i in range(len(xs))], 0)

    scores = np.stack([cv(lam) for lam in LAMBDAS])  # (lambdas, D)
    fits = [ridge(x, y, lam) for lam in LAMBDAS]
    best = scores.argmax(0)
    w = np.stack([fits[b][2][:, d] for d, b in enumerate(best)], 1)
    return fits[0][0], fits[0][1], w


@torch.no_grad()
def score(agent: Agent, train_eps: list[dict[str, Any]], test_ep: dict[str, Any], horizon: int) -> dict[str, float]:
    wm = agent.wm
    agent.eval()

    def filtered(ep: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        data = full(ep)
        action = data["action"]
        prev = torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)
        post, _ = wm.rssm.observe(wm.embed(data), prev, data["is_first"])
        return post, wm.rssm.features(post)[0]

    xs = [filtered(ep)[1].numpy() for ep in train_eps]
    probe = fit_probe(xs, [ep["state"] for ep in train_eps])
    post, feat = filtered(test_ep)
    var = np.concatenate([ep["state"] for ep in [*train_eps, test_ep]]).var(0)
    per_dim = r2(probe, feat.numpy(), test_ep["state"], var)
    out = {"probe_r2": float(per_dim.mean()), "probe_r2_dims": per_dim.round(3).tolist()}
    # open loop: from the posterior at t, imagine `horizon` steps with the true actions a_t .. a_{t+h-1}
    t_len = feat.shape[0]
    starts = torch.arange(0, t_len - horizon)
    state = {k: v[0, starts] for k, v in post.items()}
    action = torch.from_numpy(test_ep["action"])
    for k in range(horizon):
        state = wm.rssm.img_step(state, action[starts + k], sample=False)
    out["open_r2"] = float(r2(probe, wm.rssm.features(state).numpy(), test_ep["state"][starts.numpy() + horizon],
                              var).mean())
    reward = torch.from_numpy(test_ep["reward"])
    out["reward_mae"] = float((wm.reward(feat).mean - reward).abs()[1:].mean())
    if wm.feature_decoder is not None:
        pred = wm.feature_decoder(feat).float()
        if wm.feature_decoder.kind == "symlog_mse":
            pred = symexp(pred)
        target = torch.from_numpy(test_ep["features"]).float()
        out["feat_cos"] = float(torch.nn.functional.cosine_similarity(pred, target, dim=-1).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="dmc:cartpole_swingup")
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--size", default="size1m")
    p.add_argument("--variants", default="untrained,symlog_mse,cosine")
    p.add_argument("--episodes", type=int, default=3, help="collected episodes; the last is held out")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seeds", default="0")
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="", help="an .npz keeping the episodes and their features between runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cache and os.path.exists(args.cache):
        with np.load(args.cache) as data:
            eps = [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
                   for i in range(args.episodes)]
        print(f"loaded {args.cache}", flush=True)
    else:
        t0 = time.perf_counter()
        eps = collect(args.env, args.episodes, args.image_size, 0)
        print(f"collected {args.episodes} episodes x {len(eps[0]['reward'])} steps of {args.env} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    base = [f"size={args.size}", f"encoder={args.encoder}", f"image_size={args.image_size}", "optim.warmup=0",
            f"optim.lr={args.lr}", f"batch_size={args.batch}", f"batch_length={args.length}", "device=cpu",
            *args.set]
    probe_agent = Agent(build_config(base), int(eps[0]["action"].shape[1]))
    t0 = time.perf_counter()
    for ep in eps:
        if "features" in ep:
            continue
        ep["features"] = np.concatenate([probe_agent.encode_features(torch.from_numpy(c)).numpy()
                                         for c in np.array_split(ep["image"], max(1, len(ep["image"]) // 64))]
                                        ).astype(np.float16)
    print(f"features {eps[0]['features'].shape[1]} per frame in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.cache and not os.path.exists(args.cache):
        np.savez(args.cache, **{f"{i}/{k}": v for i, ep in enumerate(eps) for k, v in ep.items()})
    train_eps, test_ep = eps[:-1], eps[-1]
    rows = []
    print(f"{'variant':<11} {'seed':>4} {'probe_r2':>8} {'open_r2':>8} {'rew_mae':>8} {'feat_cos':>8} "
          f"{'wm_loss':>9} {'wm_s':>6}", flush=True)
    for variant in [v for v in args.variants.split(",") if v]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            over = ["decoder=pixels"] if variant in ("pixels", "untrained") else \
                ["decoder=features", f"loss.feat_loss={variant}"]
            torch.manual_seed(seed)
            agent = Agent(build_config(base + over), int(eps[0]["action"].shape[1]))
            rng = np.random.default_rng(seed)
            t0 = time.perf_counter()
            loss = float("nan")
            for _ in range(args.updates if variant != "untrained" else 0):
                agent.train()
                wm_loss, _, metrics = agent.wm.loss(windows(train_eps, args.batch, args.length, rng))
                agent.wm_opt.step(wm_loss)
                loss = float(metrics["wm/loss"])
            secs = time.perf_counter() - t0
            row = {"variant": variant, "seed": seed, **score(agent, train_eps, test_ep, args.horizon),
                   "wm_loss": loss, "wm_s": secs}
            rows.append(row)
            print(f"{variant:<11} {seed:>4} {row['probe_r2']:>8.3f} {row['open_r2']:>8.3f} "
                  f"{row['reward_mae']:>8.3f} {row.get('feat_cos', float('nan')):>8.3f} {loss:>9.1f} "
                  f"{secs:>6.0f}  per-dim probe {row['probe_r2_dims']}", flush=True)
    print("means over seeds:")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        means = {k: float(np.mean([r.get(k, np.nan) for r in sel])) for k in ("probe_r2", "open_r2", "reward_mae",
                                                                              "feat_cos")}
        print(f"  {variant:<11} " + " ".join(f"{k} {v:.3f}" for k, v in means.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
