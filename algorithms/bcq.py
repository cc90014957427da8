"""BCQ: Fujimoto, Meger & Precup, "Off-Policy Deep Reinforcement Learning without Exploration",
ICML 2019.

Batch-Constrained Q-learning for continuous actions. A conditional VAE G_omega(s) models the
dataset's actions; a perturbation model xi_phi(s, a, Phi) moves each generated action by at most
Phi; the policy is the best of n perturbed samples under Q_1 (paper Sec. 4):

    pi(s) = argmax_{a_j + xi_phi(s, a_j, Phi)} Q_1(s, a_j + xi_phi(s, a_j, Phi)),
    a_j = D_omega(s, z_j),  z_j ~ clip(N(0, I), -0.5, 0.5),  j = 1..n.

The VAE (paper's supplementary material) minimises reconstruction plus KL weighted by 1/2:

    L_VAE = mean_{B,d} (D_omega(s, z) - a)^2 + 1/2 D_KL( N(mu, sigma^2) || N(0, I) ),
    z = mu + sigma eps,  (mu, log sigma) = E_omega(s, a),  log sigma clipped to [-4, 15],
    D_KL = -1/2 mean_{B,j} (1 + log sigma^2 - mu^2 - sigma^2)       (a mean, as the authors')

The Q-functions regress on the soft clipped double-Q target over n = 10 perturbed samples at s'
(paper Sec. 4):

    y = r + gamma (1 - d) max_{a_j} [ lambda min_{i=1,2} Q'_i(s', a_j)
                                      + (1 - lambda) max_{i=1,2} Q'_i(s', a_j) ],
    a_j = clip(a~_j + xi'(s', a~_j, Phi), -1, 1),  a~_j = D_omega(s', z_j),

and the perturbation model follows Q_1 by the deterministic policy gradient:

    L_xi = -mean_B Q_1(s, clip(a~ + xi_phi(s, a~, Phi), -1, 1)),  a~ = D_omega(s, z),
    xi_phi(s, a, Phi) = Phi tanh(f_phi(s, a)).

One update is the authors' order: the VAE, then the Q-functions (their target decodes with the
updated VAE), then the perturbation model (with the updated VAE and Q-functions), then Polyak
averaging of the target perturbation model and Q-functions. Actions live in [-1, 1]
(common/evaluation maps them to the env's bounds), so the authors' max_action is 1.

Authors' code: https://github.com/sfujim/BCQ (continuous_BCQ/BCQ.py, continuous_BCQ/main.py);
every default below is theirs. Departures, each for a reason:
- Biases start at zero (kernels as PyTorch's nn.Linear, U(+-1/sqrt(fan_in))), as in
  td3_bc.py; the authors' PyTorch layers also draw their biases from U(+-1/sqrt(fan_in)).
- Acting is stochastic (n candidates sampled from the VAE), so the evaluation gives each
  episode its own keys (common/evaluation): evaluating the same parameters twice gives the
  same returns, as for the deterministic policies of the other files.
Run: python algorithms/bcq.py --env offlax/hopper/medium-replay-v1 --num-seeds 3
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
    """gradient updates per agent (authors' main.py max_timesteps: 1e6)"""
    eval_interval: int = 5_000
    """updates between evaluations (authors' main.py eval_freq: 5e3)"""
    eval_episodes: int = 10
    """evaluation episodes per agent and evaluation (authors' main.py eval_policy: 10)"""
    batch_size: int = 100
    """minibatch size (authors' main.py: 100)"""
    hidden_dims: tuple[int, ...] = (400, 300)
    """hidden layers of the perturbation model and of each Q-function (authors' BCQ.py: 400,
    300)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/bcq/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    resume: str | None = None
    """output directory of an earlier run to continue from its latest checkpoint, with its own
    arguments (other flags must agree with them)"""
    keep_checkpoints: int = 3
    """checkpoints kept in <output-dir>/checkpoints (one is written at every evaluation)"""
    actor_lr: float = 1e-3
    """perturbation model learning rate, Adam (authors' BCQ.py: 1e-3)"""
    critic_lr: float = 1e-3
    """Q-function learning rate, Adam (authors' BCQ.py: 1e-3)"""
    vae_lr: float = 1e-3
    """VAE learning rate, Adam (authors' BCQ.py: torch.optim.Adam's default, 1e-3)"""
    discount: float = 0.99
    """gamma (authors' main.py: 0.99)"""
    tau: float = 0.005
    """target network update rate (authors' main.py: 0.005)"""
    lmbda: float = 0.75
    """lambda of the soft clipped double-Q target: the weight of the smaller Q (authors' main.py
    --lmbda: 0.75)"""
    phi: float = 0.05
    """Phi, the largest perturbation of a generated action, in [-1, 1] action units (authors'
    main.py --phi: 0.05)"""
    n_target_actions: int = 10
    """n, actions generated at s' for the target (authors' BCQ.py: 10)"""
    n_eval_actions: int = 100
    """n, candidate actions generated at s when acting (authors' BCQ.py select_action: 100)"""
    vae_hidden_dims: tuple[int, ...] = (750, 750)
    """hidden layers of the VAE's encoder and of its decoder (authors' BCQ.py: 750, 750); its
    latent has 2|A| dimensions (authors' latent_dim = action_dim * 2)"""
    kl_weight: float = 0.5
    """weight of the KL term in the VAE loss (authors' BCQ.py: 0.5)"""
    latent_clip: float = 0.5
    """latents sampled for decoding are clipped to +-this (authors' BCQ.py VAE.decode: 0.5)"""
    normalize_observations: bool = False
    """normalise states by the dataset's mean and std (the authors do not)"""


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


class VAE(nn.Module):
    """Conditional VAE of the dataset's actions: encoder E(s, a) -> (mu, log sigma), decoder
    D(s, z) = tanh(f(s, z)) in [-1, 1]."""

    hidden_dims: tuple[int, ...]
    action_dim: int

    def setup(self):  # latent z in R^{2|A|} (authors' latent_dim = action_dim * 2)
        self.encoder = MLP(self.hidden_dims, 4 * self.action_dim)
        self.decoder = MLP(self.hidden_dims, self.action_dim)

    def __call__(self, observations, actions, key):
        """(D(s, z), mu, log sigma), z = mu + sigma eps: the reconstruction of a."""
        mean, log_std = jnp.split(self.encoder(jnp.concatenate([observations, actions], -1)), 2,
                                  -1)
        log_std = jnp.clip(log_std, -4.0, 15.0)
        latent = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return self.decode(observations, latent), mean, log_std

    def decode(self, observations, latent):
        return jnp.tanh(self.decoder(jnp.concatenate([observations, latent], -1)))


def sample_latent(key, shape, clip: float):
    """z ~ N(0, I) clipped to [-clip, clip]: the latents decoded into generated actions."""
    return jnp.clip(jax.random.normal(key, shape), -clip, clip)


class Actor(nn.Module):
    """The perturbation model: (s, a) -> clip(a + Phi tanh(f(s, a)), -1, 1)."""

    hidden_dims: tuple[int, ...]
    action_dim: int
    phi: float

    @nn.compact
    def __call__(self, observations, actions):
        x = jnp.concatenate([observations, actions], -1)
        perturbation = self.phi * jnp.tanh(MLP(self.hidden_dims, self.action_dim)(x))
        return jnp.clip(actions + perturbation, -1.0, 1.0)


class QNetwork(nn.Module):
    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations, actions):
        x = jnp.concatenate([observations, actions], -1)
        return MLP(self.hidden_dims, 1)(x).squeeze(-1)


class DoubleQ(nn.Module):
    """Q_1 and Q_2 as one vmapped module: output (2, *batch)."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(QNetwork, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=2)
        return ensemble(self.hidden_dims)(observations, actions)


# --------------------------------------------------------------------------------------------
# Training state: one agent. N seeds are this pytree with a leading axis of size N.


class BCQState(struct.PyTreeNode):
    actor: TrainState  # the perturbation model
    critic: TrainState
    vae: TrainState
    actor_target: dict
    critic_target: dict
    key: jax.Array


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> BCQState:
    key, actor_key, critic_key, vae_key, noise_key = jax.random.split(key, 5)
    actor = Actor(args.hidden_dims, action_dim, args.phi)
    critic, vae = DoubleQ(args.hidden_dims), VAE(args.vae_hidden_dims, action_dim)
    observation, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(actor_key, observation, action)
    critic_params = critic.init(critic_key, observation, action)
    return BCQState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor_params,
                                tx=optax.adam(args.actor_lr)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=optax.adam(args.critic_lr)),
        vae=TrainState.create(apply_fn=vae.apply,
                              params=vae.init(vae_key, observation, action, noise_key),
                              tx=optax.adam(args.vae_lr)),
        actor_target=actor_params,
        critic_target=critic_params,
        key=key,
    )


def generated_actions(vae_apply, vae_params, observations, key, n: int, action_dim: int,
                      clip: float):
    """n actions per state decoded from clipped latents, D(s, z_j) with z_j in R^{2|A|}, shape
    (*batch, n, |A|), and the states repeated to (*batch, n, obs_dim)."""
    repeated = jnp.repeat(observations[..., None, :], n, axis=-2)
    latent = sample_latent(key, (*repeated.shape[:-1], 2 * action_dim), clip)
    return vae_apply(vae_params, repeated, latent, method=VAE.decode), repeated


# --------------------------------------------------------------------------------------------
# Losses and the update


def vae_loss(vae_params, state: BCQState, batch, key, kl_weight: float):
    """mean_{B,d} (D(s, z) - a)^2 + kl_weight (-1/2) mean_{B,j} (1 + log sigma^2 - mu^2 -
    sigma^2)."""
    reconstruction, mean, log_std = state.vae.apply_fn(vae_params, batch["observations"],
                                                       batch["actions"], key)
    reconstruction_loss = ((reconstruction - batch["actions"]) ** 2).mean()
    kl = -0.5 * (1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std)).mean()
    return reconstruction_loss + kl_weight * kl, (reconstruction_loss, kl)


def critic_target(state: BCQState, batch, key, args: Args):
    """y = r + gamma (1 - d) max_j [ lambda min_i Q'_i(s', a_j)
                                    + (1 - lambda) max_i Q'_i(s', a_j) ],
    a_j = xi'(s', D(s', z_j)), j = 1..n_target_actions."""
    generated, next_observations = generated_actions(
        state.vae.apply_fn, state.vae.params, batch["next_observations"], key,
        args.n_target_actions, batch["actions"].shape[-1], args.latent_clip)
    next_actions = state.actor.apply_fn(state.actor_target, next_observations, generated)
    next_q = state.critic.apply_fn(state.critic_target, next_observations, next_actions)  # (2,B,n)
    soft_clipped = args.lmbda * next_q.min(0) + (1.0 - args.lmbda) * next_q.max(0)
    return batch["rewards"] + args.discount * (1.0 - batch["terminals"]) * soft_clipped.max(-1)


def critic_loss(critic_params, state: BCQState, batch, target):
    """sum_i mean_B (Q_i(s, a) - y)^2."""
    q = state.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
    return ((q - target) ** 2).mean(1).sum(), q


def actor_loss(actor_params, state: BCQState, batch, key, args: Args):
    """-mean_B Q_1(s, xi(s, D(s, z))), one generated action per state."""
    generated, observations = generated_actions(
        state.vae.apply_fn, state.vae.params, batch["observations"], key, 1,
        batch["actions"].shape[-1], args.latent_clip)
    actions = state.actor.apply_fn(actor_params, observations, generated)
    q = state.critic.apply_fn(state.critic.params, observations, actions)[0]
    return -q.mean(), jnp.abs(actions - generated).mean()


def update(state: BCQState, data, args: Args):
    """One BCQ update, in the authors' order: VAE, Q-functions, perturbation model, targets."""
    key, batch_key, vae_key, target_key, actor_key = jax.random.split(state.key, 5)
    batch = sample_batch(data, batch_key, args.batch_size)

    (v_loss, (reconstruction, kl)), grads = jax.value_and_grad(vae_loss, has_aux=True)(
        state.vae.params, state, batch, vae_key, args.kl_weight)
    state = state.replace(vae=state.vae.apply_gradients(grads=grads))

    target = critic_target(state, batch, target_key, args)
    (c_loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic.params, state, batch, target)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))

    (a_loss, perturbation), grads = jax.value_and_grad(actor_loss, has_aux=True)(
        state.actor.params, state, batch, actor_key, args)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    state = state.replace(
        actor_target=optax.incremental_update(state.actor.params, state.actor_target, args.tau),
        critic_target=optax.incremental_update(state.critic.params, state.critic_target, args.tau),
        key=key,
    )
    metrics = {"vae_loss": v_loss, "reconstruction_loss": reconstruction, "kl": kl,
               "critic_loss": c_loss, "q_mean": q.mean(), "target_mean": target.mean(),
               "actor_loss": a_loss, "perturbation_mean": perturbation}
    return state, metrics


