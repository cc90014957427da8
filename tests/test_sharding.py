"""Seeds across devices (common/sharding.py): on 2 forced CPU devices a `--num-seeds 2` run puts
one seed on each, and equals the run on one device seed by seed: the same evaluation returns,
and the same parameters up to float rounding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from flax import serialization

pytestmark = pytest.mark.usefixtures("generated_datasets")

DATASET = "offlax/invertedpendulum/medium-replay-v1"


def run(name: str, output_dir, devices: int, num_seeds: int = 2):
    """One run of algorithms/<name>.py in a process that sees `devices` CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, str(ROOT / "algorithms" / f"{name}.py"), "--env", DATASET,
               "--num-seeds", str(num_seeds), "--total-updates", "400", "--eval-interval", "200",
               "--eval-episodes", "2", "--batch-size", "64", "--hidden-dims", "32", "32",
               "--output-dir", str(output_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((output_dir / "results.json").read_text())
    policy = serialization.msgpack_restore((output_dir / "policy.msgpack").read_bytes())
    return results, policy, result.stderr


@pytest.mark.parametrize("name", ["td3_bc", "iql"])
def test_sharded_run_equals_unsharded_seed_by_seed(name, tmp_path):
    one, one_policy, _ = run(name, tmp_path / "one", devices=1)
    two, two_policy, _ = run(name, tmp_path / "two", devices=2)
    assert one["devices"] == 1 and two["devices"] == 2
    for a, b in zip(one["evaluations"], two["evaluations"], strict=True):
        assert a["update"] == b["update"]
        np.testing.assert_array_equal(a["episode_returns"], b["episode_returns"])
    # the parameters, up to the float rounding of a matmul batched over 2 seeds or over 1 (as
    # test_algorithms.py's --num-seeds 3 against single runs): 1e-8 here after 400 updates
    for a, b in zip(jax_leaves(one_policy), jax_leaves(two_policy), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_seeds_that_do_not_divide_the_devices_say_so(tmp_path):
    results, _, stderr = run("bc", tmp_path / "three", devices=2, num_seeds=3)
    assert results["devices"] == 1
    assert "--num-seeds 3 splits evenly over 1 of the 2 devices" in stderr


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)
