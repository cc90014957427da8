"""IQL: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022.

IQL never queries Q at actions outside the dataset. A value function V fits an upper expectile
of Q over the dataset's actions (paper Eq. 5), the Q-functions regress on r + gamma V(s')
(Eq. 6), and the policy is extracted by advantage-weighted regression (Eq. 7):

    L_V(psi)   = E_{(s,a)~D} [ L_2^tau( Q'(s, a) - V_psi(s) ) ],  L_2^tau(u) = |tau - 1(u < 0)| u^2
    L_Q(theta) = E_{(s,a,s')~D} [ (r + gamma (1 - d) V_psi(s') - Q_theta(s, a))^2 ]
    L_pi(phi)  = -E_{(s,a)~D} [ min(exp(beta (Q'(s, a) - V_psi(s))), 100) log pi_phi(a | s) ]

Q' = min of the two target Q-functions (Polyak, tau_target); beta is the inverse temperature.
One update does, in the authors' order: V, then pi (with the new V), then Q (with the new V),
then the target. The policy is a Gaussian with tanh-squashed mean and state-independent log std;
its deterministic action is the mean.

Authors' code: https://github.com/ikostrikov/implicit_q_learning (learner.py, critic.py, actor.py,
train_offline.py, configs/). Per-dataset overrides (AntMaze; Kitchen and Adroit, with policy
dropout) are in DATASET_OVERRIDES below.
Where the authors' code and other implementations (d3rlpy, CORL) differ, Args has a flag for the
choice (--normalize-observations to --clip-dataset-actions); README "IQL: what matters" measures
each. Every default is the authors' but one: states are normalised by the dataset's mean and std,
as in CORL (the authors' code feeds raw states; --no-normalize-observations). Raw HalfCheetah
states mix scales (joint velocities of std 6 to 12 beside angles of std 0.1 to 0.4), and with
the authors' orthogonal sqrt(2) initialisation 10-18% of the policy's tanh means start beyond
0.99 (none on normalised states), and the policy fits the weighted actions slowly: on
offlax/halfcheetah/medium-expert-v1 (3 seeds) it scored 34 / 28 / 32 at 5k / 10k / 15k updates
where the same run on normalised states scored 73 / 89 / 82 (README "IQL: what matters").
Every update logs what says whether IQL is learning: the advantage weights (mean, max, fraction
clipped, effective sample size), the policy's log std and log-likelihood of dataset actions, the
fraction of its means at the tanh's ends, and V and Q against the dataset's return-to-go.
Run: python algorithms/iql.py --env offlax/hopper/medium-replay-v1 --num-seeds 3
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

from common.cli import (apply_dataset_overrides, check_args, check_batch_size, parse_cli,
                        run_main)
from common.datasets import DEFAULT_DATASET, load_dataset
from common.evaluation import Evaluator, env_action_scaling
from common.logger import RunLogger
from common.normalization import ObservationStatistics, observation_statistics, transform_rewards
from common.training import prepare_output_dir, train, value_bound
from common.transitions import (ACTION_CLIP, returns_to_go, sample_batch,
                                transitions_on_device)


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
    """gradient updates per agent (paper App. B: 1M; authors' train_offline.py max_steps)"""
    eval_interval: int = 5_000
    """updates between evaluations (authors' train_offline.py: 5000)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (authors' train_offline.py: 10; AntMaze 100)"""
    batch_size: int = 256
    """minibatch size (paper App. B: 256)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the policy, the Q-functions and V (paper App. B: 256, 256)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/iql/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    actor_lr: float = 3e-4
    """policy learning rate, Adam, cosine-decayed to 0 over the run (paper App. B; configs/)"""
    critic_lr: float = 3e-4
    """Q learning rate, Adam (paper App. B: 3e-4)"""
    value_lr: float = 3e-4
    """V learning rate, Adam (paper App. B: 3e-4)"""
    discount: float = 0.99
    """gamma (paper App. B: 0.99)"""
    tau: float = 0.005
    """target Q update rate (paper App. B: 0.005)"""
    expectile: float = 0.7
    """tau of the expectile loss (paper App. B: 0.7 locomotion, 0.9 AntMaze)"""
    temperature: float = 3.0
    """beta, inverse temperature of the weights (paper App. B: 3 locomotion, 10 AntMaze)"""
    max_weight: float = 100.0
    """clip of the advantage weights exp(beta A) (authors' actor.py: 100)"""
    policy_dropout: float = 0.0
    """dropout rate after each hidden layer of the policy, in its updates only (authors'
    configs/kitchen_config.py, which their README uses for Kitchen and Adroit: 0.1; none
    elsewhere)"""
    reward_transform: Literal["return-range", "minus-one", "none"] = "none"
    """rewards as they are, times 1000 / (max return - min return) of the dataset's episodes
    (locomotion), or minus 1 (AntMaze); chosen per dataset as the authors' train_offline.py"""
    normalize_observations: bool = True
    """normalise states by the dataset's mean and std (CORL's iql.py `normalize: bool = True`;
    the authors' code does not: --no-normalize-observations). The one departure from the
    authors' defaults, measured in README "IQL: what matters": unnormalised states learn far
    slower in 100k updates"""
    # Choices where the authors' code and other implementations differ (README "IQL: what
    # matters" measures each; benchmarks/iql_ablation.py runs them).
    hidden_init: Literal["orthogonal", "pytorch"] = "orthogonal"
    """initialisation of the hidden layers: orthogonal kernels with scale sqrt(2) and zero biases
    (authors' common.py default_init), or PyTorch's nn.Linear default, kernels and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (d3rlpy, CORL)"""
    output_init: Literal["orthogonal", "pytorch"] = "orthogonal"
    """initialisation of the output layers (Q, V and the policy's mean), choices as --hidden-init"""
    q_target_value: Literal["updated", "previous"] = "updated"
    """V in the Q target r + gamma V(s'): the one this update has just trained (authors'
    learner.py: V, then pi, then Q), or the one from before it (d3rlpy, CORL: Q and V together)"""
    actor_schedule: Literal["cosine", "constant"] = "cosine"
    """policy learning rate: cosine-decayed to 0 over --total-updates (authors' learner.py,
    CORL) or constant (d3rlpy)"""
    log_std_bound: Literal["clip", "sigmoid"] = "clip"
    """the policy's state-independent log std: a parameter starting at 0 clipped to [-5, 2]
    (authors' policy.py and learner.py), or -5 + 7 sigmoid(parameter), starting at -1.5 (d3rlpy's
    NormalPolicy)"""
    clip_dataset_actions: bool = True
    """clip dataset actions to +-(1 - 1e-5) before the log-likelihood (authors' dataset_utils.py,
    D4RL's convention); d3rlpy and CORL use them as they are"""


# Per-dataset values, from the authors' train_offline.py, configs/antmaze_config.py and
# configs/kitchen_config.py. They
# replace Args' defaults when the dataset name contains the key; flags given explicitly still win.
DATASET_OVERRIDES = {
    "halfcheetah": dict(reward_transform="return-range"),
    "hopper": dict(reward_transform="return-range"),
    "walker2d": dict(reward_transform="return-range"),
    "antmaze": dict(expectile=0.9, temperature=10.0, reward_transform="minus-one",
                    eval_episodes=100),
    # Kitchen and Adroit: configs/kitchen_config.py ("pen-" and "/pen/": not InvertedPendulum)
    **{key: dict(temperature=0.5, policy_dropout=0.1)
       for key in ("kitchen", "door", "hammer", "relocate", "pen-", "/pen/")},
}


def dataset_defaults(env: str) -> Args:
    return apply_dataset_overrides(Args(env=env), DATASET_OVERRIDES)


# --------------------------------------------------------------------------------------------
# Networks. Kernel and bias initialisers per --hidden-init / --output-init: the authors'
# orthogonal(sqrt(2)) kernels with zero biases, or PyTorch's nn.Linear default.


def dense(width: int, init: str, fan_in: int) -> nn.Dense:
    if init == "orthogonal":  # authors' common.py default_init
        return nn.Dense(width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))
    bound = 1.0 / np.sqrt(fan_in)  # torch.nn.Linear.reset_parameters: both U(-bound, bound)
    uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
        key, shape, dtype, -bound, bound)
    return nn.Dense(width, kernel_init=uniform, bias_init=uniform)


