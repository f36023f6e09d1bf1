"""Which of ``compile=on``'s regions pay off on this machine: cold first update, warm first update and steady
s/update for each set of compiled regions (:data:`mbrl.agent.COMPILE_REGIONS`), measured in the same run.

    python benchmarks/compile_regions.py                                    # size1m state fp32, 1 thread, CPU
    python benchmarks/compile_regions.py --sets none,all,imagine+losses --updates 20 --json runs/regions.json

A *set* is ``none``, ``all`` or regions joined by ``+`` (``steps``, ``observe``, ``imagine``, ``losses``). Each
set runs in its own subprocess (a fresh dynamo state) twice: first with an empty inductor cache
(``TORCHINDUCTOR_CACHE_DIR`` a new temporary directory: *cold*), then again with the cache the first run filled
(*warm*). Per set:

- ``cold_s`` / ``warm_s``: wall time from building the agent to the end of its first update (compiling included);
- ``s_per_update``: mean of ``--updates`` timed updates after ``--warmup`` untimed ones (synthetic replay, as
  ``benchmarks/update_speed.py``);
- ``saving``: the ``none`` set's s/update minus this one's (> 0: compiling is faster per update);
- ``act ms``: one policy step for one env (:meth:`mbrl.agent.Agent.act`, what collection and evaluation call per
  agent step), mean of ``--act-steps``; the ``steps`` region compiles it;
- ``payback``: updates until the cold compile time over ``none``'s first update is paid back by ``saving``
  (``inf`` when it never is). A 50k-env-step run at train ratio 512 is 12 500 updates; the bars' tiny runs a few
  hundred.

``--paired`` instead builds one agent per set in one process and alternates their updates for ``--rounds``
rounds: the median s/update and the median per-round ratio to ``none`` (robust to load drifting between runs).

The last line names the cheapest set whose cold first update is <= ``--budget`` seconds (60: the CPU target of
the CUDA-graphs issue) among those within 5 % of the fastest s/update. No assertions; ``--json`` writes the rows
atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import update_speed  # noqa: E402

from envs import files  # noqa: E402
from mbrl.agent import COMPILE_REGIONS, Agent  # noqa: E402

DEFAULT_SETS = "none,all,steps,observe,imagine,losses,imagine+losses,observe+imagine+losses"


def parse_set(text: str) -> tuple[str, ...]:
    """``"imagine+losses"`` -> ``("imagine", "losses")``; ``none`` -> ``()``, ``all`` -> every region.

    Raises:
        SystemExit: an unknown region (an ``error:`` line, exit 2).
    """
    if text == "none":
        return ()
    if text == "all":
        return COMPILE_REGIONS
    regions = tuple(text.split("+"))
    unknown = [r for r in regions if r not in COMPILE_REGIONS]
    if unknown or not text:
        sys.exit(f"error: compile set {text!r}: unknown regions {unknown}; allowed: none, all, or "
                 f"{', '.join(COMPILE_REGIONS)} joined by '+'")
    return regions


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    """In this process: build the agent (compile off), compile ``args.one``'s regions, time the first update and
    ``args.updates`` more."""
    regions = parse_set(args.one)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    variant = {"size": args.size, "obs": args.obs, "precision": args.precision, "compile": "off"}
    cfg = update_speed.variant_config(variant, args, device)
    torch.manual_seed(args.seed)
    replay = update_speed.synthetic_replay(args.replay_steps, args.image_size, args.action_dim, args.state_dim,
                                           args.obs, args.seed)
    start = time.perf_counter()
    agent = Agent(cfg, args.action_dim, args.state_dim if "state" in args.obs else 0).to(device)
    if regions:
        agent.compile_steps(regions)
    agent.update(replay.sample(args.batch, args.length, device))
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        agent.update(replay.sample(args.batch, args.length, device))
    times = []
    for _ in range(args.updates):
        t0 = time.perf_counter()
        agent.update(replay.sample(args.batch, args.length, device))
        times.append(time.perf_counter() - t0)
    # acting: one policy step for one env (what the collector and evaluation call per agent step)
    obs = {"state": torch.zeros(1, args.state_dim)} if "state" in args.obs else {
        "image": torch.zeros(1, args.image_size, args.image_size, 3, dtype=torch.uint8)}
    state, is_first = agent.initial_state(1), torch.zeros(1, dtype=torch.bool)
    with torch.no_grad():
        for i in range(args.act_steps + 20):  # 20 untimed (compiling with ``steps``)
            if i == 20:
                t0 = time.perf_counter()
            _, state = agent.act(obs, is_first, state)
    act_ms = 1e3 * (time.perf_counter() - t0) / args.act_steps
    agent.check_finite()
    return {"first_s": first, "s_per_update": float(np.mean(times)), "act_ms": act_ms}


def paired(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """In this process: one agent per set (same seed and replay), each warmed up, then ``args.rounds`` rounds of one
    update of each in turn; per set the median s/update and the median of its per-round ratio to the first set's
    update (robust to load that drifts between separate runs)."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    variant = {"size": args.size, "obs": args.obs, "precision": args.precision, "compile": "off"}
    cfg = update_speed.variant_config(variant, args, device)
    replay = update_speed.synthetic_replay(args.replay_steps, args.image_size, args.action_dim, args.state_dim,
                                           args.obs, args.seed)
    agents = []
    for name in names:
        torch.manual_seed(args.seed)
        agent = Agent(cfg, args.action_dim, args.state_dim if "state" in args.obs else 0).to(device)
        regions = parse_set(name)
        if regions:
            agent.compile_steps(regions)
        for _ in range(1 + args.warmup):
            agent.update(replay.sample(args.batch, args.length, device))
        agents.append(agent)
    times = np.zeros((args.rounds, len(agents)))
    for r in range(args.rounds):
        for i, agent in enumerate(agents):
            batch = replay.sample(args.batch, args.length, device)
            t0 = time.perf_counter()
            agent.update(batch)
            times[r, i] = time.perf_counter() - t0
    return [{"set": name, "median_s_per_update": float(np.median(times[:, i])),
             "median_ratio_to_first": float(np.median(times[:, 0] / times[:, i]))} for i, name in enumerate(names)]


