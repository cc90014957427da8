"""Report on offlax's generated datasets: size, episodes, returns, TQ and SACo.

Dataset-quality measures of Schweighofer et al. ("A Dataset Perspective on Offline Reinforcement
Learning", CoLLAs 2022), per environment:
  TQ   trajectory quality = (mean episode return - that of the random dataset)
                            / (that of the expert dataset - that of the random dataset);
  SACo state-action coverage = unique (s, a) pairs of the dataset / unique (s, a) pairs of the
       reference dataset. The paper counts exact pairs in discrete environments; for continuous
       MuJoCo data every pair is unique, so offlax discretises: each dimension of (s, a) is
       standardised with the reference data's mean and std and cut into bins `--bin-width` std
       wide. The reference is the union of the environment's levels (the paper uses its largest,
       most diverse dataset; the union contains every pair of every level, so SACo <= 1).
       Discrete actions (CartPole, MinAtar) are counted exactly, as in the paper: the action
       index is its own cell, only the states are binned; MinAtar's frames (uint8 images) are
       not binned either, so its pairs are exact, as the paper counts them on MinAtar.
Also each dataset's build time (from generate_datasets.py's `generation_times.json`) and its
size on disk. Writes a Markdown table, a JSON record and one return histogram (PNG) per
environment.

    python benchmarks/dataset_report.py --envs hopper walker2d halfcheetah
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.datasets import generated  # noqa: E402
from common.datasets import load_dataset, normalized_score  # noqa: E402

# seconds each dataset took to build, as generate_datasets.py records them
TIMINGS = Path(__file__).resolve().parent / "results" / "generation_times.json"


@dataclass
class Args:
    envs: tuple[str, ...] = ("hopper", "walker2d", "halfcheetah")
    """Environments to report on."""
    levels: tuple[str, ...] | None = None
    """Levels to report on (random and expert are needed for TQ; default: every level of each
    environment, `imperfect` too for a discrete task)."""
    size: int | None = None
    """Size suffix of the datasets (as given to generate_datasets.py)."""
    bin_width: float = 0.5
    """SACo grid cell width, in reference standard deviations per dimension."""
    output_dir: str = "benchmarks/results/datasets"
    """Where the table, JSON and histograms go."""


def discretise(observations, actions, mean, std, bin_width) -> np.ndarray:
    """Rows of grid-cell indices of the standardised (s, a) pairs, as one hashable void each."""
    pairs = np.concatenate([observations, actions], axis=1).astype(np.float64)
    cells = np.floor((pairs - mean) / (std * bin_width)).astype(np.int32)
    return np.ascontiguousarray(cells).view(np.dtype((np.void, cells.dtype.itemsize * cells.shape[1])))[:, 0]


def pair_cells(union: np.ndarray, obs_dim: int, discrete: bool, images: bool, bin_width: float):
    """pairs -> one hashable cell per (s, a) row, with the statistics of the reference `union`:
    exact bytes for uint8 images, else standardised bins (an integer action its own cell)."""
    if images:
        return lambda p: np.ascontiguousarray(p).view(np.dtype((np.void, p.shape[1])))[:, 0]
    mean, std = union.mean(0), union.std(0) + 1e-6
    if discrete:  # the action index is its own cell: (a - 0) / (1 * bin_width) then floor
        mean[obs_dim:], std[obs_dim:] = 0.0, 1.0 / bin_width
    return lambda p: discretise(p[:, :obs_dim], p[:, obs_dim:], mean, std, bin_width)


def unique_pairs(cells: np.ndarray) -> np.ndarray:
    return np.unique(cells)


def trajectory_quality(mean_return, random_return, expert_return) -> float:
    return float((mean_return - random_return) / (expert_return - random_return))


def report_env(env: str, args: Args, out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [level for level in (args.levels or generated.levels_of(env))
              if level in generated.levels_of(env)]
    datasets = {
        level: load_dataset(generated.OfflaxSpec(env, level, args.size).dataset_id)
        for level in levels
    }
    first = next(iter(datasets.values()))
    discrete, images = first.discrete, first.observations.dtype == np.uint8
    # images (MinAtar's uint8 frames): exact (s, a) bytes, as the paper counts MinAtar's pairs
    pair_dtype = np.uint8 if images else None
    pairs = {
        level: np.concatenate([d.observations, d.actions.reshape(d.size, -1)], axis=1,
                              dtype=pair_dtype, casting="unsafe")  # action indices < 256
        for level, d in datasets.items()
    }
    union = np.concatenate([pairs[level] for level in levels if level != "medium-expert"])
    cells = pair_cells(union, first.observations.shape[1], discrete, images, args.bin_width)

    reference_unique = len(unique_pairs(cells(union)))
    returns = {level: d.episode_returns() for level, d in datasets.items()}
    random_return = returns["random"].mean() if "random" in returns else np.nan
    expert_return = returns["expert"].mean() if "expert" in returns else np.nan
    build_seconds = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    rows = []
    for level, d in datasets.items():
        r = returns[level]
        rows.append({
            "dataset": d.info.dataset_id,
            "transitions": d.size,
            "episodes": len(r),
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
            "normalized_mean": float(normalized_score(r.mean(), d.info)),
            "TQ": trajectory_quality(r.mean(), random_return, expert_return),
            "SACo": len(unique_pairs(cells(pairs[level]))) / reference_unique,
            "ref_min_score": d.info.ref_min_score,
            "ref_max_score": d.info.ref_max_score,
            "build_seconds": build_seconds.get(d.info.dataset_id),
            "disk_mb": directory_megabytes(generated.dataset_directory(d.info.dataset_id)),
        })  # fmt: skip

    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 2.8), sharey=False)
    for ax, (level, r) in zip(np.atleast_1d(axes), returns.items()):
        ax.hist(r, bins=40, color="tab:blue")
        ax.set_title(level)
        ax.set_xlabel("episode return")
    np.atleast_1d(axes)[0].set_ylabel("episodes")
    env_id = next(iter(datasets.values())).info.env_id
    fig.suptitle(f"offlax/{env} ({env_id}): episode returns")
    fig.tight_layout()
    fig.savefig(out / f"{env}_returns.png", dpi=90)
    plt.close(fig)
    return rows


def directory_megabytes(path: Path) -> float:
    """Bytes on disk of a dataset (its HDF5 file and offlax's flat-array cache), in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def markdown_table(rows: list[dict]) -> str:
    header = (
        "| dataset | transitions | episodes | return mean ± std | min / max | normalised | TQ "
        "| SACo | build s | MB on disk |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def optional(value, spec):  # rows reported before these columns existed have none
        return "–" if value is None else format(value, spec)

    lines = [
        f"| `{r['dataset']}` | {r['transitions']:,} | {r['episodes']:,} | "
        f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['return_min']:.0f} / "
        f"{r['return_max']:.0f} | {r['normalized_mean']:.1f} | {r['TQ']:.3f} | {r['SACo']:.3f} | "
        f"{optional(r.get('build_seconds'), '.0f')} | {optional(r.get('disk_mb'), '.0f')} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def main(args: Args):
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for env in args.envs for row in report_env(env, args, out)]
    print(markdown_table(rows))
    tag = "" if args.size is None else f"_{args.size}"
    # The report covers every environment reported so far: the rows of the others are kept.
    previous = out / f"report{tag}.json"
    if previous.exists():
        reported = tuple(f"offlax/{env}/" for env in args.envs)
        kept = [r for r in json.loads(previous.read_text())
                if not r["dataset"].startswith(reported)]
        rows = kept + rows
    table = markdown_table(rows)
    (out / f"report{tag}.md").write_text(
        "# offlax dataset report\n\nGenerated by `python benchmarks/dataset_report.py"
        f"{'' if args.size is None else f' --size {args.size}'} --envs <env ...>`, one or "
        "more environments at a time (the rows of the others are kept). "
        f"TQ and SACo as in Schweighofer et al. (2022); SACo bins {args.bin_width} std wide, "
        "relative to the union of each environment's levels.\n\n" + table
    )
    (out / f"report{tag}.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
