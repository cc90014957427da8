"""The same generated dataset on every machine: portable policy arithmetic, fingerprints, and
the committed reference fingerprints (common/datasets/fingerprints.json)."""

import json
import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT

from common.datasets import DatasetWarning, UnknownDatasetError, fingerprint, load_dataset
from common.datasets import generated, portable_math

# --------------------------------------------------------------------------------------------
# portable_math


def test_portable_functions_agree_with_numpy_to_a_few_ulps():
    rng = np.random.default_rng(0)
    x = rng.uniform(-40.0, 5.0, 100_000)
    for ours, numpy_f in ((portable_math.exp, np.exp), (portable_math.expm1, np.expm1),
                          (portable_math.tanh, np.tanh)):  # fmt: skip
        np.testing.assert_allclose(ours(x), numpy_f(x), rtol=1e-15, atol=0)
    tiny = rng.uniform(-1e-6, 1e-6, 1000)  # expm1 and tanh keep their accuracy near 0
    np.testing.assert_allclose(portable_math.tanh(tiny), np.tanh(tiny), rtol=1e-15, atol=0)
    positive = np.concatenate([rng.uniform(1e-12, 1.0, 50_000), rng.uniform(1.0, 1e6, 50_000)])
    np.testing.assert_allclose(portable_math.log(positive), np.log(positive), rtol=1e-15, atol=0)
    assert portable_math.tanh(np.array([30.0, -30.0])).tolist() == [1.0, -1.0]


def test_portable_dense_is_a_matmul():
    rng = np.random.default_rng(1)
    for n in (1, 11, 17, 128):  # padded to a power of two where needed
        x = rng.normal(size=(5, n)).astype(np.float32)
        kernel = rng.normal(size=(n, 7)).astype(np.float16)
        bias = rng.normal(size=7).astype(np.float16)
        expected = x.astype(np.float64) @ kernel.astype(np.float64) + bias
        np.testing.assert_allclose(portable_math.dense(x, kernel, bias), expected, rtol=1e-13,
                                   atol=1e-13)  # fmt: skip


def test_portable_normal_samples_are_standard_normal():
    z = portable_math.standard_normal(np.random.default_rng(2), (200_000,))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.003  # the tails too
    again = portable_math.standard_normal(np.random.default_rng(2), (200_000,))
    np.testing.assert_array_equal(z, again)


# Hashes of the hopper and MinAtar policies' actions on fixed observations, in a fresh process.
ACTION_HASH = """
import hashlib, numpy as np, gymnasium as gym
from common.datasets import policies
space = gym.make("Hopper-v5").action_space
behaviour = policies.load_policies("hopper")
rng = np.random.default_rng(0)
obs = (rng.normal(size=(512, 11)) * 3).astype(np.float32)
digest = hashlib.sha256()
for name in ("medium", "expert", "random"):
    policy = policies.make_policy(behaviour, name, space)
    for deterministic in (False, True):
        digest.update(policy(obs, rng, deterministic).tobytes())
# MinAtar's DQN: the convolution on 10x10x6 frames, then its Q-values and epsilon-greedy actions
minatar = policies.load_policies("minatar-spaceinvaders")
frames = (rng.random((256, 10, 10, 6)) < 0.15).astype(np.float32)
policy = policies.make_policy(minatar, "expert", gym.spaces.Discrete(4), epsilon=0.2)
digest.update(policy.q_values(frames).tobytes())
digest.update(policy(frames, rng).tobytes())
print(digest.hexdigest())
"""


