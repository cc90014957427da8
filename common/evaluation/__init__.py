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

from common.datasets import Dataset, DatasetError, unmapped_reason
from common.environments import EnvironmentUnavailable
from common.environments import make as make_environment
from common.normalization import ActionScaling

EVAL_SEED_STRIDE = 100_000  # episode e of the agent seeded s resets with seed s * stride + e


DISCRETE_FILES = "algorithms/bc_discrete.py, bcq_discrete.py or cql_discrete.py"


def env_action_scaling(dataset: Dataset) -> ActionScaling:
    """The action bounds of the dataset's evaluation environment, which is made once (and
    closed) to check that it exists and agrees with the dataset (`make_env`), for an algorithm
    that learns continuous actions."""
    if dataset.discrete:
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has discrete actions (integer indices), and this "
            f"algorithm learns continuous ones. Use a discrete-action algorithm: {DISCRETE_FILES}.")
    env = make_env(dataset)
    try:
        return ActionScaling.from_space(env.action_space)
    finally:
        env.close()


def env_discrete_spaces(dataset: Dataset) -> tuple[int, tuple[int, ...] | None]:
    """(number of actions, image shape) of the dataset's (Discrete) evaluation environment, for
    an algorithm that learns discrete actions; checked like `env_action_scaling`. The image
    shape (H, W, C) is None for vector observations (`image_shape`)."""
    if not dataset.discrete:
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has continuous actions, and this algorithm learns "
            "discrete ones (an index among n actions). Use a continuous-action algorithm, e.g. "
            "algorithms/bc.py, bcq.py or cql.py.")
    env = make_env(dataset)
    try:
        return int(env.action_space.n), image_shape(env.observation_space.shape)
    finally:
        env.close()


def image_shape(observation_shape) -> tuple[int, ...] | None:
    """(H, W, C) for image observations, None for vectors. Datasets store images flattened, one
    row of H * W * C entries, and the discrete files' networks reshape them back."""
    shape = tuple(int(n) for n in observation_shape)
    return shape if len(shape) == 3 else None


def make_env(dataset: Dataset) -> gym.Env:
    """The dataset's evaluation environment, from its metadata; checks that the shapes agree."""
    env_id = dataset.info.env_id
    if not env_id:
        reason = (unmapped_reason(dataset.info.dataset_id) if dataset.info.source == "d4rl-hdf5"
                  else None)
        raise DatasetError(
            f"Dataset '{dataset.info.name}' does not name an environment to evaluate its policies "
            "in" + (f": {reason}" if reason else " (no `env_spec` in its metadata, no `env_id` "
                    "attribute, and not a D4RL file name offlax maps to one). Give it with "
                    "--env-id (a Gymnasium id, e.g. Hopper-v5 or D4RL/AdroitHandDoor-v1).")
        )
    try:
        env = make_environment(env_id)
    except EnvironmentUnavailable as error:
        raise DatasetError(f"Dataset '{dataset.info.name}' is evaluated in '{env_id}': {error}")
    except Exception as error:  # gymnasium raises several types for unknown / uninstalled envs
        raise DatasetError(
            f"Dataset '{dataset.info.name}' is evaluated in '{env_id}', which Gymnasium cannot "
            f"make here ({type(error).__name__}: {error}). Install the package that registers it "
            "(e.g. gymnasium-robotics for AntMaze and Adroit)."
        ) from None
    obs_shape = env.observation_space.shape
    if obs_shape is None:  # a Dict (goal-conditioned) or Tuple space: datasets hold vectors
        env.close()
        raise DatasetError(
            f"Dataset '{dataset.info.name}' is evaluated in '{env_id}', whose observations are a "
            f"{type(env.observation_space).__name__} space, not an array: offlax's policies act "
            "on the flat vectors the datasets hold. Give an environment with array observations "
            "with --env-id.")
    expected = gym.spaces.Discrete if dataset.discrete else gym.spaces.Box
    if not isinstance(env.action_space, expected):
        env.close()
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has {'discrete' if dataset.discrete else 'continuous'}"
            f" actions, but its environment '{env_id}' has a "
            f"{type(env.action_space).__name__} action space: the dataset was not made in it.")
    action_shape = env.action_space.shape
    flat_obs = (int(np.prod(obs_shape)),) if len(obs_shape) > 1 else obs_shape  # stored flat
    if flat_obs != dataset.observations.shape[1:] or action_shape != dataset.actions.shape[1:]:
        env.close()
        raise DatasetError(
            f"Dataset '{dataset.info.name}' has observations {dataset.observations.shape[1:]} and "
            f"actions {dataset.actions.shape[1:]}, but its environment '{env_id}' has observations "
            f"{obs_shape} and actions {action_shape}. The dataset was not made in this "
            "environment (or with a different version of it): check the dataset's `env_spec`, "
            "or give the right environment with --env-id."
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
    third argument, a key, and is given one per episode and step (`episode_key`). With
    `action_scaling` None the actions are discrete: the policy returns action indices.
    Observations reach the policy flattened, (batch, H * W * C) for images, as datasets store
    them.
    """

    def __init__(self, env_id: str, policy: Callable, seeds, episodes: int,
                 action_scaling: ActionScaling | None):
        self.seeds = [int(s) for s in seeds]
        self.episodes = episodes
        self.num_envs = len(self.seeds) * episodes
        self.envs = gym.vector.SyncVectorEnv([lambda: make_environment(env_id)] * self.num_envs)
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
            if action_scaling is None:  # discrete: indices
                return unit
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
            actions = np.asarray(self.act(params, obs, step))
            actions = actions.reshape(self.num_envs, *actions.shape[2:])
            step += 1
            observations, rewards, terminated, truncated, _ = self.envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
        return returns.reshape(shape)

    def close(self):
        self.envs.close()
