"""Update speed of one agent configuration against another, measured in the same process.

    python benchmarks/update_speed.py                                       # CPU: S fp32 vs S bf16, size1m state
    python benchmarks/update_speed.py --variants S:pixels:fp32:off,S:pixels:bf16:on --device cuda --updates 50
    python benchmarks/update_speed.py --json runs/update_speed.json
    python benchmarks/update_speed.py --variants size1m:pixels:fp32:off:efficientnet-lite0:pixels,\
size1m:pixels:fp32:off:efficientnet-lite0:features --updates 3           # decoder=features vs pixels

A *variant* is ``SIZE:OBS:PRECISION:COMPILE`` (e.g. ``S:pixels:bf16:on``, ``size1m:state:fp32:off``), optionally
followed by ``:ENCODER`` and ``:DECODER`` (``S:pixels:fp32:off:efficientnet-lite0:features``; default ``cnn`` and
``pixels``; an encoder name with a ``:`` variant such as ``dinov2:small`` is taken whole, the decoder is the last
field when it is ``pixels`` or ``features``). For each variant one :class:`mbrl.agent.Agent` is built and trained
on synthetic replay (random uint8 frames / random state vectors, random actions and rewards, ``--batch`` x
``--length`` sequences, the 16 x 64 of DreamerV3; for a frozen pretrained encoder with the feature cache, random
float16 backbone features of its ``feature_dim`` as well, so an update runs only the encoder head, as in
training). ``--input-size`` sets ``encoder_input_size`` of pretrained encoders.

- ``first_update_s``: wall time from building the agent to the end of its first update (includes
  ``torch.compile`` for ``compile=on``; run twice to see the warm inductor cache);
- ``s_per_update``: mean wall time of ``--updates`` timed updates after ``--warmup`` untimed ones (replay
  sampling included, the device synchronised after each update);
- ``wm_s_per_update``: the same for ``--updates`` world-model-only updates (loss, backward, optimiser step; no
  imagination or actor-critic): the part a decoder change touches;
- ``ratio``: ``s_per_update`` of the first variant of the same observation type and encoder divided by this
  one's (> 1 is faster), measured in this run;
- ``decoder_ratio`` / ``wm_decoder_ratio`` (``decoder=features`` rows): this one's ``s_per_update`` /
  ``wm_s_per_update`` divided by that of the ``decoder=pixels`` variant with the same other fields in this run
  (features ÷ pixels; < 1 is faster).
- ``cuda_peak_mib``: ``torch.cuda.max_memory_allocated`` during the variant (CUDA only).
- ``--bf16-filter`` (bf16 variants on CPU): after the timed updates, the same agent with its filter
  (:meth:`mbrl.rssm.RSSM.observe`) under autocast as well, ``--updates`` more timed updates:
  ``bf16_filter_s_per_update`` and ``fp32_filter_speedup`` (that time / ``s_per_update``; > 1: the fp32 filter
  that ``precision=bf16`` uses on CPU is faster).

No assertions: targets are read off the printed ratios. ``--json`` writes the rows atomically.
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

from envs import files  # noqa: E402
from mbrl.agent import Agent  # noqa: E402
from mbrl.config import Config, build_config  # noqa: E402
from mbrl.replay import Replay  # noqa: E402

DEFAULT_VARIANTS = "S:pixels:fp32:off,S:pixels:bf16:off,size1m:state:fp32:off,size1m:state:bf16:off"


FIELDS = ("size", "obs", "precision", "compile")


def parse_variant(text: str) -> dict[str, str]:
    """``"S:pixels:bf16:on"`` -> ``{"size": "S", "obs": "pixels", "precision": "bf16", "compile": "on"}``;
    ``"S:pixels:fp32:off:efficientnet-lite0:features"`` adds ``"encoder"`` and ``"decoder"``. The decoder is the
    last field when it is ``pixels`` or ``features`` (else ``pixels``), the encoder everything between, so
    ``S:pixels:fp32:off:dinov2:small`` and ``S:pixels:fp32:off:dinov2:small:features`` both work.

    Raises:
        SystemExit: fewer than four fields (an ``error:`` line, exit 2).
    """
    parts = text.split(":")
    if len(parts) < 4 or any(not p for p in parts):
        sys.exit(f"error: variant {text!r} must be SIZE:OBS:PRECISION:COMPILE[:ENCODER[:DECODER]], e.g. "
                 f"S:pixels:bf16:off or S:pixels:fp32:off:efficientnet-lite0:features")
    out = dict(zip(FIELDS, parts[:4], strict=True))
    rest = parts[4:]
    if rest:
        decoder = rest.pop() if len(rest) > 1 and rest[-1] in ("pixels", "features") else "pixels"
        out["encoder"], out["decoder"] = ":".join(rest), decoder
    return out


def synthetic_replay(steps: int, image_size: int, action_dim: int, state_dim: int, obs: str, seed: int,
                     feature_dim: int = 0) -> Replay:
    """A replay of ``steps`` random steps holding what ``obs`` needs (and ``feature_dim`` float16 cached backbone
    features per step when > 0)."""
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size, 3) if "pixels" in obs else None
    replay = Replay(steps, 1, shape, action_dim, seed=seed, state_dim=state_dim if "state" in obs else 0,
                    feature_dim=feature_dim)
    for t in range(steps):
        step: dict[str, Any] = {"action": rng.uniform(-1, 1, action_dim).astype(np.float32),
                                "reward": np.float32(rng.uniform()), "is_first": t % 500 == 0, "is_terminal": False}
        if shape is not None:
            step["image"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if "state" in obs:
            step["state"] = rng.normal(size=state_dim).astype(np.float32)
        if feature_dim:  # non-negative, like post-activation pooled features
            step["features"] = np.abs(rng.normal(size=feature_dim)).astype(np.float16)
        replay.add(0, step)
    return replay


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variant_config(variant: dict[str, str], args: argparse.Namespace, device: torch.device) -> Config:
    """The training configuration of ``variant`` with the run's image size, B x T and no learning-rate warm-up."""
    extra = [f"encoder={variant['encoder']}", f"decoder={variant['decoder']}",
             f"encoder_input_size={args.input_size}"] if "encoder" in variant else []
    return build_config([f"size={variant['size']}", f"obs={variant['obs']}", f"precision={variant['precision']}",
                         f"compile={variant['compile']}", f"image_size={args.image_size}",
                         f"batch_size={args.batch}", f"batch_length={args.length}", "optim.warmup=0",
                         f"device={device.type}", f"cuda_graphs={getattr(args, 'cuda_graphs', 'off')}", *extra])


