"""A sweep's config file (TOML) and the runs it names: algorithms x datasets x variants x seeds.

    name = "door-human"                  # optional: the file's stem
    output_dir = "runs/sweeps/door-human"  # optional: runs/sweeps/<name>
    algorithms = ["bc", "td3_bc", "iql", "cql"]
    datasets = ["../shared/data/d4rl/door-human-v0.hdf5"]
    seeds = 5                            # seeds 0..4, or a list: [0, 1, 2]
    seeds_per_run = 1                    # seeds vmapped in one process (--num-seeds); 1: a
                                         # process per seed (CPU cores), more for a GPU

    [flags]                              # every run's flags (as on the command line)
    total-updates = 1_000_000
    [flags.cql]                          # one algorithm's runs only
    cql-alpha = 10.0

    [[variants]]                         # optional: more runs, as above with these flags
    name = "tau-0.9"                     # (labelled iql+tau-0.9 beside iql)
    algorithms = ["iql"]                 # optional: the algorithms it applies to
    flags = { expectile = 0.9 }

    [slurm]                              # submitit's parameters, for --executor slurm
    timeout_min = 240
    slurm_partition = "gpu"
    gpus_per_node = 1

Every flag is checked against the algorithm's `Args` before anything runs; the flags a sweep sets
itself (--env --seed --num-seeds --output-dir --resume) are refused there. Relative paths
(datasets that are files, output_dir) are relative to the working directory, as on the command
line: run sweeps from the repository's root.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS_DIR = ROOT / "algorithms"
SWEEP_FLAGS = ("env", "seed", "num_seeds", "output_dir", "resume")
KEYS = {"name", "output_dir", "algorithms", "datasets", "seeds", "seeds_per_run", "flags",
        "variants", "slurm"}


@dataclasses.dataclass(frozen=True)
class Run:
    """One process: `algorithm` on `dataset` with seeds seed .. seed + num_seeds - 1."""

    algorithm: str
    variant: str | None
    dataset: str
    seed: int
    num_seeds: int
    flags: tuple[tuple[str, object], ...]
    output_dir: str

    @property
    def label(self) -> str:
        """What the report compares: the algorithm, or algorithm+variant."""
        return self.algorithm if self.variant is None else f"{self.algorithm}+{self.variant}"

    def command(self, resume: bool) -> list[str]:
        script = str(ALGORITHMS_DIR / f"{self.algorithm}.py")
        if resume:
            return [sys.executable, script, "--resume", self.output_dir]
        command = [sys.executable, script, "--env", self.dataset, "--seed", str(self.seed),
                   "--num-seeds", str(self.num_seeds), "--output-dir", self.output_dir]
        for name, value in self.flags:
            command += flag_words(name, value)
        return command


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    output_dir: Path
    runs: tuple[Run, ...]
    slurm: dict


def flag_words(name: str, value) -> list[str]:
    """A flag as tyro reads it: `--name value`, a list as several values, a bool as
    `--name` / `--no-name`."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def dataset_slug(dataset: str) -> str:
    """A directory name for a dataset: a file's stem, an id with '/' as '_'."""
    return Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset.replace("/", "_")


