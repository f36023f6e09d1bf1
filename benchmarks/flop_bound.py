"""How fast an update could possibly be on this machine: FLOPs per update against the measured matmul peak.

    python benchmarks/flop_bound.py                                        # S pixels and size1m state, 2 threads
    python benchmarks/flop_bound.py --variants S:pixels:bf16:on --measure 3 --threads 2
    python benchmarks/flop_bound.py --target S:pixels:fp32=4.455 --target S:pixels:bf16=3.10

Method, all in one run:

- **FLOPs per update**: one eager update of each variant (``SIZE:OBS[:PRECISION:COMPILE]``, as in
  ``update_speed.py``; synthetic replay, B x T = ``--batch`` x ``--length``) under
  :class:`torch.utils.flop_counter.FlopCounterMode`, after one untimed update. It counts matmuls and convolutions
  (forward and backward: ``mm``, ``addmm``, ``bmm``, ``convolution``, ``convolution_backward``); elementwise ops,
  norms and the optimiser are free in this count, so the bound below is optimistic.
- **Peak**: the GFLOP/s of large dense matmuls (``4096^3`` and ``16384 x 1536 x 512``, the shape of an imagination
  MLP layer) in fp32 and bf16 at ``--threads``, the best of the two: what oneDNN/MKL reaches here on the op that
  dominates the count.
- **Bound**: ``GFLOP / peak`` seconds, at the variant's precision -- no implementation on this CPU, at these
  threads, performs the same update in less time.
- ``--measure N``: also time ``N`` updates of the variant (``update_speed.measure``) and print the achieved
  fraction of peak (``bound / measured``).
- ``--target VARIANT=SECONDS``: the fraction of peak a target time needs (``bound / target``); a target whose
  fraction is near or above 1 cannot be met without removing FLOPs from the update.

No assertions. ``--json`` writes the rows atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from update_speed import measure, parse_variant, synthetic_replay, variant_config  # noqa: E402

from envs import files  # noqa: E402
from mbrl.agent import Agent  # noqa: E402

DEFAULT_VARIANTS = "S:pixels:fp32:off,S:pixels:bf16:off,size1m:state:fp32:off,size1m:state:bf16:off"
PEAK_SHAPES = ((4096, 4096, 4096), (16384, 1536, 512))


def matmul_peak(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best GFLOP/s of :data:`PEAK_SHAPES` dense matmuls in ``dtype`` at the current torch thread count."""
    best = 0.0
    for n, k, m in PEAK_SHAPES:
        a, b = torch.randn(n, k, dtype=dtype), torch.randn(k, m, dtype=dtype)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n * k * m * reps / (time.perf_counter() - start) / 1e9)
    return best


def update_flops(variant: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    """FLOPs of one eager update of ``variant`` by aten op (``"total"`` as well), counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = variant_config({**variant, "compile": "off"}, args, torch.device("cpu"))
    torch.manual_seed(args.seed)
    agent = Agent(cfg, args.action_dim, args.state_dim if "state" in variant["obs"] else 0)
    replay = synthetic_replay(args.replay_steps, args.image_size, args.action_dim, args.state_dim, variant["obs"],
                              args.seed)
    cpu = torch.device("cpu")
    agent.train_step(replay.sample(args.batch, args.length, cpu))
    counter = FlopCounterMode(display=False)
    with counter:
        agent.train_step(replay.sample(args.batch, args.length, cpu))
    by_op = {str(op).removeprefix("aten."): float(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return {**by_op, "total": float(counter.get_total_flops())}


def parse_targets(items: list[str]) -> dict[str, float]:
    """``["S:pixels:fp32=4.455"]`` -> ``{"S:pixels:fp32": 4.455}``; exits with one ``error:`` line if malformed."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not key or seconds <= 0:
            sys.exit(f"error: --target {item!r} is not SIZE:OBS:PRECISION=SECONDS with SECONDS > 0")
        out[key] = seconds
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated SIZE:OBS:PRECISION:COMPILE")
    p.add_argument("--measure", type=int, default=0, help="also time this many updates per variant (0: don't)")
    p.add_argument("--target", action="append", default=[], help="SIZE:OBS:PRECISION=SECONDS (repeatable)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--state-dim", type=int, default=24)
    p.add_argument("--replay-steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the rows here")
    args = p.parse_args(argv)
    if args.measure < 0 or args.threads < 1:
        sys.exit("error: --measure must be >= 0 and --threads >= 1")
    targets = parse_targets(args.target)
    torch.set_num_threads(args.threads)
    variants = []
    for text in args.variants.split(","):
        v = parse_variant(text + ":fp32:off" if text.count(":") == 1 else text)
        if "encoder" in v:
            sys.exit(f"error: variant {text!r}: flop_bound.py counts the cnn / state agents only; "
                     "use SIZE:OBS[:PRECISION:COMPILE]")
        variants.append(v)
    peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16)
             for p in sorted({v["precision"] for v in variants})}
    print(f"flop bound | torch {torch.__version__} threads {torch.get_num_threads()} | B x T {args.batch} x "
          f"{args.length} | {args.image_size} px | matmul peak "
          + ", ".join(f"{k} {g:.0f} GFLOP/s" for k, g in peaks.items())
          + f" | load avg {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    for v in variants:
        name = ":".join(v.values())
        flops = update_flops(v, args)
        gflop = flops["total"] / 1e9
        bound = gflop / peaks[v["precision"]]
        row: dict[str, Any] = {"variant": name, **v, "gflop": gflop, "peak_gflops": peaks[v["precision"]],
                               "bound_s": bound, "gflop_by_op": {k: f / 1e9 for k, f in flops.items()}}
        ops = ", ".join(f"{k} {f / 1e9:.0f}" for k, f in sorted(flops.items(), key=lambda x: -x[1]) if k != "total")
        line = f"{name:<24} {gflop:8.1f} GFLOP ({ops})  bound {bound:.3f} s"
        if args.measure:
            ns = argparse.Namespace(**{**vars(args), "updates": args.measure, "warmup": 1, "input_size": 224,
                                       "bf16_filter": False})
            measured = measure(v, ns, torch.device("cpu"))["s_per_update"]
            row.update(measured_s=measured, fraction_of_peak=bound / measured)
            line += f"  measured {measured:.3f} s = {bound / measured:.0%} of peak"
        key = ":".join(list(v.values())[:3])
        if key in targets:
            row.update(target_s=targets[key], target_fraction_of_peak=bound / targets[key])
            line += f"  target {targets[key]:.3f} s needs {bound / targets[key]:.0%} of peak"
        rows.append(row)
        print(line, flush=True)
    print("bound: counted matmul/conv GFLOP / measured dense-matmul peak at the variant's precision (elementwise, "
          "norms, optimiser not counted: a lower bound on s/update)")
    if args.json:
        files.write_json(args.json, {"torch": torch.__version__, "threads": args.threads, "peaks": peaks,
                                     "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
