"""TD3+BC: Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021.

TD3 (Fujimoto et al. 2018) plus a behaviour-cloning term in the actor objective (paper Eq. 3),
and states normalised by the dataset's mean and std (Eq. 4):

    pi = argmax_pi E_{(s,a)~D} [ lambda Q(s, pi(s)) - (pi(s) - a)^2 ],
    lambda = alpha / ( 1/N sum_i |Q(s_i, pi(s_i))| )      (over the minibatch, not differentiated)

The critics are TD3's: two Q-functions regressed on the clipped double-Q target with target
policy smoothing,

    y = r + gamma (1 - d) min_{i=1,2} Q'_i(s', a~'),
    a~' = clip( pi'(s') + clip(eps, -c, c), -1, 1 ),   eps ~ N(0, sigma^2),

and the actor and the target networks (Polyak, tau) are updated after every `policy_freq`-th
critic update. Actions live in [-1, 1] (common/evaluation maps them to the env's bounds).

Authors' code: https://github.com/sfujim/TD3_BC (TD3_BC.py, main.py).
Run: python algorithms/td3_bc.py --env offlax/hopper/medium-replay-v1 --num-seeds 3
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import struct
from flax.training.train_state import TrainState

from common.cli import check_args, check_batch_size, parse_cli, run_main
from common.datasets import DEFAULT_DATASET, load_dataset
from common.evaluation import Evaluator, env_action_scaling
from common.logger import RunLogger
from common.normalization import ObservationStatistics, observation_statistics
from common.training import prepare_output_dir, train, value_bound
from common.transitions import sample_batch, transitions_on_device


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
    """gradient updates per agent (paper Sec. 5: 1M time steps)"""
    eval_interval: int = 5_000
    """updates between evaluations (paper Sec. 5: every 5000 time steps)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (paper Sec. 5: 10)"""
    batch_size: int = 256
    """minibatch size (paper Table 3: 256)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the actor and of each critic (paper Table 3: 256, 256)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/td3_bc/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    actor_lr: float = 3e-4
    """actor learning rate, Adam (paper Table 3: 3e-4)"""
    critic_lr: float = 3e-4
    """critic learning rate, Adam (paper Table 3: 3e-4)"""
    discount: float = 0.99
    """gamma (paper Table 3: 0.99)"""
    tau: float = 0.005
    """target network update rate (paper Table 3: 0.005)"""
    policy_noise: float = 0.2
    """sigma of the target policy smoothing noise (paper Table 3: 0.2)"""
    noise_clip: float = 0.5
    """c, the clip of that noise (paper Table 3: 0.5)"""
    policy_freq: int = 2
    """critic updates per actor and target update (paper Table 3: 2)"""
    alpha: float = 2.5
    """alpha in lambda = alpha / mean|Q| (paper Sec. 5: 2.5)"""
    normalize_observations: bool = True
    """normalise states by the dataset's mean and std + 1e-3 (paper Eq. 4)"""


# --------------------------------------------------------------------------------------------
# Networks. Kernels as PyTorch's nn.Linear default (the authors' code), biases zero.

torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class Actor(nn.Module):
    hidden_dims: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, observations):
        x = observations
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        return nn.tanh(nn.Dense(self.action_dim, kernel_init=torch_linear_init)(x))


class QNetwork(nn.Module):
    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations, actions):
        x = jnp.concatenate([observations, actions], -1)
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        return nn.Dense(1, kernel_init=torch_linear_init)(x).squeeze(-1)


