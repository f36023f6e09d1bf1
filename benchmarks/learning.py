"""Learning check: train from pixels on dm_control tasks and compare the training-episode returns with
DreamerV3's published DMC-vision curves at the same env steps.

The reference file (``dmc_vision-dreamerv3.json.gz``, records ``{task, method, seed, xs, ys}``, ``xs`` in env
steps) is read from ``--reference`` (default ``../shared/reference/``); it is never copied into this repo.

    python benchmarks/learning.py run --tasks dmc:cartpole_balance,dmc:walker_stand --out runs/learning \\
        size=XS batch_length=32 train_ratio=32            # trains, then reports
    python benchmarks/learning.py report runs/learning    # report on finished or still-running runs

The report prints, per task and env-step bin, our mean training return, the reference mean over its seeds at
the same env steps, and the ratio ours / reference; and writes ``report.json`` and ``report.png`` into the
output directory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DEFAULT_REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "dmc_vision-dreamerv3.json.gz"


def load_reference(path: Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference curves of ``task`` (``dmc:cartpole_balance``) as ``(xs, ys)`` with ``ys`` ``(seeds, len(xs))``,
    each seed's curve linearly interpolated onto a common env-step grid."""
    name = "dmc_" + task.split(":", 1)[1]
    with gzip.open(path, "rt") as f:
        records = [r for r in json.load(f) if r["task"] == name]
    if not records:
        raise SystemExit(f"error: task {name!r} not in reference file {path}")
    grid = np.arange(0, min(max(r["xs"]) for r in records) + 1, 1000)
    ys = np.stack([np.interp(grid, r["xs"], r["ys"]) for r in records])
    return grid, ys


def our_curve(run_dir: Path, bin_size: int) -> dict[int, float]:
    """Mean training-episode return per env-step bin ``(edge - bin_size, edge]`` from ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    out: dict[int, list[float]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "episode":
            edge = int(np.ceil(rec["env_steps"] / bin_size) * bin_size)
            out.setdefault(edge, []).append(rec["return"])
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def report(out_dir: Path, reference: Path, bin_size: int) -> dict:
    """Print and save the comparison for every run under ``out_dir``."""
    result = {}
    for run_dir in sorted(p for p in out_dir.iterdir() if (p / "metrics.jsonl").exists()):
        task = json.loads((run_dir / "config.json").read_text())["config"]["env"]
        grid, ys = load_reference(reference, task)
        ref_mean = ys.mean(0)
        rows = []
        for edge, ours in our_curve(run_dir, bin_size).items():
            # the reference's mean training return over the same bin
            mask = (grid > edge - bin_size) & (grid <= edge)
            ref = float(ref_mean[mask].mean()) if mask.any() else float("nan")
            rows.append({"env_steps": edge, "ours": ours, "reference": ref, "ratio": ours / ref if ref else None})
        result[task] = {"run_dir": str(run_dir), "rows": rows}
        print(f"\n{task}  ({run_dir})")
        print(f"{'env steps':>10} {'ours':>8} {'DreamerV3':>10} {'ratio':>6}")
        for r in rows:
            print(f"{r['env_steps']:>10} {r['ours']:>8.1f} {r['reference']:>10.1f} {r['ratio']:>6.2f}")
    (out_dir / "report.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, max(1, len(result)), figsize=(5 * max(1, len(result)), 3.5), squeeze=False)
        for ax, (task, res) in zip(axes[0], result.items(), strict=False):
            grid, ys = load_reference(reference, task)
            ax.plot(grid, ys.mean(0), label="DreamerV3 (published, mean of seeds)")
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2)
            ax.plot([r["env_steps"] for r in res["rows"]], [r["ours"] for r in res["rows"]], "o-", label="dreamshift")
            ax.set_title(task)
            ax.set_xlabel("env steps")
            ax.set_ylabel("training episode return")
            ax.set_xlim(0, max([r["env_steps"] for r in res["rows"]] + [10_000]) * 1.1)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "report.png", dpi=100)
    except ImportError:
        print("(matplotlib not installed: no report.png)")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tasks", default="dmc:cartpole_balance,dmc:walker_stand")
    r.add_argument("--out", default="runs/learning")
    r.add_argument("--steps", type=int, default=50_000)
    r.add_argument("--parallel", action="store_true", help="train the tasks at the same time (1 thread each)")
    r.add_argument("overrides", nargs="*", help="extra dreamshift train overrides")
    q = sub.add_parser("report")
    q.add_argument("out")
    for s in (r, q):
        s.add_argument("--reference", type=Path, default=DEFAULT_REF)
        s.add_argument("--bin", type=int, default=5000, help="env steps per comparison bin")
    args = p.parse_args()
    if args.cmd == "run":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        procs = []
        for task in args.tasks.split(","):
            cmd = [sys.executable, "-m", "mbrl.cli", "train", f"env={task}", f"steps={args.steps}",
                   f"run_dir={out / task.replace(':', '_')}", "progress=false", *args.overrides]
            if args.parallel:
                cmd.append("threads=1")
            print("$", " ".join(cmd), flush=True)
            proc = subprocess.Popen(cmd)
            if args.parallel:
                procs.append(proc)
            elif proc.wait():
                raise SystemExit(proc.returncode)
        if any(proc.wait() for proc in procs):
            raise SystemExit(1)
        report(out, args.reference, args.bin)
    else:
        report(Path(args.out), args.reference, args.bin)


if __name__ == "__main__":
    main()
