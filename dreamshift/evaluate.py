"""``dreamshift evaluate``: evaluate a trained run (:mod:`mbrl.runs.evaluate`), clean or under a shift suite.

    dreamshift evaluate RUN_DIR [--episodes N] [--seed S] [--alpha 0,0.5,1] [--device D] [--threads N]
    dreamshift evaluate RUN_DIR --suite quick [--episodes N] [--threads N]  # every (shift, severity) of a suite
    dreamshift evaluate RUN_DIR --policy mode     # the policy's deterministic mode instead of sampled actions

Besides ``RUN_DIR/eval/*.json`` the results-schema records go to ``RUN_DIR/eval/results/``
(:func:`experiments.results.write_run`), which ``dreamshift leaderboard RUN_DIR`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dreamshift import common
from envs import files
from envs.errors import ConfigError
from experiments import results
from mbrl.runs import evaluate as evaluation


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``dreamshift`` sub-commands (handler :func:`handle`)."""
    e = sub.add_parser("evaluate", help="evaluate a trained run on its clean env (records also go to "
                       "RUN_DIR/eval/results/, read by `dreamshift leaderboard RUN_DIR`)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10,
                   help=f"episodes per condition, 1-{evaluation.MAX_EPISODES} (default 10)")
    e.add_argument("--seed", type=int, default=0, help="evaluation seed (episode and shift seeds), >= 0")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    common.add_threads(e)
    e.add_argument("--alpha", default="", help="comma-separated weight-merging alphas to sweep (e.g. 0,0.5,1)")
    e.add_argument("--policy", help="how the agent acts: sample (draws from the policy, as the reference code "
                   "evaluates) or mode (its deterministic mode); default the run's eval_policy (sample)")
    e.add_argument("--suite", help="evaluate under every (shift, severity) of a suite (quick, paper, standard) or "
                   "of a list KIND[:SEVERITIES],... e.g. fog:1+5,contrast:3; writes RUN_DIR/eval/suite-<name>.json")
    e.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    """Run ``dreamshift evaluate``; raises ``DreamshiftError`` on bad input."""
    if args.suite is not None:
        if args.alpha:
            raise ConfigError("--suite and --alpha cannot be combined; evaluate a merged run "
                              "(dreamshift merge) with --suite instead")
        run_suite(args.run_dir, args.suite, args.episodes, args.seed, args.device, args.threads, args.policy)
    else:
        run_clean(args.run_dir, args.episodes, args.seed, args.device, args.alpha, args.threads, args.policy)


def _check_eval_run(run_dir: str, device: str) -> None:
    """Before evaluating: ``run_dir`` is a run directory whose ``eval/`` can be written, ``device`` is valid."""
    files.check_run_dir(run_dir)
    files.check_output_dir(Path(run_dir) / "eval", "results directory")
    common.check_device(device)


def run_clean(run_dir: str, episodes: int, seed: int, device: str, alphas: str = "",
              threads: int | None = None, policy: str | None = None) -> None:
    """Evaluate ``run_dir`` on its clean env (once per merging alpha of ``alphas``), print and record it."""
    try:
        sweep = [float(a) for a in alphas.split(",") if a.strip()] or [None]
    except ValueError:
        raise ConfigError(f"--alpha {alphas!r}: expected comma-separated numbers in [0, 1]") from None
    _check_eval_run(run_dir, device)
    evaluation.check_eval_range(episodes, seed)  # before any episode (and before any alpha's file is written)
    for alpha in sweep:
        path = evaluation.evaluate(run_dir, episodes=episodes, seed=seed, device=device, alpha=alpha, policy=policy,
                                   **common.threads_kwargs(evaluation.evaluate, threads))
        summary = json.loads(path.read_text())
        tag = "" if alpha is None else f" (alpha {alpha:g})"
        print(f"{summary['env']}{tag}: return {summary['return_mean']:.1f} +- {summary['return_stderr']:.1f} "
              f"(stderr, {len(summary['episodes'])} episodes, actions: {summary['eval_policy']})")
        print(f"results: {path}")
        run = {**summary, "eval_seed": seed}
        if alpha is not None:  # the merged agent is a variant of the run's, as in a sweep's WiSE-FT records
            run["encoder_mode"] = f"{summary['encoder_mode']}+merge:{alpha:g}"
        _write_records(run_dir, [("none", 0, run, summary["episodes"])], "" if alpha is None else f"-merge{alpha:g}")


def run_suite(run_dir: str, suite: str, episodes: int, seed: int, device: str, threads: int | None = None,
              policy: str | None = None) -> None:
    """Evaluate ``run_dir`` on every condition of ``suite``, print the table and record it."""
    _check_eval_run(run_dir, device)
    path = evaluation.evaluate_suite(run_dir, suite, episodes=episodes, seed=seed, device=device,
                                     progress=lambda line: print(line, file=sys.stderr, flush=True),
                                     policy=policy, **common.threads_kwargs(evaluation.evaluate_suite, threads))
    summary = json.loads(path.read_text())
    print(f"{summary['env']} {summary['encoder']} ({summary['encoder_mode']}), suite {summary['suite']}, "
          f"{episodes} episode(s) per condition, actions: {summary['eval_policy']}; cells: mean "
          f"return (change vs clean)")
    print(evaluation.format_table(summary))
    print(f"results: {path}")
    _write_records(run_dir, [(ep["shift"], ep["severity"], ep, [ep]) for ep in summary["episodes"]])


def _write_records(run_dir: str, conditions: list[tuple[str, int, dict[str, Any], list[dict[str, Any]]]],
                   tag: str = "") -> None:
    """Write an evaluation's records (:func:`dreamshift.common.write_records`; the trial is the run directory's
    name). ``conditions``: ``(shift, severity, run metadata, episode records)``."""
    trial = common.run_trial(run_dir)
    common.write_records(run_dir, [(tag, [r for shift, severity, run, episodes in conditions
                                          for r in results.episode_records(run, shift, severity, episodes, trial)])])
