"""Interval estimates of normalised scores, as Agarwal et al. recommend ("Deep Reinforcement
Learning at the Edge of the Statistical Precipice", NeurIPS 2021), computed by their library,
`rliable`: this module only shapes offlax's scores into its (runs x tasks) matrices.

* Point estimates: the interquartile mean (IQM: the mean of the middle 50% of all runs' scores,
  pooled over tasks) and the mean.
* 95% confidence intervals: stratified bootstrap (runs resampled within each task), percentile
  method, as `rliable.library.get_interval_estimates`.
* Performance profiles: the fraction of runs whose score exceeds tau, with bootstrap bands.
* Probability of improvement P(X > Y): the Mann-Whitney U statistic per task, averaged over
  tasks, with its bootstrap interval.

`scores` everywhere maps an algorithm to a (runs, tasks) array of final normalised scores: one
row per seed, one column per dataset, every algorithm on the same datasets in the same order.
A fixed `seed` makes the bootstrap reproducible.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Mapping

import numpy as np

REPETITIONS = 2000  # bootstrap resamples: intervals stable to about 0.1 point on 0-100 scores
CONFIDENCE = 0.95


def _rliable():
    try:
        from rliable import library, metrics
    except (ImportError, TypeError) as error:  # not installed; or arch 7 under pandas 3
        raise ImportError(
            f"The sweep report needs rliable ({type(error).__name__}: {error}): pip install "
            "'offlax[stats]' (which pins pandas below 3 for rliable's arch < 8).") from None
    return library, metrics


@contextmanager
def _quiet():
    """arch (rliable's bootstrap) warns that its `random_state` argument is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
        yield


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all runs on all tasks (25% trimmed from each end)."""
    return float(_rliable()[1].aggregate_iqm(np.asarray(scores, np.float64)))


def aggregates(scores: Mapping[str, np.ndarray], seed: int = 0,
               repetitions: int = REPETITIONS) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{algorithm: {"IQM": (point, low, high), "Mean": (...)}} over all tasks of `scores`."""
    library, metrics = _rliable()

    def both(matrix):
        return np.array([metrics.aggregate_iqm(matrix), metrics.aggregate_mean(matrix)])

    np.random.seed(seed)  # rliable also draws from numpy's global generator
    with _quiet():
        points, intervals = library.get_interval_estimates(
            {name: np.asarray(m, np.float64) for name, m in scores.items()}, both,
            reps=repetitions, confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed))
    return {name: {metric: (float(points[name][i]), float(intervals[name][0, i]),
                            float(intervals[name][1, i]))
                   for i, metric in enumerate(("IQM", "Mean"))}
            for name in scores}


def per_task(scores: Mapping[str, np.ndarray], seed: int = 0, repetitions: int = REPETITIONS):
    """{algorithm: [aggregates of task j alone, for each task j]}."""
    tasks = next(iter(scores.values())).shape[1]
    by_task = [aggregates({name: np.asarray(m)[:, [j]] for name, m in scores.items()},
                          seed=seed, repetitions=repetitions) for j in range(tasks)]
    return {name: [by_task[j][name] for j in range(tasks)] for name in scores}


def performance_profiles(scores: Mapping[str, np.ndarray], taus: np.ndarray, seed: int = 0,
                         repetitions: int = REPETITIONS):
    """({algorithm: fraction of runs above each tau}, {algorithm: (2, len(taus)) band})."""
    library, _ = _rliable()
    np.random.seed(seed)  # create_performance_profile takes no random state
    with _quiet():
        return library.create_performance_profile(
            {name: np.asarray(m, np.float64) for name, m in scores.items()}, taus,
            reps=repetitions, confidence_interval_size=CONFIDENCE)


def probability_of_improvement(scores: Mapping[str, np.ndarray], pairs: list[tuple[str, str]],
                               seed: int = 0, repetitions: int = REPETITIONS):
    """{(x, y): (P(X > Y), low, high)} for each pair."""
    library, metrics = _rliable()
    pair_scores = {f"{x},{y}": (np.asarray(scores[x], np.float64),
                                np.asarray(scores[y], np.float64)) for x, y in pairs}
    np.random.seed(seed)
    with _quiet():
        points, intervals = library.get_interval_estimates(
            pair_scores, metrics.probability_of_improvement, reps=repetitions,
            confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(seed))
    return {(x, y): (float(points[f"{x},{y}"]), *map(float, np.ravel(intervals[f"{x},{y}"])))
            for x, y in pairs}
