"""D4RL-style score runs: each algorithm on each dataset with N seeds, one run per process.

Every run writes its own output directory (results.json, TensorBoard, policy) under
`--runs-dir`, and its results.json is copied to `benchmarks/results/scores/<algo>__<env>.json`,
so runs may be spread over time and machines; `benchmarks/score_table.py` assembles the table
and the learning curves from those files. A run whose copy already exists is skipped; a run that
was killed or interrupted is resumed from its latest checkpoint (`--resume`).

With `--split-seeds` every seed is a process of its own (`--seed k --num-seeds 1`), copied to
`<algo>__<env>__seed<k>.json`; `score_table.py` merges the seeds of one algorithm and dataset.
Agent k of a `--num-seeds 3` run is the single run with `--seed k` (tests/test_algorithms.py), so
the two ways measure the same thing; splitting lets a slow algorithm's seeds run on several cores
(`--jobs`) and land one by one when a machine's time runs out before all three have finished.

    python benchmarks/run_scores.py --total-updates 100000 --num-seeds 3
    python benchmarks/run_scores.py --algorithms cql --split-seeds --jobs 2
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.run_directory import run_status  # noqa: E402
SCORES_DIR = ROOT / "benchmarks" / "results" / "scores"
ALGORITHMS = ("bc", "td3_bc", "iql", "cql", "bcq", "por")
DATASETS = ("offlax/hopper/medium-replay-v1", "offlax/walker2d/medium-v1",
            "offlax/halfcheetah/medium-expert-v1")
# The discrete files run on every level of the discrete tasks: CartPole's states and MinAtar
# SpaceInvaders' images.
DISCRETE_ALGORITHMS = ("bc_discrete", "bcq_discrete", "cql_discrete")
DISCRETE_DATASETS = tuple(f"offlax/{task}/{level}-v1" for task in ("cartpole",
                                                                    "minatar-spaceinvaders")
                          for level in ("random", "medium", "medium-replay", "expert",
                                        "medium-expert", "imperfect"))


def datasets_of(algorithm: str) -> tuple[str, ...]:
    return DISCRETE_DATASETS if algorithm in DISCRETE_ALGORITHMS else DATASETS


def score_file(algorithm: str, env: str, seed: int | None = None) -> Path:
    suffix = "" if seed is None else f"__seed{seed}"
    return SCORES_DIR / f"{algorithm}__{env.replace('/', '_')}{suffix}.json"


def run_one(algorithm: str, env: str, seed: int | None, options, extra: list[str]) -> str:
    """Run (or resume) one score run to the end and copy its results.json; returns its name."""
    target = score_file(algorithm, env, seed)
    name = target.stem
    output_dir = Path(options.runs_dir) / algorithm / env.replace("/", "_")
    if seed is not None:
        output_dir = output_dir / f"seed{seed}"
    script = str(ROOT / "algorithms" / f"{algorithm}.py")
    if options.force and output_dir.exists():
        shutil.rmtree(output_dir)
    if run_status(output_dir) != "finished":
        if (output_dir / "checkpoints").is_dir():
            command = [sys.executable, script, "--resume", str(output_dir)]
        else:
            seeds = (["--seed", str(seed), "--num-seeds", "1"] if seed is not None
                     else ["--num-seeds", str(options.num_seeds)])
            command = [sys.executable, script, "--env", env, *seeds,
                       "--total-updates", str(options.total_updates),
                       "--output-dir", str(output_dir), *extra]
        print("+", " ".join(command), flush=True)
        log = output_dir.parent / f"{output_dir.name}.log" if options.jobs > 1 else None
        if log is not None:  # parallel runs would interleave their progress bars
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as stream:
                subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT)
        else:
            subprocess.run(command, check=True)
    shutil.copyfile(output_dir / "results.json", target)
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="default: each algorithm's kind of datasets (continuous: the three "
                             "MuJoCo ones; discrete: every level of CartPole and MinAtar "
                             "SpaceInvaders); given, those of them that match each algorithm's "
                             "kind")
    parser.add_argument("--total-updates", type=int, default=100_000)
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--split-seeds", action="store_true",
                        help="a process per seed (--seed k --num-seeds 1), merged by score_table")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (one core each)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "scores"))
    parser.add_argument("--force", action="store_true", help="rerun runs that have results")
    options, extra = parser.parse_known_args()  # anything else goes to the algorithm's CLI

    SCORES_DIR.mkdir(parents=True, exist_ok=True)
    seeds = list(range(options.num_seeds)) if options.split_seeds else [None]
    todo = []
    envs = options.datasets or list(dict.fromkeys(
        env for algorithm in options.algorithms for env in datasets_of(algorithm)))
    for env in envs:
        for algorithm in options.algorithms:
            known = env in DATASETS or env in DISCRETE_DATASETS
            if known and env not in datasets_of(algorithm):
                continue  # a continuous file on discrete data, or the other way round
            for seed in seeds:
                target = score_file(algorithm, env, seed)
                if target.exists() and not options.force:
                    print(f"skip {algorithm} {env}: {target.relative_to(ROOT)} exists")
                else:
                    todo.append((algorithm, env, seed))
    stopped = []
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        futures = [pool.submit(run_one, *run, options, extra) for run in todo]
        try:
            for run, future in zip(todo, futures):
                try:
                    print("done:", future.result(), flush=True)
                except subprocess.CalledProcessError as error:  # interrupted (130), diverged...
                    stopped.append(f"{score_file(*run).stem} (exit {error.returncode})")
        except KeyboardInterrupt:  # the runs got the Ctrl-C too, and checkpoint
            pool.shutdown(wait=True, cancel_futures=True)
            raise SystemExit("interrupted: the running runs checkpointed; the same command "
                             "resumes them and starts the rest.") from None
    if stopped:
        raise SystemExit("not finished: " + ", ".join(stopped) + ". Their logs say why; the "
                         "same command resumes the interrupted ones.")


if __name__ == "__main__":
    main()
