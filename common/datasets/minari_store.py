"""Minari datasets: the local Minari directory, downloads from Minari's remote, and flattening
episodes into transitions (cached beside each dataset, `offlax_flat.npz`)."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from common.datasets.core import (
    FLAT_FIELDS,
    Dataset,
    DatasetError,
    DatasetFormatError,
    DatasetInfo,
    DatasetUnavailableError,
)
from common.datasets.d4rl_names import D4RL_REFERENCE_SCORES, reference_family

OFFLAX_NAMESPACE = "offlax"
DOWNLOAD_TIMEOUT_S = 3.0  # reachability probe before a download; the whole failure stays < 5 s


def minari_local_exists(dataset_id: str) -> bool:
    """Whether the local Minari directory holds `dataset_id`."""
    from minari.storage import get_dataset_path

    return (get_dataset_path(dataset_id) / "data").exists()


def local_minari_ids() -> list[str]:
    from minari.storage import get_dataset_path

    root = get_dataset_path()
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/data") if p.is_dir())


def load_minari(dataset_id: str, requested: str, offlax_hint: str | None = None) -> Dataset:
    """`dataset_id` from the local Minari directory, downloaded first where it is not there;
    `offlax_hint` names the offlax equivalent that a failed download suggests."""
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
        f" Or use offlax's locally generated D4RL-style equivalent: {offlax_hint}."
        if offlax_hint
        else " Or generate a local dataset: `python benchmarks/generate_datasets.py` "
        "(offlax/<env>/<level>-v1)."
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
    then any other keys in sorted order (D4RL's AntMaze layout puts the goal after the state).
    Boolean and integer observations (MinAtar's images) stay a byte per entry, as uint8."""
    if not isinstance(observations, dict):
        observations = np.asarray(observations)
        dtype = np.uint8 if observations.dtype.kind in "bui" else np.float32
        return observations.astype(dtype, copy=False).reshape(len(observations), -1)
    order = [k for k in ("observation", "desired_goal") if k in observations]
    order += sorted(k for k in observations if k not in order and k != "achieved_goal")
    parts = [np.asarray(observations[k], np.float32) for k in order]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)


FLAT_CACHE = "offlax_flat.npz"
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
            return tuple(cache[k] for k in FLAT_FIELDS)
    except (OSError, KeyError, ValueError):
        return None


def _write_flat_cache(path: Path, signature: str, arrays):
    """Atomic (temporary file + rename); skipped where the directory is not writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, signature=np.array(signature), **dict(zip(FLAT_FIELDS, arrays)))
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
        arrays = flatten_episodes(ds.iterate_episodes(), dataset_id)
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


def cache_flat_arrays(dataset_id: str, arrays):
    """Write the flat-array cache of a local Minari dataset from arrays already in memory (the
    generator has them), so that its first load skips reading the HDF5 file episode by episode."""
    import minari

    ds = minari.load_dataset(dataset_id)
    _write_flat_cache(Path(ds.storage.data_path).parent / FLAT_CACHE, _data_signature(ds), arrays)


def flatten_episodes(episodes, dataset_id: str) -> tuple:
    """Transitions of Minari-style episodes (`observations` T + 1, `actions`, `rewards`,
    `terminations`, `truncations` T each), as arrays in FLAT_FIELDS order."""
    fields: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    for index, episode in enumerate(episodes):
        obs = _flatten_observations(episode.observations)
        length = len(episode.rewards)
        if len(obs) != length + 1:
            raise DatasetFormatError(
                f"Minari dataset '{dataset_id}' episode {getattr(episode, 'id', index)} has "
                f"{len(obs)} observations for {length} steps (expected steps + 1)."
            )
        terminal = np.asarray(episode.terminations, bool).reshape(-1)
        timeout = np.asarray(episode.truncations, bool).reshape(-1) & ~terminal
        timeout[-1] |= not terminal[-1]  # the episode stops here even if the flag was not set
        fields["obs"].append(obs[:-1])
        fields["next"].append(obs[1:])
        actions = np.asarray(episode.actions)
        if actions.dtype.kind in "iu":  # a Discrete action space: one integer per step
            fields["act"].append(actions.astype(np.int64).reshape(length))
        else:
            fields["act"].append(actions.astype(np.float32).reshape(length, -1))
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
