"""Seeds across devices: `--num-seeds N` splits the seed axis of the training state over the
local devices (a 1-D mesh named "seeds"), and the dataset is copied to each of them once.

Every array of the training state has the seeds as its leading axis (the files vmap over it), so
sharding that axis is all it takes: `jax.jit` partitions `train_chunk` along it, each device
updates its own seeds, and nothing crosses devices during training. With one device (or one
seed) nothing is placed and the run is the unsharded one. The mesh uses the largest number of
devices that divides N (10 seeds on 8 GPUs: 5 devices, 2 seeds each), so every device holds the
same number of seeds; the run says so when some devices stay idle.

Agent k computes the same updates whatever device it lands on, so a sharded run equals the
unsharded run seed by seed (tests/test_sharding.py, on 2 forced CPU devices).
"""

from __future__ import annotations

import warnings

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def seed_mesh(num_seeds: int) -> Mesh | None:
    """The 1-D mesh of local devices the seeds are split over; None where there is one device
    to use (one device, one seed, or a seed count no second device divides)."""
    devices = jax.local_devices()
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    return Mesh(devices[:count], ("seeds",)) if count > 1 else None


def replicate(tree, num_seeds: int):
    """`tree` (the dataset) on every device of the seed mesh; on the default device otherwise."""
    mesh = seed_mesh(num_seeds)
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_seeds(states):
    """The training state (leading axis: seeds) split over the seed mesh."""
    num_seeds = jax.tree.leaves(states)[0].shape[0]
    mesh, available = seed_mesh(num_seeds), jax.local_device_count()
    used = 1 if mesh is None else mesh.size
    if used < available:
        warnings.warn(f"--num-seeds {num_seeds} splits evenly over {used} of the {available} "
                      f"devices; the others stay idle. Use a multiple of {available} seeds to "
                      "use them all.", stacklevel=2)
    if mesh is None:
        return jax.device_put(states)  # a restored checkpoint's numpy arrays, on the device
    return jax.device_put(states, NamedSharding(mesh, PartitionSpec("seeds")))
