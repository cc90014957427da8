"""IQL on rewards learned from scripted preferences, against IQL on the true reward.

For every dataset, label budget and seed k: the scripted teacher (perfectly rational, B-Pref)
answers `budget` uniformly drawn pairs of 50-step segments (`python -m common.preferences
label --seed k`), `algorithms/reward_model.py --seed k` learns a reward from them, and
`algorithms/iql.py --seed k` trains on the relabelled dataset, one process per seed. Every stage
reuses its output where it is already there (IQL resumes from its latest checkpoint), so the
script continues where it stopped. A finished (dataset, budget, seed) writes
`benchmarks/results/rlhf/<env>__<budget>__seed<k>.json`: the reward model's held-out accuracy
and correlations, and IQL's results.json. `--table` writes `benchmarks/results/rlhf.md` and
`rlhf.png` (score against labels), with IQL on the true reward (the score table's runs,
`benchmarks/results/scores/iql__<env>.json`: the same seeds and updates) as the reference.

    python benchmarks/rlhf_rewards.py --jobs 2          # all datasets, budgets and seeds
    python benchmarks/rlhf_rewards.py --datasets offlax/hopper/medium-replay-v1 --budgets 1000
    python benchmarks/rlhf_rewards.py --table
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.run_directory import run_status  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RLHF_DIR = RESULTS / "rlhf"
DATASETS = ("offlax/hopper/medium-replay-v1", "offlax/walker2d/medium-v1")
BUDGETS = (100, 300, 1000)


def result_file(env: str, budget: int, seed: int) -> Path:
    return RLHF_DIR / f"{env.replace('/', '_')}__{budget}__seed{seed}.json"


def run_one(env: str, budget: int, seed: int, options) -> str:
    """Labels, reward model and IQL for one (dataset, budget, seed); returns its result file."""
    directory = Path(options.runs_dir) / env.replace("/", "_") / str(budget) / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "log.txt", "a")

    def call(*argv):
        print("+", " ".join(argv), file=log, flush=True)
        subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, stdout=log,
                       stderr=subprocess.STDOUT)

    labels = directory / "labels.jsonl"
    if not labels.exists():
        call("-m", "common.preferences", "label", "--env", env, "--num-queries", str(budget),
             "--seed", str(seed), "--output", str(labels))
    reward_model = directory / "reward_model"
    if run_status(reward_model) != "finished":
        shutil.rmtree(reward_model, ignore_errors=True)  # seconds to redo; no partial state
        call("algorithms/reward_model.py", "--labels", str(labels), "--seed", str(seed),
             "--output-dir", str(reward_model))
    iql = directory / "iql"
    if run_status(iql) != "finished":
        if (iql / "checkpoints").is_dir():
            call("algorithms/iql.py", "--resume", str(iql))
        else:
            call("algorithms/iql.py", "--env", str(reward_model / "relabelled.hdf5"),
                 "--seed", str(seed), "--num-seeds", "1", "--total-updates",
                 str(options.total_updates), "--eval-interval",
                 str(min(options.eval_interval, options.total_updates)), "--output-dir", str(iql))
    rm_results = json.loads((reward_model / "results.json").read_text())
    record = {"env": env, "budget": budget, "seed": seed,
              "reward_model": {k: rm_results[k] for k in ("final", "labels", "train_seconds")},
              "iql": json.loads((iql / "results.json").read_text())}
    target = result_file(env, budget, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1))
    return str(target.relative_to(ROOT))


def table():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    records = [json.loads(p.read_text()) for p in sorted(RLHF_DIR.glob("*.json"))]
    if not records:
        raise SystemExit("no results in benchmarks/results/rlhf/: run this script first")
    envs = list(dict.fromkeys([*DATASETS, *(r["env"] for r in records)]))
    lines = ["# IQL on rewards learned from scripted preferences", "",
             "Written by `benchmarks/rlhf_rewards.py --table`. Per label budget: the reward "
             "model's held-out preference accuracy and Pearson correlation with the true reward "
             "per transition, then IQL's final D4RL-normalised score (100k updates, 10 episodes "
             "per seed) on the relabelled dataset: mean ± std over seeds (each seed), and its "
             "ratio to IQL on the true reward (the score table's run, same seeds and updates).",
             "", "| dataset | labels | seeds | held-out accuracy | Pearson r | IQL, learned reward "
             "| IQL, true reward | ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    figure, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        true_path = RESULTS / "scores" / f"iql__{env.replace('/', '_')}.json"
        true = json.loads(true_path.read_text())["final"] if true_path.exists() else None
        points = []
        for budget in sorted({r["budget"] for r in records if r["env"] == env}):
            rows = sorted((r for r in records if r["env"] == env and r["budget"] == budget),
                          key=lambda r: r["seed"])
            accuracy = [r["reward_model"]["final"]["validation_accuracy"] for r in rows]
            pearson = [r["reward_model"]["final"]["transition_pearson"] for r in rows]
            scores = [r["iql"]["final"]["normalized_score"][0] for r in rows]
            mean = float(np.mean(scores))
            true_cell = (f"{true['normalized_score_mean']:.1f} ± {true['normalized_score_std']:.1f}"
                         if true else "")
            ratio = f"{mean / true['normalized_score_mean']:.2f}" if true else ""
            lines.append(
                f"| `{env}` | {budget} | {len(rows)} | {np.mean(accuracy):.3f} | "
                f"{np.mean(pearson):.3f} | **{mean:.1f}** ± {np.std(scores):.1f} "
                f"({', '.join(f'{s:.1f}' for s in scores)}) | {true_cell} | {ratio} |")
            points.append((budget, mean, float(np.std(scores))))
        if points:
            budgets, means, stds = zip(*points)
            ax.errorbar(budgets, means, yerr=stds, marker="o", capsize=3,
                        label="IQL, learned reward")
        if true:
            ax.axhline(true["normalized_score_mean"], color="k", ls="--",
                       label="IQL, true reward")
        ax.set_xscale("log")
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("preference labels (pairs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("normalised score (mean ± std over seeds)")
    figure.tight_layout()
    figure.savefig(RESULTS / "rlhf.png", dpi=120)
    (RESULTS / "rlhf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--total-updates", type=int, default=100_000, help="IQL's updates")
    parser.add_argument("--eval-interval", type=int, default=5_000, help="IQL's (its default)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (one core each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "rlhf"))
    parser.add_argument("--table", action="store_true", help="only assemble the table and plot")
    options = parser.parse_args()
    if options.table:
        return table()
    todo = [(env, budget, seed) for env in options.datasets for budget in options.budgets
            for seed in range(options.seeds) if not result_file(env, budget, seed).exists()]
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        futures = [pool.submit(run_one, *run, options) for run in todo]
        for future in futures:
            print("done:", future.result(), flush=True)


if __name__ == "__main__":
    main()
