"""Env stepping speed with rendering: agent steps/s (and env steps/s) of every env suite that runs here, at 64
and 224 px, random actions, single env, in one run (ratios against ``dmc:walker_walk`` at 64 px measured in the
same run).

    python benchmarks/env_speed.py
    python benchmarks/env_speed.py --envs dmc:walker_walk,metaworld:reach --sizes 64 --steps 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs

DEFAULT_ENVS = "dmc:walker_walk,dmc:cartpole_swingup,metaworld:reach,metaworld:pick-place,driving:carracing"


def agent_steps_per_s(name: str, size: int, steps: int, seed: int = 0) -> tuple[float, int]:
    """Agent steps/s of ``steps`` random-action steps (after one untimed reset) and the action repeat."""
    env = envs.make_env(name, size=size, seed=seed)
    try:
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            if term or trunc:
                env.reset()
        return steps / (time.perf_counter() - start), env.action_repeat
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default=DEFAULT_ENVS)
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    names = args.envs.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    base = None
    print(f"{'env':<26} {'px':>4} {'agent steps/s':>14} {'env steps/s':>12} {'vs walker 64':>13}")
    for name in names:
        for size in sizes:
            try:
                rate, repeat = agent_steps_per_s(name, size, args.steps)
            except envs.EnvError as exc:
                print(f"{name:<26} {size:>4}  unavailable: {exc}")
                continue
            base = base or (rate if name == "dmc:walker_walk" and size == 64 else None)
            ratio = f"{rate / base:.2f}x" if base else "-"
            print(f"{name:<26} {size:>4} {rate:>14.1f} {rate * repeat:>12.1f} {ratio:>13}")


if __name__ == "__main__":
    main()
