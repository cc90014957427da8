"""Wall-clock time of whole runs on this machine's accelerator: each algorithm file, run as a user
runs it, for `--total-updates` updates with 1 and 10 vmapped seeds (split over the local devices
where there are several), one evaluation at the end.

    python benchmarks/accelerator_timing.py                       # TD3+BC, IQL, CQL; 1M updates
    python benchmarks/accelerator_timing.py --algorithms iql --seeds 10 --total-updates 100000

Each run is a process of its own (`algorithms/<name>.py ... --eval-interval <total>
--eval-episodes 1`); its wall time counts everything a user waits for: start, dataset load,
compilation, the updates, the final evaluation. The rows go to
`benchmarks/results/accelerator_timing.md` (appended, with the device and date), beside the
published figures they answer: the IQL paper's runtime comparison (Kostrikov et al. 2022: TD3+BC
20 min, IQL 20 min, CQL 80 min per 1M updates, one seed on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "accelerator_timing.md"
PUBLISHED_MINUTES_PER_1M = {"td3_bc": 20, "iql": 20, "cql": 80}  # IQL paper, 1 seed


def device_name() -> str:
    import jax

    device = jax.devices()[0]
    return f"{jax.device_count()} x {getattr(device, 'device_kind', device.platform)}"


def time_run(algorithm: str, env: str, seeds: int, updates: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "run"
        command = [sys.executable, str(ROOT / "algorithms" / f"{algorithm}.py"), "--env", env,
                   "--num-seeds", str(seeds), "--total-updates", str(updates),
                   "--eval-interval", str(updates), "--eval-episodes", "1",
                   "--output-dir", str(output)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TQDM_DISABLE": "1"})
        wall = time.perf_counter() - start
        results = json.loads((output / "results.json").read_text())
    return {"algorithm": algorithm, "seeds": seeds, "updates": updates, "wall_s": wall,
            "updates_per_s": results["updates_per_second"],
            "first_call_s": results["first_call_seconds"], "devices": results.get("devices", 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["td3_bc", "iql", "cql"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--total-updates", type=int, default=1_000_000)
    parser.add_argument("--env", default="offlax/hopper/medium-replay-v1")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()

    device = device_name()
    rows = []
    for algorithm in options.algorithms:
        for seeds in options.seeds:
            row = time_run(algorithm, options.env, seeds, options.total_updates)
            minutes_per_1m = row["wall_s"] / 60 * 1_000_000 / row["updates"]
            published = PUBLISHED_MINUTES_PER_1M.get(algorithm)
            rows.append(
                f"| {date.today()} | {device} | {algorithm} | {seeds} | {row['devices']} | "
                f"{row['updates']:,} | {row['wall_s'] / 60:.1f} | {minutes_per_1m:.1f} | "
                f"{row['updates_per_s']:.0f} | {row['first_call_s']:.0f} | "
                f"{published if published and seeds == 1 else '–'} |")
            print(rows[-1], flush=True)
    if not options.output.exists():
        options.output.write_text(
            "# Whole runs on an accelerator\n\n`python benchmarks/accelerator_timing.py` "
            f"(dataset {options.env}; one evaluation episode per seed at the end).\n\n"
            "| date | device | algorithm | seeds | devices used | updates | wall min | "
            "min per 1M updates | updates/s (each seed) | first call s (compile) | "
            "published min per 1M (IQL paper) |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
            "---:|---:|\n")
    with open(options.output, "a") as file:
        file.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
