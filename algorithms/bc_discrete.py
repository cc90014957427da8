"""Behaviour cloning for discrete actions: a softmax policy fitted to the dataset's actions by
maximum likelihood (cross-entropy).

    pi_omega(a | s) = softmax(l_omega(s))_a
    L(omega) = -E_{(s,a)~D} [ log pi_omega(a | s) ]

The policy acts greedily, argmax_a l_omega(s)_a. It is the imitation model of discrete BCQ
(algorithms/bcq_discrete.py: the same network, optimiser and batch, the authors' FC_Q imitation
head and `regular_parameters`, sfujim/BCQ) trained on its own, so the two files differ by
exactly what BCQ adds to imitation: the Q-function and the threshold. Discrete BC is its own
file rather than a mode of algorithms/bc.py because its network (a convolutional torso on
MinAtar's images), its loss and its evaluation (an index, no action bounds) all differ; the
discrete files share one shape, as the continuous ones do.

Departures: none from the definition; the logit penalty of BCQ's loss (1e-2 mean l^2) is not
part of BC and is left out.
Run: python algorithms/bc_discrete.py --env offlax/cartpole/medium-replay-v1 --num-seeds 3
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
from common.training import prepare_output_dir, train
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
    """gradient updates per agent (as bcq_discrete.py: authors' max_timesteps 1e6)"""
    eval_interval: int = 5_000
    """updates between evaluations (as bcq_discrete.py: authors' eval_freq 5e3)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (as bcq_discrete.py: 10)"""
    batch_size: int = 64
    """minibatch size (as bcq_discrete.py: authors' regular_parameters 64)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the policy on vector states (as bcq_discrete.py's imitation network,
    authors' FC_Q: 256, 256); on images, the hidden layer after the convolution"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/bc_discrete/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    learning_rate: float = 3e-4
    """Adam learning rate (as bcq_discrete.py: authors' regular_parameters 3e-4)"""
    adam_eps: float = 1e-8
    """Adam's epsilon (as bcq_discrete.py: torch's default 1e-8)"""
    conv_channels: int = 16
    """channels of the 3x3 convolution on image observations (MinAtar's network, Young & Tian
    2019); unused on vector states"""


# Image (MinAtar) datasets: bcq_discrete.py's values for them (the authors' atari_parameters).
DATASET_OVERRIDES = {
    "minatar": dict(batch_size=32, hidden_dims=(128,), learning_rate=6.25e-5, adam_eps=1.5e-4,
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


class PolicyNetwork(nn.Module):
    """Logits l(s, .) from flat observations; `image_shape` (H, W, C) reshapes them into images
    for the convolution first."""

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


def network(args: Args, num_actions: int, image_shape) -> PolicyNetwork:
    return PolicyNetwork(args.hidden_dims, num_actions, image_shape, args.conv_channels)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class BCState(struct.PyTreeNode):
    actor: TrainState
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, num_actions: int, image_shape) -> BCState:
    key, init_key = jax.random.split(key)
    net = network(args, num_actions, image_shape)
    params = net.init(init_key, jnp.zeros((1, obs_dim)))
    return BCState(TrainState.create(apply_fn=net.apply, params=params,
                                     tx=optax.adam(args.learning_rate, eps=args.adam_eps)), key)


# --------------------------------------------------------------------------------------------
# Losses and the update


def cross_entropy_loss(logits, actions):
    """-mean_B log softmax(l(s))_a; returns (loss, accuracy of the greedy action)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.take_along_axis(log_probs, actions[:, None], -1)[:, 0].mean()
    return loss, (jnp.argmax(logits, -1) == actions).mean()


def update(state: BCState, data, args: Args):
    key, batch_key = jax.random.split(state.key)
    batch = sample_batch(data, batch_key, args.batch_size)

    def loss_fn(params):
        return cross_entropy_loss(state.actor.apply_fn(params, batch["observations"]),
                                  batch["actions"])

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor.params)
    return (BCState(state.actor.apply_gradients(grads=grads), key),
            {"actor_loss": loss, "accuracy": accuracy})


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: BCState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def evaluation_policy(args: Args, num_actions: int, image_shape):
    """(params, raw observations) -> action indices: argmax_a l(s)_a."""
    net = network(args, num_actions, image_shape)
    return lambda params, observations: jnp.argmax(net.apply(params, observations), -1)


def main(args: Args) -> dict:
    check_args(args, positive=("conv_channels",))
    output_dir, checkpoint = prepare_output_dir("bc_discrete", args)
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
    logger = RunLogger("bc_discrete", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(num_actions=num_actions,
                      observation_shape=np.asarray(image_shape or (obs_dim,)))
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
    run_main(main, parse_cli(Args, defaults=dataset_defaults))
