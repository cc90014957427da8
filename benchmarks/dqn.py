"""Online Double DQN that trains the behaviour policies of offlax's discrete datasets.

The discrete counterpart of `benchmarks/sac.py`: its snapshots become the behaviour policies of
`offlax/<task>/<level>-v1` (`benchmarks/export_policies.py` picks them,
`common/datasets/generated.py` rolls them out), as DQN agents gave the Batch RL benchmark its data (Fujimoto et al.,
"Benchmarking Batch Deep Reinforcement Learning Algorithms", 2019).

Double DQN (van Hasselt, Guez & Silver, AAAI 2016) on Nature DQN (Mnih et al., 2015):

    y = r + gamma (1 - d) Q_target(s', argmax_a' Q(s', a'))
    L = E_{(s, a, r, s', d) ~ buffer} [ l(Q(s, a) - y) ]    (l: squared error or Huber, delta 1)

a target network copied from the online one every `target_update_interval` steps, and
epsilon-greedy exploration: epsilon = 1 for the first `learning_starts` steps (the buffer fills
with uniform actions), then linear from `epsilon_start` to `epsilon_end` over
`exploration_steps` steps, then `epsilon_end`. One gradient step every `train_frequency`
environment steps.

Per-task defaults (ENV_DEFAULTS, matched by the start of `--env`):
  CartPole-v1   CleanRL's dqn.py (Huang et al., JMLR 2022): MLP 120x84, squared error, Adam
                2.5e-4, batch 128, buffer 10k, target copy every 500 steps, train every 10 steps,
                epsilon 1 -> 0.05, 10k random steps, 500k steps. Two departures. Epsilon decays
                over 50k steps (SB3's default tenth of the run) instead of CleanRL's 250k: with
                250k the greedy policy reached a third of the expert's return at 25k steps while
                epsilon was still 0.95, so medium-replay (the buffer up to that snapshot) held
                uniform actions only, nothing of the learning that D4RL's medium-replay shows.
                And the decay starts after the random steps (CleanRL: at step 0), one rule for
                every task. (With Huber instead of the squared error, these settings make Q
                diverge past 1 / (1 - gamma) within 2k updates; measured, not a guess.)
  MinAtar/*     the authors' DQN baseline (Young & Tian 2019, examples/dqn.py): a 3x3 convolution
                with 16 channels, a 128-unit layer, Huber loss, centred RMSProp (lr 2.5e-4,
                decay 0.95, eps 0.01), batch 32, buffer 100k, target copy every 1000 steps, a
                gradient step every step, epsilon 1 -> 0.1 over 100k steps after 5k random
                steps. They train 5M frames; offlax's default is 2M (a CPU budget; see
                behaviour_policies.md).

Checkpoints and resume as `sac.py` (`benchmarks/online.py`):

    python benchmarks/dqn.py --env CartPole-v1 --run-dir runs/dqn/cartpole
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax.training.train_state import TrainState
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from online import OnlineRun, ReplayBuffer, evaluate, flat_params  # noqa: E402

from common.environments import make  # noqa: E402


@dataclass
class Args:
    env: str = "CartPole-v1"
    """Gymnasium environment id with a Discrete action space (MinAtar/<Game>-v1 for MinAtar)."""
    seed: int = 0
    """Seed of the network, the replay sampling, exploration and the environment."""
    total_steps: int = 500_000
    """Environment steps in the whole training."""
    learning_starts: int = 10_000
    """Uniform-random steps before the first update."""
    hidden_dims: tuple[int, ...] = (120, 84)
    """Hidden layers of the MLP (vector observations) or after the convolution (images)."""
    conv_channels: int = 16
    """Channels of the 3x3 convolution applied to image observations (MinAtar)."""
    batch_size: int = 128
    """Minibatch size."""
    buffer_size: int = 10_000
    """Replay buffer capacity (a ring: the oldest transitions are overwritten)."""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss: squared error, or Huber with delta 1 (Nature DQN's error clipping)."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Adam, or centred RMSProp with decay 0.95 and eps 0.01 outside the square root (MinAtar's
    torch.optim.RMSprop settings)."""
    learning_rate: float = 2.5e-4
    """Learning rate."""
    gamma: float = 0.99
    """Discount."""
    target_update_interval: int = 500
    """Copy the online network into the target network every this many steps."""
    train_frequency: int = 10
    """One gradient step every this many environment steps."""
    epsilon_start: float = 1.0
    """Exploration rate when the decay begins (after `learning_starts`)."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay."""
    exploration_steps: int = 50_000
    """Steps over which epsilon decays linearly (CartPole: 50k, a tenth of the run, as Stable
    Baselines3's default exploration_fraction 0.1; CleanRL's half of the run is 250k)."""
    snapshot_interval: int = 5_000
    """Save and evaluate the greedy policy every this many steps."""
    eval_episodes: int = 5
    """Greedy episodes per snapshot evaluation (the learning curve)."""
    checkpoint_interval: int = 50_000
    """Save the whole training state (with the replay buffer) every this many steps."""
    stop_after: int | None = None
    """Stop this run after this many steps (resume later with the same command)."""
    run_dir: str = "runs/dqn/cartpole"
    """Where snapshots, the learning curve and checkpoints go."""


