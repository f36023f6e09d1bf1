"""The one evaluator of trained runs: every evaluation of a run rolls out here.

- :mod:`mbrl.evaluate.episodes`: :func:`~mbrl.evaluate.episodes.run_episodes`, the seeded rollout of an agent
  for a number of episodes (optionally through a shift ``wrap``), its CPU-thread handling, and the clean
  evaluation :func:`~mbrl.evaluate.episodes.evaluate` (``RUN_DIR/eval/clean.json``);
- :mod:`mbrl.evaluate.suite`: :func:`~mbrl.evaluate.suite.evaluate_suite`, every ``(kind, severity)`` condition
  of a shift suite (:mod:`shifts.suites`; the clean condition is ``none:0``), ``RUN_DIR/eval/suite-<name>.json``,
  with its per-condition aggregate, drop % and table.

The names below are the public API; import them from ``mbrl.evaluate``.
"""

from mbrl.evaluate.episodes import (
    EVAL_SEED_OFFSET,
    episode_rng_seed,
    eval_threads,
    evaluate,
    resolve_threads,
    run_episodes,
    seeded_rng,
)
from mbrl.evaluate.suite import aggregate, drop_pct, evaluate_suite, format_table

__all__ = ["EVAL_SEED_OFFSET", "aggregate", "drop_pct", "episode_rng_seed", "eval_threads", "evaluate",
           "evaluate_suite", "format_table", "resolve_threads", "run_episodes", "seeded_rng"]
