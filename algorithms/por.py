"""POR: Xu, Jiang, Li & Zhan, "A Policy-Guided Imitation Approach for Offline Reinforcement
Learning", NeurIPS 2022.

Policy-guided Offline RL learns no Q-function. A state value V is fitted in-sample by expectile
regression on one-step targets; a guide policy g(s' | s) proposes the next state to reach, and
an execute policy pi(a | s, s') imitates the action that led from s to s' in the data. Acting
is a = pi(s, g(s)) (means of both, as the authors' evaluate_por):

    L_V     = E_{(s,r,s')~D} [ L_2^tau( r + gamma (1 - d) V'(s') - V(s) ) ],
              L_2^tau(u) = |tau - 1(u < 0)| u^2
    L_pi    = -E_{(s,a,s')~D} [ log pi(a | s, s') ]

The guide is trained in one of the paper's two ways (--guide-loss):

    POR-r ("residual"):         L_g = -E [ min(exp(alpha (r + gamma (1 - d) V'(s') - V(s))), 100)
                                             log g(s' | s) ]
    POR-q ("q"):                L_g = -E [ lambda V(g~) + log b(g~ | s) ],  g~ ~ g(. | s),
                                lambda = alpha / mean_B |V(g~)|           (not differentiated)
                                L_b = -E [ log b(s' | s) ]

where b(s' | s) is a behaviour model of the dataset's next states (the authors' por.py). The
paper writes POR-q's constraint as the guide's own log g(s' | s); --q-behaviour-term guide
trains that form (see the departures).

V is the minimum of two V-networks trained on the same target (the authors' TwinV), V' their
Polyak average (rate --tau); the guide's weights and POR-q's V(g~) use the V just updated.
Both policies are Gaussians with state-independent log std in [-5, 2] and unbounded means (the
authors' GaussianPolicy); their learning rates decay to 0 by a cosine over the run.

Authors' code: https://github.com/ryanxhr/POR (por.py, main.py, policy.py, value_functions.py;
per-dataset values from run_mujoco.sh and run_antmaze.sh, in DATASET_OVERRIDES). Departures,
each for a reason:
- POR-q's behaviour model b is trained alongside the guide (one step of L_b before each guide
  step, at the policies' learning rate) instead of pre-trained for 1M updates at 1e-4
  (pretrain.sh), so the file keeps one training phase. The term is the authors', not the
  paper's log g(s' | s) of the dataset's next state (--q-behaviour-term guide): on
  offlax/hopper/medium-replay-v1 that form let the guide propose states whose V was some 30
  times the data's (V(g~) ~ 3700 against V(s) ~ 118 at 30k updates), because it ties the
  guide's mean and spread to the data but not where its proposals land, and 2 of 3 seeds fell
  at once (0.6 normalised after 100k updates). With b, V(g~) stays near the data's (78 against
  73 at 10k updates) and the three seeds peak at 18, 13 and 20 by 30k updates, but POR-q
  still fails there: V(g~) / V(s) creeps from 1.14 at 30k to 1.46 at 85k and every seed falls
  to about 0 from 50k on. Not solved yet. Not the cause: training b alongside. The authors'
  b, pre-trained (300k updates at 1e-4, log-likelihood 20.7) and frozen, fell the same way
  (seed 0: 21.2 at 25k, 2.2 at 40k, 0.6 at 50k).
- So hopper-medium-replay runs POR-r (alpha 3, expectile 0.5: the authors' values for
  HalfCheetah and Walker2d) where run_mujoco.sh has POR-q with alpha 25. On the same data it
  held where POR-q fell: seed 0 ended at 18.3 after 100k updates (15.2 to 22.2 from 30k on),
  seeds 1 and 2 stood at 17.2 and 9.6 at 50k (16.2 to 22.5 and 9.0 to 14.8 from 25k on),
  while all three POR-q seeds were at about 0 from 50k. `--guide-loss q --alpha 25` gives the
  authors' setting back.
- Kernels as PyTorch's nn.Linear default, biases zero (as td3_bc.py and bcq.py); the authors'
  PyTorch layers also draw biases from U(+-1/sqrt(fan_in)).
- One learning rate per network: V's is main.py's --lr (1e-4), the two policies' the
  --policy_lr 0.001 that run_mujoco.sh passes (a flag that the repository's main.py, with only
  --lr, does not define). With 1e-4 the policies did not learn InvertedPendulum's
  expert data in 5k updates (3 seeds scored 3, 3, 3); with 1e-3 all three reached 100 by 1k.
Run: python algorithms/por.py --env offlax/hopper/medium-replay-v1 --num-seeds 3
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
from common.normalization import (ObservationStatistics, observation_statistics,
                                  transform_rewards)
from common.training import prepare_output_dir, train
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
    """gradient updates per agent (authors' main.py n_steps: 10**6)"""
    eval_interval: int = 5_000
    """updates between evaluations (authors' main.py eval_period: 5000)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (authors' main.py: 10; AntMaze 50,
    run_antmaze.sh)"""
    batch_size: int = 256
    """minibatch size (authors' main.py: 256)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layers of V and of the guide policy (authors' main.py hidden_dim 256, n_hidden 2)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/por/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    actor_lr: float = 1e-3
    """execute policy learning rate, Adam, cosine-decayed to 0 over the run (authors'
    run_mujoco.sh --policy_lr 0.001; por.py CosineAnnealingLR)"""
    guide_lr: float = 1e-3
    """guide policy learning rate, Adam, cosine-decayed to 0 over the run (authors'
    run_mujoco.sh --policy_lr 0.001; por.py CosineAnnealingLR)"""
    value_lr: float = 1e-4
    """V learning rate, Adam (authors' main.py --lr: 1e-4)"""
    discount: float = 0.99
    """gamma (authors' main.py: 0.99)"""
    tau: float = 0.005
    """target V update rate (authors' por.py beta: 0.005)"""
    expectile: float = 0.7
    """tau of the expectile loss (authors' main.py --tau: 0.7; locomotion 0.5, run_mujoco.sh;
    AntMaze 0.9, run_antmaze.sh)"""
    alpha: float = 10.0
    """POR-r: inverse temperature of the residual weights; POR-q: the weight of V (authors'
    main.py: 10; see DATASET_OVERRIDES)"""
    guide_loss: Literal["residual", "q"] = "residual"
    """how the guide policy learns: weighted behaviour cloning of next states (POR-r, authors'
    main.py --type default por_r) or maximising V at its proposals (POR-q)"""
    q_behaviour_term: Literal["model", "guide"] = "model"
    """POR-q's constraint: log b(g~ | s) of the guide's proposal under a behaviour model b(s' | s)
    fitted to the dataset alongside (authors' por.py, whose b is pre-trained), or the guide's own
    log g(s' | s) of the dataset's next state (the paper's form)"""
    behaviour_lr: float = 1e-3
    """POR-q: learning rate of the behaviour model b(s' | s), Adam, constant (the policies' rate
    of run_mujoco.sh; the authors pre-train b at 1e-4 for 1M updates)"""
    max_weight: float = 100.0
    """clip of the residual weights exp(alpha residual) (authors' por.py EXP_ADV_MAX: 100)"""
    actor_hidden_dims: tuple[int, ...] = (1024, 1024)
    """hidden layers of the execute policy pi(a | s, s') (authors' main.py: hidden_dim 1024,
    n_hidden 2)"""
    reward_transform: Literal["return-range", "minus-one", "none"] = "none"
    """rewards as they are, times 1000 / (max return - min return) of the dataset's episodes
    (locomotion), or minus 1 (AntMaze); chosen per dataset as the authors' main.py"""
    normalize_observations: bool = False
    """normalise states (and so the guide's next states) by the dataset's mean and std (authors'
    main.py --normalize: off in run_mujoco.sh and run_antmaze.sh)"""


# Per-dataset values: the authors' run_mujoco.sh (D4RL locomotion) and run_antmaze.sh, and
# main.py's reward transforms. An entry applies when every word of its key is in the dataset
# name, in this order (later entries win); flags given explicitly still win.
DATASET_OVERRIDES = {
    "halfcheetah": dict(reward_transform="return-range", expectile=0.5, alpha=3.0),
    "walker2d": dict(reward_transform="return-range", expectile=0.5, alpha=3.0),
    "hopper": dict(reward_transform="return-range", guide_loss="q", expectile=0.5, alpha=50.0),
    # run_mujoco.sh: POR-q, alpha 25. POR-q falls to ~0 here on all seeds (see the departures).
    "hopper medium-replay": dict(guide_loss="residual", alpha=3.0),
    "hopper medium-expert": dict(alpha=5.0),
    "antmaze": dict(reward_transform="minus-one", expectile=0.9, alpha=10.0, eval_episodes=50),
}


def dataset_defaults(env: str) -> Args:
    return apply_dataset_overrides(Args(env=env), DATASET_OVERRIDES)


# --------------------------------------------------------------------------------------------
# Networks. Kernels as PyTorch's nn.Linear default (the authors' code), biases zero.

torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class MLP(nn.Module):
    hidden_dims: tuple[int, ...]
    output_dim: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width, kernel_init=torch_linear_init)(x))
        return nn.Dense(self.output_dim, kernel_init=torch_linear_init)(x)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # authors' policy.py


