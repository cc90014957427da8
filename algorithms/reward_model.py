"""A reward model from preferences: Christiano et al., "Deep Reinforcement Learning from Human
Preferences", NeurIPS 2017, offline (the comparisons are of segments of an existing dataset).

A reward r(s, a) is fitted to labelled comparisons of segments sigma = ((s_0, a_0), ...,
(s_{H-1}, a_{H-1})) by the Bradley-Terry model (paper Eq. 1),

    P[sigma^1 > sigma^2] = exp(sum_t r(s^1_t, a^1_t))
                           / (exp(sum_t r(s^1_t, a^1_t)) + exp(sum_t r(s^2_t, a^2_t))),

with the paper's assumption of a 10% chance that the labeller answers uniformly at random
(Sec. 2.2.3), P~ = (1 - eps) P + eps / 2, trained by the cross-entropy against the label
mu in {(1, 0), (0, 1), (0.5, 0.5)}:

    loss = - mu_1 log P~[sigma^1 > sigma^2] - mu_2 log P~[sigma^2 > sigma^1].

A ranking of K segments (InstructGPT, Ouyang et al. 2022, Eq. 1) is one batch element whose
loss is the mean of that cross-entropy over its K(K-1)/2 ordered pairs. The reward is an
ensemble of networks (one `nn.vmap` module), each trained on its own bootstrap resample of the
labels (paper Sec. 2.2.3); the relabelled reward is the ensemble's mean, normalised to a fixed
scale over the dataset. Query selection for the next labels is uniform or by ensemble
disagreement (the paper's: the variance of the members' P[sigma^1 > sigma^2] over candidate
pairs, the top 1/`candidates_per_query` kept; B-Pref's `disagreement_sampling`).

Outputs (in the output directory): `reward_model.msgpack` (the ensemble's parameters and the
observation statistics), `results.json` (held-out preference accuracy, correlations with the
true reward per transition and per episode, training curves), TensorBoard, `relabelled.hdf5`
(the dataset's transitions with the learned reward in D4RL's HDF5 layout, with the dataset's
environment and reference scores; every algorithm file trains on it with `--env PATH`), and with
`--next-queries N` `next_queries.jsonl` (these labels plus N unanswered queries).

Departures, and why:
- Christiano et al. tune an L2 penalty to keep the validation loss at 1.1-1.5 times the training
  loss and hold out 1/e of the labels per member; here one held-out split (`--validation-fraction`)
  measures the accuracy, with no regulariser: the offline budgets (100-1000 labels) are too
  small to spend 37% of them on tuning.
- Networks, learning rate and segment length are B-Pref's (Lee et al. 2021, rll-research/BPref
  reward_model.py: 3 x 256 LeakyReLU, tanh output, Adam 3e-4, 3 members; 50-step segments),
  whose code is the common reference for simulated-teacher benchmarks. Observations are
  normalised by the dataset's mean and std (IQL on raw HalfCheetah states showed how slowly an
  MLP fits unnormalised inputs; see README "IQL: what matters").
- Segments may run into a terminal (the agent fell); their steps after it are the absorbing
  state, reward 0, in the teacher's sums and the model's (common/preferences/labels.py). The
  Bradley-Terry likelihood does not see a constant added to every step of segments inside
  episodes, yet on tasks that end when the agent falls (Hopper, Walker2d) that constant is
  what a step of life is worth against falling (B-Pref's DeepMind Control and Meta-World
  tasks do not end early, so the question does not arise there). Segments inside episodes
  only, as we drew them before, leave it to the normalisation: min-max to [0, 1] valued a step of life below
  the true reward's level in 8 of 9 Walker2d medium models, and IQL scored 0.80 of its
  true-reward score there; shifted to the true level, single seeds gained 13-30 points (README
  "RLHF: rewards from preferences"). With the fall inside the comparison, the labels set it.
- The relabelled reward is therefore only scaled, by its largest magnitude over the dataset, so
  that 0 stays the absorbing state's reward (`--reward-normalization scale`); `minmax` ([0, 1],
  what we used before) and `standardize` (the paper's zero mean, unit std) move the level
  that the labels chose.
- There is no checkpoint or --resume: training takes seconds.

Run:
    python -m common.preferences label --env offlax/hopper/medium-replay-v1 --output labels.jsonl
    python algorithms/reward_model.py --env offlax/hopper/medium-replay-v1 --labels labels.jsonl
    python algorithms/iql.py --env <output-dir>/relabelled.hdf5
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import serialization, struct
from flax.training.train_state import TrainState
from tqdm import tqdm

from common.cli import check_args, parse_cli, run_main
from common.datasets import DEFAULT_DATASET, Dataset, DatasetError, load_dataset
from common.errors import ConfigError
from common.evaluation import env_action_scaling
from common.files import write_atomically
from common.logger import library_versions
from common.normalization import observation_statistics
from common.preferences import (
    LabelFile,
    LabelFileError,
    Query,
    check_against_dataset,
    episode_last_steps,
    read_label_file,
    sample_queries,
    segment_steps,
    write_label_file,
)
from common.run_directory import release
from common.training import TrainingDiverged, prepare_output_dir
from common.transitions import unit_actions


@dataclass(frozen=True)
class Args:
    env: str | None = None
    """dataset the labels index (default: the one the label file's header names; another name
    must hold the same arrays, by fingerprint)"""
    labels: str | None = None
    """label file (JSON Lines, common/preferences/labels.py; `python -m common.preferences label`
    writes one with the scripted teacher)"""
    seed: int = 0
    """seed of the networks, the validation split, the bootstrap resamples and the batches"""
    total_updates: int = 100
    """gradient updates of every member (measured: on 1000 scripted hopper-medium-replay labels
    the held-out accuracy is 0.975 after 100 and stays there to 1000; 100 take 15 s here, with
    the compilation; see README "RLHF: rewards from preferences")"""
    eval_interval: int = 25
    """updates between validations (held-out loss and accuracy)"""
    batch_size: int = 64
    """queries per minibatch and member (B-Pref trains on 128; 64 halves an update's cost on a
    CPU, and reached 0.975 held-out accuracy on 1000 hopper labels)"""
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """hidden layers of each member (B-Pref reward_model.py gen_net: 3 x 256, LeakyReLU)"""
    output_dir: Annotated[str | None, tyro.conf.arg(
        metavar="DIR",
        help_behavior_hint="(default: runs/reward_model/<env>/<date-time>-seed<S>-<id>)")] = None
    """output directory"""
    ensemble_size: int = 3
    """members of the ensemble (B-Pref reward_model.py: ensemble_size=3)"""
    learning_rate: float = 3e-4
    """Adam, all members (B-Pref reward_model.py: lr=3e-4)"""
    random_answer: float = 0.1
    """eps, the chance that the labeller answers uniformly at random (Christiano et al. 2017,
    Sec. 2.2.3: 10%)"""
    validation_fraction: float = 0.2
    """labels held out to measure preference accuracy (Christiano et al. hold out 1/e to tune an
    L2 penalty; see the docstring)"""
    bootstrap: bool = True
    """each member trains on its own resample of the labels with replacement (Christiano et al.
    2017, Sec. 2.2.3)"""
    output_activation: Literal["tanh", "none"] = "tanh"
    """tanh bounds each step's reward to [-1, 1] (B-Pref gen_net, activation='tanh')"""
    reward_normalization: Literal["scale", "minmax", "standardize", "none"] = "scale"
    """relabelled reward: the ensemble mean divided by its largest magnitude over the dataset,
    which keeps 0 as the reward of the absorbing state after a terminal (scale; see the
    docstring), mapped to [0, 1] (minmax), to zero mean and unit std (standardize, Christiano et
    al.), or left as is"""
    next_queries: int = 0
    """with N > 0, write next_queries.jsonl: these labels plus N new unanswered queries"""
    query_selection: Literal["uniform", "disagreement"] = "disagreement"
    """how the next queries are chosen: uniformly, or the pairs whose P[sigma^1 > sigma^2]
    varies most across members (Christiano et al. 2017, Sec. 2.2.4)"""
    candidates_per_query: int = 10
    """uniform candidate pairs per selected query for disagreement (B-Pref large_batch=10)"""


