"""offlax's D4RL-style datasets, built from committed behaviour policies.

D4RL's MuJoCo protocol (Fu et al., 2020, Sec. 5): one SAC agent trained online per task gives
  random        uniformly random actions,
  medium        a snapshot of the agent at about a third of the expert's return,
  medium-replay the agent's replay buffer up to that snapshot,
  expert        the fully trained agent,
  medium-expert medium and expert concatenated.
The policies are trained by `benchmarks/sac.py` and exported by `benchmarks/export_policies.py`
into `common/policies/<env>.npz`: the expert, the medium snapshot and the earlier snapshots that
acted while the replay buffer filled (one for every stretch of training between two snapshots).
medium-replay is rebuilt from them: uniform actions for SAC's random warm-up steps, then each
snapshot acting for the steps it covered in training, so it has the size of the buffer at the
medium snapshot. Data is collected with sampled (stochastic) actions, as D4RL did; the reference
scores use the deterministic (mean) action.

Ids: `offlax/<env>/<level>-v0` at D4RL's sizes (1M transitions; medium-replay as it falls;
medium-expert 2M), or `offlax/<env>/<level>-<size>-v0` for a dataset of `size` transitions.
Each is an ordinary Minari dataset in the local Minari directory, so `minari.load_dataset` reads
it too. Generation is deterministic for a given machine: fixed seeds for every reset and action.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
import re
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

POLICY_DIR = Path(__file__).parent / "policies"
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
D4RL_SIZE = 1_000_000
ROLLOUT_ENVS = 16  # environments stepped in lockstep, one batched policy call per step


# --------------------------------------------------------------------------------------------
# Policies


@dataclass(frozen=True)
class BehaviourPolicies:
    env_key: str  # "hopper"
    env_id: str  # "Hopper-v5"
    params: dict  # policy name -> {layer/kernel: float32 array}
    meta: dict  # export record: reference scores, snapshot steps, replay schedule, training


@lru_cache(maxsize=None)
def load_policies(env_key: str) -> BehaviourPolicies:
    path = POLICY_DIR / f"{env_key}.npz"
    with np.load(path) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        params: dict[str, dict] = {}
        for key in data.files:
            if key == "meta":
                continue
            policy, layer = key.split("/", 1)
            params.setdefault(policy, {})[layer] = data[key].astype(np.float32)
    return BehaviourPolicies(env_key, meta["env_id"], params, meta)


def available_envs() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.npz"))


def save_policies(path: Path, env_id: str, params: dict, meta: dict):
    """float16 weights: the committed policies must stay small (the fp16 network *is* the
    behaviour policy: generation and reference scores use exactly these weights)."""
    arrays = {
        f"{policy}/{layer}": np.asarray(w, np.float16)
        for policy, layers in params.items()
        for layer, w in layers.items()
    }
    meta = {**meta, "env_id": env_id}
    arrays["meta"] = np.frombuffer(json.dumps(meta, indent=1).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


class TanhGaussianPolicy:
    """The SAC actor of benchmarks/sac.py in numpy: a = tanh(mu(s) + sigma(s) * eps)."""

    def __init__(self, layers: dict, action_low: np.ndarray, action_high: np.ndarray):
        hidden = sorted(
            (k for k in layers if k.startswith("hidden_") and k.endswith("/kernel")),
            key=lambda k: int(k.split("_")[1].split("/")[0]),
        )
        self.hidden = [(layers[k], layers[k.replace("kernel", "bias")]) for k in hidden]
        self.mean = (layers["mean/kernel"], layers["mean/bias"])
        self.log_std = (layers["log_std/kernel"], layers["log_std/bias"])
        self.scale = ((action_high - action_low) / 2).astype(np.float32)
        self.offset = ((action_high + action_low) / 2).astype(np.float32)

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        x = obs.astype(np.float32)
        for kernel, bias in self.hidden:
            x = np.maximum(x @ kernel + bias, 0.0)
        u = x @ self.mean[0] + self.mean[1]
        if not deterministic:
            log_std = np.clip(x @ self.log_std[0] + self.log_std[1], -20.0, 2.0)
            u = u + np.exp(log_std) * rng.standard_normal(u.shape).astype(np.float32)
        return np.tanh(u) * self.scale + self.offset


class UniformPolicy:
    def __init__(self, action_low: np.ndarray, action_high: np.ndarray):
        self.low, self.high = action_low.astype(np.float32), action_high.astype(np.float32)

    def __call__(self, obs, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        return rng.uniform(self.low, self.high, (len(obs), len(self.low))).astype(np.float32)


def make_policy(policies: BehaviourPolicies, name: str, action_space):
    if name == "random":
        return UniformPolicy(action_space.low, action_space.high)
    return TanhGaussianPolicy(policies.params[name], action_space.low, action_space.high)


# --------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Episode:
    observations: list  # T + 1
    actions: list
    rewards: list
    terminations: list
    truncations: list
    seed: int | None

    @property
    def length(self) -> int:
        return len(self.rewards)


def rollout(
    env_id: str,
    schedule: list[tuple[object, int]],
    size: int,
    seed: int,
    num_envs: int = ROLLOUT_ENVS,
    progress: str | None = None,
) -> list[Episode]:
    """Collect `size` transitions of whole episodes (the last one cut to fit, as a timeout).

    `schedule` is [(policy, steps), ...]: the policy acting while the environments' global step
    count is in that stretch (the last one acts until the end), which is how medium-replay
    replays training. Episodes are kept in the order they finish; the ones still running when
    enough data is in are discarded.
    """
    import gymnasium as gym
    from tqdm import tqdm

    envs = [gym.make(env_id) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    resets = 0

    def reset(i):
        nonlocal resets
        episode_seed = seed * 100_003 + resets
        resets += 1
        obs, _ = envs[i].reset(seed=episode_seed)
        return Episode([obs.astype(np.float32)], [], [], [], [], episode_seed)

    running = [reset(i) for i in range(num_envs)]
    finished: list[Episode] = []
    collected, global_step, stage, stage_end = 0, 0, 0, schedule[0][1]
    bar = tqdm(total=size, desc=progress, disable=progress is None, unit="step", smoothing=0.1)
    while collected < size:
        while stage + 1 < len(schedule) and global_step >= stage_end:
            stage += 1
            stage_end += schedule[stage][1]
        policy = schedule[stage][0]
        obs = np.stack([ep.observations[-1] for ep in running])
        actions = policy(obs, rng)
        for i, env in enumerate(envs):
            next_obs, reward, terminated, truncated, _ = env.step(actions[i])
            episode = running[i]
            episode.observations.append(next_obs.astype(np.float32))
            episode.actions.append(actions[i])
            episode.rewards.append(float(reward))
            episode.terminations.append(bool(terminated))
            episode.truncations.append(bool(truncated))
            if terminated or truncated:
                finished.append(episode)
                collected += episode.length
                bar.update(min(episode.length, size - bar.n))
                running[i] = reset(i)
        global_step += num_envs
    bar.close()
    for env in envs:
        env.close()
    # Keep episodes in finishing order up to `size` transitions; cut the one that crosses it.
    kept, total = [], 0
    for episode in finished:
        if total + episode.length >= size:
            keep = size - total
            episode.observations = episode.observations[: keep + 1]
            for name in ("actions", "rewards", "terminations", "truncations"):
                setattr(episode, name, getattr(episode, name)[:keep])
            episode.truncations[-1] = not episode.terminations[-1]
            kept.append(episode)
            break
        kept.append(episode)
        total += episode.length
    return kept


def average_return(env_id: str, policy, episodes: int, seed: int, deterministic: bool) -> float:
    """Mean undiscounted return over `episodes` full episodes (run in lockstep batches); a
    deterministic SAC policy takes its mean action, the uniform policy is random regardless."""
    import gymnasium as gym

    num_envs = min(episodes, ROLLOUT_ENVS)
    envs = [gym.make(env_id) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    returns = []
    next_seed = seed * 100_003
    while len(returns) < episodes:
        batch = min(num_envs, episodes - len(returns))
        obs = np.stack([envs[i].reset(seed=next_seed + i)[0] for i in range(batch)])
        next_seed += batch
        totals, alive = np.zeros(batch), np.ones(batch, bool)
        while alive.any():
            actions = policy(obs, rng, deterministic)
            for i in np.flatnonzero(alive):
                o, r, terminated, truncated, _ = envs[i].step(actions[i])
                obs[i], totals[i] = o, totals[i] + r
                alive[i] = not (terminated or truncated)
        returns.extend(totals.tolist())
    return float(np.mean(returns))


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class OfflaxSpec:
    env_key: str
    level: str
    size: int | None  # None: D4RL's size for the level

    @property
    def dataset_id(self) -> str:
        size = f"-{self.size}" if self.size is not None else ""
        return f"offlax/{self.env_key}/{self.level}{size}-v0"


_OFFLAX_ID = re.compile(r"offlax/(?P<env>[a-z0-9]+)/(?P<level>[a-z-]+?)(-(?P<size>\d+))?-v0")


def offlax_ids() -> list[str]:
    return [OfflaxSpec(env, level, None).dataset_id for env in available_envs() for level in LEVELS]


def parse_offlax_id(dataset_id: str) -> OfflaxSpec:
    from common.datasets import UnknownDatasetError

    match = _OFFLAX_ID.fullmatch(dataset_id)
    if match is None or match["env"] not in available_envs() or match["level"] not in LEVELS:
        import difflib

        close = difflib.get_close_matches(dataset_id, offlax_ids(), n=5, cutoff=0.5)
        raise UnknownDatasetError(
            f"Unknown offlax dataset '{dataset_id}'."
            + (f" Did you mean: {', '.join(close)}?" if close else "")
            + f" offlax datasets are offlax/<env>/<level>[-<size>]-v0 with env in "
            f"{{{', '.join(available_envs())}}} and level in {{{', '.join(LEVELS)}}}."
        )
    size = int(match["size"]) if match["size"] else None
    if size is not None and size < 1:
        raise UnknownDatasetError(f"'{dataset_id}': the size must be a positive integer.")
    return OfflaxSpec(match["env"], match["level"], size)


def medium_expert_parts(spec: OfflaxSpec) -> tuple[OfflaxSpec, OfflaxSpec]:
    """medium-expert = medium followed by expert, half of the size each."""
    half = None if spec.size is None else spec.size // 2
    rest = None if spec.size is None else spec.size - half
    return OfflaxSpec(spec.env_key, "medium", half), OfflaxSpec(spec.env_key, "expert", rest)


def level_seed(spec: OfflaxSpec) -> int:
    """A fixed seed per (env, level): regenerating a dataset gives the same data."""
    return zlib.crc32(f"{spec.env_key}/{spec.level}".encode()) % 2**31


def collect_episodes(spec: OfflaxSpec, progress: bool = True) -> list[Episode]:
    """Roll out the behaviour policy of `spec` (medium-expert: medium, then expert)."""
    import gymnasium as gym

    policies = load_policies(spec.env_key)
    action_space = gym.make(policies.env_id).action_space
    label = f"{spec.dataset_id}" if progress else None
    if spec.level == "medium-expert":
        return [ep for part in medium_expert_parts(spec) for ep in collect_episodes(part, progress)]
    if spec.level == "medium-replay":
        stretches = policies.meta["replay_schedule"]  # [[policy name, steps], ...]
        natural = sum(steps for _, steps in stretches)
        size = natural if spec.size is None else spec.size
        ratio = size / natural  # a resized medium-replay keeps the schedule's proportions
        schedule = [
            (make_policy(policies, name, action_space), max(1, round(steps * ratio)))
            for name, steps in stretches
        ]
    else:
        size = D4RL_SIZE if spec.size is None else spec.size
        schedule = [(make_policy(policies, spec.level, action_space), size)]
    return rollout(policies.env_id, schedule, size, level_seed(spec), progress=label)


def write_minari(dataset_id: str, episodes: list[Episode], spec: OfflaxSpec):
    """Store episodes as a Minari dataset with offlax's metadata and reference scores."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    policies = load_policies(spec.env_key)
    env = gym.make(policies.env_id)
    observation_space = gym.spaces.Box(
        -np.inf, np.inf, env.observation_space.shape, np.float32
    )
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=np.asarray(ep.observations, np.float32),
            actions=np.asarray(ep.actions, np.float32),
            rewards=list(ep.rewards),
            terminations=list(ep.terminations),
            truncations=list(ep.truncations),
            infos={},
        )
        for i, ep in enumerate(episodes)
    ]
    meta = policies.meta
    size = sum(ep.length for ep in episodes)
    with warnings.catch_warnings():  # Minari nags about optional fields (author e-mail, ...)
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=policies.env_id,
            algorithm_name=f"offlax SAC behaviour policy ({spec.level})",
            author="offlax",
            code_permalink="https://github.com/offlax/offlax/blob/main/common/behaviour.py",
            action_space=env.action_space,
            observation_space=observation_space,
            ref_min_score=meta["ref_min_score"],
            ref_max_score=meta["ref_max_score"],
            description=(
                f"D4RL-style '{spec.level}' dataset for {policies.env_id}, {size} transitions, "
                f"generated by offlax from its committed SAC behaviour policies "
                f"(common/policies/{spec.env_key}.npz). Reference scores: uniformly random policy "
                f"({meta['ref_min_score']:.1f}) and deterministic expert policy "
                f"({meta['ref_max_score']:.1f}), each averaged over {meta['ref_episodes']} episodes."
            ),
            data_format="hdf5",
        )


