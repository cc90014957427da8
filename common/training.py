"""The training loop every algorithm file shares: host calls of fused updates, evaluations,
checkpoints, exact resume, the divergence guard and Ctrl-C.

The algorithm file supplies what is the algorithm (`train_chunk`: N updates of every seed in one
jitted call, and `evaluate`); this loop does what is not:

* Host calls end on a fixed grid: every UPDATES_PER_CALL updates and at every evaluation. The
  grid depends on the update counter only, so a resumed run makes exactly the calls the
  uninterrupted one made, and on CPU its parameters and scores are the same bit for bit.
* After each host call (never inside one) the losses and the state are checked for NaN and Inf;
  a divergence stops the run, naming the update, the seed and the quantity, and the last finite
  checkpoint stays the latest.
* At every evaluation the whole state is checkpointed (common/checkpoints.py).
* Ctrl-C (SIGINT) or SIGTERM finishes the current host call (at most UPDATES_PER_CALL
  updates), saves a checkpoint and a partial results.json, and exits 130; a second one exits at
  once without saving. SIGTERM is what Slurm sends at a job's time limit or preemption (and
  `kill` by default), some seconds before SIGKILL: the run keeps its last host call's work.
* With several processes (common/sharding.py) every one runs this loop over its own seeds; the
  metrics and, where something is saved, the state are gathered between host calls, process 0
  alone evaluates and writes, and a Ctrl-C reaching any process stops all of them together.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from common.checkpoints import (CheckpointError, args_json, latest_checkpoint, list_checkpoints,
                                load_latest, restore_states, save_checkpoint)
from common.cli import NOT_COMPARED_ON_RESUME, flag
from common.errors import ConfigError, OfflaxError
from common.files import RunWriteError
from common.logger import RunLogger
from common.run_directory import create_new_directory, hold, run_status
from common.sharding import (any_process, join_hosts, shard_seeds, text_of_process_zero, to_host,
                             writes)

UPDATES_PER_CALL = 1000  # updates per host call at most: Ctrl-C and NaN are noticed this often


class TrainingDiverged(OfflaxError):
    exit_code = 3


class TrainingInterrupted(OfflaxError):
    exit_code = 130
    label = "interrupted"


class RunAlreadyFinished(OfflaxError):
    """`--resume` of a run that has finished: nothing to do, and nothing is written."""

    exit_code = 0
    label = "finished"


# --------------------------------------------------------------------------------------------
# Output directory and --resume


def prepare_output_dir(algorithm: str, args) -> tuple[Path, dict | None]:
    """The run's output directory, held by this process (common/run_directory.py) and so known
    to be writable before anything slow happens, and with `--resume` its latest checkpoint,
    checked to be this algorithm's with these arguments. With several processes
    (common/sharding.py) process 0 holds and writes the directory; the others check the same
    things, read the checkpoint, and learn a new directory's name from process 0."""
    join_hosts(getattr(args, "num_seeds", None))  # first: before anything touches a device
    if not writes():
        if args.resume:
            return Path(args.resume), resumable_checkpoint(algorithm, args, Path(args.resume))
        if args.output_dir:
            check_holds_no_run(Path(args.output_dir))
            return Path(args.output_dir), None
        return Path(text_of_process_zero("")), None
    directory, checkpoint = _prepare_output_dir(algorithm, args)
    if not (args.resume or args.output_dir):
        text_of_process_zero(str(directory))
    return directory, checkpoint


def _prepare_output_dir(algorithm: str, args) -> tuple[Path, dict | None]:
    held = None
    try:
        if args.resume:
            directory = Path(args.resume)
            if args.output_dir and Path(args.output_dir).resolve() != directory.resolve():
                raise ConfigError(
                    f"--output-dir ({args.output_dir}) and --resume ({args.resume}) name "
                    "different directories; a resumed run continues in its own directory: give "
                    "--resume only.")
            if directory.is_dir() and run_status(directory) != "finished":  # finished: read only
                held = hold(directory, created=False)
            return directory, resumable_checkpoint(algorithm, args, directory)
        if args.output_dir:
            directory = Path(args.output_dir)
            created = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
            held = hold(directory, created)
            check_holds_no_run(directory)
            return directory, None
        directory = create_new_directory(algorithm, args.env, args.seed)
        held = hold(directory, created=True)
        return directory, None
    except (OfflaxError, OSError) as error:
        if held is not None:
            held.release()
        if isinstance(error, OfflaxError):
            raise
        where = args.resume or args.output_dir or "runs/"
        raise ConfigError(
            f"Cannot write to the output directory '{where}' ({type(error).__name__}: "
            f"{error.strerror or error}). Choose a writable one with --output-dir.") from None


