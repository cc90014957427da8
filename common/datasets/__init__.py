"""Offline datasets as flat transition arrays: `load_dataset(name)` is the one entry point.

`name` may be
  * a D4RL name (`hopper-medium-v2`, `antmaze-umaze-v2`, ...), mapped by `d4rl_names.py` to the
    Minari dataset that replaced it;
  * a Minari id (`mujoco/walker2d/medium-v0`, `D4RL/antmaze/umaze-v1`), read from the local Minari
    directory (`MINARI_DATASETS_PATH`, default `~/.minari/datasets`) or downloaded when the
    `download` extra is installed and a network is there (`minari_store.py`);
  * a path to a D4RL-layout HDF5 file (`d4rl_hdf5.py`);
  * an offlax dataset (`offlax/hopper/medium-v1`), built from the committed behaviour policies on
    first use and cached in the local Minari directory (`generated.py`, `policies.py`).

Discrete-action datasets (offlax's CartPole and MinAtar tasks) hold integer actions, shape (N,),
and image observations flattened to uint8 rows (`Dataset.discrete`).
Every transition is (s, a, r, s', terminal, timeout): `terminals` marks a true end of the MDP
(no bootstrapping from s'), `timeouts` an episode cut by a time limit or by the end of the data
(s' is a real next state; the episode simply stops there). An episode ends where either is set.
Every loaded dataset carries the fingerprint of its arrays (`info.fingerprint`).

The modules import in one direction: core <- d4rl_names, minari_store, d4rl_hdf5 <- policies,
generated <- this package's `load_dataset`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path

from common.datasets.core import (
    Dataset,
    DatasetError,
    DatasetFormatError,
    DatasetInfo,
    DatasetUnavailableError,
    DatasetWarning,
    UnknownDatasetError,
    check_dataset,
    check_reference_scores,
    fingerprint,
    normalized_score,
)
from common.datasets.d4rl_hdf5 import load_d4rl_hdf5, source_dataset, unmapped_reason
from common.datasets.d4rl_names import D4RL_NAMES
from common.datasets.minari_store import (
    OFFLAX_NAMESPACE,
    load_minari,
    local_minari_ids,
    minari_local_exists,
)

__all__ = [
    "DEFAULT_DATASET", "DEFAULT_DISCRETE_DATASET", "Dataset", "DatasetError",
    "DatasetFormatError", "DatasetInfo", "DatasetUnavailableError", "DatasetWarning", "UnknownDatasetError", "check_dataset",
    "check_reference_scores", "fingerprint", "known_names", "load_d4rl_hdf5", "load_dataset",
    "minari_local_exists", "normalized_score", "source_dataset", "unmapped_reason",
]  # fmt: skip

# The embedded default: built from the committed behaviour policies on first use (about a
# minute on 2 cores), so the README's main command works with no dataset hub in reach.
DEFAULT_DATASET = "offlax/hopper/medium-replay-v1"
# The discrete-action files' default, likewise built on first use (seconds).
DEFAULT_DISCRETE_DATASET = "offlax/cartpole/medium-replay-v1"


def load_dataset(name: str, env_id: str | None = None) -> Dataset:
    """Load `name` (D4RL name, Minari id, HDF5 path or offlax id) as flat transitions, checked
    to be non-empty, consistently shaped and finite (`check_dataset`), with its fingerprint in
    `info.fingerprint`. `env_id` (an algorithm's --env-id) replaces the environment the dataset
    names for evaluation. A generated dataset whose fingerprint differs from the committed
    reference warns once."""
    dataset = check_dataset(_load(name))
    info = dataclasses.replace(dataset.info, fingerprint=fingerprint(dataset),
                               env_id=env_id or dataset.info.env_id)
    dataset = dataclasses.replace(dataset, info=info)
    if info.source == OFFLAX_NAMESPACE:
        from common.datasets import generated

        generated.check_fingerprint(dataset)
    return dataset


def _load(name: str) -> Dataset:
    if name.endswith((".hdf5", ".h5")) or Path(name).is_file():
        return load_d4rl_hdf5(name)
    if name in D4RL_NAMES:
        entry = D4RL_NAMES[name]
        if entry.minari_id is None:
            hint = ""
            if entry.offlax_id:
                from common.datasets import generated

                hint = (f" offlax generates the D4RL-style equivalent locally: use "
                        f"'{entry.offlax_id}'{generated.first_use_note(entry.offlax_id)}.")
            raise DatasetUnavailableError(
                f"D4RL dataset '{name}' has no Minari successor, so it cannot be loaded by name."
                f"{hint} A D4RL HDF5 file of it can be loaded by its path."
            )
        hint = None
        if entry.offlax_id:
            from common.datasets import generated

            hint = f"'{entry.offlax_id}'{generated.first_use_note(entry.offlax_id)}"
        return load_minari(entry.minari_id, requested=name, offlax_hint=hint)
    if name.startswith(OFFLAX_NAMESPACE + "/"):
        from common.datasets import generated  # imported lazily: it needs gymnasium

        spec = generated.parse_offlax_id(name)  # raises UnknownDatasetError with close matches
        generated.build_dataset(spec)  # returns at once where it exists already
        return load_minari(name, requested=name)
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)+-v\d+", name):
        return load_minari(name, requested=name)
    raise UnknownDatasetError(_unknown_message(name))


def known_names() -> list[str]:
    """Every name load_dataset knows without a network: D4RL names, Minari ids, offlax ids."""
    from common.datasets import generated

    names = set(D4RL_NAMES)
    names.update(e.minari_id for e in D4RL_NAMES.values() if e.minari_id)
    names.update(generated.offlax_ids())
    names.update(local_minari_ids())
    return sorted(names)


def _unknown_message(name: str) -> str:
    matches = difflib.get_close_matches(name, known_names(), n=5, cutoff=0.5)
    suggestion = f" Did you mean: {', '.join(matches)}?" if matches else ""
    return (
        f"Unknown dataset '{name}'.{suggestion} A dataset is a D4RL name (hopper-medium-v2), "
        "a Minari id (mujoco/hopper/medium-v0), an offlax id (offlax/hopper/medium-v1) or a path "
        "to a D4RL .hdf5 file; `python -m common.datasets --list` lists the known names."
    )
