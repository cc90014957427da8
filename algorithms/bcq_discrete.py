"""Discrete BCQ: Fujimoto, Conti, Ghavamzadeh & Pineau, "Benchmarking Batch Deep Reinforcement
Learning Algorithms", NeurIPS 2019 Deep RL Workshop (arXiv:1910.01708).

Batch-Constrained Q-learning for discrete actions. One network gives Q_theta(s, .) and an
imitation model G_omega(a | s) = softmax(l_omega(s)) of the behaviour policy; only actions whose
relative probability clears a threshold tau may be chosen (paper Eq. 6-7):

    A(s) = { a : G_omega(a | s) / max_a^ G_omega(a^ | s) > tau }
    pi(s) = argmax_{a in A(s)} Q_theta(s, a)

Q regresses on the Double-DQN-style target, the action chosen among A(s') by the online network
and valued by the target network:

    y = r + gamma (1 - d) Q_theta'(s', a'),   a' = argmax_{a in A(s')} Q_theta(s', a)

and one loss trains both heads (the authors' discrete_BCQ.py):

    L = mean_B huber(Q_theta(s, a) - y)                 (Huber with delta 1, smooth_l1_loss)
        - mean_B log G_omega(a | s)                     (imitation, nll_loss)
        + 1e-2 mean_{B,a} l_omega(s)_a^2                (a penalty on the imitation logits)

The target network follows the online one every `target_update_interval` updates by
theta' <- tau_target theta + (1 - tau_target) theta': the authors' two rules are the two ends,
Polyak averaging every update (tau_target 0.005, their "regular" settings) and a copy every 8000
updates (tau_target 1, their Atari settings).

Networks (the authors' FC_Q / Conv_Q): on vector states the Q-network and the imitation network
are separate MLPs; on images they share a convolutional torso and each has its own hidden
layer. Offlax's image tasks are MinAtar's 10x10xC frames (a stand-in for Atari on a CPU), so
the torso is MinAtar's 3x3 convolution with 16 channels (Young & Tian 2019) instead of the
Nature-DQN stack for 84x84 frames, and each head has 128 units.

Authors' code: https://github.com/sfujim/BCQ (discrete_BCQ/discrete_BCQ.py, discrete_BCQ/main.py);
the defaults are their `regular_parameters` (non-Atari tasks), the image tasks' values their
`atari_parameters`, in DATASET_OVERRIDES. Departures, each for a reason:
- Biases start at zero (kernels as PyTorch's default, U(+-1/sqrt(fan_in))), as in every offlax
  file; the authors' PyTorch layers draw their biases from the same uniform.
- An action whose ratio equals tau exactly is masked out, as the authors' strict `>` does (the
  issue's wording, "masked where the ratio < tau", would keep it); ties among the allowed
  actions' Q-values go to the first, as torch's and jax's argmax both do.
- Masked actions are excluded with -inf rather than the authors' Q - 1e8 (the same argmax
  unless Q itself is below -1e8).
- The evaluation acts epsilon-greedily with --eval-epsilon (authors' eval_eps: 0 regular,
  1e-3 Atari), with the keys of common/evaluation, so evaluating twice gives the same returns.
Run: python algorithms/bcq_discrete.py --env offlax/cartpole/medium-replay-v1 --num-seeds 3
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
    """gradient updates per agent (authors' main.py max_timesteps: 1e6)"""
    eval_interval: int = 5_000
    """updates between evaluations (authors' regular_parameters eval_freq: 5e3)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (authors' main.py eval_policy: 10)"""
    batch_size: int = 64
    """minibatch size (authors' regular_parameters: 64)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the Q-network and of the imitation network on vector states (authors'
    FC_Q: 256, 256); on images, the hidden layer of each head after the shared convolution"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/bcq_discrete/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    learning_rate: float = 3e-4
    """Adam learning rate (authors' regular_parameters: 3e-4)"""
    adam_eps: float = 1e-8
    """Adam's epsilon (authors' regular_parameters: torch's default 1e-8)"""
    discount: float = 0.99
    """gamma (authors' main.py: 0.99)"""
    tau: float = 0.005
    """target network update rate at each target update: 1 copies (authors' regular_parameters:
    Polyak 0.005)"""
    target_update_interval: int = 1
    """updates between target network updates (authors' regular_parameters: every update)"""
    threshold: float = 0.3
    """tau of the paper: actions whose imitation probability, relative to the most likely
    action's, is not above this are never chosen (authors' main.py BCQ_threshold: 0.3)"""
    logit_penalty: float = 1e-2
    """weight of the mean squared imitation logit in the loss (authors' discrete_BCQ.py: 1e-2)"""
    eval_epsilon: float = 0.0
    """probability of a uniformly random action when evaluating (authors' regular_parameters
    eval_eps: 0)"""
    conv_channels: int = 16
    """channels of the 3x3 convolution on image observations (MinAtar's network, Young & Tian
    2019); unused on vector states"""


# Image (MinAtar) datasets: the authors' atari_parameters (batch 32, Adam 6.25e-5 with eps
# 1.5e-4, a target copy every 8000 updates, eval_eps 1e-3, evaluation every 5e4 updates), with
# MinAtar's head width. Later, more specific keys win (common/cli.apply_dataset_overrides).
DATASET_OVERRIDES = {
    "minatar": dict(batch_size=32, hidden_dims=(128,), learning_rate=6.25e-5, adam_eps=1.5e-4,
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


class QImitationNetwork(nn.Module):
    """(Q(s, .), imitation logits l(s, .)) from flat observations; `image_shape` (H, W, C)
    reshapes them into images for the shared convolutional torso (authors' Conv_Q); without it,
    two separate MLPs (authors' FC_Q)."""

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
        q = MLP(self.hidden_dims, self.num_actions)(x)
        logits = MLP(self.hidden_dims, self.num_actions)(x)
        return q, logits


def network(args: Args, num_actions: int, image_shape) -> QImitationNetwork:
    return QImitationNetwork(args.hidden_dims, num_actions, image_shape, args.conv_channels)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class BCQState(struct.PyTreeNode):
    q: TrainState  # the Q-network and the imitation network, one set of parameters
    q_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, num_actions: int, image_shape) -> BCQState:
    key, init_key = jax.random.split(key)
    net = network(args, num_actions, image_shape)
    params = net.init(init_key, jnp.zeros((1, obs_dim)))
    return BCQState(
        q=TrainState.create(apply_fn=net.apply, params=params,
                            tx=optax.adam(args.learning_rate, eps=args.adam_eps)),
        q_target=params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def allowed_actions(logits, threshold: float):
    """A(s): G(a|s) / max_a^ G(a^|s) > threshold, computed as exp(log G(a|s) - max log G)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.exp(log_probs - log_probs.max(-1, keepdims=True)) > threshold


def constrained_greedy(q, logits, threshold: float):
    """argmax_{a in A(s)} Q(s, a): the first maximum among the allowed actions."""
    return jnp.argmax(jnp.where(allowed_actions(logits, threshold), q, -jnp.inf), axis=-1)


def bcq_target(q_next, logits_next, q_next_target, rewards, terminals, args: Args):
    """y = r + gamma (1 - d) Q'(s', argmax_{a in A(s')} Q(s', a))."""
    next_actions = constrained_greedy(q_next, logits_next, args.threshold)
    next_value = jnp.take_along_axis(q_next_target, next_actions[..., None], -1)[..., 0]
    return rewards + args.discount * (1.0 - terminals) * next_value


def bcq_loss(q, logits, actions, target, logit_penalty: float):
    """mean_B huber(Q(s, a) - y) - mean_B log G(a|s) + logit_penalty mean_{B,a} l(s)_a^2;
    returns (loss, (td loss, imitation loss, Q(s, a)))."""
    q_taken = jnp.take_along_axis(q, actions[:, None], -1)[:, 0]
    td_loss = optax.huber_loss(q_taken, target, delta=1.0).mean()
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    imitation_loss = -jnp.take_along_axis(log_probs, actions[:, None], -1)[:, 0].mean()
    loss = td_loss + imitation_loss + logit_penalty * (logits**2).mean()
    return loss, (td_loss, imitation_loss, q_taken)


def update(state: BCQState, data, args: Args):
    key, batch_key = jax.random.split(state.key)
    batch = sample_batch(data, batch_key, args.batch_size)
    q_next, logits_next = state.q.apply_fn(state.q.params, batch["next_observations"])
    q_next_target, _ = state.q.apply_fn(state.q_target, batch["next_observations"])
    target = bcq_target(q_next, logits_next, q_next_target, batch["rewards"],
                        batch["terminals"], args)

    def loss_fn(params):
        q, logits = state.q.apply_fn(params, batch["observations"])
        return bcq_loss(q, logits, batch["actions"], target, args.logit_penalty)

    (loss, (td_loss, imitation_loss, q_taken)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.q.params)
    q_state = state.q.apply_gradients(grads=grads)
    # Every `target_update_interval` updates (counted after this one, as the authors' code):
    # a select of two parameter-sized trees, so vmapped seeds pay nothing extra.
    averaged = optax.incremental_update(q_state.params, state.q_target, args.tau)
    due = q_state.step % args.target_update_interval == 0
    q_target = jax.tree.map(lambda new, old: jnp.where(due, new, old), averaged, state.q_target)
    metrics = {"loss": loss, "td_loss": td_loss, "imitation_loss": imitation_loss,
               "q_mean": q_taken.mean(), "target_mean": target.mean(),
               "allowed_fraction": allowed_actions(logits_next, args.threshold).mean()}
    return BCQState(q_state, q_target, key), metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: BCQState, data, num_updates: int, args: Args):
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
    """(params, raw observations, key) -> action indices: argmax_{a in A(s)} Q(s, a), or with
    probability --eval-epsilon a uniformly random action (authors' select_action)."""
    net = network(args, num_actions, image_shape)

    def policy(params, observations, key):
        q, logits = net.apply(params, observations)
        greedy = constrained_greedy(q, logits, args.threshold)
        explore_key, action_key = jax.random.split(key)
        explore = jax.random.uniform(explore_key, greedy.shape) < args.eval_epsilon
        return jnp.where(explore, jax.random.randint(action_key, greedy.shape, 0, num_actions),
                         greedy)

    return policy


def main(args: Args) -> dict:
    check_args(args, positive=("target_update_interval", "conv_channels"),
               nonnegative=("logit_penalty",), unit=("threshold", "eval_epsilon"))
    output_dir, checkpoint = prepare_output_dir("bcq_discrete", args)
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
    logger = RunLogger("bcq_discrete", args, dataset, seeds, output_dir, checkpoint)
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
