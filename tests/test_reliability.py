"""Checkpoints and exact resume, Ctrl-C, determinism, the divergence guard, bad input, and the
`evaluate` entry point.

Kill and Ctrl-C are real signals sent to real training processes. Networks are small and runs
short (InvertedPendulum expert data, built from the committed policies in seconds)."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import jax
import numpy as np
import pytest
from flax import serialization

from conftest import ROOT

sys.path.insert(0, str(ROOT / "algorithms"))
import bc  # noqa: E402
import bcq  # noqa: E402
import cql  # noqa: E402
import iql  # noqa: E402
import por  # noqa: E402
import td3_bc  # noqa: E402

from common.checkpoints import CheckpointError, list_checkpoints, load_checkpoint  # noqa: E402
from common.cli import parse_cli, run_main  # noqa: E402
from common.datasets import DatasetWarning, load_dataset  # noqa: E402
from common.normalization import ActionScaling  # noqa: E402
from common.training import beyond_bound, divergence, value_bound  # noqa: E402
from common.transitions import unit_actions  # noqa: E402

pytestmark = pytest.mark.usefixtures("generated_datasets")

ALGORITHMS = {"bc": bc, "td3_bc": td3_bc, "iql": iql, "cql": cql, "bcq": bcq, "por": por}
EXPERT = "offlax/invertedpendulum/expert-5000-v1"
SMALL = dict(env=EXPERT, hidden_dims=(32, 32), eval_episodes=2, batch_size=64)


SMALL_OF = {"bcq": dict(vae_hidden_dims=(32, 32)), "por": dict(actor_hidden_dims=(32, 32))}


def small_args(name, output_dir, **overrides):
    return ALGORITHMS[name].Args(**{**SMALL, **SMALL_OF.get(name, {}),
                                    "output_dir": str(output_dir), **overrides})


def cli_flags(**values):
    flags = []
    for name, value in values.items():
        flags.append("--" + name.replace("_", "-"))
        flags.extend(str(v) for v in value) if isinstance(value, tuple) else flags.append(str(value))
    return flags


def start(name, *flags, **popen):
    return subprocess.Popen([sys.executable, str(ROOT / "algorithms" / f"{name}.py"), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def finish(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def wait_for(path, process, timeout=300):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name}: {process.stdout.read()}"
        assert time.time() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def saved_params(run_dir):
    return serialization.msgpack_restore((run_dir / "policy.msgpack").read_bytes())["params"]


def tensorboard_curves(run_dir):
    """Every scalar curve as TensorBoard itself shows it (its reader drops, at a restart's
    SessionLog.START event, what the stopped process wrote at or after that step), without the
    timing curves, which differ between any two runs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if not tag.startswith("perf/")}


def assert_same_run(reference_dir, resumed_dir):
    """Bit for bit: every parameter of every seed, every score in results.json, and every
    TensorBoard curve (no step lost or shown twice at the resume)."""
    reference = json.loads((reference_dir / "results.json").read_text())
    resumed = json.loads((resumed_dir / "results.json").read_text())
    assert resumed["status"] == reference["status"] == "finished"
    assert resumed["evaluations"] == reference["evaluations"]
    assert resumed["final"] == reference["final"]
    leaves = jax.tree.leaves(saved_params(reference_dir)), jax.tree.leaves(saved_params(resumed_dir))
    assert len(leaves[0]) == len(leaves[1]) > 0
    for a, b in zip(*leaves):
        np.testing.assert_array_equal(a, b)
    assert tensorboard_curves(resumed_dir) == tensorboard_curves(reference_dir)
    return resumed


# --------------------------------------------------------------------------------------------
# Exact resume


RUN = dict(**SMALL, num_seeds=2, total_updates=8000, eval_interval=2000)


def test_sigkill_after_an_evaluation_then_resume_is_bit_exact(tmp_path):
    """IQL: its policy's cosine learning-rate schedule lives in the optimiser state, so a resume
    that lost any of the state would show in the parameters."""
    flags = cli_flags(**RUN)
    reference = start("iql", *flags, "--output-dir", str(tmp_path / "reference"))
    killed = start("iql", *flags, "--output-dir", str(tmp_path / "run"))
    wait_for(tmp_path / "run/checkpoints/checkpoint_000002000.msgpack", killed)
    killed.send_signal(signal.SIGKILL)
    assert finish(killed)[0] == -signal.SIGKILL
    partial = json.loads((tmp_path / "run/results.json").read_text())
    assert partial["status"] == "running" and partial["updates"] < 8000, "killed too late"
    assert not (tmp_path / "run/policy.msgpack").exists()

    code, output = finish(start("iql", "--resume", str(tmp_path / "run")))
    assert code == 0, output
    assert finish(reference)[0] == 0
    resumed = assert_same_run(tmp_path / "reference", tmp_path / "run")
    assert resumed["resumed"][0]["update"] >= 2000
    assert [e["update"] for e in resumed["evaluations"]] == [2000, 4000, 6000, 8000]


