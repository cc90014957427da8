"""Sweeps (sweeps/): the config and its grid, a tiny sweep that is interrupted and run again
through submitit's local executor, the report, and the statistics against hand-computed values."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from common.errors import ConfigError
from sweeps import statistics
from sweeps.grid import load_sweep
from sweeps.launch import plan, run_one
from sweeps.report import build_report, d4rl_task, published_for, published_scores

pytestmark = pytest.mark.usefixtures("generated_datasets")

DATASET = "offlax/invertedpendulum/expert-5000-v1"  # 5 episodes of return 1000
SMALL = """
[flags]
total-updates = {updates}
eval-interval = 200
eval-episodes = 2
batch-size = 64
hidden-dims = [32, 32]
"""


def write_config(tmp_path, text, name="tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def sweep_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sweeps", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, **kwargs)


# --------------------------------------------------------------------------------------------
# The grid


def test_a_run_another_process_holds_is_busy_not_resumed(tmp_path):
    """A run in progress elsewhere (a second sweep, a run started by hand) is left to it: `run`
    would not start a second process on it, and `list` shows where it stands."""
    from common.run_directory import hold

    path = write_config(tmp_path, f"""
output_dir = "{tmp_path / 'out'}"
algorithms = ["bc"]
datasets = ["{DATASET}"]
seeds = [0]
""")
    [run] = load_sweep(path).runs
    directory = Path(run.output_dir)
    directory.mkdir(parents=True)
    (directory / "checkpoints").mkdir()
    (directory / "checkpoints" / "checkpoint_000000200.msgpack").write_bytes(b"x")
    (directory / "results.json").write_text(json.dumps(
        {"status": "running", "updates": 200, "args": {"total_updates": 1000}}))
    held = hold(directory, created=False)
    try:
        assert plan(run) == "busy"
        assert run_one(run).action == "busy"
        listed = sweep_cli("list", path)
        assert listed.returncode == 0 and "busy" in listed.stdout
        assert "200/1000 updates" in listed.stdout
    finally:
        held.release()
    assert plan(run) == "resume"


def test_grid_of_algorithms_datasets_variants_and_seeds(tmp_path):
    path = write_config(tmp_path, f"""
output_dir = "{tmp_path / 'out'}"
algorithms = ["td3_bc", "iql"]
datasets = ["{DATASET}", "../shared/data/d4rl/door-human-v0.hdf5"]
seeds = [0, 1, 2, 3]
seeds_per_run = 2
[flags]
total-updates = 1000
normalize-observations = false
[flags.iql]
expectile = 0.8
[[variants]]
name = "wide"
algorithms = ["iql"]
flags = {{ hidden-dims = [512, 512] }}
""")
    sweep = load_sweep(path)
    # td3_bc and iql as configured, iql+wide; x 2 datasets x 2 runs of 2 seeds
    assert len(sweep.runs) == (1 + 2) * 2 * 2
    run = next(r for r in sweep.runs if r.label == "iql+wide" and r.seed == 2)
    assert run.num_seeds == 2
    assert run.output_dir == str(tmp_path / "out" / "iql+wide" / DATASET.replace("/", "_")
                                 / "seeds2-3")
    command = run.command(resume=False)
    assert command[1].endswith("algorithms/iql.py")
    flags = " ".join(command[2:])
    assert f"--env {DATASET} --seed 2 --num-seeds 2" in flags
    assert "--expectile 0.8" in flags and "--hidden-dims 512 512" in flags
    assert "--no-normalize-observations" in flags and "--total-updates 1000" in flags
    td3 = [r for r in sweep.runs if r.algorithm == "td3_bc"]
    assert all("--expectile" not in r.command(False) for r in td3)
    door = next(r for r in sweep.runs if r.dataset.endswith("door-human-v0.hdf5"))
    assert Path(door.dataset).is_absolute() and door.output_dir.endswith("door-human-v0/seeds0-1")
    assert run.command(resume=True)[2:] == ["--resume", run.output_dir]


@pytest.mark.parametrize("text, message", [
    ('algorithms = ["bc"]\ndatasets = ["x"]\nsede = 3', "unknown key"),
    ('algorithms = ["bcx"]\ndatasets = ["x"]', "'bcx', which has no file in algorithms/"),
    ('algorithms = ["bc"]\ndatasets = ["x"]\n[flags]\nexpectile = 0.7',
     "'expectile' .* is not a flag of algorithms/bc.py"),
    ('algorithms = ["bc"]\ndatasets = ["x"]\n[flags]\nnum-seeds = 2', "is the sweep's to set"),
    ('algorithms = ["bc"]\ndatasets = ["x"]\nseeds = 3\nseeds_per_run = 2', "must divide"),
    ('algorithms = ["bc"]\ndatasets = ["x"]\n[flags.iql]\nexpectile = 0.7',
     "names an algorithm the sweep does not run"),
    ('algorithms = "bc"', "needs `algorithms`, a list"),
    ('algorithms = ["bc"]\ndatasets = ["x"]\n[[variants]]\nflags = {batch-size = 8}',
     "needs a name"),
    ('algorithms = [', "not valid TOML"),
])
def test_bad_config_is_refused_with_the_reason(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_bad_config_exits_2_before_running_anything(tmp_path):
    path = write_config(tmp_path, 'algorithms = ["bc"]\ndatasets = ["x"]\n[flags]\nalpha = 1')
    result = sweep_cli("run", path)
    assert result.returncode == 2 and "is not a flag of algorithms/bc.py" in result.stderr
    assert "Traceback" not in result.stderr


def test_slurm_without_sbatch_says_where_to_run(tmp_path):
    path = write_config(tmp_path, f'algorithms = ["bc"]\ndatasets = ["{DATASET}"]\n'
                                  f'output_dir = "{tmp_path / "out"}"')
    result = sweep_cli("run", path, "--executor", "slurm",
                       env={**os.environ, "PATH": os.path.dirname(sys.executable)})
    assert result.returncode == 2 and "sbatch" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# A tiny sweep: interrupted, run again (only what is missing), reported


def test_tiny_sweep_interrupted_resumed_through_submitit_and_reported(tmp_path):
    out = tmp_path / "out"
    path = write_config(tmp_path, f"""
