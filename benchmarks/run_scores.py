"""D4RL-style score runs: each algorithm on each dataset with N seeds, one run per process.

Every run writes its own output directory (results.json, TensorBoard, policy) under
`--runs-dir`, and its results.json is copied to `benchmarks/results/scores/<algo>__<env>.json`,
so runs may be spread over time and machines; `benchmarks/score_table.py` assembles the table
and the learning curves from those files. A run whose copy already exists is skipped; a run that
was killed or interrupted is resumed from its latest checkpoint (`--resume`).

    python benchmarks/run_scores.py --total-updates 100000 --num-seeds 3
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.run_directory import run_status  # noqa: E402
SCORES_DIR = ROOT / "benchmarks" / "results" / "scores"
ALGORITHMS = ("bc", "td3_bc", "iql", "cql", "bcq", "por")
DATASETS = ("offlax/hopper/medium-replay-v1", "offlax/walker2d/medium-v1",
            "offlax/halfcheetah/medium-expert-v1")


def score_file(algorithm: str, env: str) -> Path:
    return SCORES_DIR / f"{algorithm}__{env.replace('/', '_')}.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--total-updates", type=int, default=100_000)
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "scores"))
    parser.add_argument("--force", action="store_true", help="rerun runs that have results")
    options, extra = parser.parse_known_args()  # anything else goes to the algorithm's CLI

    SCORES_DIR.mkdir(parents=True, exist_ok=True)
    for env in options.datasets:
        for algorithm in options.algorithms:
            target = score_file(algorithm, env)
            if target.exists() and not options.force:
                print(f"skip {algorithm} {env}: {target.relative_to(ROOT)} exists")
                continue
            output_dir = Path(options.runs_dir) / algorithm / env.replace("/", "_")
            script = str(ROOT / "algorithms" / f"{algorithm}.py")
            if options.force and output_dir.exists():
                shutil.rmtree(output_dir)
            status = run_status(output_dir)
            if status == "finished":
                shutil.copyfile(output_dir / "results.json", target)
                continue
            if (output_dir / "checkpoints").is_dir():
                command = [sys.executable, script, "--resume", str(output_dir)]
            else:
                command = [sys.executable, script, "--env", env,
                           "--num-seeds", str(options.num_seeds),
                           "--total-updates", str(options.total_updates),
                           "--output-dir", str(output_dir), *extra]
            print("+", " ".join(command), flush=True)
            subprocess.run(command, check=True)
            shutil.copyfile(output_dir / "results.json", target)


if __name__ == "__main__":
    main()