def test_ctrl_c_saves_a_checkpoint_and_partial_results_and_resume_is_bit_exact(tmp_path):
    """TD3+BC, stopped between evaluations: the checkpoint falls mid-interval, on the host-call
    grid, and the resumed run still makes exactly the uninterrupted run's updates."""
    flags = cli_flags(**RUN)
    reference = start("td3_bc", *flags, "--output-dir", str(tmp_path / "reference"))
    interrupted = start("td3_bc", *flags, "--output-dir", str(tmp_path / "run"))
    wait_for(tmp_path / "run/checkpoints/checkpoint_000002000.msgpack", interrupted)
    interrupted.send_signal(signal.SIGINT)
    code, output = finish(interrupted)
    assert code == 130, output
    assert "Traceback" not in output
    partial = json.loads((tmp_path / "run/results.json").read_text())
    assert partial["status"] == "interrupted", partial.get("message")
    stopped_at = partial["updates"]
    assert 2000 < stopped_at < 8000 and stopped_at % 1000 == 0  # on the host-call grid
    assert f"interrupted: stopped at update {stopped_at} of 8000" in output
    assert f"--resume {tmp_path / 'run'}" in output
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert checkpoint["update"] == stopped_at
    for part in ("actor", "critic", "actor_target", "critic_target", "key"):
        assert part in checkpoint["states"]
    assert "opt_state" in checkpoint["states"]["critic"]
    assert set(checkpoint["statistics"]) == {"obs_mean", "obs_std", "action_low", "action_high"}
    assert len(json.loads(checkpoint["logger"])["evaluations"]) == len(partial["evaluations"])

    # an interrupted run can be evaluated from its latest checkpoint
    from common.evaluation.saved_runs import evaluate_run

    evaluation = evaluate_run(tmp_path / "run", episodes=1)
    assert "latest checkpoint" in evaluation["run"]["source"]
    assert evaluation["returns"].shape == (2, 1)

    code, output = finish(start("td3_bc", "--resume", str(tmp_path / "run")))
    assert code == 0, output
    assert finish(reference)[0] == 0
    assert_same_run(tmp_path / "reference", tmp_path / "run")


def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path):
    """SIGTERM is what Slurm sends at a job's time limit or preemption, some seconds before
    SIGKILL: the run stops as on Ctrl-C, with a checkpoint on the host-call grid, instead of
    losing everything since its last evaluation. (Resume from it is the Ctrl-C test's path.)"""
    flags = cli_flags(**{**RUN, "total_updates": 40000}, output_dir=tmp_path / "run")
    interrupted = start("td3_bc", *flags)
    wait_for(tmp_path / "run/checkpoints/checkpoint_000002000.msgpack", interrupted)
    interrupted.send_signal(signal.SIGTERM)
    code, output = finish(interrupted)
    assert code == 130, output
    assert "SIGTERM: saving a checkpoint" in output and "Traceback" not in output
    partial = json.loads((tmp_path / "run/results.json").read_text())
    assert partial["status"] == "interrupted", partial.get("message")
    stopped_at = partial["updates"]
    assert 2000 < stopped_at < 40000 and stopped_at % 1000 == 0
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["update"] == stopped_at


