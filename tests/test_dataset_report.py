"""TQ and SACo of the dataset report against hand-computed values."""

import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from dataset_report import discretise, pair_cells, trajectory_quality, unique_pairs  # noqa: E402


def test_trajectory_quality_hand_values():
    assert trajectory_quality(50.0, random_return=0.0, expert_return=200.0) == 0.25
    assert trajectory_quality(-20.0, random_return=-20.0, expert_return=180.0) == 0.0


def test_saco_counts_unique_grid_cells():
    # 1-d state, 1-d action, mean 0, std 1, bin width 0.5: cells are floor(x / 0.5)
    obs = np.array([[0.1], [0.2], [0.6], [-0.1], [0.1]])
    act = np.array([[0.0], [0.4], [0.0], [0.0], [0.7]])
    cells = discretise(obs, act, mean=np.zeros(2), std=np.ones(2), bin_width=0.5)
    # (0,0), (0,0), (1,0), (-1,0), (0,1) -> 4 unique cells
    assert len(unique_pairs(cells)) == 4


def test_saco_counts_image_pairs_exactly_and_discrete_actions_as_their_own_cells():
    """MinAtar-style uint8 frames are compared byte for byte (one pixel apart = two pairs), and
    a discrete action is its own cell even where the states' bins would merge the rows."""
    frames = np.zeros((5, 12), np.uint8)
    frames[1, 3] = 1  # one pixel differs from row 0
    frames[3] = frames[1]  # a repeat of row 1
    actions = np.array([[0], [0], [1], [0], [2]], np.uint8)
    pairs = np.concatenate([frames, actions], axis=1)
    cells = pair_cells(pairs, 12, discrete=True, images=True, bin_width=0.5)
    # (0-frame, 0), (pixel, 0), (0-frame, 1), (pixel, 0) again, (0-frame, 2)
    assert len(unique_pairs(cells(pairs))) == 4
    # mean 0.76, std 1.29, bins 0.65 wide: the first three states share a bin, the last not
    states = np.array([[0.0], [0.05], [0.0], [3.0]])
    vector = np.concatenate([states, [[0], [1], [1], [2]]], axis=1)
    cells = pair_cells(vector, 1, discrete=True, images=False, bin_width=0.5)
    assert len(unique_pairs(cells(vector))) == 3
