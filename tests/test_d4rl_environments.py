"""A real D4RL file, end to end: the table from D4RL names to Gymnasium environments, the
environments that reproduce D4RL's Adroit rewards, and door-human-v0 trained and evaluated in
its environment by every continuous-action file."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT, SHARED

from common.datasets import load_dataset
from common.datasets.d4rl_names import D4RL_ENVIRONMENTS, D4RL_REFERENCE_SCORES, D4RL_UNMAPPED
from common.environments import make

DOOR_HUMAN = SHARED / "data/d4rl/door-human-v0.hdf5"
needs_door_human = pytest.mark.skipif(not DOOR_HUMAN.exists(),
                                      reason=f"{DOOR_HUMAN} is not present")
try:
    import gymnasium_robotics  # noqa: F401

    ROBOTICS = True
except ImportError:
    ROBOTICS = False
needs_robotics = pytest.mark.skipif(not ROBOTICS, reason="gymnasium-robotics is not installed "
                                                         "(pip install 'offlax[robotics]')")

# D4RL's observation and action sizes and episode lengths per family (the arrays of D4RL's
# *-v2 locomotion and *-v1 Adroit files; max_episode_steps of d4rl's gym registrations).
D4RL_SHAPES = {"hopper": (11, 3, 1000), "halfcheetah": (17, 6, 1000), "walker2d": (17, 6, 1000),
               "door": (39, 28, 200), "hammer": (46, 26, 200), "pen": (45, 24, 100),
               "relocate": (39, 30, 200)}


def test_every_d4rl_family_is_mapped_or_says_why():
    assert set(D4RL_ENVIRONMENTS) | set(D4RL_UNMAPPED) == set(D4RL_REFERENCE_SCORES)
    assert not set(D4RL_ENVIRONMENTS) & set(D4RL_UNMAPPED)
    assert set(D4RL_ENVIRONMENTS) == set(D4RL_SHAPES)


@needs_robotics
@pytest.mark.parametrize("family", D4RL_SHAPES)
def test_mapped_environment_has_d4rls_shapes_and_episode_length(family):
    env = make(D4RL_ENVIRONMENTS[family])
    obs_dim, action_dim, steps = D4RL_SHAPES[family]
    assert env.observation_space.shape == (obs_dim,)
    assert env.action_space.shape == (action_dim,)
    assert env.spec.max_episode_steps == steps
    env.reset(seed=0)
    for _ in range(steps):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert truncated or terminated
    env.close()


def replayed_rewards(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of door-human-v0's recorded steps in `env_id`: each step starts from the file's
    simulator state (infos/qpos, infos/qvel; the door's position, drawn at each reset and not in
    qpos, is put back from the handle position the observation holds) and takes its action."""
    with h5py.File(DOOR_HUMAN) as f:
        observations, actions = f["observations"][()], f["actions"][()]
        rewards, qpos, qvel = f["rewards"][()], f["infos/qpos"][()], f["infos/qvel"][()]
    env = make(env_id)
    env.reset(seed=0)
    door = env.unwrapped.model.body("frame")
    replayed = []
    for t in range(len(rewards)):
        env.unwrapped.set_state(qpos[t], qvel[t])
        door.pos += observations[t][32:35] - env.unwrapped.data.site("S_handle").xpos
        env.unwrapped.set_state(qpos[t], qvel[t])
        replayed.append(env.step(actions[t])[1])
    env.close()
    return np.asarray(replayed), rewards


@needs_robotics
@needs_door_human
def test_d4rl_door_environment_reproduces_the_files_rewards():
    replayed, recorded = replayed_rewards("D4RL/AdroitHandDoor-v1")
    error = np.abs(replayed - recorded)
    # MuJoCo 4 is not D4RL's mujoco-py: tiny differences, and a few steps cross a bonus threshold
    assert np.median(error) < 1e-4 and np.quantile(error, 0.99) < 5e-3
    # Gymnasium-Robotics' own -v1 adds the palm-to-handle distance instead of subtracting it
    raw, _ = replayed_rewards("AdroitHandDoor-v1")
    assert np.median(np.abs(raw - recorded)) > 5e-3


