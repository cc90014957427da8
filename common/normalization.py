"""Observation, action and reward normalisation shared by the algorithm files.

Every algorithm file acts in the unit box [-1, 1]^d: dataset actions are rescaled from the
environment's bounds on the way in (`ActionScaling.to_unit`) and policy actions are mapped back on
the way out (`common/evaluation`). For D4RL's locomotion tasks the bounds are [-1, 1], so this
is the identity and the papers' networks are unchanged; for an environment such as
InvertedPendulum ([-3, 3]) it is what lets a tanh policy reach the whole action space.

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

    @classmethod
    def identity(cls, obs_dim: int) -> "ObservationStatistics":
        """Mean 0, std 1: for algorithms that do not normalise observations."""
        return cls(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))


@dataclass(frozen=True)
class ActionScaling:
    """Affine map between an environment's action box [low, high] and the unit box [-1, 1]."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_space(cls, space: "gymnasium.spaces.Box") -> "ActionScaling":
        return cls(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32))

    def to_unit(self, actions):
        return 2.0 * (actions - self.low) / (self.high - self.low) - 1.0

    def from_unit(self, unit_actions):
        return self.low + 0.5 * (unit_actions + 1.0) * (self.high - self.low)


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
            "dataset with more than one distinct episode return, or turn the scaling off (IQL: "
            "`--reward-transform none`)."
        )
    return scale / spread



def transform_rewards(dataset: Dataset, transform: str) -> np.ndarray:
    """The dataset's rewards as IQL's and POR's authors train on them: "return-range" (locomotion)
    times 1000 / (max - min episode return), "minus-one" (AntMaze) r - 1, "none" as they are."""
    if transform == "return-range":
        return dataset.rewards * iql_reward_scale(dataset)
    if transform == "minus-one":
        return dataset.rewards - 1.0
    return dataset.rewards
