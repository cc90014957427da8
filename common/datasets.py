"""Offline datasets as flat transition arrays: `load_dataset(name)` is the one entry point.

`name` may be
  * a D4RL name (`hopper-medium-v2`, `antmaze-umaze-v2`, ...), mapped by `common/d4rl_names.py`
    to the Minari dataset that replaced it;
  * a Minari id (`mujoco/walker2d/medium-v0`, `D4RL/antmaze/umaze-v1`), read from the local Minari
    directory (`MINARI_DATASETS_PATH`, default `~/.minari/datasets`) or downloaded when the
    `download` extra is installed and a network is there;
  * a path to a D4RL-layout HDF5 file;
  * an offlax dataset (`offlax/hopper/medium-v0`), built from the committed behaviour policies on
    first use and cached in the local Minari directory (`common/behaviour.py`).

Every transition is (s, a, r, s', terminal, timeout): `terminals` marks a true end of the MDP
(no bootstrapping from s'), `timeouts` an episode cut by a time limit or by the end of the data
(s' is a real next state; the episode simply stops there). An episode ends where either is set.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from common.d4rl_names import D4RL_NAMES, D4RL_REFERENCE_SCORES, reference_family
from common.errors import OfflaxError

OFFLAX_NAMESPACE = "offlax"
# The embedded default: built from the committed behaviour policies on first use (about a
# minute on 2 cores), so the README's main command works with no dataset hub in reach.
DEFAULT_DATASET = "offlax/hopper/medium-replay-v0"
DOWNLOAD_TIMEOUT_S = 3.0  # reachability probe before a download; the whole failure stays < 5 s


class DatasetError(OfflaxError):
    """A dataset cannot be loaded; the message says why and what to do."""


class UnknownDatasetError(DatasetError):
    pass


class DatasetUnavailableError(DatasetError):
    """The dataset exists somewhere, but not here, and cannot be fetched now."""


class DatasetFormatError(DatasetError):
    """A file or dataset does not have the layout it should."""


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


@dataclass(frozen=True)
class Dataset:
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, action_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: s' is terminal, do not bootstrap
    timeouts: np.ndarray  # (N,) bool: the episode was cut after this step
    info: DatasetInfo

    @property
    def size(self) -> int:
        return len(self.rewards)

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
        return Dataset(*(getattr(self, name)[indices] for name in _FLAT_FIELDS), info=self.info)


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
            "family to D4RL_REFERENCE_SCORES in common/d4rl_names.py."
        )


# --------------------------------------------------------------------------------------------
# Entry point


def load_dataset(name: str) -> Dataset:
    """Load `name` (D4RL name, Minari id, HDF5 path or offlax id) as flat transitions, checked
    to be non-empty, consistently shaped and finite (`check_dataset`)."""
    return check_dataset(_load(name))


def check_dataset(dataset: Dataset) -> Dataset:
    """Raise a DatasetFormatError if `dataset` is empty, ragged or holds NaN or Inf."""
    name = dataset.info.name
    if dataset.size == 0:
        raise DatasetFormatError(f"Dataset '{name}' is empty: it holds no transitions to train on.")
    fields = {f: getattr(dataset, f) for f in _FLAT_FIELDS}
    lengths = {f: len(v) for f, v in fields.items()}
    ranks = {"observations": 2, "actions": 2, "next_observations": 2, "rewards": 1,
             "terminals": 1, "timeouts": 1}
    wrong = [f"{f} {v.shape}" for f, v in fields.items() if v.ndim != ranks[f]]
    if len(set(lengths.values())) != 1 or wrong:
        raise DatasetFormatError(
            f"Dataset '{name}' is not a table of transitions: fields have lengths {lengths}"
            + (f" and wrong ranks: {', '.join(wrong)}" if wrong else "") + ". Every field needs "
            "one row per transition (observations and actions 2-D, the others 1-D).")
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


def _load(name: str) -> Dataset:
    if name.endswith((".hdf5", ".h5")) or Path(name).is_file():
        return load_d4rl_hdf5(name)
    if name in D4RL_NAMES:
        entry = D4RL_NAMES[name]
        if entry.minari_id is None:
            hint = (
                f" offlax generates the D4RL-style equivalent locally: use '{entry.offlax_id}'."
                if entry.offlax_id
                else ""
            )
            raise DatasetUnavailableError(
                f"D4RL dataset '{name}' has no Minari successor, so it cannot be loaded by name."
                f"{hint} A D4RL HDF5 file of it can be loaded by its path."
            )
        return _load_minari(entry.minari_id, requested=name, offlax_hint=entry.offlax_id)
    if name.startswith(OFFLAX_NAMESPACE + "/"):
        from common import behaviour  # imported lazily: only offlax datasets need gymnasium

        spec = behaviour.parse_offlax_id(name)  # raises UnknownDatasetError with close matches
        behaviour.build_dataset(spec)  # returns at once where it exists already
        return _load_minari(name, requested=name)
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)+-v\d+", name):
        return _load_minari(name, requested=name)
    raise UnknownDatasetError(_unknown_message(name))


def known_names() -> list[str]:
    """Every name load_dataset knows without a network: D4RL names, Minari ids, offlax ids."""
    from common import behaviour

    names = set(D4RL_NAMES)
    names.update(e.minari_id for e in D4RL_NAMES.values() if e.minari_id)
    names.update(behaviour.offlax_ids())
    names.update(_local_minari_ids())
    return sorted(names)


def _unknown_message(name: str) -> str:
    matches = difflib.get_close_matches(name, known_names(), n=5, cutoff=0.5)
    suggestion = f" Did you mean: {', '.join(matches)}?" if matches else ""
    return (
        f"Unknown dataset '{name}'.{suggestion} A dataset is a D4RL name (hopper-medium-v2), "
        "a Minari id (mujoco/hopper/medium-v0), an offlax id (offlax/hopper/medium-v0) or a path "
        "to a D4RL .hdf5 file; `python -m common.datasets --list` lists the known names."
    )


# --------------------------------------------------------------------------------------------
# Minari


def minari_local_exists(dataset_id: str) -> bool:
    """Whether the local Minari directory holds `dataset_id`."""
    from minari.storage import get_dataset_path

    return (get_dataset_path(dataset_id) / "data").exists()


def _local_minari_ids() -> list[str]:
    from minari.storage import get_dataset_path

    root = get_dataset_path()
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/data") if p.is_dir())


def _load_minari(dataset_id: str, requested: str, offlax_hint: str | None = None) -> Dataset:
    import minari

    if not minari_local_exists(dataset_id):
        _download_minari(dataset_id, requested, offlax_hint)
    try:
        return _minari_to_dataset(minari.load_dataset(dataset_id), dataset_id, requested)
    except DatasetError:
        raise
    except Exception as error:  # a broken directory: say which and how to fix it
        raise DatasetFormatError(
            f"Minari dataset '{dataset_id}' exists locally but cannot be read ({error}). "
            f"Delete it (`minari delete {dataset_id}`) and generate or download it again."
        ) from error


def _download_minari(dataset_id: str, requested: str, offlax_hint: str | None):
    from minari.storage import get_dataset_path

    alternatives = (
        f" Or use offlax's locally generated D4RL-style equivalent: '{offlax_hint}'."
        if offlax_hint
        else " Or generate a local dataset: `python benchmarks/generate_datasets.py` "
        "(offlax/<env>/<level>-v0)."
    )
    where = f"'{dataset_id}'" + (f" (for '{requested}')" if requested != dataset_id else "")
    not_here = f"Minari dataset {where} is not in the local Minari directory ({get_dataset_path()})"
    try:
        import huggingface_hub  # noqa: F401  (minari's remote storage backend)
    except ImportError:
        raise DatasetUnavailableError(
            f"{not_here}, and downloading needs the `download` extra: "
            f"`pip install 'offlax[download]'`, then run again with a network.{alternatives}"
        ) from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    reason = "HF_HUB_OFFLINE is set" if offline else _unreachable_reason()
    if reason:
        raise DatasetUnavailableError(
            f"{not_here}, and it cannot be downloaded now ({reason}). Connect to the internet "
            f"and run again to download it, or copy it into {get_dataset_path()}.{alternatives}"
        )
    import minari

    try:
        minari.download_dataset(dataset_id)
    except Exception as error:
        raise DatasetUnavailableError(
            f"{not_here}, and downloading it failed: {error}.{alternatives}"
        ) from error


def _remote_host() -> tuple[str, int]:
    """The host that Minari's configured remote downloads from (or the proxy in front of it)."""
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(variable):
            proxy = urlparse(os.environ[variable])
            return proxy.hostname or "", proxy.port or 80
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    if remote.startswith("gcp://"):
        return "storage.googleapis.com", 443
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return endpoint.hostname or "huggingface.co", endpoint.port or 443


