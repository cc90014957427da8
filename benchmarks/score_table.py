"""Assemble the score runs (benchmarks/results/scores/*.json) into a table and learning curves.

    python benchmarks/score_table.py    # -> benchmarks/results/scores.md, scores_curves.png

The discrete files' runs (on the discrete tasks) get their own table in the same file and their
own curves, scores_discrete_curves.png.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from run_scores import (  # noqa: E402  (beside this file)
    ALGORITHMS,
    DATASETS,
    DISCRETE_ALGORITHMS,
    DISCRETE_DATASETS,
    SCORES_DIR,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load_runs() -> list[dict]:
    """One record per (algorithm, dataset): a `--num-seeds N` run as it is, or the seeds of a
    `--split-seeds` run (`<algo>__<env>__seed<k>.json`) merged into one."""
    runs, split = [], {}
    for path in sorted(SCORES_DIR.glob("*.json")):
        match = re.fullmatch(r"(.+)__seed(\d+)", path.stem)
        if match:
            split.setdefault(match[1], []).append(json.loads(path.read_text()))
        else:
            runs.append(json.loads(path.read_text()))
    return runs + [merge_seeds(parts) for parts in split.values()]


def merge_seeds(parts: list[dict]) -> dict:
    """Single-seed runs of one algorithm on one dataset as one run of all their seeds. Per-seed
    lists are concatenated in seed order; evaluations are kept at the updates every part has;
    `wall_seconds` is their sum (the core time) and `updates_per_second` their mean."""
    parts = sorted(parts, key=lambda part: part["seeds"][0])
    merged = {**parts[0], "seeds": [seed for part in parts for seed in part["seeds"]]}
    merged["split_seeds"] = True

    def per_seed(records: list[dict]) -> dict:
        first = records[0]
        return {key: ([x for r in records for x in r[key]] if isinstance(value, list) else
                      per_seed([r[key] for r in records]) if isinstance(value, dict) else value)
                for key, value in first.items()}

    common = set.intersection(*({e["update"] for e in part["evaluations"]} for part in parts))
    merged["evaluations"] = [
        per_seed([next(e for e in part["evaluations"] if e["update"] == update) for part in parts])
        for update in sorted(common)]
    if all("final" in part for part in parts):
        final = per_seed([part["final"] for part in parts])
        scores = np.array(final["normalized_score"])
        final.update(normalized_score_mean=float(scores.mean()),
                     normalized_score_std=float(scores.std()))
        merged["final"] = final
    else:
        merged.pop("final", None)
    merged["wall_seconds"] = sum(part["wall_seconds"] for part in parts)
    merged["updates_per_second"] = float(np.mean([part["updates_per_second"] for part in parts]))
    return merged


def previous_version(env: str) -> str | None:
    """`offlax/<env>/<level>-v1` -> `-v0`: the same dataset from offlax's previous generator."""
    match = re.fullmatch(r"(offlax/.+-v)(\d+)", env)
    return f"{match[1]}{int(match[2]) - 1}" if match and int(match[2]) > 0 else None


def find_run(by_key: dict, algorithm: str, env: str) -> tuple[dict | None, dict | None]:
    """The run on `env` itself, and the run on its previous version (which stands in, marked,
    until the current version has been run)."""
    older = previous_version(env)
    return by_key.get((algorithm, env)), by_key.get((algorithm, older)) if older else None


SEEDS = 3  # run_scores.py's default --num-seeds: a split run with fewer has seeds still to run


def score_cell(run: dict) -> str:
    final = run["final"]
    seeds = ", ".join(f"{s:.1f}" for s in final["normalized_score"])
    partial = (f"; {len(run['seeds'])} of {SEEDS} seeds so far"
               if run.get("split_seeds") and len(run["seeds"]) < SEEDS else "")
    return (f"**{final['normalized_score_mean']:.1f}** ± {final['normalized_score_std']:.1f} "
            f"({seeds}{partial})")