def check_holds_no_run(directory: Path):
    """A new run's --output-dir must not hold another run's results or checkpoints."""
    if (directory / "results.json").exists() or latest_checkpoint(directory):
        raise ConfigError(
            f"'{directory}' already holds a run (results.json or checkpoints). Continue "
            f"it with --resume {directory}, or choose another --output-dir.")


def resumable_checkpoint(algorithm: str, args, directory: Path) -> dict:
    """The latest checkpoint of the run in `directory`, if `args` may continue it."""
    checkpoint = load_latest(directory)
    if checkpoint["algorithm"] != algorithm:
        raise CheckpointError(
            f"'{directory}' is a run of {checkpoint['algorithm']}, not of {algorithm}: resume "
            f"it with algorithms/{checkpoint['algorithm']}.py.")
    differences = args_differences(json.loads(checkpoint["args"]), json.loads(args_json(args)))
    if differences:
        raise ConfigError(
            f"Cannot resume '{directory}' with different arguments: "
            + "; ".join(differences) + ". A resumed run must repeat its run exactly. Resume "
            f"with --resume {directory} alone (it reuses the run's arguments), or start a new "
            "run in another --output-dir.")
    if run_status(directory) == "finished":
        raise RunAlreadyFinished(
            f"'{directory}' is a finished run ({checkpoint['update']} of {args.total_updates} "
            f"updates): nothing to resume, and no file was changed. Its scores are in "
            f"{directory / 'results.json'}; `python -m common.evaluation {directory}` evaluates "
            "its policy again.")
    return checkpoint


def args_differences(saved: dict, given: dict) -> list[str]:
    """'--flag: run had X, this command gives Y' for each argument that differs."""
    return [f"{flag(name)}: the run had {saved.get(name)!r}, this command gives {given[name]!r}"
            for name in sorted(given)
            if name not in NOT_COMPARED_ON_RESUME and saved.get(name) != given[name]]


# --------------------------------------------------------------------------------------------
# The loop


