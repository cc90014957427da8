"""The discrete-action files (BC, BCQ and CQL for discrete actions) against numpy references, and
end to end on CartPole datasets generated from the committed DQN policies
(`offlax/cartpole/...`, built in seconds)."""

import signal
import subprocess
import sys

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from conftest import ROOT

sys.path.insert(0, str(ROOT / "algorithms"))
import bc_discrete  # noqa: E402
import bcq_discrete  # noqa: E402
import cql_discrete  # noqa: E402

DISCRETE = {"bc_discrete": bc_discrete, "bcq_discrete": bcq_discrete,
            "cql_discrete": cql_discrete}
EXPERT = "offlax/cartpole/expert-20000-v1"  # 40 episodes of the cap, 500 steps
MEDIUM_REPLAY = "offlax/cartpole/medium-replay-v1"  # DQN's first 20k steps, epsilon 1 to 0.86


# --------------------------------------------------------------------------------------------
# The math, against numpy


def np_log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_mlp(layers, x):
    """ReLU MLP from flax Dense_i parameter dicts."""
    names = sorted((k for k in layers if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    for i, name in enumerate(names):
        x = x @ np.asarray(layers[name]["kernel"]) + np.asarray(layers[name]["bias"])
        if i < len(names) - 1:
            x = np.maximum(x, 0.0)
    return x


def np_huber(x):
    return np.where(np.abs(x) <= 1.0, 0.5 * x**2, np.abs(x) - 0.5)


def np_allowed(logits, threshold):
    probs = np.exp(np_log_softmax(logits))
    return probs / probs.max(-1, keepdims=True) > threshold


def np_constrained_greedy(q, logits, threshold):
    allowed = np_allowed(logits, threshold)
    out = []
    for row_q, row_allowed in zip(q, allowed):
        candidates = [a for a in range(len(row_q)) if row_allowed[a]]
        best = max(row_q[a] for a in candidates)
        out.append(min(a for a in candidates if row_q[a] == best))  # the first of tied maxima
    return np.array(out)


def test_bcq_threshold_mask_ties_and_the_boundary():
    # row 0: two actions tie for the most likely (ratio 1 each), the third at ratio 0.25
    # row 1: ratios 1, exactly 0.3 (masked: the authors' strict >), and 0.3 + 1e-6 (kept)
    logits = np.log(np.array([[0.4, 0.4, 0.1], [1.0, 0.3, 0.300001]], np.float64))
    allowed = np.asarray(bcq_discrete.allowed_actions(jnp.asarray(logits), 0.3))
    np.testing.assert_array_equal(allowed, [[True, True, False], [True, False, True]])
    np.testing.assert_array_equal(allowed, np_allowed(logits, 0.3))


def test_bcq_greedy_skips_masked_out_maxima_and_breaks_ties_first():
    logits = np.log(np.array([
        [0.70, 0.25, 0.05],  # Q's maximum (action 2) is masked out: action 0 of the allowed
        [0.40, 0.40, 0.20],  # actions 0, 1 tie in Q among the allowed: the first, 0
        [0.05, 0.05, 0.90],  # only action 2 allowed though Q prefers 0
    ], np.float32))
    q = np.array([[1.0, 0.5, 9.0], [2.0, 2.0, 1.0], [5.0, 4.0, -3.0]], np.float32)
    greedy = np.asarray(bcq_discrete.constrained_greedy(jnp.asarray(q), jnp.asarray(logits), 0.3))
    np.testing.assert_array_equal(greedy, [0, 0, 2])
    np.testing.assert_array_equal(greedy, np_constrained_greedy(q, logits, 0.3))


def random_batch(rng, batch=6, obs_dim=4, num_actions=3):
    return {
        "observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "actions": rng.integers(0, num_actions, batch).astype(np.int32),
        "rewards": rng.normal(size=batch).astype(np.float32),
        "next_observations": rng.normal(size=(batch, obs_dim)).astype(np.float32),
        "terminals": np.array([0, 1, 0, 0, 1, 0], np.float32)[:batch],
    }


def perturbed(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def one_update(module, args, state, batch):
    """One update with `batch` as the whole dataset; returns the minibatch it drew (the indices
    recomputed from the state's key as `update` draws them), the new state and the metrics."""
    data = jax.tree.map(jnp.asarray, batch)
    key = state.key
    _, batch_key = jax.random.split(key)
    size = len(batch["rewards"])
    indices = np.asarray(jax.random.randint(batch_key, (args.batch_size,), 0, size))
    sampled = {k: v[indices] for k, v in batch.items()}
    new_state, metrics = jax.jit(module.update, static_argnums=2)(state, data, args)
    return sampled, new_state, metrics


def test_bcq_update_target_and_loss_match_numpy():
    """The whole update's target and loss: the argmax among allowed actions by the online
    network, valued by the target network, Huber + NLL + 1e-2 mean logit^2."""
    rng = np.random.default_rng(0)
    batch = random_batch(rng)
    args = bcq_discrete.Args(hidden_dims=(8, 8), batch_size=6, discount=0.9)
    state = bcq_discrete.init_state(jax.random.key(0), args, 4, 3, None)
    state = state.replace(q=state.q.replace(params=perturbed(state.q.params, 1)),
                          q_target=perturbed(state.q.params, 2))
    sampled, _, metrics = one_update(bcq_discrete, args, state, batch)

    def heads(params, x):
        p = params["params"]
        return np_mlp(p["MLP_0"], x), np_mlp(p["MLP_1"], x)  # Q, imitation logits

    q_next, logits_next = heads(state.q.params, sampled["next_observations"])
    q_next_target, _ = heads(state.q_target, sampled["next_observations"])
    chosen = np_constrained_greedy(q_next, logits_next, args.threshold)
    target = sampled["rewards"] + 0.9 * (1 - sampled["terminals"]) * \
        q_next_target[np.arange(6), chosen]
    q, logits = heads(state.q.params, sampled["observations"])
    a = sampled["actions"]
    td = np_huber(q[np.arange(6), a] - target).mean()
    nll = -np_log_softmax(logits)[np.arange(6), a].mean()
    expected = td + nll + 1e-2 * (logits**2).mean()
    np.testing.assert_allclose(float(metrics["target_mean"]), target.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["td_loss"]), td, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["imitation_loss"]), nll, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)


def test_cql_update_penalty_and_double_dqn_target_match_numpy():
    rng = np.random.default_rng(1)
    batch = random_batch(rng)
    args = cql_discrete.Args(hidden_dims=(8, 8), batch_size=6, discount=0.9, cql_alpha=2.5)
    state = cql_discrete.init_state(jax.random.key(0), args, 4, 3, None)
    state = state.replace(q=state.q.replace(params=perturbed(state.q.params, 1)),
                          q_target=perturbed(state.q.params, 2))
    sampled, _, metrics = one_update(cql_discrete, args, state, batch)

    def q_of(params, x):
        return np_mlp(params["params"]["MLP_0"], x)

    chosen = q_of(state.q.params, sampled["next_observations"]).argmax(1)  # online argmax
    target = sampled["rewards"] + 0.9 * (1 - sampled["terminals"]) * \
        q_of(state.q_target, sampled["next_observations"])[np.arange(6), chosen]
    q = q_of(state.q.params, sampled["observations"]).astype(np.float64)
    q_taken = q[np.arange(6), sampled["actions"]]
    logsumexp = np.log(np.exp(q - q.max(1, keepdims=True)).sum(1)) + q.max(1)
    gap = logsumexp.mean() - q_taken.mean()
    td = np_huber(q_taken - target).mean()
    np.testing.assert_allclose(float(metrics["cql_gap"]), gap, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), td + 2.5 * gap, rtol=1e-5)
    assert gap > 0  # log-sum-exp exceeds any one Q


