"""``dreamshift plot``: learning curves and training diagnostics of runs vs env steps (:mod:`experiments.plot`).

    dreamshift plot RUN [RUN ...] --out PNG [--reference FILE.json.gz] [--window 10000]
"""

from __future__ import annotations

import argparse
import sys

from experiments import plot


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``plot`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    p = sub.add_parser("plot", help="learning curves and training diagnostics of runs vs env steps (PNG/SVG/PDF)",
                       description=plot.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl, config.json)")
    p.add_argument("--out", required=True, help="output file: .png, .svg or .pdf")
    p.add_argument("--reference", help="reference curves, .json.gz list of {task, method, seed, xs, ys} records "
                   "(e.g. ../shared/reference/dmc_proprio-dreamerv3.json.gz)")
    p.add_argument("--window", type=float, default=plot.WINDOW,
                   help=f"env steps averaged by the return curves (default {plot.WINDOW})")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift plot``; raises ``ConfigError`` on bad input before anything is written."""
    path = plot.plot_runs(args.runs, args.out, args.reference, args.window,
                          warn=lambda msg: print(msg, file=sys.stderr))
    print(f"plot: {path}")
