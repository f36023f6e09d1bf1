"""``dreamshift sweep`` and ``dreamshift leaderboard`` (registered by :mod:`mbrl.cli`).

    dreamshift sweep experiments/quick.yaml [--out DIR] [--backend local|slurm|submitit-local] [--workers N]
                     [--wandb offline|online|disabled] [--dry-run]
    dreamshift leaderboard RESULTS_DIR|RUN_DIR [--out DIR] [--screenshot] [--reps N]

``--out`` (or the default) is checked before anything runs (:func:`envs.files.check_output_dir`), ``--dry-run``
included; Ctrl-C during a sweep prints one line (finished trials are kept; rerunning resumes), exit 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envs.files import check_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``leaderboard`` to ``sub``."""
    s = sub.add_parser("sweep", help="train + evaluate a grid of (env x encoder x mode x seed) trials")
    s.add_argument("file", help="grid file, e.g. experiments/quick.yaml")
    s.add_argument("--out", help="sweep directory (default runs/sweeps/<name>); rerunning resumes it")
    s.add_argument("--backend", choices=["local", "slurm", "submitit-local"], help="override the file's backend")
    s.add_argument("--workers", type=int, help="local backend: trials at once (override the file)")
    s.add_argument("--wandb", choices=["offline", "online", "disabled"], help="wandb mode of every trial")
    s.add_argument("--dry-run", action="store_true", help="print the trials and exit")
    s.set_defaults(handler=_sweep)
    lb = sub.add_parser("leaderboard", help="CSV/Markdown/JSON/HTML leaderboard from a directory of results")
    lb.add_argument("results_dir", help="directory searched recursively for *.jsonl results (a sweep's results/, "
                    "a run's eval/results), or a run directory evaluated by `dreamshift evaluate RUN [--suite S]`")
    lb.add_argument("--out", help="output directory (default RESULTS_DIR/../leaderboard; RUN/eval/leaderboard)")
    lb.add_argument("--reps", type=int, default=2000, help="bootstrap replications of the CIs")
    lb.add_argument("--screenshot", action="store_true", help="also render index.html in headless Chromium")
    lb.set_defaults(handler=_leaderboard)


def _sweep(args: argparse.Namespace) -> None:
    from envs.errors import ConfigError
    from experiments import spec
    from experiments.sweep import run

    sweep = spec.load(args.file)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    out = check_output_dir(args.out or Path("runs") / "sweeps" / sweep.name, "--out" if args.out else "sweep directory")
    if args.dry_run:
        for t in sweep.trials:
            print(f"{t.id}: " + " ".join(f"{k}={v}" for k, v in t.overrides.items())
                  + f" | suite {t.suite} x {t.episodes} episodes")
        print(f"{len(sweep.trials)} trials -> {out}")
        return
    run(sweep, out, backend=args.backend, workers=args.workers, wandb_mode=args.wandb)
    print(f"results: {out / 'results'}")
    print(f"leaderboard: dreamshift leaderboard {out / 'results'} --out {out / 'leaderboard'}")


def _leaderboard(args: argparse.Namespace) -> None:
    from envs.errors import ConfigError
    from experiments.leaderboard import build
    from experiments.results import resolve_dir

    if args.reps < 100:
        raise ConfigError(f"--reps must be >= 100, got {args.reps}")
    out = check_output_dir(args.out or resolve_dir(args.results_dir).resolve().parent / "leaderboard",
                           "--out" if args.out else "leaderboard directory")
    paths = build(args.results_dir, out, reps=args.reps)
    if args.screenshot:
        from experiments.screenshot import screenshot

        paths["screenshot"] = screenshot(paths["html"], out / "screenshot.png")
    for name, path in paths.items():
        print(f"{name:<11} {path}")
    print(f"open {paths['html']}", file=sys.stderr)