def test_bc_discrete_cross_entropy_matches_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    actions = np.array([0, 3, 3, 1, 2], np.int32)
    loss, accuracy = bc_discrete.cross_entropy_loss(jnp.asarray(logits), jnp.asarray(actions))
    np.testing.assert_allclose(float(loss), -np_log_softmax(logits)[np.arange(5), actions].mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(float(accuracy), (logits.argmax(1) == actions).mean(), rtol=1e-6)


@pytest.mark.parametrize("module", [bcq_discrete, cql_discrete])
def test_target_network_follows_every_interval_updates(module):
    """tau 1 every 3 updates: the target is the online network right after updates 3, 6, ...
    and unchanged in between (a select, not a branch)."""
    rng = np.random.default_rng(3)
    data = jax.tree.map(jnp.asarray, random_batch(rng))
    args = module.Args(hidden_dims=(8,), batch_size=6, tau=1.0, target_update_interval=3)
    state = module.init_state(jax.random.key(0), args, 4, 3, None)
    initial_target = state.q_target
    step = jax.jit(module.update, static_argnums=2)
    for k in range(1, 7):
        previous_target = state.q_target
        state, _ = step(state, data, args)
        expected = state.q.params if k % 3 == 0 else previous_target
        jax.tree.map(np.testing.assert_array_equal, state.q_target, expected)
    assert not np.array_equal(jax.tree.leaves(state.q_target)[0],
                              jax.tree.leaves(initial_target)[0])


def test_image_observations_go_through_the_convolution():
    """MinAtar-shaped observations (10x10x4, stored flat as 400 bytes) reach the 3x3
    convolution as images: a pixel moved changes Q, and the flat and image forms agree."""
    args = bcq_discrete.Args(hidden_dims=(16,), conv_channels=4)
    net = bcq_discrete.network(args, 3, (10, 10, 4))
    params = net.init(jax.random.key(0), jnp.zeros((1, 400)))
    assert params["params"]["Conv3x3_0"]["kernel"].shape == (3, 3, 4, 4)
    frames = (np.random.default_rng(0).random((2, 10, 10, 4)) > 0.8).astype(np.uint8)
    q, logits = net.apply(params, frames.reshape(2, 400))
    assert q.shape == logits.shape == (2, 3)
    moved = frames.copy()
    moved[0, 5, 5, 1] ^= 1
    assert not np.allclose(net.apply(params, moved.reshape(2, 400))[0][0], q[0])


@pytest.mark.parametrize("name", list(DISCRETE))
def test_convolution_as_one_matmul_equals_flax_conv(name):
    """Each file's Conv3x3 (im2col, for speed) is nn.Conv(F, (3, 3), padding="VALID") with the
    same parameters: equal outputs on random frames and random (not initial) parameters."""
    frames = jnp.asarray(np.random.default_rng(1).random((5, 10, 10, 6)) < 0.3, jnp.float32)
    conv = DISCRETE[name].Conv3x3(8)
    params = conv.init(jax.random.key(0), frames)
    params = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
    reference = flax.linen.Conv(8, (3, 3), padding="VALID").apply(params, frames)
    assert reference.shape == (5, 8, 8, 8)
    np.testing.assert_allclose(conv.apply(params, frames), reference, atol=1e-5)


# --------------------------------------------------------------------------------------------
# End to end on CartPole


SMALL = dict(hidden_dims=(64, 64))


def run(name, tmp_path, **overrides):
    module = DISCRETE[name]
    return module.main(module.Args(**{**SMALL, "output_dir": str(tmp_path / name), **overrides}))


def final_scores(results):
    return np.asarray(results["final"]["normalized_score"])


@pytest.mark.usefixtures("generated_datasets")
@pytest.mark.parametrize("name", DISCRETE)
def test_num_seeds_3_equals_single_runs(name, tmp_path):
    common = dict(env=EXPERT, total_updates=300, eval_interval=150, eval_episodes=2,
                  batch_size=32, hidden_dims=(32, 32))
    together = run(name, tmp_path / "n3", seed=0, num_seeds=3, **common)
    params3 = serialization.msgpack_restore(
        (tmp_path / "n3" / name / "policy.msgpack").read_bytes())
    for k in (0, 2):
        alone = run(name, tmp_path / f"k{k}", seed=k, num_seeds=1, **common)
        params1 = serialization.msgpack_restore(
            (tmp_path / f"k{k}" / name / "policy.msgpack").read_bytes())
        for e3, e1 in zip(together["evaluations"], alone["evaluations"], strict=True):
            assert e3["episode_returns"][k] == e1["episode_returns"][0]
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b[0], atol=1e-6),
                     params3["params"], params1["params"])


