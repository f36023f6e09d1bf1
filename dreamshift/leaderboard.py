"""``dreamshift leaderboard``: CSV/Markdown/JSON/HTML leaderboard from results (:mod:`experiments.leaderboard`).

    dreamshift leaderboard RESULTS_DIR|RUN_DIR [--out DIR] [--screenshot] [--reps N]
"""

from __future__ import annotations

import argparse
import sys

from envs.errors import ConfigError
from envs.files import check_output_dir
from experiments.leaderboard import build
from experiments.results import resolve_dir
from experiments.screenshot import screenshot

MIN_REPS, MAX_REPS = 100, 100_000  # bootstrap replications: fewer give no CI worth showing, more only take time


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``leaderboard`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    lb = sub.add_parser("leaderboard", help="CSV/Markdown/JSON/HTML leaderboard from a directory of results")
    lb.add_argument("results_dir", help="directory searched recursively for *.jsonl results (a sweep's results/, "
                    "a run's eval/results), or a run directory evaluated by `dreamshift evaluate RUN [--suite S]`")
    lb.add_argument("--out", help="output directory (default RESULTS_DIR/../leaderboard; RUN/eval/leaderboard)")
    lb.add_argument("--reps", type=int, default=2000,
                    help=f"bootstrap replications of the CIs, {MIN_REPS}-{MAX_REPS} (default 2000)")
    lb.add_argument("--screenshot", action="store_true", help="also render index.html in headless Chromium")
    lb.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift leaderboard``; raises ``ConfigError`` on bad input."""
    if not MIN_REPS <= args.reps <= MAX_REPS:
        raise ConfigError(f"--reps must be in [{MIN_REPS}, {MAX_REPS}], got {args.reps}")
    out = check_output_dir(args.out or resolve_dir(args.results_dir).resolve().parent / "leaderboard",
                           "--out" if args.out else "leaderboard directory")
    paths = build(args.results_dir, out, reps=args.reps, warn=lambda line: print(line, file=sys.stderr))
    if args.screenshot:
        paths["screenshot"] = screenshot(paths["html"], out / "screenshot.png")
    for name, path in paths.items():
        print(f"{name:<11} {path}")
    print(f"open {paths['html']}", file=sys.stderr)
