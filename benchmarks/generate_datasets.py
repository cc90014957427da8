"""Generate offlax's D4RL-style dataset suites from the committed behaviour policies.

Each (environment, level) is rolled out by `common/datasets/generated.py` and stored as a Minari
dataset `offlax/<env>/<level>[-<size>]-v1` in the local Minari directory. Levels run in parallel
worker processes; medium-expert is assembled from medium and expert once both exist. Every
dataset's fingerprint is printed; `--record-fingerprints` writes them into the committed reference
table, `common/datasets/fingerprints.json` (with the library versions and platform of this build).

    python benchmarks/generate_datasets.py                      # hopper, walker2d, halfcheetah
    python benchmarks/generate_datasets.py --envs invertedpendulum --size 20000
    python benchmarks/generate_datasets.py --envs cartpole        # D4RL's levels + imperfect
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
from common.datasets import generated, load_dataset, minari_local_exists  # noqa: E402


@dataclass
class Args:
    envs: tuple[str, ...] = ("hopper", "walker2d", "halfcheetah")
    """Environments (policy files in common/policies/)."""
    levels: tuple[str, ...] | None = None
    """Dataset levels to build (default: every level of each environment; discrete tasks add
    `imperfect`)."""
    size: int | None = None
    """Transitions per dataset; default D4RL's (1M; medium-replay as it falls; medium-expert 2M)."""
    workers: int = 2
    """Worker processes (one level each at a time)."""
    force: bool = False
    """Delete and rebuild datasets that already exist."""
    timings: str | None = "benchmarks/results/generation_times.json"
    """Where to record the wall time of every dataset (None: do not record)."""
    record_fingerprints: bool = False
    """Write the fingerprints of the datasets built here into common/datasets/fingerprints.json,
    making this build the reference (do it on a machine with the pinned library versions)."""


def build(spec: generated.OfflaxSpec) -> tuple[str, float | None, dict]:
    """(id, seconds to build it, or None where it existed already, fingerprint entry)."""
    existed = minari_local_exists(spec.dataset_id)
    start = time.time()
    generated.build_dataset(spec, progress=False)
    seconds = None if existed else time.time() - start
    dataset = load_dataset(spec.dataset_id)
    entry = {"fingerprint": dataset.info.fingerprint, "transitions": dataset.size,
             "episodes": len(dataset.episode_returns())}  # fmt: skip
    return spec.dataset_id, seconds, entry


def record_fingerprints(entries: dict):
    """Merge `entries` into the reference table; this build's record becomes its `built_with`."""
    path = generated.REFERENCE_FINGERPRINTS
    table = json.loads(path.read_text())
    record = generated.build_record(None)
    del record["fingerprint"]
    if table.get("datasets") and table.get("built_with") not in (None, {}, record):
        raise SystemExit(f"{path} was built with {table['built_with']}, this machine is {record}: "
                         "one table must come from one build setup. Rebuild every id here, or "
                         "record on a machine like the reference.")
    table["built_with"] = record
    table["datasets"] = dict(sorted({**table.get("datasets", {}), **entries}.items()))
    path.write_text(json.dumps(table, indent=1) + "\n")


def main(args: Args):
    import minari

    unknown = sorted(set(args.envs) - set(generated.available_envs()))
    if unknown:
        raise SystemExit(f"no behaviour policies for {unknown}; have {generated.available_envs()}")
    specs = [generated.OfflaxSpec(env, level, args.size) for env in args.envs
             for level in (args.levels or generated.levels_of(env))
             if level in generated.levels_of(env)]
    if args.force:
        for spec in specs:
            if minari_local_exists(spec.dataset_id):
                minari.delete_dataset(spec.dataset_id)
    # medium-expert last: it is assembled from medium and expert.
    first = [s for s in specs if s.level != "medium-expert"]
    last = [s for s in specs if s.level == "medium-expert"]
    timings, fingerprints = {}, {}
    start = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:  # fork is unsafe once JAX runs
        for batch in (first, last):
            for dataset_id, seconds, entry in pool.imap_unordered(build, batch):
                if seconds is not None:  # an existing dataset keeps the time of its build
                    timings[dataset_id] = round(seconds, 1)
                fingerprints[dataset_id] = entry
                took = "existed" if seconds is None else f"{seconds:.0f} s"
                print(f"{dataset_id}: {took}, fingerprint {entry['fingerprint']}", flush=True)
    total = time.time() - start
    print(f"all done in {total:.0f} s")
    if args.record_fingerprints:
        record_fingerprints(fingerprints)
    if args.timings:
        path = Path(args.timings)
        record = json.loads(path.read_text()) if path.exists() else {}
        record.update(timings)
        record[f"total[{','.join(args.envs)}; size={args.size}; workers={args.workers}]"] = round(total, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
