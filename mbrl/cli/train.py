"""``dreamshift train [key=value ...] [--resume RUN_DIR]``: train an agent (:func:`mbrl.train.train`).

``--resume RUN_DIR`` continues the run from its own stored config; ``key=value`` settings given with it may change
only budgets, logging and device (``steps``, ``log_every``, ``device``, ...; :func:`mbrl.train.resume_config`).
``benchmarks/learning.py`` launches ``python -m mbrl.cli train --resume RUN_DIR key=value ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mbrl.checkpoint import checkpoint_path
from mbrl.config import build_config
from mbrl.train import resume_config, train


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    t = sub.add_parser("train", help="train an agent from pixels")
    t.add_argument("overrides", nargs="*", help="key=value settings, e.g. env=dmc:walker_walk size=S steps=1e5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its checkpoint and its stored "
                   "config (settings given with it may change only budgets, logging and device)")
    t.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift train``; raises ``DreamshiftError`` on bad input."""
    run_train(args.overrides, args.resume)


def run_train(overrides: list[str], resume: str | None) -> Path:
    """``dreamshift train``: a new run from ``overrides``, or with ``resume`` the run's own stored config, where
    ``overrides`` may change only budgets, logging and device (:func:`mbrl.train.resume_config`); returns the run
    directory."""
    cfg = resume_config(resume, overrides) if resume is not None else build_config(overrides)
    run_dir = train(cfg, resume=resume)
    print(f"run directory: {run_dir}")
    print(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoint: {checkpoint_path(run_dir)}")
    return run_dir
