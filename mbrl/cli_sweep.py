"""`dreamshift` sub-commands of this module (registered by :mod:`mbrl.cli`); none yet."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to ``sub``; each binds ``set_defaults(handler=fn)``."""
