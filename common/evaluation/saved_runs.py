"""Evaluate a trained policy again: `python -m common.evaluation RUN_DIR [--episodes N]
[--video F]`.

RUN_DIR is the output directory of a training run. Its final policy (policy.msgpack) is used, or,
for a run that has not finished, the policy of its latest checkpoint. Every agent (seed) of the
run plays N episodes; the raw and D4RL-normalised returns are printed per agent. The episodes
are the ones the run's own evaluations used (same reset seeds, and for a stochastic policy such
as BCQ's the same keys), so with N equal to the run's --eval-episodes the final returns in
results.json are reproduced exactly.

`--video F.mp4` also records the first agent's first episode with MuJoCo's offscreen renderer
(MUJOCO_GL=egl unless set; needs `pip install 'offlax[video]'`). Where no OpenGL backend is
available the video is skipped with a message, and the evaluation still runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import OfflaxError

ALGORITHMS_DIR = Path(__file__).resolve().parents[2] / "algorithms"


class EvaluateError(OfflaxError):
    pass


def import_algorithm(name: str):
    """The module of algorithms/<name>.py, which defines `Args` and `evaluation_policy`."""
    path = ALGORITHMS_DIR / f"{name}.py"
    if not path.exists():
        raise EvaluateError(f"The run was trained by '{name}', but {path} does not exist.")
    spec = importlib.util.spec_from_file_location(f"offlax_algorithm_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def load_run(run_dir) -> dict:
    """What evaluating a run needs: its results.json, algorithm module, policy parameters
    (leading seed axis), statistics (observation mean / std, action bounds) and where the
    parameters came from."""
    from flax import serialization

    from common.checkpoints import load_latest

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise EvaluateError(
            f"'{run_dir}' holds no results.json, so it is not the output directory of a training "
            "run that got to its first evaluation. Give the --output-dir of a run.")
    results = json.loads(results_path.read_text())
    module = import_algorithm(results["algorithm"])
    policy_path = run_dir / "policy.msgpack"
    if policy_path.exists():
        saved = serialization.msgpack_restore(policy_path.read_bytes())
        params = saved.pop("params")
        source = f"{policy_path} (final, update {results['updates']})"
    else:
        checkpoint = load_latest(run_dir)
        params = policy_params(module, checkpoint["states"])
        saved = checkpoint["statistics"]
        source = f"{checkpoint['path']} (latest checkpoint, update {checkpoint['update']})"
    return {"results": results, "module": module, "params": params, "statistics": saved,
            "source": source}


def policy_params(module, states):
    """The parameters the evaluation policy acts with, from a checkpoint's state: the actor's,
    or what the algorithm's `policy_params` picks (BCQ acts with its VAE, actor and critic)."""
    if hasattr(module, "policy_params"):
        return module.policy_params(states)
    return states["actor"]["params"]


def evaluate_run(run_dir, episodes: int | None = None) -> dict:
    """Returns (seeds, episodes) and normalised scores of every agent of the run."""
    import jax

    from common.cli import args_from_dict
    from common.datasets import DatasetInfo, normalized_score
    from common.evaluation import Evaluator, image_shape
    from common.normalization import ActionScaling, ObservationStatistics

    run = load_run(run_dir)
    results, statistics, module = run["results"], run["statistics"], run["module"]
    args = args_from_dict(module.Args, results["args"])
    if "num_actions" in statistics:  # a discrete-action file: indices, no action bounds
        scaling = None
        policy = module.evaluation_policy(args, int(statistics["num_actions"]),
                                          image_shape(np.asarray(statistics["observation_shape"])))
    else:
        stats = ObservationStatistics(np.asarray(statistics["obs_mean"]),
                                      np.asarray(statistics["obs_std"]))
        scaling = ActionScaling(np.asarray(statistics["action_low"]),
                                np.asarray(statistics["action_high"]))
        policy = module.evaluation_policy(args, len(scaling.low), stats)
    dataset = results["dataset"]
    info = DatasetInfo(name=results["env"], source=dataset["source"], dataset_id=dataset["id"],
                       env_id=dataset["env_id"], ref_min_score=dataset["ref_min_score"],
                       ref_max_score=dataset["ref_max_score"],
                       ref_score_source=dataset["ref_score_source"])
    episodes = episodes or args.eval_episodes
    evaluator = Evaluator(info.env_id, policy, results["seeds"], episodes, scaling)
    params = jax.tree.map(np.asarray, run["params"])
    returns = evaluator(params)
    evaluator.close()
    return {"run": run, "args": args, "info": info, "returns": returns, "policy": policy,
            "params": params, "scaling": scaling,
            "scores": normalized_score(returns, info)}