# --------------------------------------------------------------------------------------------
# Networks


class RewardNetwork(nn.Module):
    hidden_dims: tuple[int, ...]
    output_activation: str

    @nn.compact
    def __call__(self, observations, actions):
        x = jnp.concatenate([observations, actions], -1)
        for width in self.hidden_dims:
            x = nn.leaky_relu(nn.Dense(width)(x))
        x = nn.Dense(1)(x).squeeze(-1)
        return jnp.tanh(x) if self.output_activation == "tanh" else x


class RewardEnsemble(nn.Module):
    """`ensemble_size` reward networks as one vmapped module. Inputs and output carry the member
    axis first: each member sees its own batch."""

    hidden_dims: tuple[int, ...]
    output_activation: str
    ensemble_size: int

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(RewardNetwork, variable_axes={"params": 0},
                           split_rngs={"params": True}, in_axes=0, out_axes=0,
                           axis_size=self.ensemble_size)
        return ensemble(self.hidden_dims, self.output_activation)(observations, actions)


# --------------------------------------------------------------------------------------------
# Training state


class RewardModelState(struct.PyTreeNode):
    model: TrainState
    key: jax.Array


def make_model(args: Args) -> RewardEnsemble:
    return RewardEnsemble(args.hidden_dims, args.output_activation, args.ensemble_size)


