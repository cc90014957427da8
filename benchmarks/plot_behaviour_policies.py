"""Plot the learning curves recorded in the committed behaviour-policy files (SAC for the
continuous tasks, DQN for the discrete ones).

Each curve is the deterministic (SAC: mean action; DQN: greedy) return over the run's evaluation
episodes at every snapshot; the chosen medium and expert snapshots are marked, and the table
lists what was chosen.

    python benchmarks/plot_behaviour_policies.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.datasets import policies  # noqa: E402


@dataclass
class Args:
    envs: tuple[str, ...] = ("hopper", "walker2d", "halfcheetah", "invertedpendulum", "cartpole",
                             "minatar-spaceinvaders")
    """Policy files to plot (common/policies/<env>.npz)."""
    output_dir: str = "benchmarks/results"
    """Where behaviour_learning_curves.png and behaviour_policies.md go."""


def main(args: Args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [e for e in args.envs if e in policies.available_envs()]
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2))
    rows = []
    for ax, env in zip(axes if len(envs) > 1 else [axes], envs):
        meta = policies.load_policies(env).meta
        trainer = meta.get("trainer", "sac")
        config = meta[f"{trainer}_config"]
        steps, returns = zip(*meta["learning_curve"])
        ax.plot(steps, returns, lw=1.2)
        for key, colour in (("medium", "tab:orange"), ("expert", "tab:green")):
            step = meta[f"{key}_step"]
            ax.axvline(step, color=colour, ls="--", lw=1, label=f"{key} @ {step:,}")
        width = "x".join(map(str, config["hidden_dims"]))
        ax.set_title(f"{meta['env_id']} ({trainer.upper()} {width})")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("greedy return" if trainer == "dqn" else "deterministic return")
        ax.legend(fontsize=8)
        rows.append(
            f"| {meta['env_id']} | {trainer.upper()} | {meta[f'{trainer}_trained_steps']:,} | "
            f"{meta['expert_step']:,} | "
            f"{meta['ref_max_score']:.1f} | {meta['medium_step']:,} | "
            f"{meta['medium_return_selection']:.1f} ({meta['medium_fraction_of_expert']:.2f}) | "
            f"{meta['ref_min_score']:.1f} | {sum(s[1] for s in meta['replay_schedule']):,} |"
        )
    fig.tight_layout()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "behaviour_learning_curves.png", dpi=90)
    table = (
        "| env | trainer | steps trained | expert snapshot | ref_max (expert, 100 ep.) | "
        "medium snapshot | medium return (fraction of expert) | ref_min (random, 100 ep.) | "
        "medium-replay size |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(rows) + "\n"
    )
    (out / "behaviour_policies.md").write_text(
        "# Behaviour policies\n\nFrom `python benchmarks/plot_behaviour_policies.py` (reads the "
        "committed `common/policies/*.npz`). Curves: `behaviour_learning_curves.png`.\n\n"
        + table
    )
    print(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