class MLP(nn.Module):
    dims: tuple[int, ...]  # hidden widths and the output width; ReLU between layers
    hidden_init: str = "orthogonal"
    output_init: str = "orthogonal"

    @nn.compact
    def __call__(self, x):
        for width in self.dims[:-1]:
            x = nn.relu(dense(width, self.hidden_init, x.shape[-1])(x))
        return dense(self.dims[-1], self.output_init, x.shape[-1])(x)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # authors' learner.py (log_std_min) and policy.py


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(tanh(mu(s)), exp(log_std)^2): the authors' NormalTanhPolicy with
    tanh_squash_distribution=False, state_dependent_std=False, log_std in [-5, 2]; with
    `dropout_rate`, dropout after each hidden layer when `training` (their common.py MLP)."""

    hidden_dims: tuple[int, ...]
    action_dim: int
    hidden_init: str = "orthogonal"
    output_init: str = "orthogonal"
    log_std_bound: str = "clip"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, observations, training: bool = False):
        x = observations
        for width in self.hidden_dims:
            x = nn.relu(dense(width, self.hidden_init, x.shape[-1])(x))
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not training)(x)
        mean = nn.tanh(dense(self.action_dim, self.output_init, x.shape[-1])(x))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        if self.log_std_bound == "sigmoid":
            return mean, LOG_STD_MIN + (LOG_STD_MAX - LOG_STD_MIN) * nn.sigmoid(log_std)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class ValueNetwork(nn.Module):
    hidden_dims: tuple[int, ...]
    hidden_init: str = "orthogonal"
    output_init: str = "orthogonal"

    @nn.compact
    def __call__(self, observations):
        return MLP((*self.hidden_dims, 1), self.hidden_init, self.output_init)(
            observations).squeeze(-1)


class QNetwork(nn.Module):
    hidden_dims: tuple[int, ...]
    hidden_init: str = "orthogonal"
    output_init: str = "orthogonal"

    @nn.compact
    def __call__(self, observations, actions):
        return MLP((*self.hidden_dims, 1), self.hidden_init, self.output_init)(
            jnp.concatenate([observations, actions], -1)).squeeze(-1)


class DoubleQ(nn.Module):
    """Q_1 and Q_2 as one vmapped module: output (2, batch)."""

    hidden_dims: tuple[int, ...]
    hidden_init: str = "orthogonal"
    output_init: str = "orthogonal"

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(QNetwork, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden_dims, self.hidden_init, self.output_init)(
            observations, actions)


def policy_network(args: Args, action_dim: int) -> GaussianPolicy:
    return GaussianPolicy(args.hidden_dims, action_dim, args.hidden_init, args.output_init,
                          args.log_std_bound, args.policy_dropout)


def gaussian_log_prob(mean, log_std, actions):
    """log N(a; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class IQLState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    value: TrainState
    critic_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> IQLState:
    key, actor_key, critic_key, value_key = jax.random.split(key, 4)
    actor = policy_network(args, action_dim)
    critic = DoubleQ(args.hidden_dims, args.hidden_init, args.output_init)
    value = ValueNetwork(args.hidden_dims, args.hidden_init, args.output_init)
    observation, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    critic_params = critic.init(critic_key, observation, action)
    actor_schedule = (optax.cosine_decay_schedule(args.actor_lr, args.total_updates)
                      if args.actor_schedule == "cosine" else args.actor_lr)
    return IQLState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observation),
                                tx=optax.adam(actor_schedule)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=optax.adam(args.critic_lr)),
        value=TrainState.create(apply_fn=value.apply, params=value.init(value_key, observation),
                                tx=optax.adam(args.value_lr)),
        critic_target=critic_params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def expectile_loss(diff, expectile: float):
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, elementwise."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def value_loss(value_params, state: IQLState, batch, expectile: float):
    """mean_B L_2^tau( min_i Q'_i(s, a) - V(s) )."""
    q = state.critic.apply_fn(state.critic_target, batch["observations"], batch["actions"]).min(0)
    v = state.value.apply_fn(value_params, batch["observations"])
    return expectile_loss(q - v, expectile).mean(), v