@needs_robotics
@needs_door_human
def test_door_human_file_names_its_environment():
    dataset = load_dataset(str(DOOR_HUMAN))
    assert dataset.info.env_id == "D4RL/AdroitHandDoor-v1"
    assert load_dataset(str(DOOR_HUMAN), "AdroitHandDoor-v1").info.env_id == "AdroitHandDoor-v1"


@needs_robotics
@needs_door_human
@pytest.mark.parametrize("name", ["bc", "td3_bc", "iql", "cql"])
def test_door_human_trains_and_evaluates(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    sys.path.insert(0, str(ROOT / "algorithms"))
    module = __import__(name)
    args = module.Args(env=str(DOOR_HUMAN), total_updates=300, eval_interval=300,
                       eval_episodes=2, hidden_dims=(32, 32), output_dir=str(tmp_path / name))
    results = module.main(args)
    assert results["dataset"]["env_id"] == "D4RL/AdroitHandDoor-v1"
    returns = np.asarray(results["evaluations"][-1]["episode_returns"])
    assert returns.shape == (1, 2) and np.isfinite(returns).all()
    # D4RL-normalised with door's constants
    expected = 100 * (returns.mean() - -56.512833) / (2880.5693087298737 - -56.512833)
    np.testing.assert_allclose(results["final"]["normalized_score"], [expected], rtol=1e-5)


def run_bc(*flags):
    return subprocess.run([sys.executable, str(ROOT / "algorithms/bc.py"), *flags,
                           "--total-updates", "10", "--eval-interval", "10"],
                          capture_output=True, text=True, timeout=300)


@needs_robotics
@needs_door_human
def test_env_id_of_another_shape_is_refused(tmp_path):
    result = run_bc("--env", str(DOOR_HUMAN), "--env-id", "Hopper-v5",
                    "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "observations (39,)" in result.stderr and "'Hopper-v5' has observations (11,)" \
        in result.stderr and "--env-id" in result.stderr
    assert "Traceback" not in result.stderr


def test_unmapped_d4rl_file_says_why(tmp_path):
    path = tmp_path / "antmaze-umaze-v2.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((20, 29), np.float32)
        f["actions"] = np.zeros((20, 8), np.float32)
        f["rewards"] = np.zeros(20, np.float32)
        f["terminals"] = np.eye(20, dtype=bool)[9] | np.eye(20, dtype=bool)[19]
    result = run_bc("--env", str(path), "--batch-size", "4", "--output-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "does not name an environment" in result.stderr
    assert "D4RL/antmaze/umaze-v1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("filename, family, env_id", [
    ("hopper_medium-v2.hdf5", "hopper", "Hopper-v5"),  # D4RL's own cache names
    ("walker2d_medium_replay-v2.hdf5", "walker2d", "Walker2d-v5"),
    ("door-v0_demos_clipped.hdf5", "door", "D4RL/AdroitHandDoor-v1"),
])
def test_d4rl_cache_file_names_find_their_family(tmp_path, filename, family, env_id):
    from common.datasets.d4rl_names import D4RL_REFERENCE_SCORES
    from common.evaluation import make_env

    obs_dim, action_dim, _ = D4RL_SHAPES[family]
    path = tmp_path / filename
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((20, obs_dim), np.float32)
        f["actions"] = np.zeros((20, action_dim), np.float32)
        f["rewards"] = np.zeros(20, np.float32)
        f["terminals"] = np.eye(20, dtype=bool)[19]
    dataset = load_dataset(str(path))
    assert dataset.info.env_id == env_id
    assert (dataset.info.ref_min_score, dataset.info.ref_max_score) == D4RL_REFERENCE_SCORES[family]
    if family in ("hopper", "walker2d") or ROBOTICS:
        make_env(dataset).close()  # the shapes agree


@needs_robotics
def test_gymnasium_robotics_notice_is_replaced_by_what_offlax_does():
    """Gymnasium-Robotics 1.4.2 prints, on import, advice to install another release for the
    Adroit rewards; offlax's D4RL/ ids restore D4RL's reward, so the note says that instead."""
    code = ("from common.environments import register_d4rl_adroit; register_d4rl_adroit(); "
            "register_d4rl_adroit()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gymnasium-robotics==1.2.0" not in result.stderr
    assert result.stderr.count("D4RL/AdroitHand<Task>-v1, where offlax evaluates") == 1
