"""A sweep's report: its finished runs' final D4RL-normalised scores, with interval estimates
(sweeps/statistics.py), beside the published numbers for the D4RL datasets among them.

    <output_dir>/report/report.md       per dataset and aggregated: IQM and mean, 95% CIs
    <output_dir>/report/aggregate.png   IQM and mean with their intervals, per algorithm
    <output_dir>/report/profiles.png    performance profiles
    <output_dir>/report/improvement.png P(X > Y) for each pair of algorithms
    <output_dir>/report/scores.json     every run's per-seed scores, and the estimates

A run counts once it has finished; the report says which runs are missing. The aggregate
estimates need every algorithm on every dataset with the same number of seeds, so they use the
(algorithm, dataset) cells that are complete, and say which are not.
"""

from __future__ import annotations

import csv
import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np

from common.run_directory import run_status
from sweeps import statistics
from sweeps.grid import Sweep, dataset_slug, tomllib

PUBLISHED = Path(__file__).resolve().parent / "published"


def collect(sweep: Sweep) -> tuple[dict, list]:
    """({(label, dataset): {seed: final normalised score}}, [runs not finished])."""
    cells, missing = {}, []
    for run in sweep.runs:
        directory = Path(run.output_dir)
        if run_status(directory) != "finished":
            missing.append(run)
            continue
        results = json.loads((directory / "results.json").read_text())
        scores = results["final"]["normalized_score"]
        cell = cells.setdefault((run.label, run.dataset), {})
        cell.update(zip(results["seeds"], scores))
    return cells, missing


def d4rl_task(dataset: str) -> str | None:
    """`door-human-v0.hdf5` or `hopper-medium-v2` -> `door-human` / `hopper-medium`: the D4RL
    task a dataset is a version of; None for a dataset that is not a D4RL one."""
    from common.datasets.d4rl_names import d4rl_name

    name = d4rl_name(dataset_slug(dataset) if dataset.endswith((".hdf5", ".h5")) else dataset)
    return re.sub(r"-v\d+$", "", name) if name else None


def published_scores() -> tuple[list[dict], dict]:
    """The rows of published/scores.csv and the sources they cite."""
    with open(PUBLISHED / "scores.csv") as file:
        rows = list(csv.DictReader(file))
    sources = tomllib.loads((PUBLISHED / "sources.toml").read_text())
    return rows, sources


def published_for(task: str, algorithm: str, rows: list[dict]) -> list[str]:
    """'2.3 ± 4.0 (corl, door-human-v1)' for each published number of that task and algorithm."""
    found = []
    for row in rows:
        if row["algorithm"] == algorithm and re.sub(r"-v\d+$", "", row["dataset"]) == task:
            std = f" ± {float(row['std']):.1f}" if row["std"] else ""
            found.append(f"{float(row['score']):.1f}{std} ({row['source']}, {row['dataset']})")
    return found


def interval(estimate: tuple[float, float, float]) -> str:
    point, low, high = estimate
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def build_report(sweep: Sweep, repetitions: int = statistics.REPETITIONS) -> Path:
    """Write the report (see the module docstring); returns its directory."""
    cells, missing = collect(sweep)
    labels = list(dict.fromkeys(run.label for run in sweep.runs))
    datasets = list(dict.fromkeys(run.dataset for run in sweep.runs))
    seeds = sorted({run.seed + k for run in sweep.runs for k in range(run.num_seeds)})
    out = sweep.output_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows, sources = published_scores()

    lines = [f"# Sweep `{sweep.name}`", ""]
    finished = len(sweep.runs) - len(missing)
    lines.append(f"{finished} of {len(sweep.runs)} runs finished; final D4RL-normalised scores. "
                 "IQM = interquartile mean; intervals are 95% stratified-bootstrap confidence "
                 f"intervals over seeds (rliable, {repetitions} resamples).")
    if missing:
        lines += ["", "Not finished: " + ", ".join(
            f"{r.label} on {dataset_slug(r.dataset)} seed {r.seed}" for r in missing) + "."]

    # Per dataset: every cell with at least one finished seed.
    lines += ["", "## Per dataset", "",
              "| dataset | algorithm | seeds | IQM [95% CI] | mean [95% CI] | published |",
              "|---|---|---:|---|---|---|"]
    estimates = {"per_dataset": {}, "aggregate": {}, "improvement": {}}
    for dataset in datasets:
        task = d4rl_task(dataset)
        for label in labels:
            cell = cells.get((label, dataset))
            if not cell:
                continue
            scores = np.array([cell[s] for s in sorted(cell)], np.float64)[:, None]
            both = statistics.aggregates({label: scores}, repetitions=repetitions)[label]
            published = published_for(task, label.split("+")[0], rows) if task else []
            estimates["per_dataset"][f"{label} | {dataset_slug(dataset)}"] = {
                "seeds": sorted(cell), "scores": scores[:, 0].tolist(), **both}
            lines.append(f"| {dataset_slug(dataset)} | {label} | {len(cell)} | "
                         f"{interval(both['IQM'])} | {interval(both['Mean'])} | "
                         f"{'; '.join(published) or '–'} |")

    # Aggregates over the datasets every algorithm has complete (every seed of the sweep).
    complete = [d for d in datasets
                if all(len(cells.get((label, d), {})) == len(seeds) for label in labels)]
    matrices = {label: np.array([[cells[(label, d)][s] for d in complete] for s in seeds])
                for label in labels} if complete else {}
    lines += ["", "## Aggregate", ""]
    if not complete:
        lines.append("No dataset has every algorithm's every seed finished yet.")
    else:
        left_out = [dataset_slug(d) for d in datasets if d not in complete]
        lines.append(f"Over {len(complete)} dataset(s) x {len(seeds)} seeds"
                     + (f" (left out, incomplete: {', '.join(left_out)})" if left_out else "")
                     + ".")
        pairs = list(combinations(labels, 2))
        section, found = aggregate_section(matrices, pairs, out, repetitions)
        lines += section
        estimates.update(found)

    cited = {row["source"] for row in rows} if any(d4rl_task(d) for d in datasets) else set()
    if cited:
        lines += ["", "## Published numbers", ""]
        lines += [f"- `{key}`: {sources[key]['citation']}; {sources[key]['what']}. "
                  f"{sources[key]['url']}" for key in sorted(cited)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "scores.json").write_text(json.dumps(estimates, indent=1))
    return out


