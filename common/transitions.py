"""The training arrays of a dataset on the device, and minibatch sampling from them inside jit."""

from __future__ import annotations

import jax
import numpy as np

from common.datasets import Dataset
from common.normalization import ActionScaling, ObservationStatistics


def transitions_on_device(dataset: Dataset, stats: ObservationStatistics,
                          action_scaling: ActionScaling, rewards=None) -> dict:
    """The training arrays as one dict on the default device: normalised observations,
    unit-box actions, rewards (the dataset's unless given), terminals as float32 (1 - d masks)."""
    return jax.device_put({
        "observations": stats.normalize(dataset.observations),
        "actions": action_scaling.to_unit(dataset.actions).astype(np.float32),
        "rewards": (dataset.rewards if rewards is None else rewards).astype(np.float32),
        "next_observations": stats.normalize(dataset.next_observations),
        "terminals": dataset.terminals.astype(np.float32),
    })


def sample_batch(data: dict, key, batch_size: int) -> dict:
    """`batch_size` transitions drawn uniformly with replacement, inside jit."""
    indices = jax.random.randint(key, (batch_size,), 0, data["rewards"].shape[0])
    return jax.tree.map(lambda field: field[indices], data)