def advantage_weights(q, v, temperature: float, max_weight: float):
    """min(exp(beta (Q - V)), max_weight)."""
    return jnp.minimum(jnp.exp(temperature * (q - v)), max_weight)


def actor_loss(actor_params, state: IQLState, batch, args: Args, dropout_key=None):
    """-mean_B min(exp(beta (Q'(s, a) - V(s))), 100) log pi(a | s), with the new V; pi with
    dropout drawn from `dropout_key` where --policy-dropout is set."""
    q = state.critic.apply_fn(state.critic_target, batch["observations"], batch["actions"]).min(0)
    v = state.value.apply_fn(state.value.params, batch["observations"])
    weights = advantage_weights(q, v, args.temperature, args.max_weight)
    if args.policy_dropout > 0:
        mean, log_std = state.actor.apply_fn(actor_params, batch["observations"], training=True,
                                             rngs={"dropout": dropout_key})
    else:
        mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    log_prob = gaussian_log_prob(mean, log_std, batch["actions"])
    return -(weights * log_prob).mean(), (weights, log_prob, mean, log_std)


def critic_target(state: IQLState, batch, discount: float):
    """y = r + gamma (1 - d) V(s'), with the V in `state`."""
    next_v = state.value.apply_fn(state.value.params, batch["next_observations"])
    return batch["rewards"] + discount * (1.0 - batch["terminals"]) * next_v


