"""`dreamshift` sub-commands for adapting a trained agent to a shifted domain (registered by :mod:`mbrl.cli`).

    dreamshift adapt RUN --target color:5 --steps 5000 [--mix 0.5] [--lr-scale 0.1] --out RUN2 [--seed S]
                     [--eval-episodes 3] [--no-levels] [--threads N] [--set key=value ...]  # keys: ADAPT_KEYS
    dreamshift adapt --resume RUN2 [--steps N]
    dreamshift adapt-eval BASE ADAPTED --alpha 0,0.5,1 [--episodes 3] [--threads N]  # merged agents
    dreamshift continual RUN --stages "color:5;gaussian_noise:5" --steps 5000 [--mix 0.5] --out DIR [--resume]
                         [--threads N]

Bad input raises :class:`~envs.errors.ConfigError` / ``CheckpointError``: the CLI prints one ``error:`` line and
exits with status 2, before anything is written (run directories and ``--out`` are checked first, with
:mod:`envs.files`'s path checks). Ctrl-C prints one line naming the ``--resume`` command (:mod:`mbrl.cli`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import ConfigError
from mbrl.cli_common import add_threads, check_device, threads_kwargs
from mbrl.config import parse_overrides


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _split_args(tokens: list[str], what: str) -> tuple[str | None, dict[str, str]]:
    """Positional tokens -> (RUN or None, {key: value} overrides); raises ConfigError for a second RUN."""
    runs = [t for t in tokens if "=" not in t]
    if len(runs) > 1:
        raise ConfigError(f"{what} takes one RUN directory, got {', '.join(runs)}")
    return (runs[0] if runs else None), parse_overrides([t for t in tokens if "=" in t])


def _threads(fn: Callable[..., Any], threads: int | None, overrides: dict[str, str]) -> dict[str, Any]:
    """``--threads N``: the adapted runs' ``threads`` setting (their training, unless ``threads=`` is also given
    as a setting) and ``threads=`` of ``fn`` (its evaluations) when ``fn`` takes it."""
    if threads is None:
        return {}
    overrides.setdefault("threads", str(threads))
    return {"threads": threads} if "threads" in inspect.signature(fn).parameters else {}


def _adapt(args: argparse.Namespace) -> None:
    from mbrl.adapt import adapt, format_report, stage_report

    run, overrides = _split_args(args.args + args.set, "adapt")
    if args.resume is not None:
        if run is not None:
            raise ConfigError("adapt --resume OUT takes no RUN (the run to adapt is stored in OUT)")
        files.check_run_dir(args.resume, "--resume", writable=True)
        threads = _threads(adapt, args.threads, overrides)
        out = adapt(None, None, args.steps, overrides=overrides, resume=args.resume, **threads)
    else:
        missing = [n for n, v in (("RUN", run), ("--target", args.target), ("--steps", args.steps),
                                  ("--out", args.out)) if v is None]
        if missing:
            raise ConfigError(f"adapt needs {', '.join(missing)} (or --resume OUT)")
        if args.eval_episodes < 0:
            raise ConfigError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
        files.check_run_dir(run)
        files.check_output_dir(args.out, "--out")
        threads = _threads(adapt, args.threads, overrides)
        out = adapt(run, args.target, args.steps, args.mix, args.lr_scale, args.out, args.seed, overrides, **threads)
    print(f"adapted run: {out}")
    if args.eval_episodes > 0:
        path = stage_report(out, args.eval_episodes, 0, not args.no_levels, progress=_say,
                            **threads_kwargs(stage_report, args.threads))
        print(format_report(json.loads(path.read_text())))
        print(f"report: {path}")


def _adapt_eval(args: argparse.Namespace) -> None:
    from mbrl.adapt import alpha_sweep, format_sweep

    text = args.alpha.strip()
    specs = [t.strip() for t in (text.split(";") if "=" in text else text.split(",")) if t.strip()]
    if not specs:
        raise ConfigError("--alpha: give alphas, e.g. 0,0.5,1 or 'encoder=0.5,world_model=1;0.5'")
    files.check_run_dir(args.base, "BASE run directory")
    files.check_run_dir(args.adapted, "ADAPTED run directory")
    files.check_output_dir(Path(args.adapted) / "eval", "results directory")
    check_device(args.device)
    path = alpha_sweep(args.base, args.adapted, specs, args.episodes, args.seed, args.levels, args.device,
                       progress=_say, **threads_kwargs(alpha_sweep, args.threads))
    print(format_sweep(json.loads(path.read_text())))
    print(f"results: {path}")


def _continual(args: argparse.Namespace) -> None:
    from mbrl.continual import continual, format_summary

    run, overrides = _split_args(args.args + args.set, "continual")
    if run is None:
        raise ConfigError("continual needs RUN (the trained run to start from)")
    files.check_run_dir(run)
    files.check_output_dir(args.out, "--out")  # before the base run's evaluation (stage 0)
    threads = _threads(continual, args.threads, overrides)
    path = continual(run, args.stages, args.steps, args.mix, args.lr_scale, args.out, args.seed, args.eval_episodes,
                     not args.no_levels, overrides, args.resume, progress=_say, **threads)
    print(format_summary(json.loads(path.read_text())))
    print(f"results: {path}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt``, ``adapt-eval`` and ``continual`` to ``sub``; each binds ``set_defaults(handler=fn)``."""
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
    a.set_defaults(handler=_adapt)

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
    e.set_defaults(handler=_adapt_eval)

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
    c.set_defaults(handler=_continual)