def init_state(key, args: Args, obs_dim: int, action_dim: int) -> RewardModelState:
    key, init_key = jax.random.split(key)
    model = make_model(args)
    shape = (args.ensemble_size, 1)
    params = model.init(init_key, jnp.zeros((*shape, obs_dim)), jnp.zeros((*shape, action_dim)))
    return RewardModelState(
        model=TrainState.create(apply_fn=model.apply, params=params,
                                tx=optax.adam(args.learning_rate)),
        key=key)


# --------------------------------------------------------------------------------------------
# Queries as arrays: every query is up to K segments and up to K(K-1)/2 ordered pairs


def query_arrays(queries: list[Query]) -> dict:
    """Answered queries as padded arrays: `starts` (Q, K); for each query its pairs `first`,
    `second` (Q, P, positions in `starts`), `mu` (Q, P: the probability that `first` is the
    better one) and `weight` (Q, P: 1 / the query's number of pairs, 0 for padding)."""
    k = max(len(q.segments) for q in queries)
    p = k * (k - 1) // 2
    starts = np.zeros((len(queries), k), np.int32)
    first, second = np.zeros((len(queries), p), np.int32), np.zeros((len(queries), p), np.int32)
    mu, weight = np.zeros((len(queries), p), np.float32), np.zeros((len(queries), p), np.float32)
    for row, query in enumerate(queries):
        starts[row, :len(query.segments)] = query.segments
        if query.ranking is not None:
            pairs = [(query.ranking[i], query.ranking[j], 1.0)
                     for i in range(len(query.ranking)) for j in range(i + 1, len(query.ranking))]
        else:
            pairs = [(0, 1, query.preference[0])]
        for column, (a, b, m) in enumerate(pairs):
            first[row, column], second[row, column], mu[row, column] = a, b, m
            weight[row, column] = 1.0 / len(pairs)
    return dict(starts=starts, first=first, second=second, mu=mu, weight=weight)


def with_segment_axis(arrays: dict, k: int) -> dict:
    """`query_arrays` with `starts` padded to k segments, so that training and held-out queries
    (whose largest queries may differ) share the segment axis the model sees."""
    starts = arrays["starts"]
    if starts.shape[1] < k:
        arrays = {**arrays, "starts": np.pad(starts, ((0, 0), (0, k - starts.shape[1])))}
    return arrays


# --------------------------------------------------------------------------------------------
# Losses and the update


def segment_returns(params, apply_fn, data, starts, segment_length: int):
    """sum_t r(s_t, a_t) of each segment, 0 on the absorbing state after a terminal (the
    label file's segments, common/preferences/labels.py): starts (E, B, K) -> (E, B, K)."""
    steps, alive = segment_steps(data["last_steps"], starts, segment_length, jnp)  # (E,B,K,H)
    rewards = apply_fn(params, data["observations"][steps], data["actions"][steps])
    return jnp.where(alive, rewards, 0.0).sum(-1)


def preference_probability(return_first, return_second, random_answer: float):
    """P~[first > second] = (1 - eps) sigmoid(R_first - R_second) + eps / 2."""
    return (1 - random_answer) * jax.nn.sigmoid(return_first - return_second) + random_answer / 2


def preference_loss(returns, batch, random_answer: float):
    """Per query: sum over its pairs of weight x (-mu log P~[i > j] - (1 - mu) log P~[j > i]),
    i.e. the mean cross-entropy over the pairs of a ranking, and the pair's own for a pair.
    `returns` (..., K) segment returns; batch arrays (..., P). Returns (...,) losses."""
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (*returns.shape[:-1], x.shape[-1])),
                         {k: batch[k] for k in ("first", "second", "mu", "weight")})
    r_first = jnp.take_along_axis(returns, batch["first"], -1)
    r_second = jnp.take_along_axis(returns, batch["second"], -1)
    p = preference_probability(r_first, r_second, random_answer)
    cross_entropy = -batch["mu"] * jnp.log(p) - (1 - batch["mu"]) * jnp.log(1 - p)
    return (batch["weight"] * cross_entropy).sum(-1)


