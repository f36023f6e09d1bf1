"""Update speed of dreamshift against sheeprl's DreamerV3, on the same work, measured in one run.

    python benchmarks/peers.py setup                      # once: sheeprl 0.8.4 in its own venv, .peers/sheeprl
    python benchmarks/peers.py run                        # XS and S, fp32 and bf16, 3 timed updates each
    python benchmarks/peers.py run --sizes S --precisions bf16 --updates 5 --warmup 2 --threads 2 --json runs/peers.json

``setup`` makes ``.peers/sheeprl`` (git-ignored) with ``python3 -m venv``, then installs ``torch==2.13.0`` and then
``sheeprl[dmc]==0.8.4 dm_control==1.0.28 mujoco==3.3.0`` with that venv's pip (pip's own configuration picks the
index; ``--torch-index-url https://download.pytorch.org/whl/cpu`` for the CPU-only torch wheel). It does nothing
when ``import sheeprl`` already works there, so it can be run any number of times.

``run`` times, for every ``--sizes`` x ``--precisions``:

- sheeprl: ``benchmarks/peers_sheeprl.py`` under sheeprl's interpreter, its DreamerV3 exactly as
  ``exp=dreamer_v3_dmc_walker_walk algo=dreamer_v3_<SIZE>`` builds it (default optimisers: Adam, lr 1e-4 / 3e-5,
  clipping 1000 / 100; dynamics backpropagation for the continuous actor), with only the accelerator (cpu), the
  precision (``32-true`` / ``bf16-mixed``) and B x T 16 x 64, 64 x 64 RGB set (see that file's docstring);
- dreamshift: ``benchmarks/update_speed.py``'s ``measure`` on the variant ``SIZE:pixels:PRECISION:off`` with 6
  continuous actions, once per ``--algos`` preset (``dreamerv3``: what dreamshift trains with by default, the current
  reference code; ``dreamerv3_2023``: the 2023 paper's recipe that sheeprl implements, the closest work to sheeprl's).

Each measurement runs in a fresh process (``peers.py dreamshift`` is the internal worker for dreamshift's side),
with the same ``--threads`` (``torch.set_num_threads`` plus ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``); the
implementations alternate, and the order flips from one configuration to the next so neither always runs first.
In each process the first update (building, lazy initialisation) is untimed, then ``--warmup`` untimed updates,
then ``--updates`` timed ones. Then dreamshift-only rows: ``size1m:state`` fp32 and bf16, and a frozen pretrained
encoder row (``--encoder-variants``, ``S:pixels:PRECISION:off:efficientnet-lite0:features``: the backbone's
features cached in replay, so an update runs only the encoder head) when ``update_speed.py`` accepts that variant
(it is skipped otherwise).

What an update contains: both do one world-model step, imagination of H=15 from all B x T posteriors, one actor and
one critic step and the EMA (tau 0.02) of the target / slow critic. dreamshift's ``dreamerv3`` preset trains the
actor by REINFORCE (the imagination needs no graph) and adds the replay value loss (``repval``); ``dreamerv3_2023``
and sheeprl back-propagate the returns through the imagined dynamics. dreamshift's time includes sampling its replay
(``sample_s`` in the JSON rows, measured apart); sheeprl's batch is made before its timer starts. Both presets keep
dreamshift's block-diagonal GRU (8 blocks) where sheeprl has a dense LayerNorm GRU (same widths; the parameter
counts are printed), and sheeprl runs with its ``float32_matmul_precision: high`` (TF32 where the CPU has it).

The table prints ``speed-up (sheeprl / ours)``: sheeprl's mean s/update divided by dreamshift's (> 1: dreamshift is
faster). The load average is printed at the start and the end; when other work kept more than half the CPUs busy
the numbers are pessimistic and noisy, and a warning says so. ``--json`` writes every row (``envs.files.write_json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PEER_VENV = ROOT / ".peers" / "sheeprl"
SHEEPRL_PACKAGES = ["sheeprl[dmc]==0.8.4", "dm_control==1.0.28", "mujoco==3.3.0"]
TORCH_PACKAGE = "torch==2.13.0"
SIZES = ("XS", "S", "M", "L", "XL")
PRECISIONS = ("fp32", "bf16")
ALGOS = ("dreamerv3", "dreamerv3_2023")
ACTION_DIM = 6  # walker_walk
STATE_DIM = 24  # walker_walk's state vector
STATE_ROWS = "size1m:state:fp32:off,size1m:state:bf16:off"
ENCODER_ROWS = "S:pixels:fp32:off:efficientnet-lite0:features,S:pixels:bf16:off:efficientnet-lite0:features"


# --- pure helpers (tests/test_peers.py) ---------------------------------------------------------------------------


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """``"XS,S"`` -> ``["XS", "S"]``; exits with an ``error:`` line for an empty list or an unknown item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        sys.exit(f"error: --{what} {text!r}: allowed {', '.join(allowed)} (comma-separated)")
    return items