def test_cql_resume_is_bit_exact_across_its_warmup_and_lagrange_multiplier(tmp_path):
    """CQL's behaviour-cloning warm-up ends at an update count kept in the policy's optimiser
    state, and its Lagrange multiplier is a trained scalar: killed at 1000 updates, mid warm-up,
    the resumed run must still switch at 1500 and match the uninterrupted run bit for bit."""
    flags = [*cli_flags(**{**RUN, "total_updates": 4000, "eval_interval": 1000}), "--lagrange",
             "--bc-warmup-updates", "1500"]
    reference = start("cql", *flags, "--output-dir", str(tmp_path / "reference"))
    killed = start("cql", *flags, "--output-dir", str(tmp_path / "run"))
    wait_for(tmp_path / "run/checkpoints/checkpoint_000001000.msgpack", killed)
    killed.send_signal(signal.SIGKILL)
    assert finish(killed)[0] == -signal.SIGKILL
    assert json.loads((tmp_path / "run/results.json").read_text())["updates"] < 4000

    code, output = finish(start("cql", "--resume", str(tmp_path / "run")))
    assert code == 0, output
    assert finish(reference)[0] == 0
    resumed = assert_same_run(tmp_path / "reference", tmp_path / "run")
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert set(checkpoint["states"]) >= {"log_alpha", "log_alpha_prime"}
    assert all(x != 1.0 for x in resumed["evaluations"][-1]["train"]["alpha_prime"])


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_same_run_twice_is_identical(name, tmp_path):
    runs = [ALGORITHMS[name].main(small_args(name, tmp_path / str(i), num_seeds=2,
                                             total_updates=600, eval_interval=300))
            for i in range(2)]
    assert runs[0]["evaluations"] == runs[1]["evaluations"]
    for a, b in zip(jax.tree.leaves(saved_params(tmp_path / "0")),
                    jax.tree.leaves(saved_params(tmp_path / "1"))):
        np.testing.assert_array_equal(a, b)


def test_keeps_the_last_k_checkpoints_and_ignores_unfinished_writes(tmp_path):
    bc.main(small_args("bc", tmp_path, total_updates=500, eval_interval=100, keep_checkpoints=2))
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint_000000400.msgpack", "checkpoint_000000500.msgpack"]
    # a write that died before its rename leaves a .tmp, which is never taken for a checkpoint
    (tmp_path / "checkpoints/checkpoint_000000600.msgpack.tmp").write_bytes(b"\x85half")
    assert list_checkpoints(tmp_path)[-1].name == "checkpoint_000000500.msgpack"
    # a damaged checkpoint is reported, with the way back to the previous one
    list_checkpoints(tmp_path)[-1].write_bytes(b"\x85\xa3not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it to resume from the previous checkpoint"):
        bc.main(bc.Args(resume=str(tmp_path)))


# --------------------------------------------------------------------------------------------
# Divergence guard