output_dir = "{out}"
algorithms = ["bc", "td3_bc"]
datasets = ["{DATASET}"]
seeds = 2
""" + SMALL.format(updates=2000))
    sweep = load_sweep(path)
    assert [plan(run) for run in sweep.runs] == ["start"] * 4

    # 1. One run at a time on this machine; stopped once the second run has a checkpoint, by
    # SIGTERM (what stops a sweep started in the background, whose SIGINT the shell ignores;
    # Ctrl-C takes the same path): the sweep passes SIGINT on to the run, which checkpoints.
    process = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(path), "--jobs", "1"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    second = Path(sweep.runs[1].output_dir) / "checkpoints"
    deadline = time.time() + 600
    while not (second.is_dir() and any(second.iterdir())) and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    plans = [plan(run) for run in sweep.runs]
    assert plans == ["skip", "resume", "start", "start"], (plans, stdout, stderr)
    finished_first = (Path(sweep.runs[0].output_dir) / "results.json").stat().st_mtime_ns

    # 2. The same sweep through submitit's local executor: only the three missing runs go.
    result = sweep_cli("run", path, "--executor", "submitit-local", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 3 run(s)" in result.stdout and "3 of 3 submitted runs finished" in \
        result.stdout
    assert [plan(run) for run in sweep.runs] == ["skip"] * 4
    assert (Path(sweep.runs[0].output_dir) / "results.json").stat().st_mtime_ns == finished_first
    resumed = json.loads((Path(sweep.runs[1].output_dir) / "results.json").read_text())
    assert resumed["updates"] == 2000 and resumed["status"] == "finished"
    log = (Path(sweep.runs[1].output_dir).parent / "seed1.log").read_text()
    assert "--resume" in log or "resumed" in log.lower()

    # 3. Nothing left to do; the report builds from the results.
    assert "nothing to submit" in sweep_cli("run", path, "--executor", "submitit-local").stdout
    result = sweep_cli("report", path)
    assert result.returncode == 0, result.stderr
    report = (out / "report" / "report.md").read_text()
    assert "4 of 4 runs finished" in report
    assert "| bc |" in report and "| td3_bc |" in report and "P(X > Y)" in report
    for image in ("aggregate.png", "profiles.png", "improvement.png"):
        assert (out / "report" / image).stat().st_size > 1000
    estimates = json.loads((out / "report" / "scores.json").read_text())
    for name in ("bc", "td3_bc"):
        scores = []
        for seed in (0, 1):
            results = json.loads((out / name / DATASET.replace("/", "_") / f"seed{seed}"
                                  / "results.json").read_text())
            scores += results["final"]["normalized_score"]
        point, low, high = estimates["aggregate"][name]["Mean"]
        np.testing.assert_allclose(point, np.mean(scores))
        assert low <= point <= high


# --------------------------------------------------------------------------------------------
# Statistics and published numbers


def test_iqm_of_known_scores():
    # 8 scores: the 25% trimmed from each end leave 3, 4, 5, 6
    scores = np.array([[1.0, 7.0], [100.0, 3.0], [5.0, -50.0], [4.0, 6.0]])
    assert statistics.iqm(scores) == pytest.approx(4.5)


def test_interval_estimates_bracket_the_point_and_are_reproducible():
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(60, 10, (10, 3)), "b": rng.normal(40, 10, (10, 3))}
    first = statistics.aggregates(scores, repetitions=500)
    assert first == statistics.aggregates(scores, repetitions=500)
    for name in scores:
        point, low, high = first[name]["IQM"]
        assert low < point < high
        assert point == pytest.approx(statistics.iqm(scores[name]))
        assert first[name]["Mean"][0] == pytest.approx(scores[name].mean())
    # a and b differ by two standard deviations: their intervals do not overlap
    assert first["b"]["IQM"][2] < first["a"]["IQM"][1]


def test_probability_of_improvement():
    separated = {"x": np.full((4, 2), 10.0) + np.arange(4)[:, None],
                 "y": np.zeros((4, 2)) + np.arange(4)[:, None]}
    (p, low, high), = statistics.probability_of_improvement(
        separated, [("x", "y")], repetitions=200).values()
    assert p == 1.0 and low == 1.0 and high == 1.0
    same = {"x": separated["x"], "y": separated["x"].copy()}
    (p, _, _), = statistics.probability_of_improvement(same, [("x", "y")],
                                                       repetitions=200).values()
    assert p == 0.5


def test_published_numbers_beside_d4rl_datasets():
    assert d4rl_task("/data/door-human-v0.hdf5") == "door-human"
    assert d4rl_task("hopper-medium-replay-v2") == "hopper-medium-replay"
    assert d4rl_task("offlax/hopper/medium-v1") is None
    rows, sources = published_scores()
    assert {row["source"] for row in rows} <= set(sources)
    assert published_for("door-human", "cql", rows) == [
        "5.5 ± 1.3 (corl, door-human-v1)", "9.9 (cql-paper, door-human-v0)"]
    assert published_for("door-human", "bc", rows)[0] == "2.3 ± 4.0 (corl, door-human-v1)"