class GaussianPolicy(nn.Module):
    """N(mu(x), diag(exp(log_std))^2) with an unbounded mean and a state-independent log std
    starting at 0, clipped to [-5, 2] (the authors' GaussianPolicy). The guide's x is s and its
    output a next state; the execute policy's x is (s, s') and its output an action."""

    hidden_dims: tuple[int, ...]
    output_dim: int

    @nn.compact
    def __call__(self, inputs):
        mean = MLP(self.hidden_dims, self.output_dim)(inputs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.output_dim,))
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def gaussian_log_prob(mean, log_std, x):
    """log N(x; mean, diag(exp(log_std))^2), summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


class ValueNetwork(nn.Module):
    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations):
        return MLP(self.hidden_dims, 1)(observations).squeeze(-1)


class DoubleV(nn.Module):
    """V_1 and V_2 as one vmapped module: output (2, *batch) (the authors' TwinV)."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations):
        ensemble = nn.vmap(ValueNetwork, variable_axes={"params": 0},
                           split_rngs={"params": True}, in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden_dims)(observations)


def uses_behaviour_model(args: Args) -> bool:
    return args.guide_loss == "q" and args.q_behaviour_term == "model"


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class PORState(struct.PyTreeNode):
    actor: TrainState  # the execute policy pi(a | s, s')
    guide: TrainState  # the guide policy g(s' | s)
    behaviour: TrainState | None  # POR-q's behaviour model b(s' | s); None otherwise
    value: TrainState
    value_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> PORState:
    key, actor_key, guide_key, value_key, behaviour_key = jax.random.split(key, 5)
    actor = GaussianPolicy(args.actor_hidden_dims, action_dim)
    guide, value = GaussianPolicy(args.hidden_dims, obs_dim), DoubleV(args.hidden_dims)
    observation = jnp.zeros((1, obs_dim))
    value_params = value.init(value_key, observation)
    cosine = lambda lr: optax.adam(optax.cosine_decay_schedule(lr, args.total_updates))  # noqa: E731
    return PORState(
        actor=TrainState.create(apply_fn=actor.apply, tx=cosine(args.actor_lr),
                                params=actor.init(actor_key, jnp.zeros((1, 2 * obs_dim)))),
        guide=TrainState.create(apply_fn=guide.apply, params=guide.init(guide_key, observation),
                                tx=cosine(args.guide_lr)),
        behaviour=(TrainState.create(apply_fn=guide.apply, tx=optax.adam(args.behaviour_lr),
                                     params=guide.init(behaviour_key, observation))
                   if uses_behaviour_model(args) else None),
        value=TrainState.create(apply_fn=value.apply, params=value_params,
                                tx=optax.adam(args.value_lr)),
        value_target=value_params,
        key=key,
    )


# --------------------------------------------------------------------------------------------
# Losses and the update


def expectile_loss(diff, expectile: float):
    """L_2^tau(u) = |tau - 1(u < 0)| u^2, elementwise."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def value_target(state: PORState, batch, discount: float):
    """y = r + gamma (1 - d) min_i V'_i(s')."""
    next_v = state.value.apply_fn(state.value_target, batch["next_observations"]).min(0)
    return batch["rewards"] + discount * (1.0 - batch["terminals"]) * next_v


def value_loss(value_params, state: PORState, batch, target, expectile: float):
    """1/2 sum_i mean_B L_2^tau(y - V_i(s)): the mean over the two V-networks."""
    v = state.value.apply_fn(value_params, batch["observations"])  # (2, B)
    return expectile_loss(target - v, expectile).mean(-1).mean(), v


def residual_guide_loss(guide_params, state: PORState, batch, target, args: Args):
    """POR-r: -mean_B min(exp(alpha (y - V(s))), 100) log g(s' | s), V = min_i V_i (updated)."""
    v = state.value.apply_fn(state.value.params, batch["observations"]).min(0)
    weights = jnp.minimum(jnp.exp(args.alpha * (target - v)), args.max_weight)
    mean, log_std = state.guide.apply_fn(guide_params, batch["observations"])
    log_prob = gaussian_log_prob(mean, log_std, batch["next_observations"])
    return -(weights * log_prob).mean(), (weights, log_prob)


def q_guide_loss(guide_params, state: PORState, batch, key, args: Args):
    """POR-q: -mean_B [ lambda V(g~) + log b(g~ | s) ], g~ = mean + std eps (reparameterised),
    lambda = alpha / mean_B |V(g~)| not differentiated, V = min_i V_i (updated), b the behaviour
    model (fixed here); with --q-behaviour-term guide, log g(s' | s) in place of log b(g~ | s)."""
    mean, log_std = state.guide.apply_fn(guide_params, batch["observations"])
    proposed = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    v_proposed = state.value.apply_fn(state.value.params, proposed).min(0)
    lmbda = jax.lax.stop_gradient(args.alpha / jnp.abs(v_proposed).mean())
    log_prob = gaussian_log_prob(mean, log_std, batch["next_observations"])
    if state.behaviour is None:
        constraint = log_prob
    else:
        b_mean, b_log_std = state.behaviour.apply_fn(state.behaviour.params, batch["observations"])
        constraint = gaussian_log_prob(b_mean, b_log_std, proposed)
    return -(lmbda * v_proposed + constraint).mean(), (lmbda, log_prob, v_proposed)


def behaviour_loss(behaviour_params, state: PORState, batch):
    """-mean_B log b(s' | s): maximum likelihood of the dataset's next states."""
    mean, log_std = state.behaviour.apply_fn(behaviour_params, batch["observations"])
    return -gaussian_log_prob(mean, log_std, batch["next_observations"]).mean()


def actor_loss(actor_params, state: PORState, batch):
    """-mean_B log pi(a | s, s'): behaviour cloning of the action that led from s to s'."""
    inputs = jnp.concatenate([batch["observations"], batch["next_observations"]], -1)
    mean, log_std = state.actor.apply_fn(actor_params, inputs)
    return -gaussian_log_prob(mean, log_std, batch["actions"]).mean()


def update(state: PORState, data, args: Args):
    """One POR update: V and its target, then the guide (with the new V), then pi."""
    key, batch_key, guide_key = jax.random.split(state.key, 3)
    batch = sample_batch(data, batch_key, args.batch_size)

    target = value_target(state, batch, args.discount)
    (v_loss, v), grads = jax.value_and_grad(value_loss, has_aux=True)(
        state.value.params, state, batch, target, args.expectile)
    value = state.value.apply_gradients(grads=grads)
    state = state.replace(
        value=value, key=key,
        value_target=optax.incremental_update(value.params, state.value_target, args.tau))

    metrics = {"value_loss": v_loss, "v_mean": v.mean(), "target_mean": target.mean()}
    if args.guide_loss == "residual":
        (g_loss, (weights, log_prob)), grads = jax.value_and_grad(
            residual_guide_loss, has_aux=True)(state.guide.params, state, batch, target, args)
        metrics |= {"weights_mean": weights.mean(),
                    "weights_clipped_fraction": (weights >= args.max_weight).mean()}
    else:
        if state.behaviour is not None:
            b_loss, grads = jax.value_and_grad(behaviour_loss)(state.behaviour.params, state, batch)
            state = state.replace(behaviour=state.behaviour.apply_gradients(grads=grads))
            metrics["behaviour_log_likelihood"] = -b_loss
        (g_loss, (lmbda, log_prob, v_proposed)), grads = jax.value_and_grad(
            q_guide_loss, has_aux=True)(state.guide.params, state, batch, guide_key, args)
        metrics |= {"lambda": lmbda, "v_proposed_mean": v_proposed.mean()}
    state = state.replace(guide=state.guide.apply_gradients(grads=grads))

    a_loss, grads = jax.value_and_grad(actor_loss)(state.actor.params, state, batch)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    metrics |= {"guide_loss": g_loss, "guide_log_likelihood": log_prob.mean(),
                "actor_loss": a_loss}
    return state, metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: PORState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def policy_params(states) -> dict:
    """What the policy acts with: the guide and the execute policy (of a training state, or of
    a checkpoint's state dict)."""
    if isinstance(states, dict):
        return {"guide": states["guide"]["params"], "actor": states["actor"]["params"]}
    return {"guide": states.guide.params, "actor": states.actor.params}


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations) -> deterministic actions: pi's mean at (s, g's mean at s)."""
    obs_dim = len(stats.mean)
    actor = GaussianPolicy(args.actor_hidden_dims, action_dim)
    guide = GaussianPolicy(args.hidden_dims, obs_dim)

    def policy(params, observations):
        observations = stats.normalize(observations)
        goal = guide.apply(params["guide"], observations)[0]
        return actor.apply(params["actor"], jnp.concatenate([observations, goal], -1))[0]

    return policy


def main(args: Args) -> dict:
    """Train with `args` exactly as given. DATASET_OVERRIDES apply through `parse_args` (the
    CLI); from Python, start from `dataset_defaults(env)` to get them."""
    check_args(args, positive=("alpha", "max_weight"), open_unit=("expectile",))
    output_dir, checkpoint = prepare_output_dir("por", args)
    dataset = load_dataset(args.env, args.env_id)
    action_scaling = env_action_scaling(dataset)
    check_batch_size(args, dataset.size)
    obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
    stats = (observation_statistics(dataset) if args.normalize_observations
             else ObservationStatistics.identity(obs_dim))
    rewards = transform_rewards(dataset, args.reward_transform)
    data = transitions_on_device(dataset, stats, action_scaling, rewards=rewards,
                                 num_seeds=args.num_seeds)

    seeds = args.seed + np.arange(args.num_seeds)
    init = partial(init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    # jitted: initialising every seed is one compilation, not one per operation
    states = jax.jit(jax.vmap(init))(jax.vmap(jax.random.key)(jnp.asarray(seeds)))

    evaluate = Evaluator(dataset.info.env_id, evaluation_policy(args, action_dim, stats), seeds,
                         args.eval_episodes, action_scaling)
    logger = RunLogger("por", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(obs_mean=stats.mean, obs_std=stats.std,
                      action_low=action_scaling.low, action_high=action_scaling.high)
    # Evaluations, checkpoints, the NaN guard and Ctrl-C are common/training.py's; with --resume
    # it continues from the checkpoint's state instead of these fresh ones.
    states = train(states, lambda states, n: train_chunk(states, data, n, args),
                   lambda states: evaluate(policy_params(states)), logger, args, statistics,
                   checkpoint)
    evaluate.close()
    logger.save_policy(policy_params(states), **statistics)
    logger.finish("finished")
    return logger.results


def parse_args(argv=None) -> Args:
    """The CLI, where the chosen dataset's DATASET_OVERRIDES replace Args' defaults."""
    return parse_cli(Args, argv, defaults=dataset_defaults)


if __name__ == "__main__":
    run_main(main, parse_args())
