"""Throughput benchmark: how fast dreamshift collects experience and trains, and how much memory it needs.

    python benchmarks/throughput.py                                   # defaults: walker_walk, sizes XS,S
    python benchmarks/throughput.py --sizes XS,S --updates 2 --collect-steps 200 --json runs/throughput.json
    python benchmarks/throughput.py --no-collect --synthetic --device cuda --batch 16 --length 64

What is measured (all in one process, one phase after another, nothing overlapping):

1. **Collection**, in **env steps per second** (env steps = agent steps x ``--action-repeat``, i.e. dm_control
   control steps, the unit of ``Config.steps``), 64x64 px rendering as in training:

   - ``raw``: uniform random actions, no model. ``single`` is one :func:`envs.make_env` env stepped in this
     process (the **baseline** of every ratio in this section); ``vector N`` is :func:`envs.make_vector_env`
     with ``N`` sub-envs (``N = 1``: in-process ``SyncVectorEnv``; ``N > 1``: one spawned subprocess per
     sub-env, ``AsyncVectorEnv``), as the training loop builds it.
   - ``policy``: the same envs with the agent in the loop, exactly as :func:`mbrl.runs.train._loop` collects after
     prefill: ``Agent.act`` (encoder + RSSM posterior step + actor sample, ``--policy-size``), the action back to
     numpy, ``env.step`` and ``Replay.add_batch`` (plus the final observation at episode ends). No training
     updates are interleaved, so this is the collection ceiling of the training loop. ``ms/act`` is the mean
     wall time of one ``Agent.act`` call (all ``N`` envs at once).

   Each row runs ``--collect-steps`` agent steps summed over its envs (``ceil(steps / N)`` vector steps) after a
   reset and ``--warmup-steps`` untimed steps; episode resets that fall inside the window are timed.

2. **Training**: one update is ``Replay.sample(B, T)`` + ``Agent(cfg, A).train_step(batch)`` (world model,
   imagination, actor and critic updates), ``B x T = --batch x --length`` (default 16 x 64, DreamerV3's), on
   ``--image-size`` px frames from a :class:`mbrl.replay.Replay` filled with ``--replay-steps`` real env frames
   under random actions (``--synthetic``: random uint8 images, random actions and rewards). After
   ``--warmup-updates`` untimed updates, ``--updates`` updates are timed one by one. Reported: seconds/update
   (mean; min in the JSON), updates/s, replayed agent steps/s (``B * T`` per update) and the ratio of each
   size's seconds/update to the first size's (e.g. ``S / XS``), measured in this run.
   For orientation only, seconds/update of size ``S`` is also divided by an **external** figure that this
   script does NOT measure (:data:`SHEEPRL_S_SEC_PER_UPDATE`, see its comment).

3. **Memory**: the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, MiB; a high-water
   mark, so it never decreases) after each phase, the largest peak RSS (``VmHWM``, Linux) of the async env
   worker processes, ``torch.cuda.max_memory_allocated`` per phase on CUDA, and trainable parameter counts per
   size (encoder, RSSM, decoder, reward + continue heads, actor, critic; the slow critic is a frozen copy of
   the critic and not counted).

The machine's load average is printed before and after: other processes competing for the CPU make every
number here pessimistic. ``--json PATH`` writes all results (and the settings) atomically with
:func:`envs.files.write_json`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

# Import ``envs`` before anything that imports dm_control (it selects the headless GL backend).
import envs  # isort: skip
from envs import files
from envs.driver import Driver, Episode, Step  # noqa: E402
from envs.errors import ConfigError  # noqa: E402
from mbrl.agent import Agent
from mbrl.config import SIZES, Config, build_config
from mbrl.policy import AgentPolicy  # noqa: E402
from mbrl.replay import Replay  # noqa: E402
from mbrl.runs.train import ReplayWriter  # noqa: E402
from mbrl.runtime import resolve_device  # noqa: E402

#: sheeprl's DreamerV3 size ``S``: seconds per update on this class of 2-core CPU, as measured by the project
#: lead. External: NOT measured by this script, other code, possibly other batch/settings; orientation only.
SHEEPRL_S_SEC_PER_UPDATE = 12.0
SHEEPRL_NOTE = ("sheeprl DreamerV3 S: 12 s/update on this class of 2-core CPU, measured by the project lead "
                "(external figure, not measured in this run)")


# ------------------------------------------------------------------------------------------------ helpers
def peak_rss_mib() -> float:
    """Peak resident set size (high-water mark) of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS: bytes; Linux: KiB


