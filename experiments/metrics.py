"""Benchmark metrics: normalised return, success rate, drop %, retention, area under the severity curve,
mean ± standard error over seeds, and the aggregate statistics of Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice"): IQM, optimality gap and probability of improvement with 95 % stratified-bootstrap
confidence intervals, computed with the ``rliable`` library (its percentile bootstrap over runs, per task).

Conventions: a *score matrix* is ``(runs, tasks)`` float — rows are training seeds, columns are tasks (here:
``(env, shift, severity)`` conditions); each entry is the seed's mean normalised score over its evaluation
episodes of that condition.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from experiments.normalisation import constants


def normalised_return(returns: float | np.ndarray, env: str) -> float | np.ndarray:
    """``(R - R_random) / (R_max - R_random)`` with the per-env constants of :mod:`experiments.normalisation`
    (Jones et al. 2025 §4; 0 = the uniform-random policy, 1 = the maximum return).

    Raises:
        KeyError: no constants for ``env`` (see :func:`experiments.normalisation.constants`).
    """
    c = constants(env)
    if c is None:
        raise KeyError(f"no normalisation constants for {env!r}")
    out = (np.asarray(returns, dtype=np.float64) - c.r_random) / (c.r_max - c.r_random)
    return float(out) if out.ndim == 0 else out


def success_rate(successes: Sequence[bool | None]) -> float | None:
    """Fraction of episodes with success, in [0, 1]; ``None`` when the env defines no success."""
    known = [bool(s) for s in successes if s is not None]
    return float(np.mean(known)) if known else None


def drop_pct(clean: float, shifted: float) -> float | None:
    """``100 · (ID − OOD) / |ID|`` (Jones et al. 2025); ``None`` when the clean score is 0."""
    return None if clean == 0 else 100.0 * (clean - shifted) / abs(clean)


def retention(clean: float, shifted: float) -> float | None:
    """``OOD / ID``: the fraction of the clean score kept under the shift; ``None`` when the clean score is 0."""
    return None if clean == 0 else shifted / clean


def severity_auc(severities: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the score-vs-severity curve, trapezoidal, divided by the severity range: the mean score over
    severities (a flat curve at s has AUC s). ``severities`` need not be sorted; include 0 (clean) for the
    curve to start at the in-distribution score.

    Raises:
        ValueError: fewer than two distinct severities or mismatched lengths.
    """
    if len(severities) != len(scores):
        raise ValueError(f"{len(severities)} severities but {len(scores)} scores")
    order = np.argsort(severities)
    x = np.asarray(severities, dtype=np.float64)[order]
    y = np.asarray(scores, dtype=np.float64)[order]
    if len(np.unique(x)) < 2:
        raise ValueError("the severity curve needs at least two distinct severities")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1) / sqrt(n)``; 0 for one value) over seeds."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_se of no values")
    se = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0
    return float(a.mean()), se


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries of a ``(runs, tasks)`` matrix (rliable ``aggregate_iqm``: the mean of the
    middle 50 % of the pooled run-task scores)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Mean shortfall below ``gamma`` of a ``(runs, tasks)`` matrix of normalised scores (rliable)."""
    from rliable import metrics

    return float(metrics.aggregate_optimality_gap(np.asarray(scores, dtype=np.float64), gamma))


def interval_estimates(score_dict: dict[str, np.ndarray], reps: int = 2000, seed: int = 0,
                       ) -> dict[str, dict[str, tuple[float, float, float]]]:
    """IQM, mean and optimality gap with 95 % stratified-bootstrap CIs per method.

    Args:
        score_dict: method -> ``(runs, tasks)`` normalised scores (tasks aligned across methods is not needed).
        reps: bootstrap replications (rliable's default is 50 000; 2 000 keeps a leaderboard under seconds).

    Returns:
        ``{method: {"iqm": (point, lo, hi), "mean": ..., "optimality_gap": ...}}``.
        With one run a method's interval collapses to the point (nothing to resample across seeds).
    """
    from rliable import library as rly
    from rliable import metrics

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_optimality_gap(x)])

    data = {k: np.asarray(v, dtype=np.float64) for k, v in score_dict.items()}
    with warnings.catch_warnings():  # arch (under rliable) deprecates the RandomState rliable passes it
        warnings.simplefilter("ignore", FutureWarning)
        points, cis = rly.get_interval_estimates(data, aggregate, reps=reps,
                                                 random_state=np.random.RandomState(seed))
    out = {}
    for k in data:
        out[k] = {name: (float(points[k][i]), float(cis[k][0, i]), float(cis[k][1, i]))
                  for i, name in enumerate(("iqm", "mean", "optimality_gap"))}
    return out


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0,
                               ) -> tuple[float, float, float]:
    """P(X > Y): the probability that a run of X scores above a run of Y on a random task (Mann-Whitney U per
    task, averaged over tasks; Agarwal et al. 2021 §4.3), with a 95 % stratified-bootstrap CI.

    Args:
        x, y: ``(runs, tasks)`` score matrices with the same tasks (columns) in the same order.

    Returns:
        ``(point, lo, hi)``.

    Raises:
        ValueError: different numbers of tasks.
    """
    from rliable import library as rly
    from rliable import metrics

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X has {x.shape[1]} tasks but Y has {y.shape[1]}")
    with warnings.catch_warnings():  # see interval_estimates
        warnings.simplefilter("ignore", FutureWarning)
        points, cis = rly.get_interval_estimates({"xy": [x, y]}, lambda a, b: np.array(
            [metrics.probability_of_improvement(a, b)]), reps=reps, random_state=np.random.RandomState(seed))
    return float(points["xy"][0]), float(cis["xy"][0, 0]), float(cis["xy"][1, 0])