def chunk_size(updates: int, args, update_multiple: int = 1) -> int:
    """Updates in the next host call: up to the next evaluation, at most UPDATES_PER_CALL
    (rounded down to a multiple of the algorithm's update pattern)."""
    most = max(update_multiple, UPDATES_PER_CALL // update_multiple * update_multiple)
    next_eval = min((updates // args.eval_interval + 1) * args.eval_interval, args.total_updates)
    return min(most, next_eval - updates)


def train(states, train_chunk: Callable, evaluate: Callable, logger: RunLogger, args,
          statistics: dict, checkpoint: dict | None = None, update_multiple: int = 1,
          value_bound: float | None = None):
    """Train `states` (all seeds) to args.total_updates and return them (with several
    processes, as host values holding every seed).

    train_chunk(states, num_updates) -> (states, metrics), metrics arrays of shape (seeds, steps)
    evaluate(states) -> returns of shape (seeds, episodes)
    statistics: the arrays the run normalises and acts with; checkpointed, and on resume
        compared with the ones recomputed from the dataset.
    checkpoint: from `prepare_output_dir` when resuming; `states` is then its template.
    value_bound: `value_bound(rewards, discount)`, where the metrics hold "q_mean": a seed whose
        mean Q goes beyond it gets a warning (divergence that is not yet NaN).
    """
    statistics = {k: np.asarray(v) for k, v in statistics.items()}
    if checkpoint is not None:
        changed = [k for k, v in statistics.items()
                   if not np.array_equal(np.asarray(checkpoint["statistics"].get(k)), v)]
        saved_fingerprint = json.loads(checkpoint["logger"]).get("dataset_fingerprint")
        if saved_fingerprint not in (None, logger.info.fingerprint):
            changed.append(f"fingerprint ({saved_fingerprint}, now {logger.info.fingerprint})")
        if changed:
            raise CheckpointError(
                f"The dataset '{args.env}' is not the one the run in '{logger.output_dir}' "
                f"started with: its {', '.join(changed)} differ from the checkpoint's. Resume "
                "with the same dataset, or start a new run.")
        states = restore_states(states, checkpoint["states"])
    states = shard_seeds(states)  # over the devices (and processes), where there are several
    logger.results["devices"] = len(jax.tree.leaves(states)[0].sharding.device_set)
    if jax.process_count() > 1:
        logger.results["processes"] = jax.process_count()

    def save(host_states):
        payload = {"algorithm": logger.results["algorithm"], "args": args_json(args),
                   "states": host_states, "statistics": statistics,
                   "logger": json.dumps(logger.state_dict())}
        return save_checkpoint(logger.output_dir, logger.updates, payload, args.keep_checkpoints)

    find_non_finite = jax.jit(non_finite_leaves)
    host_states = None  # as gathered for the last evaluation or checkpoint
    with ctrl_c_requests(logger.output_dir) as ctrl_c:
        try:
            while logger.updates < args.total_updates:
                first_update = logger.updates
                num_updates = chunk_size(first_update, args, update_multiple)
                start = time.perf_counter()
                new_states, metrics = jax.block_until_ready(train_chunk(states, num_updates))
                seconds = time.perf_counter() - start
                metrics = to_host(metrics)
                problem = divergence(metrics, to_host(find_non_finite(new_states)),
                                     first_update, num_updates, logger.seeds)
                if problem:
                    last = latest_checkpoint(logger.output_dir)
                    kept = (f"The last finite checkpoint, {last}, is kept (`python -m "
                            f"common.evaluation {logger.output_dir}` evaluates its policy)."
                            if last else "No checkpoint had been written yet.")
                    kept += (" Resuming would diverge again at the same update: start a new run "
                             "with a change, e.g. a lower learning rate or another reward scale.")
                    message = f"Training diverged: {problem}. {kept}"
                    logger.finish("diverged", message)
                    raise TrainingDiverged(message)
                states = new_states
                logger.log_training(num_updates, seconds, metrics)
                if value_bound is not None and "q_mean" in metrics:
                    for seed, (update, value) in beyond_bound(
                            metrics["q_mean"], value_bound, first_update, num_updates,
                            logger.seeds).items():
                        logger.warn("value_bound", seed, update, (
                            f"The mean Q-value of seed {seed} reached {value:.4g} at update "
                            f"{update}, beyond max|r| / (1 - gamma) = {value_bound:.4g}, which no "
                            "discounted return of this dataset can exceed: the critic is "
                            "diverging, and its scores mean little from here on. Training goes "
                            "on; a lower learning rate, a stronger conservative or behaviour-"
                            "cloning term, or another reward scale usually prevents it."))
                evaluation_due = (logger.updates % args.eval_interval == 0
                                  or logger.updates == args.total_updates)
                stop = any_process(ctrl_c.requested)  # with several processes, all stop together
                if evaluation_due or stop:
                    host_states = states if jax.process_count() == 1 else to_host(states)
                    if writes():  # process 0 of several: the others neither evaluate nor write
                        if evaluation_due:
                            logger.log_evaluation(evaluate(host_states))
                        path = save(host_states)
                    else:
                        path = "(written by process 0)"
                if stop and logger.updates < args.total_updates:
                    message = (f"stopped at update {logger.updates} of {args.total_updates}. The "
                               f"checkpoint {path} and a partial results.json are saved; continue "
                               f"with: python {Path(sys.argv[0]).as_posix()} --resume "
                               f"{logger.output_dir}")
                    logger.finish("interrupted", message)
                    raise TrainingInterrupted(message)
        except RunWriteError as error:  # a full disk: say so once, keep what is complete
            logger.finish("failed", str(error))
            raise
    logger.results["checkpoints"] = [str(p) for p in list_checkpoints(logger.output_dir)]
    if jax.process_count() == 1:
        return states
    # the last update is always evaluated, so the final states were gathered there already
    return to_host(states) if host_states is None else host_states


def value_bound(rewards, discount: float) -> float:
    """max |r| / (1 - gamma): no discounted return of the data, so no true Q-value, is larger
    in magnitude (infinite for gamma = 1)."""
    largest = float(np.abs(np.asarray(rewards)).max())
    return largest / (1.0 - discount) if discount < 1.0 else float("inf")


def beyond_bound(q_mean, bound: float, first_update: int, num_updates: int, seeds) -> dict:
    """seed -> (update, value) where that seed's mean Q first exceeds `bound` in magnitude in
    one host call; q_mean[seed, step] as in `divergence`."""
    q_mean = np.asarray(q_mean)
    found = {}
    for seed_index, step in zip(*np.nonzero(np.abs(q_mean) > bound)):
        seed = seeds[seed_index]
        if seed not in found:  # np.nonzero goes row by row: the first step of each seed
            update = first_update + (step + 1) * (num_updates // q_mean.shape[1])
            found[seed] = (int(update), float(q_mean[seed_index, step]))
    return found


def non_finite_leaves(states):
    """Per leaf of the state, per seed: does it hold a NaN or Inf? (float leaves only)"""
    def check(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.zeros(x.shape[:1], bool)
        return ~jnp.isfinite(x.reshape(x.shape[0], -1)).all(1)

    return jax.tree.map(check, states)


def divergence(metrics: dict, non_finite, first_update: int, num_updates: int, seeds) -> str | None:
    """What became non-finite first in one host call, or None.

    metrics[name][seed, step]: step i of a call of `num_updates` updates in `steps` steps ends at
    update first_update + (i + 1) * num_updates / steps. Where several quantities go at once (a
    NaN critic makes the actor loss NaN in the same step), all of them are named."""
    bad_at = {}  # name -> (update at which it is first non-finite, seed index, value)
    for name, values in metrics.items():
        values = np.asarray(values)
        bad = ~np.isfinite(values.reshape(values.shape[0], values.shape[1], -1)).all(-1)
        if bad.any():
            seed_index, step = min(zip(*np.nonzero(bad)), key=lambda pair: (pair[1], pair[0]))
            update = first_update + (step + 1) * (num_updates // values.shape[1])
            bad_at[name] = (update, seed_index, values[seed_index, step])
    if bad_at:
        update, seed_index = min((u, i) for u, i, _ in bad_at.values())
        names = [n for n, (u, i, _) in bad_at.items() if (u, i) == (update, seed_index)]
        what = "NaN" if any(np.isnan(bad_at[n][2]).any() for n in names) else "Inf"
        return (f"{', '.join(names)} of seed {seeds[seed_index]} became {what} at update "
                f"{update}")
    for path, flags in jax.tree_util.tree_flatten_with_path(non_finite)[0]:
        flags = np.asarray(flags)
        if flags.any():
            name = jax.tree_util.keystr(path).replace("['", ".").replace("']", "").lstrip(".")
            return (f"parameter {name} of seed {seeds[int(np.argmax(flags))]} holds NaN or Inf "
                    f"after update {first_update + num_updates}")
    return None


@contextmanager
def ctrl_c_requests(output_dir: Path):
    """While active, the first SIGINT or SIGTERM only sets `.requested` (the loop then saves and
    stops); a second one raises TrainingInterrupted at once."""

    class Requests:
        requested = False

    requests = Requests()

    def handler(signum, frame):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if requests.requested:
            last = latest_checkpoint(output_dir)
            raise TrainingInterrupted(
                f"second {name}: exiting at once, without saving. " + (
                    f"The latest checkpoint, {last}, is the last one written; continue with: "
                    f"python {Path(sys.argv[0]).as_posix()} --resume {output_dir}" if last else
                    "No checkpoint had been written yet, so there is nothing to resume."))
        requests.requested = True
        tqdm.write(f"{name}: saving a checkpoint after the current host call (at most "
                   f"{UPDATES_PER_CALL} updates). {name} again exits without saving.",
                   file=sys.stderr)

    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread: no signal can reach this loop anyway
        yield requests
        return
    try:
        yield requests
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
