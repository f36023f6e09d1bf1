"""The ``dreamshift`` command line: the top layer of the house (``envs`` -> ``shifts`` -> ``encoders`` -> ``mbrl``
core -> ``mbrl.runs`` -> ``experiments`` -> this package).

Every command is a module of this package with ``register(sub)``, which adds its parser(s) to the sub-parser set
and binds ``set_defaults(handler=fn)``; ``fn(args) -> None`` runs the command and raises ``DreamshiftError``
(``EnvError``, ``ShiftError``, ``ConfigError``, ``CheckpointError``, ...) on bad input. :data:`COMMANDS` lists
them in the order of ``dreamshift --help``:

    dreamshift train [key=value ...] [--resume RUN_DIR]                          (train.py)
    dreamshift evaluate RUN_DIR [--episodes N] [--seed S] [--alpha 0,0.5,1] [--suite quick] [--threads N]
    dreamshift demo [key=value ...]
    dreamshift merge RUN_DIR --alpha A [--out DIR]  |  merge BASE ADAPTED --alpha encoder=a,world_model=b,...
    dreamshift envs list
    dreamshift config [key=value ...]       # print the resolved configuration
    dreamshift shifts list | gallery [...]
    dreamshift sweep | leaderboard | pretrain | analyze | adapt | adapt-eval | continual | plot | convert-run

Shared pieces (the parser class, ``--device``/``--threads`` checks, the Ctrl-C message) are in
:mod:`dreamshift.common`; ``python -m dreamshift`` runs :func:`main` (:mod:`dreamshift.__main__`), as does the
``dreamshift`` console script.

Bad input (unknown env, key, type, missing checkpoint, incompatible resume, an output path that cannot be
written, an unknown option) prints one ``error:`` line and exits with status 2; nothing is written. Ctrl-C prints
one line saying what was saved and how to continue (``--resume``), exit status 130; ``SIGTERM``/``SIGUSR2`` during
training (:mod:`mbrl.runs.signals`) do the same after the current update, exit status 143/140 (128 + the signal).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from dreamshift import (
    adapt,
    adapt_eval,
    analyze,
    common,
    config,
    continual,
    convert_run,
    demo,
    envs,
    evaluate,
    leaderboard,
    merge,
    plot,
    pretrain,
    shifts,
    sweep,
    train,
    zoo,
)
from envs.errors import DreamshiftError

# The commands, in the order of `dreamshift --help`; each module's register(sub) adds its sub-command(s).
COMMANDS = (train, evaluate, demo, merge, envs, config, shifts, sweep, leaderboard, pretrain, analyze, adapt,
            adapt_eval, continual, plot, convert_run, zoo)

__all__ = ["COMMANDS", "main"]


def _parser() -> argparse.ArgumentParser:
    """The ``dreamshift`` parser with every command of :data:`COMMANDS`."""
    p = common.Parser(prog="dreamshift", description="DreamerV3 agents under graded visual shift.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamshift`` console script; returns the exit status."""
    parser = _parser()
    args = common.parse_args(parser, argv)
    # transformers draws a progress bar per weight load (read when it is imported); runs show their own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        args.handler(args)
    except DreamshiftError as exc:  # EnvError, ShiftError, ConfigError, CheckpointError, ...: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGUSR2: what was saved and how to continue
        if argv is None:  # this process is the command and now exits: a further Ctrl-C would only cut it short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(common.interrupted_message(args, argv if argv is not None else sys.argv[1:], exc), file=sys.stderr)
        return common.interrupted_status(exc)
    return 0

