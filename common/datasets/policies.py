"""The committed behaviour policies (`common/policies/<env>.npz`) that offlax's datasets are
rolled out with, evaluated with `portable_math` so that they act the same on every machine.

Continuous tasks have SAC actors (`benchmarks/sac.py`), discrete ones DQN Q-networks
(`benchmarks/dqn.py`, `meta["action_space"] == "discrete"`), which act epsilon-greedily."""

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


class EpsilonGreedyQPolicy:
    """The Q-network of benchmarks/dqn.py acting epsilon-greedily: argmax_a Q(s, a) (the first
    of tied maxima), or with probability epsilon a uniformly random action.

    Q is computed in float64 with `portable_math` like the SAC actor: vector observations go
    through the MLP; images (H, W, C) first through the 3x3 VALID convolution, computed as one
    dense layer on the 3x3xC patches (the kernel's (dy, dx, c) order), and flattened in (y, x,
    channel) order as flax does. Every call draws both the exploration coin and the random
    action for every row, so the random stream never depends on epsilon or on Q."""

    def __init__(self, layers: dict, num_actions: int, epsilon: float = 0.0):
        as64 = lambda name: np.asarray(layers[name], np.float64)  # noqa: E731
        hidden = sorted(
            (k for k in layers if k.startswith("hidden_") and k.endswith("/kernel")),
            key=lambda k: int(k.split("_")[1].split("/")[0]),
        )
        self.conv = None
        if "conv_0/kernel" in layers:
            kernel = as64("conv_0/kernel")  # (3, 3, C, F)
            self.conv = (kernel.reshape(-1, kernel.shape[-1]), as64("conv_0/bias"),
                         kernel.shape[0])
        self.hidden = [(as64(k), as64(k.replace("kernel", "bias"))) for k in hidden]
        self.q = (as64("q/kernel"), as64("q/bias"))
        self.num_actions, self.epsilon = int(num_actions), float(epsilon)

    def q_values(self, obs) -> np.ndarray:
        x = np.asarray(obs, np.float32)
        if self.conv is not None:
            kernel, bias, size = self.conv
            n, height, width = x.shape[:3]
            out_h, out_w = height - size + 1, width - size + 1
            patches = np.stack([x[:, dy:dy + out_h, dx:dx + out_w, :]
                                for dy in range(size) for dx in range(size)], axis=3)
            h = portable_math.dense(patches.reshape(n * out_h * out_w, -1), kernel, bias)
            x = np.where(h > 0.0, h, 0.0).reshape(n, -1)
        for kernel, bias in self.hidden:
            h = portable_math.dense(x, kernel, bias)
            x = np.where(h > 0.0, h, 0.0)
        return portable_math.dense(x, *self.q)

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        greedy = np.argmax(self.q_values(obs), axis=1)
        if deterministic:
            return greedy.astype(np.int64)
        explore = rng.random(len(greedy)) < self.epsilon
        random_actions = rng.integers(0, self.num_actions, len(greedy))
        return np.where(explore, random_actions, greedy).astype(np.int64)


class UniformDiscretePolicy:
    """Uniformly random actions among `num_actions`."""

    def __init__(self, num_actions: int):
        self.num_actions = int(num_actions)

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        return rng.integers(0, self.num_actions, len(obs)).astype(np.int64)


def is_discrete(policies: BehaviourPolicies) -> bool:
    return policies.meta.get("action_space") == "discrete"


def make_policy(policies: BehaviourPolicies, name: str, action_space, epsilon: float = 0.0):
    """The policy `name` of the file ("random": uniform actions); a discrete one acts
    epsilon-greedily with `epsilon`."""
    if is_discrete(policies):
        if name == "random":
            return UniformDiscretePolicy(action_space.n)
        return EpsilonGreedyQPolicy(policies.params[name], action_space.n, epsilon)
    if name == "random":
        return UniformPolicy(action_space.low, action_space.high)
    return TanhGaussianPolicy(policies.params[name], action_space.low, action_space.high)
