"""Environments by id, for evaluation and for the generated datasets.

Gymnasium's own ids (`Hopper-v5`, `CartPole-v1`) are made as they are. MinAtar's games (Young &
Tian, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement Learning
Experiments", 2019; the `minatar` package) are registered here on first use as
`MinAtar/<Game>-v1`, the minimal-action-set ids of `minatar.gym`, with one change: a time limit
of MINATAR_MAX_EPISODE_STEPS steps. MinAtar's games have none, and a good Breakout agent can
play forever (the bricks come back), which would stall evaluation; no policy offlax trains comes
near the limit (the longest episode of the SpaceInvaders datasets has 1,786 steps). And reset
seeds of 2**32 and above, which MinAtar's numpy RandomState refuses (the dataset generator's
reach 2**48), are folded into 32 bits.

D4RL's Adroit tasks (Rajeswaran et al., 2018; D4RL's `door-v0` ... `relocate-v0`) live on in
Gymnasium-Robotics as `AdroitHand<Task>-v1`, with two differences from the tasks D4RL's files and
reference scores were made in: Gymnasium-Robotics 1.2.1 to 1.4.2 flipped the sign of the
hand-to-object distance term of the dense reward of Door, Hammer and Relocate (their PR #220,
fixed only in the `-v2` ids of later releases), and D4RL's Pen episodes last 100 steps, not 200.
`D4RL/AdroitHand<Task>-v1`, registered here on first use, is the Gymnasium-Robotics task with
D4RL's reward and episode length; replaying door-human-v0's recorded states through it gives the
file's rewards (tests/test_d4rl_environments.py).
"""

from __future__ import annotations

import contextlib
import io
import sys

import gymnasium as gym
import numpy as np

MINATAR_PREFIX = "MinAtar/"
MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway",
                 "Seaquest": "seaquest", "SpaceInvaders": "space_invaders"}
MINATAR_MAX_EPISODE_STEPS = 10_000

D4RL_PREFIX = "D4RL/"
# D4RL's Adroit episode lengths (d4rl/hand_manipulation_suite/__init__.py, max_episode_steps).
D4RL_ADROIT_EPISODE_STEPS = {"Door": 200, "Hammer": 200, "Pen": 100, "Relocate": 200}
# Gymnasium-Robotics' environments (Adroit, AntMaze, PointMaze, Franka Kitchen): registered by
# importing the package, which is an extra.
ROBOTICS_PREFIXES = ("AdroitHand", "AntMaze", "PointMaze", "FrankaKitchen", "Fetch",
                     "HandManipulate")


class EnvironmentUnavailable(RuntimeError):
    """The environment's package is not installed; the message names the one to install."""


def make(env_id: str, **kwargs) -> gym.Env:
    """gym.make(env_id), registering MinAtar's ids first where `env_id` is one of them."""
    if env_id.startswith(MINATAR_PREFIX):
        register_minatar()
    elif env_id.startswith(ROBOTICS_PREFIXES):
        register_robotics()
    elif env_id.startswith(D4RL_PREFIX):
        register_d4rl_adroit()
    return gym.make(env_id, **kwargs)


def register_minatar():
    """Register MinAtar/<Game>-v1 (minimal action set, sticky actions 0.1 and difficulty ramping
    as MinAtar's defaults, the time limit above) unless it is registered already."""
    try:
        import minatar  # noqa: F401
    except ImportError:
        raise EnvironmentUnavailable(
            "MinAtar environments need the `minatar` package: `pip install 'offlax[minatar]'` "
            "(or `pip install minatar`).") from None
    for game, module in MINATAR_GAMES.items():
        env_id = f"{MINATAR_PREFIX}{game}-v1"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="common.environments:make_minatar_game",
                         kwargs={"game": module, "use_minimal_action_set": True},
                         max_episode_steps=MINATAR_MAX_EPISODE_STEPS)


def make_minatar_game(**kwargs) -> gym.Env:
    from minatar.gym import BaseEnv

    return SeedIn32Bits(BaseEnv(**kwargs))


class SeedIn32Bits(gym.Wrapper):
    """Fold a reset seed outside [0, 2**32) into it with numpy's SeedSequence (the same on every
    machine); smaller seeds pass unchanged."""

    def reset(self, *, seed=None, options=None):
        if seed is not None and not 0 <= seed < 2**32:
            seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        return self.env.reset(seed=seed, options=options)


ADROIT_REWARD_NOTICE = "reward functions were updated in v1.2.1"  # farama-notifications' text


def register_robotics():
    """Register Gymnasium-Robotics' environments (importing the package does it).

    Importing 1.2.1 to 1.4.2 prints that the dense Adroit rewards changed and advises another
    release; offlax evaluates D4RL's Adroit data in D4RL/AdroitHand<Task>-v1, which restores
    D4RL's reward, so the import's notice is replaced by one that says so."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import gymnasium_robotics
    except ImportError:
        raise EnvironmentUnavailable(
            "Adroit, AntMaze, PointMaze and Franka Kitchen need the `gymnasium-robotics` package: "
            "`pip install 'offlax[robotics]'` (or `pip install gymnasium-robotics`).") from None
    finally:
        for line in captured.getvalue().splitlines():
            if ADROIT_REWARD_NOTICE in line:
                line = ("note: Gymnasium-Robotics' AdroitHand{Door,Hammer,Relocate}-v1 (1.2.1 to "
                        "1.4.2) add the palm-to-object distance to the dense reward; "
                        "D4RL/AdroitHand<Task>-v1, where offlax evaluates D4RL's Adroit data, "
                        "subtracts it as D4RL did (common/environments.py).")
            print(line, file=sys.stderr)
    gym.register_envs(gymnasium_robotics)


def register_d4rl_adroit():
    """Register D4RL/AdroitHand<Task>-v1: Gymnasium-Robotics' task with D4RL's reward and
    episode length."""
    register_robotics()
    for task, steps in D4RL_ADROIT_EPISODE_STEPS.items():
        env_id = f"{D4RL_PREFIX}AdroitHand{task}-v1"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="common.environments:make_d4rl_adroit",
                         kwargs={"task": task}, max_episode_steps=steps)


def make_d4rl_adroit(task: str, **kwargs) -> gym.Env:
    env = gym.make(f"AdroitHand{task}-v1", **kwargs).unwrapped  # D4RL's time limit is this id's
    return env if task == "Pen" else D4RLHandToObjectReward(env, task)


class D4RLHandToObjectReward(gym.Wrapper):
    """D4RL's dense Door, Hammer and Relocate rewards penalise the distance from the palm to the
    object, -0.1 * |palm - object|; Gymnasium-Robotics' `-v1` (1.2.1 and later) adds +0.1 *
    |palm - object| instead. Subtracting 0.2 * |palm - object|, measured after the step as the
    environment measures it, restores D4RL's reward. The sparse variants are unaffected."""

    def __init__(self, env: gym.Env, task: str):
        super().__init__(env)
        self.task = task

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        env = self.env.unwrapped
        if not env.sparse_reward:
            palm = env.data.site("S_grasp").xpos
            target = (env.data.site("S_handle").xpos if self.task == "Door"
                      else env.data.body("Object").xpos)
            reward = reward - 0.2 * float(np.linalg.norm(palm - target))
        return observation, reward, terminated, truncated, info


def is_discrete(env: gym.Env) -> bool:
    return isinstance(env.action_space, gym.spaces.Discrete)
