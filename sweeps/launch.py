"""Running a sweep's runs: each is one algorithm file's process, started afresh, resumed from its
latest checkpoint (`--resume`), or skipped when it has finished. So a sweep can be stopped and
started again at any time, here or on a cluster, and only what is missing runs.

* `local`: up to `jobs` processes at a time on this machine (a thread pool of subprocesses);
  with `devices`, each process sees one of them (CUDA_VISIBLE_DEVICES), taken from a pool of free
  ones. Ctrl-C or SIGTERM (also for a sweep started in the background, where the shell makes it
  ignore SIGINT) is passed on to the running processes as SIGINT: they checkpoint and stop, and
  no new one starts.
* `slurm`: one Slurm array job for the runs still to do, submitted through submitit with the
  config's [slurm] parameters; a job that Slurm preempts or times out is resumed by running the
  sweep again.
* `submitit-local`: the same submission on this machine (submitit's local executor): the cluster
  path, testable without a cluster.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.checkpoints import latest_checkpoint
from common.run_directory import holder, run_status
from sweeps.grid import Run, Sweep

# What a run's exit code means (common/cli.py).
EXIT_MEANINGS = {0: "finished", 1: "failed (a file could not be written)", 2: "bad input",
                 3: "diverged", 130: "interrupted"}


RUNNING: set[subprocess.Popen] = set()  # the runs' processes, for passing on an interrupt
RUNNING_LOCK = threading.Lock()
STOPPING = threading.Event()  # set on an interrupt: no new run starts


@dataclass(frozen=True)
class Outcome:
    run: Run
    action: str  # "skipped", "started", "resumed", "left" (stopped earlier on a problem), "busy"
    status: str  # "finished", "interrupted", "diverged", ...


def plan(run: Run) -> str:
    """What running `run` now would do: "skip" (finished), "busy" (another process is running
    it: another sweep, or a run started by hand), "resume" (a checkpoint to continue from),
    "start" (nothing there yet) or "leave" (a run that stopped on a problem that running it
    again would repeat: diverged, bad input; its results.json says which)."""
    directory = Path(run.output_dir)
    status = run_status(directory)
    if status == "finished":
        return "skip"
    if holder(directory) is not None:
        return "busy"
    if status == "diverged":
        return "leave"
    if directory.is_dir() and latest_checkpoint(directory):
        return "resume"
    if status is not None:  # results.json but no checkpoint: it stopped before its first one
        return "leave"
    return "start"


def run_one(run: Run, device: str | None = None) -> Outcome:
    """Run `run` to its end (or skip it); its output goes to <output_dir>.log."""
    action = plan(run)
    if STOPPING.is_set():
        return Outcome(run, "not started", "interrupted")
    if action in ("skip", "leave", "busy"):
        return Outcome(run, {"skip": "skipped", "leave": "left", "busy": "busy"}[action],
                       run_status(Path(run.output_dir)) or "unknown")
    directory = Path(run.output_dir)
    directory.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TQDM_DISABLE="1")  # progress bars would fill the log
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    with open(directory.parent / f"{directory.name}.log", "a") as log, RUNNING_LOCK:
        # A session of its own: a terminal's Ctrl-C reaches the sweep alone, which passes it on
        # once (a second SIGINT would stop a run without its checkpoint).
        process = subprocess.Popen(run.command(resume=action == "resume"), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
        RUNNING.add(process)
    try:
        code = process.wait()
    finally:
        with RUNNING_LOCK:
            RUNNING.discard(process)
    return Outcome(run, {"resume": "resumed", "start": "started"}[action],
                   EXIT_MEANINGS.get(code, f"exit {code}"))


def run_local(sweep: Sweep, jobs: int = 1, devices: list[str] | None = None,
              report=print) -> list[Outcome]:
    """Every run of the sweep on this machine, `jobs` at a time (one per device with devices)."""
    free = queue.Queue()
    for device in devices or []:
        free.put(device)
    jobs = len(devices) if devices else jobs

    def one(run: Run) -> Outcome:
        device = free.get() if devices else None
        try:
            outcome = run_one(run, device)
        finally:
            if devices:
                free.put(device)
        report(f"{outcome.action:8} {outcome.status:12} {run.label} {run.dataset} "
               f"seed {run.seed}{f'..{run.seed + run.num_seeds - 1}' if run.num_seeds > 1 else ''}")
        return outcome

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(one, run) for run in sweep.runs]
    with interrupts_passed_on():
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            STOPPING.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)


class interrupts_passed_on:
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt here (whatever the shell set) after
    passing SIGINT to every running run, which checkpoints and stops (common/training.py)."""

    def __enter__(self):
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in self.previous:
            signal.signal(sig, self.handler)

    def handler(self, signum, frame):
        STOPPING.set()
        with RUNNING_LOCK:
            for process in RUNNING:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def submit(sweep: Sweep, cluster: str = "slurm", wait: bool = False, report=print):
    """The runs still to do as one array job through submitit (`cluster`: "slurm", or "local"
    for submitit's local executor); returns the jobs, with their outcomes where `wait`."""
    import submitit

    todo = [run for run in sweep.runs if plan(run) in ("start", "resume")]
    if not todo:
        report("nothing to submit: every run has finished (or stopped on a problem)")
        return []
    executor = submitit.AutoExecutor(folder=sweep.output_dir / "submitit" / "%j", cluster=cluster)
    parameters = {"name": f"offlax-{sweep.name}", **sweep.slurm}
    if cluster != "slurm":  # the slurm_* parameters mean nothing to another executor
        parameters = {k: v for k, v in parameters.items() if not k.startswith("slurm_")}
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_one, todo)
    report(f"submitted {len(jobs)} run(s) to {cluster} as job {jobs[0].job_id.split('_')[0]}; "
           f"logs in {sweep.output_dir / 'submitit'}")
    if wait:
        return [job.result() for job in jobs]
    return jobs