@pytest.mark.usefixtures("generated_datasets")
@pytest.mark.parametrize("name", DISCRETE)
def test_reaches_expert_on_expert_data(name, tmp_path):
    results = run(name, tmp_path, env=EXPERT, num_seeds=3, total_updates=EXPERT_UPDATES,
                  eval_interval=EXPERT_UPDATES, eval_episodes=5)
    scores = final_scores(results)
    assert scores.min() >= 90, f"{name} on {EXPERT}: normalised scores {scores}"


EXPERT_UPDATES = 5_000
# Measured on medium-replay (3 seeds, 64x64, evaluations every 2.5k updates): BC -2 throughout;
# BCQ's mean 27-31 from 5k to 15k updates (one seed falls to 8-10 by 17.5k-20k, mean 21 at 20k);
# CQL's 23-28 from 5k to 20k. Both stay 20 points or more above BC from 5k updates on.
MEDIUM_REPLAY_UPDATES = 12_500


@pytest.fixture(scope="module")
def bc_on_medium_replay(tmp_path_factory, generated_datasets):
    return final_scores(run("bc_discrete", tmp_path_factory.mktemp("bc"), env=MEDIUM_REPLAY,
                            num_seeds=3, total_updates=MEDIUM_REPLAY_UPDATES,
                            eval_interval=MEDIUM_REPLAY_UPDATES, eval_episodes=5))