def main():
    runs = load_runs()
    if not runs:
        raise SystemExit("no runs in benchmarks/results/scores/: run benchmarks/run_scores.py first")
    discrete = [r for r in runs if r["algorithm"] in DISCRETE_ALGORITHMS]
    continuous = [r for r in runs if r["algorithm"] not in DISCRETE_ALGORITHMS]
    lines = [
        "# Normalised scores on offlax's D4RL-style datasets",
        "",
        "Final evaluation (10 deterministic episodes per seed), D4RL-normalised with the dataset's "
        "reference scores: mean ± std over seeds, then each seed. Written by "
        "`benchmarks/score_table.py` from `benchmarks/results/scores/*.json` (one file per run). "
        "A cell marked † was measured on the dataset's previous version (`-v0`, the previous "
        "generator's data, which differed from machine to machine); it stands in until the "
        "current version has been run. Where both exist, the cell shows the current one and the "
        "previous one after it.",
        "",
    ]
    lines += group_table(continuous, ALGORITHMS, DATASETS, "scores_")
    if discrete:
        lines += ["", "## Discrete actions", "",
                  "The discrete files on every level of the discrete tasks (greedy evaluation, "
                  "as each file's `--eval-epsilon`).", ""]
        lines += group_table(discrete, DISCRETE_ALGORITHMS, DISCRETE_DATASETS, "scores_discrete_")
    (RESULTS / "scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def group_table(runs: list[dict], default_algorithms, default_datasets, prefix: str) -> list[str]:
    """The score table, the aggregate estimates and the run table of one group of runs (Markdown
    lines); its curves and aggregate plots go to benchmarks/results/<prefix>*.png."""
    older = {previous_version(env) for env in default_datasets} - {None}
    envs = list(dict.fromkeys([*default_datasets,
                               *(r["env"] for r in runs if r["env"] not in older)]))
    algorithms = list(dict.fromkeys([*default_algorithms, *(r["algorithm"] for r in runs)]))
    by_key = {(r["algorithm"], r["env"]): r for r in runs}
    report = RESULTS / "datasets" / "report.json"
    rows = json.loads(report.read_text()) if report.exists() else []
    data_scores = {row["dataset"]: row["normalized_mean"] for row in rows}

    lines = [
        "| dataset | data (mean episode) | " + " | ".join(algorithms) + " |",
        "|---|---:|" + "---:|" * len(algorithms),
    ]
    for env in envs:
        cells = []
        for algorithm in algorithms:
            run, previous = find_run(by_key, algorithm, env)
            if run is not None and "final" in run:
                cell = score_cell(run)
                if previous is not None and "final" in previous:
                    cell += f"; v0: {score_cell(previous)}"
            elif previous is not None and "final" in previous:
                cell = f"{score_cell(previous)} †"
            else:
                cell = "pending"
            cells.append(cell)
        data = f"{data_scores[env]:.1f}" if env in data_scores else ""
        lines.append(f"| `{env}` | {data} | " + " | ".join(cells) + " |")
    lines += aggregate_lines(by_key, algorithms, default_datasets, prefix)
    lines += ["", "| run | updates | seeds | updates/s | wall | device |",
              "|---|---:|---:|---:|---:|---|"]
    for env in [*envs, *sorted(older)]:
        for algorithm in algorithms:
            run = by_key.get((algorithm, env))
            if run is not None:
                how = " (one process per seed; wall: their sum)" if run.get("split_seeds") else ""
                lines.append(
                    f"| {algorithm} `{env}`{how} | {run['updates']:,} | {len(run['seeds'])} | "
                    f"{run['updates_per_second']:.0f} | {run['wall_seconds'] / 60:.1f} min | "
                    f"{run['device']} |")

    columns = min(len(envs), 6)  # the discrete tasks' six levels: a row per task
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(envs):]:
        ax.set_visible(False)
    for ax, env in zip(axes.flat, envs):
        for color, algorithm in enumerate(algorithms):  # one colour per algorithm in every panel
            run, previous = find_run(by_key, algorithm, env)
            lines_of_runs = (("-", algorithm, run), ("--", f"{algorithm} (v0)", previous))
            for style, label, shown in lines_of_runs:
                if shown is None or not shown["evaluations"]:
                    continue
                updates = np.array([e["update"] for e in shown["evaluations"]])
                scores = np.array([e["normalized_score"] for e in shown["evaluations"]])
                mean, std = scores.mean(1), scores.std(1)
                ax.plot(updates, mean, style, color=f"C{color}", label=label)
                ax.fill_between(updates, mean - std, mean + std, color=f"C{color}", alpha=0.15)
            if run is None and previous is None:
                ax.plot([], [], color=f"C{color}", label=f"{algorithm} (pending)")
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("normalised score (mean ± std over seeds)")
    for ax in axes.flat[:len(envs)]:
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / f"{prefix}curves.png", dpi=120)
    plt.close(figure)
    return lines


def aggregate_lines(by_key: dict, algorithms, datasets, prefix: str) -> list[str]:
    """Interval estimates over the group's datasets (sweeps/report.py, rliable): IQM and mean
    with 95% stratified-bootstrap CIs, performance profiles, and P(X > first algorithm), for the
    algorithms whose runs on every dataset (current version) have all SEEDS seeds."""
    complete = {}
    for algorithm in algorithms:
        finals = [by_key.get((algorithm, env), {}).get("final") for env in datasets]
        if all(f is not None and len(f["normalized_score"]) == SEEDS for f in finals):
            complete[algorithm] = np.array([f["normalized_score"] for f in finals]).T
    if not complete:
        return []
    lines = ["", f"Over the {len(datasets)} datasets x {SEEDS} seeds (interquartile mean and "
             "mean of the final scores, 95% stratified-bootstrap confidence intervals, "
             "[rliable](https://github.com/google-research/rliable)); "
             + (f"not yet complete: {', '.join(a for a in algorithms if a not in complete)}."
                if len(complete) < len(algorithms) else "every algorithm.")]
    try:
        from sweeps.report import aggregate_section
    except ImportError as error:
        return lines + ["", f"(not computed: {error})"]
    baseline = algorithms[0]
    pairs = [(a, baseline) for a in complete if a != baseline] if baseline in complete else []
    section, _ = aggregate_section(complete, pairs, RESULTS, prefix=prefix)
    return lines + section


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
