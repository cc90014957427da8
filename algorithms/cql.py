"""CQL: Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement Learning",
NeurIPS 2020.

CQL(H) on SAC. The Q-functions minimise the soft maximum of Q over all actions and maximise Q
on the dataset's actions, on top of the Bellman error (paper Eq. 4, with R = entropy):

    L_Q(theta_i) = E_{(s,a,s')~D} [ (Q_i(s, a) - y)^2 ]
                   + alpha_cql E_{s,a~D} [ log sum_a' exp Q_i(s, a') - Q_i(s, a) ],
    y = r + gamma (1 - d) min_j Q'_j(s', a'),   a' ~ pi(. | s')     (no entropy term, Eq. 3)

The log-sum-exp over the action box is estimated by importance sampling (paper App. F): N
actions from the uniform distribution, N from the policy at s and N from the policy at s'
(log densities log 0.5^|A|, log pi(a|s), log pi(a|s')), all evaluated at s:

    log sum_a' exp Q(s, a') ~= logsumexp_{k <= 3N} ( Q(s, a_k) - log p(a_k) )

(the constant -log 3N is left out, as in the authors' code: it has no gradient). The policy is
SAC's tanh-Gaussian with automatic entropy tuning (target entropy -|A|):

    L_pi(phi)   = E_s [ alpha log pi(a~ | s) - min_i Q_i(s, a~) ],  a~ ~ pi(. | s)
    L_alpha     = -log(alpha) E_s [ log pi(a~ | s) + target_entropy ]

CQL-Lagrange (paper Eq. 5, --lagrange) turns alpha_cql into a dual variable alpha' >= 0 that
keeps the gap near `target_action_gap` (tau):

    L_Q   gets  alpha' ( alpha_cql gap_i - tau ),  gap_i = E[ logsumexp_k (...) - Q_i(s, a) ]
    L_alpha' = -alpha' 1/2 sum_i ( alpha_cql gap_i - tau )      (gradient ascent on alpha')

Every loss is computed from the parameters before the update and all are applied together,
as in JaxCQL (conservative_sac.py); the target Q-functions follow by Polyak averaging.
Actions live in [-1, 1] (common/evaluation maps them to the env's bounds); the evaluation
policy is the deterministic tanh(mean).

Authors' code: https://github.com/aviralkumar2907/CQL (d4rl/rlkit/torch/sac/cql.py,
d4rl/examples/cql_mujoco_new.py, cql_antmaze_new.py, README). JAX reference: Young Geng's JaxCQL,
https://github.com/young-geng/JaxCQL (conservative_sac.py, conservative_sac_main.py, model.py).
Locomotion defaults are JaxCQL's, which follow the authors' README (alpha_cql 5, policy
learning rate 3e-4 of its "1e-4 or 3e-4"); AntMaze's are the authors' cql_antmaze_new.py and
README values, in DATASET_OVERRIDES. Where CORL's cql.py differs (policy learning rate 3e-5,
alpha_cql 10, orthogonal initialisation, states normalised, three hidden layers in Q, rewards
scaled by 1000 / return range), these defaults follow JaxCQL and the authors; --policy-lr,
--cql-alpha, --orthogonal-init, --normalize-observations and --hidden-dims reach CORL's choices.
For Adroit, whose settings the authors' code and README do not give, DATASET_OVERRIDES takes
CORL's Adroit configs: alpha_cql 1, policy learning rate 1e-4, states normalised, three hidden
layers of 256 and orthogonally initialised Q-functions. (With the first three alone, two
door-human seeds diverged, their mean Q passing 2.7e8 by 45k updates.)

Departures, each for a reason:
- The Lagrange variant uses the authors' form alpha' (alpha_cql gap - tau) with log alpha'
  starting at 0 (cql.py); JaxCQL's later form alpha' alpha_cql (gap - tau), log alpha' = 1,
  rescales tau by alpha_cql. The AntMaze values (tau = 5) are the authors', so their form is.
- The authors' behaviour-cloning warm-up (`policy_eval_start`: the policy loss is
  alpha log pi(a~|s) - log pi(a|s) for the first updates; AntMaze 40k, --bc-warmup-updates) is
  a select between the two losses, not a branch, so vmapped seeds pay for both (one extra
  policy log-likelihood on the batch: small beside CQL's 3N + 1 Q evaluations).
- The log std multiplier and offset are trainable scalars, as in JaxCQL's and CORL's
  TanhGaussianPolicy (the authors' rlkit policy has a state-dependent log std head instead).
Run: python algorithms/cql.py --env offlax/hopper/medium-replay-v1 --num-seeds 3
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
    """gradient updates per agent (CORL cql.py: 1M; JaxCQL's conservative_sac_main.py runs
    2000 epochs of 1000)"""
    eval_interval: int = 5_000
    """updates between evaluations (CORL cql.py eval_freq: 5000)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (CORL cql.py: 10; AntMaze 100)"""
    batch_size: int = 256
    """minibatch size (JaxCQL conservative_sac_main.py: 256)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of the policy and of each Q-function (JaxCQL: '256-256'; AntMaze: three
    of 256, authors' cql_antmaze_new.py)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/cql/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    policy_lr: float = 3e-4
    """policy and entropy-temperature learning rate, Adam (JaxCQL: 3e-4; AntMaze 1e-4, authors'
    README)"""
    critic_lr: float = 3e-4
    """Q-function (and Lagrange multiplier) learning rate, Adam (JaxCQL qf_lr: 3e-4)"""
    discount: float = 0.99
    """gamma (JaxCQL: 0.99)"""
    tau: float = 0.005
    """target Q update rate (JaxCQL soft_target_update_rate: 5e-3)"""
    cql_alpha: float = 5.0
    """alpha_cql, the weight of the conservative penalty (JaxCQL cql_min_q_weight: 5.0; authors'
    README: 5 or 10)"""
    cql_n_actions: int = 10
    """N, actions sampled from each of the three proposals per state (JaxCQL, authors: 10)"""
    cql_temperature: float = 1.0
    """temperature of the log-sum-exp (JaxCQL cql_temp, authors' temp: 1.0)"""
    lagrange: bool = False
    """tune alpha' by dual gradient descent to keep the gap at --target-action-gap (JaxCQL: off
    for locomotion; AntMaze on, authors' README)"""
    target_action_gap: float = 5.0
    """tau of the Lagrange variant (authors' cql_antmaze_new.py lagrange_thresh: 5.0); used only
    with --lagrange"""
    bc_warmup_updates: int = 0
    """first updates whose policy loss is behaviour cloning, alpha log pi - log pi(a|s)
    (JaxCQL bc_epochs: 0; AntMaze 40000, authors' policy_eval_start)"""
    reward_scale: float = 1.0
    """rewards are reward_scale * r + reward_bias (JaxCQL: 1, 0; AntMaze (r - 0.5) * 4, authors'
    cql_antmaze_new.py: 4, -2)"""
    reward_bias: float = 0.0
    """see --reward-scale"""
    clip_dataset_actions: float = 0.999
    """dataset actions are clipped to +-this so that log pi(a|s) of the tanh-Gaussian is finite
    (JaxCQL clip_action: 0.999)"""
    normalize_observations: bool = False
    """normalise states by the dataset's mean and std (JaxCQL and the authors do not; CORL does)"""
    orthogonal_init: bool = False
    """initialise the Q-functions' layers orthogonally, gain sqrt(2) and 1e-2 for the output
    layer, zero biases (CORL cql.py orthogonal_init, on in its Adroit configs); off: JaxCQL's
    initialisation (see Networks)"""


# Per-dataset values, from the authors' README and d4rl/examples/cql_antmaze_new.py. They
# replace Args' defaults when the dataset name contains the key; flags given explicitly still win.
DATASET_OVERRIDES = {
    "antmaze": dict(hidden_dims=(256, 256, 256), policy_lr=1e-4, lagrange=True,
                    target_action_gap=5.0, bc_warmup_updates=40_000, reward_scale=4.0,
                    reward_bias=-2.0, eval_episodes=100),
    # Adroit: CORL's configs/offline/cql/<task>/*_v1.yaml (the authors publish none): alpha_cql
    # 1 (cql_alpha), policy lr 1e-4, states normalised, three hidden layers of 256 in the policy
    # and the Q-functions (q_n_hidden_layers: 3), orthogonal_init ("pen-" and "/pen/": not
    # InvertedPendulum)
    **{key: dict(cql_alpha=1.0, policy_lr=1e-4, normalize_observations=True,
                 hidden_dims=(256, 256, 256), orthogonal_init=True)
       for key in ("door", "hammer", "relocate", "pen-", "/pen/")},
}


def dataset_defaults(env: str) -> Args:
    return apply_dataset_overrides(Args(env=env), DATASET_OVERRIDES)


# --------------------------------------------------------------------------------------------
# Networks, as JaxCQL's model.py: hidden layers with flax's default initialisation (LeCun
# normal kernels, zero biases), output layers scaled down to U(+-sqrt(3e-2 / fan_in)).

output_init = nn.initializers.variance_scaling(1e-2, "fan_in", "uniform")


class MLP(nn.Module):
    hidden_dims: tuple[int, ...]
    output_dim: int
    orthogonal: bool = False  # CORL's orthogonal_init: gain sqrt(2), the output layer 1e-2

    @nn.compact
    def __call__(self, x):
        hidden_init = nn.initializers.orthogonal(np.sqrt(2)) if self.orthogonal \
            else nn.linear.default_kernel_init
        last_init = nn.initializers.orthogonal(1e-2) if self.orthogonal else output_init
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=hidden_init)(x))
        return nn.Dense(self.output_dim, kernel_init=last_init)(x)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # JaxCQL's TanhGaussianPolicy


