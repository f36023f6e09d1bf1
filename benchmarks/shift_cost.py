"""Cost of the visual shifts: env step (physics + render of the observation) with each registered shift vs the
clean env, measured in the same run.

    python benchmarks/shift_cost.py                               # dmc:walker_walk, 64 px, severities 3 and 5
    python benchmarks/shift_cost.py --kinds fog,jpeg --severities 1,5 --rounds 9 --json runs/shifts-bench.json

For every (kind, severity) and each of ``--rounds`` rounds, a block of ``--steps`` agent steps of the clean env is
timed, immediately followed by the same block (same episode seed, same actions) with the shift. Reported:

- ``wall``, ``cpu``: median over rounds of the per-round ratio shifted / clean block (wall time, process CPU
  time), so slow drifts of the machine's load cancel;
- ``cpu min``: the fastest shifted block over the fastest of its paired clean blocks (CPU time), the least
  disturbed estimate on a loaded machine;
- ``apply us``: CPU time of the pixel shift's ``apply`` alone on a fixed frame (best of 5 x 200 calls), and
  ``est`` = 1 + apply / (clean step CPU time): the per-frame overhead without the env's noise.

Pixel shifts share one env (wrapped per condition); scene shifts get their own env. The target is a ratio
<= 1.10; ``!`` marks conditions whose ``cpu min`` and ``est`` (scene kinds: ``cpu min``) are both above it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

import envs  # noqa: F401  (before dm_control: selects the GL backend)  # isort: skip
from shifts.base import ShiftWrapper, make_shift
from shifts.suites import ordered_kinds

TARGET = 1.10


def _block(env: Any, actions: np.ndarray, seed: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of ``len(actions)`` steps after an (untimed) reset."""
    env.reset(seed=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset(seed=seed)
    n = len(actions)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def _apply_us(kind: str, severity: int, frame: np.ndarray, n: int = 200) -> float | None:
    shift = make_shift(kind, severity, 0)
    if shift.level != "pixel":
        return None
    shift.apply(frame, 0)
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            shift.apply(frame, 0)
        best = min(best, (time.process_time() - t) / n)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="dmc:walker_walk")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kinds", default="", help="comma-separated kinds (default: every registered kind)")
    p.add_argument("--severities", default="3,5")
    p.add_argument("--steps", type=int, default=40, help="agent steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results to this path (atomically)")
    args = p.parse_args(argv)

    kinds = [k for k in args.kinds.split(",") if k] or ordered_kinds()
    severities = [int(s) for s in args.severities.split(",")]
    conditions = [(k, s) for k in kinds for s in severities]
    for k, s in conditions:
        make_shift(k, s)  # unknown kind / bad severity: fail before measuring

    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    clean = envs.make_env(args.env, size=args.size)
    rng = np.random.default_rng(args.seed)
    actions = rng.uniform(-1, 1, (args.steps,) + clean.action_space.shape)
    frame = clean.reset(seed=args.seed)[0]["image"]
    wrapped: dict[tuple[str, int], Any] = {}
    owned = []
    for k, s in conditions:
        shift = make_shift(k, s, args.seed)
        if shift.level == "pixel":
            wrapped[(k, s)] = ShiftWrapper(clean, [shift])
        else:
            env = envs.make_env(args.env, size=args.size)
            owned.append(env)
            wrapped[(k, s)] = ShiftWrapper(env, [shift])
    _block(clean, actions[:5], args.seed)  # warm up (renderer, caches)
    for env in wrapped.values():
        _block(env, actions[:5], args.seed)

    per: dict[tuple[str, int], dict[str, list[float]]] = {c: {"wall": [], "cpu": [], "clean_wall": [],
                                                              "clean_cpu": []} for c in conditions}
    for _ in range(args.rounds):
        for c in conditions:
            w0, c0 = _block(clean, actions, args.seed)
            w1, c1 = _block(wrapped[c], actions, args.seed)
            per[c]["clean_wall"].append(w0)
            per[c]["clean_cpu"].append(c0)
            per[c]["wall"].append(w1 / w0)
            per[c]["cpu"].append(c1 / c0)
    for env in owned:
        env.close()
    clean.close()

    clean_wall = statistics.median(x for c in conditions for x in per[c]["clean_wall"])
    clean_cpu = statistics.median(x for c in conditions for x in per[c]["clean_cpu"])
    print(f"{args.env} {args.size}px, clean step: {clean_wall * 1e3:.2f} ms wall, {clean_cpu * 1e3:.2f} ms CPU "
          f"(median); ratios = shifted / clean, median of {args.rounds} paired blocks of {args.steps} steps")
    print(f"{'kind':<15} {'sev':>3} {'wall':>7} {'cpu':>7} {'cpu min':>8} {'apply us':>9} {'est':>7}")
    results = []
    for k, s in conditions:
        r = per[(k, s)]
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        cpu_min = min(c * c0 for c, c0 in zip(r["cpu"], r["clean_cpu"], strict=True)) / min(r["clean_cpu"])
        us = _apply_us(k, s, frame)
        est = None if us is None else 1 + us * 1e-6 / clean_cpu
        flag = "  !" if cpu_min > TARGET and (est is None or est > TARGET) else ""
        print(f"{k:<15} {s:>3} {wall:>6.2f}x {cpu:>6.2f}x {cpu_min:>7.2f}x {'-' if us is None else f'{us:.0f}':>9} "
              f"{'-' if est is None else f'{est:.2f}x':>7}{flag}")
        results.append({"kind": k, "severity": s, "wall_ratio": wall, "cpu_ratio": cpu, "cpu_min_ratio": cpu_min,
                        "apply_us": us, "apply_estimate": est, "wall_ratios": r["wall"], "cpu_ratios": r["cpu"]})
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        from envs import files

        files.write_json(args.json, {"env": args.env, "size": args.size, "steps": args.steps, "rounds": args.rounds,
                                  "clean_step_wall_s": clean_wall, "clean_step_cpu_s": clean_cpu,
                                  "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
