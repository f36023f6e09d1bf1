"""``dreamshift demo [key=value ...]``: train the state oracle briefly, evaluate it, the zoo's agents of the same env
and the uniform-random policy on the same ``quick``-suite episodes, print one combined table
(:mod:`experiments.demo`)."""

from __future__ import annotations

import argparse

from experiments import demo
from mbrl.config import parse_overrides


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    d = sub.add_parser("demo", help="train + evaluate the embedded default (a short state-oracle run, the zoo's "
                                    "agents, the random policy) and print one combined table")
    d.add_argument("overrides", nargs="*")
    d.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift demo``; raises ``DreamshiftError`` on bad overrides before anything is trained."""
    demo.run(parse_overrides(args.overrides))
