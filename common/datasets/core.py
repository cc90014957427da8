"""What every dataset source returns: `Dataset` (flat transitions), `DatasetInfo`, the checks that
run on every load, the D4RL-normalised score and the dataset fingerprint; and the errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from common.errors import OfflaxError


class DatasetError(OfflaxError):
    """A dataset cannot be loaded; the message says why and what to do."""


class UnknownDatasetError(DatasetError):
    pass


class DatasetUnavailableError(DatasetError):
    """The dataset exists somewhere, but not here, and cannot be fetched now."""


class DatasetFormatError(DatasetError):
    """A file or dataset does not have the layout it should."""


class DatasetBuildInterrupted(DatasetError):
    """Ctrl-C while a generated dataset was being built: nothing of it is kept."""

    exit_code = 130
    label = "interrupted"


class DatasetWarning(UserWarning):
    """The dataset is usable, but something was changed or looks wrong; the message says what."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # as the user gave it
    source: str  # "minari", "d4rl-hdf5" or "offlax"
    dataset_id: str  # the Minari id or the file path that was read
    env_id: str | None  # Gymnasium id to evaluate in, from the dataset's metadata
    ref_min_score: float | None
    ref_max_score: float | None
    ref_score_source: str  # where the reference scores came from
    metadata: dict = field(default_factory=dict, compare=False)
    fingerprint: str | None = None  # `fingerprint(arrays)`, set by load_dataset


FLAT_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


@dataclass(frozen=True)
class Dataset:
    observations: np.ndarray  # (N, obs_dim) float32 (uint8 for images, flattened)
    actions: np.ndarray  # (N, action_dim) float32, or (N,) int64 for a discrete action space
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: s' is terminal, do not bootstrap
    timeouts: np.ndarray  # (N,) bool: the episode was cut after this step
    info: DatasetInfo

    @property
    def size(self) -> int:
        return len(self.rewards)

    @property
    def discrete(self) -> bool:
        """Whether the actions are indices of a Discrete action space (1-D integers)."""
        return self.actions.dtype.kind in "iu"

    @property
    def episode_ends(self) -> np.ndarray:
        """True at the last transition of every episode."""
        return self.terminals | self.timeouts

    def episode_starts(self) -> np.ndarray:
        """Index of the first transition of every episode."""
        ends = np.flatnonzero(self.episode_ends)
        return np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, np.int64)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in dataset order."""
        ends = np.flatnonzero(self.episode_ends)
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts())[: len(ends)]

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[-1], np.flatnonzero(self.episode_ends)]))

    def subset(self, indices) -> "Dataset":
        """The transitions at `indices` (e.g. whole episodes), with the same info."""
        return Dataset(*(getattr(self, name)[indices] for name in FLAT_FIELDS), info=self.info)


def fingerprint(arrays) -> str:
    """The first 16 hex digits of the SHA-256 of the six flat arrays, each with its field name,
    dtype and shape: equal fingerprints mean byte-identical training data. `arrays` is a
    `Dataset` or a sequence in FLAT_FIELDS order."""
    if isinstance(arrays, Dataset):
        arrays = [getattr(arrays, name) for name in FLAT_FIELDS]
    digest = hashlib.sha256()
    for name, array in zip(FLAT_FIELDS, arrays, strict=True):
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        array = array.astype(dtype, copy=False)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def normalized_score(returns, info: DatasetInfo):
    """D4RL-normalised score: 100 * (return - ref_min) / (ref_max - ref_min)."""
    check_reference_scores(info)
    returns = np.asarray(returns, np.float64)
    return 100.0 * (returns - info.ref_min_score) / (info.ref_max_score - info.ref_min_score)


def check_reference_scores(info: DatasetInfo):
    """Raise a DatasetError unless the dataset has the reference scores that normalise returns."""
    if info.ref_min_score is None or info.ref_max_score is None:
        raise DatasetError(
            f"Dataset '{info.name}' has no reference scores, so returns cannot be normalised. "
            "Add `ref_min_score` / `ref_max_score` to its Minari metadata, or add its environment "
            "family to D4RL_REFERENCE_SCORES in common/datasets/d4rl_names.py."
        )


def check_dataset(dataset: Dataset) -> Dataset:
    """Raise a DatasetFormatError if `dataset` is empty, ragged or holds NaN or Inf."""
    name = dataset.info.name
    if dataset.size == 0:
        raise DatasetFormatError(f"Dataset '{name}' is empty: it holds no transitions to train on.")
    fields = {f: getattr(dataset, f) for f in FLAT_FIELDS}
    lengths = {f: len(v) for f, v in fields.items()}
    ranks = {"observations": 2, "actions": 1 if dataset.discrete else 2, "next_observations": 2,
             "rewards": 1, "terminals": 1, "timeouts": 1}
    wrong = [f"{f} {v.shape}" for f, v in fields.items() if v.ndim != ranks[f]]
    if len(set(lengths.values())) != 1 or wrong:
        raise DatasetFormatError(
            f"Dataset '{name}' is not a table of transitions: fields have lengths {lengths}"
            + (f" and wrong ranks: {', '.join(wrong)}" if wrong else "") + ". Every field needs "
            "one row per transition (observations and continuous actions 2-D, the others and "
            "discrete actions 1-D).")
    if dataset.next_observations.shape != dataset.observations.shape:
        raise DatasetFormatError(
            f"Dataset '{name}' has observations {dataset.observations.shape} but "
            f"next_observations {dataset.next_observations.shape}; they must have the same shape.")
    for field_name in ("observations", "actions", "rewards", "next_observations"):
        values = fields[field_name]
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(values), -1).any(1))
            raise DatasetFormatError(
                f"Dataset '{name}' has {int(bad.sum())} NaN or Inf value(s) in `{field_name}`, in "
                f"{len(rows)} transition(s) (the first at index {rows[0]}). Training on them would "
                "turn every loss into NaN. Repair or drop those transitions (e.g. "
                "`dataset.subset(indices)`), or regenerate the dataset.")
    return dataset
