"""Vectorised evaluation of N trained agents at once.

`Evaluator` steps `num_seeds x episodes` environments in one Gymnasium vector env and calls one
jitted, vmapped policy per step: agent k's parameters act in its own `episodes` environments.
The reset seeds are fixed (they depend on the agent's seed and the episode index only), and so is
the randomness of a stochastic policy (BCQ samples its candidate actions: at step t of an episode
its key is fold_in(key(reset seed), t)). So evaluating the same parameters twice gives the same
returns, and agent k of a `--num-seeds N` run is evaluated on the same episodes as a single run
with its seed.
"""

from __future__ import annotations

import inspect
from typing import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from common.datasets import Dataset, DatasetError
from common.normalization import ActionScaling

EVAL_SEED_STRIDE = 100_000  # episode e of the agent seeded s resets with seed s * stride + e


def env_action_scaling(dataset: Dataset) -> ActionScaling:
    """The action bounds of the dataset's evaluation environment, which is made once (and
    closed) to check that it exists and agrees with the dataset (`make_env`)."""
    env = make_env(dataset)
    try:
        return ActionScaling.from_space(env.action_space)
    finally:
        env.close()


def make_env(dataset: Dataset) -> gym.Env:
    """The dataset's evaluation environment, from its metadata; checks that the shapes agree."""
    env_id = dataset.info.env_id
    if not env_id:
        raise DatasetError(
            f"Dataset '{dataset.info.name}' does not name an environment (no `env_spec` in its "
            "metadata), so its policies cannot be evaluated. Use a dataset made with an "
            "environment, or load a D4RL HDF5 file with `load_d4rl_hdf5(path, env_id=...)`."
        )
    try:
        env = gym.make(env_id)
    except Exception as error:  # gymnasium raises several types for unknown / uninstalled envs
        raise DatasetError(
            f"Dataset '{dataset.info.name}' is evaluated in '{env_id}', which Gymnasium cannot "
            f"make here ({type(error).__name__}: {error}). Install the package that registers it "
            "(e.g. gymnasium-robotics for AntMaze and Adroit)."
        ) from None
    obs_shape = env.observation_space.shape
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise DatasetError(f"'{env_id}' has a {type(env.action_space).__name__} action space; "
                           "this algorithm needs a continuous (Box) one.")
    action_shape = env.action_space.shape
    if obs_shape != dataset.observations.shape[1:] or action_shape != dataset.actions.shape[1:]:
        env.close()
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has observations {dataset.observations.shape[1:]} and "
            f"actions {dataset.actions.shape[1:]}, but its environment '{env_id}' has observations "
            f"{obs_shape} and actions {action_shape}. The dataset was not made in this "
            "environment (or with a different version of it): check the dataset's `env_spec`."
        )
    return env


def takes_key(policy: Callable) -> bool:
    """Whether `policy` is stochastic: policy(params, observations, key) rather than
    policy(params, observations)."""
    return len(inspect.signature(policy).parameters) == 3


def episode_key(reset_seed: int, step) -> jax.Array:
    """The key a stochastic policy acts with at `step` of the episode reset with `reset_seed`."""
    return jax.random.fold_in(jax.random.key(reset_seed), step)


class Evaluator:
    """Runs `episodes` episodes for each of `len(seeds)` agents, all at once.

    policy(params, observations) -> unit-box actions, for one agent and a batch of raw
    observations (any observation normalisation happens inside it); a stochastic policy takes a
    third argument, a key, and is given one per episode and step (`episode_key`).
    """

    def __init__(self, env_id: str, policy: Callable, seeds, episodes: int,
                 action_scaling: ActionScaling):
        self.seeds = [int(s) for s in seeds]
        self.episodes = episodes
        self.num_envs = len(self.seeds) * episodes
        self.envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * self.num_envs)
        self.reset_seeds = [s * EVAL_SEED_STRIDE + e for s in self.seeds for e in range(episodes)]

        agent_reset_seeds = jnp.asarray(self.reset_seeds).reshape(len(self.seeds), episodes)
        stochastic = takes_key(policy)

        def agent_policy(params, observations, reset_seeds, step):  # one agent, E episodes
            if not stochastic:
                return policy(params, observations)
            keys = jax.vmap(episode_key, (0, None))(reset_seeds, step)
            return jax.vmap(lambda o, k: policy(params, o[None], k)[0])(observations, keys)

        @jax.jit
        def act(params, observations, step):  # params: (S, ...), observations: (S, E, obs_dim)
            unit = jax.vmap(agent_policy, (0, 0, 0, None))(params, observations,
                                                           agent_reset_seeds, step)
            actions = action_scaling.from_unit(unit)
            return jnp.clip(actions, action_scaling.low, action_scaling.high)

        self.act = act

    def __call__(self, params) -> np.ndarray:
        """Undiscounted returns of every episode, shape (num_seeds, episodes)."""
        observations, _ = self.envs.reset(seed=self.reset_seeds)
        shape = (len(self.seeds), self.episodes)
        returns = np.zeros(self.num_envs)
        running = np.ones(self.num_envs, bool)
        step = 0
        while running.any():
            obs = observations.reshape(*shape, -1).astype(np.float32)
            actions = np.asarray(self.act(params, obs, step)).reshape(self.num_envs, -1)
            step += 1
            observations, rewards, terminated, truncated, _ = self.envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
        return returns.reshape(shape)

    def close(self):
        self.envs.close()
