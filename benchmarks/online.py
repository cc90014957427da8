"""What the online trainers of the behaviour policies share (`sac.py` for continuous actions,
`dqn.py` for discrete ones): the replay buffer, the run directory (arguments, snapshots, the
learning curve), whole-state checkpoints that resume exactly, and evaluation episodes.

A run directory holds `config.json` (the arguments), `snapshots/step_<k>.npz` (the policy's
parameters every `snapshot_interval` steps: the candidates for medium and expert and the policies
that replay medium-replay), `curve.csv` (step, evaluation return, episodes, wall seconds) and
`checkpoint.npz` (parameters, optimiser state, replay buffer, RNG, step). `export_policies.py`
reads the first three.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from flax import serialization


class ReplayBuffer:
    """Host-side ring buffer: environment steps are on the host, so the buffer is too.

    Observations keep the environment's dtype where it is an integer or boolean one (MinAtar's
    10x10xC boolean images: a byte each rather than four); actions are float vectors for a Box
    action space and integers (shape ()) for a Discrete one."""

    def __init__(self, capacity: int, obs_shape: tuple, action_shape: tuple = (),
                 action_dtype=np.float32, obs_dtype=np.float32):
        obs_dtype = np.uint8 if np.dtype(obs_dtype).kind in "bui" else np.float32
        self.fields = {
            "observations": np.zeros((capacity, *obs_shape), obs_dtype),
            "actions": np.zeros((capacity, *action_shape), action_dtype),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, *obs_shape), obs_dtype),
            "terminals": np.zeros(capacity, np.float32),
        }
        self.capacity, self.size, self.position = capacity, 0, 0

    def add(self, obs, action, reward, next_obs, terminal):
        i = self.position
        f = self.fields
        f["observations"][i], f["actions"][i], f["rewards"][i] = obs, action, reward
        f["next_observations"][i], f["terminals"][i] = next_obs, terminal
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict:
        index = rng.integers(0, self.size, batch_size)
        return {k: v[index] for k, v in self.fields.items()}


def save_checkpoint(path: Path, state, buffer: ReplayBuffer, rng, step: int, episodes: int,
                    wall_seconds: float = 0.0):
    """Write to a temporary file and rename, so a crash never leaves a broken checkpoint.
    `wall_seconds`: the training time up to this step, over every process of the run."""
    tmp = path.with_suffix(".tmp.npz")
    arrays = {f"buffer/{k}": v[: buffer.size] for k, v in buffer.fields.items()}
    np.savez(
        tmp,
        state=np.frombuffer(serialization.to_bytes(state), np.uint8),
        rng=np.frombuffer(json.dumps(rng.bit_generator.state).encode(), np.uint8),
        meta=np.array([step, episodes, buffer.position, buffer.size]),
        wall_seconds=np.float64(wall_seconds),
        **arrays,
    )
    os.replace(tmp, path)


def load_checkpoint(path: Path, state_template, buffer: ReplayBuffer, rng):
    """(state, step, episodes, wall seconds or None where the checkpoint predates them)."""
    with np.load(path) as data:
        state = serialization.from_bytes(state_template, data["state"].tobytes())
        rng.bit_generator.state = json.loads(data["rng"].tobytes().decode())
        step, episodes, position, size = (int(x) for x in data["meta"])
        for k in buffer.fields:
            buffer.fields[k][:size] = data[f"buffer/{k}"]
        wall_seconds = float(data["wall_seconds"]) if "wall_seconds" in data else None
    buffer.position, buffer.size = position, size
    return state, step, episodes, wall_seconds


class OnlineRun:
    """The run directory of one training: its arguments, snapshots, curve and checkpoint."""

    def __init__(self, run_dir: str, args):
        self.dir = Path(run_dir)
        (self.dir / "snapshots").mkdir(parents=True, exist_ok=True)
        self.checkpoint = self.dir / "checkpoint.npz"
        self.curve = self.dir / "curve.csv"
        self.start = time.time()
        config = self.dir / "config.json"
        mine = json.loads(json.dumps(dataclasses.asdict(args)))  # tuples as JSON lists
        if self.checkpoint.exists():
            saved = json.loads(config.read_text())
            differing = [k for k in mine if k != "stop_after" and saved.get(k) != mine[k]]
            if differing:
                raise SystemExit(
                    f"{self.dir} holds a run with different arguments ({', '.join(differing)}); "
                    "use another --run-dir or the same arguments to resume it."
                )
        else:
            config.write_text(json.dumps(mine, indent=2))
        if not self.curve.exists():
            self.curve.write_text("step,eval_return,episodes,wall_seconds\n")

    def resume(self, state, buffer: ReplayBuffer, rng):
        """(state, step, episodes) from the checkpoint if there is one, else from scratch."""
        if not self.checkpoint.exists():
            return state, 0, 0
        state, step, episodes, wall_seconds = load_checkpoint(self.checkpoint, state, buffer, rng)
        # A run killed after its checkpoint evaluated snapshots that the resumed run evaluates
        # again: their rows go, so the curve has each step once.
        header, *rows = self.curve.read_text().splitlines(keepends=True)
        kept = [row for row in rows if int(row.split(",")[0]) <= step]
        if len(kept) < len(rows):
            self.curve.write_text("".join([header, *kept]))
        if wall_seconds is None:  # an older checkpoint: the curve's last kept time instead
            wall_seconds = float(kept[-1].split(",")[3]) if kept else 0.0
        self.start = time.time() - wall_seconds  # the curve's wall seconds count every process
        print(f"resumed {self.dir} at step {step}")
        return state, step, episodes

    def save(self, state, buffer: ReplayBuffer, rng, step: int, episodes: int):
        save_checkpoint(self.checkpoint, state, buffer, rng, step, episodes,
                        time.time() - self.start)

    def snapshot(self, step: int, params: dict, eval_return: float, episodes: int):
        """Save the policy's parameters (a flat {layer/name: array} dict) and its return."""
        np.savez(self.dir / "snapshots" / f"step_{step:08d}.npz", **params)
        with self.curve.open("a") as f:
            f.write(f"{step},{eval_return:.3f},{episodes},{time.time() - self.start:.1f}\n")


def flat_params(params: dict) -> dict:
    """A network's parameters as the exported {layer/name: float32 array} dict."""
    return {f"{layer}/{name}": np.asarray(value, np.float32)
            for layer, leaves in params["params"].items() for name, value in leaves.items()}


def evaluate(env, act: Callable, episodes: int, seed: int) -> float:
    """Mean undiscounted return of `episodes` episodes, act(observation) -> environment action,
    reset seeds seed, seed + 1, ..."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))
