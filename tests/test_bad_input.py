"""Every bad-input path of the data layer fails fast with a message that says what to do."""

import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, create_minari

from common.datasets import (
    DatasetFormatError,
    DatasetUnavailableError,
    UnknownDatasetError,
    load_dataset,
)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownDatasetError) as error:
        load_dataset("hoper-medium-v2")
    assert "Did you mean" in str(error.value) and "hopper-medium-v2" in str(error.value)


def test_unknown_offlax_dataset_lists_close_matches():
    with pytest.raises(UnknownDatasetError) as error:
        load_dataset("offlax/invertedpendulum/meduim-v1")
    assert "offlax/invertedpendulum/medium-v1" in str(error.value)


def test_d4rl_name_without_minari_successor_points_to_the_offlax_equivalent():
    with pytest.raises(DatasetUnavailableError, match="offlax/walker2d/medium-replay-v1"):
        load_dataset("walker2d-medium-replay-v2")


def test_remote_minari_id_offline_fails_fast_with_hf_hub_offline(minari_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("D4RL/door/human-v2")
    assert time.time() - start < 5
    message = str(error.value)
    assert "HF_HUB_OFFLINE is set" in message and "Connect to the internet" in message
    assert "generate a local dataset" in message


def test_d4rl_name_offline_suggests_the_offlax_equivalent(minari_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("hopper-medium-v2")
    assert "mujoco/hopper/medium-v0" in str(error.value)
    assert "offlax/hopper/medium-v1" in str(error.value)


def test_remote_minari_id_with_unreachable_hub_fails_fast(minari_dir, monkeypatch):
    # A real connection attempt, to a closed port on this machine: refused at once.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.time()
    with pytest.raises(DatasetUnavailableError, match="no connection to 127.0.0.1:9"):
        load_dataset("mujoco/pusher/expert-v0")
    assert time.time() - start < 5


def test_hanging_hub_is_cut_by_the_probe_timeout(minari_dir, monkeypatch):
    # A listening socket that never accepts: the probe must time out, not hang.
    import socket

    from common.datasets import minari_store

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:  # fill the accept backlog so that further connects hang
        for _ in range(64):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(server.getsockname())
            fillers.append(s)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setattr(minari_store, "DOWNLOAD_TIMEOUT_S", 1.0)
        start = time.time()
        try:
            load_dataset("mujoco/pusher/expert-v0")
        except DatasetUnavailableError:
            pass
        except Exception as error:  # the hub answered garbage: still not a hang
            assert "pusher" in str(error)
        assert time.time() - start < 5
    finally:
        for s in fillers:
            s.close()
        server.close()


def test_missing_download_extra_says_how_to_install_it(minari_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(DatasetUnavailableError, match=r"pip install 'offlax\[download\]'"):
        load_dataset("D4RL/antmaze/umaze-v1")


def test_broken_local_minari_dataset(minari_dir):
    create_minari("test/pend/broken-v0", [(3, True, False)])
    (minari_dir / "test/pend/broken-v0/data/main_data.hdf5").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="minari delete test/pend/broken-v0"):
        load_dataset("test/pend/broken-v0")


def test_missing_hdf5_path_is_reported(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset(str(tmp_path / "nothing-here.hdf5"))


def test_normalized_score_without_reference_scores_says_how_to_fix(tmp_path):
    import h5py

    path = tmp_path / "custom.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"], f["actions"] = np.zeros((3, 2)), np.zeros((3, 1))
        f["rewards"], f["terminals"] = np.ones(3), np.array([0, 0, 1], bool)
    from common.datasets import DatasetError, normalized_score

    d = load_dataset(str(path))
    with pytest.raises(DatasetError, match="no reference scores"):
        normalized_score(1.0, d.info)


def test_cli_prints_one_paragraph_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "common.datasets", "no-such-dataset-v9"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout.startswith("error: Unknown dataset 'no-such-dataset-v9'")
    assert "Traceback" not in result.stdout + result.stderr