ENV_DEFAULTS = {
    "CartPole": {},  # the class defaults: CleanRL's dqn.py
    "MinAtar/": dict(
        total_steps=2_000_000, learning_starts=5_000, hidden_dims=(128,), conv_channels=16,
        batch_size=32, buffer_size=100_000, loss="huber", optimizer="rmsprop", learning_rate=2.5e-4,
        target_update_interval=1_000, train_frequency=1, epsilon_end=0.1,
        exploration_steps=100_000, snapshot_interval=20_000, run_dir="runs/dqn/minatar",
    ),
}


def defaults_for(env: str) -> Args:
    args = Args(env=env)
    for prefix, values in ENV_DEFAULTS.items():
        if env.startswith(prefix):
            args = dataclasses.replace(args, **values)
    return args


class Conv3x3(nn.Module):
    """MinAtar's 3x3 convolution (VALID, stride 1) on (..., H, W, C) images, written as one
    matmul on the nine shifted views (im2col): the function and parameters of
    nn.Conv(features, (3, 3), padding="VALID"), but 4x faster on XLA's CPU at 10x10 frames and
    batch 32, 6x with vmapped seeds (its convolution is slow at these sizes)."""

    features: int

    @nn.compact
    def __call__(self, x):
        height, width, channels = x.shape[-3:]
        kernel_init = nn.initializers.lecun_normal()  # nn.Conv's default
        kernel = self.param("kernel", kernel_init, (3, 3, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches = jnp.concatenate([x[..., i:i + height - 2, j:j + width - 2, :]
                                   for i in range(3) for j in range(3)], axis=-1)
        return patches @ kernel.reshape(-1, self.features) + bias


class QNetwork(nn.Module):
    """Q(s, .) for every action: an MLP on vector observations; on images (H, W, C), a 3x3
    convolution (VALID, stride 1) and ReLU first, flattened, as MinAtar's network. Layer names
    are those of the exported policy file (`common/datasets/policies.py` reads them)."""

    num_actions: int
    hidden_dims: Sequence[int]
    conv_channels: int

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32)
        if x.ndim == 4:
            x = nn.relu(Conv3x3(self.conv_channels, name="conv_0")(x))
            x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden_dims):
            x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_actions, name="q")(x)


@flax.struct.dataclass
class DQNState:
    online: TrainState
    target_params: dict


def double_dqn_target(q_next_online, q_next_target, rewards, terminals, gamma):
    """y = r + gamma (1 - d) Q_target(s', argmax_a' Q(s', a'))."""
    best = jnp.argmax(q_next_online, axis=-1)
    next_value = jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return rewards + gamma * (1.0 - terminals) * next_value


