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
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MINATAR_PREFIX = "MinAtar/"
MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway",
                 "Seaquest": "seaquest", "SpaceInvaders": "space_invaders"}
MINATAR_MAX_EPISODE_STEPS = 10_000


class EnvironmentUnavailable(RuntimeError):
    """The environment's package is not installed; the message names the one to install."""


def make(env_id: str, **kwargs) -> gym.Env:
    """gym.make(env_id), registering MinAtar's ids first where `env_id` is one of them."""
    if env_id.startswith(MINATAR_PREFIX):
        register_minatar()
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


def is_discrete(env: gym.Env) -> bool:
    return isinstance(env.action_space, gym.spaces.Discrete)