def worker_peak_rss_mib(venv: Any) -> float | None:
    """Largest peak RSS (``VmHWM``, MiB) of an ``AsyncVectorEnv``'s live worker processes; None if it has none
    or ``/proc`` is unavailable (non-Linux). Read before ``close()``."""
    peaks = []
    for proc in getattr(venv, "processes", []):
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                peaks += [int(line.split()[1]) / 2**10 for line in f if line.startswith("VmHWM:")]
        except OSError:
            return None
    return max(peaks) if peaks else None


def cuda_peak_mib(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB since the last reset, None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_cuda_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_cfg(args: argparse.Namespace, size: str) -> Config:
    """Run config of size ``size`` with this benchmark's env, image and batch settings."""
    return build_config({"env": args.env, "size": size, "image_size": str(args.image_size),
                         "action_repeat": str(args.action_repeat), "batch_size": str(args.batch),
                         "batch_length": str(args.length), "device": args.device,
                         "replay_capacity": str(max(args.replay_steps, args.length)), "seed": str(args.seed)})


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(size=args.image_size, action_repeat=args.action_repeat)


def param_counts(agent: Agent) -> dict[str, int]:
    """Trainable parameters per component and in total."""
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    wm, ac = agent.wm, agent.ac
    out = {"encoder": count(wm.encoder), "rssm": count(wm.rssm), "decoder": count(wm.decoder),
           "heads": count(wm.reward_head) + count(wm.cont_head), "actor": count(ac.actor),
           "critic": count(ac.critic)}
    out["total"] = count(agent)
    return out


# --------------------------------------------------------------------------------------------- collection
def _row(name: str, mode: str, num_envs: int, agent_steps: int, seconds: float, action_repeat: int,
         act_seconds: float | None = None, act_calls: int = 0, worker_rss: float | None = None) -> dict[str, Any]:
    env_steps = agent_steps * action_repeat
    return {"name": name, "mode": mode, "num_envs": num_envs, "agent_steps": agent_steps, "env_steps": env_steps,
            "seconds": seconds, "env_steps_per_s": env_steps / seconds,
            "ms_per_act": 1e3 * act_seconds / act_calls if act_calls else None,
            "worker_peak_rss_mib": worker_rss}


def raw_single(args: argparse.Namespace) -> dict[str, Any]:
    """One ``make_env`` env, random actions, stepped in this process."""
    env = envs.make_env(args.env, seed=args.seed, **env_kwargs(args))
    try:
        rng = np.random.default_rng(args.seed)
        shape = env.action_space.shape
        env.reset(seed=args.seed)

        def step() -> None:
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, shape).astype(np.float32))
            if term or trunc:
                env.reset()

        for _ in range(args.warmup_steps):
            step()
        t0 = time.perf_counter()
        for _ in range(args.collect_steps):
            step()
        seconds = time.perf_counter() - t0
    finally:
        env.close()
    return _row("raw single env", "raw", 1, args.collect_steps, seconds, args.action_repeat)


