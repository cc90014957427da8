"""End to end: SAC behaviour policies -> export -> offlax datasets in Minari -> load_dataset."""

import json
import sys

import minari
import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from common.datasets import generated, policies  # noqa: E402
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


def test_a_build_that_fails_while_writing_leaves_nothing(use_tiny_policies, minari_dir,
                                                       monkeypatch):
    """An error inside the Minari write (after Minari made the directory) removes the partial
    dataset, so the next use builds it again instead of finding a broken one."""
    dataset_id = "offlax/tinyip/random-100-v1"
    real_write = generated.write_minari

    def write_then_fail(*args, **kwargs):
        real_write(*args, **kwargs)
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(generated, "write_minari", write_then_fail)
    with pytest.raises(RuntimeError, match="disk trouble"):
        load_dataset(dataset_id)
    assert not generated.dataset_directory(dataset_id).exists()
    monkeypatch.setattr(generated, "write_minari", real_write)
    assert load_dataset(dataset_id).size == 100


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
    recorded = json.loads(timings.read_text())
    assert recorded["offlax/invertedpendulum/expert-400-v1"] > 0
    # run again: the datasets exist, so their recorded build times stay
    generate_datasets.main(generate_datasets.Args(
        envs=("invertedpendulum",), levels=("expert",), size=400, workers=1,
        timings=str(timings)))
    again = json.loads(timings.read_text())
    assert again["offlax/invertedpendulum/expert-400-v1"] == recorded[
        "offlax/invertedpendulum/expert-400-v1"]


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


# --------------------------------------------------------------------------------------------
# Discrete tasks: Double DQN behaviour policies -> export -> offlax datasets with integer actions


@pytest.fixture(scope="module")
def cartpole_dqn(tmp_path_factory):
    """A CI-sized Double DQN run on CartPole (20k steps, ~20 s), split over two runs."""
    import dqn

    run_dir = tmp_path_factory.mktemp("dqn")
    args = dqn.Args(
        env="CartPole-v1", total_steps=20_000, learning_starts=1_000, exploration_steps=8_000,
        train_frequency=4, target_update_interval=400, snapshot_interval=2_000, eval_episodes=3,
        checkpoint_interval=100_000, stop_after=9_000, run_dir=str(run_dir),
    )  # fmt: skip
    dqn.main(args)
    with np.load(run_dir / "checkpoint.npz") as checkpoint:
        assert checkpoint["meta"][0] == 9_000  # stopped on purpose, checkpointed
    args.stop_after = None
    dqn.main(args)  # resumes from step 9000
    return run_dir