def parse_result_line(stdout: str, impl: str) -> dict[str, Any]:
    """The last line of ``stdout`` that is a JSON object with ``"impl": impl``.

    Raises:
        ValueError: no such line.
    """
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("impl") == impl:
            return row
    raise ValueError(f"no {impl} result line in the output")


def speedup(peer_s: float | None, ours_s: float | None) -> float | None:
    """``peer_s / ours_s`` (> 1: ours is faster); ``None`` when either is missing or not positive."""
    if peer_s is None or ours_s is None or peer_s <= 0 or ours_s <= 0:
        return None
    return peer_s / ours_s


def load_warning(start: float, end: float, cpus: int, threads: int) -> str | None:
    """A warning when other work kept more than half the CPUs busy: the load at the start, or the load at the end
    less the benchmark's own ``threads`` (the 1-minute average then still counts the last measurement)."""
    other = max(start, end - threads)
    if other > cpus / 2:
        return (f"warning: load average {start:.2f} at the start, {end:.2f} at the end on {cpus} CPUs (other work "
                f"~{other:.2f} > {cpus / 2:g}): the timings are pessimistic and noisy; rerun in a quiet window")
    return None


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per dreamshift measurement, beside sheeprl's for the same size and precision (if any)."""
    peers = {(r["size"], r["precision"]): r for r in rows if r["impl"] == "sheeprl"}
    out = []
    for r in rows:
        if r["impl"] != "dreamshift":
            continue
        peer = peers.get((r["size"], r["precision"])) if r.get("obs") == "pixels" and not r.get("encoder") else None
        ours, theirs = r.get("s_per_update"), (peer or {}).get("s_per_update")
        out.append({"size": r["size"], "obs": r.get("obs", "pixels"), "precision": r["precision"],
                    "variant": r.get("variant", ""), "algo": r.get("algo", ""),
                    "sheeprl_s_per_update": theirs, "dreamshift_s_per_update": ours,
                    "speedup": speedup(theirs, ours),
                    "sheeprl_params": (peer or {}).get("params"), "dreamshift_params": r.get("params"),
                    "error": r.get("error") or (peer or {}).get("error")})
    return out


def format_table(lines: list[dict[str, Any]]) -> str:
    """The printed table of :func:`table_rows`."""

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    def params(x: int | None) -> str:
        return "-" if x is None else f"{x / 1e6:.1f}M"

    header = (f"{'size':<7} {'precision':<9} {'obs / encoder:decoder':<34} {'dreamshift algo':<15} "
              f"{'sheeprl s/update':>16} {'dreamshift s/update':>19} {'speed-up (sheeprl / ours)':>25} "
              f"{'params (sheeprl / ours)':>23}")
    out = [header, "-" * len(header)]
    for r in lines:
        what = ":".join(r["variant"].split(":")[4:]) or r["obs"]
        out.append(f"{r['size']:<7} {r['precision']:<9} {what:<34} {r['algo']:<15} "
                   f"{num(r['sheeprl_s_per_update'], '.3f'):>16} {num(r['dreamshift_s_per_update'], '.3f'):>19} "
                   f"{num(r['speedup'], '.2f'):>25} "
                   f"{params(r['sheeprl_params']) + ' / ' + params(r['dreamshift_params']):>23}"
                   + (f"  error: {r['error']}" if r.get("error") else ""))
    return "\n".join(out)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a measurement process: the caller's, with the BLAS/OpenMP pools at ``threads``."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


# --- setup --------------------------------------------------------------------------------------------------------


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def sheeprl_ready(venv: Path) -> bool:
    python = peer_python(venv)
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", "import sheeprl"], capture_output=True).returncode == 0


