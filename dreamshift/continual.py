"""``dreamshift continual``: adapt through a sequence of shifts, evaluating every earlier condition
(:mod:`mbrl.runs.continual`).

    dreamshift continual RUN --stages "color:5;gaussian_noise:5" --steps 5000 [--mix 0.5] --out DIR [--resume]
                         [--threads N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamshift.common import add_threads, say, split_args, threads_setting, write_report_records
from envs import files
from envs.errors import ConfigError
from mbrl.runs import continual as continual_mod


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``continual`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    c = sub.add_parser("continual", help="adapt through a sequence of shifts, evaluating every earlier condition")
    c.add_argument("args", nargs="*", default=[], metavar="RUN [key=value ...]")
    c.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    c.add_argument("--stages", required=True, help="KIND:SEVERITY;KIND:SEVERITY;... (one lineage, in order)")
    c.add_argument("--steps", type=int, required=True, help="target env steps per stage")
    c.add_argument("--mix", type=float, default=0.5)
    c.add_argument("--lr-scale", type=float, default=0.1)
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int)
    c.add_argument("--eval-episodes", type=int, default=3)
    c.add_argument("--no-levels", action="store_true")
    c.add_argument("--resume", action="store_true", help="continue a killed sequence in --out")
    add_threads(c)
    c.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift continual``; raises ``ConfigError`` / ``CheckpointError`` on bad input."""
    run, overrides = split_args(args.args + args.set, "continual")
    if run is None:
        raise ConfigError("continual needs RUN (the trained run to start from)")
    files.check_run_dir(run)
    files.check_output_dir(args.out, "--out")  # before the base run's evaluation (stage 0)
    threads = threads_setting(continual_mod.continual, args.threads, overrides)
    path = continual_mod.continual(run, args.stages, args.steps, args.mix, args.lr_scale, args.out, args.seed,
                                   args.eval_episodes, not args.no_levels, overrides, args.resume, progress=say,
                                   **threads)
    summary = json.loads(path.read_text())
    print(continual_mod.format_summary(summary))
    print(f"results: {path}")
    for stage in summary["stages"][1:]:  # stage 0 is the base run, read only: its evaluation stays in the summary
        report = Path(stage["run"]) / "eval" / continual_mod.REPORT_FILE
        write_report_records(stage["run"], json.loads(report.read_text()))
