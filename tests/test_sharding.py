"""Seeds across devices and hosts (common/sharding.py): on 2 forced CPU devices, or in 2
processes joined by jax.distributed, a `--num-seeds 2` run puts one seed on each, and equals the
run on one device seed by seed: the same evaluation returns, and the same parameters up to float
rounding."""

import json
import os
import socket
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from flax import serialization

pytestmark = pytest.mark.usefixtures("generated_datasets")

DATASET = "offlax/invertedpendulum/medium-replay-v1"


def command(name: str, output_dir, num_seeds: int = 2, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "algorithms" / f"{name}.py"), "--env", DATASET,
            "--num-seeds", str(num_seeds), "--total-updates", "200", "--eval-interval", "100",
            "--eval-episodes", "2", "--batch-size", "64", "--hidden-dims", "32", "32",
            "--output-dir", str(output_dir), *extra]


def run(name: str, output_dir, devices: int, num_seeds: int = 2):
    """One run of algorithms/<name>.py in a process that sees `devices` CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run(command(name, output_dir, num_seeds), env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return outputs(output_dir) + (result.stderr,)


def outputs(output_dir):
    results = json.loads((output_dir / "results.json").read_text())
    policy = serialization.msgpack_restore((output_dir / "policy.msgpack").read_bytes())
    return results, policy


@pytest.mark.parametrize("name", ["td3_bc", "iql"])
def test_sharded_run_equals_unsharded_seed_by_seed(name, tmp_path):
    one, one_policy, _ = run(name, tmp_path / "one", devices=1)
    two, two_policy, _ = run(name, tmp_path / "two", devices=2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert_same_seed_by_seed(one, one_policy, two, two_policy)


def assert_same_seed_by_seed(one, one_policy, two, two_policy):
    for a, b in zip(one["evaluations"], two["evaluations"], strict=True):
        assert a["update"] == b["update"]
        np.testing.assert_array_equal(a["episode_returns"], b["episode_returns"])
    # the parameters, up to the float rounding of a matmul batched over 2 seeds or over 1 (as
    # test_algorithms.py's --num-seeds 3 against single runs): 3e-8 after 200 updates on an AMD
    # EPYC. Runs stay short because the rounding does not stay small: there, between updates 200
    # and 300 one ulp flips a discrete choice (a ReLU or clip at its edge) and the parameters
    # jump apart by 5e-4, where a real difference (a key, a seed, a batch) shows at update 1.
    for a, b in zip(jax_leaves(one_policy), jax_leaves(two_policy), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_two_processes_equal_one_seed_by_seed(tmp_path):
    """Two processes joined by jax.distributed (gloo on CPU), one seed each: process 0 writes
    the run, process 1 writes nothing, and the run equals the one-process run; then a
    two-process --resume from the run's first checkpoint ends the same."""
    one, one_policy, _ = run("td3_bc", tmp_path / "one", devices=1)  # also builds the dataset
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    output_dir = tmp_path / "two_processes"
    stdout = run_two_processes(command("td3_bc", output_dir))
    assert "output:" in stdout[0] and "output:" not in stdout[1]  # process 0's summary only
    two, two_policy = outputs(output_dir)
    assert two["devices"] == 2 and two["processes"] == 2 and two["status"] == "finished"
    assert len(list(output_dir.glob("events.out.tfevents.*"))) == 1
    assert_same_seed_by_seed(one, one_policy, two, two_policy)

    # the run as if stopped after its first evaluation, resumed by two processes again
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(output_dir, resumed_dir)
    (resumed_dir / "checkpoints" / "checkpoint_000000200.msgpack").unlink()
    (resumed_dir / "policy.msgpack").unlink()
    results = json.loads((resumed_dir / "results.json").read_text())
    results["status"] = "interrupted"
    (resumed_dir / "results.json").write_text(json.dumps(results))
    run_two_processes([*command("td3_bc", resumed_dir)[:-2], "--resume", str(resumed_dir)])
    resumed, resumed_policy = outputs(resumed_dir)
    assert resumed["resumed"][0]["update"] == 100
    assert_same_seed_by_seed(one, one_policy, resumed, resumed_policy)


def run_two_processes(command: list[str]) -> list[str]:
    """`command` in two processes joined through a coordinator on localhost: their stdouts."""
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
    processes = [subprocess.Popen(command, env={**env, "JAX_PROCESS_ID": str(i)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    finished = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, finished):
        assert p.returncode == 0, stderr
    return [stdout for stdout, _ in finished]


def test_seeds_that_do_not_divide_the_devices_say_so(tmp_path):
    results, _, stderr = run("bc", tmp_path / "three", devices=2, num_seeds=3)
    assert results["devices"] == 1
    assert "--num-seeds 3 splits evenly over 1 of the 2 devices" in stderr


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize("value, num_seeds, says", [
    ("two", 2, "JAX_NUM_PROCESSES='two' is not a positive whole number"),
    ("2", 3, "--num-seeds 3 does not split over JAX_NUM_PROCESSES=2 processes"),
    ("2", None, "this command runs in one process only"),
])
def test_processes_that_cannot_be_joined_are_refused_before_joining(value, num_seeds, says,
                                                                    monkeypatch):
    from common.errors import ConfigError
    from common.sharding import join_hosts

    monkeypatch.setenv("JAX_NUM_PROCESSES", value)
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        join_hosts(num_seeds)


def test_one_process_is_not_joined(monkeypatch):
    """JAX_NUM_PROCESSES unset or 1: no coordinator, nothing initialised."""
    import jax

    from common.sharding import join_hosts, writes

    for value in ("", "1"):
        monkeypatch.setenv("JAX_NUM_PROCESSES", value)
        join_hosts(2)
        assert writes() and not jax.distributed.is_initialized()
