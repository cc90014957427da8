"""Online SAC that trains the behaviour policies of offlax's D4RL-style datasets.

D4RL (Fu et al., 2020, Sec. 5 and App. C) trained one SAC agent per MuJoCo task and used its
snapshots as behaviour policies: `expert` = the fully trained policy, `medium` = the snapshot whose
return is about a third of the expert's, `medium-replay` = the replay buffer up to that snapshot.
This script does the training part; `benchmarks/export_policies.py` picks the snapshots and
`benchmarks/generate_datasets.py` rolls them out.

SAC as in Haarnoja et al. (2018, "Soft Actor-Critic Algorithms and Applications"), App. D and the
rlkit implementation D4RL used: two Q-functions with target networks (tau 0.005), tanh-Gaussian
actor, automatic entropy tuning towards -|A|, Adam 3e-4, batch 256, 256x256 MLPs, gamma 0.99,
one gradient step per environment step.

Training is checkpointed (parameters, optimiser state, replay buffer, RNG, step) every
`--checkpoint-interval` steps and resumes with the same command, so a long training can be spread
over several runs (`--stop-after` ends a run early on purpose). A resumed run starts a new episode:
the episode in progress at the checkpoint is closed as truncated.

    python benchmarks/sac.py --env Hopper-v5 --total-steps 200000 --run-dir runs/sac/hopper
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax.training.train_state import TrainState
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from online import OnlineRun, ReplayBuffer, evaluate, flat_params  # noqa: E402

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy bounds


@dataclass
class Args:
    env: str = "Hopper-v5"
    """Gymnasium environment id."""
    seed: int = 0
    """Seed of the networks, the replay sampling and the environment."""
    total_steps: int = 1_000_000
    """Environment steps in the whole training (D4RL's experts: 1M+ steps; see README for ours)."""
    learning_starts: int = 10_000
    """Uniform-random steps before the first update (rlkit's SAC `min_num_steps_before_training`
    is 1000; D4RL's experts used 10k, which also gives medium-replay its random prefix)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layers of actor and critics (Haarnoja et al. 2018, Table 1)."""
    batch_size: int = 256
    """Minibatch size (Haarnoja et al. 2018, Table 1)."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critics and temperature (Haarnoja et al. 2018, Table 1)."""
    gamma: float = 0.99
    """Discount (Haarnoja et al. 2018, Table 1)."""
    tau: float = 0.005
    """Polyak rate of the target critics (Haarnoja et al. 2018, Table 1)."""
    snapshot_interval: int = 5_000
    """Save and evaluate the actor every this many steps: the candidates for medium / expert and
    the policies that replay medium-replay."""
    eval_episodes: int = 5
    """Deterministic episodes per snapshot evaluation (the learning curve)."""
    checkpoint_interval: int = 50_000
    """Save the whole training state (with the replay buffer) every this many steps."""
    stop_after: int | None = None
    """Stop this run after this many steps (resume later with the same command)."""
    run_dir: str = "runs/sac/hopper"
    """Where snapshots, the learning curve and checkpoints go."""


class Actor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s))), the tanh-Gaussian policy of SAC."""

    action_dim: int
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, obs):
        x = obs
        for i, width in enumerate(self.hidden_dims):
            x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
        mean = nn.Dense(self.action_dim, name="mean")(x)
        log_std = jnp.clip(nn.Dense(self.action_dim, name="log_std")(x), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class Critic(nn.Module):
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], -1)
        for width in self.hidden_dims:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]


class DoubleCritic(nn.Module):
    """Q_1, Q_2 as one vmapped module: one matmul per layer for both critics."""

    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=2,
        )
        return ensemble(self.hidden_dims)(obs, action)


class Temperature(nn.Module):
    @nn.compact
    def __call__(self):
        return jnp.exp(self.param("log_alpha", nn.initializers.zeros, ()))


@flax.struct.dataclass
class SACState:
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    temperature: TrainState
    key: jax.Array


def sample_action(actor_apply, params, obs, key):
    """a = tanh(u), u ~ N(mu, sigma); log pi(a|s) with the tanh change of variables."""
    mean, log_std = actor_apply(params, obs)
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    log_prob = jnp.sum(
        -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1
    )
    # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the stable form.
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
    return jnp.tanh(u), log_prob


def make_update(actor: Actor, critic: DoubleCritic, args: Args, target_entropy: float):
    def update(state: SACState, batch: dict, next_obs_for_action):
        key, k_next, k_pi, k_act = jax.random.split(state.key, 4)
        alpha = state.temperature.apply_fn(state.temperature.params)

        # Critic: y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s').
        next_action, next_log_prob = sample_action(
            actor.apply, state.actor.params, batch["next_observations"], k_next
        )
        next_q = critic.apply(state.target_critic_params, batch["next_observations"], next_action)
        target = batch["rewards"] + args.gamma * (1.0 - batch["terminals"]) * (
            next_q.min(0) - alpha * next_log_prob
        )

        def critic_loss_fn(params):
            q = critic.apply(params, batch["observations"], batch["actions"])
            return ((q - target) ** 2).mean(1).sum(), q.mean()

        (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            state.critic.params
        )
        critic_state = state.critic.apply_gradients(grads=grads)

        # Actor: E[alpha log pi(a|s) - min_i Q_i(s, a)].
        def actor_loss_fn(params):
            action, log_prob = sample_action(actor.apply, params, batch["observations"], k_pi)
            q = critic.apply(critic_state.params, batch["observations"], action).min(0)
            return (alpha * log_prob - q).mean(), log_prob.mean()

        (actor_loss, log_prob_mean), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            state.actor.params
        )
        actor_state = state.actor.apply_gradients(grads=grads)

        # Temperature: E[-alpha (log pi(a|s) + target_entropy)].
        def temperature_loss_fn(params):
            return -state.temperature.apply_fn(params) * (log_prob_mean + target_entropy)

        temperature_loss, grads = jax.value_and_grad(temperature_loss_fn)(
            state.temperature.params
        )
        temperature_state = state.temperature.apply_gradients(grads=grads)

        target_params = optax.incremental_update(
            critic_state.params, state.target_critic_params, args.tau
        )
        action, _ = sample_action(actor.apply, actor_state.params, next_obs_for_action, k_act)
        new_state = SACState(actor_state, critic_state, target_params, temperature_state, key)
        metrics = {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "temperature_loss": temperature_loss,
            "alpha": alpha,
            "q_mean": q_mean,
            "entropy": -log_prob_mean,
        }
        return new_state, action, metrics

    return jax.jit(update, donate_argnums=0)


def init_state(actor, critic, obs_dim, action_dim, args: Args) -> SACState:
    key = jax.random.PRNGKey(args.seed)
    k_actor, k_critic, key = jax.random.split(key, 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(k_actor, obs)
    critic_params = critic.init(k_critic, obs, act)
    temperature = Temperature()
    return SACState(
        actor=TrainState.create(
            apply_fn=actor.apply, params=actor_params, tx=optax.adam(args.learning_rate)
        ),
        critic=TrainState.create(
            apply_fn=critic.apply, params=critic_params, tx=optax.adam(args.learning_rate)
        ),
        target_critic_params=jax.tree.map(jnp.copy, critic_params),  # own buffers: donated
        temperature=TrainState.create(
            apply_fn=temperature.apply,
            params=temperature.init(jax.random.PRNGKey(0)),
            tx=optax.adam(args.learning_rate),
        ),
        key=key,
    )


def main(args: Args):
    run = OnlineRun(args.run_dir, args)
    env, eval_env = gym.make(args.env), gym.make(args.env)
    obs_dim = env.observation_space.shape[0]
    action_dim = env.action_space.shape[0]
    # The tanh policy acts in [-1, 1]; the environment gets a * scale + offset.
    action_scale = (env.action_space.high - env.action_space.low) / 2.0
    action_offset = (env.action_space.high + env.action_space.low) / 2.0
    actor = Actor(action_dim, args.hidden_dims)
    critic = DoubleCritic(args.hidden_dims)
    update = make_update(actor, critic, args, target_entropy=-float(action_dim))
    act_deterministic = jax.jit(lambda p, o: jnp.tanh(actor.apply(p, o)[0]))

    state = init_state(actor, critic, obs_dim, action_dim, args)
    buffer = ReplayBuffer(args.total_steps, (obs_dim,), (action_dim,))
    rng = np.random.default_rng(args.seed)
    state, step, episodes = run.resume(state, buffer, rng)

    obs, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
    action = None
    last_stop = args.total_steps if args.stop_after is None else min(
        args.total_steps, step + args.stop_after
    )
    start, metrics = time.time(), {}
    bar = tqdm(total=args.total_steps, initial=step, desc=f"SAC {args.env}", smoothing=0.05)
    while step < last_stop:
        if step < args.learning_starts:
            action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
        elif action is None:  # first policy step (or first after resume)
            state, action, metrics = update(state, buffer.sample(rng, args.batch_size), obs)
            action = np.asarray(action)
        next_obs, reward, terminated, truncated, _ = env.step(action * action_scale + action_offset)
        buffer.add(obs, action, reward, next_obs, float(terminated))
        obs = next_obs
        step += 1
        if terminated or truncated:
            episodes += 1
            obs, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
        if step >= args.learning_starts:
            state, action, metrics = update(state, buffer.sample(rng, args.batch_size), obs)
            action = np.asarray(action)
        bar.update(1)

        if step % args.snapshot_interval == 0:
            params = state.actor.params
            score = evaluate(
                eval_env,
                lambda o: np.asarray(act_deterministic(params, o)) * action_scale + action_offset,
                args.eval_episodes, 10_000,
            )
            run.snapshot(step, flat_params(params), score, episodes)
            bar.set_postfix(eval=f"{score:.0f}", alpha=f"{float(metrics.get('alpha', 1)):.3f}")
        if step % args.checkpoint_interval == 0 or step == last_stop:
            run.save(state, buffer, rng, step, episodes)
    bar.close()
    print(f"{args.env}: {step} steps, {episodes} episodes, {time.time() - start:.0f} s this run")


if __name__ == "__main__":
    main(tyro.cli(Args))
