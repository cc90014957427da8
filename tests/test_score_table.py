"""benchmarks/score_table.py: the seeds of a `--split-seeds` score run merge into the run that
`--num-seeds N` would have written."""

import copy
import json
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import score_table  # noqa: E402

RUN = ROOT / "benchmarks" / "results" / "scores" / "iql__offlax_walker2d_medium-v1.json"


def single_seed_part(run: dict, k: int) -> dict:
    """Seed k of a 3-seed results.json, as its own `--seed k --num-seeds 1` run would write it."""
    def pick(record):
        return {key: ([value[k]] if isinstance(value, list) else
                      pick(value) if isinstance(value, dict) else value)
                for key, value in record.items()}

    part = copy.deepcopy(run)
    part["seeds"] = [run["seeds"][k]]
    part["evaluations"] = [pick(e) for e in run["evaluations"]]
    part["final"] = pick(run["final"])
    part["final"]["normalized_score_mean"] = part["final"]["normalized_score"][0]
    part["final"]["normalized_score_std"] = 0.0
    part["wall_seconds"] = run["wall_seconds"] / 3
    return part


@pytest.mark.skipif(not RUN.exists(), reason=f"{RUN.name} is not in this checkout")
def test_split_seeds_merge_into_the_three_seed_run(tmp_path, monkeypatch):
    run = json.loads(RUN.read_text())
    assert run["seeds"] == [0, 1, 2]
    for k in (2, 0, 1):  # written in any order
        part = single_seed_part(run, k)
        (tmp_path / f"iql__offlax_walker2d_medium-v1__seed{k}.json").write_text(json.dumps(part))
    monkeypatch.setattr(score_table, "SCORES_DIR", tmp_path)

    [merged] = score_table.load_runs()
    assert merged["seeds"] == [0, 1, 2]
    assert merged["final"]["normalized_score"] == run["final"]["normalized_score"]
    np.testing.assert_allclose(merged["final"]["normalized_score_mean"],
                               run["final"]["normalized_score_mean"])
    np.testing.assert_allclose(merged["final"]["normalized_score_std"],
                               run["final"]["normalized_score_std"])
    assert [e["update"] for e in merged["evaluations"]] == [e["update"] for e in run["evaluations"]]
    for m, e in zip(merged["evaluations"], run["evaluations"]):
        assert m["normalized_score"] == e["normalized_score"]
        assert m["episode_returns"] == e["episode_returns"]
    np.testing.assert_allclose(merged["wall_seconds"], run["wall_seconds"])


def test_a_seed_still_running_leaves_the_merged_run_without_a_final_score(tmp_path, monkeypatch):
    run = json.loads(RUN.read_text()) if RUN.exists() else pytest.skip(f"no {RUN.name}")
    for k in (0, 1):
        part = single_seed_part(run, k)
        if k == 1:  # stopped at its second evaluation
            del part["final"]
            part["evaluations"] = part["evaluations"][:2]
        (tmp_path / f"iql__x__seed{k}.json").write_text(json.dumps(part))
    monkeypatch.setattr(score_table, "SCORES_DIR", tmp_path)

    [merged] = score_table.load_runs()
    assert "final" not in merged
    first_two = run["evaluations"][:2]
    assert [e["update"] for e in merged["evaluations"]] == [e["update"] for e in first_two]
    assert merged["evaluations"][1]["normalized_score"] == first_two[1]["normalized_score"][:2]


def test_aggregates_cover_the_algorithms_with_every_seed_on_every_dataset(tmp_path, monkeypatch):
    """Interval estimates (rliable) for the complete algorithms only: a missing dataset or a
    seed short leaves an algorithm out, and says so."""
    pytest.importorskip("rliable")
    monkeypatch.setattr(score_table, "RESULTS", tmp_path)
    datasets = ["a", "b"]
    final = lambda scores: {"final": {"normalized_score": scores}}  # noqa: E731
    by_key = {("bc", "a"): final([10.0, 20.0, 30.0]), ("bc", "b"): final([40.0, 50.0, 60.0]),
              ("iql", "a"): final([70.0, 80.0, 90.0]), ("iql", "b"): final([70.0, 80.0, 90.0]),
              ("cql", "a"): final([1.0, 2.0, 3.0]),  # no run on b
              ("por", "a"): final([1.0, 2.0, 3.0]), ("por", "b"): final([1.0, 2.0])}  # 2 seeds
    lines = "\n".join(score_table.aggregate_lines(by_key, ["bc", "iql", "cql", "por"], datasets,
                                                  "x_"))
    assert "not yet complete: cql, por" in lines
    assert "| bc | 35.0 [" in lines  # IQM of 10..60: the mean of 20, 30, 40, 50
    assert "| iql | 80.0 [" in lines and "| cql |" not in lines and "| por |" not in lines
    assert "| iql | bc | 1.00 [1.00, 1.00] |" in lines  # every IQL run beats every BC run
    assert (tmp_path / "x_profiles.png").stat().st_size > 1000
