"""Pick the behaviour policies from a SAC or DQN run and commit them to
`common/policies/<env>.npz`.

From the snapshots and learning curve written by `benchmarks/sac.py` (or `benchmarks/dqn.py`):
  expert  the snapshot with the best deterministic return (the top candidates of the learning
          curve re-evaluated over `--select-episodes` episodes), D4RL's "fully trained" policy;
  medium  the first snapshot whose return reaches about a third of the expert's (D4RL: "trained
          to approximately 1/3 the performance of the expert"), re-evaluated likewise;
  replay  the snapshots that acted before the medium one, with the number of steps each acted,
          so medium-replay can be rebuilt as the replay buffer at the medium snapshot;
and the reference scores: ref_min = uniformly random policy, ref_max = the (float16) expert with
deterministic actions, each averaged over `--ref-episodes` episodes.

A DQN run's policies are greedy Q-networks whose data is collected epsilon-greedily: medium and
expert with the run's final exploration rate (its training-time behaviour), `imperfect` with
0.2 (the Batch RL benchmark's), and each replay stretch with the mean of the run's epsilon
schedule over the steps it covers (`meta["epsilons"]`, the schedule's third column).

    python benchmarks/export_policies.py --env-key hopper --run-dir runs/sac/hopper
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.datasets import generated, policies  # noqa: E402
from common.environments import make as make_env  # noqa: E402

IMPERFECT_EPSILON = 0.2  # Fujimoto et al. 2019, "Benchmarking Batch Deep RL", Sec. 4


@dataclass
class Args:
    env_key: str = "hopper"
    """Short name of the environment: the policy file is common/policies/<env-key>.npz."""
    run_dir: str = "runs/sac/hopper"
    """The SAC or DQN run (benchmarks/sac.py or dqn.py --run-dir)."""
    ref_episodes: int = 100
    """Episodes for each reference score (the issue's protocol: 100)."""
    select_episodes: int = 20
    """Episodes to re-evaluate each expert / medium candidate."""
    medium_fraction: float = 1 / 3
    """medium = first snapshot reaching this fraction of the expert's return (D4RL: 1/3)."""
    max_replay_snapshots: int = 12
    """At most this many snapshots replay medium-replay (keeps the committed file small); with
    more, evenly spaced ones are kept and each acts until the next kept one."""
    output: str | None = None
    """Policy file to write (default common/policies/<env-key>.npz)."""


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    with (run_dir / "curve.csv").open() as f:
        return [(int(row["step"]), float(row["eval_return"])) for row in csv.DictReader(f)]


def load_snapshot(run_dir: Path, step: int) -> dict:
    """A snapshot, rounded to float16 exactly as it will be committed."""
    with np.load(run_dir / "snapshots" / f"step_{step:08d}.npz") as data:
        return {k: data[k].astype(np.float16).astype(np.float32) for k in data.files}


def is_discrete(action_space) -> bool:
    return isinstance(action_space, gym.spaces.Discrete)


def evaluate(env_id, params, action_space, episodes, deterministic=True, seed=2024):
    if is_discrete(action_space):
        policy = policies.EpsilonGreedyQPolicy(params, action_space.n)
    else:
        policy = policies.TanhGaussianPolicy(params, action_space.low, action_space.high)
    return generated.average_return(env_id, policy, episodes, seed, deterministic)


def uniform_policy(action_space):
    if is_discrete(action_space):
        return policies.UniformDiscretePolicy(action_space.n)
    return policies.UniformPolicy(action_space.low, action_space.high)


def mean_epsilon(config: dict, start: int, end: int) -> float:
    """The mean exploration rate of benchmarks/dqn.py's schedule over steps [start, end)."""
    import dqn

    args = dqn.Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    return float(np.mean([dqn.epsilon_at(step, args) for step in range(start, end)]))


def main(args: Args):
    run_dir = Path(args.run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    env_id = config["env"]
    action_space = make_env(env_id).action_space
    discrete = is_discrete(action_space)
    trainer = "dqn" if discrete else "sac"
    curve = read_curve(run_dir)
    trained_steps = curve[-1][0]

    def best_of(candidates):
        scored = [
            (evaluate(env_id, load_snapshot(run_dir, s), action_space, args.select_episodes), s)
            for s in candidates
        ]
        for score, step in scored:
            print(f"  step {step}: {score:.1f} over {args.select_episodes} episodes")
        return max(scored)

    # the best returns; among equal ones the latest snapshots (the most trained: DQN reaches
    # CartPole's cap of 500 early and stays there)
    top = [s for s, _ in sorted(curve, key=lambda c: (c[1], c[0]), reverse=True)[:3]]
    print(f"{env_id}: expert candidates {top}")
    expert_return, expert_step = best_of(top)
    target = args.medium_fraction * expert_return
    print(f"expert: step {expert_step}, return {expert_return:.1f}; medium target {target:.1f}")
    medium_step = medium_return = None
    tried = []
    for step, curve_return in curve:
        if curve_return < 0.9 * target or step > expert_step:
            continue
        score = evaluate(env_id, load_snapshot(run_dir, step), action_space, args.select_episodes)
        print(f"  medium candidate step {step}: {score:.1f}")
        tried.append((abs(score - target), step, score))
        if abs(score - target) <= 0.25 * abs(target) or len(tried) >= 5:
            break
    # Returns can jump past a third of the expert between two snapshots (InvertedPendulum
    # does): then the closest candidate on either side of the target stands in, and the
    # fraction it reaches is recorded in the policy file.
    below = [(s, r) for s, r in curve if r < 0.9 * target and s < expert_step][-1:]
    for step, _ in below:
        score = evaluate(env_id, load_snapshot(run_dir, step), action_space, args.select_episodes)
        print(f"  medium candidate step {step} (below target): {score:.1f}")
        tried.append((abs(score - target), step, score))
    _, medium_step, medium_return = min(tried)

    learning_starts = config["learning_starts"]
    acting = [s for s, _ in curve if learning_starts <= s < medium_step]
    if len(acting) > args.max_replay_snapshots:
        keep = np.linspace(0, len(acting) - 1, args.max_replay_snapshots).round().astype(int)
        acting = [acting[i] for i in sorted(set(keep))]
    if not acting or acting[0] != learning_starts:
        acting = [learning_starts, *acting] if learning_starts in dict(curve) else acting
    schedule = [["random", acting[0] if acting else medium_step]]
    params = {
        "expert": load_snapshot(run_dir, expert_step),
        "medium": load_snapshot(run_dir, medium_step),
    }
    for i, step in enumerate(acting):
        end = acting[i + 1] if i + 1 < len(acting) else medium_step
        name = f"replay_{i:02d}"
        params[name] = load_snapshot(run_dir, step)
        schedule.append([name, end - step, mean_epsilon(config, step, end)] if discrete
                        else [name, end - step])

    print(f"reference scores over {args.ref_episodes} episodes ...")
    ref_min = generated.average_return(
        env_id, uniform_policy(action_space), args.ref_episodes, seed=1, deterministic=False,
    )  # fmt: skip
    ref_max = evaluate(env_id, params["expert"], action_space, args.ref_episodes, seed=2)
    print(f"ref_min {ref_min:.1f}, ref_max {ref_max:.1f}")
    meta = {
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "ref_episodes": args.ref_episodes,
        "expert_step": expert_step,
        "expert_return_selection": expert_return,
        "medium_step": medium_step,
        "medium_return_selection": medium_return,
        "medium_fraction_of_expert": medium_return / expert_return,
        "replay_schedule": schedule,
        "replay_snapshot_steps": acting,
        "trainer": trainer,
        f"{trainer}_trained_steps": trained_steps,
        f"{trainer}_config": config,
        **({"action_space": "discrete",
            "epsilons": {"medium": config["epsilon_end"], "expert": config["epsilon_end"],
                         "imperfect": IMPERFECT_EPSILON}} if discrete else {}),
        "learning_curve": curve,
    }
    output = Path(args.output or policies.POLICY_DIR / f"{args.env_key}.npz")
    policies.save_policies(output, env_id, params, meta)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB): {len(params)} policies")


if __name__ == "__main__":
    main(tyro.cli(Args))
