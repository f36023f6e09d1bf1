"""``dreamshift adapt``: continue a trained run on a shifted env, mixing in its old replay (:mod:`mbrl.runs.adapt`).
``adapt-eval`` (:mod:`dreamshift.adapt_eval`) evaluates merged agents, ``continual`` (:mod:`dreamshift.continual`)
adapts through a sequence of shifts.

    dreamshift adapt RUN --target color:5 --steps 5000 [--mix 0.5] [--lr-scale 0.1] --out RUN2 [--seed S]
                     [--eval-episodes 3] [--no-levels] [--threads N] [--set key=value ...]  # keys: ADAPT_KEYS
    dreamshift adapt --resume RUN2 [--steps N]

Bad input raises :class:`~envs.errors.ConfigError` / ``CheckpointError``: the CLI prints one ``error:`` line and
exits with status 2, before anything is written (run directories and ``--out`` are checked first, with
:mod:`envs.files`'s path checks). Ctrl-C prints one line naming the ``--resume`` command (:mod:`dreamshift`).
"""

from __future__ import annotations

import argparse
import json

from dreamshift.common import add_threads, say, split_args, threads_kwargs, threads_setting, write_report_records
from envs import files
from envs.errors import ConfigError
from mbrl.runs import adapt as adaptation


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift adapt``; raises ``ConfigError`` / ``CheckpointError`` on bad input."""
    run, overrides = split_args(args.args + args.set, "adapt")
    if args.resume is not None:
        if run is not None:
            raise ConfigError("adapt --resume OUT takes no RUN (the run to adapt is stored in OUT)")
        files.check_run_dir(args.resume, "--resume", writable=True)
        threads = threads_setting(adaptation.adapt, args.threads, overrides)
        out = adaptation.adapt(None, None, args.steps, overrides=overrides, resume=args.resume, **threads)
    else:
        missing = [n for n, v in (("RUN", run), ("--target", args.target), ("--steps", args.steps),
                                  ("--out", args.out)) if v is None]
        if missing:
            raise ConfigError(f"adapt needs {', '.join(missing)} (or --resume OUT)")
        if args.eval_episodes < 0:
            raise ConfigError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
        files.check_run_dir(run)
        files.check_output_dir(args.out, "--out")
        threads = threads_setting(adaptation.adapt, args.threads, overrides)
        out = adaptation.adapt(run, args.target, args.steps, args.mix, args.lr_scale, args.out, args.seed, overrides,
                               **threads)
    print(f"adapted run: {out}")
    if args.eval_episodes > 0:
        path = adaptation.stage_report(out, args.eval_episodes, 0, not args.no_levels, progress=say,
                            **threads_kwargs(adaptation.stage_report, args.threads))
        report = json.loads(path.read_text())
        print(adaptation.format_report(report))
        print(f"report: {path}")
        write_report_records(out, report)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    a = sub.add_parser("adapt", help="continue a trained run on a shifted env, mixing in its old replay")
    a.add_argument("args", nargs="*", default=[], metavar="RUN [key=value ...]",
                   help="trained run directory, then optional key=value settings (train_ratio, threads, prefill, ...)")
    a.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="settings anywhere on the line (key=value right after RUN works too)")
    a.add_argument("--target", help="shift(s) to adapt to, KIND:SEVERITY[,KIND:SEVERITY...], e.g. color:5")
    a.add_argument("--steps", type=int, help="target env steps")
    a.add_argument("--mix", type=float, default=0.5, help="fraction of replayed sequences from the old data [0, 1]")
    a.add_argument("--lr-scale", type=float, default=0.1, help="factor on every learning rate (0, 1]")
    a.add_argument("--out", help="new run directory (must not exist or be empty)")
    a.add_argument("--seed", type=int, help="seed of the adaptation (default: the run's)")
    a.add_argument("--resume", metavar="OUT", help="continue a killed adaptation from its checkpoint")
    a.add_argument("--eval-episodes", type=int, default=3, help="episodes per condition of the report (0: none)")
    a.add_argument("--no-levels", action="store_true", help="do not evaluate the target kind's other severities")
    add_threads(a)
    a.set_defaults(handler=handle)
