"""What a training run leaves in its output directory, the same for every algorithm file.

  events.out.tfevents.*   TensorBoard: train/<metric> (mean over seeds), eval/return,
                          eval/normalized_score (mean and per seed), perf/updates_per_second
  results.json            algorithm, env, args, versions, evaluations per seed, final score,
                          updates per second, wall seconds (written after every evaluation)
  policy.msgpack          the final policy parameters of every seed (flax serialisation) and
                          what is needed to act with them (observation statistics, action bounds)

plus a progress bar with updates/s, ETA and the latest normalised score.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
from flax import serialization
from tqdm import tqdm

from common.datasets import Dataset, normalized_score

VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "gymnasium", "mujoco", "minari")


def default_output_dir(algorithm: str, env: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / algorithm / env.replace("/", "_") / stamp)


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        versions["offlax_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        versions["offlax_commit"] = None
    return versions


class RunLogger:
    """TensorBoard, results.json and the progress bar of one run of N seeds."""

    def __init__(self, algorithm: str, args, dataset: Dataset, seeds, output_dir: str):
        from tensorboardX import SummaryWriter

        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.info = dataset.info
        self.seeds = [int(s) for s in seeds]
        self.start = time.perf_counter()
        self.train_seconds = 0.0
        self.first_call = None  # (updates, seconds) of the first host call, which compiles
        self.updates = 0
        self.results = {
            "algorithm": algorithm,
            "env": self.info.name,
            "dataset": {"id": self.info.dataset_id, "source": self.info.source,
                        "env_id": self.info.env_id, "transitions": dataset.size,
                        "ref_min_score": self.info.ref_min_score,
                        "ref_max_score": self.info.ref_max_score,
                        "ref_score_source": self.info.ref_score_source},
            "args": dataclasses.asdict(args),
            "seeds": self.seeds,
            "versions": library_versions(),
            "device": str(jax.devices()[0]),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "evaluations": [],
        }
        self.writer = SummaryWriter(str(self.output_dir))
        self.bar = tqdm(total=args.total_updates, unit="upd", dynamic_ncols=True,
                        mininterval=float(os.environ.get("TQDM_MININTERVAL", 1.0)))

    def log_training(self, updates_done: int, seconds: float, metrics: dict):
        """After a host call of `updates_done` updates: metrics are arrays (seeds, steps)."""
        if self.first_call is None:
            self.first_call = (updates_done, seconds)
        self.updates += updates_done
        self.train_seconds += seconds
        for name, values in metrics.items():
            self.writer.add_scalar(f"train/{name}", float(np.mean(values)), self.updates)
        self.writer.add_scalar("perf/updates_per_second", updates_done / seconds, self.updates)
        self.bar.update(updates_done)

    def log_evaluation(self, returns: np.ndarray) -> np.ndarray:
        """returns: (seeds, episodes). Records and returns the normalised score per seed."""
        returns = np.asarray(returns, np.float64)
        per_seed_return = returns.mean(1)
        per_seed_score = normalized_score(per_seed_return, self.info)
        self.results["evaluations"].append({
            "update": self.updates,
            "return": per_seed_return.tolist(),
            "normalized_score": per_seed_score.tolist(),
            "episode_returns": returns.tolist(),
        })
        self.writer.add_scalar("eval/return", per_seed_return.mean(), self.updates)
        self.writer.add_scalar("eval/normalized_score", per_seed_score.mean(), self.updates)
        for seed, score in zip(self.seeds, per_seed_score):
            self.writer.add_scalar(f"eval/normalized_score_seed{seed}", score, self.updates)
        self.bar.set_postfix(score=f"{per_seed_score.mean():.1f}", refresh=False)
        self.write_results()
        return per_seed_score

    def write_results(self):
        """results.json, rewritten atomically after every evaluation and at the end."""
        results = self.results
        if results["evaluations"]:
            final = results["evaluations"][-1]
            scores = np.asarray(final["normalized_score"])
            results["final"] = {
                "update": final["update"],
                "normalized_score_mean": float(scores.mean()),
                "normalized_score_std": float(scores.std()),
                "normalized_score": final["normalized_score"],
                "return": final["return"],
            }
        results["updates"] = self.updates
        results["updates_per_second"] = self.updates_per_second()
        results["first_call_seconds"] = self.first_call[1] if self.first_call else None
        results["wall_seconds"] = time.perf_counter() - self.start
        path = self.output_dir / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)

    def updates_per_second(self) -> float | None:
        """Training throughput, without the first host call (it includes XLA's compilation)
        unless it is the only one."""
        if self.first_call is None:
            return None
        updates = self.updates - self.first_call[0]
        seconds = self.train_seconds - self.first_call[1]
        if updates == 0:
            updates, seconds = self.updates, self.train_seconds
        return updates / seconds

    def save_policy(self, params, **extra):
        """policy.msgpack: {"params": parameters with a leading seed axis, **extra}."""
        tree = {"params": jax.device_get(params),
                **{k: np.asarray(v) for k, v in extra.items()}}
        path = self.output_dir / "policy.msgpack"
        tmp = path.with_suffix(".msgpack.tmp")
        tmp.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(tree)))
        os.replace(tmp, path)

    def close(self):
        self.bar.close()
        self.write_results()
        self.writer.close()