def record_video(evaluation: dict, path: Path) -> str:
    """Record agent 0's episode 0 (the evaluation's own reset seed) to `path`; returns a line
    saying what happened. Rendering or encoding problems skip the video, not the evaluation."""
    import jax

    from common.environments import make as make_env
    from common.evaluation import EVAL_SEED_STRIDE, episode_key, takes_key

    try:
        import imageio.v3 as iio
    except ImportError:
        return "video skipped: recording needs imageio; pip install 'offlax[video]'."
    info, scaling = evaluation["info"], evaluation["scaling"]
    seed = evaluation["run"]["results"]["seeds"][0]
    params = jax.tree.map(lambda x: x[0], evaluation["params"])
    policy = evaluation["policy"]
    if takes_key(policy):  # the keys of the evaluation's own episode 0: the same actions
        act = jax.jit(lambda p, o, step: policy(p, o, episode_key(seed * EVAL_SEED_STRIDE, step)))
    else:
        act = jax.jit(lambda p, o, step: policy(p, o))
    try:
        env = make_env(info.env_id, render_mode="rgb_array")
        observation, _ = env.reset(seed=seed * EVAL_SEED_STRIDE)
        frames = [env.render()]
    except Exception as error:  # MuJoCo raises several types when no GL context can be made
        if type(error).__name__ == "DependencyNotInstalled":  # e.g. CartPole's pygame renderer
            return f"video skipped: rendering {info.env_id} needs a package missing here: {error}"
        return (f"video skipped: no OpenGL backend for offscreen rendering here "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {type(error).__name__}: {error}). "
                "Install EGL (e.g. libegl1) or OSMesa (libosmesa6 with MUJOCO_GL=osmesa).")
    total, done = 0.0, False
    bar = tqdm(total=env.spec.max_episode_steps, desc=f"recording {path.name}", unit="frame",
               leave=False)  # offscreen rendering takes most of the time  # fmt: skip
    step = 0
    while not done:
        flat = observation.reshape(1, -1).astype(np.float32)
        action = np.asarray(act(params, flat, step))[0]
        step += 1
        if scaling is not None:
            action = np.clip(scaling.from_unit(action), scaling.low, scaling.high)
        observation, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        frames.append(env.render())
        bar.update()
        done = terminated or truncated
    bar.close()
    fps = env.metadata.get("render_fps", 30)
    env.close()
    try:
        with _ffmpeg_without_preexec():
            iio.imwrite(path, np.stack(frames), fps=fps)
    except Exception as error:  # no encoder for this format (e.g. mp4 without imageio-ffmpeg)
        return (f"video skipped: cannot write '{path}' ({type(error).__name__}: {error}). For "
                "mp4, pip install 'offlax[video]'; '.gif' needs only Pillow.")
    return f"video: {path} ({len(frames)} frames at {fps} fps, return {total:.1f})"


@contextmanager
def _ffmpeg_without_preexec():
    """imageio-ffmpeg starts ffmpeg with `preexec_fn=os.setpgrp` (to keep Ctrl-C from it), which
    runs Python in a child forked from this multithreaded process (JAX's threads): a known
    deadlock risk. Its own switch turns that off; ffmpeg is then started by a plain fork+exec."""
    variable = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"
    previous = os.environ.get(variable)
    os.environ[variable] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output directory of a training run")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per agent (default: the run's --eval-episodes)")
    parser.add_argument("--video", type=Path, default=None,
                        help="record the first agent's first episode to this file (.mp4, .gif)")
    options = parser.parse_args(argv)
    if options.episodes is not None and options.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {options.episodes}")
    if options.video is not None:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported: headless default
    try:
        evaluation = evaluate_run(options.run_dir, options.episodes)
    except OfflaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    run, returns, scores = evaluation["run"], evaluation["returns"], evaluation["scores"]
    results = run["results"]
    print(f"{results['algorithm']} on {results['env']} ({evaluation['info'].env_id}), "
          f"{returns.shape[1]} episodes per agent")
    print(f"policy: {run['source']}")
    print(f"{'seed':>6} {'return mean':>12} {'std':>8} {'normalised':>11}")
    per_agent = scores.mean(1)
    for seed, agent_returns, score in zip(results["seeds"], returns, per_agent):
        print(f"{seed:>6} {agent_returns.mean():>12.1f} {agent_returns.std():>8.1f} {score:>11.1f}")
    print(f"{'all':>6} {returns.mean():>12.1f} {'':>8} {per_agent.mean():>11.1f} "
          f"+- {per_agent.std():.1f} (over agents)")
    if options.video is not None:
        print(record_video(evaluation, options.video))
    return 0