def loss_fn(params, state: RewardModelState, data, queries, indices, args: Args, length: int):
    """Mean over members and their minibatches of the preference loss."""
    batch = jax.tree.map(lambda field: field[indices], queries)  # (E, B, ...)
    returns = segment_returns(params, state.model.apply_fn, data, batch["starts"], length)
    return preference_loss(returns, batch, args.random_answer).mean()


def update(state: RewardModelState, data, queries, resamples, args: Args, length: int):
    """One Adam step of every member on `batch_size` queries of its own resample."""
    key, batch_key = jax.random.split(state.key)
    positions = jax.random.randint(batch_key, (args.ensemble_size, args.batch_size), 0,
                                   resamples.shape[1])
    indices = jnp.take_along_axis(resamples, positions, 1)  # (E, B) query indices
    loss, grads = jax.value_and_grad(loss_fn)(state.model.params, state, data, queries, indices,
                                              args, length)
    state = state.replace(model=state.model.apply_gradients(grads=grads), key=key)
    return state, {"loss": loss}


@partial(jax.jit, static_argnames=("num_updates", "args", "length"))
def train_chunk(state: RewardModelState, data, queries, resamples, num_updates: int, args: Args,
                length: int):
    """`num_updates` updates in one host call (lax.scan). The ensemble is the vmapped axis."""
    return jax.lax.scan(lambda s, _: update(s, data, queries, resamples, args, length), state,
                        None, length=num_updates)


# --------------------------------------------------------------------------------------------
# What the trained model is used for


@partial(jax.jit, static_argnames=("args", "length"))
def member_returns(params, data, starts, args: Args, length: int):
    """Every member's return of every segment: starts (Q, K) -> (E, Q, K)."""
    model = make_model(args)
    tiled = jnp.broadcast_to(starts, (args.ensemble_size, *starts.shape))
    return segment_returns(params, model.apply, data, tiled, length)


def held_out_metrics(params, data, queries: dict, args: Args, length: int) -> dict:
    """Loss and preference accuracy of the ensemble's mean reward on `queries`; accuracy counts
    the pairs with a strict preference (mu 0 or 1) whose better segment has the larger
    predicted return."""
    returns = np.asarray(member_returns(params, data, queries["starts"], args, length))
    loss = float(preference_loss(jnp.asarray(returns), queries, args.random_answer).mean())
    mean = returns.mean(0)
    r_first = np.take_along_axis(mean, queries["first"], 1)
    r_second = np.take_along_axis(mean, queries["second"], 1)
    strict = (queries["weight"] > 0) & (queries["mu"] != 0.5)
    correct = np.where(queries["mu"] == 1.0, r_first > r_second, r_second > r_first)
    return {"loss": loss, "accuracy": float(correct[strict].mean()) if strict.any() else None,
            "strict_pairs": int(strict.sum())}


def evaluation_policy(args: Args, data):
    """(params, observations, actions) -> the ensemble's mean reward per transition, in batches
    (the reward model's counterpart of a policy: what the trained parameters are for)."""
    model = make_model(args)

    @jax.jit
    def rewards(params, observations, actions):
        tile = lambda x: jnp.broadcast_to(x, (args.ensemble_size, *x.shape))  # noqa: E731
        return model.apply(params, tile(observations), tile(actions)).mean(0)

    def all_rewards(params, chunk: int = 65_536):
        n = data["observations"].shape[0]
        return np.concatenate([np.asarray(rewards(params, data["observations"][i:i + chunk],
                                                  data["actions"][i:i + chunk]))
                               for i in range(0, n, chunk)])

    return all_rewards


def normalize_rewards(rewards: np.ndarray, how: str) -> np.ndarray:
    if how == "scale":
        return rewards / max(float(np.abs(rewards).max()), 1e-8)
    if how == "minmax":
        return (rewards - rewards.min()) / max(float(rewards.max() - rewards.min()), 1e-8)
    if how == "standardize":
        return (rewards - rewards.mean()) / max(float(rewards.std()), 1e-8)
    return rewards


