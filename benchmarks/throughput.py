"""Updates per second of each algorithm at full size (its default networks, batch 256), 1 and 5
seeds.

For every (algorithm, seeds) this compiles the algorithm's own `train_chunk` (lax.scan of
`--chunk` updates inside vmap over seeds) on the embedded default dataset, times `--repeats`
host calls after a warm-up call, and reads the FLOPs of one update from XLA's cost analysis.
Without --chunk, each host call is sized to take about `--seconds-per-call` (from a first call
of a few updates), so that CQL with 5 seeds takes seconds, not an hour. The CPU's attainable
FLOP/s is measured with a jitted float32 matmul (the same XLA, the same threads) at every run,
so "of peak" is the fraction of what XLA's dot reached in that run.

The discrete files are measured at their papers' sizes on both kinds of task: on CartPole's
states (`<file>/vector`: 256x256 networks, batch 64, the sfujim/BCQ `regular_parameters`) and
on MinAtar SpaceInvaders-shaped 10x10x6 images (`<file>/image`: the 3x3 convolution with 16
channels and 128-unit heads, batch 32, the Atari settings), the latter on random frames (the
cost of an update does not depend on the pixels).

Rows of the algorithms not measured now are kept from the existing results, each with its own
matmul rate and date, so the table can be completed one algorithm at a time:

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.{md,json}
    python benchmarks/throughput.py --algorithms cql bcq por   # replaces only their rows
    python benchmarks/throughput.py --algorithms bcq_discrete/vector bcq_discrete/image
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "algorithms"))

import bc  # noqa: E402
import bc_discrete  # noqa: E402
import bcq  # noqa: E402
import bcq_discrete  # noqa: E402
import cql  # noqa: E402
import cql_discrete  # noqa: E402
import iql  # noqa: E402
import por  # noqa: E402
import td3_bc  # noqa: E402

from common.datasets import DEFAULT_DATASET, DEFAULT_DISCRETE_DATASET, load_dataset  # noqa: E402
from common.normalization import ActionScaling, observation_statistics  # noqa: E402
from common.transitions import returns_to_go, transitions_on_device  # noqa: E402

ALGORITHMS = {"bc": bc, "td3_bc": td3_bc, "iql": iql, "cql": cql, "bcq": bcq, "por": por}
DISCRETE = {"bc_discrete": bc_discrete, "bcq_discrete": bcq_discrete,
            "cql_discrete": cql_discrete}
# name/task -> (module, task); the order of the table's rows
ROWS = [*ALGORITHMS, *(f"{name}/{task}" for name in DISCRETE for task in ("vector", "image"))]
MINATAR_SHAPE, MINATAR_ACTIONS = (10, 10, 6), 4  # MinAtar SpaceInvaders: frames, actions


def discrete_data(task: str, num_transitions: int = 100_000):
    """(data on device, obs_dim, num_actions, image_shape): CartPole's medium-replay states, or
    random MinAtar-shaped frames stored flat as uint8, as the discrete files keep them."""
    from common.transitions import discrete_transitions_on_device

    if task == "vector":
        dataset = load_dataset(DEFAULT_DISCRETE_DATASET)
        return discrete_transitions_on_device(dataset), dataset.observations.shape[1], 2, None
    rng = np.random.default_rng(0)
    obs_dim = int(np.prod(MINATAR_SHAPE))
    frames = lambda: (rng.random((num_transitions, obs_dim)) < 0.1).astype(np.uint8)  # noqa: E731
    data = jax.device_put({
        "observations": frames(), "next_observations": frames(),
        "actions": rng.integers(0, MINATAR_ACTIONS, num_transitions).astype(np.int32),
        "rewards": rng.random(num_transitions).astype(np.float32),
        "terminals": (rng.random(num_transitions) < 0.01).astype(np.float32)})
    return data, obs_dim, MINATAR_ACTIONS, MINATAR_SHAPE


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    """Attainable float32 FLOP/s of a jitted square matmul."""
    a = jax.random.normal(jax.random.key(0), (size, size))
    b = jax.random.normal(jax.random.key(1), (size, size))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        dot(a, b).block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def measure(name: str, num_seeds: int, chunk: int | None, repeats: int, dataset,
            seconds_per_call: float = 10.0) -> dict:
    module = ALGORITHMS.get(name) or DISCRETE[name.split("/")[0]]
    multiple = getattr(module.Args, "policy_freq", 1)  # TD3+BC's update step is 2 updates
    if chunk is None:
        probe = measure(name, num_seeds, 10 * multiple, 1, dataset)
        chunk = int(probe["updates_per_second"] * seconds_per_call) // multiple * multiple
        chunk = min(max(chunk, multiple), 2000)
    if name in ALGORITHMS:
        # each file's networks (256x256; the authors' BCQ 400-300 and VAE 750-750, POR's
        # execute policy 1024-1024), batch 256
        args = module.Args(num_seeds=num_seeds, total_updates=1_000_000, eval_interval=chunk,
                           batch_size=256)
        obs_dim, action_dim = dataset.observations.shape[1], dataset.actions.shape[1]
        scaling = ActionScaling(-np.ones(action_dim, np.float32), np.ones(action_dim, np.float32))
        data = transitions_on_device(dataset, observation_statistics(dataset), scaling)
        if module is iql:  # its value diagnostics compare V with the return-to-go
            data["returns_to_go"] = jnp.asarray(returns_to_go(dataset, dataset.rewards,
                                                              args.discount))
        init = partial(module.init_state, args=args, obs_dim=obs_dim, action_dim=action_dim)
    else:  # the file's defaults for the task: its DATASET_OVERRIDES entry for images
        task = name.split("/")[1]
        data, obs_dim, num_actions, image_shape = discrete_data(task)
        env = "offlax/minatar-spaceinvaders/medium-v1" if task == "image" else \
            DEFAULT_DISCRETE_DATASET
        args = dataclasses.replace(module.dataset_defaults(env), num_seeds=num_seeds,
                                   total_updates=1_000_000, eval_interval=chunk)
        init = partial(module.init_state, args=args, obs_dim=obs_dim, num_actions=num_actions,
                       image_shape=image_shape)
    seeds = jnp.arange(num_seeds)
    states = jax.vmap(init)(jax.vmap(jax.random.key)(seeds))
    start = time.perf_counter()
    compiled = module.train_chunk.lower(states, data, chunk, args).compile()
    compile_seconds = time.perf_counter() - start
    # XLA's cost analysis counts a while loop's body once, so cost one scan step on its own:
    # one `update` call, which is `policy_freq` updates for TD3+BC and one for the others.
    step = jax.jit(jax.vmap(lambda state: module.update(state, data, args)))
    cost = step.lower(states).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_update = cost["flops"] / getattr(args, "policy_freq", 1) / num_seeds
    states, _ = jax.block_until_ready(compiled(states, data))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        states, _ = jax.block_until_ready(compiled(states, data))
    seconds = time.perf_counter() - start
    updates_per_second = chunk * repeats / seconds
    return {"algorithm": name, "seeds": num_seeds, "chunk": chunk, "batch": args.batch_size,
            "updates_per_second": updates_per_second,
            "agent_updates_per_second": updates_per_second * num_seeds,
            "gflop_per_update": flops_per_update / 1e9,
            "gflop_per_second": flops_per_update * num_seeds * updates_per_second / 1e9,
            "compile_seconds": compile_seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--chunk", type=int, default=None,
                        help="updates per host call (default: sized by --seconds-per-call)")
    parser.add_argument("--seconds-per-call", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed host calls")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput"))
    options = parser.parse_args()

    dataset = load_dataset(DEFAULT_DATASET)
    peak = matmul_flops_per_second()
    device = str(jax.devices()[0])
    print(f"matmul: {peak / 1e9:.1f} GFLOP/s on {device}")
    out = Path(options.out)
    measured = {(name, seeds) for name in options.algorithms for seeds in options.seeds}
    kept = []
    if out.with_suffix(".json").exists():
        previous = json.loads(out.with_suffix(".json").read_text())
        for row in previous["rows"]:
            row.setdefault("matmul_gflop_per_second", previous.get("matmul_gflop_per_second"))
            if (row["algorithm"], row["seeds"]) not in measured:
                kept.append(row)
    rows = []
    for name in options.algorithms:
        for num_seeds in options.seeds:
            row = measure(name, num_seeds, options.chunk, options.repeats, dataset,
                          options.seconds_per_call)
            row["fraction_of_matmul_peak"] = row["gflop_per_second"] * 1e9 / peak
            row["matmul_gflop_per_second"] = peak / 1e9
            row["date"] = time.strftime("%Y-%m-%d")
            rows.append(row)
            print(json.dumps(row))
    order = ROWS
    rows = sorted(kept + rows, key=lambda r: (order.index(r["algorithm"]), r["seeds"]))
    lines = [
        f"# Throughput at full size (each file's networks; batch 256, the discrete files at "
        f"their papers' batches) on `{device}`",
        "",
        f"`python benchmarks/throughput.py` on {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}; dataset `{DEFAULT_DATASET}`; host calls of about "
        f"{options.seconds_per_call:g} s (the `chunk` column: updates per call), "
        f"{options.repeats} timed calls after a warm-up. Matmul rate: a jitted float32 2048^3 "
        "dot, measured in the same run as the row. FLOPs per update from XLA's cost analysis.",
        "",
        "| algorithm | seeds | batch | updates/s (each seed) | seed-updates/s | GFLOP / update "
        "| GFLOP/s | matmul GFLOP/s | of matmul rate | chunk | compile s | measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {r['seeds']} | {r.get('batch', 256)} | "
            f"{r['updates_per_second']:.0f} | "
            f"{r['agent_updates_per_second']:.0f} | {r['gflop_per_update']:.3f} | "
            f"{r['gflop_per_second']:.1f} | {r['matmul_gflop_per_second']:.0f} | "
            f"{r['fraction_of_matmul_peak']:.0%} | {r.get('chunk', '')} | "
            f"{r['compile_seconds']:.1f} | {r.get('date', '')} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
