"""Every loss of BC, TD3+BC, IQL, CQL, BCQ and POR against an independent numpy reference on
fixed inputs.

The references re-run the networks in numpy from the parameter arrays (ReLU MLPs), so they check
the whole loss: which network, which parameters (online or target), which action, which mask.
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "algorithms"))
import bc  # noqa: E402
import bcq  # noqa: E402
import cql  # noqa: E402
import iql  # noqa: E402
import por  # noqa: E402
import td3_bc  # noqa: E402

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 6
LOG_2PI = np.log(2 * np.pi)


def perturbed(params, seed):
    """Parameters with every entry moved by N(0, 0.5^2): nonzero biases, distinct targets."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def np_mlp(layers, x, member=None):
    """ReLU MLP from flax Dense_i parameter dicts; `member` picks one network of an ensemble."""
    names = sorted((k for k in layers if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    for i, name in enumerate(names):
        kernel, bias = np.asarray(layers[name]["kernel"]), np.asarray(layers[name]["bias"])
        if member is not None:
            kernel, bias = kernel[member], bias[member]
        x = x @ kernel + bias
        if i < len(names) - 1:
            x = np.maximum(x, 0.0)
    return x


def np_gaussian_log_prob(mean, log_std, a):
    return np.sum(-0.5 * ((a - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI, -1)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return {
        "observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-0.99, 0.99, (BATCH, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=BATCH).astype(np.float32),
        "next_observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "terminals": np.array([0, 1, 0, 0, 1, 0], np.float32),
    }


def close(actual, expected, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=2e-5, atol=atol)


# --------------------------------------------------------------------------------------------
# BC


def test_bc_mse_loss(batch):
    args = bc.Args(hidden_dims=(8, 8), policy="deterministic")
    state = bc.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    params = perturbed(state.actor.params, 1)
    predicted = np.tanh(np_mlp(params["params"], batch["observations"]))
    expected = np.mean((predicted - batch["actions"]) ** 2)
    close(bc.bc_loss(params, state, batch), expected)


def test_bc_gaussian_log_likelihood(batch):
    args = bc.Args(hidden_dims=(8,), policy="gaussian")
    state = bc.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    params = perturbed(state.actor.params, 2)
    mean = np.tanh(np_mlp(params["params"], batch["observations"]))
    log_std = np.clip(np.asarray(params["params"]["log_std"]), -5, 2)
    expected = -np.mean(np_gaussian_log_prob(mean, log_std, batch["actions"]))
    close(bc.bc_loss(params, state, batch), expected)


def test_gaussian_log_prob_by_hand():
    # a = mean: -sum(log std) - d/2 log 2 pi; one std away in one dimension: 1/2 less
    mean, log_std = jnp.array([[0.3, -0.2]]), jnp.array([np.log(0.5), 0.0])
    at_mean = -(np.log(0.5) + 0.0) - LOG_2PI
    close(bc.gaussian_log_prob(mean, log_std, mean), [at_mean])
    close(bc.gaussian_log_prob(mean, log_std, mean + jnp.array([[0.5, 0.0]])), [at_mean - 0.5])
    close(iql.gaussian_log_prob(mean, log_std, mean + jnp.array([[0.0, -2.0]])), [at_mean - 2.0])


# --------------------------------------------------------------------------------------------
# TD3+BC


@pytest.fixture
def td3_state():
    args = td3_bc.Args(hidden_dims=(8, 8))
    state = td3_bc.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    return args, state.replace(
        actor=state.actor.replace(params=perturbed(state.actor.params, 3)),
        critic=state.critic.replace(params=perturbed(state.critic.params, 4)),
        actor_target=perturbed(state.actor_target, 5),
        critic_target=perturbed(state.critic_target, 6),
    )


def test_td3_bc_actor_loss_and_lambda(td3_state, batch):
    args, state = td3_state
    pi = np.tanh(np_mlp(state.actor.params["params"], batch["observations"]))
    critic = state.critic.params["params"]["VmapQNetwork_0"]
    q1 = np_mlp(critic, np.concatenate([batch["observations"], pi], 1), member=0)[:, 0]
    lmbda = 2.5 / np.abs(q1).mean()
    expected = -lmbda * q1.mean() + np.mean((pi - batch["actions"]) ** 2)
    loss, got_lambda = td3_bc.actor_loss(state.actor.params, state, batch, args.alpha)
    close(got_lambda, lmbda)
    close(loss, expected)


def test_td3_bc_lambda_is_not_differentiated(td3_state, batch):
    """d loss / d pi must treat lambda as a constant (the authors' .detach())."""
    args, state = td3_state
    grads = jax.grad(lambda p: td3_bc.actor_loss(p, state, batch, args.alpha)[0])(state.actor.params)
    _, lmbda = td3_bc.actor_loss(state.actor.params, state, batch, args.alpha)

    def with_constant_lambda(p):
        actions = state.actor.apply_fn(p, batch["observations"])
        q = state.critic.apply_fn(state.critic.params, batch["observations"], actions)[0]
        return -lmbda * q.mean() + ((actions - batch["actions"]) ** 2).mean()

    expected = jax.grad(with_constant_lambda)(state.actor.params)
    jax.tree.map(lambda a, b: close(a, np.asarray(b)), grads, expected)


def test_td3_bc_clipped_double_q_target_with_smoothing(td3_state, batch):
    args, state = td3_state
    # large entries hit the noise clip (0.2 * 4 > 0.5) and the action clip at +-1
    noise = np.array([[4.0, -4.0], [0.5, -1.0], [-3.0, 2.6], [0.0, 0.0], [1.0, 1.0], [-9.0, 9.0]],
                     np.float32)
    smoothing = np.clip(0.2 * noise, -0.5, 0.5)
    next_pi = np.tanh(np_mlp(state.actor_target["params"], batch["next_observations"]))
    next_actions = np.clip(next_pi + smoothing, -1.0, 1.0)
    target_critic = state.critic_target["params"]["VmapQNetwork_0"]
    sa = np.concatenate([batch["next_observations"], next_actions], 1)
    next_q = np.minimum(np_mlp(target_critic, sa, 0)[:, 0], np_mlp(target_critic, sa, 1)[:, 0])
    expected = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * next_q
    close(td3_bc.critic_target(state, batch, noise, args), expected)


def test_td3_bc_critic_loss(td3_state, batch):
    _, state = td3_state
    target = np.linspace(-1, 2, BATCH).astype(np.float32)
    critic = state.critic.params["params"]["VmapQNetwork_0"]
    sa = np.concatenate([batch["observations"], batch["actions"]], 1)
    expected = sum(np.mean((np_mlp(critic, sa, k)[:, 0] - target) ** 2) for k in range(2))
    loss, _ = td3_bc.critic_loss(state.critic.params, state, batch, target)
    close(loss, expected)


# --------------------------------------------------------------------------------------------
# IQL


@pytest.fixture
def iql_state():
    args = iql.Args(hidden_dims=(8, 8))
    state = iql.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    return args, state.replace(
        actor=state.actor.replace(params=perturbed(state.actor.params, 7)),
        critic=state.critic.replace(params=perturbed(state.critic.params, 8)),
        value=state.value.replace(params=perturbed(state.value.params, 9)),
        critic_target=perturbed(state.critic_target, 10),
    )


def np_min_q(critic_params, observations, actions):
    layers = critic_params["params"]["VmapQNetwork_0"]["MLP_0"]
    sa = np.concatenate([observations, actions], 1)
    return np.minimum(np_mlp(layers, sa, 0)[:, 0], np_mlp(layers, sa, 1)[:, 0])


def np_value(value_params, observations):
    return np_mlp(value_params["params"]["MLP_0"], observations)[:, 0]


def test_expectile_loss_both_signs_by_hand():
    diff = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    # |0.7 - 1(u < 0)| u^2: 0.3 * 4, 0.3 * 0.25, 0, 0.7 * 1, 0.7 * 9
    close(iql.expectile_loss(diff, 0.7), [1.2, 0.075, 0.0, 0.7, 6.3])
    close(iql.expectile_loss(diff, 0.9), [0.4, 0.025, 0.0, 0.9, 8.1])


def test_iql_value_loss(iql_state, batch):
    args, state = iql_state
    q = np_min_q(state.critic_target, batch["observations"], batch["actions"])  # target Q
    v = np_value(state.value.params, batch["observations"])
    u = q - v
    expected = np.mean(np.where(u < 0, 0.3, 0.7) * u**2)
    loss, _ = iql.value_loss(state.value.params, state, batch, args.expectile)
    close(loss, expected)


def test_iql_advantage_weights_are_clipped_by_hand():
    q, v = jnp.array([0.0, 1.0, 2.0, 3.0, 5.0]), jnp.array([1.0, 1.0, 1.0, 1.0, 1.0])
    # exp(3 (q - v)) = e^-3, 1, e^3, e^6 > 100 -> 100, e^12 -> 100
    close(iql.advantage_weights(q, v, 3.0, 100.0), [np.exp(-3), 1.0, np.exp(3), 100.0, 100.0])


def test_iql_actor_loss(iql_state, batch):
    args, state = iql_state
    q = np_min_q(state.critic_target, batch["observations"], batch["actions"])
    v = np_value(state.value.params, batch["observations"])
    weights = np.minimum(np.exp(3.0 * (q - v)), 100.0)
    params = state.actor.params["params"]
    mean = np.tanh(np_mlp(params, batch["observations"]))
    log_std = np.clip(np.asarray(params["log_std"]), -5, 2)
    expected = -np.mean(weights * np_gaussian_log_prob(mean, log_std, batch["actions"]))
    loss, (got_weights, log_prob, got_mean, got_log_std) = iql.actor_loss(
        state.actor.params, state, batch, args)
    close(got_weights, weights)
    close(got_mean, mean)
    close(got_log_std, log_std)
    close(log_prob, np_gaussian_log_prob(mean, log_std, batch["actions"]))
    close(loss, expected)


def test_iql_policy_dropout_acts_in_updates_only(iql_state, batch):
    """With --policy-dropout the loss uses the policy with dropout (drawn from the update's key),
    while evaluation's forward pass has none and equals the numpy network."""
    args, state = iql_state
    args = dataclasses.replace(args, policy_dropout=0.5)
    policy = iql.policy_network(args, ACTION_DIM)
    params = state.actor.params  # the same parameters: dropout adds none
    state = state.replace(actor=state.actor.replace(apply_fn=policy.apply))
    eval_mean, _ = policy.apply(params, batch["observations"])
    close(eval_mean, np.tanh(np_mlp(params["params"], batch["observations"])))
    key = jax.random.key(3)
    mean, log_std = policy.apply(params, batch["observations"], training=True,
                                 rngs={"dropout": key})
    assert not np.allclose(mean, eval_mean)
    q = np_min_q(state.critic_target, batch["observations"], batch["actions"])
    v = np_value(state.value.params, batch["observations"])
    weights = np.minimum(np.exp(3.0 * (q - v)), 100.0)
    expected = -np.mean(weights * np_gaussian_log_prob(np.asarray(mean), np.asarray(log_std),
                                                       batch["actions"]))
    loss, (_, _, got_mean, _) = iql.actor_loss(params, state, batch, args, key)
    close(got_mean, mean)
    close(loss, expected)
    other, _ = iql.actor_loss(params, state, batch, args, jax.random.key(4))
    assert not np.isclose(other, loss)
    # about half of the hidden units are dropped in a training pass
    _, captured = policy.apply(params, batch["observations"], training=True,
                               rngs={"dropout": key}, capture_intermediates=True)
    hidden = np.asarray(captured["intermediates"]["Dropout_0"]["__call__"][0])
    active = np.asarray(jax.nn.relu(np_dense_first(params["params"], batch["observations"])) > 0)
    assert 0.3 < (hidden[active] == 0).mean() < 0.7


def np_dense_first(params, x):
    return np.asarray(x) @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(
        params["Dense_0"]["bias"])


def test_iql_sigmoid_log_std_is_d3rlpys_bound():
    args = iql.Args(hidden_dims=(8,), log_std_bound="sigmoid")
    policy = iql.policy_network(args, ACTION_DIM)
    params = policy.init(jax.random.key(0), jnp.zeros((1, OBS_DIM)))
    _, log_std = policy.apply(params, jnp.zeros((1, OBS_DIM)))
    close(log_std, [-1.5, -1.5])  # -5 + 7 sigmoid(0)
    raw = np.array([-3.0, 4.0], np.float32)
    params = jax.tree.map(lambda x: x, params)
    params["params"]["log_std"] = jnp.asarray(raw)
    _, log_std = policy.apply(params, jnp.zeros((1, OBS_DIM)))
    close(log_std, -5.0 + 7.0 / (1.0 + np.exp(-raw)))


@pytest.mark.parametrize("hidden_init, output_init", [("pytorch", "pytorch"),
                                                      ("orthogonal", "pytorch")])
def test_iql_pytorch_initialisation_is_uniform_in_one_over_sqrt_fan_in(hidden_init, output_init):
    args = iql.Args(hidden_dims=(256, 256), hidden_init=hidden_init, output_init=output_init)
    state = iql.init_state(jax.random.key(0), args, 17, 6)
    layers = state.value.params["params"]["MLP_0"]
    for name, fan_in in [("Dense_0", 17), ("Dense_1", 256), ("Dense_2", 256)]:
        kernel, bias = np.asarray(layers[name]["kernel"]), np.asarray(layers[name]["bias"])
        pytorch = (output_init if name == "Dense_2" else hidden_init) == "pytorch"
        if pytorch:  # U(-b, b), b = 1/sqrt(fan_in): inside the bound, std b / sqrt(3)
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
            assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)
            assert np.abs(bias).max() > (0.5 * bound if bias.size > 1 else 0.0)
        else:  # orthogonal with gain sqrt(2): K^T K = 2 I (fan_in >= width), zero bias
            gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
            close(gram, 2 * np.eye(len(gram)), atol=1e-4)
            assert not bias.any()
    mean_layer = state.actor.params["params"]["Dense_2"]["kernel"]
    assert np.abs(mean_layer).max() <= 1 / np.sqrt(256)


@pytest.mark.parametrize("q_target_value", ["updated", "previous"])
def test_iql_q_target_uses_the_chosen_v(iql_state, batch, q_target_value):
    args, state = iql_state
    args = iql.Args(hidden_dims=(8, 8), q_target_value=q_target_value)
    data = {**{k: jnp.asarray(v) for k, v in batch.items()},
            "returns_to_go": jnp.zeros(BATCH)}
    new_state, _ = iql.update(state, data, args)
    # the same batch as the update drew, and the V whose target the Q step should have used
    drawn = iql.sample_batch(data, jax.random.split(state.key)[1], args.batch_size)
    v_params = new_state.value.params if q_target_value == "updated" else state.value.params
    target = drawn["rewards"] + 0.99 * (1 - drawn["terminals"]) * np_value(
        v_params, np.asarray(drawn["next_observations"]))
    grads = jax.grad(lambda p: iql.critic_loss(p, state, drawn, jnp.asarray(target))[0])(
        state.critic.params)
    expected = state.critic.apply_gradients(grads=grads).params
    for got, want in zip(jax.tree.leaves(new_state.critic.params), jax.tree.leaves(expected)):
        close(got, want, atol=1e-6)


def test_iql_diagnostics_by_hand():
    w = jnp.array([1.0, 1.0, 2.0, 100.0])
    mean = jnp.array([[0.995, 0.0], [-0.999, 0.5], [0.2, 0.3], [0.0, 0.0]])
    metrics = iql.diagnostics({"returns_to_go": jnp.array([1.0, 2.0, 3.0, 6.0])},
                              v=jnp.array([1.0, 3.0]), q=jnp.ones((2, 4)), weights=w,
                              log_prob=jnp.array([-1.0, -2.0, -3.0, -4.0]), mean=mean,
                              log_std=jnp.array([-1.0, -2.0]), max_weight=100.0)
    expected = {"v_mean": 2.0, "q_mean": 1.0, "return_to_go_mean": 3.0, "weights_mean": 26.0,
                "weights_max": 100.0, "weights_clipped_fraction": 0.25,
                "weights_ess": 104.0**2 / (4 * 10006.0), "log_likelihood": -2.5,
                "log_std_mean": -1.5, "mean_saturated_fraction": 0.25}
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        close(metrics[name], value)


def test_iql_q_target_and_loss(iql_state, batch):
    args, state = iql_state
    expected_target = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * np_value(
        state.value.params, batch["next_observations"])
    target = iql.critic_target(state, batch, args.discount)
    close(target, expected_target)
    layers = state.critic.params["params"]["VmapQNetwork_0"]["MLP_0"]
    sa = np.concatenate([batch["observations"], batch["actions"]], 1)
    expected = sum(np.mean((np_mlp(layers, sa, k)[:, 0] - expected_target) ** 2) for k in range(2))
    loss, _ = iql.critic_loss(state.critic.params, state, batch, target)
    close(loss, expected)


# --------------------------------------------------------------------------------------------
# CQL


@pytest.fixture
def cql_state():
    args = cql.Args(hidden_dims=(8, 8))
    state = cql.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    return args, state.replace(
        actor=state.actor.replace(params=perturbed(state.actor.params, 11)),
        critic=state.critic.replace(params=perturbed(state.critic.params, 12)),
        critic_target=perturbed(state.critic_target, 13),
    )


def np_policy(actor_params, observations):
    """Mean and log std of the tanh-Gaussian: log std = clip(m * l + b, -20, 2)."""
    params = actor_params["params"]
    out = np_mlp(params["MLP_0"], observations)
    mean, raw = out[..., :ACTION_DIM], out[..., ACTION_DIM:]
    log_std = np.clip(float(params["log_std_multiplier"]) * raw
                      + float(params["log_std_offset"]), -20.0, 2.0)
    return mean, log_std


def np_tanh_log_prob(mean, log_std, pre_tanh):
    """log N(u; mean, std) - log(1 - tanh(u)^2), summed, computed the direct way."""
    return np.sum(-0.5 * ((pre_tanh - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI
                  - np.log(1.0 - np.tanh(pre_tanh.astype(np.float64)) ** 2), -1)


def np_q(critic_params, observations, actions):
    """Both Q-functions, (2, ...) over the leading shape of `actions`."""
    layers = critic_params["params"]["VmapQNetwork_0"]["MLP_0"]
    observations = np.broadcast_to(observations, actions.shape[:-1] + observations.shape[-1:])
    sa = np.concatenate([observations, actions], -1)
    return np.stack([np_mlp(layers, sa, k)[..., 0] for k in range(2)])


def test_cql_tanh_gaussian_log_prob():
    rng = np.random.default_rng(1)
    mean, log_std = rng.normal(size=(5, 3)), rng.normal(scale=0.5, size=(5, 3))
    pre_tanh = rng.normal(scale=2.0, size=(5, 3))
    close(cql.tanh_gaussian_log_prob(jnp.asarray(mean), jnp.asarray(log_std),
                                     jnp.asarray(pre_tanh)),
          np_tanh_log_prob(mean, log_std, pre_tanh), atol=1e-4)
    # far in the tails the stable form stays finite where 1 - tanh(u)^2 underflows to 0
    assert np.isfinite(cql.tanh_gaussian_log_prob(jnp.zeros(1), jnp.zeros(1), jnp.full(1, 30.0)))


def test_cql_policy_initial_log_std_is_offset_minus_one():
    args = cql.Args(hidden_dims=(8,))
    state = cql.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    params = state.actor.params["params"]
    assert float(params["log_std_multiplier"]) == 1.0 and float(params["log_std_offset"]) == -1.0
    # JaxCQL's output layer: variance_scaling(1e-2, fan_in, uniform), bound sqrt(3e-2 / 8)
    assert np.abs(params["MLP_0"]["Dense_1"]["kernel"]).max() <= np.sqrt(3e-2 / 8)


def test_cql_orthogonal_init_of_the_q_functions():
    """--orthogonal-init (CORL's Adroit setting): hidden kernels W with W^T W = 2 I (gain
    sqrt 2), the output kernel of norm 1e-2, zero biases, each Q-function its own draw; the
    policy keeps JaxCQL's initialisation."""
    args = cql.Args(hidden_dims=(16, 16), orthogonal_init=True)
    state = cql.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    layers = state.critic.params["params"]["VmapQNetwork_0"]["MLP_0"]
    for k in range(2):
        square = np.asarray(layers["Dense_1"]["kernel"][k])  # 16 x 16
        close(square.T @ square, 2.0 * np.eye(16), atol=1e-4)
        first = np.asarray(layers["Dense_0"]["kernel"][k])  # (OBS_DIM + ACTION_DIM) x 16
        close(first @ first.T, 2.0 * np.eye(first.shape[0]), atol=1e-4)  # rows orthonormal
        close(np.linalg.norm(layers["Dense_2"]["kernel"][k]), 1e-2, atol=1e-6)
        assert all(np.all(layers[f"Dense_{i}"]["bias"][k] == 0) for i in range(3))
    assert not np.allclose(layers["Dense_1"]["kernel"][0], layers["Dense_1"]["kernel"][1])
    default = cql.init_state(jax.random.key(0), cql.Args(hidden_dims=(16, 16)), OBS_DIM,
                             ACTION_DIM)
    close(state.actor.params["params"]["MLP_0"]["Dense_0"]["kernel"],
          default.actor.params["params"]["MLP_0"]["Dense_0"]["kernel"])


@pytest.mark.parametrize("warmup", [False, True])
def test_cql_actor_loss(cql_state, batch, warmup):
    args, state = cql_state
    args = cql.Args(hidden_dims=(8, 8), bc_warmup_updates=10 if warmup else 0)
    key, alpha = jax.random.key(5), 0.3
    mean, log_std = np_policy(state.actor.params, batch["observations"])
    eps = np.asarray(jax.random.normal(key, mean.shape))  # the noise the loss draws from `key`
    pre_tanh = mean + np.exp(log_std) * eps
    log_pi = np_tanh_log_prob(mean, log_std, pre_tanh)
    if warmup:  # step 0 < 10: behaviour cloning, log pi of the dataset's actions
        objective = np_tanh_log_prob(mean, log_std, np.arctanh(batch["actions"]))
    else:
        objective = np_q(state.critic.params, batch["observations"], np.tanh(pre_tanh)).min(0)
    loss, got_log_pi = cql.actor_loss(state.actor.params, state, batch, key, alpha, args)
    close(got_log_pi, log_pi, atol=1e-4)
    close(loss, np.mean(alpha * log_pi - objective), atol=1e-4)


def test_cql_temperature_loss_by_hand():
    log_pi = jnp.array([-1.0, 0.5, 2.0])  # mean 0.5; target entropy -2: -log_alpha * (0.5 - 2)
    close(cql.temperature_loss({"value": jnp.asarray(0.4)}, log_pi, -2.0), 0.4 * 1.5)


def test_cql_critic_target(cql_state, batch):
    args, state = cql_state
    key = jax.random.key(6)
    mean, log_std = np_policy(state.actor.params, batch["next_observations"])
    next_actions = np.tanh(mean + np.exp(log_std) * np.asarray(jax.random.normal(key, mean.shape)))
    next_q = np_q(state.critic_target, batch["next_observations"], next_actions).min(0)
    expected = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * next_q
    close(cql.critic_target(state, batch, key, args.discount), expected, atol=1e-4)


def test_cql_proposals_and_their_log_densities(batch):
    # a fresh policy (means near 0, std e^-1), whose actions arctanh inverts accurately
    state = cql.init_state(jax.random.key(0), cql.Args(hidden_dims=(8, 8)), OBS_DIM, ACTION_DIM)
    n = 4
    actions, log_densities = cql.cql_proposals(state, batch, jax.random.key(7), n)
    actions, log_densities = np.asarray(actions), np.asarray(log_densities)
    assert actions.shape == (BATCH, 3 * n, ACTION_DIM) and log_densities.shape == (BATCH, 3 * n)
    assert np.abs(actions[:, :n]).max() <= 1.0 and actions[:, :n].std() > 0.4  # uniform box
    close(log_densities[:, :n], np.full((BATCH, n), ACTION_DIM * np.log(0.5)))
    for part, observations in ((1, batch["observations"]), (2, batch["next_observations"])):
        mean, log_std = np_policy(state.actor.params, observations)
        sampled = actions[:, part * n:(part + 1) * n].astype(np.float64)
        expected = np_tanh_log_prob(mean[:, None], log_std[:, None], np.arctanh(sampled))
        close(log_densities[:, part * n:(part + 1) * n], expected, atol=1e-3)
        assert sampled.std() > 0.1  # distinct samples


@pytest.mark.parametrize("lagrange", [False, True])
def test_cql_critic_loss(cql_state, batch, lagrange):
    _, state = cql_state
    args = cql.Args(hidden_dims=(8, 8), lagrange=lagrange, cql_alpha=5.0, target_action_gap=2.0,
                    cql_temperature=0.7)
    rng = np.random.default_rng(2)
    proposals = rng.uniform(-1, 1, (BATCH, 6, ACTION_DIM)).astype(np.float32)
    log_densities = rng.normal(size=(BATCH, 6)).astype(np.float32)
    target = rng.normal(size=BATCH).astype(np.float32)
    alpha_prime = 1.7
    q_data = np_q(state.critic.params, batch["observations"], batch["actions"])  # (2, B)
    q_prop = np_q(state.critic.params, batch["observations"][:, None], proposals)  # (2, B, 6)
    z = (q_prop - log_densities) / 0.7
    top = z.max(-1, keepdims=True)
    soft_max = 0.7 * (np.log(np.exp(z - top).sum(-1)) + top[..., 0])
    gap = (soft_max - q_data).mean(-1)  # per Q-function
    penalty = alpha_prime * (5.0 * gap - 2.0) if lagrange else 5.0 * gap
    expected = np.sum(np.mean((q_data - target) ** 2, -1) + penalty)
    loss, (_, _, got_gap) = cql.critic_loss(state.critic.params, state, batch, jnp.asarray(target),
                                            jnp.asarray(proposals), jnp.asarray(log_densities),
                                            alpha_prime, args)
    close(got_gap, gap, atol=1e-4)
    close(loss, expected, atol=1e-4)


def test_cql_lagrange_loss_raises_alpha_prime_while_the_gap_exceeds_tau():
    args = cql.Args(cql_alpha=5.0, target_action_gap=2.0)
    gap = jnp.array([1.0, 0.2])  # 5 * gap - 2 = 3, -1: sum 2
    log_alpha_prime = {"value": jnp.asarray(np.log(1.5), jnp.float32)}
    close(cql.lagrange_loss(log_alpha_prime, gap, args), -1.5 * 0.5 * 2.0)
    grad = jax.grad(cql.lagrange_loss)(log_alpha_prime, gap, args)["value"]
    assert grad < 0  # gradient descent on log alpha' raises alpha'
    below = jax.grad(cql.lagrange_loss)(log_alpha_prime, jnp.array([0.1, 0.1]), args)["value"]
    assert below > 0


# --------------------------------------------------------------------------------------------
# BCQ


@pytest.fixture
def bcq_state():
    args = bcq.Args(hidden_dims=(8, 8), vae_hidden_dims=(8, 8), phi=0.3, lmbda=0.6,
                    n_target_actions=4, latent_clip=0.4)
    state = bcq.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    return args, state.replace(
        actor=state.actor.replace(params=perturbed(state.actor.params, 21)),
        critic=state.critic.replace(params=perturbed(state.critic.params, 22)),
        vae=state.vae.replace(params=perturbed(state.vae.params, 23)),
        actor_target=perturbed(state.actor_target, 24),
        critic_target=perturbed(state.critic_target, 25),
    )


def np_decode(vae_params, observations, latent):
    layers = vae_params["params"]["decoder"]
    observations = np.broadcast_to(observations, latent.shape[:-1] + observations.shape[-1:])
    return np.tanh(np_mlp(layers, np.concatenate([observations, latent], -1)))


def np_perturb(actor_params, observations, actions, phi):
    observations = np.broadcast_to(observations, actions.shape[:-1] + observations.shape[-1:])
    x = np.concatenate([observations, actions], -1)
    return np.clip(actions + phi * np.tanh(np_mlp(actor_params["params"]["MLP_0"], x)), -1, 1)


def np_latents(key, shape, clip):
    """The latents the code draws from `key`: clip(N(0, I), -clip, clip)."""
    return np.clip(np.asarray(jax.random.normal(key, shape)), -clip, clip)


def test_bcq_vae_loss_is_reconstruction_plus_half_kl(bcq_state, batch):
    _, state = bcq_state
    key = jax.random.key(8)
    out = np_mlp(state.vae.params["params"]["encoder"],
                 np.concatenate([batch["observations"], batch["actions"]], 1))
    latent_dim = 2 * ACTION_DIM
    mean, log_std = out[:, :latent_dim], np.clip(out[:, latent_dim:], -4, 15)
    std = np.exp(log_std)
    z = mean + std * np.asarray(jax.random.normal(key, mean.shape))
    reconstruction = np.mean((np_decode(state.vae.params, batch["observations"], z)
                              - batch["actions"]) ** 2)
    kl = -0.5 * np.mean(1 + np.log(std**2) - mean**2 - std**2)  # the authors' form
    loss, (got_reconstruction, got_kl) = bcq.vae_loss(state.vae.params, state, batch, key, 0.5)
    close(got_reconstruction, reconstruction)
    close(got_kl, kl, atol=1e-4)
    close(loss, reconstruction + 0.5 * kl, atol=1e-4)


def test_bcq_perturbation_is_bounded_by_phi(bcq_state, batch):
    args, state = bcq_state
    # large weights saturate the tanh: the perturbation reaches its bound Phi and no further
    params = jax.tree.map(lambda x: 20.0 * x, state.actor.params)
    actions = np.array([[0.0, 0.5], [0.98, -0.98], [-1.0, 1.0], [0.2, 0.2], [0.9, -0.3],
                        [-0.5, 0.0]], np.float32)
    got = np.asarray(state.actor.apply_fn(params, batch["observations"], actions))
    close(got, np_perturb(params, batch["observations"], actions, args.phi))
    assert np.all(np.abs(got - actions) <= args.phi + 1e-6) and np.all(np.abs(got) <= 1.0)
    unclipped = np.abs(actions) + args.phi < 1.0
    assert np.abs(got - actions)[unclipped].max() > 0.99 * args.phi  # the bound is reached


def test_bcq_soft_clipped_double_q_target_over_generated_actions(bcq_state, batch):
    args, state = bcq_state
    key = jax.random.key(9)
    n, s_next = args.n_target_actions, batch["next_observations"][:, None]
    z = np_latents(key, (BATCH, n, 2 * ACTION_DIM), args.latent_clip)
    generated = np_decode(state.vae.params, s_next, z)
    actions = np_perturb(state.actor_target, s_next, generated, args.phi)
    q = np_q(state.critic_target, s_next, actions)  # (2, B, n)
    soft = 0.6 * q.min(0) + 0.4 * q.max(0)
    expected = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * soft.max(-1)
    close(bcq.critic_target(state, batch, key, args), expected, atol=1e-4)


def test_bcq_critic_loss(bcq_state, batch):
    _, state = bcq_state
    target = np.linspace(-1, 2, BATCH).astype(np.float32)
    q = np_q(state.critic.params, batch["observations"], batch["actions"])
    loss, _ = bcq.critic_loss(state.critic.params, state, batch, target)
    close(loss, np.sum(np.mean((q - target) ** 2, -1)), atol=1e-4)


def test_bcq_actor_loss_follows_q1_of_perturbed_generated_actions(bcq_state, batch):
    args, state = bcq_state
    key = jax.random.key(10)
    s = batch["observations"][:, None]
    generated = np_decode(state.vae.params, s, np_latents(key, (BATCH, 1, 2 * ACTION_DIM),
                                                          args.latent_clip))
    actions = np_perturb(state.actor.params, s, generated, args.phi)
    expected = -np_q(state.critic.params, s, actions)[0].mean()
    loss, perturbation = bcq.actor_loss(state.actor.params, state, batch, key, args)
    close(loss, expected, atol=1e-4)
    close(perturbation, np.abs(actions - generated).mean())


def test_bcq_targets_follow_the_updated_networks(bcq_state, batch):
    """Polyak averaging after the update, towards the perturbation model and Q-functions that
    this update produced (the authors' order): theta' <- tau theta_new + (1 - tau) theta'."""
    args, state = bcq_state
    # Adam's first step moves every parameter by about its learning rate: 0.1 and tau = 0.5
    # make averaging towards the networks before the update miss by about 0.05.
    args = dataclasses.replace(args, tau=0.5)
    state = state.replace(actor=state.actor.replace(tx=optax.adam(0.1)),
                          critic=state.critic.replace(tx=optax.adam(0.1)))
    after, _ = bcq.update(state, batch, args)
    for online, target, before in ((after.actor.params, after.actor_target, state.actor_target),
                                   (after.critic.params, after.critic_target,
                                    state.critic_target)):
        jax.tree.map(lambda new, t, old: close(t, args.tau * np.asarray(new)
                                               + (1 - args.tau) * np.asarray(old)),
                     online, target, before)


def test_bcq_acts_with_the_best_of_its_candidates_under_q1(bcq_state, batch):
    from common.normalization import ObservationStatistics

    args, state = bcq_state
    args = bcq.Args(hidden_dims=(8, 8), vae_hidden_dims=(8, 8), phi=0.3, n_eval_actions=7)
    policy = bcq.evaluation_policy(args, ACTION_DIM, ObservationStatistics.identity(OBS_DIM))
    params = bcq.policy_params(state)
    key = jax.random.key(11)
    s = batch["observations"][:, None]
    generated = np_decode(state.vae.params, s, np_latents(key, (BATCH, 7, 2 * ACTION_DIM), 0.5))
    candidates = np_perturb(state.actor.params, s, generated, args.phi)
    best = np_q(state.critic.params, s, candidates)[0].argmax(-1)
    expected = candidates[np.arange(BATCH), best]
    close(policy(params, jnp.asarray(batch["observations"]), key), expected)
    # the checkpoint's state dict gives the same parameters as the training state
    from flax import serialization

    as_dict = bcq.policy_params(serialization.to_state_dict(state))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, as_dict)


# --------------------------------------------------------------------------------------------
# POR


@pytest.fixture
def por_state():
    args = por.Args(hidden_dims=(8, 8), actor_hidden_dims=(8, 8), alpha=2.0, expectile=0.8,
                    max_weight=3.0, guide_loss="q")
    state = por.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    return args, state.replace(
        actor=state.actor.replace(params=perturbed(state.actor.params, 31)),
        guide=state.guide.replace(params=perturbed(state.guide.params, 32)),
        behaviour=state.behaviour.replace(params=perturbed(state.behaviour.params, 35)),
        value=state.value.replace(params=perturbed(state.value.params, 33)),
        value_target=perturbed(state.value_target, 34),
    )


def np_v(value_params, observations):
    """Both V-networks, (2, ...)."""
    layers = value_params["params"]["VmapValueNetwork_0"]["MLP_0"]
    return np.stack([np_mlp(layers, observations, k)[..., 0] for k in range(2)])


def np_gaussian(policy_params, inputs):
    params = policy_params["params"]
    return np_mlp(params["MLP_0"], inputs), np.clip(np.asarray(params["log_std"]), -5, 2)


def np_expectile(u, tau):
    return np.where(u < 0, 1 - tau, tau) * u**2


def test_por_value_target_and_expectile_loss(por_state, batch):
    args, state = por_state
    next_v = np_v(state.value_target, batch["next_observations"]).min(0)
    target = batch["rewards"] + 0.99 * (1 - batch["terminals"]) * next_v
    close(por.value_target(state, batch, 0.99), target, atol=1e-4)
    v = np_v(state.value.params, batch["observations"])  # (2, B)
    expected = np.mean([np_expectile(target - v[k], 0.8).mean() for k in range(2)])
    loss, _ = por.value_loss(state.value.params, state, batch, jnp.asarray(target), 0.8)
    close(loss, expected, atol=1e-4)


def test_por_residual_guide_loss(por_state, batch):
    args, state = por_state
    target = np.linspace(-1.0, 1.5, BATCH).astype(np.float32)
    v = np_v(state.value.params, batch["observations"]).min(0)
    weights = np.minimum(np.exp(2.0 * (target - v)), 3.0)
    assert (weights == 3.0).any() and (weights < 3.0).any()  # the clip is exercised
    mean, log_std = np_gaussian(state.guide.params, batch["observations"])
    log_prob = np_gaussian_log_prob(mean, log_std, batch["next_observations"])
    loss, (got_weights, _) = por.residual_guide_loss(state.guide.params, state, batch,
                                                     jnp.asarray(target), args)
    close(got_weights, weights, atol=1e-4)
    close(loss, -np.mean(weights * log_prob), atol=1e-4)


@pytest.mark.parametrize("term", ["model", "guide"])
def test_por_q_guide_loss(por_state, batch, term):
    """-mean [lambda V(g~) + log b(g~ | s)] with the authors' behaviour model b, or the paper's
    log g(s' | s) of the dataset's next state (--q-behaviour-term guide)."""
    args, state = por_state
    if term == "guide":
        state = state.replace(behaviour=None)
    key = jax.random.key(12)
    mean, log_std = np_gaussian(state.guide.params, batch["observations"])
    proposed = mean + np.exp(log_std) * np.asarray(jax.random.normal(key, mean.shape))
    v_proposed = np_v(state.value.params, proposed).min(0)
    lmbda = 2.0 / np.abs(v_proposed).mean()
    if term == "model":
        b_mean, b_log_std = np_gaussian(state.behaviour.params, batch["observations"])
        constraint = np_gaussian_log_prob(b_mean, b_log_std, proposed)
    else:
        constraint = np_gaussian_log_prob(mean, log_std, batch["next_observations"])
    loss, (got_lambda, _, _) = por.q_guide_loss(state.guide.params, state, batch, key, args)
    close(got_lambda, lmbda, atol=1e-4)
    close(loss, -np.mean(lmbda * v_proposed + constraint), atol=1e-4)
    # lambda is a constant of the gradient (the authors' .detach()), b is not trained here
    grads = jax.grad(lambda p: por.q_guide_loss(p, state, batch, key, args)[0])(state.guide.params)

    def with_constant_lambda(p):
        m, s = state.guide.apply_fn(p, batch["observations"])
        g = m + jnp.exp(s) * jax.random.normal(key, m.shape)
        v_g = state.value.apply_fn(state.value.params, g).min(0)
        if term == "model":
            b_m, b_s = state.behaviour.apply_fn(state.behaviour.params, batch["observations"])
            return -(got_lambda * v_g + por.gaussian_log_prob(b_m, b_s, g)).mean()
        return -(got_lambda * v_g + por.gaussian_log_prob(m, s, batch["next_observations"])).mean()

    jax.tree.map(lambda a, b: close(a, np.asarray(b), atol=1e-4), grads,
                 jax.grad(with_constant_lambda)(state.guide.params))


def test_por_behaviour_model_loss_is_the_likelihood_of_next_states(por_state, batch):
    _, state = por_state
    mean, log_std = np_gaussian(state.behaviour.params, batch["observations"])
    expected = -np.mean(np_gaussian_log_prob(mean, log_std, batch["next_observations"]))
    close(por.behaviour_loss(state.behaviour.params, state, batch), expected, atol=1e-4)


def test_por_execute_policy_loss_clones_the_action_from_s_to_s_next(por_state, batch):
    _, state = por_state
    inputs = np.concatenate([batch["observations"], batch["next_observations"]], 1)
    mean, log_std = np_gaussian(state.actor.params, inputs)
    expected = -np.mean(np_gaussian_log_prob(mean, log_std, batch["actions"]))
    close(por.actor_loss(state.actor.params, state, batch), expected, atol=1e-4)


def test_por_acts_with_the_execute_policy_at_the_guides_proposal(por_state, batch):
    from common.normalization import ObservationStatistics

    args, state = por_state
    policy = por.evaluation_policy(args, ACTION_DIM, ObservationStatistics.identity(OBS_DIM))
    goal, _ = np_gaussian(state.guide.params, batch["observations"])
    expected, _ = np_gaussian(state.actor.params,
                              np.concatenate([batch["observations"], goal], 1))
    close(policy(por.policy_params(state), jnp.asarray(batch["observations"])), expected,
          atol=1e-4)


# --------------------------------------------------------------------------------------------
# Reward model from preferences (Christiano et al. 2017; InstructGPT's K-wise rankings)


def np_reward(layers, member, observations, actions):
    """One member of the reward ensemble in numpy: LeakyReLU(0.01) MLP, tanh output."""
    names = sorted((k for k in layers if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    x = np.concatenate([observations, actions], -1)
    for i, name in enumerate(names):
        kernel, bias = layers[name]["kernel"][member], layers[name]["bias"][member]
        x = x @ np.asarray(kernel) + np.asarray(bias)
        x = np.where(x > 0, x, 0.01 * x) if i < len(names) - 1 else np.tanh(x[..., 0])
    return x


def test_reward_model_preference_loss_pairs_ties_and_rankings():
    """Segments 10 and 33 run into a terminal (episodes end at 11, 34 and 39): their steps after
    it are the absorbing state, reward 0."""
    sys.path.insert(0, str(ROOT / "algorithms"))
    import reward_model as rm
    from common.preferences import Query

    args = rm.Args(hidden_dims=(8, 8), ensemble_size=2, batch_size=4, random_answer=0.1)
    length, n = 3, 40
    rng = np.random.default_rng(3)
    data = {"observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
            "last_steps": np.array([11] * 12 + [34] * 23 + [39] * 5, np.int32)}
    episode_ends = (11, 34, 39)
    state = rm.init_state(jax.random.key(0), args, OBS_DIM, ACTION_DIM)
    params = perturbed(state.model.params, 1)
    queries = [Query((0, 10), preference=(1.0, 0.0)), Query((5, 20), preference=(0.0, 1.0)),
               Query((30, 12), preference=(0.5, 0.5)), Query((2, 33, 17), ranking=(2, 0, 1))]
    arrays = rm.query_arrays(queries)
    indices = np.array([[0, 1, 2, 3], [3, 3, 2, 0]])  # each member its own minibatch

    loss = float(rm.loss_fn(params, state, jax.device_put(data),
                            jax.device_put(arrays), jnp.asarray(indices), args, length))

    layers = params["params"]["VmapRewardNetwork_0"]
    eps = 0.1
    expected = []
    for member in range(2):
        for q in indices[member]:
            query = queries[q]
            stops = [min(s + length, min(e for e in episode_ends if e >= s) + 1)
                     for s in query.segments]
            returns = [np_reward(layers, member, data["observations"][s:stop],
                                 data["actions"][s:stop]).sum()
                       for s, stop in zip(query.segments, stops)]

            def cross_entropy(i, j, mu):
                p = (1 - eps) / (1 + np.exp(-(returns[i] - returns[j]))) + eps / 2
                return -mu * np.log(p) - (1 - mu) * np.log(1 - p)

            if query.ranking is None:
                expected.append(cross_entropy(0, 1, query.preference[0]))
            else:  # every ordered pair of the ranking, better one first, averaged
                r = query.ranking
                pairs = [(r[a], r[b]) for a in range(len(r)) for b in range(a + 1, len(r))]
                expected.append(np.mean([cross_entropy(i, j, 1.0) for i, j in pairs]))
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
