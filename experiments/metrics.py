"""Benchmark metrics: normalised return, success rate, drop %, retention, area under the severity curve,
mean ± standard error over seeds, and the aggregate statistics of Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice", NeurIPS): IQM, optimality gap and probability of improvement with 95 %
stratified-bootstrap confidence intervals.

The aggregate statistics are rliable's definitions computed with numpy/scipy: rliable 1.2 installs beside
numpy 2 only with pandas < 3 (its ``arch`` dependency breaks on pandas 3) and its bootstrap runs a Python loop
per replication (41 s for one probability-of-improvement CI at 2 000 replications here). The stratified
bootstrap below resamples runs with replacement independently per task (rliable's ``StratifiedBootstrap``),
vectorised over replications, with percentile intervals (rliable's default method).

Conventions: a *score matrix* is ``(runs, tasks)`` float — rows are training seeds, columns are tasks (here:
``(env, shift, severity)`` conditions); each entry is the seed's mean normalised score over its evaluation
episodes of that condition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from experiments.normalisation import constants
from mbrl.runs.evaluate import drop_pct  # noqa: F401  (re-exported: the suite summaries' drop %, one definition)


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


def score(returns: float | np.ndarray, env: str) -> float | np.ndarray:
    """The leaderboard's score: :func:`normalised_return` where ``env`` has constants, else the raw return."""
    return returns if constants(env) is None else normalised_return(returns, env)


def success_rate(successes: Sequence[bool | None]) -> float | None:
    """Fraction of episodes with success, in [0, 1]; ``None`` when the env defines no success."""
    known = [bool(s) for s in successes if s is not None]
    return float(np.mean(known)) if known else None


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
    """Interquartile mean of all entries of a ``(runs, tasks)`` matrix: the mean of the middle 50 % of the pooled
    run-task scores (``scipy.stats.trim_mean(·, 0.25)``, as rliable's ``aggregate_iqm``)."""
    return float(stats.trim_mean(np.asarray(scores, dtype=np.float64).reshape(-1), 0.25))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Mean shortfall below ``gamma``: ``gamma - mean(min(scores, gamma))`` over a ``(runs, tasks)`` matrix of
    normalised scores (Agarwal et al. 2021 §4.2)."""
    return float(gamma - np.minimum(np.asarray(scores, dtype=np.float64), gamma).mean())


def _resample(x: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap of a ``(runs, tasks)`` matrix: ``(reps, runs, tasks)``, runs drawn with replacement
    independently per task."""
    runs, tasks = x.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    return x[idx, np.arange(tasks)]


def _percentile_ci(samples: np.ndarray, size: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - size), 50 * (1 + size)])
    return float(lo), float(hi)


AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # (reps, runs, tasks) -> (reps,)
    "iqm": lambda b: stats.trim_mean(b.reshape(len(b), -1), 0.25, axis=1),
    "mean": lambda b: b.reshape(len(b), -1).mean(axis=1),
    "optimality_gap": lambda b: 1.0 - np.minimum(b, 1.0).reshape(len(b), -1).mean(axis=1),
}


def interval_estimates(score_dict: dict[str, np.ndarray], reps: int = 2000, seed: int = 0,
                       ) -> dict[str, dict[str, tuple[float, float, float]]]:
    """IQM, mean and optimality gap with 95 % stratified-bootstrap percentile CIs per method.

    Args:
        score_dict: method -> ``(runs, tasks)`` normalised scores.
        reps: bootstrap replications.

    Returns:
        ``{method: {"iqm": (point, lo, hi), "mean": ..., "optimality_gap": ...}}``. With one run a method's
        interval collapses to the point (there is nothing to resample across seeds).

    Raises:
        ValueError: a matrix that is not 2-D or is empty.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in score_dict.items():
        x = np.asarray(v, dtype=np.float64)
        if x.ndim != 2 or x.size == 0:
            raise ValueError(f"{k}: expected a non-empty (runs, tasks) matrix, got shape {x.shape}")
        boot = _resample(x, reps, rng)
        out[k] = {}
        for name, agg in AGGREGATES.items():
            point = float(agg(x[None])[0])
            out[k][name] = (point, *_percentile_ci(agg(boot)))
    return out


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) per task, averaged over tasks, for batches ``(B, runs_x, tasks)``,
    ``(B, runs_y, tasks)`` -> ``(B,)`` (the Mann-Whitney U statistic divided by ``runs_x · runs_y``)."""
    diff = x[:, :, None, :] - y[:, None, :, :]
    u = (diff > 0).mean(axis=(1, 2)) + 0.5 * (diff == 0).mean(axis=(1, 2))
    return u.mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0,
                               ) -> tuple[float, float, float]:
    """P(X > Y): the probability that a run of X scores above a run of Y on a random task (Mann-Whitney U per
    task, averaged over tasks; Agarwal et al. 2021 §4.3), with a 95 % stratified-bootstrap CI (X and Y resampled
    independently).

    Args:
        x, y: ``(runs, tasks)`` score matrices with the same tasks (columns) in the same order.

    Returns:
        ``(point, lo, hi)``.

    Raises:
        ValueError: different numbers of tasks.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"X {x.shape} and Y {y.shape} must be (runs, tasks) with the same tasks")
    rng = np.random.default_rng(seed)
    point = float(_poi(x[None], y[None])[0])
    boot = _poi(_resample(x, reps, rng), _resample(y, reps, rng))
    return (point, *_percentile_ci(boot))