class TanhGaussianPolicy(nn.Module):
    """pi(a | s) = tanh(u), u ~ N(mu(s), sigma(s)^2), log sigma = clip(m * l(s) + b, -20, 2)
    with m and b trainable scalars starting at 1 and -1 (JaxCQL's TanhGaussianPolicy)."""

    hidden_dims: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, observations):
        mean, log_std = jnp.split(MLP(self.hidden_dims, 2 * self.action_dim)(observations), 2, -1)
        multiplier = self.param("log_std_multiplier", nn.initializers.ones, ())
        offset = self.param("log_std_offset", lambda key: jnp.asarray(-1.0))
        return mean, jnp.clip(multiplier * log_std + offset, LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_log_prob(mean, log_std, pre_tanh):
    """log pi(tanh(u)) = sum_d [ log N(u; mean, std) - log(1 - tanh(u)^2) ], with
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (stable for large |u|)."""
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, -1)


def sample_actions(mean, log_std, key):
    """Reparameterised a = tanh(mean + std eps) and log pi(a | s)."""
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


class QNetwork(nn.Module):
    hidden_dims: tuple[int, ...]
    orthogonal_init: bool = False

    @nn.compact
    def __call__(self, observations, actions):
        x = jnp.concatenate([observations, actions], -1)
        return MLP(self.hidden_dims, 1, self.orthogonal_init)(x).squeeze(-1)


