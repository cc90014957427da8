"""Behaviour cloning, and x%-BC: BC on the best x% of the dataset's trajectories.

BC fits a policy to the dataset's actions by supervised learning, with one of two policies:

    deterministic:  L(phi) = E_{(s,a)~D} [ ||pi_phi(s) - a||^2 ]            (mean over action dims)
    gaussian:       L(phi) = -E_{(s,a)~D} [ log N(a; tanh(mu_phi(s)), diag(sigma_phi)^2) ]

x%-BC (Chen et al., "Decision Transformer", NeurIPS 2021, Sec. 5.3; the "10% BC" of the D4RL
tables) first keeps the trajectories whose returns are in the top `top_fraction` of the dataset
and then does BC on them. With `top_fraction = 1` this is plain BC.

Defaults follow CORL's any_percent_bc.py (Tarasov et al., "CORL", NeurIPS 2023 Datasets and
Benchmarks), the reference the TD3+BC and IQL papers' BC baselines are usually reproduced with:
a deterministic tanh actor, MSE, Adam 3e-4, batch 256, normalised states.
Run: python algorithms/bc.py --env offlax/hopper/medium-replay-v1 --top-fraction 0.1
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import struct
from flax.training.train_state import TrainState

from common.cli import check_args, check_batch_size, parse_cli, run_main
from common.datasets import DEFAULT_DATASET, Dataset, load_dataset
from common.errors import ConfigError
from common.evaluation import Evaluator, env_action_scaling
from common.logger import RunLogger
from common.normalization import ObservationStatistics, observation_statistics
from common.training import prepare_output_dir, train
from common.transitions import ACTION_CLIP, sample_batch, transitions_on_device


@dataclass(frozen=True)
class Args:
    env: str = DEFAULT_DATASET
    """dataset: D4RL name, Minari id, D4RL HDF5 path or offlax id (see common/datasets/)"""
    env_id: Annotated[str | None, tyro.conf.arg(
        metavar="ID", help_behavior_hint="(default: the dataset's own)")] = None
    """Gymnasium environment to evaluate in; a dataset names its own, and a D4RL file gets the one
    common/datasets/d4rl_names.py maps its name to (door-*.hdf5: D4RL/AdroitHandDoor-v1)"""
    seed: int = 0
    """seed of the first agent; agent k of --num-seeds N uses seed + k"""
    num_seeds: int = 1
    """independent agents trained at once in one process (jax.vmap over the training state)"""
    total_updates: int = 1_000_000
    """gradient updates per agent (CORL any_percent_bc.py: 1M)"""
    eval_interval: int = 5_000
    """updates between evaluations (CORL any_percent_bc.py: 5000)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (CORL any_percent_bc.py: 10)"""
    batch_size: int = 256
    """minibatch size (CORL any_percent_bc.py: 256)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the policy (CORL any_percent_bc.py: 256, 256)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/bc/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    learning_rate: float = 3e-4
    """Adam learning rate (CORL any_percent_bc.py: 3e-4)"""
    top_fraction: float = 1.0
    """keep the trajectories whose returns are in this top fraction: 1.0 = BC, 0.1 = 10%-BC
    (Chen et al. 2021; CORL any_percent_bc.py frac)"""
    policy: Literal["deterministic", "gaussian"] = "deterministic"
    """deterministic tanh actor with MSE (CORL), or a Gaussian with tanh mean and state-independent
    std trained by log-likelihood (the policy of IQL, with unit advantage weights)"""
    normalize_observations: bool = True
    """normalise states by the dataset's mean and std + 1e-3 (CORL any_percent_bc.py: True)"""


# --------------------------------------------------------------------------------------------
# Networks. Kernels as PyTorch's nn.Linear default (CORL), biases zero.

torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class DeterministicPolicy(nn.Module):
    """pi(s) = tanh(MLP(s)); returns (mean, None) so that both policies share one interface."""

    hidden_dims: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, observations):
        x = observations
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        return nn.tanh(nn.Dense(self.action_dim, kernel_init=torch_linear_init)(x)), None


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(tanh(mu(s)), exp(log_std)^2), log_std a free vector clipped to [-5, 2]."""

    hidden_dims: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, observations):
        x = observations
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        mean = nn.tanh(nn.Dense(self.action_dim, kernel_init=torch_linear_init)(x))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.clip(log_std, -5.0, 2.0)


def policy_network(args: Args, action_dim: int) -> nn.Module:
    policy = DeterministicPolicy if args.policy == "deterministic" else GaussianPolicy
    return policy(args.hidden_dims, action_dim)


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations) -> deterministic actions in [-1, 1]: the tanh mean."""
    actor = policy_network(args, action_dim)
    return lambda params, observations: actor.apply(params, stats.normalize(observations))[0]


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class BCState(struct.PyTreeNode):
    actor: TrainState
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> BCState:
    key, actor_key = jax.random.split(key)
    actor = policy_network(args, action_dim)
    params = actor.init(actor_key, jnp.zeros((1, obs_dim)))
    return BCState(TrainState.create(apply_fn=actor.apply, params=params,
                                     tx=optax.adam(args.learning_rate)), key)


# --------------------------------------------------------------------------------------------
# Losses and the update


def mse_loss(predicted, actions):
    """mean_B,d (pi(s) - a)^2."""
    return ((predicted - actions) ** 2).mean()


def gaussian_log_prob(mean, log_std, actions):
    """log N(a; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


def bc_loss(actor_params, state: BCState, batch):
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    if log_std is None:
        return mse_loss(mean, batch["actions"])
    return -gaussian_log_prob(mean, log_std, batch["actions"]).mean()


def update(state: BCState, data, args: Args):
    key, batch_key = jax.random.split(state.key)
    batch = sample_batch(data, batch_key, args.batch_size)
    loss, grads = jax.value_and_grad(bc_loss)(state.actor.params, state, batch)
    return BCState(state.actor.apply_gradients(grads=grads), key), {"actor_loss": loss}


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: BCState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def top_trajectories(dataset: Dataset, fraction: float) -> np.ndarray:
    """Indices of the transitions of the ceil(fraction * episodes) highest-return episodes,
    0 < fraction <= 1 (main checks --top-fraction before loading the dataset)."""
    returns, starts = dataset.episode_returns(), dataset.episode_starts()
    lengths = dataset.episode_lengths()
    keep = np.argsort(-returns, kind="stable")[: int(np.ceil(fraction * len(returns)))]
    return np.concatenate([np.arange(starts[e], starts[e] + lengths[e]) for e in np.sort(keep)])


def main(args: Args) -> dict:
    check_args(args)
    if not 0.0 < args.top_fraction <= 1.0:
        raise ConfigError(f"--top-fraction must be in (0, 1], got {args.top_fraction}.")
    output_dir, checkpoint = prepare_output_dir("bc", args)
    dataset = load_dataset(args.env, args.env_id)
    action_scaling = env_action_scaling(dataset)
    if args.top_fraction < 1.0:
        kept = top_trajectories(dataset, args.top_fraction)
        episodes = len(dataset.episode_returns())
        print(f"{100 * args.top_fraction:g}%-BC: the {int(np.ceil(args.top_fraction * episodes))} "
              f"highest-return of {episodes} trajectories, {len(kept)} of {dataset.size} "
              "transitions.")
        dataset = dataset.subset(kept)
    check_batch_size(args, dataset.size)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    stats = (observation_statistics(dataset) if args.normalize_observations
             else ObservationStatistics.identity(obs_dim))
    data = transitions_on_device(dataset, stats, action_scaling, num_seeds=args.num_seeds)
    if args.policy == "gaussian":  # log pi(a|s) at the box's edge, as IQL: clip to 1 - 1e-5
        data["actions"] = jnp.clip(data["actions"], -ACTION_CLIP, ACTION_CLIP)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    # jitted: initialising every seed is one compilation, not one per operation
    states = jax.jit(jax.vmap(init))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, action_dim, stats), seeds,
                         args.eval_episodes, action_scaling)
    logger = RunLogger("bc", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(obs_mean=stats.mean, obs_std=stats.std,
                      action_low=action_scaling.low, action_high=action_scaling.high)
    # Evaluations, checkpoints, the NaN guard and Ctrl-C are common/training.py's; with --resume
    # it continues from the checkpoint's state instead of these fresh ones.
    states = train(states, lambda states, n: train_chunk(states, data, n, args),
                   lambda states: evaluate(states.actor.params), logger, args, statistics,
                   checkpoint)
    evaluate.close()
    logger.save_policy(states.actor.params, **statistics)
    logger.finish("finished")
    return logger.results


if __name__ == "__main__":
    run_main(main, parse_cli(Args))
