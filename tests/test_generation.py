"""End to end: SAC behaviour policies -> export -> offlax datasets in Minari -> load_dataset."""

import json
import sys

import minari
import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from common.datasets import policies  # noqa: E402
from common.datasets import load_dataset, normalized_score  # noqa: E402


@pytest.fixture(scope="module")
def tiny_policies(tmp_path_factory):
    """A few hundred SAC steps on InvertedPendulum, split over two runs, then exported."""
    import export_policies
    import sac

    run_dir = tmp_path_factory.mktemp("sac")
    args = sac.Args(
        env="InvertedPendulum-v5", total_steps=600, learning_starts=200, hidden_dims=(16, 16),
        batch_size=32, snapshot_interval=100, eval_episodes=1, checkpoint_interval=1000,
        stop_after=300, run_dir=str(run_dir),
    )  # fmt: skip
    sac.main(args)
    with np.load(run_dir / "checkpoint.npz") as checkpoint:
        assert checkpoint["meta"][0] == 300  # stopped on purpose, checkpointed
    args.stop_after = None
    sac.main(args)  # resumes from step 300
    with np.load(run_dir / "checkpoint.npz") as checkpoint:
        assert checkpoint["meta"][0] == 600
    steps = [int(line.split(",")[0]) for line in (run_dir / "curve.csv").read_text().split()[1:]]
    assert steps == [100, 200, 300, 400, 500, 600]

    policy_dir = tmp_path_factory.mktemp("policies")
    export_policies.main(export_policies.Args(
        env_key="tinyip", run_dir=str(run_dir), ref_episodes=4, select_episodes=2,
        output=str(policy_dir / "tinyip.npz"),
    ))  # fmt: skip
    return policy_dir


@pytest.fixture
def use_tiny_policies(tiny_policies, monkeypatch):
    monkeypatch.setattr(policies, "POLICY_DIR", tiny_policies)
    policies.load_policies.cache_clear()
    yield policies.load_policies("tinyip")
    policies.load_policies.cache_clear()


def test_exported_policy_file_is_complete(use_tiny_policies):
    policies = use_tiny_policies
    meta = policies.meta
    assert policies.env_id == "InvertedPendulum-v5"
    assert {"expert", "medium"} <= set(policies.params)
    # medium-replay replays training up to the medium snapshot: random warm-up, then snapshots
    schedule = meta["replay_schedule"]
    assert schedule[0] == ["random", 200]
    assert sum(steps for _, steps in schedule) == meta["medium_step"]
    assert all(name in policies.params for name, _ in schedule[1:])
    assert meta["ref_episodes"] == 4 and meta["ref_max_score"] > meta["ref_min_score"]


def test_generated_datasets_load_through_minari(use_tiny_policies, minari_dir):
    meta = use_tiny_policies.meta
    d = load_dataset("offlax/tinyip/medium-replay-300-v1")  # built on first use
    assert d.size == 300 and d.info.source == "offlax"
    assert d.info.env_id == "InvertedPendulum-v5"
    assert (d.info.ref_min_score, d.info.ref_max_score) == (
        meta["ref_min_score"], meta["ref_max_score"])  # fmt: skip
    assert d.observations.shape == (300, 4) and d.actions.shape == (300, 1)
    # InvertedPendulum terminates when the pole falls: real terminals, not timeouts
    assert d.terminals.sum() > 0
    np.testing.assert_array_equal(d.observations[1:][~d.episode_ends[:-1]],
                                  d.next_observations[:-1][~d.episode_ends[:-1]])  # fmt: skip
    # the same data through Minari's own API
    ds = minari.load_dataset("offlax/tinyip/medium-replay-300-v1")
    assert ds.total_steps == 300
    assert ds.storage.metadata["ref_max_score"] == meta["ref_max_score"]
    first = next(ds.iterate_episodes())
    np.testing.assert_array_equal(first.observations[:-1], d.observations[: len(first.rewards)])


def test_medium_expert_is_medium_then_expert(use_tiny_policies, minari_dir):
    medium = load_dataset("offlax/tinyip/medium-100-v1")
    expert = load_dataset("offlax/tinyip/expert-100-v1")
    both = load_dataset("offlax/tinyip/medium-expert-200-v1")
    np.testing.assert_array_equal(both.observations, np.concatenate([medium.observations,
                                                                     expert.observations]))
    np.testing.assert_array_equal(both.actions[100:], expert.actions)


def test_generation_is_deterministic(use_tiny_policies, tmp_path, monkeypatch):
    datasets = []
    for name in ("a", "b"):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / name))
        datasets.append(load_dataset("offlax/tinyip/random-150-v1"))
    a, b = datasets
    assert a.size == b.size == 150
    for field in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.skipif(not (policies.POLICY_DIR / "invertedpendulum.npz").exists(),
                    reason="committed InvertedPendulum policies absent")  # fmt: skip
def test_committed_invertedpendulum_expert_is_an_expert(minari_dir):
    d = load_dataset("offlax/invertedpendulum/expert-3000-v1")
    assert d.size == 3000
    returns = d.episode_returns()[:-1]  # the last episode is cut to fit the size
    assert len(returns) >= 2
    assert normalized_score(returns, d.info).min() > 90


def test_policy_file_meta_is_json(use_tiny_policies):
    json.dumps(use_tiny_policies.meta)


@pytest.mark.skipif(not (policies.POLICY_DIR / "hopper.npz").exists(),
                    reason="committed Hopper policies absent")  # fmt: skip
def test_embedded_default_builds_on_first_use(minari_dir):
    from common.datasets import DEFAULT_DATASET

    d = load_dataset(DEFAULT_DATASET)
    meta = policies.load_policies("hopper").meta
    assert d.size == sum(steps for _, steps in meta["replay_schedule"])
    assert d.info.env_id == "Hopper-v5" and d.info.source == "offlax"
    # a replay buffer up to the medium snapshot spans random to about medium returns
    scores = normalized_score(d.episode_returns(), d.info)
    medium = 100 * (meta["medium_return_selection"] - meta["ref_min_score"]) / (
        meta["ref_max_score"] - meta["ref_min_score"])  # fmt: skip
    assert scores.min() < 5 and scores.max() > 0.5 * medium


def test_generate_datasets_script_builds_a_suite(minari_dir, tmp_path):
    import generate_datasets

    timings = tmp_path / "times.json"
    generate_datasets.main(generate_datasets.Args(
        envs=("invertedpendulum",), levels=("medium", "expert", "medium-expert"), size=400,
        workers=1, timings=str(timings),
    ))  # fmt: skip
    assert set(minari.list_local_datasets()) >= {
        "offlax/invertedpendulum/medium-400-v1", "offlax/invertedpendulum/expert-400-v1",
        "offlax/invertedpendulum/medium-expert-400-v1",
    }  # fmt: skip
    both = load_dataset("offlax/invertedpendulum/medium-expert-400-v1")
    expert = load_dataset("offlax/invertedpendulum/expert-400-v1")
    assert both.size == 400
    np.testing.assert_array_equal(both.observations[200:], expert.observations[:200])
    assert "offlax/invertedpendulum/expert-400-v1" in json.loads(timings.read_text())


def test_two_processes_asking_for_a_new_dataset_at_once_both_get_it(minari_dir):
    """Runs started together on a new machine: one builds, the other waits for it and reads it."""
    import subprocess

    command = [sys.executable, "-m", "common.datasets", "offlax/invertedpendulum/expert-2000-v1"]
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert sum("Building offlax/invertedpendulum/expert-2000-v1" in o for o in outputs) == 1
    assert all("2000 transitions" in o for o in outputs)