class DoubleQ(nn.Module):
    """Q_1 and Q_2 as one vmapped module: output (2, batch)."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(QNetwork, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden_dims)(observations, actions)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class TD3BCState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    actor_target: dict
    critic_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> TD3BCState:
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor, critic = Actor(args.hidden_dims, action_dim), DoubleQ(args.hidden_dims)
    observation, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(actor_key, observation)
    critic_params = critic.init(critic_key, observation, action)
    return TD3BCState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor_params,
                                tx=optax.adam(args.actor_lr)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=optax.adam(args.critic_lr)),
        actor_target=actor_params,
        critic_target=critic_params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def critic_target(state: TD3BCState, batch, noise, args: Args):
    """y = r + gamma (1 - d) min_i Q'_i(s', clip(pi'(s') + clip(sigma eps, -c, c), -1, 1))."""
    smoothing = jnp.clip(args.policy_noise * noise, -args.noise_clip, args.noise_clip)
    next_actions = state.actor.apply_fn(state.actor_target, batch["next_observations"])
    next_actions = jnp.clip(next_actions + smoothing, -1.0, 1.0)
    next_q = state.critic.apply_fn(state.critic_target, batch["next_observations"], next_actions)
    return batch["rewards"] + args.discount * (1.0 - batch["terminals"]) * next_q.min(0)


def critic_loss(critic_params, state: TD3BCState, batch, target):
    """sum_i mean_B (Q_i(s, a) - y)^2."""
    q = state.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
    return ((q - target) ** 2).mean(1).sum(), q


def actor_loss(actor_params, state: TD3BCState, batch, alpha: float):
    """-lambda mean_B Q_1(s, pi(s)) + mean_B,d (pi(s) - a)^2,  lambda = alpha / mean_B |Q_1|."""
    actions = state.actor.apply_fn(actor_params, batch["observations"])
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions)[0]
    lmbda = jax.lax.stop_gradient(alpha / jnp.abs(q).mean())
    return -lmbda * q.mean() + ((actions - batch["actions"]) ** 2).mean(), lmbda


def update(state: TD3BCState, data, args: Args):
    """`policy_freq` critic updates, then one actor and target update.

    TD3's delayed policy update as a fixed pattern, not a `cond` on the update counter: under
    `jax.vmap` over seeds a `cond` would run both branches on every update."""
    critic_losses, q_means = [], []
    for _ in range(args.policy_freq):
        key, batch_key, noise_key = jax.random.split(state.key, 3)
        batch = sample_batch(data, batch_key, args.batch_size)
        noise = jax.random.normal(noise_key, batch["actions"].shape)
        target = critic_target(state, batch, noise, args)
        (loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic.params, state, batch, target)
        state = state.replace(critic=state.critic.apply_gradients(grads=grads), key=key)
        critic_losses.append(loss)
        q_means.append(q.mean())
    # The actor uses the minibatch of the critic update just made, as in the authors' code.
    (loss, lmbda), grads = jax.value_and_grad(actor_loss, has_aux=True)(
        state.actor.params, state, batch, args.alpha)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    state = state.replace(
        actor_target=optax.incremental_update(state.actor.params, state.actor_target, args.tau),
        critic_target=optax.incremental_update(state.critic.params, state.critic_target, args.tau),
    )
    metrics = {"critic_loss": jnp.mean(jnp.stack(critic_losses)),
               "q_mean": jnp.mean(jnp.stack(q_means)), "actor_loss": loss, "lambda": lmbda}
    return state, metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: TD3BCState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None,
                            length=num_updates // args.policy_freq)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations) -> deterministic actions in [-1, 1]: pi(s) on normalised s."""
    actor = Actor(args.hidden_dims, action_dim)
    return lambda params, observations: actor.apply(params, stats.normalize(observations))


def main(args: Args) -> dict:
    check_args(args, update_multiple=max(args.policy_freq, 1), positive=("alpha", "policy_freq"),
               nonnegative=("policy_noise", "noise_clip"))
    output_dir, checkpoint = prepare_output_dir("td3_bc", args)
    dataset = load_dataset(args.env, args.env_id)
    action_scaling = env_action_scaling(dataset)
    check_batch_size(args, dataset.size)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    stats = (observation_statistics(dataset) if args.normalize_observations
             else ObservationStatistics.identity(obs_dim))
    data = transitions_on_device(dataset, stats, action_scaling, num_seeds=args.num_seeds)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    # jitted: initialising every seed is one compilation, not one per operation
    states = jax.jit(jax.vmap(init))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, action_dim, stats), seeds,
                         args.eval_episodes, action_scaling)
    logger = RunLogger("td3_bc", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(obs_mean=stats.mean, obs_std=stats.std,
                      action_low=action_scaling.low, action_high=action_scaling.high)
    # Evaluations, checkpoints, the NaN guard and Ctrl-C are common/training.py's; with --resume
    # it continues from the checkpoint's state instead of these fresh ones.
    states = train(states, lambda states, n: train_chunk(states, data, n, args),
                   lambda states: evaluate(states.actor.params), logger, args, statistics,
                   checkpoint, update_multiple=args.policy_freq,
                   value_bound=value_bound(data["rewards"], args.discount))
    evaluate.close()
    logger.save_policy(states.actor.params, **statistics)
    logger.finish("finished")
    return logger.results


if __name__ == "__main__":
    run_main(main, parse_cli(Args))