def make_update(network: QNetwork, args: Args):
    def update(state: DQNState, batch: dict):
        q_next_online = network.apply(state.online.params, batch["next_observations"])
        q_next_target = network.apply(state.target_params, batch["next_observations"])
        target = double_dqn_target(q_next_online, q_next_target, batch["rewards"],
                                   batch["terminals"], args.gamma)

        def loss_fn(params):
            q = network.apply(params, batch["observations"])
            q_taken = jnp.take_along_axis(q, batch["actions"][:, None], axis=-1)[:, 0]
            error = q_taken - target
            if args.loss == "huber":
                return optax.huber_loss(error, delta=1.0).mean(), q_taken.mean()
            return (error**2).mean(), q_taken.mean()

        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.online.params)
        new_state = state.replace(online=state.online.apply_gradients(grads=grads))
        return new_state, {"loss": loss, "q_mean": q_mean}

    return jax.jit(update, donate_argnums=0)


def optimizer(args: Args) -> optax.GradientTransformation:
    if args.optimizer == "rmsprop":  # torch.optim.RMSprop(alpha=0.95, centered=True, eps=0.01)
        return optax.rmsprop(args.learning_rate, decay=0.95, eps=0.01, centered=True,
                             eps_in_sqrt=False)
    return optax.adam(args.learning_rate)


def epsilon_at(step: int, args: Args) -> float:
    if step < args.learning_starts:
        return 1.0
    fraction = min(1.0, (step - args.learning_starts) / max(1, args.exploration_steps))
    return args.epsilon_start + fraction * (args.epsilon_end - args.epsilon_start)


def main(args: Args):
    run = OnlineRun(args.run_dir, args)
    env, eval_env = make(args.env), make(args.env)
    if not hasattr(env.action_space, "n"):
        raise SystemExit(f"{args.env} has a {type(env.action_space).__name__} action space; DQN "
                         "needs a Discrete one (benchmarks/sac.py trains continuous tasks).")
    num_actions = int(env.action_space.n)
    obs_shape = env.observation_space.shape
    network = QNetwork(num_actions, args.hidden_dims, args.conv_channels)
    update = make_update(network, args)
    greedy = jax.jit(lambda p, o: jnp.argmax(network.apply(p, o[None])[0]))

    params = network.init(jax.random.PRNGKey(args.seed), jnp.zeros((1, *obs_shape)))
    state = DQNState(TrainState.create(apply_fn=network.apply, params=params, tx=optimizer(args)),
                     jax.tree.map(jnp.copy, params))  # own buffers: the update donates
    buffer = ReplayBuffer(args.buffer_size, obs_shape, (), np.int32,
                          env.observation_space.dtype)
    rng = np.random.default_rng(args.seed)
    state, step, episodes = run.resume(state, buffer, rng)

    obs, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
    last_stop = args.total_steps if args.stop_after is None else min(
        args.total_steps, step + args.stop_after)
    start, metrics = time.time(), {}
    bar = tqdm(total=args.total_steps, initial=step, desc=f"DQN {args.env}", smoothing=0.05)
    while step < last_stop:
        epsilon = epsilon_at(step, args)
        # Both draws every step, so the random stream does not depend on epsilon's value.
        explore, random_action = rng.random() < epsilon, int(rng.integers(num_actions))
        action = random_action if explore else int(greedy(state.online.params, obs))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, float(terminated))
        obs = next_obs
        step += 1
        if terminated or truncated:
            episodes += 1
            obs, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
        if step > args.learning_starts and step % args.train_frequency == 0:
            state, metrics = update(state, buffer.sample(rng, args.batch_size))
        if step % args.target_update_interval == 0:
            state = state.replace(target_params=jax.tree.map(jnp.copy, state.online.params))
        bar.update(1)

        if step % args.snapshot_interval == 0:
            params = state.online.params
            score = evaluate(eval_env, lambda o: int(greedy(params, o)), args.eval_episodes,
                             10_000)
            run.snapshot(step, flat_params(params), score, episodes)
            bar.set_postfix(eval=f"{score:.1f}", eps=f"{epsilon:.2f}",
                            q=f"{float(metrics.get('q_mean', 0.0)):.2f}")
        if step % args.checkpoint_interval == 0 or step == last_stop:
            run.save(state, buffer, rng, step, episodes)
    bar.close()
    print(f"{args.env}: {step} steps, {episodes} episodes, {time.time() - start:.0f} s this run")


if __name__ == "__main__":
    first = tyro.cli(Args)
    main(tyro.cli(Args, default=defaults_for(first.env)))