def run_set(name: str, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    """``name`` in a subprocess with ``TORCHINDUCTOR_CACHE_DIR=cache``; its result row."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--updates", str(args.updates),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--size", args.size, "--obs", args.obs,
           "--precision", args.precision, "--batch", str(args.batch), "--length", str(args.length),
           "--act-steps", str(args.act_steps)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"error: set {name} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=DEFAULT_SETS, help="comma-separated: none, all, or regions joined by '+'")
    p.add_argument("--size", default="size1m")
    p.add_argument("--obs", default="state")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--act-steps", type=int, default=500, help="timed policy steps (one env)")
    p.add_argument("--budget", type=float, default=60.0, help="cold first-update target in seconds")
    p.add_argument("--json", default="", help="write the rows here")
    p.add_argument("--paired", action="store_true",
                   help="instead: all sets in this process, updates alternating for --rounds rounds (s/update only)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: measure one set in this process
    args = p.parse_args(argv)
    # what update_speed.variant_config and synthetic_replay read
    args.image_size, args.input_size, args.action_dim, args.state_dim = 64, 224, 6, 24
    args.replay_steps, args.seed, args.cuda_graphs = 2000, 0, "off"
    if args.updates < 1 or args.warmup < 0 or args.threads < 1 or args.act_steps < 1:
        sys.exit("error: --updates, --threads and --act-steps must be >= 1 and --warmup >= 0")
    if args.one:
        print(json.dumps(measure_one(args)))
        return 0
    names = [s for s in args.sets.split(",") if s]
    for name in names:
        parse_set(name)
    if "none" not in names:
        names.insert(0, "none")
    if args.paired:
        print(f"compile regions, paired | {args.size} {args.obs} {args.precision} | threads {args.threads} | "
              f"{args.rounds} rounds | load avg {os.getloadavg()[0]:.2f}", flush=True)
        rows = paired(names, args)
        for row in rows:
            print(f"{row['set']:<30} median {row['median_s_per_update']:.3f} s/update, "
                  f"{row['median_ratio_to_first']:.2f}x {names[0]}", flush=True)
        if args.json:
            files.write_json(args.json, {"args": {k: v for k, v in vars(args).items() if k != "one"},
                                         "paired": rows})
        return 0
    print(f"compile regions | {args.size} {args.obs} {args.precision} | B x T {args.batch} x {args.length} | "
          f"threads {args.threads} | torch {torch.__version__} | {torch.backends.cpu.get_cpu_capability()} | "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'set':<30} {'cold s':>8} {'warm s':>8} {'s/update':>9} {'saving s':>9} {'payback':>9} {'act ms':>7}",
          flush=True)
    rows: list[dict[str, Any]] = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            cold = run_set(name, args, cache)
            warm = run_set(name, args, cache) if name != "none" else cold
        rows.append({"set": name, "cold_s": cold["first_s"], "warm_s": warm["first_s"],
                     "s_per_update": float(np.mean([cold["s_per_update"], warm["s_per_update"]])),
                     "act_ms": float(np.mean([cold["act_ms"], warm["act_ms"]]))})
        base = rows[0]
        row = rows[-1]
        row["saving_s"] = base["s_per_update"] - row["s_per_update"]
        extra = row["cold_s"] - base["cold_s"]
        row["payback_updates"] = (max(extra, 0.0) / row["saving_s"]) if row["saving_s"] > 0 else math.inf
        print(f"{name:<30} {row['cold_s']:>8.1f} {row['warm_s']:>8.1f} {row['s_per_update']:>9.3f} "
              f"{row['saving_s']:>9.3f} {row['payback_updates']:>9.0f} {row['act_ms']:>7.2f}", flush=True)
    fastest = min(r["s_per_update"] for r in rows)
    fits = [r for r in rows if r["cold_s"] <= args.budget and r["s_per_update"] <= 1.05 * fastest]
    if args.json:
        files.write_json(args.json, {"args": {k: v for k, v in vars(args).items() if k != "one"}, "rows": rows})
    if fits:
        best = min(fits, key=lambda r: r["cold_s"])
        print(f"within {args.budget:.0f} s cold and 5 % of the fastest s/update: {best['set']} "
              f"(cold {best['cold_s']:.1f} s, {best['s_per_update']:.3f} s/update)")
    else:
        best = min(rows, key=lambda r: r["s_per_update"])
        print(f"no set within {args.budget:.0f} s cold and 5 % of the fastest s/update; fastest: {best['set']} "
              f"(cold {best['cold_s']:.1f} s, {best['s_per_update']:.3f} s/update)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
