"""Generate offlax's D4RL-style dataset suites from the committed behaviour policies.

Each (environment, level) is rolled out by `common.behaviour` and stored as a Minari dataset
`offlax/<env>/<level>[-<size>]-v0` in the local Minari directory. Levels run in parallel worker
processes; medium-expert is assembled from medium and expert once both exist.

    python benchmarks/generate_datasets.py                      # hopper, walker2d, halfcheetah
    python benchmarks/generate_datasets.py --envs invertedpendulum --size 20000
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import behaviour  # noqa: E402
from common.datasets import minari_local_exists, load_dataset  # noqa: E402


@dataclass
class Args:
    envs: tuple[str, ...] = ("hopper", "walker2d", "halfcheetah")
    """Environments (policy files in common/policies/)."""
    levels: tuple[str, ...] = behaviour.LEVELS
    """Dataset levels to build."""
    size: int | None = None
    """Transitions per dataset; default D4RL's (1M; medium-replay as it falls; medium-expert 2M)."""
    workers: int = 2
    """Worker processes (one level each at a time)."""
    force: bool = False
    """Delete and rebuild datasets that already exist."""
    timings: str | None = "benchmarks/results/generation_times.json"
    """Where to record the wall time of every dataset (None: do not record)."""


def build(spec: behaviour.OfflaxSpec) -> tuple[str, float]:
    start = time.time()
    behaviour.build_dataset(spec, progress=False)
    load_dataset(spec.dataset_id)  # writes the flat-array cache, so later loads are fast
    return spec.dataset_id, time.time() - start


def main(args: Args):
    import minari

    unknown = sorted(set(args.envs) - set(behaviour.available_envs()))
    if unknown:
        raise SystemExit(f"no behaviour policies for {unknown}; have {behaviour.available_envs()}")
    specs = [behaviour.OfflaxSpec(env, level, args.size) for env in args.envs for level in args.levels]
    if args.force:
        for spec in specs:
            if minari_local_exists(spec.dataset_id):
                minari.delete_dataset(spec.dataset_id)
    # medium-expert last: it is assembled from medium and expert.
    first = [s for s in specs if s.level != "medium-expert"]
    last = [s for s in specs if s.level == "medium-expert"]
    timings = {}
    start = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:  # fork is unsafe once JAX runs
        for batch in (first, last):
            for dataset_id, seconds in pool.imap_unordered(build, batch):
                timings[dataset_id] = round(seconds, 1)
                print(f"{dataset_id}: {seconds:.0f} s", flush=True)
    total = time.time() - start
    print(f"all done in {total:.0f} s")
    if args.timings:
        path = Path(args.timings)
        record = json.loads(path.read_text()) if path.exists() else {}
        record.update(timings)
        record[f"total[{','.join(args.envs)}; size={args.size}; workers={args.workers}]"] = round(total, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
