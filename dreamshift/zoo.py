"""``dreamshift zoo-export RUN --name NAME [--out DIR]``: keep a trained agent as an evaluation-only run directory
(:mod:`experiments.zoo`): weights, config, provenance, no replay or optimiser state.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from envs import files
from envs.errors import ConfigError
from experiments.zoo import ZOO_DIR, export, size_mb


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``zoo-export`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    z = sub.add_parser("zoo-export", help="keep a trained agent as an evaluation-only run directory in the zoo")
    z.add_argument("run_dir", metavar="RUN", help="a run directory with a checkpoint (e.g. RUN/seed-0 of a batch)")
    z.add_argument("--name", required=True, help="the entry's name: letters, digits, '.', '_', '-'")
    z.add_argument("--out", default=str(ZOO_DIR), help=f"zoo directory (default {ZOO_DIR})")
    z.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift zoo-export``; raises ``ConfigError`` / ``CheckpointError`` on bad input."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", args.name):
        raise ConfigError(f"--name {args.name!r}: use letters, digits, '.', '_', '-' (a directory name)")
    files.check_run_dir(args.run_dir)
    out = export(args.run_dir, Path(args.out) / args.name)
    print(f"zoo entry: {out} ({size_mb(out):.1f} MB)")
    print(f"  evaluate: dreamshift evaluate {out}")
