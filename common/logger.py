"""What a training run leaves in its output directory, the same for every algorithm file.

  events.out.tfevents.*   TensorBoard: train/<metric> (mean over seeds), eval/return,
                          eval/normalized_score (mean and per seed), perf/updates_per_second
  results.json            algorithm, env, status, args, versions, evaluations per seed (with
                          each seed's training metrics since the previous one), final score,
                          updates per second, wall seconds (written after every evaluation, and
                          when the run ends: finished, interrupted, diverged or failed)
  policy.msgpack          the final policy parameters of every seed (flax serialisation) and
                          what is needed to act with them (observation statistics, action bounds)
  checkpoints/            the whole training state at every evaluation (common/checkpoints.py)
  .lock                   held by the process writing the run (common/run_directory.py)

plus a progress bar with updates/s, ETA and the latest normalised score.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import socket
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
from flax import serialization
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.summary import scalar
from tqdm import tqdm

from common.checkpoints import latest_checkpoint
from common.datasets import Dataset, check_reference_scores, normalized_score
from common.files import RunWriteError, write_atomically
from common.run_directory import release
from common.sharding import writes

VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "gymnasium", "mujoco", "minari")


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
    """TensorBoard, results.json and the progress bar of one run of N seeds.

    With `checkpoint` (common/checkpoints.py; its "logger" entry is `state_dict()`), the run
    continues: its evaluation history and timings carry on, and TensorBoard drops any events the killed process wrote after
    that checkpoint (purge_step), so the curves have no duplicated stretch.
    """

    def __init__(self, algorithm: str, args, dataset: Dataset, seeds, output_dir,
                 checkpoint: dict | None = None):
        check_reference_scores(dataset.info)  # before training, not at the first evaluation
        self.output_dir = Path(output_dir)
        # with several processes (common/sharding.py) only process 0 writes, and shows the bar
        self.writes = writes()
        if self.writes:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.info = dataset.info
        self.seeds = [int(s) for s in seeds]
        self.start = time.perf_counter()
        self.first_call = None  # (updates, seconds) of this process's first host call (compiles)
        self.updates = 0
        self.timed = [0, 0.0]  # updates and seconds of host calls, without each first one
        self.wall_before = 0.0  # wall seconds of earlier processes of a resumed run
        self.train_sums, self.train_count = {}, 0  # metrics per seed since the last evaluation
        self.results = {
            "algorithm": algorithm,
            "env": self.info.name,
            "status": "running",
            "dataset": {"id": self.info.dataset_id, "source": self.info.source,
                        "env_id": self.info.env_id, "transitions": dataset.size,
                        "ref_min_score": self.info.ref_min_score,
                        "ref_max_score": self.info.ref_max_score,
                        "ref_score_source": self.info.ref_score_source,
                        "fingerprint": self.info.fingerprint},
            "args": dataclasses.asdict(args),
            "seeds": self.seeds,
            "versions": library_versions(),
            "device": str(jax.devices()[0]),
            "command": shlex.join(sys.orig_argv),  # as typed: run it again in `cwd`
            "cwd": os.getcwd(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "evaluations": [],
            "warnings": [],  # {"seed", "update", "kind", "message"}: see `warn`
        }
        resume = json.loads(checkpoint["logger"]) if checkpoint is not None else None
        if resume is not None:
            self.updates = resume["updates"]
            self.timed = resume["timed"]
            self.wall_before = resume["wall_seconds"]
            self.results["evaluations"] = resume["evaluations"]
            self.results["warnings"] = resume.get("warnings", [])
            # a checkpoint between evaluations (Ctrl-C) carries the metrics summed since the last
            self.train_sums = {k: np.asarray(v, np.float64)
                               for k, v in resume.get("train_sums", {}).items()}
            self.train_count = resume.get("train_count", 0)
            self.results["started"] = resume["started"]
            self.results["resumed"] = [*resume["resumed"], {
                "update": self.updates,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": self.results["command"]}]
        # TensorBoard drops the events at or after the purge step; those at the checkpoint's
        # own step (its training metrics and evaluation) were written before it, so they stay
        self.writer = (EventWriter(self.output_dir, self.last_checkpoint,
                                   purge_step=self.updates + 1 if resume is not None else None)
                       if self.writes else NoEventWriter())
        self.bar = tqdm(total=args.total_updates, initial=self.updates, unit="upd",
                        dynamic_ncols=True, disable=not self.writes,
                        mininterval=float(os.environ.get("TQDM_MININTERVAL", 1.0)))

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the logger (JSON-able; floats round-trip exactly)."""
        return {"updates": self.updates, "timed": list(self.timed),
                "wall_seconds": self.wall_seconds(), "evaluations": self.results["evaluations"],
                "warnings": self.results["warnings"],
                "started": self.results["started"], "resumed": self.results.get("resumed", []),
                "dataset_fingerprint": self.info.fingerprint,
                "train_sums": {k: np.asarray(v).tolist() for k, v in self.train_sums.items()},
                "train_count": self.train_count}

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def log_training(self, updates_done: int, seconds: float, metrics: dict):
        """After a host call of `updates_done` updates: metrics are arrays (seeds, steps)."""
        first = self.first_call is None
        if first:
            self.first_call = (updates_done, seconds)
        else:
            self.timed[0] += updates_done
            self.timed[1] += seconds
        self.updates += updates_done
        for name, values in metrics.items():
            self.writer.add_scalar(f"train/{name}", float(np.mean(values)), self.updates)
            per_seed = np.asarray(values, np.float64).sum(1)
            self.train_sums[name] = self.train_sums.get(name, 0.0) + per_seed
        self.train_count += np.shape(next(iter(metrics.values())))[1] if metrics else 0
        self.writer.add_scalar("perf/updates_per_second", updates_done / seconds, self.updates)
        self.writer.flush()
        if first:
            # This process's first host call includes XLA's compilation: leave it out of the
            # bar's rate, or the first ETA is many times too long (and its updates out of the
            # bar's `initial` too, or the first frame divides them by a near-zero time).
            self.bar.n = self.bar.last_print_n = self.bar.initial = self.updates
            self.bar.unpause()
        else:
            self.bar.update(updates_done)

    def warn(self, kind: str, seed: int, update: int, message: str):
        """A problem the run goes on through (e.g. kind "value_bound"): printed above the bar
        once per kind and seed, and kept in results.json's "warnings" (across resumes too)."""
        if any(w["kind"] == kind and w["seed"] == seed for w in self.results["warnings"]):
            return
        self.results["warnings"].append(
            {"seed": seed, "update": update, "kind": kind, "message": message})
        if self.writes:
            self.bar.write(f"warning: {message}", file=sys.stderr)

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
            # per seed, the mean of every training metric over the updates since the last
            # evaluation (checkpoints are written at evaluations, so a resume loses none)
            "train": {name: (total / max(self.train_count, 1)).tolist()
                      for name, total in self.train_sums.items()},
        })
        self.train_sums, self.train_count = {}, 0
        self.writer.add_scalar("eval/return", per_seed_return.mean(), self.updates)
        self.writer.add_scalar("eval/normalized_score", per_seed_score.mean(), self.updates)
        for seed, score in zip(self.seeds, per_seed_score):
            self.writer.add_scalar(f"eval/normalized_score_seed{seed}", score, self.updates)
        self.writer.flush()
        seeds = f" (mean of {len(self.seeds)} seeds)" if len(self.seeds) > 1 else ""
        self.bar.set_postfix_str(f"normalised score {per_seed_score.mean():.1f}{seeds}",
                                 refresh=False)
        self.write_results()
        return per_seed_score

    def write_results(self):
        """results.json, rewritten atomically after every evaluation and at the end."""
        results = self.results
        if not self.writes:
            return
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
        results["wall_seconds"] = self.wall_seconds()
        write_atomically(self.output_dir / "results.json", json.dumps(results, indent=1).encode(),
                         "results.json", self.last_checkpoint, self.output_dir)

    def last_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.output_dir)

    def updates_per_second(self) -> float | None:
        """Training throughput, without each process's first host call (it includes XLA's
        compilation) unless nothing else was timed."""
        if self.timed[0]:
            return self.timed[0] / self.timed[1]
        return self.first_call[0] / self.first_call[1] if self.first_call else None

    def save_policy(self, params, **extra):
        """policy.msgpack: {"params": parameters with a leading seed axis, **extra}."""
        if not self.writes:
            return
        tree = {"params": jax.device_get(params),
                **{k: np.asarray(v) for k, v in extra.items()}}
        try:
            write_atomically(self.output_dir / "policy.msgpack",
                             serialization.msgpack_serialize(serialization.to_state_dict(tree)),
                             "the policy", self.last_checkpoint, self.output_dir)
        except RunWriteError as error:
            self.finish("failed", str(error))
            raise

    def finish(self, status: str, message: str | None = None):
        """End the run: status "finished", "interrupted", "diverged" or "failed" (with a message)
        goes to results.json, which is written one last time, and the run directory is released.
        A write that fails here makes the run "failed" and raises RunWriteError; when the run is
        failing already (a file could not be written, and the caller raises that), what still
        fits is written and nothing is raised."""
        self.bar.close()
        if not self.writes:
            return
        failing_already = status == "failed"
        error = None
        try:
            try:
                self.writer.close()
            except RunWriteError as failed:
                error = failed
            if error is not None and not failing_already:
                status, message = "failed", str(error)
            self.results["status"] = status
            if message:
                self.results["message"] = message
            try:
                self.write_results()
            except RunWriteError as failed:
                error = error or failed
        finally:
            release(self.output_dir)
        if error is not None and not failing_already:
            raise error
        if status == "finished":
            print(self.summary(), flush=True)

    def summary(self) -> str:
        """What a finished run prints: the final scores, the time it took and where it is."""
        final, results = self.results["final"], self.results
        seeds = ", ".join(f"{s:.1f}" for s in final["normalized_score"])
        return (
            f"finished {results['algorithm']} on {results['env']}: {self.updates} updates, "
            f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}\n"
            f"  final normalised score {final['normalized_score_mean']:.1f} "
            f"± {final['normalized_score_std']:.1f} (seeds {', '.join(map(str, self.seeds))}: "
            f"{seeds})\n"
            f"  {self.wall_seconds() / 60:.1f} min, {results['updates_per_second'] or 0:.0f} "
            f"updates/s\n"
            f"  output: {self.output_dir}")


