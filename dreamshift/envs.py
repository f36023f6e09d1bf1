"""``dreamshift envs list``: the environment names, one a line on stdout; each suite's availability on stderr."""

from __future__ import annotations

import argparse
import sys

from envs import list_envs
from envs.status import suite_status


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``envs`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    p = sub.add_parser("envs", help="list environments")
    p.add_argument("action", choices=["list"])
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Print every env name (stdout) and every suite's status (stderr)."""
    print("\n".join(list_envs()))
    for suite, status in suite_status().items():  # availability on stderr: stdout stays one name a line
        print(f"{suite:<10} {status}", file=sys.stderr)
