"""Measure the uniform-random-policy return of envs: the R_random constants of normalised return
(:mod:`experiments.normalisation`).

    python benchmarks/random_returns.py dmc:cartpole_balance dmc:walker_stand --episodes 10 [--size 16]

Actions are drawn uniformly from the action space at every agent step (action repeat 2, each suite's standard
episode length, as training); prints one line per env: mean, standard error and the per-episode returns.
Rendering does not change the return, so a tiny image size keeps it cheap.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs
from envs.driver import Driver


def random_returns(name: str, episodes: int, size: int, seed: int = 0) -> list[float]:
    """Undiscounted returns of ``episodes`` uniform-random episodes of ``name`` (episode i seeded seed + i)."""
    env = envs.make_env(name, size=size, seed=seed)
    driver = Driver(env, rng=np.random.default_rng(seed))  # no policy: uniform actions from the action space
    try:
        return [driver.episode(seed + i).record["return"] for i in range(episodes)]
    finally:
        driver.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("envs", nargs="+")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    for name in args.envs:
        t0 = time.time()
        r = np.asarray(random_returns(name, args.episodes, args.size))
        print(f"{name:<28} mean {r.mean():9.2f}  stderr {r.std(ddof=1) / np.sqrt(len(r)):7.2f}  "
              f"({len(r)} episodes, {time.time() - t0:5.1f} s)  {np.round(r, 1).tolist()}", flush=True)


if __name__ == "__main__":
    main()