class NoEventWriter:
    """The EventWriter of a process that writes nothing (not process 0 of several)."""

    def add_scalar(self, tag: str, value: float, step: int):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class EventWriter:
    """TensorBoard scalars, written by the training process itself (tensorboardX's
    SummaryWriter writes from a background thread, where a full disk kills the thread and then
    blocks the run): each `flush` appends whole records, and an error undoes a partial append
    and raises RunWriteError. With `purge_step` (a resumed run: one past its checkpoint's
    update), TensorBoard drops the earlier events at or after that step, which the stopped
    process wrote after its last checkpoint."""

    def __init__(self, directory: Path, last_checkpoint, purge_step: int | None = None):
        self.path = directory / (f"events.out.tfevents.{int(time.time())}."
                                 f"{socket.gethostname()}.{os.getpid()}")
        self.last_checkpoint = last_checkpoint
        self.pending = [Event(wall_time=time.time(), file_version="brain.Event:2")]
        if purge_step is not None:
            self.pending.append(Event(wall_time=time.time(), step=purge_step,
                                      session_log=SessionLog(status=SessionLog.START)))
        self.file = None
        self.flush()

    def add_scalar(self, tag: str, value: float, step: int):
        self.pending.append(Event(wall_time=time.time(), step=step, summary=scalar(tag, value)))

    def flush(self):
        records = []
        for event in self.pending:
            data = event.SerializeToString()
            header = struct.pack("<Q", len(data))
            records += [header, struct.pack("<I", masked_crc32c(header)), data,
                        struct.pack("<I", masked_crc32c(data))]
        self.pending = []
        try:
            if self.file is None:
                self.file = open(self.path, "ab", buffering=0)
            size = self.file.tell()
            try:
                self.file.write(b"".join(records))
            except OSError:
                os.ftruncate(self.file.fileno(), size)  # whole records only
                raise
        except OSError as error:
            raise RunWriteError("TensorBoard events", self.path, error, self.last_checkpoint(),
                                self.path.parent, size=sum(map(len, records))) from None

    def close(self):
        if self.file is not None and not self.file.closed:
            try:
                self.flush()
            finally:
                self.file.close()