def _machine_conditions() -> dict[str, dict]:
    """Settings that change which code a CPU runs, as far as they can be changed on one machine:
    OpenBLAS's kernel, numpy's SIMD dispatch, thread counts, and glibc's libm variant."""
    conditions = {
        "default": {},
        "openblas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
        "openblas-prescott": {"OPENBLAS_CORETYPE": "Prescott"},
        "two-threads": {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
        "one-thread": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    }
    if platform.machine() == "x86_64":
        import numpy._core._multiarray_umath as umath

        if umath.__cpu_features__.get("X86_V3"):  # AVX2 + FMA dispatch: turn it off
            conditions["numpy-without-avx2"] = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"}
        if platform.libc_ver()[0] == "glibc":  # libm's SSE2 variants instead of FMA / AVX2
            conditions["libm-without-fma"] = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA"}
    return conditions


def test_policy_actions_are_bit_identical_whatever_the_cpu_features():
    hashes = {}
    for name, variables in _machine_conditions().items():
        env = {**os.environ, **variables}
        for variable in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "GLIBC_TUNABLES"):
            if variable not in variables:
                env.pop(variable, None)
        done = subprocess.run([sys.executable, "-c", ACTION_HASH], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        hashes[name] = done.stdout.strip()
    assert len(set(hashes.values())) == 1, hashes


# --------------------------------------------------------------------------------------------
# Fingerprints of generated datasets


# MuJoCo's and MinAtar's (images, integer actions, epsilon-greedy DQN in portable math)
REFERENCE_TEST_IDS = ("offlax/invertedpendulum/medium-replay-v1", "offlax/hopper/medium-5000-v1",
                      "offlax/minatar-spaceinvaders/imperfect-1000-v1")


@pytest.mark.parametrize("dataset_id", REFERENCE_TEST_IDS)
def test_a_small_build_has_the_reference_fingerprint(dataset_id, minari_dir):
    """Built here from the committed policies, the data equals the reference build byte for byte.
    This is the test that catches a change that makes the generator machine-dependent."""
    reference = generated.reference_fingerprints()["datasets"][dataset_id]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # a mismatch would warn
        dataset = load_dataset(dataset_id)
    assert (dataset.size, len(dataset.episode_returns())) == (
        reference["transitions"], reference["episodes"])  # fmt: skip
    assert dataset.info.fingerprint == reference["fingerprint"]
    assert dataset.info.metadata["offlax_build"]["fingerprint"] == reference["fingerprint"]


def test_every_offlax_id_has_a_reference_fingerprint():
    table = generated.reference_fingerprints()
    assert set(generated.offlax_ids()) <= set(table["datasets"])
    assert {"versions", "platform"} <= set(table["built_with"])
    assert set(table["built_with"]["versions"]) == set(generated.DATA_LIBRARIES)


def test_pyproject_admits_exactly_the_reference_build_versions():
    """The simulators and their environments decide the bytes, so pyproject.toml pins them to
    the reference build's versions (MinAtar in its extra); numpy is bounded to the major version
    it was built with."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {r.name: r for r in map(Requirement, project["dependencies"])}
    requirements["minatar"] = Requirement(*project["optional-dependencies"]["minatar"])
    for package, version in generated.reference_fingerprints()["built_with"]["versions"].items():
        specifier = requirements[package].specifier
        assert specifier.contains(version), (package, version, specifier)
        if package in ("mujoco", "minatar", "gymnasium"):
            assert str(specifier) == f"=={version}", (package, specifier)


def test_fingerprint_covers_every_field_and_its_layout():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in ((6, 2), (6, 1), 6, (6, 2))]
    arrays += [np.zeros(6, bool), np.eye(6, dtype=bool)[-1]]
    base = fingerprint(arrays)
    assert len(base) == 16 and base == fingerprint([a.copy() for a in arrays])
    for i in range(6):
        changed = [a.copy() for a in arrays]
        flat = changed[i].reshape(-1)
        flat[0] = ~flat[0] if flat.dtype == bool else flat[0] + 1  # one value of one field
        assert fingerprint(changed) != base, i
    reshaped = list(arrays)
    reshaped[0] = arrays[0].reshape(2, 6)  # same bytes, another shape
    assert fingerprint(reshaped) != base


def test_a_build_that_differs_from_the_reference_warns_once(minari_dir, monkeypatch):
    table = json.loads(generated.REFERENCE_FINGERPRINTS.read_text())
    dataset_id = "offlax/invertedpendulum/expert-200-v1"
    table["datasets"][dataset_id] = {"fingerprint": "0123456789abcdef"}
    table["built_with"]["versions"]["mujoco"] = "0.0.1"
    monkeypatch.setattr(generated, "reference_fingerprints", lambda: table)
    monkeypatch.setattr(generated, "_warned", set())
    with pytest.warns(DatasetWarning) as caught:
        first = load_dataset(dataset_id)
        load_dataset(dataset_id)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 1, messages
    assert first.info.fingerprint in messages[0] and "0123456789abcdef" in messages[0]
    assert "mujoco" in messages[0] and "0.0.1" in messages[0]  # names the likely cause


def test_a_dataset_changed_after_its_build_warns(minari_dir, monkeypatch):
    import minari

    dataset_id = "offlax/invertedpendulum/expert-100-v1"
    load_dataset(dataset_id)
    storage = minari.load_dataset(dataset_id).storage
    build = dict(storage.metadata["offlax_build"], fingerprint="fedcba9876543210")
    storage.update_metadata({"offlax_build": build})
    monkeypatch.setattr(generated, "_warned", set())
    with pytest.warns(DatasetWarning, match="changed after the build"):
        load_dataset(dataset_id)


def test_cli_prints_the_fingerprint_and_the_reference(minari_dir):
    done = subprocess.run(
        [sys.executable, "-m", "common.datasets", "offlax/hopper/medium-5000-v1"], cwd=ROOT,
        capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    reference = generated.reference_fingerprints()["datasets"]["offlax/hopper/medium-5000-v1"]
    assert f"fingerprint {reference['fingerprint']} (equals the reference build)" in done.stdout


def test_a_v0_id_says_what_replaced_it():
    with pytest.raises(UnknownDatasetError, match=r"use 'offlax/hopper/medium-v1'"):
        load_dataset("offlax/hopper/medium-v0")