def critic_loss(critic_params, state: IQLState, batch, target):
    """sum_i mean_B (Q_i(s, a) - y)^2."""
    q = state.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
    return ((q - target) ** 2).mean(1).sum(), q


def diagnostics(batch, v, q, weights, log_prob, mean, log_std, max_weight: float) -> dict:
    """What says whether IQL learns, per update, from arrays the update computed anyway.

    weights_ess: effective sample size of the batch's weights, (sum w)^2 / sum w^2, as a fraction
    of the batch (1: all equal; 1/B: one transition carries the policy's loss).
    return_to_go: the dataset's discounted return from s on, in the training reward scale; the
    truncated episodes' tails make it smaller than the true value near their ends."""
    return {"v_mean": v.mean(), "q_mean": q.mean(),
            "return_to_go_mean": batch["returns_to_go"].mean(),
            "weights_mean": weights.mean(), "weights_max": weights.max(),
            "weights_clipped_fraction": (weights >= max_weight).mean(),
            "weights_ess": weights.sum() ** 2 / (weights.size * (weights**2).sum()),
            "log_likelihood": log_prob.mean(), "log_std_mean": log_std.mean(),
            "mean_saturated_fraction": (jnp.abs(mean) > 0.99).mean()}


def update(state: IQLState, data, args: Args):
    """One IQL update on one minibatch: V, pi, Q, target (the authors' order)."""
    key, batch_key = jax.random.split(state.key)
    dropout_key = None
    if args.policy_dropout > 0:  # only then: runs without dropout keep their random streams
        key, dropout_key = jax.random.split(key)
    batch = sample_batch(data, batch_key, args.batch_size)
    if args.q_target_value == "previous":
        target = critic_target(state, batch, args.discount)

    (v_loss, v), grads = jax.value_and_grad(value_loss, has_aux=True)(
        state.value.params, state, batch, args.expectile)
    state = state.replace(value=state.value.apply_gradients(grads=grads), key=key)

    (a_loss, (weights, log_prob, mean, log_std)), grads = jax.value_and_grad(
        actor_loss, has_aux=True)(state.actor.params, state, batch, args, dropout_key)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))

    if args.q_target_value == "updated":
        target = critic_target(state, batch, args.discount)
    (q_loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic.params, state, batch, target)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))
    state = state.replace(
        critic_target=optax.incremental_update(state.critic.params, state.critic_target, args.tau))
    metrics = {"value_loss": v_loss, "actor_loss": a_loss, "critic_loss": q_loss,
               **diagnostics(batch, v, q, weights, log_prob, mean, log_std, args.max_weight)}
    return state, metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: IQLState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations) -> deterministic actions in [-1, 1]: the policy's mean."""
    actor = policy_network(args, action_dim)
    return lambda params, observations: actor.apply(params, stats.normalize(observations))[0]


