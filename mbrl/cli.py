"""The ``dreamshift`` command line.

    dreamshift train [key=value ...] [--resume RUN_DIR]
    dreamshift evaluate RUN_DIR [--episodes N] [--seed S] [--alpha 0,0.5,1] [--device D] [--threads N]
    dreamshift evaluate RUN_DIR --suite quick [--episodes N] [--threads N]  # every (shift, severity) of a suite
    dreamshift merge RUN_DIR --alpha A [--out DIR]              # encoder vs its pretrained weights (WiSE-FT)
    dreamshift merge BASE ADAPTED --alpha encoder=a,world_model=b,actor_critic=c [--out DIR]
    dreamshift demo [key=value ...]
    dreamshift envs list
    dreamshift shifts list                  # suites and shift kinds
    dreamshift shifts gallery [--env dmc:walker_walk] [--out gallery.png] [--suite standard] [--seed 0] [--size 64]
                              [--scale 0]     # size 16-1024, scale 1-16 (0: automatic), size x scale <= 1024
    dreamshift config [key=value ...]       # print the resolved configuration

Commands in their own modules (``COMMAND_MODULES``): ``sweep``/``leaderboard`` (mbrl/cli_sweep.py),
``pretrain`` (mbrl/cli_pretrain.py), ``analyze`` (mbrl/cli_analyze.py), ``adapt``/``adapt-eval``/``continual``
(mbrl/cli_adapt.py), ``plot`` (experiments/plot.py: learning curves and diagnostics of runs, optionally over
reference curves), ``convert-run`` (mbrl/cli_convert.py: turn an older pickle checkpoint into the safe format).

``train --resume RUN_DIR`` continues the run from its own stored config; ``key=value`` settings given with it may
change only budgets, logging and device (``steps``, ``log_every``, ``device``, ...).

Bad input (unknown env, key, type, missing checkpoint, incompatible resume, an output path that cannot be
written, an unknown option) prints one ``error:`` line and exits with status 2; nothing is written. Ctrl-C prints
one line saying what was saved and how to continue (``--resume``), exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from envs import files
from envs.errors import DreamshiftError
from mbrl import cli_common
from mbrl.config import allowed_keys, build_config, check_env_encoder, parse_overrides, to_dict

# The embedded default of `dreamshift demo`: scratch CNN vs two pretrained encoders that exist offline, the
# ImageNet efficientnet-lite0 and the bundled in-domain self-supervised dreamshift-vit (both frozen, features
# cached), each trained briefly on clean pixels and evaluated under the `quick` shift suite. Minutes
# on 2 CPU cores; it shows the pipeline, it is not a learning budget (see benchmarks/learning.py).
DEMO_OVERRIDES = {
    "env": "dmc:cartpole_balance", "size": "XS", "steps": "3000", "prefill": "1000", "batch_size": "8",
    "batch_length": "32", "train_ratio": "16", "log_every": "1000", "save_every": "0", "eval_episodes": "1",
    "replay_capacity": "100000",
}
DEMO_ENCODERS = ({"encoder": "cnn"},
                 {"encoder": "efficientnet-lite0", "encoder_mode": "frozen", "encoder_input_size": "128"},
                 {"encoder": "dreamshift-vit", "encoder_mode": "frozen"})
DEMO_SUITE = "quick"

# Sub-commands that live in their own module (one job a file). Each module has ``register(sub)``, which adds its
# parser(s) to the sub-parser set and binds ``set_defaults(handler=fn)``; ``fn(args) -> None`` runs the command
# and raises DreamshiftError (EnvError, ShiftError, ConfigError, ...) on bad input, like the built-in commands.
COMMAND_MODULES = ("mbrl.cli_sweep", "mbrl.cli_pretrain", "mbrl.cli_analyze", "mbrl.cli_adapt",
                   "experiments.plot", "mbrl.cli_convert")


def _parser() -> argparse.ArgumentParser:
    p = cli_common.Parser(prog="dreamshift", description="DreamerV3 agents under graded visual shift.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an agent from pixels")
    t.add_argument("overrides", nargs="*", help="key=value settings, e.g. env=dmc:walker_walk size=S steps=1e5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its checkpoint and its stored "
                   "config (settings given with it may change only budgets, logging and device)")
    e = sub.add_parser("evaluate", help="evaluate a trained run on its clean env (records also go to "
                       "RUN_DIR/eval/results/, read by `dreamshift leaderboard RUN_DIR`)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    cli_common.add_threads(e)
    e.add_argument("--alpha", default="", help="comma-separated weight-merging alphas to sweep (e.g. 0,0.5,1)")
    e.add_argument("--suite", help="evaluate under every (shift, severity) of a suite (quick, paper, standard) or "
                   "of a list KIND[:SEVERITIES],... e.g. fog:1+5,contrast:3; writes RUN_DIR/eval/suite-<name>.json")
    d = sub.add_parser("demo", help="train + evaluate the embedded default in a few minutes")
    d.add_argument("overrides", nargs="*")
    m = sub.add_parser("merge", help="interpolate weights: RUN's encoder with its pretrained weights, or two whole "
                       "agents BASE ADAPTED per module")
    m.add_argument("run_dirs", nargs="+", metavar="RUN", help="RUN (encoder vs pretrained) or BASE ADAPTED")
    m.add_argument("--alpha", required=True, help="0 = pretrained/base, 1 = fine-tuned/adapted; two runs: one alpha "
                   "or encoder=A,world_model=B,actor_critic=C")
    m.add_argument("--out", help="output run directory (default <RUN or ADAPTED>-merged-a<alpha>)")
    envs_p = sub.add_parser("envs", help="list environments")
    envs_p.add_argument("action", choices=["list"])
    c = sub.add_parser("config", help="print the resolved configuration and the allowed keys")
    c.add_argument("overrides", nargs="*")
    sh = sub.add_parser("shifts", help="visual shifts: list suites and kinds, render a gallery")
    sh_sub = sh.add_subparsers(dest="action", required=True)
    sh_sub.add_parser("list", help="print the suites and the shift kinds (with their level)")
    g = sh_sub.add_parser("gallery", help="PNG grid of one frame: rows = kinds of a suite, columns = severity 0-5")
    g.add_argument("--env", default="dmc:walker_walk")
    g.add_argument("--out", default="gallery.png")
    g.add_argument("--suite", default="standard")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", type=int, default=64, help="frame side in pixels, 16-1024")
    g.add_argument("--scale", type=int, default=0, help="cell upscaling factor 1-16, at most 1024 px a cell "
                   "(default: cells of ~128 px)")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def _train(overrides: list[str], resume: str | None) -> Path:
    """``dreamshift train``: a new run from ``overrides``, or with ``resume`` the run's own stored config, where
    ``overrides`` may change only budgets, logging and device (:func:`mbrl.train.resume_config`)."""
    from mbrl.checkpoint import checkpoint_path
    from mbrl.train import resume_config, train

    cfg = resume_config(resume, overrides) if resume is not None else build_config(overrides)
    run_dir = train(cfg, resume=resume)
    print(f"run directory: {run_dir}")
    print(f"  metrics:    {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoint: {checkpoint_path(run_dir)}")
    return run_dir


def _check_eval_run(run_dir: str, device: str) -> None:
    """Before evaluating: ``run_dir`` is a run directory whose ``eval/`` can be written, ``device`` is valid."""
    files.check_run_dir(run_dir)
    files.check_output_dir(Path(run_dir) / "eval", "results directory")
    cli_common.check_device(device)


def _evaluate(run_dir: str, episodes: int, seed: int, device: str, alphas: str = "",
              threads: int | None = None) -> None:
    from envs.errors import ConfigError
    from mbrl.evaluate import evaluate

    try:
        sweep = [float(a) for a in alphas.split(",") if a.strip()] or [None]
    except ValueError:
        raise ConfigError(f"--alpha {alphas!r}: expected comma-separated numbers in [0, 1]") from None
    _check_eval_run(run_dir, device)
    for alpha in sweep:
        path = evaluate(run_dir, episodes=episodes, seed=seed, device=device, alpha=alpha,
                        **cli_common.threads_kwargs(evaluate, threads))
        summary = json.loads(path.read_text())
        tag = "" if alpha is None else f" (alpha {alpha:g})"
        print(f"{summary['env']}{tag}: return {summary['return_mean']:.1f} +- {summary['return_stderr']:.1f} "
              f"(stderr, {len(summary['episodes'])} episodes)")
        print(f"results: {path}")
        run = {**summary, "eval_seed": seed}
        if alpha is not None:  # the merged agent is a variant of the run's, as in a sweep's WiSE-FT records
            run["encoder_mode"] = f"{summary['encoder_mode']}+merge:{alpha:g}"
        _write_records(run_dir, [("none", 0, run, summary["episodes"])], "" if alpha is None else f"-merge{alpha:g}")


def _write_records(run_dir: str, conditions: list[tuple[str, int, dict[str, Any], list[dict[str, Any]]]],
                   tag: str = "") -> None:
    """Write an evaluation's results-schema records (:func:`experiments.results.write_run`; the trial is the run
    directory's name), which ``dreamshift leaderboard RUN_DIR`` reads. ``conditions``: ``(shift, severity, run
    metadata, episode records)``."""
    from experiments import results

    trial = Path(run_dir).resolve().name
    records = [r for shift, severity, run, episodes in conditions
               for r in results.episode_records(run, shift, severity, episodes, trial)]
    results.write_run(run_dir, records, tag)
    print(f"records: {results.run_results_dir(run_dir)} (leaderboard: dreamshift leaderboard {run_dir})")


def _demo(given: dict[str, str]) -> None:
    """Train and evaluate each demo encoder; ``given`` overrides apply to all (``encoder=`` runs only that one)."""
    build_config({**DEMO_OVERRIDES, **given})  # bad overrides fail before anything is trained
    files.check_output_dir(given.get("run_dir") or "runs", "run_dir")
    variants = [{}] if "encoder" in given else DEMO_ENCODERS
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    for variant in variants:
        merged = {**DEMO_OVERRIDES, **variant, **given}
        if "run_dir" not in given:
            merged["run_dir"] = f"runs/demo-{stamp}/{merged['encoder']}"
        run_dir = _train([f"{k}={v}" for k, v in merged.items()], None)
        _evaluate_suite(str(run_dir), DEMO_SUITE, int(merged["eval_episodes"]), 0, "auto")
        runs.append(run_dir)
    print("demo runs: " + ", ".join(str(r) for r in runs))


def _evaluate_suite(run_dir: str, suite: str, episodes: int, seed: int, device: str,
                    threads: int | None = None) -> None:
    from mbrl.evaluate import evaluate_suite, format_table

    _check_eval_run(run_dir, device)
    path = evaluate_suite(run_dir, suite, episodes=episodes, seed=seed, device=device,
                          progress=lambda line: print(line, file=sys.stderr, flush=True),
                          **cli_common.threads_kwargs(evaluate_suite, threads))
    summary = json.loads(path.read_text())
    print(f"{summary['env']} {summary['encoder']} ({summary['encoder_mode']}), suite {summary['suite']}, "
          f"{episodes} episode(s) per condition; cells: mean return (change vs clean)")
    print(format_table(summary))
    print(f"results: {path}")
    _write_records(run_dir, [(ep["shift"], ep["severity"], ep, [ep]) for ep in summary["episodes"]])


def _shifts(args: argparse.Namespace) -> None:
    from shifts import suites
    from shifts.base import make_shift

    if args.action == "list":
        print("suites:")
        for name in suites.suite_names():
            missing = suites.missing_kinds(name)
            if missing:
                status = f"unavailable (needs {', '.join(missing)})"
            else:
                status = f"{len(suites.get_suite(name))} conditions"
            print(f"  {name:<9} {status:<15} {suites.describe(name)}")
        print("kinds:")
        for kind in suites.ordered_kinds():
            print(f"  {kind:<15} {make_shift(kind, 0).level}")
    elif args.action == "gallery":
        from shifts.gallery import write_gallery

        path = write_gallery(args.out, env_name=args.env, suite=args.suite, seed=args.seed, size=args.size,
                             scale=args.scale or None)
        print(f"gallery: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamshift`` console script; returns the exit status."""
    parser = _parser()
    args = cli_common.parse_args(parser, argv)
    # transformers draws a progress bar per weight load (read when it is imported); runs show their own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import envs

        if getattr(args, "handler", None) is not None:
            args.handler(args)
        elif args.command == "train":
            _train(args.overrides, args.resume)
        elif args.command == "evaluate":
            if args.suite is not None:
                if args.alpha:
                    from envs.errors import ConfigError

                    raise ConfigError("--suite and --alpha cannot be combined; evaluate a merged run "
                                      "(dreamshift merge) with --suite instead")
                _evaluate_suite(args.run_dir, args.suite, args.episodes, args.seed, args.device, args.threads)
            else:
                _evaluate(args.run_dir, args.episodes, args.seed, args.device, args.alpha, args.threads)
        elif args.command == "demo":
            _demo(parse_overrides(args.overrides))
        elif args.command == "merge":
            from envs.errors import ConfigError
            from mbrl.merge import format_alpha, merge_run, merge_runs, parse_alpha

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
        elif args.command == "envs":
            print("\n".join(envs.list_envs()))
            from envs.status import suite_status

            for suite, status in suite_status().items():  # availability on stderr: stdout stays one name a line
                print(f"{suite:<10} {status}", file=sys.stderr)
        elif args.command == "shifts":
            _shifts(args)
        elif args.command == "config":
            cfg = build_config(args.overrides)
            check_env_encoder(cfg)  # the names train would refuse: env, obs, encoder, mode, decoder, encoder_path
            print(json.dumps(to_dict(cfg), indent=2))
            print("allowed keys: " + " ".join(allowed_keys()), file=sys.stderr)
    except DreamshiftError as exc:  # EnvError, ShiftError, ConfigError, CheckpointError, ...: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: what was saved and how to continue, not a traceback
        print(cli_common.interrupted_message(args, argv if argv is not None else sys.argv[1:], exc), file=sys.stderr)
        return cli_common.INTERRUPTED_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
