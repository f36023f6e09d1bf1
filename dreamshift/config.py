"""``dreamshift config [key=value ...]``: print the resolved configuration (stdout) and the allowed keys (stderr)."""

from __future__ import annotations

import argparse
import json
import sys

from mbrl.config import allowed_keys, build_config, to_dict
from mbrl.runtime import check_env_encoder


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``config`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    c = sub.add_parser("config", help="print the resolved configuration and the allowed keys")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Print the config ``train`` would use; raises ``ConfigError`` / ``EnvError`` for what ``train`` refuses."""
    cfg = build_config(args.overrides)
    check_env_encoder(cfg)  # the names train would refuse: env, obs, encoder, mode, decoder, encoder_path
    print(json.dumps(to_dict(cfg), indent=2))
    print("allowed keys: " + " ".join(allowed_keys()), file=sys.stderr)
