"""``dreamshift adapt-eval``: evaluate merged agents ``(1-a) BASE + a ADAPTED`` on target and clean
(:func:`mbrl.runs.adapt.alpha_sweep`).

    dreamshift adapt-eval BASE ADAPTED --alpha 0,0.5,1 [--episodes 3] [--threads N]  # merged agents

Besides ``ADAPTED/eval/alpha-sweep.json`` each merged agent's results-schema records go to
``ADAPTED/eval/results/`` (:func:`dreamshift.common.write_sweep_records`), read by ``dreamshift leaderboard ADAPTED``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamshift.common import add_threads, check_device, say, threads_kwargs, write_sweep_records
from envs import files
from envs.errors import ConfigError
from mbrl.runs.adapt import alpha_sweep, format_sweep


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt-eval`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    e = sub.add_parser("adapt-eval", help="evaluate merged agents (1-a)*BASE + a*ADAPTED on target and clean")
    e.add_argument("base")
    e.add_argument("adapted")
    e.add_argument("--alpha", default="0,0.25,0.5,0.75,1",
                   help="alphas (0,0.5,1) or ';'-separated per-module specs ('encoder=0,world_model=1;0.5')")
    e.add_argument("--episodes", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--levels", action="store_true", help="also the target kind's other severities")
    e.add_argument("--device", default="cpu", help="auto | cpu | cuda")
    add_threads(e)
    e.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift adapt-eval``; raises ``ConfigError`` / ``CheckpointError`` on bad input."""
    text = args.alpha.strip()
    specs = [t.strip() for t in (text.split(";") if "=" in text else text.split(",")) if t.strip()]
    if not specs:
        raise ConfigError("--alpha: give alphas, e.g. 0,0.5,1 or 'encoder=0.5,world_model=1;0.5'")
    files.check_run_dir(args.base, "BASE run directory")
    files.check_run_dir(args.adapted, "ADAPTED run directory")
    files.check_output_dir(Path(args.adapted) / "eval", "results directory")
    check_device(args.device)
    path = alpha_sweep(args.base, args.adapted, specs, args.episodes, args.seed, args.levels, args.device,
                       progress=say, **threads_kwargs(alpha_sweep, args.threads))
    sweep = json.loads(path.read_text())
    print(format_sweep(sweep))
    print(f"results: {path}")
    write_sweep_records(args.adapted, sweep)
