"""What a train step does, checked against references built by hand: dropout, gradient clipping,
each optimiser, the learning-rate schedules, and the carried state of truncated BPTT.

The references use only public pieces (`jaxrnn.loss_fn` with ``backward="autodiff"``, `jax.grad`,
optax's own optimisers) and compare the parameters after a step, the logged metrics and the loss,
never the train step's internal structure. Optimiser checks run in float64, so that "equal" means
equal to round-off, far below any real difference (an update is O(learning rate)).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import config as config_lib, data, model, train

TEXT = "".join(f"{index}: to be, or not to be, that is the question.\n" for index in range(40))
VOCAB = data.build_vocab(TEXT)
V = len(VOCAB)


def _config(**overrides):
    """A tiny SGD run without anything random between windows: window k at step k, zero state at
    step 0, no dropout, no warm-up, a constant learning rate and no clipping (unless overridden)."""
    values = dict(data="unused", hidden_size=8, batch_size=3, seq_len=6, num_steps=10,
                  warmup_steps=0, schedule="constant", optimizer="sgd", momentum=0.0,
                  learning_rate=0.1, clip_norm=1e6, dropout=0.0, random_offsets=False,
                  state_reset_probability=0.0, dtype="float64")
    values.update(overrides)
    return config_lib.make_config(**values)


def _streams(config):
    """(B, W*T+1) streams of TEXT; W is far above the number of steps any test takes."""
    return data.make_streams(data.encode(VOCAB, TEXT), config.batch_size, config.seq_len)


def _library_run(config, num_steps):
    """The library's train steps from `init_train_state`: train states before each step and after
    the last (num_steps + 1), and the metrics of each step."""
    streams = _streams(config)
    step = jax.jit(train.make_train_step(config, data.num_windows(streams, config.seq_len)))
    states, metrics = [train.init_train_state(config, V)], []
    for _ in range(num_steps):
        state, step_metrics = step(states[-1], streams)
        states.append(state)
        metrics.append(jax.device_get(step_metrics))
    return states, metrics


_value_and_grad = jax.jit(
    jax.value_and_grad(lambda params, inputs, targets, state, arch: jaxrnn.loss_fn(
        params, inputs, targets, state, arch=arch, backward="autodiff"), has_aux=True),
    static_argnames="arch")


def _gradient(config, params, window, state):
    """jax.grad of the autodiff loss on window ``window`` from ``state`` (None: zeros):
    ``(loss, final_state, grads)``."""
    inputs, targets = data.get_window(_streams(config), window, config.seq_len)
    (loss, final_state), grads = _value_and_grad(params, inputs, targets, state, config.arch)
    return loss, final_state, grads


def _reference_run(config, optimizer, num_steps):
    """Truncated BPTT written out: step k reads window k with the state carried from window k-1
    (zeros at k = 0) and applies ``optimizer`` (an optax transformation) to jax.grad's gradient.
    Returns the parameters before each step and after the last."""
    params = train.init_train_state(config, V).params
    opt_state, state, history = optimizer.init(params), None, [params]
    update = jax.jit(optimizer.update)
    for window in range(num_steps):
        _, state, grads = _gradient(config, params, window, state)
        updates, opt_state = update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history


def _assert_trees_close(got, want, atol, what):
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol,
                                   err_msg=f"{what} at {jax.tree_util.keystr(path)}")


def _difference(a, b):
    return jax.tree.map(lambda x, y: x - y, a, b)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,dtype", [(0.25, jnp.float32), (0.6, jnp.float64)])
def test_dropout_masks_keep_one_minus_rate_scaled_by_its_inverse(x64, rate, dtype):
    shape = (40, 8, 16)                                                   # (T, B, H)
    masks = np.asarray(model.make_dropout_masks(jax.random.key(3), rate, 2, shape, dtype))
    assert masks.shape == (2, *shape) and masks.dtype == dtype
    kept = masks != 0
    # Each kept entry is exactly 1 / (1 - rate) in the mask's dtype (inverted dropout).
    np.testing.assert_array_equal(masks[kept], np.asarray(1, dtype) / np.asarray(1 - rate, dtype))
    # The kept fraction is 1 - rate within 5 standard deviations of a binomial over each layer.
    sigma = math.sqrt(rate * (1 - rate) / kept[0].size)
    for layer in range(2):
        assert abs(kept[layer].mean() - (1 - rate)) < 5 * sigma, (layer, kept[layer].mean())
    assert (kept[0] != kept[1]).mean() > 0.1                  # each layer draws its own mask
    assert model.make_dropout_masks(jax.random.key(3), 0.0, 2, shape, dtype) is None


@functools.partial(jax.jit, static_argnames=("arch", "backward", "rate"))
def _losses_and_states(params, inputs, targets, key, state=None, *, arch, backward, rate):
    """``loss_fn`` from ``state`` (None: zeros) with dropout ``rate`` and without:
    ((loss, final_state), (loss, final_state))."""
    return (jaxrnn.loss_fn(params, inputs, targets, state, arch=arch, backward=backward,
                           dropout=rate, dropout_key=key),
            jaxrnn.loss_fn(params, inputs, targets, state, arch=arch, backward=backward))


@functools.partial(jax.jit, static_argnames=("arch", "rate"))
def _masked_forward_loss(params, inputs, targets, key, state=None, *, arch, rate):
    """The dropout loss built by hand from public pieces: each layer `jaxrnn.unroll` (from its
    carry in ``state``, None: zeros) on the previous layer's output times its mask from
    `make_dropout_masks` (one-hot characters into layer 0), then the output layer and the mean
    cross-entropy."""
    hidden = model.hidden_size_of(params)
    masks = model.make_dropout_masks(key, rate, len(params["layers"]),
                                     (*inputs.T.shape, hidden), params["W_hy"].dtype)
    x = jax.nn.one_hot(inputs.T, V, dtype=params["W_hy"].dtype)          # (T, B, V)
    for index, layer in enumerate(params["layers"]):
        hiddens, _ = jaxrnn.unroll([layer], x, None if state is None else (state[index],),
                                   arch=arch, backward="autodiff")
        x = hiddens * masks[index]                                        # (T, B, H)
    log_probs = model.output_log_probs(params, x)
    return -jnp.take_along_axis(log_probs, targets.T[..., None], axis=-1).mean()


def _problem(arch, num_layers):
    params = jaxrnn.init_params(jax.random.key(0), arch, V, 8, num_layers)
    ids = jax.random.randint(jax.random.key(1), (3, 8), 0, V)             # (B, T + 1)
    return params, ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_dropout_is_on_layer_outputs_only(arch):
    """Both backward modes, 2 layers: the dropout loss is that of the masked forward built by
    hand, and differs from the loss without dropout; nothing is on the recurrence: layer 0's final
    state is the one without dropout (layer 1's is not: it reads a masked input), and so is the
    final state of a 1-layer model."""
    rate, key = 0.4, jax.random.key(5)
    params, inputs, targets = _problem(arch, 2)
    expected = _masked_forward_loss(params, inputs, targets, key, arch=arch, rate=rate)
    one_layer = _problem(arch, 1)
    for backward in ("manual", "autodiff"):
        (loss, dropped), (plain_loss, plain) = _losses_and_states(
            params, inputs, targets, key, arch=arch, backward=backward, rate=rate)
        np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=backward)
        assert abs(float(loss) - float(plain_loss)) > 1e-3, backward
        _assert_trees_close(dropped[0], plain[0], 1e-6, f"{backward}: layer 0 of 2")
        assert max(float(jnp.abs(a - b).max()) for a, b in
                   zip(jax.tree.leaves(dropped[1]), jax.tree.leaves(plain[1]))) > 1e-3, backward
        (_, dropped), (_, plain) = _losses_and_states(*one_layer, key, arch=arch,
                                                      backward=backward, rate=rate)
        _assert_trees_close(dropped, plain, 1e-6, f"{backward}: 1-layer model")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_dropout_leaves_the_carried_state_alone(arch):
    """Truncated BPTT hands each window the state the previous window left; dropout must not
    touch it either (the test above starts from zeros, where masking the incoming state changes
    nothing). From a non-zero state, 2 layers, both backward modes: the dropout loss is that of
    the masked forward built by hand from the same state, and layer 0's final state is the one
    without dropout."""
    rate, key = 0.4, jax.random.key(5)
    params, inputs, targets = _problem(arch, 2)
    zeros = jaxrnn.init_state(arch, inputs.shape[0], 8, 2)
    leaves, treedef = jax.tree.flatten(zeros)
    state = treedef.unflatten([0.8 * jax.random.normal(jax.random.key(20 + index), leaf.shape)
                               for index, leaf in enumerate(leaves)])
    expected = _masked_forward_loss(params, inputs, targets, key, state, arch=arch, rate=rate)
    # Not vacuous: the state matters to the hand-built loss.
    assert abs(float(expected) - float(_masked_forward_loss(
        params, inputs, targets, key, arch=arch, rate=rate))) > 1e-3
    for backward in ("manual", "autodiff"):
        (loss, dropped), (_, plain) = _losses_and_states(
            params, inputs, targets, key, state, arch=arch, backward=backward, rate=rate)
        np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=backward)
        _assert_trees_close(dropped[0], plain[0], 1e-6, f"{backward}: layer 0 of 2")


def test_consecutive_train_steps_draw_different_masks():
    """The dropout key moves on every step (it is folded from the root key and the step
    counter): re-running step 1's window and parameters as step 2 gives another loss, as step 1
    the same loss again; without dropout the step counter changes nothing."""
    for rate in (0.5, 0.0):
        config = _config(dtype="float32", dropout=rate)
        streams = _streams(config)
        step = jax.jit(train.make_train_step(config, data.num_windows(streams, config.seq_len)))
        first = train.init_train_state(config, V)
        second, metrics = step(first, streams)
        _, again = step(first, streams)
        _, other_step = step(first._replace(step=second.step), streams)
        assert float(again["loss"]) == float(metrics["loss"])
        moved = abs(float(other_step["loss"]) - float(metrics["loss"]))
        assert moved > 1e-4 if rate else moved == 0.0


# ---------------------------------------------------------------------------------------------
# Clipping and the logged gradient metrics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip_factor,clipped", [(0.25, 1.0), (4.0, 0.0)])
def test_sgd_step_is_the_clipped_gradient_step(x64, clip_factor, clipped):
    """SGD without momentum: one step moves the parameters by exactly ``-lr g min(1, c/|g|)``
    with g from jax.grad; the logged grad_norm is |g| and ``clipped`` says whether c < |g|."""
    probe = _config()
    params = train.init_train_state(probe, V).params
    _, _, grads = _gradient(probe, params, 0, None)
    norm = float(optax.tree.norm(grads))
    config = _config(clip_norm=clip_factor * norm, learning_rate=0.5)
    states, metrics = _library_run(config, 1)
    scale = 0.5 * min(1.0, clip_factor)
    expected = jax.tree.map(lambda p, g: p - scale * g, params, grads)
    _assert_trees_close(states[1].params, expected, 1e-12, "parameters after one step")
    np.testing.assert_allclose(metrics[0]["grad_norm"], norm, rtol=1e-12)
    assert float(metrics[0]["clipped"]) == clipped


# ---------------------------------------------------------------------------------------------
# Optimisers: three steps each against the optax optimiser built by hand
# ---------------------------------------------------------------------------------------------
REFERENCE_OPTIMIZERS = {
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=0.1),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adagrad": lambda lr: optax.adagrad(lr),
    "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
}


def test_every_optimizer_has_a_reference():
    assert sorted(REFERENCE_OPTIMIZERS) == sorted(config_lib.OPTIMIZERS)


@pytest.mark.parametrize("optimizer", sorted(REFERENCE_OPTIMIZERS))
def test_optimizer_steps_equal_the_optax_reference(x64, optimizer):
    """Three steps (momenta and second moments build up over steps; a first SGD step is the same
    with or without momentum) with the carried state of truncated BPTT; the gradient norm stays
    below clip_norm, so clipping is the identity here."""
    config = _config(optimizer=optimizer, learning_rate=0.01, weight_decay=0.1, momentum=0.9)
    states, metrics = _library_run(config, 3)
    reference = _reference_run(config, REFERENCE_OPTIMIZERS[optimizer](0.01), 3)
    for step in range(1, 4):
        _assert_trees_close(states[step].params, reference[step], 1e-11,
                            f"{optimizer} parameters after step {step}")
    assert all(float(m["clipped"]) == 0.0 for m in metrics)
    # Not a vacuous comparison: each step moves the parameters by O(learning rate).
    moved = _difference(reference[3], reference[2])
    assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(moved)) > 1e-3


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------
def _schedule_formula(config, step):
    """The learning rate at optimiser step ``step`` (0-based), written out from the flag help."""
    peak, warmup = config.learning_rate, config.warmup_steps
    if step < warmup:
        return peak * step / warmup
    decay_steps = max(config.num_steps - warmup, 1)
    progress = (step - warmup) / decay_steps
    if config.schedule == "constant":
        return peak
    if config.schedule == "cosine":
        fraction = config.final_lr_fraction
        return peak * (fraction + (1 - fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1))))
    return peak * config.decay_rate ** progress


@pytest.mark.parametrize("warmup_steps", [0, 4])
@pytest.mark.parametrize("schedule", config_lib.SCHEDULES)
def test_schedule_equals_its_formula_at_every_step(schedule, warmup_steps):
    config = _config(schedule=schedule, warmup_steps=warmup_steps, num_steps=24,
                     learning_rate=0.7, final_lr_fraction=0.1, decay_rate=0.3)
    steps = np.arange(config.num_steps + 1)
    np.testing.assert_allclose(train.make_schedule(config)(steps),
                               [_schedule_formula(config, step) for step in steps],
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("schedule,warmup_steps", [("cosine", 2), ("exponential", 0)])
def test_sgd_updates_follow_the_schedule_and_carry_the_state(x64, schedule, warmup_steps):
    """SGD without momentum moves the parameters by ``-lr_k g_k``: the learning rate recovered
    from each of six updates (g_k from jax.grad at the step's parameters and carried state) is
    the schedule's at that step. Along the way: step k's logged loss is window k's loss at the
    parameters before the step, from the state window k-1 left, and that state is carried."""
    config = _config(schedule=schedule, warmup_steps=warmup_steps, num_steps=6,
                     learning_rate=0.3, final_lr_fraction=0.1, decay_rate=0.2)
    states, metrics = _library_run(config, 6)
    state = None
    for step in range(6):
        loss, state, grads = _gradient(config, states[step].params, step, state)
        np.testing.assert_allclose(metrics[step]["loss"], loss, rtol=1e-12)
        _assert_trees_close(states[step + 1].model_state, state, 1e-12, f"state after {step}")
        moved = _difference(states[step + 1].params, states[step].params)
        flat_moved, flat_grads = (np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(t)])
                                  for t in (moved, grads))
        recovered = -float(flat_moved @ flat_grads / (flat_grads @ flat_grads))
        # optax computes the schedule in float32: equal to the formula within its round-off.
        np.testing.assert_allclose(recovered, _schedule_formula(config, step), rtol=1e-6,
                                   atol=1e-12, err_msg=f"learning rate of step {step}")
        np.testing.assert_allclose(flat_moved, -recovered * flat_grads, rtol=0, atol=1e-12)