def measure(variant: dict[str, str], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build, warm up and time one variant; returns its row."""
    cfg = variant_config(variant, args, device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    agent = Agent(cfg, args.action_dim, args.state_dim if "state" in variant["obs"] else 0).to(device)
    build = time.perf_counter() - start
    feature_dim = agent.wm.encoder.feature_dim if agent.caches_features else 0  # the replay is built untimed
    replay = synthetic_replay(args.replay_steps, args.image_size, args.action_dim, args.state_dim, variant["obs"],
                              args.seed, feature_dim)
    start = time.perf_counter()
    agent.update(replay.sample(args.batch, args.length, device))  # a CUDA graph with cuda_graphs (mbrl.graphs)
    sync(device)
    first = build + time.perf_counter() - start
    for _ in range(args.warmup):
        agent.update(replay.sample(args.batch, args.length, device))
    sync(device)
    times = []
    history = []
    watch = device.type == "cuda" and args.sync_debug != "off"  # a host sync inside an update warns or raises
    for _ in range(args.updates):
        t0 = time.perf_counter()
        batch = replay.sample(args.batch, args.length, device)
        if watch:
            torch.cuda.set_sync_debug_mode(args.sync_debug)
        try:
            history.append(agent.update(batch))
        finally:
            if watch:
                torch.cuda.set_sync_debug_mode("default")
        sync(device)
        times.append(time.perf_counter() - t0)
    wm_times = []
    for _ in range(args.updates):
        t0 = time.perf_counter()
        batch = replay.sample(args.batch, args.length, device)
        agent.train()
        with agent.autocast():
            wm_loss = agent.wm.loss(batch)[0]
        agent.wm_opt.step(wm_loss)
        sync(device)
        wm_times.append(time.perf_counter() - t0)
    filter_row: dict[str, Any] = {}
    if args.bf16_filter and variant["precision"] == "bf16" and device.type == "cpu":
        # the same agent with its filter under autocast too (what precision=bf16 did before the fp32 CPU filter)
        agent.wm.rssm.observe_fp32_on_cpu = False
        for _ in range(1 + args.warmup):
            agent.train_step(replay.sample(args.batch, args.length, device))
        bf16_times = []
        for _ in range(args.updates):
            t0 = time.perf_counter()
            agent.train_step(replay.sample(args.batch, args.length, device))
            bf16_times.append(time.perf_counter() - t0)
        agent.wm.rssm.observe_fp32_on_cpu = True
        filter_row = {"bf16_filter_s_per_update": float(np.mean(bf16_times)),
                      "fp32_filter_speedup": float(np.mean(bf16_times) / np.mean(times))}
    agent.check_finite()
    mean = float(np.mean(times))
    from mbrl.agent import fetch_metrics

    loss = fetch_metrics(history).get("wm/loss", float("nan"))
    return {"variant": ":".join(variant.values()), **variant, "first_update_s": first, "s_per_update": mean,
            "s_per_update_min": float(np.min(times)), "updates_per_s": 1.0 / mean, "updates": args.updates,
            "wm_s_per_update": float(np.mean(wm_times)),
            "wm_loss": loss,
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            **filter_row}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help="comma-separated SIZE:OBS:PRECISION:COMPILE[:ENCODER:DECODER]")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=224, help="encoder_input_size of pretrained encoders")
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--state-dim", type=int, default=24)
    p.add_argument("--replay-steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16-filter", action="store_true",
                   help="bf16 CPU variants: also time the same agent with its filter (RSSM.observe) under autocast "
                        "instead of fp32, and print the fp32 filter's speed-up")
    p.add_argument("--sync-debug", default="off", choices=("off", "warn", "error"),
                   help="CUDA: torch.cuda.set_sync_debug_mode around each timed update (error: a host sync fails)")
    p.add_argument("--cuda-graphs", default="off", choices=("auto", "on", "off"),
                   help="the runs' cuda_graphs setting (auto: capture each update as a CUDA graph with compile=on "
                        "on CUDA; default off: the update without graphs)")
    p.add_argument("--json", default="", help="write the rows here")
    args = p.parse_args(argv)
    if args.updates < 1 or args.warmup < 0:
        sys.exit("error: --updates must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA device is available; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [parse_variant(v) for v in args.variants.split(",") if v]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"update speed | device {args.device} ({name}) | torch {torch.__version__} threads "
          f"{torch.get_num_threads()} | B x T {args.batch} x {args.length} | {args.image_size} px | "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    rows, base, pixels = [], {}, {}
    width = max(26, *(len(":".join(v.values())) for v in variants))
    header = (f"{'variant':<{width}} {'first update s':>14} {'s/update':>10} {'updates/s':>10} {'ratio':>7} "
              f"{'peak MiB':>9} {'wm s/update':>11}")
    print(header, flush=True)
    for v in variants:
        row = measure(v, args, device)
        base.setdefault((v["obs"], v.get("encoder", "cnn")), row["s_per_update"])
        row["ratio"] = base[(v["obs"], v.get("encoder", "cnn"))] / row["s_per_update"]
        same = tuple((k, x) for k, x in v.items() if k != "decoder")
        if v.get("decoder", "pixels") == "pixels":
            pixels.setdefault(same, (row["s_per_update"], row["wm_s_per_update"]))
        elif same in pixels:
            row["decoder_ratio"] = row["s_per_update"] / pixels[same][0]
            row["wm_decoder_ratio"] = row["wm_s_per_update"] / pixels[same][1]
        rows.append(row)
        peak = "-" if row["cuda_peak_mib"] is None else f"{row['cuda_peak_mib']:.0f}"
        extra = (f"   features / pixels: update {row['decoder_ratio']:.3f}, world model "
                 f"{row['wm_decoder_ratio']:.3f}") if "decoder_ratio" in row else ""
        if "fp32_filter_speedup" in row:
            extra += (f"   bf16 filter {row['bf16_filter_s_per_update']:.4f} s/update: fp32 filter "
                      f"{row['fp32_filter_speedup']:.2f}x faster")
        print(f"{row['variant']:<{width}} {row['first_update_s']:>14.1f} {row['s_per_update']:>10.4f} "
              f"{row['updates_per_s']:>10.2f} {row['ratio']:>7.2f} {peak:>9} {row['wm_s_per_update']:>11.4f}{extra}",
              flush=True)
    print("ratio: s/update of the first variant with the same obs and encoder divided by this one's (> 1 = faster), "
          "this run")
    if any("decoder_ratio" in r for r in rows):
        print("features / pixels: s/update (whole update; world-model-only update) with decoder=features divided "
              "by the same variant's with decoder=pixels (< 1 = faster), this run")
    if args.json:
        files.write_json(args.json, {"device": args.device, "device_name": name, "torch": torch.__version__,
                                  "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
