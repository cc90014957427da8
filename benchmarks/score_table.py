"""Assemble the score runs (benchmarks/results/scores/*.json) into a table and learning curves.

    python benchmarks/score_table.py    # -> benchmarks/results/scores.md, scores_curves.png
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from run_scores import ALGORITHMS, DATASETS, SCORES_DIR  # noqa: E402  (beside this file)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load_runs() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(SCORES_DIR.glob("*.json"))]


def main():
    runs = load_runs()
    if not runs:
        raise SystemExit("no runs in benchmarks/results/scores/: run benchmarks/run_scores.py first")
    envs = list(dict.fromkeys([*DATASETS, *(r["env"] for r in runs)]))
    algorithms = list(dict.fromkeys([*ALGORITHMS, *(r["algorithm"] for r in runs)]))
    by_key = {(r["algorithm"], r["env"]): r for r in runs}
    report = RESULTS / "datasets" / "report.json"
    rows = json.loads(report.read_text()) if report.exists() else []
    data_scores = {row["dataset"]: row["normalized_mean"] for row in rows}

    lines = [
        "# Normalised scores on offlax's D4RL-style datasets",
        "",
        "Final evaluation (10 deterministic episodes per seed), D4RL-normalised with the dataset's "
        "reference scores: mean ± std over seeds, then each seed. Written by "
        "`benchmarks/score_table.py` from `benchmarks/results/scores/*.json` (one file per run).",
        "",
        "| dataset | data (mean episode) | " + " | ".join(algorithms) + " |",
        "|---|---:|" + "---:|" * len(algorithms),
    ]
    for env in envs:
        cells = []
        for algorithm in algorithms:
            run = by_key.get((algorithm, env))
            if run is None or "final" not in run:
                cells.append("pending")
                continue
            final = run["final"]
            seeds = ", ".join(f"{s:.1f}" for s in final["normalized_score"])
            mean, std = final["normalized_score_mean"], final["normalized_score_std"]
            cells.append(f"**{mean:.1f}** ± {std:.1f} ({seeds})")
        data = f"{data_scores[env]:.1f}" if env in data_scores else ""
        lines.append(f"| `{env}` | {data} | " + " | ".join(cells) + " |")
    lines += ["", "| run | updates | seeds | updates/s | wall | device |",
              "|---|---:|---:|---:|---:|---|"]
    for env in envs:
        for algorithm in algorithms:
            run = by_key.get((algorithm, env))
            if run is not None:
                lines.append(
                    f"| {algorithm} `{env}` | {run['updates']:,} | {len(run['seeds'])} | "
                    f"{run['updates_per_second']:.0f} | {run['wall_seconds'] / 60:.1f} min | "
                    f"{run['device']} |")
    (RESULTS / "scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    figure, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for color, algorithm in enumerate(algorithms):  # one colour per algorithm in every panel
            run = by_key.get((algorithm, env))
            if run is None or not run["evaluations"]:
                ax.plot([], [], color=f"C{color}", label=f"{algorithm} (pending)")
                continue
            updates = np.array([e["update"] for e in run["evaluations"]])
            scores = np.array([e["normalized_score"] for e in run["evaluations"]])
            mean, std = scores.mean(1), scores.std(1)
            ax.plot(updates, mean, color=f"C{color}", label=algorithm)
            ax.fill_between(updates, mean - std, mean + std, color=f"C{color}", alpha=0.2)
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalised score (mean ± std over seeds)")
    for ax in axes[0]:
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "scores_curves.png", dpi=120)


if __name__ == "__main__":
    main()