def raw_vector(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """``make_vector_env`` with ``n`` sub-envs (async for n > 1), random actions."""
    venv = envs.make_vector_env(args.env, n, seed=args.seed, **env_kwargs(args))
    try:
        rng = np.random.default_rng(args.seed)
        shape = (n, *venv.single_action_space.shape)
        venv.reset(seed=args.seed)
        calls = math.ceil(args.collect_steps / n)
        for _ in range(args.warmup_steps):
            venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
        t0 = time.perf_counter()
        for _ in range(calls):
            venv.step(rng.uniform(-1, 1, shape).astype(np.float32))  # SAME_STEP autoreset inside
        seconds = time.perf_counter() - t0
        workers = worker_peak_rss_mib(venv)
    finally:
        venv.close()
    return _row(f"raw vector N={n}", "raw", n, calls * n, seconds, args.action_repeat, worker_rss=workers)


def policy_loop(args: argparse.Namespace, agent: Agent, env: Any, n: int, name: str) -> dict[str, Any]:
    """Collect like :func:`mbrl.runs.train._loop` after prefill: an :class:`envs.driver.Driver` acting with the agent
    and writing to replay through :class:`mbrl.runs.train.ReplayWriter` (no updates). ``env``: a single env (``n``
    = 1) or a vector env of ``n`` sub-envs."""
    try:
        shape = (args.image_size, args.image_size, 3)
        replay = Replay(max(n, min(100_000, (args.collect_steps + (args.warmup_steps + 1) * n) * 2)), n, shape,
                        agent.action_dim)
        agent_policy = AgentPolicy(agent, n, "sample", outs=True)
        act_seconds = 0.0

        def policy(obs: dict[str, np.ndarray], is_first: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
            nonlocal act_seconds
            t = time.perf_counter()
            out = agent_policy(obs, is_first)
            act_seconds += time.perf_counter() - t
            return out

        writer = ReplayWriter(replay, agent)
        driver = Driver(env, policy, on_step=[writer.step], on_episode=[writer.episode])
        driver.reset(seed=args.seed)
        for _ in range(args.warmup_steps):
            driver.step()
        act_seconds = 0.0
        calls = math.ceil(args.collect_steps / n)
        t0 = time.perf_counter()
        for _ in range(calls):
            driver.step()
        seconds = time.perf_counter() - t0
        workers = worker_peak_rss_mib(env)
    finally:
        env.close()
    return _row(name, "policy", n, calls * n, seconds, args.action_repeat, act_seconds, calls, workers)


def run_collection(args: argparse.Namespace, device: torch.device, memory: list[dict]) -> list[dict[str, Any]]:
    rows = [raw_single(args)]
    for n in args.num_envs:
        rows.append(raw_vector(args, n))
    memory.append(_mem("collection: raw", device))
    reset_cuda_peak(device)
    cfg = make_cfg(args, args.policy_size)
    probe = envs.make_env(args.env, seed=args.seed, **env_kwargs(args))
    action_dim = int(probe.action_space.shape[0])
    probe.close()
    torch.manual_seed(args.seed)
    agent = Agent(cfg, action_dim).to(device)
    label = f"policy {args.policy_size}"
    single = envs.make_env(args.env, seed=args.seed, **env_kwargs(args))
    rows.append(policy_loop(args, agent, single, 1, f"{label} + single env"))
    for n in args.num_envs:
        venv = envs.make_vector_env(args.env, n, seed=args.seed, **env_kwargs(args))
        rows.append(policy_loop(args, agent, venv, n, f"{label} + vector N={n}"))
    base = rows[0]["env_steps_per_s"]
    for r in rows:
        r["ratio_to_baseline"] = r["env_steps_per_s"] / base
    memory.append(_mem(f"collection: policy {args.policy_size}", device))
    return rows


# ----------------------------------------------------------------------------------------------- training
def fill_replay(args: argparse.Namespace, action_dim: int) -> Replay:
    """Replay with ``--replay-steps`` steps of one env stream: real frames (random actions) or synthetic."""
    shape = (args.image_size, args.image_size, 3)
    replay = Replay(args.replay_steps, 1, shape, action_dim, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    if args.synthetic:
        for t in range(args.replay_steps):
            replay.add(0, {"image": rng.integers(0, 256, shape, dtype=np.uint8),
                           "action": rng.uniform(-1, 1, action_dim).astype(np.float32),
                           "reward": np.float32(rng.uniform()), "is_first": t == 0, "is_terminal": False})
        return replay
    env = envs.make_env(args.env, seed=args.seed, **env_kwargs(args))

    def write(step: Step) -> None:
        replay.add(0, {"image": step.obs["image"][0], "action": step.action[0], "reward": step.reward[0],
                       "is_first": bool(step.is_first[0]), "is_terminal": False})

    def write_last(episode: Episode) -> None:
        if len(replay) < args.replay_steps:
            replay.add(0, {"image": episode.last_obs["image"], "action": np.zeros(action_dim, np.float32),
                           "reward": episode.last_reward, "is_first": False, "is_terminal": episode.terminated})

    driver = Driver(env, rng=rng, on_step=[write], on_episode=[write_last])  # random actions
    try:
        driver.reset(seed=args.seed)
        while len(replay) < args.replay_steps:
            driver.step()
    finally:
        driver.close()
    return replay


def train_size(args: argparse.Namespace, size: str, replay: Replay, action_dim: int,
               device: torch.device) -> dict[str, Any]:
    cfg = make_cfg(args, size)
    torch.manual_seed(args.seed)
    reset_cuda_peak(device)
    agent = Agent(cfg, action_dim).to(device)
    params = param_counts(agent)

    def update() -> tuple[float, float]:
        sync(device)
        t0 = time.perf_counter()
        batch = replay.sample(args.batch, args.length, device)
        sync(device)
        t1 = time.perf_counter()
        agent.train_step(batch)
        sync(device)
        return time.perf_counter() - t0, t1 - t0

    for _ in range(args.warmup_updates):
        update()
    times, sample_times = [], []
    for _ in range(args.updates):
        total, sample = update()
        times.append(total)
        sample_times.append(sample)
    mean = float(np.mean(times))
    return {"size": size, "params": params, "batch": args.batch, "length": args.length, "updates": args.updates,
            "s_per_update": mean, "s_per_update_min": float(np.min(times)),
            "s_per_update_all": [float(t) for t in times], "sample_s_per_update": float(np.mean(sample_times)),
            "updates_per_s": 1.0 / mean, "replayed_steps_per_s": args.batch * args.length / mean,
            "cuda_max_allocated_mib": cuda_peak_mib(device)}


def run_training(args: argparse.Namespace, device: torch.device, memory: list[dict]) -> list[dict[str, Any]]:
    probe = envs.make_env(args.env, seed=args.seed, **env_kwargs(args))
    action_dim = int(probe.action_space.shape[0])
    probe.close()
    replay = fill_replay(args, action_dim)
    memory.append(_mem("replay filled" + (" (synthetic)" if args.synthetic else ""), device))
    rows = []
    for size in args.sizes:
        rows.append(train_size(args, size, replay, action_dim, device))
        memory.append(_mem(f"training {size}", device, cuda=rows[-1]["cuda_max_allocated_mib"]))
        rows[-1]["peak_rss_mib"] = memory[-1]["peak_rss_mib"]
    for r in rows:
        r["ratio_to_first_size"] = r["s_per_update"] / rows[0]["s_per_update"]
    return rows


# ------------------------------------------------------------------------------------------------- output
def _mem(phase: str, device: torch.device, cuda: float | None = None) -> dict[str, Any]:
    return {"phase": phase, "peak_rss_mib": peak_rss_mib(),
            "cuda_max_allocated_mib": cuda if cuda is not None else cuda_peak_mib(device)}


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0 or abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def print_table(title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
    cells = [[_fmt(c) for c in r] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
        print(f"\n{title}")
        print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        for r in cells:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if note:
            print(note)
        return
    table = Table(title=title, caption=note or None, caption_justify="left", title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in cells:
        table.add_row(*r)
    Console(width=max(120, Console().width)).print(table)


def report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print(f"dreamshift throughput | env {meta['env']} {meta['image_size']}px action_repeat {meta['action_repeat']}"
          f" | device {meta['device']} ({meta['device_name']}) | torch {meta['torch']} threads "
          f"{meta['torch_threads']} | {meta['cpu_count']} CPUs | load avg at start {meta['loadavg_start']}, "
          f"end {meta['loadavg_end']}")
    if meta["loaded"]:
        print("warning: the load average exceeded half the CPUs: other processes competed for the CPU, so these "
              "numbers are pessimistic")
    if results["collection"]:
        rows = [[r["name"], r["num_envs"], r["env_steps"], r["seconds"], r["env_steps_per_s"],
                 r["ratio_to_baseline"], r["ms_per_act"]] for r in results["collection"]]
        print_table("Collection (env steps = agent steps x action_repeat)",
                    ["what", "envs", "env steps", "seconds", "env steps/s", "x baseline", "ms/act"], rows,
                    "baseline = raw single env (random actions, make_env, in-process), measured in this run")
    if results["training"]:
        first = results["training"][0]["size"]
        rows = [[r["size"], r["params"]["total"], r["s_per_update"], r["s_per_update_min"], r["updates_per_s"],
                 r["replayed_steps_per_s"], r["ratio_to_first_size"], r["sample_s_per_update"]]
                for r in results["training"]]
        b, t = results["training"][0]["batch"], results["training"][0]["length"]
        print_table(f"Training updates (B x T = {b} x {t}, {meta['image_size']}px, "
                    f"{results['training'][0]['updates']} timed after {meta['warmup_updates']} warm-up; "
                    f"replay: {'synthetic' if meta['synthetic'] else 'real env frames'})",
                    ["size", "params", "s/update", "min s/update", "updates/s", "replayed steps/s",
                     f"s/update ÷ {first}", "of which sample s"], rows,
                    f"ratio column: this size's s/update divided by {first}'s, both measured in this run")
        comps = ["encoder", "rssm", "decoder", "heads", "actor", "critic", "total"]
        print_table("Trainable parameters", ["size", *comps],
                    [[r["size"], *(r["params"][c] for c in comps)] for r in results["training"]])
        ext = results["external"]
        if ext["ours_s_per_update"] is not None:
            print(f"\nEXTERNAL comparison (not measured in this run): {ext['note']}.\n"
                  f"  ours S: {ext['ours_s_per_update']:.3g} s/update -> ours / sheeprl = "
                  f"{ext['ours_over_sheeprl']:.3g} (< 1: ours faster; B x T here {b} x {t})")
    rows = [[m["phase"], m["peak_rss_mib"], m["cuda_max_allocated_mib"]] for m in results["memory"]]
    workers = [r["worker_peak_rss_mib"] for r in results["collection"] if r["worker_peak_rss_mib"] is not None]
    print_table("Peak memory after each phase (MiB; this process's RSS is a high-water mark)",
                ["phase", "peak RSS", "CUDA max allocated"], rows)
    if workers:
        print(f"async env worker processes (one per sub-env): largest peak RSS {max(workers):.0f} MiB (VmHWM)")


# --------------------------------------------------------------------------------------------------- main
def _int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 1, got {text!r}")
    return out


def _size_list(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [s for s in out if s not in SIZES]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"unknown size(s) {', '.join(bad) or text!r}; allowed: {', '.join(SIZES)}")
    return out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="dmc:walker_walk", help="env name, see envs.list_envs()")
    p.add_argument("--image-size", type=_positive, default=64, help="square image side, px")
    p.add_argument("--action-repeat", type=_positive, default=2, help="env steps per agent step")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=_nonneg, default=0, help="torch CPU threads; 0 = torch default")
    p.add_argument("--seed", type=_nonneg, default=0)
    g = p.add_argument_group("collection")
    g.add_argument("--no-collect", action="store_true", help="skip the collection phase")
    g.add_argument("--num-envs", type=_int_list, default="1,2", help="vector env sizes, comma-separated")
    g.add_argument("--collect-steps", type=_positive, default=1000,
                   help="timed agent steps per row, summed over the row's envs")
    g.add_argument("--warmup-steps", type=_nonneg, default=5, help="untimed steps (vector calls) per row")
    g.add_argument("--policy-size", type=lambda s: _size_list(s)[0], default="S",
                   help="model size of the agent in the policy rows")
    g = p.add_argument_group("training")
    g.add_argument("--no-train", action="store_true", help="skip the training phase")
    g.add_argument("--sizes", type=_size_list, default="XS,S", help="model sizes, comma-separated")
    g.add_argument("--batch", type=_positive, default=16, help="B, sequences per batch")
    g.add_argument("--length", type=_positive, default=64, help="T, steps per sequence")
    g.add_argument("--updates", type=_positive, default=3, help="timed updates per size")
    g.add_argument("--warmup-updates", type=_nonneg, default=1, help="untimed updates per size")
    g.add_argument("--replay-steps", type=_positive, default=500, help="agent steps stored in the replay")
    g.add_argument("--synthetic", action="store_true", help="fill the replay with random uint8 frames")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")
    args = p.parse_args(argv)
    if not args.no_train and args.replay_steps < args.length:
        p.error(f"--replay-steps {args.replay_steps} must be >= --length {args.length} to sample sequences")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        envs.registry.parse_env_name(args.env)
        for size in set(args.sizes) | {args.policy_size}:
            make_cfg(args, size)  # validate settings before spending time
    except (ConfigError, envs.EnvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    memory = [_mem("start (imports)", device)]
    results: dict[str, Any] = {"collection": [], "training": [], "memory": memory}
    if not args.no_collect:
        results["collection"] = run_collection(args, device, memory)
    if not args.no_train:
        results["training"] = run_training(args, device, memory)
    load_end = os.getloadavg()
    s_rows = [r for r in results["training"] if r["size"] == "S"]
    ours = s_rows[0]["s_per_update"] if s_rows else None
    results["external"] = {"note": SHEEPRL_NOTE, "sheeprl_S_s_per_update": SHEEPRL_S_SEC_PER_UPDATE,
                           "measured_in_this_run": False, "ours_s_per_update": ours,
                           "ours_over_sheeprl": ours / SHEEPRL_S_SEC_PER_UPDATE if ours is not None else None}
    cpus = os.cpu_count() or 1
    results["meta"] = {
        "argv": sys.argv, "env": args.env, "image_size": args.image_size, "action_repeat": args.action_repeat,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": cpus, "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end], "loaded": max(load_start[0], load_end[0]) > cpus / 2,
        "synthetic": args.synthetic, "warmup_updates": args.warmup_updates, "policy_size": args.policy_size,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "units": {
            "env_steps_per_s": "dm_control control steps per wall second (agent steps x action_repeat)",
            "s_per_update": "wall seconds per Replay.sample + Agent.train_step", "memory": "MiB (2**20 bytes)"}}
    report(results)
    if args.json:
        files.write_json(args.json, results)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
