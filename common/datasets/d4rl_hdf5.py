"""D4RL's own HDF5 files (`hopper_medium-v2.hdf5`, `door-human-v0.hdf5`, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.datasets.core import (
    Dataset,
    DatasetFormatError,
    DatasetInfo,
    DatasetUnavailableError,
)
from common.datasets.d4rl_names import (
    D4RL_ENVIRONMENTS,
    D4RL_NAMES,
    D4RL_REFERENCE_SCORES,
    D4RL_UNMAPPED,
    d4rl_name,
)

_D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def load_d4rl_hdf5(path: str | os.PathLike, env_id: str | None = None) -> Dataset:
    """Read a file in D4RL's own HDF5 layout. Its environment is `env_id` where given, else the
    file's attribute `env_id` (algorithms/reward_model.py writes it), else the environment D4RL's
    family of that file name is evaluated in (`D4RL_ENVIRONMENTS`: `door-human-v0.hdf5` ->
    D4RL/AdroitHandDoor-v1); its reference scores are the attributes `ref_min_score` and
    `ref_max_score` where set, else D4RL's constants for its family.

    D4RL marks an episode end with `terminals` (the MDP ended) or `timeouts` (a time limit);
    files made before `timeouts` existed have only `terminals`. Where `next_observations` is
    absent, s' is the next row's observation, as in d4rl.qlearning_dataset: a timeout row has no
    known s' (the next row starts a new episode) and is dropped, making the row before it the
    episode's last (a timeout); a trailing row after the last marked end is dropped likewise.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise DatasetUnavailableError(f"D4RL file '{path}' does not exist.")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DatasetFormatError(
            f"'{path}' is not a readable HDF5 file ({error}). Download it again."
        ) from None
    with file:
        missing = [k for k in _D4RL_REQUIRED_KEYS if k not in file]
        if missing:
            raise DatasetFormatError(
                f"'{path}' is not in D4RL's layout: missing key(s) {', '.join(missing)} "
                f"(found: {', '.join(sorted(file.keys()))})."
            )
        data = {k: file[k][()] for k in (*_D4RL_REQUIRED_KEYS, "timeouts", "next_observations")
                if k in file}  # fmt: skip
        attrs = dict(file.attrs)
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetFormatError(f"'{path}' has fields of different lengths: {lengths}.")
    n = len(data["rewards"])
    if n == 0:
        raise DatasetFormatError(f"Dataset '{path}' is empty: it holds no transitions to train on.")
    observations = np.asarray(data["observations"], np.float32).reshape(n, -1)
    actions = np.asarray(data["actions"], np.float32).reshape(n, -1)
    terminals = np.asarray(data["terminals"], bool).reshape(-1)
    timeouts = np.asarray(data.get("timeouts", np.zeros(n, bool)), bool).reshape(-1) & ~terminals
    rewards = np.asarray(data["rewards"], np.float32).reshape(-1)

    if "next_observations" in data:
        next_observations = np.asarray(data["next_observations"], np.float32).reshape(n, -1)
        keep = np.ones(n, bool)
        timeouts[-1] |= not terminals[-1]
    else:
        # s'_t = s_{t+1}; at a terminal row it is never bootstrapped from, and the last row's
        # own observation stands in where no next row exists.
        next_observations = np.concatenate([observations[1:], observations[-1:]])
        keep = ~timeouts
        keep[-1] &= bool(terminals[-1])  # a trailing non-terminal row has no known s'
        # The kept row before a dropped one is where that episode now stops.
        dropped = np.flatnonzero(~keep)
        before = dropped - 1
        before = before[(before >= 0) & keep[np.maximum(before, 0)]]
        timeouts = np.zeros(n, bool)
        timeouts[before] = ~terminals[before]
    if not keep.any():
        raise DatasetFormatError(f"'{path}' holds no usable transitions.")
    family = _family_from_filename(path.name)
    if "ref_min_score" in attrs and "ref_max_score" in attrs:  # e.g. a relabelled dataset's
        ref_min, ref_max = float(attrs["ref_min_score"]), float(attrs["ref_max_score"])
        ref_source = "file attributes"
    else:
        ref_min, ref_max = D4RL_REFERENCE_SCORES.get(family, (None, None))
        ref_source = f"D4RL constants ({family})" if family else "none"
    info = DatasetInfo(
        name=str(path), source="d4rl-hdf5", dataset_id=str(path),
        env_id=env_id or _text(attrs.get("env_id")) or D4RL_ENVIRONMENTS.get(family),
        ref_min_score=ref_min,
        ref_max_score=ref_max, ref_score_source=ref_source,
        metadata={k: _text(v) for k, v in attrs.items()},
    )  # fmt: skip
    return Dataset(
        observations[keep], actions[keep], rewards[keep], next_observations[keep],
        terminals[keep], timeouts[keep], info,
    )  # fmt: skip


def source_dataset(path: str | os.PathLike) -> str | None:
    """The dataset a relabelled file was made from (its `source_dataset` attribute, which
    algorithms/reward_model.py writes), read without loading the arrays; None for a file
    without one, or for anything that is not a readable HDF5 file."""
    import h5py

    path = Path(path)
    if path.suffix not in (".hdf5", ".h5") or not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            value = file.attrs.get("source_dataset")
    except OSError:
        return None  # load_dataset says what is wrong with the file
    return _text(value) if value is not None else None


def unmapped_reason(path: str | os.PathLike) -> str | None:
    """Why a D4RL file of this name has no environment to evaluate in (`D4RL_UNMAPPED`), if it
    is of such a family."""
    return D4RL_UNMAPPED.get(_family_from_filename(Path(path).name))


def _text(value):
    """HDF5 attributes come back as numpy scalars or bytes; metadata keeps plain values."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def _family_from_filename(filename: str) -> str | None:
    """The D4RL family a file is of, from its name: `door-human-v0.hdf5` and D4RL's own cache
    names (`hopper_medium-v2.hdf5`, `door-v0_demos_clipped.hdf5`) -> `door`, `hopper`, `door`;
    the longest family the name starts with where it is no dataset name."""
    stem = filename.rsplit(".", 1)[0]
    if known := d4rl_name(stem):
        return D4RL_NAMES[known].family
    name = stem.replace("_", "-")
    families = [f for f in D4RL_REFERENCE_SCORES if name.startswith(f + "-")]
    return max(families, key=len) if families else None
