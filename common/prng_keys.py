"""Typed PRNG keys as their raw uint32 data and back, for what cannot hold a typed key: msgpack
checkpoints, gathers between processes, a sharded `device_put` of host arrays."""

from __future__ import annotations

import jax


def is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def unwrap_keys(tree):
    """(`tree` with every typed key replaced by its key data, which leaves were keys)."""
    keys = jax.tree.map(is_key, tree)
    return jax.tree.map(lambda k, x: jax.random.key_data(x) if k else x, keys, tree), keys


def rewrap_keys(raw, keys):
    """The inverse of `unwrap_keys`: `raw` with the leaves that were keys made keys again."""
    return jax.tree.map(lambda k, x: jax.random.wrap_key_data(x) if k else x, keys, raw)
