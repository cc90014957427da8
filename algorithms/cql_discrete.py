"""Discrete CQL: Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020, on Double DQN.

CQL(H) for discrete actions (paper Eq. 4 with the entropy regulariser, whose inner maximum over
distributions is the log-sum-exp): the Q-network minimises the soft maximum of Q over all
actions and maximises Q on the dataset's actions, on top of the TD error:

    L(theta) = mean_B huber(Q_theta(s, a) - y)
               + alpha ( mean_B log sum_a' exp Q_theta(s, a') - mean_B Q_theta(s, a) )
    y = r + gamma (1 - d) Q_theta'(s', argmax_a' Q_theta(s', a'))        (Double DQN)

With discrete actions the log-sum-exp is exact (no sampling, unlike algorithms/cql.py). The
target network follows the online one every `target_update_interval` updates by
theta' <- tau theta + (1 - tau) theta' (tau 1: a copy); the policy is greedy in Q.

Authors' code: https://github.com/aviralkumar2907/CQL (atari/: CQL on the batch_rl code of
Agarwal et al., the term `min_q_loss = mean logsumexp(Q) - mean Q(s, a)` in
batch_rl/multi_head/quantile_agent.py, weighted by `minq_weight`). alpha = 1, the paper's
Atari setting: the README's command for the 1% datasets and the per-game quantile_*.gin
configs (minq_weight 1.0); the same repository's dqn.gin sets 10 for a DQN agent that the
paper's tables do not use (--cql-alpha 10 reaches it). The paper's Atari agent is QR-DQN; the
value head here is Double DQN's (one Q per action), as d3rlpy's DiscreteCQL.
Other defaults are those of algorithms/bcq_discrete.py on vector states (sfujim/BCQ's
`regular_parameters`), so that the two files differ only in how they keep Q in the data; on
images, the CQL authors' Atari optimiser (quantile_*.gin: Adam 5e-5 with eps 3.125e-4, batch 32,
a target copy every 8000 updates), in DATASET_OVERRIDES, and MinAtar's network (a 3x3
convolution with 16 channels and 128 units, Young & Tian 2019) for their Nature-DQN one.
Departures, each for a reason:
- Biases start at zero (kernels as PyTorch's default), as in every offlax file.
- The TD loss is Huber (delta 1) as in bcq_discrete.py and the authors' DQN-based code.
- The evaluation acts epsilon-greedily with --eval-epsilon (the authors' epsilon_eval: 0.001
  on Atari; 0 on vector states, as bcq_discrete.py), with common/evaluation's keys.
Run: python algorithms/cql_discrete.py --env offlax/cartpole/medium-replay-v1 --num-seeds 3
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

from common.cli import (apply_dataset_overrides, check_args, check_batch_size, parse_cli,
                        run_main)
from common.datasets import DEFAULT_DISCRETE_DATASET, load_dataset
from common.evaluation import Evaluator, env_discrete_spaces
from common.logger import RunLogger
from common.training import prepare_output_dir, train, value_bound
from common.transitions import discrete_transitions_on_device, sample_batch


@dataclass(frozen=True)
class Args:
    env: str = DEFAULT_DISCRETE_DATASET
    """dataset with discrete actions: an offlax id (offlax/cartpole/medium-replay-v1), Minari id
    or D4RL-layout HDF5 path (see common/datasets/)"""
    env_id: Annotated[str | None, tyro.conf.arg(
        metavar="ID", help_behavior_hint="(default: the dataset's own)")] = None
    """Gymnasium environment to evaluate in; a dataset names its own, and a D4RL file gets the one
    common/datasets/d4rl_names.py maps its name to (door-*.hdf5: D4RL/AdroitHandDoor-v1)"""
    seed: int = 0
    """seed of the first agent; agent k of --num-seeds N uses seed + k"""
    num_seeds: int = 1
    """independent agents trained at once in one process (jax.vmap over the training state)"""
    total_updates: int = 1_000_000
    """gradient updates per agent (as bcq_discrete.py: sfujim/BCQ max_timesteps 1e6)"""
    eval_interval: int = 5_000
    """updates between evaluations (as bcq_discrete.py: sfujim/BCQ eval_freq 5e3)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (as bcq_discrete.py: 10)"""
    batch_size: int = 64
    """minibatch size (as bcq_discrete.py: sfujim/BCQ regular_parameters 64)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the Q-network on vector states (as bcq_discrete.py: sfujim/BCQ FC_Q 256,
    256); on images, the hidden layer after the convolution"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/cql_discrete/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    learning_rate: float = 3e-4
    """Adam learning rate (as bcq_discrete.py: sfujim/BCQ regular_parameters 3e-4)"""
    adam_eps: float = 1e-8
    """Adam's epsilon (as bcq_discrete.py: torch's default 1e-8)"""
    discount: float = 0.99
    """gamma (the CQL authors' configs: 0.99)"""
    tau: float = 0.005
    """target network update rate at each target update: 1 copies (as bcq_discrete.py: Polyak
    0.005)"""
    target_update_interval: int = 1
    """updates between target network updates (as bcq_discrete.py: every update)"""
    cql_alpha: float = 1.0
    """alpha, the weight of the conservative term (the paper's Atari runs: minq_weight 1.0 in
    the authors' README command and quantile_*.gin)"""
    eval_epsilon: float = 0.0
    """probability of a uniformly random action when evaluating (as bcq_discrete.py: 0)"""
    conv_channels: int = 16
    """channels of the 3x3 convolution on image observations (MinAtar's network, Young & Tian
    2019); unused on vector states"""