def _unreachable_reason() -> str | None:
    """None when the remote answers a TCP connection within DOWNLOAD_TIMEOUT_S, else why not."""
    host, port = _remote_host()
    try:
        with socket.create_connection((host, port), timeout=DOWNLOAD_TIMEOUT_S):
            return None
    except OSError as error:
        return f"no connection to {host}:{port}: {error or type(error).__name__}"


def _flatten_observations(observations) -> np.ndarray:
    """Dict observations (goal-conditioned sets) become one vector: observation, desired_goal,
    then any other keys in sorted order (D4RL's AntMaze layout puts the goal after the state)."""
    if not isinstance(observations, dict):
        return np.asarray(observations, np.float32).reshape(len(observations), -1)
    order = [k for k in ("observation", "desired_goal") if k in observations]
    order += sorted(k for k in observations if k not in order and k != "achieved_goal")
    parts = [np.asarray(observations[k], np.float32) for k in order]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)


FLAT_CACHE = "offlax_flat.npz"
_FLAT_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
_FLAT_CACHE_VERSION = 1


def _data_signature(ds) -> str:
    """Name, size and mtime of every file of a Minari dataset: a cache is valid while equal."""
    data_dir = Path(ds.storage.data_path)
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(data_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return f"v{_FLAT_CACHE_VERSION}:{stats}"


def _read_flat_cache(path: Path, signature: str):
    try:
        with np.load(path) as cache:
            if str(cache["signature"]) != signature:
                return None
            return tuple(cache[k] for k in _FLAT_FIELDS)
    except (OSError, KeyError, ValueError):
        return None


def _write_flat_cache(path: Path, signature: str, arrays):
    """Atomic (temporary file + rename); skipped where the directory is not writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, signature=np.array(signature), **dict(zip(_FLAT_FIELDS, arrays)))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _minari_to_dataset(ds, dataset_id: str, requested: str) -> Dataset:
    """Flatten a Minari dataset's episodes. HDF5 access costs milliseconds per episode (a
    random-policy MuJoCo set has ~50k episodes), so the flat arrays are cached beside the
    dataset (`offlax_flat.npz`, keyed by the data files' sizes and times) after the first load."""
    cache_path = Path(ds.storage.data_path).parent / FLAT_CACHE
    signature = _data_signature(ds)
    arrays = _read_flat_cache(cache_path, signature)
    if arrays is None:
        arrays = _flatten_minari_episodes(ds, dataset_id)
        _write_flat_cache(cache_path, signature, arrays)
    metadata = dict(ds.storage.metadata)
    env_spec = ds.env_spec
    ref_min, ref_max, ref_source = _reference_scores(metadata, dataset_id)
    info = DatasetInfo(
        name=requested,
        source=OFFLAX_NAMESPACE if dataset_id.startswith(OFFLAX_NAMESPACE + "/") else "minari",
        dataset_id=dataset_id,
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        ref_score_source=ref_source,
        metadata=metadata,
    )
    return Dataset(*arrays, info)


def _flatten_minari_episodes(ds, dataset_id: str) -> tuple:
    fields: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    for episode in ds.iterate_episodes():
        obs = _flatten_observations(episode.observations)
        length = len(episode.rewards)
        if len(obs) != length + 1:
            raise DatasetFormatError(
                f"Minari dataset '{dataset_id}' episode {episode.id} has {len(obs)} observations "
                f"for {length} steps (expected steps + 1)."
            )
        terminal = np.asarray(episode.terminations, bool).reshape(-1)
        timeout = np.asarray(episode.truncations, bool).reshape(-1) & ~terminal
        timeout[-1] |= not terminal[-1]  # the episode stops here even if the flag was not set
        fields["obs"].append(obs[:-1])
        fields["next"].append(obs[1:])
        fields["act"].append(np.asarray(episode.actions, np.float32).reshape(length, -1))
        fields["rew"].append(np.asarray(episode.rewards, np.float32).reshape(-1))
        fields["term"].append(terminal)
        fields["trunc"].append(timeout)
    if not fields["rew"]:
        raise DatasetFormatError(f"Minari dataset '{dataset_id}' has no episodes.")
    return tuple(
        np.concatenate(fields[k]) for k in ("obs", "act", "rew", "next", "term", "trunc")
    )


def _reference_scores(metadata: dict, dataset_id: str):
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if ref_min is not None and ref_max is not None:
        return float(ref_min), float(ref_max), "dataset metadata"
    family = reference_family(dataset_id)
    if family is None:
        return None, None, "none"
    ref_min, ref_max = D4RL_REFERENCE_SCORES[family]
    warnings.warn(
        f"{dataset_id} has no reference scores in its metadata; using D4RL's published "
        f"'{family}' constants (random {ref_min}, expert {ref_max}).",
        stacklevel=3,
    )
    return ref_min, ref_max, f"D4RL constants ({family})"


# --------------------------------------------------------------------------------------------
# D4RL HDF5 files

_D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def load_d4rl_hdf5(path: str | os.PathLike, env_id: str | None = None) -> Dataset:
    """Read a file in D4RL's own HDF5 layout.

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
    ref_min, ref_max = D4RL_REFERENCE_SCORES.get(family, (None, None))
    info = DatasetInfo(
        name=str(path), source="d4rl-hdf5", dataset_id=str(path),
        env_id=env_id or attrs.get("env_id") or None, ref_min_score=ref_min,
        ref_max_score=ref_max, ref_score_source=f"D4RL constants ({family})" if family else "none",
    )  # fmt: skip
    return Dataset(
        observations[keep], actions[keep], rewards[keep], next_observations[keep],
        terminals[keep], timeouts[keep], info,
    )  # fmt: skip


def _family_from_filename(filename: str) -> str | None:
    """`door-human-v0.hdf5` -> `door`: D4RL names its files after the dataset."""
    stem = filename.rsplit(".", 1)[0]
    entry = D4RL_NAMES.get(stem)
    return entry.family if entry else None


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """`python -m common.datasets [NAME]`: load a dataset (default: the embedded default) and
    print what it holds."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("name", nargs="?", default=DEFAULT_DATASET,
                        help=f"D4RL name, Minari id, offlax id or path (default {DEFAULT_DATASET})")
    parser.add_argument("--list", action="store_true", help="list the known dataset names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(known_names()))
        return 0
    try:
        dataset = load_dataset(args.name)
    except DatasetError as error:
        print(f"error: {error}")
        return 2
    returns = dataset.episode_returns()
    info = dataset.info
    print(f"{info.name}  [{info.source}: {info.dataset_id}]  env {info.env_id}")
    print(
        f"  {dataset.size} transitions, {len(returns)} episodes, obs {dataset.observations.shape[1]}"
        f", action {dataset.actions.shape[1]}, terminals {int(dataset.terminals.sum())}, "
        f"timeouts {int(dataset.timeouts.sum())}"
    )
    print(f"  return mean {returns.mean():.1f} min {returns.min():.1f} max {returns.max():.1f}")
    if info.ref_min_score is not None:
        score = normalized_score(returns.mean(), info)
        print(
            f"  reference {info.ref_min_score:.1f} .. {info.ref_max_score:.1f} "
            f"({info.ref_score_source}); mean normalised score {score:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
