"""load_dataset for each source: Minari, D4RL names, D4RL HDF5 files; episode splitting."""

import h5py
import numpy as np
import pytest
from conftest import SHARED, create_minari

from common.datasets import (
    DatasetFormatError,
    load_d4rl_hdf5,
    load_dataset,
    normalized_score,
)

# --------------------------------------------------------------------------------------------
# Minari


def test_minari_dataset_flattens_episodes_and_keeps_terminal_vs_timeout(minari_dir):
    # episode 0 ends terminated after 4 steps, episode 1 truncated after 3, episode 2 is cut
    # after 2 steps with neither flag (end of data): it must still end as a timeout.
    create_minari("test/pend/mixed-v0", [(4, True, False), (3, False, True), (2, False, False)],
                  ref_scores=(-10.0, 30.0))  # fmt: skip
    d = load_dataset("test/pend/mixed-v0")
    assert d.size == 9
    assert d.observations.shape == (9, 3) and d.actions.shape == (9, 1)
    np.testing.assert_array_equal(d.terminals, [0, 0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(d.timeouts, [0, 0, 0, 0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(d.episode_ends, [0, 0, 0, 1, 0, 0, 1, 0, 1])
    # s' is the next observation of the same episode, also at the episode's last step.
    np.testing.assert_array_equal(d.next_observations[3], [12, 13, 14])
    np.testing.assert_array_equal(d.observations[4], [1000, 1001, 1002])
    np.testing.assert_array_equal(d.next_observations[6], [1009, 1010, 1011])
    # returns: episode e has rewards e + t/100
    np.testing.assert_allclose(d.episode_returns(), [0.06, 3.03, 4.01], atol=1e-5)
    np.testing.assert_array_equal(d.episode_lengths(), [4, 3, 2])
    np.testing.assert_array_equal(d.episode_starts(), [0, 4, 7])
    assert d.info.env_id == "Pendulum-v1"
    assert (d.info.ref_min_score, d.info.ref_max_score) == (-10.0, 30.0)
    assert d.info.ref_score_source == "dataset metadata"
    assert d.info.source == "minari"


def test_minari_without_reference_scores_falls_back_to_d4rl_constants(minari_dir):
    create_minari("mujoco/hopper/medium-v0", [(5, True, False)], env="Hopper-v5",
                  obs_dim=11, action_dim=3)  # fmt: skip
    with pytest.warns(UserWarning, match="D4RL's published 'hopper' constants"):
        d = load_dataset("mujoco/hopper/medium-v0")
    assert (d.info.ref_min_score, d.info.ref_max_score) == (-20.272305, 3234.3)
    assert d.info.ref_score_source == "D4RL constants (hopper)"


def test_d4rl_name_maps_to_its_minari_successor(minari_dir):
    create_minari("mujoco/walker2d/expert-v0", [(3, False, True)], ref_scores=(0.0, 1.0),
                  env="Walker2d-v5", obs_dim=17, action_dim=6)  # fmt: skip
    d = load_dataset("walker2d-expert-v2")
    assert d.info.dataset_id == "mujoco/walker2d/expert-v0"
    assert d.info.name == "walker2d-expert-v2"
    assert d.observations.shape == (3, 17)


def test_goal_conditioned_dict_observations_are_flattened():
    from common.datasets.minari_store import _flatten_observations

    obs = {
        "achieved_goal": np.zeros((2, 2)),
        "desired_goal": np.full((2, 2), 7.0),
        "observation": np.arange(6.0).reshape(2, 3),
    }
    flat = _flatten_observations(obs)
    np.testing.assert_array_equal(flat, [[0, 1, 2, 7, 7], [3, 4, 5, 7, 7]])


# --------------------------------------------------------------------------------------------
# D4RL HDF5


def write_d4rl(path, n=10, terminals=(), timeouts=(), next_obs=False, drop=()):
    obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    data = {
        "observations": obs,
        "actions": np.linspace(-1, 1, n * 3, dtype=np.float32).reshape(n, 3),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.isin(np.arange(n), terminals),
        "timeouts": np.isin(np.arange(n), timeouts),
    }
    if next_obs:
        data["next_observations"] = obs + 0.5
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k not in drop:
                f[k] = v
    return data


def test_d4rl_hdf5_without_next_observations_drops_timeout_rows(tmp_path):
    # rows 0..9; terminal at 2; timeout at 6; rows 7..9 trail after the last end.
    path = tmp_path / "toy.hdf5"
    write_d4rl(path, terminals=[2], timeouts=[6])
    d = load_dataset(str(path))
    # row 6 (timeout: its s' is unknown) and row 9 (trailing: no next row) are dropped
    np.testing.assert_array_equal(d.rewards, [0, 1, 2, 3, 4, 5, 7, 8])
    np.testing.assert_array_equal(d.terminals, [0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(d.timeouts, [0, 0, 0, 0, 0, 1, 0, 1])
    # s'_t = s_{t+1}
    np.testing.assert_array_equal(d.next_observations[0], [2, 3])
    np.testing.assert_array_equal(d.next_observations[5], [12, 13])  # row 5 -> row 6's obs
    np.testing.assert_array_equal(d.next_observations[7], [18, 19])  # row 8 -> row 9's obs
    np.testing.assert_allclose(d.episode_returns(), [3, 12, 15])
    assert d.info.source == "d4rl-hdf5" and d.info.ref_min_score is None


def test_d4rl_hdf5_with_next_observations_keeps_every_row(tmp_path):
    path = tmp_path / "toy.hdf5"
    write_d4rl(path, terminals=[2], timeouts=[6], next_obs=True)
    d = load_d4rl_hdf5(path)
    assert d.size == 10
    np.testing.assert_array_equal(d.next_observations[6], [12.5, 13.5])
    np.testing.assert_array_equal(np.flatnonzero(d.episode_ends), [2, 6, 9])
    assert d.timeouts[9] and not d.terminals[9]


def test_d4rl_hdf5_without_timeouts_key(tmp_path):
    path = tmp_path / "old.hdf5"
    write_d4rl(path, terminals=[4, 9], drop=("timeouts",))
    d = load_d4rl_hdf5(path)
    assert d.size == 10 and not d.timeouts.any()
    np.testing.assert_allclose(d.episode_returns(), [10, 35])


def test_d4rl_hdf5_named_after_a_d4rl_dataset_gets_its_reference_scores(tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    write_d4rl(path, terminals=[9])
    d = load_d4rl_hdf5(path)
    assert (d.info.ref_min_score, d.info.ref_max_score) == (-20.272305, 3234.3)
    np.testing.assert_allclose(normalized_score(3234.3, d.info), 100.0)


@pytest.mark.skipif(
    not (SHARED / "data/d4rl/door-human-v0.hdf5").exists(),
    reason="../shared/data/d4rl/door-human-v0.hdf5 is not present",
)
def test_real_d4rl_door_human_file():
    path = SHARED / "data/d4rl/door-human-v0.hdf5"
    with h5py.File(path) as f:
        raw_terminals, raw_timeouts = f["terminals"][()], f["timeouts"][()]
        raw_rewards = f["rewards"][()]
    assert "next_observations" not in h5py.File(path).keys()
    d = load_dataset(str(path))
    assert d.observations.shape == (6729 - 25, 39) and d.actions.shape == (6704, 28)
    assert d.observations.dtype == np.float32 and d.actions.dtype == np.float32
    assert np.abs(d.actions).max() <= 1.0
    # D4RL's convention: both flags end an episode; the 25 timeout rows lack s' and are dropped.
    assert raw_terminals.sum() == 25 and raw_timeouts.sum() == 25
    assert d.terminals.sum() == 25 and d.timeouts.sum() == 25
    assert len(d.episode_returns()) == 50
    np.testing.assert_allclose(
        d.episode_returns().sum(), raw_rewards[~raw_timeouts].sum(), rtol=1e-5
    )
    # the reference scores come from D4RL's door constants
    assert d.info.ref_score_source == "D4RL constants (door)"
    assert (d.info.ref_min_score, d.info.ref_max_score) == (-56.512833, 2880.5693087298737)


def test_d4rl_hdf5_missing_key_is_named(tmp_path):
    path = tmp_path / "broken.hdf5"
    write_d4rl(path, terminals=[9], drop=("rewards",))
    with pytest.raises(DatasetFormatError, match="missing key\\(s\\) rewards"):
        load_dataset(str(path))


def test_corrupt_hdf5_file(tmp_path):
    path = tmp_path / "corrupt.hdf5"
    path.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(DatasetFormatError, match="not a readable HDF5 file"):
        load_dataset(str(path))


def test_hdf5_fields_of_different_lengths(tmp_path):
    path = tmp_path / "ragged.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((5, 2))
        f["actions"] = np.zeros((5, 1))
        f["rewards"] = np.zeros(4)
        f["terminals"] = np.zeros(5, bool)
    with pytest.raises(DatasetFormatError, match="different lengths"):
        load_dataset(str(path))


def test_flat_cache_is_used_and_invalidated_when_the_data_changes(minari_dir, monkeypatch):
    import os

    from common.datasets import minari_store

    create_minari("test/pend/cached-v0", [(4, True, False), (3, False, True)], (0.0, 1.0))
    first = load_dataset("test/pend/cached-v0")
    assert (minari_dir / "test/pend/cached-v0" / minari_store.FLAT_CACHE).exists()

    def no_episode_reads(*args):
        raise AssertionError("episodes were read although the cache is valid")

    monkeypatch.setattr(minari_store, "flatten_episodes", no_episode_reads)
    second = load_dataset("test/pend/cached-v0")
    for field in ("observations", "actions", "rewards", "next_observations", "terminals",
                  "timeouts"):  # fmt: skip
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    data_file = next((minari_dir / "test/pend/cached-v0/data").glob("*.hdf5"))
    os.utime(data_file, ns=(1, 1))  # the data changed: the cache no longer matches
    with pytest.raises(DatasetFormatError, match="episodes were read"):
        load_dataset("test/pend/cached-v0")


@pytest.mark.parametrize("d4rl_name, minari_id, offlax_id, family", [
    ("hopper-medium-v2", "mujoco/hopper/medium-v0", "offlax/hopper/medium-v1", "hopper"),
    ("halfcheetah-medium-replay-v2", None, "offlax/halfcheetah/medium-replay-v1", "halfcheetah"),
    ("ant-expert-v2", "mujoco/ant/expert-v0", None, "ant"),
    ("antmaze-umaze-diverse-v2", "D4RL/antmaze/umaze-diverse-v1", None, "antmaze"),
    ("door-human-v1", "D4RL/door/human-v2", None, "door"),
    ("kitchen-mixed-v0", "D4RL/kitchen/mixed-v2", None, "kitchen"),
    ("maze2d-large-dense-v1", "D4RL/pointmaze/large-dense-v2", None, "maze2d-large-dense"),
])  # fmt: skip
def test_d4rl_name_table(d4rl_name, minari_id, offlax_id, family):
    from common.datasets.d4rl_names import D4RL_NAMES, D4RL_REFERENCE_SCORES, reference_family

    entry = D4RL_NAMES[d4rl_name]
    assert (entry.minari_id, entry.offlax_id, entry.family) == (minari_id, offlax_id, family)
    assert family in D4RL_REFERENCE_SCORES
    if minari_id:
        assert reference_family(minari_id) == family