def run_cli(main, args, capsys):
    """main(args) as `python algorithms/x.py` runs it: exit code and the last line of stderr
    (above it, the progress bar, when the run got as far as training)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, args)
    return exit_info.value.code, capsys.readouterr().err.split("\r")[-1].splitlines()[-1] + "\n"


def test_a_nan_stops_the_run_naming_update_seed_and_quantity(tmp_path, monkeypatch, capsys):
    """From critic update 700 on, the critic target is NaN (injected). The guard stops the run
    after that host call, names the losses, the seed and update 702 (the end of the TD3 step of
    2 updates that holds update 701), keeps the checkpoint of update 500 and exits 3."""
    real_target = td3_bc.critic_target

    def poisoned_target(state, batch, noise, args):
        target = real_target(state, batch, noise, args)
        return jax.numpy.where(state.critic.step >= 700, jax.numpy.nan, target)

    monkeypatch.setattr(td3_bc, "critic_target", poisoned_target)
    td3_bc.train_chunk.clear_cache()  # compiled without the poison elsewhere
    try:
        args = small_args("td3_bc", tmp_path, seed=5, total_updates=2000, eval_interval=500)
        code, err = run_cli(td3_bc.main, args, capsys)
    finally:
        td3_bc.train_chunk.clear_cache()  # nothing compiled with the poison outlives the test
    assert code == 3
    assert err.startswith("error: Training diverged: actor_loss, critic_loss, lambda, q_mean of "
                          "seed 5 became NaN at update 702.")
    assert "checkpoint_000000500.msgpack, is kept" in err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged" and "update 702" in results["message"]
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "checkpoint_000000500.msgpack"
    assert not (tmp_path / "policy.msgpack").exists()


def test_divergence_names_the_first_non_finite_quantity_and_its_seed():
    finite = {"critic_loss": np.ones((3, 50)), "q_mean": np.ones((3, 50))}
    no_bad_params = {"actor": {"kernel": np.zeros(3, bool)}}
    assert divergence(finite, no_bad_params, 1000, 100, [7, 8, 9]) is None

    metrics = {"critic_loss": np.ones((3, 50)), "q_mean": np.ones((3, 50))}
    metrics["q_mean"][2, 20:] = np.inf  # seed 9 from step 20 (updates 41-42) ...
    metrics["critic_loss"][1, 30:] = np.nan  # ... before seed 8 at step 30
    metrics["critic_loss"][2, 25:] = np.nan  # ... and seed 9's critic loss later
    assert divergence(metrics, no_bad_params, 1000, 100, [7, 8, 9]) == (
        "q_mean of seed 9 became Inf at update 1042")

    bad_params = {"actor": {"params": {"Dense_0": {"kernel": np.array([False, True, False])}}}}
    assert divergence(finite, bad_params, 1000, 100, [7, 8, 9]) == (
        "parameter actor.params.Dense_0.kernel of seed 8 holds NaN or Inf after update 1100")


def test_value_bound_and_where_each_seed_first_goes_beyond_it():
    assert value_bound(np.array([1.0, -3.0, 2.0]), 0.9) == pytest.approx(30.0)
    assert value_bound(np.array([1.0]), 1.0) == float("inf")
    q_mean = np.zeros((3, 50))
    q_mean[0, 10:] = 31.0  # seed 7 from step 10 (updates 21-22), on the positive side
    q_mean[2, 40] = -45.0  # seed 9 at step 40 only, on the negative side
    q_mean[1] = np.linspace(-29.0, 29.0, 50)  # seed 8 stays inside
    assert beyond_bound(q_mean, 30.0, 1000, 100, [7, 8, 9]) == {7: (1022, 31.0),
                                                                9: (1082, -45.0)}
    assert beyond_bound(q_mean, 50.0, 1000, 100, [7, 8, 9]) == {}


def test_q_values_beyond_the_value_bound_are_warned_once_per_seed(tmp_path, monkeypatch,
                                                                  capsys):
    """With the bound made 1e-6 (the Q-values of a real run cannot stay under it), each seed is
    warned once, from its first TD3 step (update 2), and the run itself goes on to the end."""
    bounds = []
    monkeypatch.setattr(td3_bc, "value_bound",
                        lambda rewards, discount: bounds.append(value_bound(rewards, discount))
                        or 1e-6)
    td3_bc.main(small_args("td3_bc", tmp_path, seed=5, num_seeds=2, total_updates=2000,
                           eval_interval=1000))
    assert bounds == [pytest.approx(1.0 / (1 - 0.99))]  # InvertedPendulum: rewards of 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "finished" and results["updates"] == 2000
    assert [(w["kind"], w["seed"], w["update"]) for w in results["warnings"]] == [
        ("value_bound", 5, 2), ("value_bound", 6, 2)]
    err = capsys.readouterr().err
    assert err.count("warning: The mean Q-value of seed") == 2
    assert "beyond max|r| / (1 - gamma) = 1e-06" in err


# --------------------------------------------------------------------------------------------
# Bad input: one paragraph, no traceback, exit 2


def write_hdf5(path, n=50, obs_dim=4, action_dim=1, env_id="InvertedPendulum-v5", **fields):
    """A D4RL-layout file; `fields` replace the generated arrays."""
    rng = np.random.default_rng(0)
    data = {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            "rewards": np.ones(n, np.float32), "terminals": np.zeros(n, bool),
            "timeouts": np.arange(n) % 10 == 9, **fields}
    with h5py.File(path, "w") as file:
        for name, values in data.items():
            file[name] = values
        file.attrs["env_id"] = env_id
    return str(path)


def expect_bad_input(capsys, name, args, *phrases):
    code, err = run_cli(ALGORITHMS[name].main, args, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert err.count("\n") == 1, f"one paragraph: {err!r}"
    for phrase in phrases:
        assert phrase in err, err
    return err


@pytest.mark.parametrize("name", ALGORITHMS)
def test_dataset_shape_that_does_not_match_its_environment(name, tmp_path, capsys):
    path = write_hdf5(tmp_path / "wrong-shape.hdf5", obs_dim=3)
    expect_bad_input(capsys, name, small_args(name, tmp_path / "out", env=path),
                     "has observations (3,)", "'InvertedPendulum-v5' has observations (4,)")


def test_empty_dataset(tmp_path, capsys):
    path = write_hdf5(tmp_path / "empty.hdf5", n=0)
    expect_bad_input(capsys, "td3_bc", small_args("td3_bc", tmp_path / "out", env=path),
                     "is empty")


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
def test_nan_or_inf_in_the_dataset(field, tmp_path, capsys):
    rng = np.random.default_rng(0)
    shapes = {"observations": (50, 4), "actions": (50, 1), "rewards": (50,)}
    bad = rng.uniform(-0.5, 0.5, shapes[field]).astype(np.float32)
    bad.reshape(50, -1)[[7, 30], 0] = [np.nan, np.inf]
    path = write_hdf5(tmp_path / "nan.hdf5", **{field: bad})
    expect_bad_input(capsys, "iql", small_args("iql", tmp_path / "out", env=path),
                     f"2 NaN or Inf value(s) in `{field}`", "(the first at index 7)")


def test_missing_reference_scores_fail_before_training(tmp_path, capsys):
    path = write_hdf5(tmp_path / "custom-data.hdf5", n=100)  # room for a batch of 64
    expect_bad_input(capsys, "bc", small_args("bc", tmp_path / "out", env=path),
                     "has no reference scores")
    assert not (tmp_path / "out").exists()


def test_actions_outside_the_action_space_are_clipped_with_a_warning():
    actions = np.array([[0.5], [3.5], [-3.0], [-7.0], [3.0]], np.float32)
    dataset = load_dataset(EXPERT).subset(np.arange(5))
    dataset = type(dataset)(dataset.observations, actions, *[
        getattr(dataset, f) for f in ("rewards", "next_observations", "terminals", "timeouts")],
        info=dataset.info)
    scaling = ActionScaling(np.array([-3.0], np.float32), np.array([3.0], np.float32))
    with pytest.warns(DatasetWarning, match=r"2 of 5 action entries \(2 of 5 transitions\)"):
        unit = unit_actions(dataset, scaling)
    np.testing.assert_allclose(unit[:, 0], [0.5 / 3, 1 - 1e-5, -1.0, -(1 - 1e-5), 1.0],
                               rtol=1e-6)


@pytest.mark.parametrize("flags, phrase", [
    (dict(num_seeds=0), "--num-seeds must be at least 1, got 0"),
    (dict(total_updates=-5), "--total-updates must be at least 1, got -5"),
    (dict(batch_size=0), "--batch-size must be at least 1, got 0"),
    (dict(eval_episodes=-1), "--eval-episodes must be at least 1, got -1"),
    (dict(keep_checkpoints=0), "--keep-checkpoints must be at least 1, got 0"),
    (dict(hidden_dims=(32, -4)), "--hidden-dims must be positive layer widths, got (32, -4)"),
    (dict(total_updates=1000, eval_interval=5000),
     "--eval-interval (5000) is larger than the run (--total-updates 1000)"),
    (dict(total_updates=1001, eval_interval=1001), "must be multiples of 2"),
    (dict(discount=1.5), "--discount (gamma) must lie in [0, 1], got 1.5"),
    (dict(discount=float("nan")), "--discount must be a finite number, got nan"),
    (dict(tau=0.0), "--tau, the target networks' averaging rate, must lie in (0, 1]"),
    (dict(actor_lr=-3e-4), "--actor-lr is a learning rate and must be positive, got -0.0003"),
    (dict(critic_lr=float("inf")), "--critic-lr must be a finite number, got inf"),
    (dict(alpha=0.0), "--alpha must be positive, got 0.0"),
    (dict(policy_freq=0), "--policy-freq must be positive, got 0"),
    (dict(noise_clip=-0.5), "--noise-clip must be zero or positive, got -0.5"),
])
def test_impossible_sizes(flags, phrase, tmp_path, capsys):
    expect_bad_input(capsys, "td3_bc", small_args("td3_bc", tmp_path / "out", **flags), phrase)
    assert not (tmp_path / "out").exists(), "checked before anything is written"


@pytest.mark.parametrize("name, flags, phrase", [
    ("bc", dict(learning_rate=0.0), "--learning-rate is a learning rate and must be positive"),
    ("iql", dict(value_lr=-1.0), "--value-lr is a learning rate and must be positive"),
    ("iql", dict(expectile=0.0), "--expectile must be strictly between 0 and 1, got 0.0"),
    ("iql", dict(temperature=-3.0), "--temperature must be positive, got -3.0"),
    ("iql", dict(max_weight=0.0), "--max-weight must be positive, got 0.0"),
    ("cql", dict(cql_temperature=0.0), "--cql-temperature must be positive, got 0.0"),
    ("cql", dict(clip_dataset_actions=1.0),
     "--clip-dataset-actions must be strictly between 0 and 1, got 1.0"),
    ("bcq", dict(lmbda=1.5), "--lmbda must be between 0 and 1, got 1.5"),
    ("bcq", dict(phi=0.0), "--phi must be positive, got 0.0"),
    ("bcq", dict(vae_hidden_dims=(0,)),
     "--vae-hidden-dims must be positive layer widths, got (0,)"),
    ("por", dict(expectile=1.0), "--expectile must be strictly between 0 and 1, got 1.0"),
    ("por", dict(alpha=-3.0), "--alpha must be positive, got -3.0"),
])
def test_out_of_range_coefficients_of_each_file(name, flags, phrase, tmp_path, capsys):
    expect_bad_input(capsys, name, small_args(name, tmp_path / "out", **flags), phrase)
    assert not (tmp_path / "out").exists(), "checked before anything is written"


@pytest.mark.parametrize("name", ["bc", "td3_bc", "iql", "cql", "bcq", "por"])
def test_a_batch_larger_than_the_dataset_is_refused_before_training(name, tmp_path, capsys):
    start = time.perf_counter()
    expect_bad_input(capsys, name, small_args(name, tmp_path / "out", batch_size=10_000_000),
                     "--batch-size 10000000 is larger than the dataset",
                     f"(5000 transitions). Use --batch-size {ALGORITHMS[name].Args.batch_size}")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "out").exists(), "nothing of the run is left"


def test_unwritable_output_directory(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")  # a file where a directory should be: fails even as root
    expect_bad_input(capsys, "bc", small_args("bc", tmp_path / "a-file" / "run"),
                     "Cannot write to the output directory", "--output-dir")


def test_output_directory_of_an_earlier_run_needs_resume(tmp_path, capsys):
    bc.main(small_args("bc", tmp_path, total_updates=100, eval_interval=100))
    expect_bad_input(capsys, "bc", small_args("bc", tmp_path, total_updates=100,
                                              eval_interval=100),
                     "already holds a run", f"--resume {tmp_path}")


def test_resume_with_different_arguments_says_which(tmp_path, capsys):
    td3_bc.main(small_args("td3_bc", tmp_path, total_updates=200, eval_interval=100))
    argv = ["--resume", str(tmp_path), "--total-updates", "400", "--alpha", "1.0"]
    err = expect_bad_input(capsys, "td3_bc", parse_cli(td3_bc.Args, argv),
                           "--total-updates: the run had 200, this command gives 400",
                           "--alpha: the run had 2.5, this command gives 1.0")
    assert "--env" not in err  # --resume DIR alone takes the run's own arguments
    expect_bad_input(capsys, "iql", parse_cli(iql.Args, ["--resume", str(tmp_path)]),
                     "is a run of td3_bc, not of iql")
    expect_bad_input(capsys, "bc", bc.Args(resume=str(tmp_path / "nothing")),
                     "Cannot resume from", "does not exist")


def test_ctrl_c_during_a_dataset_build_says_nothing_was_kept(tmp_path, minari_dir):
    import signal

    dataset_id = "offlax/hopper/medium-replay-v1"  # about a minute to build: time for Ctrl-C
    # A shell that starts the suite in the background makes it ignore SIGINT, and an ignored
    # signal stays ignored in children: the child must start with the default disposition
    # (a Python-level handler here is reset to it by exec).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = start("bc", "--env", dataset_id, "--output-dir", str(tmp_path / "run"))
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = ""
    while "Building" not in seen:
        line = process.stdout.readline()
        assert line, f"the run ended before building the dataset: {seen}"
        seen += line
    time.sleep(1.0)  # inside the rollout
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == 130, seen + output
    assert (f"interrupted: Building {dataset_id} was stopped before it finished: nothing of it "
            "is kept, and no run was started.") in output
    assert "checkpoint" not in output and "Traceback" not in output
    assert not (minari_dir / dataset_id).exists() and not (tmp_path / "run").exists()


def test_resuming_a_finished_run_changes_no_file_and_says_so(tmp_path):
    out = tmp_path / "run"
    code, _ = finish(start("bc", *cli_flags(**SMALL, total_updates=100, eval_interval=100,
                                            output_dir=out)))  # fmt: skip
    assert code == 0
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    code, output = finish(start("bc", "--resume", str(out)))
    assert code == 0
    assert output.startswith(f"finished: '{out}' is a finished run (100 of 100 updates)")
    assert "no file was changed" in output
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*")
            if p.is_file()} == files  # fmt: skip


def test_command_line_errors_exit_2_without_traceback(tmp_path):
    bad = np.ones((50, 4), np.float32)
    bad[3, 1] = np.nan
    path = write_hdf5(tmp_path / "nan.hdf5", observations=bad)
    code, output = finish(start("td3_bc", "--env", path, "--output-dir", str(tmp_path / "out")))
    assert code == 2
    assert output.strip().startswith("error: Dataset") and "Traceback" not in output
    code, output = finish(start("bc", "--num-seeds", "0"))
    assert (code, output.strip()) == (2, "error: --num-seeds must be at least 1, got 0.")
    code, output = finish(start("iql", "--resume", str(tmp_path / "no-run-here")))
    assert code == 2 and output.startswith("error: Cannot resume from") and "Traceback" not in output


# --------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_reproduces_the_final_evaluation_and_records_a_video(tmp_path, monkeypatch):
    results = iql.main(small_args("iql", tmp_path / "run", num_seeds=2, total_updates=300,
                                  eval_interval=300))
    video = tmp_path / "episode.mp4"
    output = subprocess.run(  # warnings are errors: no fork from JAX's threads may warn
        [sys.executable, "-W", "error", "-m", "common.evaluation", str(tmp_path / "run"),
         "--video", str(video)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ)
    assert output.returncode == 0, output.stderr
    assert "fork" not in output.stderr and "Exception ignored" not in output.stderr, output.stderr
    lines = output.stdout.splitlines()
    assert lines[0].startswith(f"iql on {EXPERT} (InvertedPendulum-v5), 2 episodes per agent")
    rows = {int(line.split()[0]): [float(x) for x in line.split()[1:]]
            for line in lines if line.split()[0].isdigit()}
    final = results["final"]
    for k, seed in enumerate(results["seeds"]):
        assert rows[seed][0] == pytest.approx(final["return"][k], abs=0.05)
        assert rows[seed][2] == pytest.approx(final["normalized_score"][k], abs=0.05)
    last = lines[-1]
    if last.startswith("video: "):  # an OpenGL backend is here: a real video of the episode
        import imageio.v3 as iio

        monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # as common.evaluation does
        frames = iio.imread(video)
        assert frames.ndim == 4 and frames.shape[0] > 1 and frames.std() > 0
    else:
        assert last.startswith("video skipped: "), last


def test_evaluate_of_a_stochastic_policy_from_its_checkpoint_repeats_the_run(tmp_path):
    """BCQ acts with sampled candidates and with three networks: re-evaluated from its latest
    checkpoint (no policy.msgpack), every agent's episodes return what the run's evaluation gave,
    and the video of agent 0's first episode is that episode (the same keys, step by step)."""
    results = bcq.main(small_args("bcq", tmp_path / "run", num_seeds=2, total_updates=300,
                                  eval_interval=300, eval_episodes=3))
    returns = np.asarray(results["evaluations"][-1]["episode_returns"])
    assert len(set(returns.ravel())) > 1, "the test needs episodes that differ"
    (tmp_path / "run" / "policy.msgpack").unlink()
    video = tmp_path / "episode.gif"
    output = subprocess.run(
        [sys.executable, "-m", "common.evaluation", str(tmp_path / "run"), "--video", str(video)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ)
    assert output.returncode == 0, output.stderr
    lines = output.stdout.splitlines()
    assert "latest checkpoint, update 300" in lines[1]
    rows = {int(line.split()[0]): float(line.split()[1])
            for line in lines if line.split()[0].isdigit()}
    assert rows == pytest.approx(dict(zip(results["seeds"], returns.mean(1))), abs=0.05)
    if lines[-1].startswith("video: "):  # an OpenGL backend is here
        assert lines[-1].endswith(f"return {returns[0, 0]:.1f})"), lines[-1]
    else:
        assert lines[-1].startswith("video skipped: "), lines[-1]


def test_evaluate_says_what_is_missing(tmp_path):
    output = subprocess.run([sys.executable, "-m", "common.evaluation", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert output.returncode == 2
    assert output.stderr.startswith("error: ") and "holds no results.json" in output.stderr
