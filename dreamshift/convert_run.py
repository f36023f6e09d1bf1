"""``dreamshift convert-run``: convert older run checkpoints (``checkpoint/agent.pt``, a pickle) into the safe
format (safetensors + ``checkpoint.json``, :mod:`mbrl.runs.checkpoint`), see :mod:`mbrl.runs.convert`.

    dreamshift convert-run RUN [RUN ...]

Unpickling can run code, so every other command refuses such a run and names this one; it prints a one-line
warning before it opens each pickle. A run already in the safe format is left as it is.
"""

from __future__ import annotations

import argparse

from mbrl.runs.convert import convert_run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert-run`` sub-command to ``sub`` (handler :func:`handle`)."""
    p = sub.add_parser("convert-run", help="convert runs' older pickle checkpoints (agent.pt) into the safe format; "
                       "it unpickles them, so only for runs you trust",
                       description="Load RUN/checkpoint/agent.pt (a pickle: this runs any code it carries, so only "
                                   "for a run you trust), write safetensors + checkpoint.json next to it, check "
                                   "that they read back equal and remove agent.pt.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories holding checkpoint/agent.pt")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Convert each run; raises :class:`envs.errors.CheckpointError` (one line, exit 2) on the first failure."""
    for run_dir in args.run_dirs:
        path = convert_run(run_dir)
        if path is None:
            print(f"{run_dir}: already in the safe format (checkpoint/checkpoint.json); nothing to do")
        else:
            print(f"{run_dir}: converted to {path} (+ safetensors); agent.pt removed")