# Image (MinAtar) datasets: the CQL authors' Atari settings (quantile_*.gin: batch 32, Adam 5e-5
# with eps 3.125e-4, a target copy every 8000 updates, epsilon_eval 1e-3), with MinAtar's head
# width and bcq_discrete.py's evaluation interval. Later, more specific keys win.
DATASET_OVERRIDES = {
    "minatar": dict(batch_size=32, hidden_dims=(128,), learning_rate=5e-5, adam_eps=3.125e-4,
                    tau=1.0, target_update_interval=8_000, eval_epsilon=1e-3,
                    eval_interval=50_000),
}


def dataset_defaults(env: str) -> Args:
    return apply_dataset_overrides(Args(env=env), DATASET_OVERRIDES)


# --------------------------------------------------------------------------------------------
# Networks. Kernels as PyTorch's default (the authors' code), biases zero.

torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class Conv3x3(nn.Module):
    """MinAtar's 3x3 convolution (VALID, stride 1) on (..., H, W, C) images, written as one
    matmul on the nine shifted views (im2col): the function and parameters of
    nn.Conv(features, (3, 3), padding="VALID"), but 4x faster on XLA's CPU at 10x10 frames and
    batch 32, 6x with vmapped seeds (its convolution is slow at these sizes)."""

    features: int

    @nn.compact
    def __call__(self, x):
        height, width, channels = x.shape[-3:]
        kernel = self.param("kernel", torch_linear_init, (3, 3, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches = jnp.concatenate([x[..., i:i + height - 2, j:j + width - 2, :]
                                   for i in range(3) for j in range(3)], axis=-1)
        return patches @ kernel.reshape(-1, self.features) + bias


class MLP(nn.Module):
    hidden_dims: tuple[int, ...]
    output_dim: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        return nn.Dense(self.output_dim, kernel_init=torch_linear_init)(x)


class QNetwork(nn.Module):
    """Q(s, .) from flat observations; `image_shape` (H, W, C) reshapes them into images for the
    convolution first."""

    hidden_dims: tuple[int, ...]
    num_actions: int
    image_shape: tuple[int, ...] | None
    conv_channels: int

    @nn.compact
    def __call__(self, observations):
        x = observations.astype(jnp.float32)
        if self.image_shape is not None:
            x = x.reshape(*x.shape[:-1], *self.image_shape)
            x = Conv3x3(self.conv_channels)(x)
            x = nn.relu(x).reshape(*observations.shape[:-1], -1)
        return MLP(self.hidden_dims, self.num_actions)(x)


def network(args: Args, num_actions: int, image_shape) -> QNetwork:
    return QNetwork(args.hidden_dims, num_actions, image_shape, args.conv_channels)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class CQLState(struct.PyTreeNode):
    q: TrainState
    q_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, num_actions: int, image_shape) -> CQLState:
    key, init_key = jax.random.split(key)
    net = network(args, num_actions, image_shape)
    params = net.init(init_key, jnp.zeros((1, obs_dim)))
    return CQLState(
        q=TrainState.create(apply_fn=net.apply, params=params,
                            tx=optax.adam(args.learning_rate, eps=args.adam_eps)),
        q_target=params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def double_dqn_target(q_next, q_next_target, rewards, terminals, args: Args):
    """y = r + gamma (1 - d) Q'(s', argmax_a' Q(s', a'))."""
    next_actions = jnp.argmax(q_next, axis=-1)
    next_value = jnp.take_along_axis(q_next_target, next_actions[..., None], -1)[..., 0]
    return rewards + args.discount * (1.0 - terminals) * next_value


def cql_loss(q, actions, target, cql_alpha: float):
    """mean_B huber(Q(s, a) - y) + alpha (mean_B logsumexp_a' Q(s, a') - mean_B Q(s, a));
    returns (loss, (td loss, the conservative gap, Q(s, a)))."""
    q_taken = jnp.take_along_axis(q, actions[:, None], -1)[:, 0]
    td_loss = optax.huber_loss(q_taken, target, delta=1.0).mean()
    gap = jax.nn.logsumexp(q, axis=-1).mean() - q_taken.mean()
    return td_loss + cql_alpha * gap, (td_loss, gap, q_taken)


def update(state: CQLState, data, args: Args):
    key, batch_key = jax.random.split(state.key)
    batch = sample_batch(data, batch_key, args.batch_size)
    q_next = state.q.apply_fn(state.q.params, batch["next_observations"])
    q_next_target = state.q.apply_fn(state.q_target, batch["next_observations"])
    target = double_dqn_target(q_next, q_next_target, batch["rewards"], batch["terminals"], args)

    def loss_fn(params):
        return cql_loss(state.q.apply_fn(params, batch["observations"]), batch["actions"],
                        target, args.cql_alpha)

    (loss, (td_loss, gap, q_taken)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.q.params)
    q_state = state.q.apply_gradients(grads=grads)
    # Every `target_update_interval` updates (counted after this one): a select of two
    # parameter-sized trees, so vmapped seeds pay nothing extra.
    averaged = optax.incremental_update(q_state.params, state.q_target, args.tau)
    due = q_state.step % args.target_update_interval == 0
    q_target = jax.tree.map(lambda new, old: jnp.where(due, new, old), averaged, state.q_target)
    metrics = {"loss": loss, "td_loss": td_loss, "cql_gap": gap, "q_mean": q_taken.mean(),
               "target_mean": target.mean()}
    return CQLState(q_state, q_target, key), metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: CQLState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def policy_params(states) -> dict:
    """What the policy acts with: the one network (of a training state or a checkpoint's)."""
    return states["q"]["params"] if isinstance(states, dict) else states.q.params


def evaluation_policy(args: Args, num_actions: int, image_shape):
    """(params, raw observations, key) -> action indices: argmax_a Q(s, a), or with probability
    --eval-epsilon a uniformly random action."""
    net = network(args, num_actions, image_shape)

    def policy(params, observations, key):
        greedy = jnp.argmax(net.apply(params, observations), axis=-1)
        explore_key, action_key = jax.random.split(key)
        explore = jax.random.uniform(explore_key, greedy.shape) < args.eval_epsilon
        return jnp.where(explore, jax.random.randint(action_key, greedy.shape, 0, num_actions),
                         greedy)

    return policy


def main(args: Args) -> dict:
    check_args(args, positive=("target_update_interval", "conv_channels"),
               nonnegative=("cql_alpha",), unit=("eval_epsilon",))
    output_dir, checkpoint = prepare_output_dir("cql_discrete", args)
    dataset = load_dataset(args.env, args.env_id)
    num_actions, image_shape = env_discrete_spaces(dataset)
    check_batch_size(args, dataset.size)
    obs_dim = dataset.observations.shape[1]
    data = discrete_transitions_on_device(dataset, num_seeds=args.num_seeds)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, num_actions=num_actions,
                   image_shape=image_shape)
    # jitted: initialising every seed is one compilation, not one per operation
    states = jax.jit(jax.vmap(init))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, num_actions, image_shape),
                         seeds, args.eval_episodes, action_scaling=None)
    logger = RunLogger("cql_discrete", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(num_actions=num_actions,
                      observation_shape=np.asarray(image_shape or (obs_dim,)))
    # Evaluations, checkpoints, the NaN guard and Ctrl-C are common/training.py's; with --resume
    # it continues from the checkpoint's state instead of these fresh ones.
    states = train(states, lambda states, n: train_chunk(states, data, n, args),
                   lambda states: evaluate(policy_params(states)), logger, args, statistics,
                   checkpoint, value_bound=value_bound(data["rewards"], args.discount))
    evaluate.close()
    logger.save_policy(policy_params(states), **statistics)
    logger.finish("finished")
    return logger.results


if __name__ == "__main__":
    run_main(main, parse_cli(Args, defaults=dataset_defaults))
