"""``dreamshift merge``: interpolate weights (:mod:`mbrl.runs.merge`).

    dreamshift merge RUN_DIR --alpha A [--out DIR]              # encoder vs its pretrained weights (WiSE-FT)
    dreamshift merge BASE ADAPTED --alpha encoder=a,world_model=b,actor_critic=c [--out DIR]
"""

from __future__ import annotations

import argparse

from envs import files
from envs.errors import ConfigError
from mbrl.runs.merge import format_alpha, merge_run, merge_runs, parse_alpha


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``merge`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    m = sub.add_parser("merge", help="interpolate weights: RUN's encoder with its pretrained weights, or two whole "
                       "agents BASE ADAPTED per module")
    m.add_argument("run_dirs", nargs="+", metavar="RUN", help="RUN (encoder vs pretrained) or BASE ADAPTED")
    m.add_argument("--alpha", required=True, help="0 = pretrained/base, 1 = fine-tuned/adapted; two runs: one alpha "
                   "or encoder=A,world_model=B,actor_critic=C")
    m.add_argument("--out", help="output run directory (default <RUN or ADAPTED>-merged-a<alpha>)")
    m.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift merge``; raises ``ConfigError`` / ``CheckpointError`` on bad input."""
    if len(args.run_dirs) > 2:
        raise ConfigError(f"merge takes RUN or BASE ADAPTED, got {len(args.run_dirs)} run directories")
    for run in args.run_dirs:
        files.check_run_dir(run)
    if len(args.run_dirs) == 1:
        try:
            alpha = float(args.alpha)
        except ValueError:
            raise ConfigError(f"--alpha {args.alpha!r}: merging one run's encoder takes one number in "
                              f"[0, 1]; per-module alphas need two runs (BASE ADAPTED)") from None
        out = args.out or f"{args.run_dirs[0].rstrip('/')}-merged-a{alpha:g}"
        files.check_output_dir(out, "--out")
        print(f"merged run: {merge_run(args.run_dirs[0], alpha, out)}")
    else:
        alphas = parse_alpha(args.alpha)
        out = args.out or f"{args.run_dirs[1].rstrip('/')}-merged-a{format_alpha(alphas)}"
        files.check_output_dir(out, "--out")
        print(f"merged run: {merge_runs(args.run_dirs[0], args.run_dirs[1], alphas, out)}")
