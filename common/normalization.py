"""Observation and reward normalisation shared by the algorithm files.

Kept here, once, so that no algorithm file carries its own copy of a preprocessing step that
changes results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.datasets import Dataset, DatasetError


@dataclass(frozen=True)
class ObservationStatistics:
    mean: np.ndarray
    std: np.ndarray

    def normalize(self, observations):
        """(s - mean) / std; works on numpy and jax arrays alike."""
        return (observations - self.mean) / self.std


def observation_statistics(dataset: Dataset, eps: float = 1e-3) -> ObservationStatistics:
    """Per-dimension mean and std + eps of the dataset's observations.

    eps = 1e-3 as in TD3+BC (Fujimoto & Gu 2021, Sec. 5; authors' code `normalize_states`),
    which keeps constant dimensions finite.
    """
    mean = dataset.observations.mean(0, dtype=np.float64)
    std = dataset.observations.std(0, dtype=np.float64) + eps
    return ObservationStatistics(mean.astype(np.float32), std.astype(np.float32))


def iql_reward_scale(dataset: Dataset, scale: float = 1000.0) -> float:
    """The factor IQL multiplies locomotion rewards by: scale / (max return - min return).

    Kostrikov et al. 2022, App. B and the authors' code (`normalize` in train_offline.py):
    returns are those of the dataset's episodes, split at terminals and timeouts.
    """
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) else 0.0
    if not np.isfinite(spread) or spread <= 0.0:
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has {len(returns)} episode(s) whose returns do not "
            "spread (max return == min return), so IQL's reward scaling is undefined; use a "
            "dataset with more than one distinct episode return or turn reward scaling off."
        )
    return scale / spread
