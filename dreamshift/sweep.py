"""``dreamshift sweep``: train + evaluate a grid of trials (:mod:`experiments.sweep`).

    dreamshift sweep experiments/quick.yaml [--out DIR] [--backend local|slurm|submitit-local] [--workers N]
                     [--wandb offline|online|disabled] [--dry-run]

``--out`` (or the default) is checked before anything runs (:func:`envs.files.check_output_dir`), ``--dry-run``
included; Ctrl-C during a sweep prints one line (finished trials are kept; rerunning resumes), exit 130.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.errors import ConfigError
from envs.files import check_output_dir
from experiments import spec
from experiments import sweep as experiment_sweep


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sweep`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    s = sub.add_parser("sweep", help="train + evaluate a grid of (env x encoder x mode x seed) trials")
    s.add_argument("file", help="grid file, e.g. experiments/quick.yaml")
    s.add_argument("--out", help="sweep directory (default runs/sweeps/<name>); rerunning resumes it")
    s.add_argument("--backend", choices=["local", "slurm", "submitit-local"], help="override the file's backend")
    s.add_argument("--workers", type=int, help="local backend: trials at once (override the file)")
    s.add_argument("--wandb", choices=["offline", "online", "disabled"], help="wandb mode of every trial")
    s.add_argument("--dry-run", action="store_true", help="print the trials and exit")
    s.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift sweep``; raises ``ConfigError`` on a bad grid file or option."""
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
    experiment_sweep.run(sweep, out, backend=args.backend, workers=args.workers, wandb_mode=args.wandb)
    print(f"results: {out / 'results'}")
    print(f"leaderboard: dreamshift leaderboard {out / 'results'} --out {out / 'leaderboard'}")