class DoubleQ(nn.Module):
    """Q_1 and Q_2 as one vmapped module: output (2, *batch)."""

    hidden_dims: tuple[int, ...]
    orthogonal_init: bool = False

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(QNetwork, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden_dims, self.orthogonal_init)(observations, actions)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class CQLState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    log_alpha: TrainState  # SAC's entropy temperature
    log_alpha_prime: TrainState  # CQL-Lagrange's multiplier (trained only with --lagrange)
    critic_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> CQLState:
    key, actor_key, critic_key = jax.random.split(key, 3)
    actor = TanhGaussianPolicy(args.hidden_dims, action_dim)
    critic = DoubleQ(args.hidden_dims, args.orthogonal_init)
    observation, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    critic_params = critic.init(critic_key, observation, action)
    scalar = lambda value, lr: TrainState.create(  # noqa: E731
        apply_fn=None, params={"value": jnp.asarray(value, jnp.float32)}, tx=optax.adam(lr))
    return CQLState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observation),
                                tx=optax.adam(args.policy_lr)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=optax.adam(args.critic_lr)),
        log_alpha=scalar(0.0, args.policy_lr),  # JaxCQL, authors: log alpha = 0, policy's lr
        log_alpha_prime=scalar(0.0, args.critic_lr),  # authors' cql.py: 0, Q's lr
        critic_target=critic_params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def actor_loss(actor_params, state: CQLState, batch, key, alpha, args: Args):
    """mean_B [ alpha log pi(a~|s) - min_i Q_i(s, a~) ], a~ ~ pi(.|s); during the first
    --bc-warmup-updates, mean_B [ alpha log pi(a~|s) - log pi(a|s) ] instead."""
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_pi = sample_actions(mean, log_std, key)
    objective = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(0)
    if args.bc_warmup_updates > 0:  # a select, not a branch: both sides are computed
        data_log_prob = tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(batch["actions"]))
        objective = jnp.where(state.actor.step < args.bc_warmup_updates, data_log_prob, objective)
    return (alpha * log_pi - objective).mean(), log_pi


