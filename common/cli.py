"""The command line every algorithm file shares: parsing (with `--resume`), the checks of the
shared flags, and how a run ends (a one-paragraph error and an exit code, never a traceback).

Exit codes: 0 finished, 1 a file of the run could not be written (full disk), 2 bad input
(arguments, dataset, output directory, checkpoint, a directory another run holds), 3 training
diverged, 130 interrupted (Ctrl-C or SIGTERM during training; a checkpoint and a partial
results.json are saved).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from typing import Callable

import tyro

from common.errors import ConfigError, OfflaxError
from common.run_directory import release_all

# Fields of Args whose value may differ when a run is resumed: they say where, not what.
NOT_COMPARED_ON_RESUME = ("resume", "output_dir")


def parse_cli(args_class, argv=None, defaults: Callable[[str], object] | None = None):
    """tyro CLI for `args_class`.

    `defaults(env)` may give an Args whose values replace the class defaults for that dataset
    (IQL's per-dataset settings); flags given explicitly still win. With `--resume DIR`, the
    resumed run's own arguments are the defaults, so `--resume DIR` alone continues it exactly,
    and a flag that contradicts them is reported by `common.training.prepare_output_dir`.
    """
    first = tyro.cli(args_class, args=argv)
    if getattr(first, "resume", None):  # a reward model has no --resume
        from common.checkpoints import saved_args

        try:
            saved = saved_args(first.resume)
        except OfflaxError as error:  # e.g. no checkpoint there: said as run_main says it
            exit_with(error)
        default = args_from_dict(args_class, {**saved, "resume": first.resume,
                                              "output_dir": None})
    elif defaults is not None:
        default = defaults(first.env)
    else:
        return first
    return tyro.cli(args_class, args=argv, default=default)


def apply_dataset_overrides(args, table: dict):
    """`args` with the per-dataset values of `table` (an algorithm's DATASET_OVERRIDES) that match
    its --env: an entry matches when every word of its key occurs in the dataset name, and
    entries apply in the table's order, so a later, more specific one ("hopper medium-replay")
    wins over an earlier one ("hopper"). A relabelled HDF5 file (algorithms/reward_model.py)
    also matches under the name of the dataset it was made from, so that
    `--env runs/x/relabelled.hdf5` trains with the same settings as its source dataset."""
    from common.datasets import source_dataset

    names = [args.env.lower()]
    source = source_dataset(args.env)
    if source:
        names.append(source.lower())
    for key, values in table.items():
        if any(all(word in name for word in key.split()) for name in names):
            args = dataclasses.replace(args, **values)
    return args


def args_from_dict(args_class, values: dict):
    """An Args from its `dataclasses.asdict` form read back from JSON (lists become tuples)."""
    hints = typing.get_type_hints(args_class)
    kwargs = {}
    for field in dataclasses.fields(args_class):
        if field.name not in values:
            continue
        value = values[field.name]
        if isinstance(value, list) and "tuple" in str(hints[field.name]):
            value = tuple(value)
        kwargs[field.name] = value
    return args_class(**kwargs)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_args(args, update_multiple: int = 1, positive=(), nonnegative=(), open_unit=(),
               unit=()):
    """The flags describe a run that can happen: positive sizes, an evaluation within the run,
    (for algorithms whose update is a fixed pattern of `update_multiple` steps) chunk boundaries
    on that pattern, finite numbers, positive learning rates (`learning_rate`, every `*_lr`), a
    discount in [0, 1], a target rate `tau` in (0, 1], and the algorithm's own coefficients:
    `positive` (> 0), `nonnegative` (>= 0), `open_unit` (strictly between 0 and 1) and `unit`
    (in [0, 1]) name them."""
    sizes = ["num_seeds", "total_updates", "eval_interval", "eval_episodes", "batch_size",
             "keep_checkpoints"]
    for name in (s for s in sizes if hasattr(args, s)):  # a reward model has no episodes
        value = getattr(args, name)
        if value < 1:
            raise ConfigError(f"{flag(name)} must be at least 1, got {value}.")
    for field in dataclasses.fields(args):  # --hidden-dims, and e.g. BCQ's --vae-hidden-dims
        widths = getattr(args, field.name)
        if field.name.endswith("hidden_dims") and any(width < 1 for width in widths):
            raise ConfigError(f"{flag(field.name)} must be positive layer widths, got {widths}.")
    if args.eval_interval > args.total_updates:
        raise ConfigError(
            f"--eval-interval ({args.eval_interval}) is larger than the run "
            f"(--total-updates {args.total_updates}): the run would end before its first scheduled "
            f"evaluation. Use --eval-interval {args.total_updates} or less.")
    if update_multiple > 1 and (args.eval_interval % update_multiple
                                or args.total_updates % update_multiple):
        raise ConfigError(
            f"--eval-interval ({args.eval_interval}) and --total-updates ({args.total_updates}) "
            f"must be multiples of {update_multiple}: one update step of this algorithm is "
            f"{update_multiple} gradient updates, and evaluations fall between steps.")
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag(field.name)} must be a finite number, got {value}.")
        if (field.name.endswith("_lr") or field.name == "learning_rate") and value <= 0:
            raise ConfigError(f"{flag(field.name)} is a learning rate and must be positive, got "
                              f"{value}.")
    if hasattr(args, "discount") and not 0.0 <= args.discount <= 1.0:
        raise ConfigError(f"--discount (gamma) must lie in [0, 1], got {args.discount}; the "
                          "papers use 0.99.")
    if hasattr(args, "tau") and not 0.0 < args.tau <= 1.0:
        raise ConfigError(f"--tau, the target networks' averaging rate, must lie in (0, 1] (1 "
                          f"copies the online networks at every update), got {args.tau}.")
    for names, test, words in ((positive, lambda v: v > 0, "positive"),
                               (nonnegative, lambda v: v >= 0, "zero or positive"),
                               (open_unit, lambda v: 0 < v < 1, "strictly between 0 and 1"),
                               (unit, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for name in names:
            if not test(getattr(args, name)):
                raise ConfigError(f"{flag(name)} must be {words}, got {getattr(args, name)}.")


def check_batch_size(args, num_transitions: int):
    """A minibatch is drawn from the dataset with replacement; one larger than the dataset is
    almost certainly a typo (and a huge one stalls the first compilation for minutes)."""
    if args.batch_size > num_transitions:
        default = type(args).batch_size  # the file's default, from its paper or authors' code
        raise ConfigError(
            f"--batch-size {args.batch_size} is larger than the dataset '{args.env}' "
            f"({num_transitions} transitions). "
            + (f"Use --batch-size {default} (this algorithm's default) or any size up to the "
               "dataset's." if num_transitions >= default
               else f"Use --batch-size {num_transitions} or less."))


def enable_compilation_cache():
    """Keep XLA's compilations on disk (JAX's persistent compilation cache), so that a run whose
    shapes were compiled before (the same algorithm, sizes and dataset dimensions) starts
    training without compiling again. JAX_COMPILATION_CACHE_DIR chooses the directory; the
    default is ~/.cache/offlax/jax (under XDG_CACHE_HOME where that is set)."""
    import os
    from pathlib import Path

    import jax

    if jax.config.jax_compilation_cache_dir is None:  # JAX_COMPILATION_CACHE_DIR sets it
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        jax.config.update("jax_compilation_cache_dir", str(cache_home / "offlax" / "jax"))
    # The default (1 s) leaves out the many small compilations of initialisation and
    # evaluation, which add up to seconds at every start.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_main(main: Callable, args) -> None:
    """Run `main(args)` as a command: an OfflaxError prints `error: <message>` (or
    `interrupted: ...`) on stderr and exits with its code; Ctrl-C before training exits 130."""
    enable_compilation_cache()
    try:
        main(args)
    except OfflaxError as error:
        exit_with(error)
    except KeyboardInterrupt:  # during training, Ctrl-C is the loop's (common/training.py)
        print("\ninterrupted before training started: no checkpoint was written, so there is "
              "nothing to resume.", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # a run that stopped before training leaves no directory of its own behind
        release_all()


def exit_with(error: OfflaxError):
    print(f"{error.label}: {error}", file=sys.stdout if error.exit_code == 0 else sys.stderr)
    raise SystemExit(error.exit_code) from None