def read_minari_episodes(dataset_id: str) -> list[Episode]:
    import minari

    return [
        Episode(
            list(ep.observations), list(ep.actions), list(ep.rewards),
            list(ep.terminations), list(ep.truncations), None,
        )  # fmt: skip
        for ep in minari.load_dataset(dataset_id).iterate_episodes()
    ]


def build_dataset(spec: OfflaxSpec, progress: bool = True) -> str:
    """Generate `spec` and store it in the local Minari directory; returns its id.

    Several processes may ask for the same dataset at once (runs started together on a new
    machine): a file lock lets one build it while the others wait and then read it.
    medium-expert reuses the local medium and expert datasets of the same sizes when they exist
    (they are exactly what it would roll out again)."""
    from common.datasets import minari_local_exists

    dataset_id = spec.dataset_id
    if minari_local_exists(dataset_id):
        return dataset_id
    with _build_lock(dataset_id):
        if minari_local_exists(dataset_id):  # built by another process while this one waited
            return dataset_id
        if progress:
            print(f"Building {dataset_id} from the committed behaviour policies (once; then "
                  "cached).")
        if spec.level == "medium-expert":
            parts = medium_expert_parts(spec)
            if all(minari_local_exists(p.dataset_id) for p in parts):
                episodes = [ep for p in parts for ep in read_minari_episodes(p.dataset_id)]
                write_minari(dataset_id, episodes, spec)
                return dataset_id
        write_minari(dataset_id, collect_episodes(spec, progress), spec)
    return dataset_id


@contextmanager
def _build_lock(dataset_id: str):
    import fcntl

    from minari.storage import get_dataset_path

    root = get_dataset_path()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".offlax-build-{dataset_id.replace('/', '_')}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