def correlations(learned: np.ndarray, dataset: Dataset) -> dict:
    """Pearson and Spearman correlation of learned and true rewards, per transition and per
    episode return. Of the relabelled rewards: an episode's return depends on the reward's
    offset where episodes differ in length, and the relabelled offset is what RL sees."""
    from scipy.stats import pearsonr, spearmanr

    starts = dataset.episode_starts()
    learned_returns = np.add.reduceat(learned.astype(np.float64), starts)
    true_returns = np.add.reduceat(dataset.rewards.astype(np.float64), starts)
    return {
        "transition_pearson": float(pearsonr(learned, dataset.rewards)[0]),
        "transition_spearman": float(spearmanr(learned, dataset.rewards)[0]),
        "episode_return_pearson": float(pearsonr(learned_returns, true_returns)[0]),
        "episode_return_spearman": float(spearmanr(learned_returns, true_returns)[0]),
    }


def select_queries(params, data, dataset: Dataset, labels: LabelFile, args: Args,
                   rng: np.random.Generator) -> list[Query]:
    """`args.next_queries` new pairs: uniform, or the most disputed of `candidates_per_query`
    times as many uniform candidates (std over members of P[sigma^1 > sigma^2])."""
    draw = args.next_queries * (args.candidates_per_query
                                if args.query_selection == "disagreement" else 1)
    candidates = sample_queries(dataset, labels.segment_length, draw, 2, rng)
    if args.query_selection == "uniform":
        return candidates
    starts = jnp.asarray([q.segments for q in candidates], jnp.int32)
    returns = np.asarray(member_returns(params, data, starts, args, labels.segment_length))
    p = 1.0 / (1.0 + np.exp(-(returns[:, :, 0] - returns[:, :, 1])))  # (E, Q)
    chosen = np.argsort(-p.std(0), kind="stable")[:args.next_queries]
    return [candidates[i] for i in chosen]


def write_relabelled(path: Path, dataset: Dataset, rewards: np.ndarray, attrs: dict):
    """The dataset's transitions with `rewards`, in D4RL's HDF5 layout (with next_observations
    and timeouts), the evaluation environment and reference scores as file attributes."""
    import h5py

    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as file:
        for name, values in (("observations", dataset.observations),
                             ("actions", dataset.actions), ("rewards", rewards),
                             ("next_observations", dataset.next_observations),
                             ("terminals", dataset.terminals), ("timeouts", dataset.timeouts)):
            file.create_dataset(name, data=values)
        for key, value in attrs.items():
            if value is not None:
                file.attrs[key] = value
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# main


