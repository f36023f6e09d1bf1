"""Per-member update cost of seeds as a batch (:mod:`mbrl.members`) for E = 1, 2, 4, 8 members, in one run.

    python benchmarks/seed_batch.py                                    # the four variants, fp32 eager, 1 thread
    python benchmarks/seed_batch.py --variants size1m:state --members 1,4 --precision bf16 --compile on
    python benchmarks/seed_batch.py --device cuda --variants S:pixels --precision bf16 --compile on

A *variant* is ``SIZE:OBS`` optionally with ``:ENCODER:DECODER`` (``size1m:state``, ``XS:pixels``,
``size1m:pixels:efficientnet-lite0:features``: the frozen encoder's cached features, 64 px encoder input). For each
variant and each E the members train on their own synthetic replays (``benchmarks/update_speed.py``'s, seeded per
member) with B x T ``--batch`` x ``--length``:

- ``E=1 single``: today's :class:`mbrl.agent.Agent` (the baseline of every ratio);
- ``E=k``: one :class:`mbrl.members.MemberBatch` of k members (``E=1`` as a batch too, to show the batching's
  own cost).

Columns: ``s/update`` (whole update of all members, replay sampling included), ``s/member-update`` (that / E),
``ratio`` (per-member cost / the single agent's; < 1 is cheaper) and, for compiled variants, the first update
(compile included). ``--phases`` also prints, per row, the seconds per member-update spent in each part of the
update (world-model loss and filter, imagination, critic and actor losses, replay value loss, the three optimiser
steps with their backward passes): which parts batching makes cheaper. The last line is
``per-member cost E=4 / E=1: <ratio>`` for the first variant. No assertions; ``--json`` writes the rows atomically.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from update_speed import sync, synthetic_replay  # noqa: E402

from envs import files  # noqa: E402
from mbrl.agent import Agent  # noqa: E402
from mbrl.config import Config, build_config  # noqa: E402
from mbrl.members import MemberBatch, stack_batches  # noqa: E402

DEFAULT_VARIANTS = "size1m:state,size1m:pixels:efficientnet-lite0:features,XS:pixels,S:pixels"


def parse_variant(text: str) -> dict[str, str]:
    """``"size1m:state"`` -> ``{"size": "size1m", "obs": "state"}``; ``"size1m:pixels:efficientnet-lite0:features"``
    adds ``encoder`` and ``decoder``.

    Raises:
        SystemExit: not 2 or 4 fields (an ``error:`` line, exit 2).
    """
    parts = text.split(":")
    if len(parts) not in (2, 4) or not all(parts):
        sys.exit(f"error: variant {text!r} must be SIZE:OBS or SIZE:OBS:ENCODER:DECODER, e.g. size1m:state or "
                 f"size1m:pixels:efficientnet-lite0:features")
    out = {"size": parts[0], "obs": parts[1]}
    if len(parts) == 4:
        out["encoder"], out["decoder"] = parts[2], parts[3]
    return out


def config(variant: dict[str, str], args: argparse.Namespace, device: torch.device) -> Config:
    extra = [f"encoder={variant['encoder']}", f"decoder={variant['decoder']}", "encoder_input_size=64"] \
        if "encoder" in variant else []
    return build_config([f"size={variant['size']}", f"obs={variant['obs']}", f"precision={args.precision}",
                         f"compile={args.compile}", f"image_size={args.image_size}", f"batch_size={args.batch}",
                         f"batch_length={args.length}", "optim.warmup=0", f"device={device.type}",
                         f"cuda_graphs={args.cuda_graphs}", *extra])


def measure(variant: dict[str, str], members: int, single: bool, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    """Build ``members`` agents (one :class:`Agent` when ``single``), warm up, time ``--updates`` updates."""
    cfg = config(variant, args, device)
    state_dim = args.state_dim if "state" in variant["obs"] else 0
    start = time.perf_counter()
    if single:
        torch.manual_seed(0)
        agent = Agent(cfg, args.action_dim, state_dim).to(device)
        feature_dim = agent.wm.encoder.feature_dim if agent.caches_features else 0
        step = agent.update
    else:
        batch = MemberBatch(cfg, list(range(members)), args.action_dim, state_dim, device)
        agent = batch.members[0]
        feature_dim = agent.wm.encoder.feature_dim if agent.caches_features else 0
        step = batch.update
    build = time.perf_counter() - start
    phases: dict[str, float] = {}
    if args.phases:
        _time_phases(batch if not single else agent, single, phases)
    replays = [synthetic_replay(args.replay_steps, args.image_size, args.action_dim, args.state_dim, variant["obs"],
                                args.seed + e, feature_dim) for e in range(members)]

    def sample() -> dict[str, torch.Tensor]:
        batches = [r.sample(args.batch, args.length, device) for r in replays]
        return batches[0] if single else stack_batches(batches)

    start = time.perf_counter()
    step(sample())
    sync(device)
    first = build + time.perf_counter() - start
    for _ in range(args.warmup):
        step(sample())
    sync(device)
    times = []
    for _ in range(args.updates):
        t0 = time.perf_counter()
        step(sample())
        sync(device)
        times.append(time.perf_counter() - t0)
    mean = float(np.mean(times))
    total = args.updates + args.warmup + 1
    per_phase = {k: v / total / members for k, v in phases.items()}  # every update was timed by the wrappers
    return {"phases": per_phase,"variant": ":".join(variant.values()), "members": members, "single": single,
            "first_update_s": first, "s_per_update": mean, "s_per_member_update": mean / members,
            "s_per_update_min": float(np.min(times)), "updates": args.updates}


def _time_phases(obj: Any, single: bool, into: dict[str, float]) -> None:
    """Wrap the parts of ``obj``'s update (an :class:`Agent` or a :class:`MemberBatch`) so that each call adds its
    wall time to ``into[part]``."""

    def timed(fn: Any, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - t0
        return call

    opts = ("wm_opt", "actor_opt", "critic_opt")
    if single:
        agent = obj
        agent.wm.loss = timed(agent.wm.loss, "world model loss")
        agent.ac.imagine = timed(agent.ac.imagine, "imagine")
        agent.ac.critic_terms = timed(agent.ac.critic_terms, "critic loss")
        agent.ac.actor_terms = timed(agent.ac.actor_terms, "actor loss")
        agent.ac.repval_loss = timed(agent.ac.repval_loss, "repval loss")
    else:
        names = {"filter_inputs": "world model loss", "observe": "world model loss",
                 "loss_terms": "world model loss", "imagine": "imagine", "critic_terms": "critic loss",
                 "actor_terms": "actor loss", "repval0": "repval loss", "repval1": "repval loss"}
        region = obj._region

        def wrapped(name: str, fn: Any, in_dims: Any = 0, compile: bool = True) -> Any:
            return timed(region(name, fn, in_dims, compile), names.get(name, name))

        obj._region = wrapped
    for name in opts:
        opt = getattr(obj, name)
        opt.step = timed(opt.step, f"{name} step")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated SIZE:OBS[:ENCODER:DECODER]")
    p.add_argument("--members", default="1,2,4,8", help="comma-separated member counts E")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--compile", default="off", choices=("off", "on"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--state-dim", type=int, default=24)
    p.add_argument("--replay-steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the issue's setting: 1 per process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda-graphs", default="off", choices=("auto", "on", "off"),
                   help="cuda_graphs of the agents (auto: CUDA graphs with --compile on on CUDA)")
    p.add_argument("--phases", action="store_true", help="also time each part of the update (per member-update)")
    p.add_argument("--json", default="", help="write the rows here")
    args = p.parse_args(argv)
    try:
        counts = sorted({int(x) for x in args.members.split(",") if x})
    except ValueError:
        sys.exit(f"error: --members {args.members!r} must be comma-separated integers >= 1, e.g. 1,2,4,8")
    if not counts or counts[0] < 1:
        sys.exit(f"error: --members {args.members!r} must be comma-separated integers >= 1, e.g. 1,2,4,8")
    if args.updates < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("error: --updates and --threads must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA device is available; use --device cpu")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [parse_variant(v) for v in args.variants.split(",") if v]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"seed batch | device {args.device} ({name}) | torch {torch.__version__} threads {torch.get_num_threads()} "
          f"| {args.precision} compile={args.compile} | B x T {args.batch} x {args.length} | load avg "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    width = max(30, *(len(":".join(v.values())) for v in variants))
    print(f"{'variant':<{width}} {'E':>9} {'first update s':>14} {'s/update':>9} {'s/member-update':>15} "
          f"{'ratio':>6}", flush=True)
    rows, first_ratio = [], None
    for v in variants:
        base = measure(v, 1, True, args, device)
        base["ratio"] = 1.0
        todo = [(base, "1 single")]
        for e in counts:
            row = measure(v, e, False, args, device)
            row["ratio"] = row["s_per_member_update"] / base["s_per_member_update"]
            todo.append((row, f"{e} batch"))
        for row, label in todo:
            rows.append(row)
            print(f"{row['variant']:<{width}} {label:>9} {row['first_update_s']:>14.1f} {row['s_per_update']:>9.3f} "
                  f"{row['s_per_member_update']:>15.4f} {row['ratio']:>6.2f}", flush=True)
            if row["phases"]:
                print("    " + ", ".join(f"{k} {t:.3f}" for k, t in row["phases"].items()), flush=True)
            if first_ratio is None and v is variants[0] and row["members"] == 4 and not row["single"]:
                first_ratio = row["ratio"]
    print("ratio: per-member s/update divided by the single agent's (E=1 single) of the same variant, this run "
          "(< 1: a member costs less in a batch)")
    if args.json:
        files.write_json(args.json, {"device": args.device, "device_name": name, "torch": torch.__version__,
                                     "args": vars(args), "rows": rows})
    label = ":".join(variants[0].values())
    print(f"per-member cost E=4 / E=1: {first_ratio:.3f} ({label})" if first_ratio is not None
          else "per-member cost E=4 / E=1: not measured (--members has no 4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
