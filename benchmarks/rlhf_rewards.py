"""Offline RL on rewards learned from scripted preferences, against the same algorithm on the
true reward.

For every dataset, label budget and seed k: the scripted teacher (perfectly rational, B-Pref)
answers `budget` uniformly drawn pairs of 50-step segments (`python -m common.preferences
label --seed k`), `algorithms/reward_model.py --seed k` learns a reward from them, and each
algorithm of `--algorithms` (IQL by default; any algorithm file) trains on the relabelled
dataset with `--seed k`, one process per seed, its own defaults otherwise. Every stage reuses
its output where it is already there (an interrupted run resumes from its latest checkpoint),
so the script continues where it stopped. A finished (algorithm, dataset, budget, seed) writes
`benchmarks/results/rlhf/<algorithm>__<env>__<budget>__seed<k>.json`: the reward model's
held-out accuracy and correlations, and the run's results.json. `--table` writes
`benchmarks/results/rlhf.md` and `rlhf.png` (score against labels), with the algorithm on the
true reward (the score table's runs, `benchmarks/results/scores/`: the same seeds and updates)
as the reference.

    python benchmarks/rlhf_rewards.py --jobs 2          # IQL on all datasets, budgets and seeds
    python benchmarks/rlhf_rewards.py --algorithms td3_bc --datasets offlax/hopper/medium-replay-v1
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from common.run_directory import run_status  # noqa: E402
from run_scores import ALGORITHMS  # noqa: E402  (beside this file)

RESULTS = ROOT / "benchmarks" / "results"
RLHF_DIR = RESULTS / "rlhf"
DATASETS = ("offlax/hopper/medium-replay-v1", "offlax/walker2d/medium-v1")
BUDGETS = (100, 300, 1000)


def result_file(algorithm: str, env: str, budget: int, seed: int) -> Path:
    return RLHF_DIR / f"{algorithm}__{env.replace('/', '_')}__{budget}__seed{seed}.json"


def run_one(env: str, budget: int, seed: int, algorithms: list[str], options) -> list[str]:
    """Labels, reward model, then each of `algorithms` for one (dataset, budget, seed), in
    order (they share the labels and the reward model); returns the result files written."""
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
    rm_results = json.loads((reward_model / "results.json").read_text())
    written = []
    for algorithm in algorithms:
        run = directory / algorithm
        if run_status(run) != "finished":
            if (run / "checkpoints").is_dir():
                call(f"algorithms/{algorithm}.py", "--resume", str(run))
            else:
                call(f"algorithms/{algorithm}.py", "--env", str(reward_model / "relabelled.hdf5"),
                     "--seed", str(seed), "--num-seeds", "1", "--total-updates",
                     str(options.total_updates), "--eval-interval",
                     str(min(options.eval_interval, options.total_updates)),
                     "--output-dir", str(run))
        with open(labels) as stream:
            label_format = json.loads(stream.readline())["version"]
        record = {"algorithm": algorithm, "env": env, "budget": budget, "seed": seed,
                  "reward_model": {**{k: rm_results[k] for k in ("final", "labels",
                                                                 "train_seconds")},
                                   "label_format": label_format,
                                   "reward_normalization":
                                       rm_results["args"]["reward_normalization"]},
                  "run": json.loads((run / "results.json").read_text())}
        target = result_file(algorithm, env, budget, seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1))
        written.append(str(target.relative_to(ROOT)))
    return written


def table():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from score_table import load_runs

    records = [json.loads(p.read_text()) for p in sorted(RLHF_DIR.glob("*.json"))]
    if not records:
        raise SystemExit("no results in benchmarks/results/rlhf/: run this script first")
    true_runs = {(run["algorithm"], run["env"]): run["final"] for run in load_runs()
                 if "final" in run}
    envs = list(dict.fromkeys(r["env"] for r in records))
    algorithms = [a for a in ALGORITHMS if any(r["algorithm"] == a for r in records)]
    lines = ["# Offline RL on rewards learned from scripted preferences", "",
             "Written by `benchmarks/rlhf_rewards.py --table`. Per algorithm, dataset and label "
             "budget (pairs of 50-step segments answered by the perfectly rational scripted "
             "teacher): the reward model's held-out preference accuracy, the Pearson correlation "
             "of learned and true rewards per transition and the Spearman correlation of episode "
             "returns, then the algorithm's final D4RL-normalised score (100k updates, 10 "
             "episodes per seed) on the relabelled dataset: mean ± std over seeds (each seed), "
             "next to the same algorithm on the true reward (the score table's run, same seeds "
             "and updates) and their ratio. `rlhf.png` plots the score against the number of "
             "labels, with the true-reward run (± its std, shaded) and BC, which uses no reward.",
             "", "| algorithm | dataset | labels | seeds | held-out accuracy | Pearson r "
             "(transitions) | Spearman (returns) | learned reward | true reward | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    figure, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for index, algorithm in enumerate(algorithms):
            color = f"C{index}"
            true = true_runs.get((algorithm, env))
            points = []
            mine = [r for r in records if r["env"] == env and r["algorithm"] == algorithm]
            for budget in sorted({r["budget"] for r in mine}):
                rows = sorted((r for r in mine if r["budget"] == budget), key=lambda r: r["seed"])
                rm = [r["reward_model"]["final"] for r in rows]
                scores = [r["run"]["final"]["normalized_score"][0] for r in rows]
                mean = float(np.mean(scores))
                true_cell = (f"{true['normalized_score_mean']:.1f} ± "
                             f"{true['normalized_score_std']:.1f}" if true else "not run")
                ratio = f"{mean / true['normalized_score_mean']:.2f}" if true else ""
                lines.append(
                    f"| {algorithm} | `{env}` | {budget} | {len(rows)} | "
                    f"{np.mean([m['validation_accuracy'] for m in rm]):.3f} | "
                    f"{np.mean([m['transition_pearson'] for m in rm]):.3f} | "
                    f"{np.mean([m['episode_return_spearman'] for m in rm]):.3f} | "
                    f"**{mean:.1f}** ± {np.std(scores):.1f} "
                    f"({', '.join(f'{s:.1f}' for s in scores)}) | {true_cell} | {ratio} |")
                points.append((budget, mean, float(np.std(scores))))
            if points:
                budgets, means, stds = zip(*points)
                ax.errorbar(budgets, means, yerr=stds, marker="o", capsize=3, color=color,
                            label=f"{algorithm}, learned reward")
            if true:
                mean, std = true["normalized_score_mean"], true["normalized_score_std"]
                ax.axhline(mean, color=color, ls="--", label=f"{algorithm}, true reward")
                ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, lw=0)
        bc = true_runs.get(("bc", env))  # uses no reward: the floor that a reward has to lift
        if bc and "bc" not in algorithms:
            ax.axhline(bc["normalized_score_mean"], color="grey", ls=":", label="BC (no reward)")
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
    parser.add_argument("--algorithms", nargs="+", default=["iql"], choices=ALGORITHMS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds to run (default 0 1 2)")
    parser.add_argument("--total-updates", type=int, default=100_000,
                        help="updates of each run (the score table's)")
    parser.add_argument("--eval-interval", type=int, default=5_000,
                        help="updates between evaluations (every algorithm file's default)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="(dataset, budget, seed) groups at the same time (one core each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "rlhf"))
    parser.add_argument("--table", action="store_true", help="only assemble the table and plot")
    options = parser.parse_args()
    if options.table:
        return table()
    todo = []
    for env in options.datasets:
        for budget in options.budgets:
            for seed in options.seeds:
                missing = [a for a in options.algorithms
                           if not result_file(a, env, budget, seed).exists()]
                if missing:
                    todo.append((env, budget, seed, missing))
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        futures = [pool.submit(run_one, *group, options) for group in todo]
        for future in futures:
            print("done:", *future.result(), flush=True)


if __name__ == "__main__":
    main()
