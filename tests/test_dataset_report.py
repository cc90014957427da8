"""TQ and SACo of the dataset report against hand-computed values."""

import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from dataset_report import discretise, trajectory_quality, unique_pairs  # noqa: E402


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