def setup(args: argparse.Namespace) -> int:
    venv = Path(args.venv)
    if sheeprl_ready(venv):
        print(f"sheeprl already importable in {venv}: nothing to do")
        return 0
    if not peer_python(venv).exists():
        print(f"+ {args.python} -m venv {venv}", flush=True)
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    pip = [str(peer_python(venv)), "-m", "pip", "install"]
    torch_cmd = pip + [TORCH_PACKAGE] + (["--index-url", args.torch_index_url] if args.torch_index_url else [])
    for cmd in (torch_cmd, pip + SHEEPRL_PACKAGES):
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if not sheeprl_ready(venv):
        sys.exit(f"error: sheeprl still not importable in {venv} after the install")
    print(f"sheeprl ready: {peer_python(venv)}")
    return 0


# --- dreamshift worker (one measurement in a fresh process) -------------------------------------------------------


def dreamshift_worker(args: argparse.Namespace) -> int:
    """``update_speed.py`` on one variant, with ``algo=<--algo>`` added to its configuration; prints one JSON line."""
    sys.path.insert(0, str(BENCH))
    import torch
    import update_speed

    from mbrl.agent import Agent

    configs = []
    build = update_speed.build_config

    def build_with_algo(overrides: list[str]):
        cfg = build([*overrides, f"algo={args.algo}"])
        configs.append(cfg)
        return cfg

    update_speed.build_config = build_with_algo  # measure() builds its config through this module attribute
    variant = update_speed.parse_variant(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        update_speed.main(["--variants", args.variant, "--updates", str(args.updates), "--warmup", str(args.warmup),
                           "--threads", str(args.threads), "--action-dim", str(ACTION_DIM),
                           "--state-dim", str(STATE_DIM), "--batch", "16", "--length", "64", "--image-size", "64",
                           "--json", str(out)])
        row = json.loads(out.read_text())["rows"][0]
    cfg = configs[-1]
    state_dim = STATE_DIM if "state" in variant["obs"] else 0
    agent = Agent(cfg, ACTION_DIM, state_dim)
    params = sum(p.numel() for p in agent.parameters() if p.requires_grad)
    feature_dim = agent.wm.encoder.feature_dim if agent.caches_features else 0
    replay = update_speed.synthetic_replay(200, 64, ACTION_DIM, STATE_DIM, variant["obs"], 0,
                                           **({"feature_dim": feature_dim} if feature_dim else {}))
    replay.sample(16, 64, torch.device("cpu"))
    t0 = time.perf_counter()
    for _ in range(3):
        replay.sample(16, 64, torch.device("cpu"))
    sample_s = (time.perf_counter() - t0) / 3
    print(json.dumps({**row, "impl": "dreamshift", "algo": args.algo, "params": int(params), "sample_s": sample_s,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    return 0


# --- run ----------------------------------------------------------------------------------------------------------


def encoder_variant_ok(variant: str) -> bool:
    """Whether ``update_speed.parse_variant`` accepts ``variant`` (encoder variants are newer than this file)."""
    sys.path.insert(0, str(BENCH))
    import update_speed

    try:
        update_speed.parse_variant(variant)
    except SystemExit:
        return False
    return True


def measure(cmd: list[str], impl: str, base: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """Run one measurement process; its result row, or ``base`` with an ``error``."""
    label = " ".join(f"{k}={v}" for k, v in base.items() if k != "impl")
    print(f"  {impl:<10} {label} ...", end="", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads), timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f" timed out after {timeout:.0f} s", flush=True)
        return {**base, "impl": impl, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    try:
        row = {**base, **parse_result_line(proc.stdout, impl)}
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        print(f" failed (exit {proc.returncode}): {tail}", flush=True)
        return {**base, "impl": impl, "error": f"exit {proc.returncode}: {tail}"}
    print(f" {row['s_per_update']:.3f} s/update (min {row['s_per_update_min']:.3f}; process {wall:.0f} s)",
          flush=True)
    return row


def run(args: argparse.Namespace) -> int:
    sizes = parse_list(args.sizes, SIZES, "sizes")
    precisions = parse_list(args.precisions, PRECISIONS, "precisions")
    algos = parse_list(args.algos, ALGOS, "algos")
    if args.updates < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("error: --updates and --threads must be >= 1 and --warmup >= 0")
    python = Path(args.sheeprl_python) if args.sheeprl_python else peer_python(Path(args.venv))
    if not python.exists():
        sys.exit(f"error: no sheeprl interpreter at {python}; run `python benchmarks/peers.py setup` first")
    if args.json:
        from envs import files

        try:
            files.check_output_file(args.json, "--json")
        except files.OutputPathError as e:
            sys.exit(f"error: {e}")
    cpus = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    print(f"peers | {cpus} CPUs, load avg {load_start:.2f} | threads {args.threads} | B x T 16 x 64, 64 px, "
          f"{ACTION_DIM} actions | {args.warmup} warm-up + {args.updates} timed updates | sheeprl: {python}",
          flush=True)
    budget = ["--updates", str(args.updates), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    ours = [sys.executable, str(Path(__file__).resolve()), "dreamshift", *budget]
    rows: list[dict[str, Any]] = []
    for i, (size, precision) in enumerate((s, p) for s in sizes for p in precisions):
        jobs = [("sheeprl", [str(python), str(BENCH / "peers_sheeprl.py"), "--size", size, "--precision", precision,
                             *budget], {"size": size, "precision": precision, "obs": "pixels"})]
        variant = f"{size}:pixels:{precision}:off"
        jobs += [("dreamshift", [*ours, "--variant", variant, "--algo", algo],
                  {"size": size, "precision": precision, "obs": "pixels", "variant": variant, "algo": algo})
                 for algo in algos]
        for impl, cmd, base in jobs if i % 2 == 0 else reversed(jobs):
            rows.append(measure(cmd, impl, base, args.threads, args.timeout))
    extra = [v for v in args.state_variants.split(",") if v]
    for v in [v for v in args.encoder_variants.split(",") if v]:
        if encoder_variant_ok(v):
            extra.append(v)
        else:
            print(f"  skipped {v}: benchmarks/update_speed.py has no such variant (no encoder variants yet)")
    for variant in extra:
        fields = variant.split(":")
        base = {"size": fields[0], "obs": fields[1], "precision": fields[2], "variant": variant, "algo": "dreamerv3"}
        rows.append(measure([*ours, "--variant", variant, "--algo", "dreamerv3"], "dreamshift", base, args.threads,
                            args.timeout))
    load_end = os.getloadavg()[0]
    lines = table_rows(rows)
    print()
    print(format_table(lines))
    print("speed-up: sheeprl's mean s/update / dreamshift's, measured in this run (> 1: dreamshift is faster)")
    print(f"load avg: {load_start:.2f} at the start, {load_end:.2f} at the end ({cpus} CPUs)")
    warning = load_warning(load_start, load_end, cpus, args.threads)
    if warning:
        print(warning)
    if args.json:
        from envs import files

        files.write_json(args.json, {"cpus": cpus, "load_avg": {"start": load_start, "end": load_end},
                                  "warning": warning, "args": vars(args), "rows": rows, "table": lines})
        print(f"wrote {args.json}")
    return 1 if any(r.get("error") for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="make .peers/sheeprl (skipped when sheeprl is already importable there)")
    s.add_argument("--venv", default=str(PEER_VENV))
    s.add_argument("--python", default="python3", help="the interpreter that makes the venv")
    s.add_argument("--torch-index-url", default="", help="pip index for torch (e.g. the CPU-only wheels)")
    r = sub.add_parser("run", help="time sheeprl and dreamshift")
    r.add_argument("--sizes", default="XS,S")
    r.add_argument("--precisions", default="fp32,bf16")
    r.add_argument("--algos", default=",".join(ALGOS), help="dreamshift algo presets timed against sheeprl")
    r.add_argument("--updates", type=int, default=3)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--state-variants", default=STATE_ROWS, help="dreamshift-only update_speed variants")
    r.add_argument("--encoder-variants", default=ENCODER_ROWS,
                   help="dreamshift-only frozen-encoder variants, skipped when update_speed.py lacks them")
    r.add_argument("--venv", default=str(PEER_VENV))
    r.add_argument("--sheeprl-python", default="", help="sheeprl's interpreter (default: the venv's)")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement process")
    r.add_argument("--json", default="", help="write all rows here")
    w = sub.add_parser("dreamshift", help="internal: one dreamshift measurement, one JSON line")
    w.add_argument("--variant", required=True)
    w.add_argument("--algo", default="dreamerv3", choices=ALGOS)
    w.add_argument("--updates", type=int, default=3)
    w.add_argument("--warmup", type=int, default=1)
    w.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    return {"setup": setup, "run": run, "dreamshift": dreamshift_worker}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
