"""Seeds across devices and hosts: `--num-seeds N` splits the seed axis of the training state
over the devices (a 1-D mesh named "seeds"), and the dataset is copied to each of them once.

Every array of the training state has the seeds as its leading axis (the files vmap over it), so
sharding that axis is all it takes: `jax.jit` partitions `train_chunk` along it, each device
updates its own seeds, and nothing crosses devices during training. With one device (or one
seed) nothing is placed and the run is the unsharded one. The mesh uses the largest number of
devices that divides N (10 seeds on 8 GPUs: 5 devices, 2 seeds each), so every device holds the
same number of seeds; the run says so when some devices stay idle.

Several hosts (or several processes on one machine) join one run through `jax.distributed`
when JAX_NUM_PROCESSES is set above 1; each process then runs the same command:

    JAX_COORDINATOR_ADDRESS=host0:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python algorithms/...
    JAX_COORDINATOR_ADDRESS=host0:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python algorithms/...

(under Slurm or Open MPI, JAX finds the address and the process ids itself, and gives each
process one GPU: `srun --ntasks-per-node <GPUs per node> --export=ALL,JAX_NUM_PROCESSES=<tasks>
python algorithms/...`). Each process holds N / processes
seeds on its own devices. The seeds' metrics, and the state at evaluations, are gathered to
every process between host calls (`to_host`); process 0 alone evaluates and writes the run
directory, and the others write nothing. Leaving JAX_NUM_PROCESSES unset (or 1) is the
one-process run, with no coordinator.

Agent k computes the same updates whatever device or host it lands on, so a sharded run equals
the unsharded run seed by seed (tests/test_sharding.py: 2 forced CPU devices, and 2 processes).
"""

from __future__ import annotations

import os
import sys
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.errors import ConfigError
from common.prng_keys import rewrap_keys, unwrap_keys

_JOINED = False


def join_hosts(num_seeds: int | None) -> None:
    """With JAX_NUM_PROCESSES > 1, join the run's other processes (jax.distributed), before
    anything touches a device. `num_seeds` None: a command that runs in one process only."""
    global _JOINED
    text = os.environ.get("JAX_NUM_PROCESSES", "").strip()
    if not text or _JOINED:
        return
    try:
        processes = int(text)
        if processes < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"JAX_NUM_PROCESSES={text!r} is not a positive whole number: set it to "
                          "the number of processes that run this command together (unset it, "
                          "or set 1, for a run in this process alone).") from None
    if processes == 1:
        return
    if num_seeds is None:
        raise ConfigError(f"JAX_NUM_PROCESSES={processes}: this command runs in one process "
                          "only. Unset JAX_NUM_PROCESSES for it.")
    if num_seeds % processes:
        raise ConfigError(f"--num-seeds {num_seeds} does not split over JAX_NUM_PROCESSES="
                          f"{processes} processes: every process holds the same number of "
                          f"seeds. Use a multiple of {processes} seeds.")
    process_id = os.environ.get("JAX_PROCESS_ID")
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:  # joining waits for every process (up to JAX's 5 minutes): say what for
        print(f"joining {processes} processes through {address} (JAX_PROCESS_ID="
              f"{process_id})", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(
            num_processes=processes, process_id=None if process_id is None else int(process_id))
    except (ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0].rstrip(".") if str(error) else type(error).__name__
        raise ConfigError(
            f"JAX_NUM_PROCESSES={processes}, but this process could not join the others: "
            f"{reason}. Set "
            "JAX_COORDINATOR_ADDRESS (host:port of process 0) and JAX_PROCESS_ID (0 to "
            f"{processes - 1}) in each process, or launch under Slurm or Open MPI, where JAX "
            "finds both; unset JAX_NUM_PROCESSES for a run in one process.") from None
    _JOINED = True


def writes() -> bool:
    """Does this process write the run directory (process 0 of several; the only one)?"""
    return not _JOINED or jax.process_index() == 0  # alone: without starting the backend yet


def seed_mesh(num_seeds: int) -> Mesh | None:
    """The 1-D mesh of devices the seeds are split over; None where there is one device to use
    (one process, and one device, one seed, or a seed count no second device divides). With
    several processes each gives the same number of its devices, in process order, so process p
    holds a contiguous block of seeds."""
    processes = jax.process_count()
    per_process = num_seeds // processes
    local = jax.local_device_count()
    count = max(d for d in range(1, local + 1) if per_process % d == 0)
    if processes == 1:
        return Mesh(jax.local_devices()[:count], ("seeds",)) if count > 1 else None
    devices = [device for process in range(processes)
               for device in sorted((d for d in jax.devices() if d.process_index == process),
                                    key=lambda d: d.id)[:count]]
    return Mesh(np.array(devices), ("seeds",))


def replicate(tree, num_seeds: int):
    """`tree` (the dataset) on every device of the seed mesh; on the default device otherwise."""
    mesh = seed_mesh(num_seeds)
    if mesh is None:
        return jax.device_put(tree)
    if jax.process_count() > 1:  # a global array is made from host values, the same everywhere
        tree = jax.tree.map(np.asarray, tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_seeds(states):
    """The training state (leading axis: seeds) split over the seed mesh."""
    num_seeds = jax.tree.leaves(states)[0].shape[0]
    mesh, available = seed_mesh(num_seeds), jax.device_count()
    used = 1 if mesh is None else mesh.size
    if 1 < num_seeds and used < available and writes():
        warnings.warn(f"--num-seeds {num_seeds} splits evenly over {used} of the {available} "
                      f"devices; the others stay idle. Use a multiple of {available} seeds to "
                      "use them all.", stacklevel=2)
    if mesh is None:
        return jax.device_put(states)  # a restored checkpoint's numpy arrays, on the device
    sharding = NamedSharding(mesh, PartitionSpec("seeds"))
    if jax.process_count() == 1:
        return jax.device_put(states, sharding)
    # every process made the same states (same seeds, same checkpoint): each keeps its block
    raw, keys = unwrap_keys(states)
    return rewrap_keys(jax.device_put(jax.tree.map(np.asarray, raw), sharding), keys)


def to_host(tree):
    """`tree` (seeds on the leading axis) as host values with every seed: on one process,
    `jax.device_get`; with several, gathered from all of them (every process must call it)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    raw, keys = unwrap_keys(tree)
    return rewrap_keys(multihost_utils.process_allgather(raw, tiled=True), keys)


def any_process(flag: bool) -> bool:
    """True where `flag` is true in any process (a Ctrl-C that reached one of them)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def text_of_process_zero(text: str) -> str:
    """Process 0's `text` in every process (one process: `text`)."""
    if not _JOINED:
        return text
    data = np.zeros(4096, np.uint8)
    encoded = np.frombuffer(text.encode(), np.uint8)[:4096]
    data[:len(encoded)] = encoded
    return bytes(multihost_utils.broadcast_one_to_all(data)).rstrip(b"\0").decode()
