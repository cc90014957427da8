"""Checkpoints: the whole state of a run in one file, written atomically, the last k kept.

<output-dir>/checkpoints/checkpoint_<update>.msgpack holds (flax serialisation, msgpack):

    format      CHECKPOINT_FORMAT
    algorithm   "td3_bc", ...
    update      updates done by every agent
    args        the run's Args as JSON
    states      the training state of every seed: parameters, optimiser states, target networks,
                RNG keys (as raw key data), with the leading seed axis
    statistics  observation mean / std and action bounds the run trains and acts with
    logger      the logger's state as JSON: evaluation history, timings (common/logger.py)

A file is written to a temporary name, flushed to disk and renamed over its final name, so a
crash mid-write leaves the previous checkpoints intact and never a truncated latest one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from common.errors import OfflaxError
from common.files import RunWriteError, write_atomically
from common.prng_keys import rewrap_keys, unwrap_keys

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"checkpoint_(\d+)\.msgpack")


class CheckpointError(OfflaxError):
    """A checkpoint cannot be written, found or used; the message says why."""


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir) -> list[Path]:
    """The run's checkpoints, oldest first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir, update: int, payload: dict, keep: int) -> Path:
    """Write checkpoint_<update>.msgpack atomically and delete all but the newest `keep`."""
    directory = checkpoint_dir(run_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunWriteError("the checkpoint directory", directory, error, None, run_dir) from None
    states, _ = unwrap_keys(payload["states"])
    tree = {**payload, "format": CHECKPOINT_FORMAT, "update": update,
            "states": serialization.to_state_dict(jax.device_get(states))}
    path = directory / f"checkpoint_{update:09d}.msgpack"
    write_atomically(path, serialization.msgpack_serialize(tree), "the checkpoint",
                     last_checkpoint=lambda: latest_checkpoint(run_dir), run_dir=run_dir,
                     durable=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path) -> dict:
    """The raw content of one checkpoint file (states as a state dict of numpy arrays)."""
    path = Path(path)
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except OSError as error:
        raise CheckpointError(f"Cannot read checkpoint '{path}': {error}.") from None
    except Exception as error:  # msgpack raises several types for damaged files
        raise CheckpointError(
            f"Checkpoint '{path}' is damaged ({type(error).__name__}: {error}). Delete it to "
            "resume from the previous checkpoint of the run.") from None
    if not isinstance(tree, dict) or tree.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an offlax checkpoint of format {CHECKPOINT_FORMAT}.")
    return tree


def load_latest(run_dir) -> dict:
    path = latest_checkpoint(run_dir)
    if path is None:
        what = ("does not exist" if not Path(run_dir).exists()
                else f"holds no checkpoint (no {CHECKPOINT_DIR}/checkpoint_*.msgpack)")
        raise CheckpointError(
            f"Cannot resume from '{run_dir}': the directory {what}. --resume takes the output "
            "directory of an earlier run, which writes a checkpoint at every evaluation.")
    checkpoint = load_checkpoint(path)
    checkpoint["path"] = str(path)
    return checkpoint


def saved_args(run_dir) -> dict:
    """The arguments of the run in `run_dir`, from its latest checkpoint."""
    return json.loads(load_latest(run_dir)["args"])


def args_json(args) -> str:
    return json.dumps(dataclasses.asdict(args), sort_keys=True)


def restore_states(template, saved: dict):
    """The saved training state in the structure (and key types) of `template`, a freshly
    initialised state of the same run."""
    raw, keys = unwrap_keys(template)
    try:
        restored = serialization.from_state_dict(raw, saved)
    except (KeyError, ValueError) as error:
        raise CheckpointError(
            f"The checkpoint's training state does not fit this algorithm's ({error}).") from None
    shapes = [(np.shape(a), np.shape(b)) for a, b in
              zip(jax.tree.leaves(raw), jax.tree.leaves(restored))]
    if any(a != b for a, b in shapes):
        raise CheckpointError("The checkpoint's parameter shapes differ from this run's; was it "
                              "written with other --hidden-dims or another dataset?")
    return rewrap_keys(restored, keys)