def temperature_loss(log_alpha, log_pi, target_entropy: float):
    """-log(alpha) mean_B [ log pi(a~|s) + target_entropy ]."""
    return -log_alpha["value"] * (log_pi + target_entropy).mean()


def critic_target(state: CQLState, batch, key, discount: float):
    """y = r + gamma (1 - d) min_i Q'_i(s', a'), a' ~ pi(.|s') (no entropy term)."""
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, _ = sample_actions(mean, log_std, key)
    next_q = state.critic.apply_fn(state.critic_target, batch["next_observations"], next_actions)
    return batch["rewards"] + discount * (1.0 - batch["terminals"]) * next_q.min(0)


def cql_proposals(state: CQLState, batch, key, n: int):
    """The 3N importance-sampled actions per state and their log densities: N uniform on the
    box, N from pi(.|s), N from pi(.|s'). Shapes (B, 3N, |A|) and (B, 3N)."""
    uniform_key, current_key, next_key = jax.random.split(key, 3)
    batch_size, action_dim = batch["actions"].shape
    uniform = jax.random.uniform(uniform_key, (batch_size, n, action_dim), minval=-1.0, maxval=1.0)
    uniform_log_density = jnp.full((batch_size, n), action_dim * np.log(0.5))
    proposals, log_densities = [uniform], [uniform_log_density]
    for observations, sample_key in ((batch["observations"], current_key),
                                     (batch["next_observations"], next_key)):
        mean, log_std = state.actor.apply_fn(state.actor.params, observations)
        eps_keys = jax.random.split(sample_key, n)
        actions, log_pi = jax.vmap(lambda k: sample_actions(mean, log_std, k), out_axes=1)(eps_keys)
        proposals.append(actions)
        log_densities.append(log_pi)
    return jnp.concatenate(proposals, 1), jnp.concatenate(log_densities, 1)


def conservative_gap(q_data, q_proposals, log_densities, temperature: float):
    """gap_i = mean_B [ T logsumexp_k ((Q_i(s, a_k) - log p(a_k)) / T) - Q_i(s, a) ], per Q."""
    soft_max = temperature * jax.nn.logsumexp((q_proposals - log_densities) / temperature, -1)
    return (soft_max - q_data).mean(-1)


def critic_loss(critic_params, state: CQLState, batch, target, proposals, log_densities,
                alpha_prime, args: Args):
    """sum_i [ mean_B (Q_i(s, a) - y)^2 + penalty_i ]: penalty_i = alpha_cql gap_i, or with
    --lagrange alpha' (alpha_cql gap_i - tau)."""
    batch_size, count, action_dim = proposals.shape
    # one forward pass of both Q-functions for the dataset action and the 3N proposals
    actions = jnp.concatenate([batch["actions"][:, None], proposals], 1)
    observations = jnp.broadcast_to(batch["observations"][:, None],
                                    (batch_size, count + 1, batch["observations"].shape[-1]))
    q_all = state.critic.apply_fn(critic_params, observations, actions)  # (2, B, 1 + 3N)
    q_data, q_proposals = q_all[..., 0], q_all[..., 1:]
    bellman = ((q_data - target) ** 2).mean(-1)
    gap = conservative_gap(q_data, q_proposals, log_densities, args.cql_temperature)
    if args.lagrange:
        penalty = alpha_prime * (args.cql_alpha * gap - args.target_action_gap)
    else:
        penalty = args.cql_alpha * gap
    return (bellman + penalty).sum(), (q_data, q_proposals, gap)


