import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

# One persistent XLA compilation cache for the session, shared with the runs the tests start as
# subprocesses: the same small networks are compiled once, not in every test (as for users,
# common.cli.enable_compilation_cache; JAX reads the variable when it is imported).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="offlax-xla-cache-")
    # removed when the session ends (each session left hundreds of MB in /tmp before)
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
from common.cli import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.fixture(scope="module")
def generated_datasets(tmp_path_factory):
    """One private Minari directory per test module, where offlax datasets are built on first
    use; training progress bars off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        patch.setenv("TQDM_DISABLE", "1")
        yield


@pytest.fixture
def minari_dir(tmp_path, monkeypatch):
    """An empty, private local Minari directory for one test."""
    path = tmp_path / "minari"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def make_episode_buffers(specs, obs_dim=3, action_dim=2, seed=0):
    """Minari EpisodeBuffers from (length, terminated, truncated) triples; values are known:
    reward of step t of episode e is e + t / 100, observations count up."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rng = np.random.default_rng(seed)
    buffers = []
    for e, (length, terminated, truncated) in enumerate(specs):
        obs = (np.arange((length + 1) * obs_dim, dtype=np.float32).reshape(length + 1, obs_dim)
               + 1000 * e)  # fmt: skip
        terminations = [False] * length
        truncations = [False] * length
        terminations[-1], truncations[-1] = terminated, truncated
        buffers.append(
            EpisodeBuffer(
                id=e,
                observations=obs,
                actions=rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
                rewards=[e + t / 100 for t in range(length)],
                terminations=terminations,
                truncations=truncations,
                infos={},
            )
        )
    return buffers


def create_minari(dataset_id, specs, ref_scores=None, env="Pendulum-v1", obs_dim=3, action_dim=1):
    import gymnasium as gym
    import minari

    kwargs = {}
    if ref_scores is not None:
        kwargs = {"ref_min_score": ref_scores[0], "ref_max_score": ref_scores[1]}
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=make_episode_buffers(specs, obs_dim, action_dim),
        env=env,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        action_space=gym.spaces.Box(-1, 1, (action_dim,), np.float32),
        algorithm_name="test",
        data_format="hdf5",
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch):
    """Tests never reach the internet: any connection off this machine fails at once."""
    import socket

    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"tests do not reach the network ({host})")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    os.environ.pop("HF_HUB_OFFLINE", None)
