"""Normalised scores, observation statistics and IQL reward scaling against hand values."""

import numpy as np
import pytest

from common.datasets import Dataset, DatasetError, DatasetInfo, normalized_score
from common.normalization import iql_reward_scale, observation_statistics


def info(ref_min=None, ref_max=None):
    return DatasetInfo("toy", "test", "toy", None, ref_min, ref_max, "test")


def toy_dataset(rewards, ends, observations=None):
    n = len(rewards)
    obs = np.zeros((n, 2), np.float32) if observations is None else observations
    terminals = np.zeros(n, bool)
    timeouts = np.isin(np.arange(n), ends)
    return Dataset(obs, np.zeros((n, 1), np.float32), np.asarray(rewards, np.float32), obs,
                   terminals, timeouts, info())  # fmt: skip


def test_normalized_score_hand_values():
    i = info(-20.0, 180.0)
    assert normalized_score(-20.0, i) == 0.0
    assert normalized_score(180.0, i) == 100.0
    assert normalized_score(30.0, i) == pytest.approx(25.0)
    np.testing.assert_allclose(normalized_score([80.0, -70.0], i), [50.0, -25.0])


def test_observation_statistics_hand_values():
    obs = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    stats = observation_statistics(toy_dataset([0, 0], [1], obs))
    np.testing.assert_allclose(stats.mean, [2.0, 5.0])
    np.testing.assert_allclose(stats.std, [1.001, 0.001], rtol=1e-6)  # std + 1e-3
    np.testing.assert_allclose(stats.normalize(obs), [[-1 / 1.001, 0], [1 / 1.001, 0]], rtol=1e-6)


def test_iql_reward_scale_hand_values():
    # episodes [1, 2] (return 3), [4] (4), [0.5, 0.5, 1] (2): scale = 1000 / (4 - 2)
    d = toy_dataset([1, 2, 4, 0.5, 0.5, 1], ends=[1, 2, 5])
    assert iql_reward_scale(d) == pytest.approx(500.0)


def test_iql_reward_scale_undefined_for_equal_returns():
    with pytest.raises(DatasetError, match="do not spread"):
        iql_reward_scale(toy_dataset([1, 1], ends=[0, 1]))


def test_returns_to_go_stop_at_episode_ends_by_hand():
    from common.transitions import returns_to_go

    # episodes [1, 2, 3] (cut after step 2) and [4, 5]; gamma 0.5
    d = toy_dataset([1, 2, 3, 4, 5], ends=[2, 4])
    np.testing.assert_allclose(returns_to_go(d, d.rewards, 0.5),
                               [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5])