def main(args: Args) -> dict:
    check_args(args, positive=("ensemble_size", "candidates_per_query"),
               nonnegative=("next_queries",), unit=("random_answer",),
               open_unit=("validation_fraction",))
    if args.labels is None:
        raise ConfigError("--labels is required: the label file to train on. Write one with the "
                          "scripted teacher: python -m common.preferences label --env "
                          f"{args.env or DEFAULT_DATASET} --output labels.jsonl")
    labels = read_label_file(args.labels)
    env = args.env or labels.dataset
    try:
        dataset = load_dataset(env)
    except DatasetError as error:
        if args.env:
            raise
        raise LabelFileError(f"{args.labels}, line 1: the labels' dataset '{env}' cannot be "
                             f"loaded: {error}") from None
    check_against_dataset(labels, dataset, args.labels)
    answered = [q for q in labels.queries if q.answered and not q.skipped]
    if len(answered) < 2:
        raise ConfigError(f"{args.labels} has {len(answered)} answered (not skipped) queries; "
                          "a reward model needs at least 2 (one to train on, one to validate).")
    output_dir, _ = prepare_output_dir(  # reward models have no --resume: training takes seconds
        "reward_model", SimpleNamespace(resume=None, output_dir=args.output_dir, env=env,
                                        seed=args.seed))
    start = time.perf_counter()

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(answered))
    num_validation = max(1, int(round(args.validation_fraction * len(answered))))
    num_validation = min(num_validation, len(answered) - 1)
    validation = [answered[i] for i in sorted(order[:num_validation])]
    training = [answered[i] for i in sorted(order[num_validation:])]
    k = max(len(q.segments) for q in answered)
    train_queries = jax.device_put(with_segment_axis(query_arrays(training), k))
    validation_queries = with_segment_axis(query_arrays(validation), k)
    resamples = (rng.integers(0, len(training), (args.ensemble_size, len(training)))
                 if args.bootstrap else np.tile(np.arange(len(training)), (args.ensemble_size, 1)))
    resamples = jnp.asarray(resamples, jnp.int32)

    stats = observation_statistics(dataset)
    action_scaling = env_action_scaling(dataset)
    data = jax.device_put({"observations": stats.normalize(dataset.observations),
                           "actions": unit_actions(dataset, action_scaling),
                           "last_steps": episode_last_steps(dataset).astype(np.int32)})
    state = init_state(jax.random.key(args.seed), args, dataset.observations.shape[1],
                       dataset.actions.shape[1])

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(output_dir))
    history, updates = [], 0
    with tqdm(total=args.total_updates, desc="reward model", unit="update") as bar:
        while updates < args.total_updates:
            n = min(args.eval_interval, args.total_updates - updates)
            state, metrics = train_chunk(state, data, train_queries, resamples, n, args,
                                         labels.segment_length)
            updates += n
            train_loss = float(metrics["loss"].mean())
            if not np.isfinite(train_loss):
                raise TrainingDiverged(f"The reward model's loss became {train_loss} before "
                                       f"update {updates}. Lower --learning-rate.")
            held_out = held_out_metrics(state.model.params, data, validation_queries, args,
                                        labels.segment_length)
            row = {"update": updates, "train_loss": train_loss,
                   "validation_loss": held_out["loss"],
                   "validation_accuracy": held_out["accuracy"]}
            history.append(row)
            for name, value in row.items():
                if name != "update" and value is not None:
                    writer.add_scalar(f"reward_model/{name}", value, updates)
            bar.update(n)
            bar.set_postfix(loss=f"{train_loss:.3f}", held_out_accuracy=held_out["accuracy"])
    writer.close()
    train_seconds = time.perf_counter() - start

    learned = evaluation_policy(args, data)(state.model.params)
    relabelled = normalize_rewards(learned, args.reward_normalization).astype(np.float32)
    training_metrics = held_out_metrics(state.model.params, data,
                                        with_segment_axis(query_arrays(training), k), args,
                                        labels.segment_length)
    relabelled_path = output_dir / "relabelled.hdf5"
    write_relabelled(relabelled_path, dataset, relabelled, {
        "env_id": dataset.info.env_id, "ref_min_score": dataset.info.ref_min_score,
        "ref_max_score": dataset.info.ref_max_score, "source_dataset": dataset.info.name,
        "source_fingerprint": dataset.info.fingerprint,
        "reward_model": str(output_dir / "reward_model.msgpack"),
        "labels": str(Path(args.labels).resolve())})
    write_atomically(output_dir / "reward_model.msgpack", serialization.msgpack_serialize({
        "params": jax.device_get(state.model.params), "obs_mean": stats.mean,
        "obs_std": stats.std, "action_low": action_scaling.low,
        "action_high": action_scaling.high}), "the reward model", run_dir=output_dir)
    results = {
        "algorithm": "reward_model", "env": env, "status": "finished", "args": asdict(args),
        "labels": {"file": args.labels, "queries": len(labels.queries),
                   "answered": len(answered), "training": len(training),
                   "validation": len(validation), "segment_length": labels.segment_length},
        "final": {"validation_accuracy": history[-1]["validation_accuracy"],
                  "validation_loss": history[-1]["validation_loss"],
                  "training_accuracy": training_metrics["accuracy"],
                  **correlations(relabelled, dataset)},
        "evaluations": history, "relabelled_dataset": str(relabelled_path),
        "train_seconds": train_seconds, "versions": library_versions(),
    }
    if args.next_queries:
        chosen = select_queries(state.model.params, data, dataset, labels, args,
                                np.random.default_rng(args.seed + 1))
        next_path = output_dir / "next_queries.jsonl"
        write_label_file(next_path, LabelFile(labels.dataset, labels.fingerprint,
                                              labels.segment_length, [*labels.queries, *chosen]))
        results["next_queries"] = str(next_path)
    write_atomically(output_dir / "results.json", json.dumps(results, indent=1).encode(),
                     "results.json", run_dir=output_dir)
    final = results["final"]
    print(f"reward model: held-out preference accuracy {final['validation_accuracy']:.3f} "
          f"({len(validation)} queries), correlation with the true reward per transition "
          f"{final['transition_pearson']:.3f} (Pearson), per episode return "
          f"{final['episode_return_spearman']:.3f} (Spearman); {train_seconds:.1f} s.\n"
          f"relabelled dataset: {relabelled_path}\n"
          f"train on it: python algorithms/iql.py --env {relabelled_path}")
    release(output_dir)
    return results


if __name__ == "__main__":
    run_main(main, parse_cli(Args))