def main(args: Args) -> dict:
    """Train with `args` exactly as given. DATASET_OVERRIDES apply through `parse_args` (the
    CLI); from Python, start from `dataset_defaults(env)` to get them."""
    check_args(args, positive=("temperature", "max_weight"), open_unit=("expectile",),
               unit=("policy_dropout",))
    output_dir, checkpoint = prepare_output_dir("iql", args)
    dataset = load_dataset(args.env, args.env_id)
    action_scaling = env_action_scaling(dataset)
    check_batch_size(args, dataset.size)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    stats = (observation_statistics(dataset) if args.normalize_observations
             else ObservationStatistics.identity(obs_dim))
    rewards = transform_rewards(dataset, args.reward_transform)
    data = transitions_on_device(dataset, stats, action_scaling, rewards=rewards,
                                 num_seeds=args.num_seeds)
    data["returns_to_go"] = jnp.asarray(returns_to_go(dataset, rewards, args.discount))
    if args.clip_dataset_actions:
        # log pi(a|s) of a Gaussian with tanh mean is finite at the box's edge; the authors
        # still clip dataset actions to 1 - 1e-5 (D4RL's convention).
        data["actions"] = jnp.clip(data["actions"], -ACTION_CLIP, ACTION_CLIP)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    # Not jitted, unlike the other files: one executable that holds several orthogonal
    # initialisations runs their LAPACK QR kernels at once, and on a 2-core CPU they deadlock
    # in jaxlib's thread pool (full-size HalfCheetah networks, 3 seeds: measured). Op by op,
    # they run one after another.
    states = jax.vmap(init)(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, action_dim, stats), seeds,
                         args.eval_episodes, action_scaling)
    logger = RunLogger("iql", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(obs_mean=stats.mean, obs_std=stats.std,
                      action_low=action_scaling.low, action_high=action_scaling.high)
    # Evaluations, checkpoints, the NaN guard and Ctrl-C are common/training.py's; with --resume
    # it continues from the checkpoint's state instead of these fresh ones.
    states = train(states, lambda states, n: train_chunk(states, data, n, args),
                   lambda states: evaluate(states.actor.params), logger, args, statistics,
                   checkpoint, value_bound=value_bound(data["rewards"], args.discount))
    evaluate.close()
    logger.save_policy(states.actor.params, **statistics)
    logger.finish("finished")
    return logger.results


def parse_args(argv=None) -> Args:
    """The CLI, where the chosen dataset's DATASET_OVERRIDES replace Args' defaults."""
    return parse_cli(Args, argv, defaults=dataset_defaults)


if __name__ == "__main__":
    run_main(main, parse_args())