def test_dqn_learns_cartpole(cartpole_dqn):
    curve = np.loadtxt(cartpole_dqn / "curve.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(curve[:, 0], np.arange(2_000, 20_001, 2_000))
    # a uniformly random policy averages about 21 steps, the untrained greedy one about 9
    assert curve[0, 1] < 30 and curve[:, 1].max() >= 100, curve[:, 1]


def test_dqn_policy_acts_the_same_in_portable_math(cartpole_dqn):
    """The exported Q-network in float64 portable math gives the trained network's Q-values,
    for the MLP and for MinAtar's convolution."""
    import jax
    import jax.numpy as jnp
    from dqn import QNetwork
    from online import flat_params

    rng = np.random.default_rng(0)
    for shape, hidden in (((4,), (16, 8)), ((10, 10, 4), (32,))):
        network = QNetwork(3, hidden, 8)
        params = network.init(jax.random.PRNGKey(1), jnp.zeros((1, *shape)))
        obs = (rng.random((5, *shape)) > 0.6).astype(np.float32) if len(shape) == 3 else \
            rng.normal(size=(5, *shape)).astype(np.float32)
        q = np.asarray(network.apply(params, obs))
        policy = policies.EpsilonGreedyQPolicy(flat_params(params), 3)
        np.testing.assert_allclose(policy.q_values(obs), q, atol=1e-5)
        np.testing.assert_array_equal(policy(obs, rng, deterministic=True), q.argmax(1))


@pytest.fixture
def use_tiny_dqn_policies(cartpole_dqn, tmp_path, monkeypatch):
    import export_policies

    export_policies.main(export_policies.Args(
        env_key="tiny-cp", run_dir=str(cartpole_dqn), ref_episodes=4, select_episodes=2,
        output=str(tmp_path / "tiny-cp.npz"),
    ))  # fmt: skip
    monkeypatch.setattr(policies, "POLICY_DIR", tmp_path)
    policies.load_policies.cache_clear()
    yield policies.load_policies("tiny-cp")
    policies.load_policies.cache_clear()


def test_discrete_suite_generates_and_loads_by_name(use_tiny_dqn_policies, minari_dir):
    from common.datasets import generated

    meta = use_tiny_dqn_policies.meta
    assert meta["action_space"] == "discrete" and meta["epsilons"]["imperfect"] == 0.2
    # medium-replay: uniform actions while the buffer filled, then each snapshot with the mean
    # epsilon of its stretch of training (falling from 1 towards the final 0.05)
    schedule = meta["replay_schedule"]
    assert schedule[0][0] == "random" and schedule[0][1] >= 1_000  # up to the first snapshot
    assert sum(stretch[1] for stretch in schedule) == meta["medium_step"]
    epsilons = [stretch[2] for stretch in schedule[1:]]
    assert all(1.0 >= a >= b >= 0.05 for a, b in zip(epsilons, epsilons[1:]))
    assert "offlax/tiny-cp/imperfect-v1" in generated.offlax_ids()

    d = load_dataset("offlax/tiny-cp/medium-replay-300-v1")  # built on first use
    assert d.discrete and d.actions.dtype == np.int64 and d.actions.shape == (300,)
    assert set(np.unique(d.actions)) <= {0, 1}
    assert d.observations.shape == (300, 4) and d.info.env_id == "CartPole-v1"
    assert (d.info.ref_min_score, d.info.ref_max_score) == (
        meta["ref_min_score"], meta["ref_max_score"])  # fmt: skip
    assert d.terminals.sum() > 0  # the pole falls: true terminals
    ds = minari.load_dataset("offlax/tiny-cp/medium-replay-300-v1")
    assert type(ds.spec.action_space).__name__ == "Discrete"

    # imperfect = the expert acting with epsilon 0.2: mostly, not only, the greedy action
    imperfect = load_dataset("offlax/tiny-cp/imperfect-400-v1")
    expert = policies.make_policy(use_tiny_dqn_policies, "expert",
                                  __import__("gymnasium").spaces.Discrete(2))
    greedy = expert(imperfect.observations, None, deterministic=True)
    agreement = (greedy == imperfect.actions).mean()
    assert 0.8 < agreement < 0.97  # 0.8 + 0.2 / 2 = 0.9 expected
    with pytest.raises(Exception, match="imperfect"):  # a continuous task has no such level
        load_dataset("offlax/invertedpendulum/imperfect-100-v1")


def test_a_resume_after_a_kill_keeps_each_curve_step_once_and_its_clock(tmp_path):
    """Killed after snapshot 300 but with its last checkpoint at 200: the resumed run evaluates
    300 again, so the curve keeps only the rows up to the checkpoint; its wall seconds go on
    from the checkpoint's rather than from zero."""
    import time

    from online import OnlineRun, ReplayBuffer

    import sac

    args = sac.Args(run_dir=str(tmp_path))
    run = OnlineRun(args.run_dir, args)
    buffer, rng = ReplayBuffer(10, (3,), (1,)), np.random.default_rng(0)
    state = {"w": np.zeros(2, np.float32)}
    for step in (100, 200):
        run.snapshot(step, {"layer/kernel": np.zeros(1)}, float(step), 1)
    run.start = time.time() - 1000.0  # 1000 s of training so far
    run.save(state, buffer, rng, 200, 1)
    run.snapshot(300, {"layer/kernel": np.zeros(1)}, 300.0, 1)  # then killed
    resumed = OnlineRun(args.run_dir, args)
    _, step, _ = resumed.resume(state, buffer, rng)
    assert step == 200
    assert [line.split(",")[0] for line in run.curve.read_text().split()[1:]] == ["100", "200"]
    resumed.snapshot(300, {"layer/kernel": np.zeros(1)}, 300.0, 1)
    wall_seconds = float(run.curve.read_text().split()[-1].split(",")[3])
    assert 1000.0 <= wall_seconds < 1100.0