def load_sweep(path: str | Path) -> Sweep:
    """The config at `path`, checked, as its runs; a ConfigError names any problem."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Sweep config '{path}' does not exist.") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Sweep config '{path}' is not valid TOML: {error}.") from None
    unknown = set(config) - KEYS
    if unknown:
        raise ConfigError(f"Sweep config '{path}' has unknown key(s) {', '.join(sorted(unknown))};"
                          f" the keys are {', '.join(sorted(KEYS))}.")
    for key in ("algorithms", "datasets"):
        value = config.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"Sweep config '{path}' needs `{key}`, a list of names.")
    name = config.get("name", path.stem)
    output_dir = Path(config.get("output_dir", Path("runs") / "sweeps" / name)).resolve()

    seeds = config.get("seeds", 3)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    per_run = config.get("seeds_per_run", 1)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"`seeds` in '{path}' must be a count or a list of seeds >= 0.")
    if not isinstance(per_run, int) or per_run < 1 or len(seeds) % per_run:
        raise ConfigError(f"`seeds_per_run` in '{path}' must divide the {len(seeds)} seeds, got "
                          f"{per_run}.")
    groups = [seeds[i:i + per_run] for i in range(0, len(seeds), per_run)]
    for group in groups:
        if group != list(range(group[0], group[0] + len(group))):
            raise ConfigError(f"With `seeds_per_run` {per_run}, the seeds of one run must be "
                              f"consecutive (--seed S --num-seeds N runs S .. S+N-1); {group} "
                              "are not.")

    algorithms = config["algorithms"]
    args_classes = {a: _args_class(a, path) for a in algorithms}
    flags = config.get("flags", {})
    shared = {k: v for k, v in flags.items() if not isinstance(v, dict)}
    own = {k: v for k, v in flags.items() if isinstance(v, dict)}
    for algorithm in own:
        if algorithm not in algorithms:
            raise ConfigError(f"[flags.{algorithm}] in '{path}' names an algorithm the sweep does "
                              f"not run ({', '.join(algorithms)}).")
    variants = config.get("variants", [])
    names = [v.get("name") for v in variants]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"Every [[variants]] entry in '{path}' needs a name of its own.")
    variants = [{"name": None}, *variants]  # the runs as configured, then each variant's

    def datasets_path(dataset):
        return str(Path(dataset).resolve()) if dataset.endswith((".hdf5", ".h5")) else dataset

    runs = []
    for variant in variants:
        applies = variant.get("algorithms", algorithms)
        for algorithm in algorithms:
            if algorithm not in applies:
                continue
            run_flags = {**shared, **own.get(algorithm, {}), **variant.get("flags", {})}
            _check_flags(algorithm, args_classes[algorithm], run_flags, path)
            label = algorithm if variant.get("name") is None else f"{algorithm}+{variant['name']}"
            for dataset in config["datasets"]:
                for group in groups:
                    seed_dir = (f"seed{group[0]}" if len(group) == 1
                                else f"seeds{group[0]}-{group[-1]}")
                    runs.append(Run(
                        algorithm=algorithm, variant=variant.get("name"),
                        dataset=datasets_path(dataset), seed=group[0], num_seeds=len(group),
                        flags=tuple(sorted(run_flags.items())),
                        output_dir=str(output_dir / label / dataset_slug(dataset) / seed_dir)))
    return Sweep(name=name, output_dir=output_dir, runs=tuple(runs),
                 slurm=dict(config.get("slurm", {})))


def _args_class(algorithm: str, path: Path):
    if not (ALGORITHMS_DIR / f"{algorithm}.py").exists():
        known = sorted(p.stem for p in ALGORITHMS_DIR.glob("*.py") if p.stem != "reward_model")
        raise ConfigError(f"Sweep config '{path}' names the algorithm '{algorithm}', which has no "
                          f"file in algorithms/; the algorithms are {', '.join(known)}.")
    if str(ALGORITHMS_DIR) not in sys.path:
        sys.path.insert(0, str(ALGORITHMS_DIR))
    return importlib.import_module(algorithm).Args


def _check_flags(algorithm: str, args_class, flags: dict, path: Path):
    fields = {f.name for f in dataclasses.fields(args_class)}
    for flag in flags:
        name = flag.replace("-", "_")
        if name in SWEEP_FLAGS:
            raise ConfigError(f"The flag '{flag}' in '{path}' is the sweep's to set (from "
                              "`datasets`, `seeds` and `output_dir`); remove it.")
        if name not in fields:
            raise ConfigError(f"'{flag}' in '{path}' is not a flag of algorithms/{algorithm}.py "
                              f"(see python algorithms/{algorithm}.py --help).")
