"""The committed behaviour policies (`common/policies/<env>.npz`) that offlax's datasets are
rolled out with, evaluated with `portable_math` so that they act the same on every machine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from common.datasets import portable_math

POLICY_DIR = Path(__file__).parents[1] / "policies"


@dataclass(frozen=True)
class BehaviourPolicies:
    env_key: str  # "hopper"
    env_id: str  # "Hopper-v5"
    params: dict  # policy name -> {layer/kernel: float16 array}
    meta: dict  # export record: reference scores, snapshot steps, replay schedule, training


@lru_cache(maxsize=None)
def load_policies(env_key: str) -> BehaviourPolicies:
    path = POLICY_DIR / f"{env_key}.npz"
    with np.load(path) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        params: dict[str, dict] = {}
        for key in data.files:
            if key == "meta":
                continue
            policy, layer = key.split("/", 1)
            params.setdefault(policy, {})[layer] = data[key]
    return BehaviourPolicies(env_key, meta["env_id"], params, meta)


def available_envs() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.npz"))


def save_policies(path: Path, env_id: str, params: dict, meta: dict):
    """float16 weights: the committed policies must stay small (the fp16 network *is* the
    behaviour policy: generation and reference scores use exactly these weights)."""
    arrays = {
        f"{policy}/{layer}": np.asarray(w, np.float16)
        for policy, layers in params.items()
        for layer, w in layers.items()
    }
    meta = {**meta, "env_id": env_id}
    arrays["meta"] = np.frombuffer(json.dumps(meta, indent=1).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


class TanhGaussianPolicy:
    """The SAC actor of benchmarks/sac.py: a = tanh(mu(s) + sigma(s) * eps), eps ~ N(0, I).

    Computed in float64 with `portable_math` (no BLAS, no libm, no CPU-dependent SIMD) from the
    float32 observations, and rounded to float32 once, at the end: the same bits on every
    machine."""

    def __init__(self, layers: dict, action_low: np.ndarray, action_high: np.ndarray):
        hidden = sorted(
            (k for k in layers if k.startswith("hidden_") and k.endswith("/kernel")),
            key=lambda k: int(k.split("_")[1].split("/")[0]),
        )
        as64 = lambda name: np.asarray(layers[name], np.float64)  # noqa: E731
        self.hidden = [(as64(k), as64(k.replace("kernel", "bias"))) for k in hidden]
        self.mean = (as64("mean/kernel"), as64("mean/bias"))
        self.log_std = (as64("log_std/kernel"), as64("log_std/bias"))
        low, high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
        self.scale, self.offset = (high - low) / 2.0, (high + low) / 2.0

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        x = np.asarray(obs, np.float32)
        for kernel, bias in self.hidden:
            h = portable_math.dense(x, kernel, bias)
            x = np.where(h > 0.0, h, 0.0)  # ReLU without max's sign-of-zero ambiguity
        u = portable_math.dense(x, *self.mean)
        if not deterministic:
            log_std = np.clip(portable_math.dense(x, *self.log_std), -20.0, 2.0)
            u = u + portable_math.exp(log_std) * portable_math.standard_normal(rng, u.shape)
        return (portable_math.tanh(u) * self.scale + self.offset).astype(np.float32)


class UniformPolicy:
    """Uniformly random actions: low + (high - low) * U[0, 1), in float64, rounded to float32."""

    def __init__(self, action_low: np.ndarray, action_high: np.ndarray):
        self.low = np.asarray(action_low, np.float32).astype(np.float64)
        self.high = np.asarray(action_high, np.float32).astype(np.float64)

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        u = rng.random((len(obs), len(self.low)))
        return (self.low + (self.high - self.low) * u).astype(np.float32)


def make_policy(policies: BehaviourPolicies, name: str, action_space):
    if name == "random":
        return UniformPolicy(action_space.low, action_space.high)
    return TanhGaussianPolicy(policies.params[name], action_space.low, action_space.high)
