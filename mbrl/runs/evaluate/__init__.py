"""The one evaluator of trained runs: every evaluation of a run rolls out here.

- :mod:`mbrl.runs.evaluate.episodes`: :func:`~mbrl.runs.evaluate.episodes.run_episodes`, the seeded rollout of an agent
  for a number of episodes (optionally through a shift ``wrap``), and its CPU-thread handling;
- :mod:`mbrl.runs.evaluate.suite`: a run's checkpoint under conditions ``(kind, severity)``
  (:func:`~mbrl.runs.evaluate.suite.run_conditions`): every condition of a shift suite
  (:func:`~mbrl.runs.evaluate.suite.evaluate_suite`, ``RUN_DIR/eval/suite-<name>.json``, with its per-condition
  aggregate, drop % and table) or the clean env, the ``none:0`` condition (:func:`~mbrl.runs.evaluate.suite.evaluate`,
  ``RUN_DIR/eval/clean.json``), and :func:`~mbrl.runs.evaluate.suite.evaluate_agent`, an agent's returns under the
  conditions of an adaptation (stage reports, alpha sweeps, continual runs).

The names below are the public API; import them from ``mbrl.runs.evaluate``.
"""

from mbrl.runs.evaluate.episodes import (
    EVAL_SEED_OFFSET,
    episode_rng_seed,
    eval_threads,
    resolve_threads,
    run_episodes,
    seeded_rng,
)
from mbrl.runs.evaluate.suite import (
    MAX_EPISODES,
    aggregate,
    check_eval_range,
    drop_pct,
    evaluate,
    evaluate_agent,
    evaluate_suite,
    format_table,
    run_conditions,
    run_metadata,
)

__all__ = ["EVAL_SEED_OFFSET", "MAX_EPISODES", "aggregate", "check_eval_range", "drop_pct",
           "episode_rng_seed", "eval_threads", "evaluate", "evaluate_agent", "evaluate_suite", "format_table",
           "resolve_threads", "run_conditions", "run_episodes", "run_metadata", "seeded_rng"]
