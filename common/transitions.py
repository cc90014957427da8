"""The training arrays of a dataset on the device, and minibatch sampling from them inside jit."""

from __future__ import annotations

import warnings

import jax
import numpy as np

from common.datasets import Dataset, DatasetWarning
from common.normalization import ActionScaling, ObservationStatistics
from common.sharding import replicate

ACTION_CLIP = 1.0 - 1e-5  # D4RL's convention for actions at or beyond the bounds (unit box)


def transitions_on_device(dataset: Dataset, stats: ObservationStatistics,
                          action_scaling: ActionScaling, rewards=None, num_seeds: int = 1) -> dict:
    """The training arrays as one dict on the device (on each device `num_seeds` agents are
    split over, common/sharding.py): normalised observations, unit-box actions, rewards (the
    dataset's unless given), terminals as float32 (1 - d masks).

    Actions outside the environment's bounds are clipped to +-ACTION_CLIP in the unit box, as
    D4RL does, with a warning that says how many."""
    return replicate({
        "observations": stats.normalize(dataset.observations),
        "actions": unit_actions(dataset, action_scaling),
        "rewards": (dataset.rewards if rewards is None else rewards).astype(np.float32),
        "next_observations": stats.normalize(dataset.next_observations),
        "terminals": dataset.terminals.astype(np.float32),
    }, num_seeds)


def discrete_transitions_on_device(dataset: Dataset, rewards=None, num_seeds: int = 1) -> dict:
    """The training arrays of a discrete-action dataset on the device(s), as
    `transitions_on_device`: observations as stored (float32 vectors, or uint8 images that the
    networks cast: a quarter of the memory), actions as int32 indices, rewards (the dataset's
    unless given), terminals as float32."""
    return replicate({
        "observations": dataset.observations,
        "actions": dataset.actions.astype(np.int32),
        "rewards": (dataset.rewards if rewards is None else rewards).astype(np.float32),
        "next_observations": dataset.next_observations,
        "terminals": dataset.terminals.astype(np.float32),
    }, num_seeds)


def sample_batch(data: dict, key, batch_size: int) -> dict:
    """`batch_size` transitions drawn uniformly with replacement, inside jit."""
    indices = jax.random.randint(key, (batch_size,), 0, data["rewards"].shape[0])
    return jax.tree.map(lambda field: field[indices], data)


def unit_actions(dataset: Dataset, action_scaling: ActionScaling) -> np.ndarray:
    """The dataset's actions in the unit box; entries outside the bounds clipped (warned)."""
    actions = dataset.actions
    outside = (actions < action_scaling.low) | (actions > action_scaling.high)
    unit = action_scaling.to_unit(actions).astype(np.float32)
    if outside.any():
        farthest = float(np.abs(unit[outside]).max())
        warnings.warn(
            f"Dataset '{dataset.info.name}': {int(outside.sum())} of {outside.size} action "
            f"entries ({int(outside.any(1).sum())} of {len(actions)} transitions) lie outside the "
            f"environment's action bounds [{action_scaling.low.min():g}, "
            f"{action_scaling.high.max():g}] (up to {farthest:.4g} in the unit box). They are "
            f"clipped to +-(1 - 1e-5) of the bounds, as D4RL does.",
            DatasetWarning, stacklevel=3)
        unit = np.where(outside, np.clip(unit, -ACTION_CLIP, ACTION_CLIP), unit)
    return np.clip(unit, -1.0, 1.0)


def returns_to_go(dataset: Dataset, rewards: np.ndarray, discount: float) -> np.ndarray:
    """sum_k discount^k r_{t+k} to the end of each transition's episode (float32), for value
    diagnostics. At a timeout the sum stops, so it is smaller than the true value near the ends
    of truncated episodes."""
    ends = dataset.episode_ends
    totals = np.empty(len(rewards), np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):  # numpy cannot reset a discounted cumsum
        running = rewards[t] + (0.0 if ends[t] else discount * running)
        totals[t] = running
    return totals.astype(np.float32)
