"""IQL: what matters. One choice changed at a time from the authors' IQL, and all together.

Each variant is algorithms/iql.py with a few flags (VARIANTS below: the choices where the authors'
code and other implementations, d3rlpy and CORL, differ). "all-d3rlpy" is d3rlpy's IQL; CORL's
differs from the authors' in its initialisation (PyTorch's), its observation normalisation and
its unclipped actions. Every (variant, dataset) is one run of
N seeds in its own process and output directory under `--runs-dir`; its results.json is copied to
`benchmarks/results/iql_ablation/<variant>__<dataset>.json` when it finishes. A run whose copy
exists is skipped, and one that was stopped is resumed from its latest checkpoint, so the
ablation may be spread over sessions. `--jobs 2` runs two at once, each on one CPU thread.
Every variant spells out all of its flags (AUTHORS below), so a variant means the same run
whatever iql.py's defaults are; the `normalized-observations` runs are iql.py's defaults since
this ablation, which are also the score runs (benchmarks/run_scores.py), so their results are
shared with benchmarks/results/scores/.

    python benchmarks/iql_ablation.py                          # every variant, halfcheetah-me
    python benchmarks/iql_ablation.py --variants authors all-d3rlpy --jobs 2
    python benchmarks/iql_ablation.py --table                  # only write the table and plot

The table (benchmarks/results/iql_ablation.md, copied into README "IQL: what matters") gives,
per variant and dataset, the final score (mean ± std over seeds, then each seed), the mean score
at 25k and 50k updates (how fast it learns), and the diagnostics of the last 5k updates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.run_directory import run_status  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results" / "iql_ablation"
TABLE = ROOT / "benchmarks" / "results" / "iql_ablation.md"
PLOT = ROOT / "benchmarks" / "results" / "iql_ablation_curves.png"

D3RLPY = {"hidden-init": "pytorch", "output-init": "pytorch", "q-target-value": "previous",
          "actor-schedule": "constant", "log-std-bound": "sigmoid", "clip-dataset-actions": False}
# name -> (what changes from the authors' IQL, flags); flags False are written --no-<flag>
VARIANTS = {
    "authors": ("none: the authors' choices (iql.py's defaults before this ablation)", {}),
    "pytorch-init": ("PyTorch's nn.Linear initialisation, every layer",
                     {"hidden-init": "pytorch", "output-init": "pytorch"}),
    "pytorch-init-output": ("PyTorch's initialisation of the output layers only",
                            {"output-init": "pytorch"}),
    "previous-v": ("Q target from the V before this update (Q and V trained together)",
                   {"q-target-value": "previous"}),
    "constant-actor-lr": ("constant policy learning rate (no cosine decay)",
                          {"actor-schedule": "constant"}),
    "sigmoid-log-std": ("log std = -5 + 7 sigmoid(p), starting at -1.5",
                        {"log-std-bound": "sigmoid"}),
    "no-action-clip": ("dataset actions not clipped to 1 - 1e-5",
                       {"clip-dataset-actions": False}),
    "all-d3rlpy": ("all of the above: d3rlpy's IQL", D3RLPY),
    "normalized-observations": ("states normalised by the dataset's mean and std (CORL; "
                                "iql.py's default since this ablation)",
                                {"normalize-observations": True}),
}
# The authors' defaults, spelled out, so that a variant means the same after a default changes.
AUTHORS = {"hidden-init": "orthogonal", "output-init": "orthogonal", "q-target-value": "updated",
           "actor-schedule": "cosine", "log-std-bound": "clip", "clip-dataset-actions": True,
           "normalize-observations": False}
DATASETS = ("offlax/halfcheetah/medium-expert-v1", "offlax/hopper/medium-replay-v1",
            "offlax/walker2d/medium-v1")
DIAGNOSTICS = ("weights_ess", "weights_clipped_fraction", "log_std_mean", "log_likelihood",
               "v_mean", "return_to_go_mean")


def flags(variant: str) -> list[str]:
    out = []
    for name, value in {**AUTHORS, **VARIANTS[variant][1]}.items():
        out += [f"--{name}"] if value is True else [f"--no-{name}"] if value is False else [
            f"--{name}", value]
    return out


def result_file(variant: str, env: str) -> Path:
    return RESULTS_DIR / f"{variant}__{env.replace('/', '_')}.json"


def command(variant: str, env: str, options) -> tuple[list[str], Path]:
    output_dir = Path(options.runs_dir) / variant / env.replace("/", "_")
    script = str(ROOT / "algorithms" / "iql.py")
    if (output_dir / "checkpoints").is_dir():
        return [sys.executable, script, "--resume", str(output_dir)], output_dir
    return [sys.executable, script, "--env", env, "--num-seeds", str(options.num_seeds),
            "--total-updates", str(options.total_updates), "--output-dir", str(output_dir),
            *flags(variant)], output_dir


def run_all(options):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    todo = []
    for env in options.datasets:
        for variant in options.variants:
            target = result_file(variant, env)
            if target.exists():
                print(f"skip {variant} {env}: {target.relative_to(ROOT)} exists")
                continue
            todo.append((variant, env))
    env_vars = dict(os.environ)
    pin = options.jobs > 1 and shutil.which("taskset") is not None
    if options.jobs > 1:  # one thread and one core each, or the runs fight over the cores
        env_vars["XLA_FLAGS"] = (env_vars.get("XLA_FLAGS", "")
                                 + " --xla_cpu_multi_thread_eigen=false").strip()
    running: list[tuple[subprocess.Popen, str, str, Path, int | None]] = []
    failed = []
    while todo or running:
        while todo and len(running) < options.jobs:
            variant, env = todo.pop(0)
            argv, output_dir = command(variant, env, options)
            if run_status(output_dir) == "finished":
                shutil.copyfile(output_dir / "results.json", result_file(variant, env))
                continue
            output_dir.mkdir(parents=True, exist_ok=True)
            if pin:
                busy = {job[4] for job in running}
                core = min(set(range(os.cpu_count() or 1)) - busy, default=0)
                argv = ["taskset", "-c", str(core), *argv]
            else:
                core = None
            print("+", " ".join(argv), flush=True)
            log = open(output_dir / "stdout.log", "a")
            running.append((subprocess.Popen(argv, env=env_vars, stdout=log,
                                             stderr=subprocess.STDOUT),
                            variant, env, output_dir, core))
        time.sleep(5)
        for job in list(running):
            process, variant, env, output_dir, _ = job
            if process.poll() is None:
                continue
            running.remove(job)
            if process.returncode == 0 and run_status(output_dir) == "finished":
                shutil.copyfile(output_dir / "results.json", result_file(variant, env))
                print(f"done {variant} {env}", flush=True)
            else:
                failed.append(f"{variant} {env} (exit {process.returncode}; see "
                              f"{output_dir / 'stdout.log'})")
    if failed:
        raise SystemExit("failed: " + "; ".join(failed))


def score_at(run: dict, update: int) -> float | None:
    for evaluation in run["evaluations"]:
        if evaluation["update"] == update:
            return sum(evaluation["normalized_score"]) / len(evaluation["normalized_score"])
    return None


def write_table():
    runs = {}
    for path in sorted(RESULTS_DIR.glob("*.json")):
        run = json.loads(path.read_text())
        runs[(path.name.split("__")[0], run["env"])] = run
    if not runs:
        raise SystemExit("no ablation runs in benchmarks/results/iql_ablation/ yet")
    envs = [env for env in DATASETS if any(key[1] == env for key in runs)]
    lines = [
        "# IQL: what matters",
        "",
        "`python benchmarks/iql_ablation.py`: algorithms/iql.py with one of the choices where "
        "the authors' code and d3rlpy differ, 3 seeds, 100k updates, 10 evaluation episodes per "
        "seed. Final: D4RL-normalised score, mean ± std over seeds (each seed). 25k, 50k: mean "
        "score there. Diagnostics: means over seeds and the last 5k updates (ESS: effective "
        "sample size of the advantage weights per batch, as a fraction of the batch; clipped: "
        "weights at 100; V - G: V(s) minus the discounted return-to-go, in training reward "
        "units).",
        "",
    ]
    for env in envs:
        lines += [f"## `{env}`", "",
                  "| variant | what changes | final | 25k | 50k | ESS | clipped | log std | "
                  "log-lik | V - G |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for variant, (what, _) in VARIANTS.items():
            run = runs.get((variant, env))
            if run is None or "final" not in run:
                continue
            final = run["final"]
            seeds = ", ".join(f"{s:.1f}" for s in final["normalized_score"])
            done = "" if run.get("status") == "finished" else f" (at {run['updates']:,})"
            train = run["evaluations"][-1].get("train", {})
            mean = {k: sum(v) / len(v) for k, v in train.items()}
            diag = [f"{mean[k]:.2f}" if k in mean else "" for k in DIAGNOSTICS[:4]]
            gap = (f"{mean['v_mean'] - mean['return_to_go_mean']:.1f}"
                   if "v_mean" in mean else "")
            early = [f"{s:.1f}" if s is not None else "" for s in
                     (score_at(run, 25_000), score_at(run, 50_000))]
            lines.append(f"| {variant}{done} | {what} | **{final['normalized_score_mean']:.1f}** "
                         f"± {final['normalized_score_std']:.1f} ({seeds}) | "
                         + " | ".join([*early, *diag, gap]) + " |")
        lines.append("")
    TABLE.write_text("\n".join(lines))
    print("\n".join(lines))
    plot(runs, envs)


def plot(runs: dict, envs: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for color, variant in enumerate(VARIANTS):
            run = runs.get((variant, env))
            if run is None or not run["evaluations"]:
                continue
            updates = np.array([e["update"] for e in run["evaluations"]])
            scores = np.array([e["normalized_score"] for e in run["evaluations"]])
            ax.plot(updates, scores.mean(1), color=f"C{color}", label=variant,
                    lw=2.5 if variant in ("authors", "all-d3rlpy", "normalized-observations") else 1.2)
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("normalised score (mean of seeds)")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=[DATASETS[0]])
    parser.add_argument("--total-updates", type=int, default=100_000)
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one thread each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "iql_ablation"))
    parser.add_argument("--table", action="store_true", help="only write the table and the plot")
    options = parser.parse_args()
    if not options.table:
        run_all(options)
    write_table()


if __name__ == "__main__":
    main()