@partial(jax.jit, static_argnames=("num_updates", "args"))
def train_chunk(states: BCQState, data, num_updates: int, args: Args):
    """`num_updates` updates of every seed in one host call: lax.scan inside vmap over seeds."""

    def one_agent(state):
        return jax.lax.scan(lambda s, _: update(s, data, args), state, None, length=num_updates)

    return jax.vmap(one_agent)(states)


# --------------------------------------------------------------------------------------------
# Training loop


def policy_params(states) -> dict:
    """What the policy acts with: the VAE, the perturbation model and the Q-functions (of a
    training state, or of a checkpoint's state dict)."""
    if isinstance(states, dict):
        return {part: states[part]["params"] for part in ("vae", "actor", "critic")}
    return {"vae": states.vae.params, "actor": states.actor.params, "critic": states.critic.params}


def evaluation_policy(args: Args, action_dim: int, stats: ObservationStatistics):
    """(params, raw observations, key) -> actions in [-1, 1]: of n_eval_actions perturbed
    actions generated per state, the one with the highest Q_1 (authors' select_action)."""
    vae, critic = VAE(args.vae_hidden_dims, action_dim), DoubleQ(args.hidden_dims)
    actor = Actor(args.hidden_dims, action_dim, args.phi)

    def policy(params, observations, key):
        generated, repeated = generated_actions(
            vae.apply, params["vae"], stats.normalize(observations), key, args.n_eval_actions,
            action_dim, args.latent_clip)
        actions = actor.apply(params["actor"], repeated, generated)  # (B, n, |A|)
        q1 = critic.apply(params["critic"], repeated, actions)[0]  # (B, n)
        return jnp.take_along_axis(actions, q1.argmax(-1)[:, None, None], 1)[:, 0]

    return policy


def main(args: Args) -> dict:
    check_args(args, positive=("phi", "n_target_actions", "n_eval_actions", "latent_clip"),
               nonnegative=("kl_weight",), unit=("lmbda",))
    output_dir, checkpoint = prepare_output_dir("bcq", args)
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
    logger = RunLogger("bcq", args, dataset, seeds, output_dir, checkpoint)
    statistics = dict(obs_mean=stats.mean, obs_std=stats.std,
                      action_low=action_scaling.low, action_high=action_scaling.high)
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
    run_main(main, parse_cli(Args))