def aggregate_section(matrices: dict, pairs: list[tuple[str, str]], out: Path,
                      repetitions: int = statistics.REPETITIONS, prefix: str = ""):
    """The aggregate table, P(X > Y) for `pairs` and their plots (written to `out` as
    <prefix>aggregate.png, <prefix>profiles.png, <prefix>improvement.png), for `matrices`
    ({algorithm: (seeds, datasets)} of final scores, every dataset complete): (Markdown lines,
    {"aggregate": ..., "improvement": ...})."""
    labels = list(matrices)
    lines = ["", "| algorithm | IQM [95% CI] | mean [95% CI] |", "|---|---|---|"]
    aggregate = statistics.aggregates(matrices, repetitions=repetitions)
    estimates = {"aggregate": aggregate, "improvement": {}}
    for label in labels:
        lines.append(f"| {label} | {interval(aggregate[label]['IQM'])} | "
                     f"{interval(aggregate[label]['Mean'])} |")
    if pairs:
        improvement = statistics.probability_of_improvement(matrices, pairs,
                                                            repetitions=repetitions)
        estimates["improvement"] = {f"{x} > {y}": v for (x, y), v in improvement.items()}
        lines += ["", "Probability of improvement, P(X > Y): the probability that a run of X "
                  "on a dataset scores higher than a run of Y on it, averaged over datasets.", "",
                  "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        lines += [f"| {x} | {y} | {p:.2f} [{low:.2f}, {high:.2f}] |"
                  for (x, y), (p, low, high) in improvement.items()]
    _plots(matrices, aggregate, estimates["improvement"], out, repetitions, prefix)
    lines += ["", f"![aggregate]({prefix}aggregate.png)", "",
              f"![profiles]({prefix}profiles.png)"]
    if pairs:
        lines += ["", f"![improvement]({prefix}improvement.png)"]
    return lines, estimates


def _plots(matrices: dict, aggregate: dict, improvement: dict, out: Path, repetitions: int,
           prefix: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    labels = list(matrices)
    points = {label: np.array([aggregate[label][m][0] for m in ("IQM", "Mean")])
              for label in labels}
    intervals = {label: np.array([[aggregate[label][m][1] for m in ("IQM", "Mean")],
                                  [aggregate[label][m][2] for m in ("IQM", "Mean")]])
                 for label in labels}
    fig, axes = plot_utils.plot_interval_estimates(points, intervals, ["IQM", "Mean"],
                                                   algorithms=labels, xlabel="")
    for ax in axes:  # below the ticks whatever the figure's height (rliable's label is not)
        ax.set_xlabel("Normalised score", fontsize="x-large")
    fig.savefig(out / f"{prefix}aggregate.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    top = max(100.0, max(float(m.max()) for m in matrices.values()))
    taus = np.linspace(min(0.0, min(float(m.min()) for m in matrices.values())), top, 101)
    profiles, bands = statistics.performance_profiles(matrices, taus, repetitions=repetitions)
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=bands, ax=ax,
                                         xlabel="Normalised score (τ)",
                                         ylabel="Fraction of runs with score > τ")
    ax.legend(loc="upper right")  # the lines carry their labels (the bands do not)
    fig.savefig(out / f"{prefix}profiles.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    if improvement:
        probabilities = {pair.replace(" > ", ","): value[0] for pair, value in improvement.items()}
        bands = {pair.replace(" > ", ","): np.array(value[1:])
                 for pair, value in improvement.items()}
        ax = plot_utils.plot_probability_of_improvement(probabilities, bands)
        ax.figure.savefig(out / f"{prefix}improvement.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