@pytest.mark.parametrize("name", ["bcq_discrete", "cql_discrete"])
def test_beats_bc_on_medium_replay(name, tmp_path, bc_on_medium_replay):
    """medium-replay is DQN's first 20k steps, nearly uniform actions (mean return 21 of the
    cap's 500, normalised -0.1): imitating it balances worse than chance (BC: -2), learning Q
    from it balances several times longer."""
    scores = final_scores(run(name, tmp_path, env=MEDIUM_REPLAY, num_seeds=3,
                              total_updates=MEDIUM_REPLAY_UPDATES,
                              eval_interval=MEDIUM_REPLAY_UPDATES, eval_episodes=5))
    assert scores.mean() >= bc_on_medium_replay.mean() + 15, \
        f"{name} {scores} vs BC {bc_on_medium_replay}"


@pytest.mark.usefixtures("generated_datasets")
def test_continuous_and_discrete_files_refuse_each_others_data(tmp_path):
    """Before any training: a continuous file on discrete data names the discrete files, and
    the other way round; exit 2."""
    cases = [("bc.py", EXPERT, "bc_discrete.py"),
             ("bcq_discrete.py", "offlax/invertedpendulum/expert-2000-v1", "continuous")]
    for script, env, hint in cases:
        result = subprocess.run(
            [sys.executable, str(ROOT / "algorithms" / script), "--env", env, "--output-dir",
             str(tmp_path / script)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert hint in result.stderr and "Traceback" not in result.stderr


@pytest.mark.usefixtures("generated_datasets")
def test_sigkill_then_resume_is_bit_exact_with_a_periodic_target(tmp_path):
    """Discrete CQL with a target copy every 300 updates (a multiple of neither the host calls
    nor the evaluations): killed after its first checkpoint, the resumed run matches the
    uninterrupted one bit for bit, so the target's schedule is in the state."""
    from test_reliability import assert_same_run, cli_flags, finish, start, wait_for

    flags = cli_flags(env=EXPERT, hidden_dims=(32, 32), eval_episodes=2, batch_size=32,
                      num_seeds=2, total_updates=3000, eval_interval=1000, tau=1.0,
                      target_update_interval=300)
    reference = start("cql_discrete", *flags, "--output-dir", str(tmp_path / "reference"))
    killed = start("cql_discrete", *flags, "--output-dir", str(tmp_path / "run"))
    wait_for(tmp_path / "run/checkpoints/checkpoint_000001000.msgpack", killed)
    killed.send_signal(signal.SIGKILL)
    finish(killed)
    code, output = finish(start("cql_discrete", "--resume", str(tmp_path / "run")))
    assert code == 0, output
    assert finish(reference)[0] == 0
    assert_same_run(tmp_path / "reference", tmp_path / "run")


@pytest.mark.parametrize("name, flags, phrase", [
    ("bcq_discrete", dict(threshold=1.5), "--threshold must be between 0 and 1, got 1.5"),
    ("bcq_discrete", dict(target_update_interval=0), "--target-update-interval must be positive"),
    ("cql_discrete", dict(cql_alpha=-1.0), "--cql-alpha must be zero or positive, got -1.0"),
    ("cql_discrete", dict(eval_epsilon=2.0), "--eval-epsilon must be between 0 and 1, got 2.0"),
    ("bc_discrete", dict(learning_rate=0.0), "--learning-rate is a learning rate and must be"),
    ("bc_discrete", dict(conv_channels=0), "--conv-channels must be positive, got 0"),
])
def test_out_of_range_flags_are_refused_before_anything_is_written(name, flags, phrase, tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        run(name, tmp_path / "out", env=EXPERT, **flags)
    assert phrase in str(error.value)
    assert not (tmp_path / "out").exists()


def test_minatar_games_are_registered_with_a_time_limit(monkeypatch):
    from common import environments

    env = environments.make("MinAtar/Breakout-v1")
    assert env.spec.max_episode_steps == environments.MINATAR_MAX_EPISODE_STEPS
    assert env.action_space.n == 3 and env.observation_space.shape == (10, 10, 4)
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)
    monkeypatch.setitem(sys.modules, "minatar", None)  # as if not installed
    with pytest.raises(environments.EnvironmentUnavailable, match="pip install"):
        environments.register_minatar()


def test_minatar_takes_reset_seeds_beyond_32_bits_and_keeps_small_ones():
    """The dataset generator's reset seeds reach 2**48; MinAtar's RandomState takes < 2**32.
    Large seeds are folded (deterministically), small ones act exactly as in MinAtar itself."""
    from minatar.gym import BaseEnv

    from common import environments

    def rollout(env, seed):
        env.reset(seed=seed)
        return [env.step(step % 4)[:2] for step in range(60)]

    env = environments.make("MinAtar/SpaceInvaders-v1")
    large = 3 * 2**40 + 7
    first = rollout(env, large)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1]
               for a, b in zip(first, rollout(env, large)))
    raw = BaseEnv(game="space_invaders", use_minimal_action_set=True)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1]
               for a, b in zip(rollout(env, 11), rollout(raw, 11)))