def lagrange_loss(log_alpha_prime, gap, args: Args):
    """-alpha' 1/2 sum_i (alpha_cql gap_i - tau), alpha' = clip(exp(log alpha'), 0, 1e6)."""
    alpha_prime = jnp.clip(jnp.exp(log_alpha_prime["value"]), 0.0, 1e6)
    return -alpha_prime * 0.5 * (args.cql_alpha * gap - args.target_action_gap).sum()


def update(state: CQLState, data, args: Args):
    """One CQL update: every loss from the parameters before it, applied together (JaxCQL)."""
    key, batch_key, actor_key, target_key, proposal_key = jax.random.split(state.key, 5)
    batch = sample_batch(data, batch_key, args.batch_size)
    target_entropy = -float(batch["actions"].shape[-1])  # -|A|: JaxCQL's and the authors'
    alpha = jnp.exp(state.log_alpha.params["value"])
    alpha_prime = jnp.clip(jnp.exp(state.log_alpha_prime.params["value"]), 0.0, 1e6)

    (a_loss, log_pi), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        state.actor.params, state, batch, actor_key, alpha, args)
    t_loss, alpha_grad = jax.value_and_grad(temperature_loss)(
        state.log_alpha.params, log_pi, target_entropy)

    target = critic_target(state, batch, target_key, args.discount)
    proposals, log_densities = cql_proposals(state, batch, proposal_key, args.cql_n_actions)
    (q_loss, (q_data, q_proposals, gap)), critic_grads = jax.value_and_grad(
        critic_loss, has_aux=True)(state.critic.params, state, batch, target, proposals,
                                   log_densities, alpha_prime, args)

    state = state.replace(actor=state.actor.apply_gradients(grads=actor_grads),
                          log_alpha=state.log_alpha.apply_gradients(grads=alpha_grad),
                          critic=state.critic.apply_gradients(grads=critic_grads), key=key)
    if args.lagrange:
        alpha_prime_grad = jax.grad(lagrange_loss)(state.log_alpha_prime.params, gap, args)
        state = state.replace(
            log_alpha_prime=state.log_alpha_prime.apply_gradients(grads=alpha_prime_grad))
    state = state.replace(
        critic_target=optax.incremental_update(state.critic.params, state.critic_target, args.tau))
    n = args.cql_n_actions
    metrics = {"critic_loss": q_loss, "actor_loss": a_loss, "temperature_loss": t_loss,
               "alpha": alpha, "entropy": -log_pi.mean(), "q_mean": q_data.mean(),
               "target_mean": target.mean(), "cql_gap": gap.mean(),
               "q_uniform_mean": q_proposals[..., :n].mean(),
               "q_policy_mean": q_proposals[..., n:2 * n].mean()}
    if args.lagrange:
        metrics["alpha_prime"] = alpha_prime
    return state, metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: CQLState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations) -> deterministic actions in [-1, 1]: tanh of the mean."""
    actor = TanhGaussianPolicy(args.hidden_dims, action_dim)
    return lambda params, observations: jnp.tanh(
        actor.apply(params, stats.normalize(observations))[0])


def main(args: Args) -> dict:
    """Train with `args` exactly as given. DATASET_OVERRIDES apply through `parse_args` (the
    CLI); from Python, start from `dataset_defaults(env)` to get them."""
    check_args(args, positive=("cql_temperature", "cql_n_actions"),
               nonnegative=("cql_alpha", "bc_warmup_updates"), open_unit=("clip_dataset_actions",))
    output_dir, checkpoint = prepare_output_dir("cql", args)
    dataset = load_dataset(args.env, args.env_id)
    action_scaling = env_action_scaling(dataset)
    check_batch_size(args, dataset.size)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    stats = (observation_statistics(dataset) if args.normalize_observations
             else ObservationStatistics.identity(obs_dim))
    rewards = dataset.rewards * args.reward_scale + args.reward_bias
    data = transitions_on_device(dataset, stats, action_scaling, rewards=rewards,
                                 num_seeds=args.num_seeds)
    data["actions"] = jnp.clip(data["actions"], -args.clip_dataset_actions,
                               args.clip_dataset_actions)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    # jitted: initialising every seed is one compilation, not one per operation
    states = jax.jit(jax.vmap(init))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, action_dim, stats), seeds,
                         args.eval_episodes, action_scaling)
    logger = RunLogger("cql", args, dataset, seeds, output_dir, checkpoint)
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
