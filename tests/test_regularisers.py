"""The regularisers of `jaxrnn.regularisers`: each one's hand-written backward, its masks, and
that evaluation and sampling use none of them.

* manual == `jax.grad` of the reference unroll in float64 (<= 1e-10 relative, per argument) with
  fixed masks, for every cell x 1 and 2 layers x each regulariser alone and all combined; both
  within 1e-6 of central finite differences for all combined. The cases of one cell and depth
  share one compiled gradient: every mask is passed, the ones of the regularisers that are off
  in a case at their neutral value (dropout multipliers 1, zoneout 0), which is that loss.
* masks: the documented shapes, values and rates (binomial bound), fixed over the window where
  documented so, drawn inside the compiled training step from each run's own key.
* evaluation: the dropout-type flags leave the evaluation loss unchanged, and zoneout's
  evaluation and sampling forward is the expectation ``p * x_{t-1} + (1 - p) * x~_t``.
"""
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import cells, config as config_lib, data, model, regularisers, scans, train
from jaxrnn.errors import ConfigError
from jaxrnn.types import WindowMasks
from jaxrnn.unroll import stack_forward
from test_gradients import (B, H, T, V, _assert_all_below, _finite_difference, _keys_like,
                            _problem, _relative_errors)

CASES = regularisers.NAMES + ("all",)
RATE = 0.3


def _rates(arch, case):
    """`Rates` with RATE for ``case`` (a regulariser's name, or "all"), 0 for the others;
    zoneout_cell only for the LSTM."""
    names = [name for name in regularisers.NAMES if case in (name, "all")
             and (name != "zoneout_cell" or arch == "lstm")]
    return regularisers.Rates(**{name: RATE for name in names})


def _masks(arch, num_layers, rates, seed=5, dtype=jnp.float64):
    """Every mask of a window: drawn (from fixed keys) for the rates above 0, neutral for the
    others (dropout multipliers 1, zoneout masks 0), so that every case has one structure."""
    active = {name: rate if rate else RATE for name, rate in rates._asdict().items()}
    if arch != "lstm":
        active["zoneout_cell"] = 0.0
    keys = {name: jax.random.key(seed + index) for index, name in enumerate(regularisers.NAMES)}
    drawn = regularisers.draw_masks(regularisers.Rates(**active), keys, num_layers=num_layers,
                                    seq_len=T, batch_size=B, vocab_size=V, hidden_size=H,
                                    num_gates=cells.get_cell(arch).num_gates, dtype=dtype)
    fields = {"variational_dropout": "outputs", "recurrent_dropout": "recurrent",
              "weight_drop": "weights", "embedding_dropout": "embedding",
              "zoneout_hidden": "zoneout_hidden", "zoneout_cell": "zoneout_cell"}
    neutral = {}
    for name, field in fields.items():
        mask = getattr(drawn, field)
        if mask is not None and not getattr(rates, name):
            neutral[field] = (jnp.zeros_like(mask) if name.startswith("zoneout")
                              else jnp.ones_like(mask))
    return drawn._replace(**neutral)


@functools.partial(jax.jit, static_argnames=("arch", "backward"))
def _loss(params, state, masks, inputs, targets, *, arch, backward):
    return jaxrnn.loss_fn(params, inputs, targets, state, arch=arch, backward=backward,
                          masks=masks)[0]


_grads = jax.jit(jax.grad(_loss.__wrapped__, argnums=(0, 1)), static_argnames=("arch", "backward"))


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_manual_matches_autodiff_float64(x64, arch, num_layers, case):
    params, inputs, targets, state = _problem(arch, None, num_layers, True, jnp.float64)
    masks = _masks(arch, num_layers, _rates(arch, case))
    grads = {backward: _grads(params, state, masks, inputs, targets, arch=arch, backward=backward)
             for backward in ("manual", "autodiff")}
    assert jax.tree.structure(grads["manual"]) == jax.tree.structure(grads["autodiff"])
    _assert_all_below(_relative_errors(grads["manual"], grads["autodiff"]), 1e-10,
                      f"{arch} L={num_layers} {case}: manual vs autodiff")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_all_regularisers_match_central_differences_float64(x64, arch):
    params, inputs, targets, state = _problem(arch, None, 2, True, jnp.float64)
    masks = _masks(arch, 2, _rates(arch, "all"))
    loss = functools.partial(_loss, masks=masks, inputs=inputs, targets=targets, arch=arch,
                             backward="manual")
    for seed in range(2):
        direction = jax.tree.map(lambda leaf, k: jax.random.normal(k, leaf.shape, leaf.dtype),
                                 (params, state), _keys_like((params, state), 20 + seed))
        numeric = _finite_difference(loss, params, state, direction)
        for backward in ("manual", "autodiff"):
            grads = _grads(params, state, masks, inputs, targets, arch=arch, backward=backward)
            analytic = sum(jnp.vdot(g, d) for g, d in
                           zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), \
                f"{backward} vs finite differences along direction {seed}: {analytic} vs {numeric}"


def test_with_dropout_and_on_the_other_platforms_sweep_form(x64, monkeypatch):
    """All the regularisers with today's dropout on top (their output masks multiply), through
    `loss_fn`'s own key, in the sweeps' form for GPUs (stacked outputs, which
    `jax.lax.platform_dependent` never picks on the CPU): manual == autodiff, for every cell."""
    monkeypatch.setattr(scans, "by_platform",
                        lambda *args, cpu, default: default(*args))
    for arch in jaxrnn.ARCHS:
        params, inputs, targets, state = _problem(arch, None, 2, True, jnp.float64)
        masks = _masks(arch, 2, _rates(arch, "all"))
        grads = {}
        for backward in ("manual", "autodiff"):
            loss = lambda p, s: jaxrnn.loss_fn(p, inputs, targets, s, arch=arch,
                                               backward=backward, dropout=0.2, masks=masks,
                                               dropout_key=jax.random.key(9))[0]
            grads[backward] = jax.jit(jax.grad(loss, (0, 1)))(params, state)
        _assert_all_below(_relative_errors(grads["manual"], grads["autodiff"]), 1e-10,
                          f"{arch} with dropout, stacked sweeps")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the in-place sweep is the CPU form")
@pytest.mark.parametrize("arch,num_gates", [("lstm", 4), ("gru", 3)])
def test_backward_sweep_still_writes_over_the_gates_in_place(arch, num_gates):
    """With every regulariser on, the compiled manual gradient still holds one (T, B, G) buffer
    for the projection, the gates and the sweep's gradients (as test_gradients checks without)."""
    params, inputs, targets, state = _problem(arch, None, 1, True, jnp.float32)
    masks = _masks(arch, 1, _rates(arch, "all"), dtype=jnp.float32)
    # The ids are constants, as in test_gradients (passed as arguments, the gather's
    # out-of-bounds fill would show up as a zero-filled buffer of that shape).
    loss = lambda p, s: jaxrnn.loss_fn(p, inputs, targets, s, arch=arch, masks=masks)[0]
    hlo = jax.jit(jax.grad(loss)).lower(params, state).compile().as_text()
    shape = re.escape(f"f32[{T},{B},{num_gates * H}]")
    zero_filled = re.findall(rf"= {shape}\S* broadcast\([^)]*\), dimensions={{}}", hlo)
    copies = re.findall(rf"= {shape}\S* copy\(", hlo)
    assert not zero_filled and not copies, (zero_filled, copies)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
def test_masks_have_the_documented_shapes_values_and_rates():
    """Each mask has the shape of `mask_shapes` (no time axis where it is fixed over the window,
    no batch axis for weight-drop), its documented values, and its rate within 5 standard
    deviations of a binomial; every rate is different, so a mix-up of two shows."""
    rates = regularisers.Rates(variational_dropout=0.1, recurrent_dropout=0.2, weight_drop=0.3,
                               embedding_dropout=0.4, zoneout_hidden=0.15, zoneout_cell=0.35)
    sizes = dict(num_layers=2, seq_len=20, batch_size=16, vocab_size=30, hidden_size=12,
                 num_gates=4)
    keys = {name: jax.random.key(index) for index, name in enumerate(regularisers.NAMES)}
    masks = regularisers.draw_masks(rates, keys, dtype=jnp.float32, **sizes)
    shapes = regularisers.mask_shapes(**sizes)
    L, T_, B_, V_, H_ = 2, 20, 16, 30, 12
    assert shapes == WindowMasks(outputs=(L, 1, B_, H_), embedding=(B_, V_),
                                 weights=(L, H_, 4 * H_), recurrent=(L, B_, H_),
                                 zoneout_hidden=(L, T_, B_, H_), zoneout_cell=(L, T_, B_, H_))
    fields = {"variational_dropout": "outputs", "recurrent_dropout": "recurrent",
              "weight_drop": "weights", "embedding_dropout": "embedding",
              "zoneout_hidden": "zoneout_hidden", "zoneout_cell": "zoneout_cell"}
    for name, field in fields.items():
        rate, mask = getattr(rates, name), np.asarray(getattr(masks, field))
        assert mask.shape == getattr(shapes, field) and mask.dtype == np.float32, name
        if name.startswith("zoneout"):
            assert set(np.unique(mask)) == {0.0, 1.0}, name
            hit = mask == 1                                   # 1: the unit keeps its old value
        else:                            # inverted: the mean multiplier is 1
            scale = np.float32(1 / (1 - regularisers.rounded_rate(rate)))
            assert set(np.unique(mask)) == {0.0, scale}, name
            hit = mask == 0                                   # 0: dropped
        sigma = math.sqrt(rate * (1 - rate) / hit.size)
        assert abs(hit.mean() - rate) < 5 * sigma, (name, hit.mean(), rate)
    off = regularisers.draw_masks(rates._replace(weight_drop=0.0), keys, dtype=jnp.float32,
                                  **sizes)
    assert off.weights is None and off.recurrent is not None
    assert regularisers.draw_masks(regularisers.Rates(), {}, dtype=jnp.float32, **sizes) is None


def test_variational_masks_are_the_same_at_every_step():
    """Through the stack's forward: with variational dropout, each (stream, unit) of the output
    is dropped at every step of the window or at none."""
    config = config_lib.make_config(arch="gru", hidden_size=H, batch_size=B, seq_len=T,
                                    variational_dropout=0.5)
    params, inputs, _, _ = _problem("gru", None, 1, False, jnp.float32)
    masks = train.draw_window_masks(config, jax.random.key(4), V)
    outputs, _, _ = stack_forward(cells.get_cell("gru"), params["layers"], inputs.T,
                                  jaxrnn.init_state("gru", B, H), masks)
    dropped = np.asarray(outputs == 0)                                  # (T, B, H)
    assert 0 < dropped[0].mean() < 1
    np.testing.assert_array_equal(dropped, np.broadcast_to(dropped[0], dropped.shape))


@pytest.mark.parametrize("overrides,message", [
    ({"variational_dropout": 1.0}, "--variational_dropout must be in [0, 1)"),
    ({"recurrent_dropout": -0.1}, "--recurrent_dropout must be in [0, 1)"),
    ({"weight_drop": 1.5}, "--weight_drop must be in [0, 1)"),
    ({"embedding_dropout": 1.0}, "--embedding_dropout must be in [0, 1)"),
    ({"zoneout_hidden": 1.0}, "--zoneout_hidden must be in [0, 1)"),
    ({"zoneout_cell": 0.1, "arch": "gru"}, "--zoneout_cell applies to --arch=lstm only"),
])
def test_invalid_rates_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        config_lib.make_config(**overrides)
    assert "\n" not in str(error.value)


def test_masks_of_the_wrong_shape_are_refused():
    params, inputs, targets, _ = _problem("rnn", None, 1, False, jnp.float32)
    masks = WindowMasks(recurrent=jnp.ones((1, B + 1, H)))
    with pytest.raises(ConfigError, match=r"masks.recurrent has shape \(1, 4, 5\), expected"):
        jaxrnn.loss_fn(params, inputs, targets, arch="rnn", masks=masks)


# ---------------------------------------------------------------------------------------------
# Training draws its own masks; evaluation and sampling use none
# ---------------------------------------------------------------------------------------------
TEXT = "".join(f"{index}: to be, or not to be, that is the question.\n" for index in range(40))
VOCAB = data.build_vocab(TEXT)
ALL_LSTM = {name: RATE for name in regularisers.NAMES}


def _train_config(**overrides):
    values = dict(data="unused", arch="lstm", hidden_size=8, batch_size=3, seq_len=6,
                  num_steps=10, warmup_steps=0, dropout=0.0, random_offsets=False,
                  state_reset_probability=0.0, **ALL_LSTM)
    values.update(overrides)
    return config_lib.make_config(**values)


def _streams(config):
    return data.make_streams(data.encode(VOCAB, TEXT), config.batch_size, config.seq_len)


def test_train_step_draws_the_masks_of_its_step_streams():
    """The train step's loss is `loss_fn` on its window with the masks of
    `regularisers.draw_masks` from the step's keys (`train.STEP_MASK_STREAMS`): a function of
    the run's key and the step only, so that a resumed run draws the same."""
    config = _train_config(dropout=0.2)
    streams = _streams(config)
    step = jax.jit(train.make_train_step(config, data.num_windows(streams, config.seq_len)))
    state = train.init_train_state(config, len(VOCAB))
    state, _ = step(state, streams)                                    # now at step 1
    _, metrics = step(state, streams)
    step_key = train.stream_key(state.key, train.STREAM_STEP, 1)
    keys = {name: jax.random.fold_in(step_key, stream)
            for name, stream in train.STEP_MASK_STREAMS.items()}
    masks = regularisers.draw_masks(train.regulariser_rates(config), keys, num_layers=1,
                                    seq_len=6, batch_size=3, vocab_size=len(VOCAB),
                                    hidden_size=8, num_gates=4, dtype=jnp.float32)
    inputs, targets = data.get_window(streams, 1, config.seq_len)
    want, _ = jaxrnn.loss_fn(state.params, inputs, targets, state.model_state, arch="lstm",
                             dropout=0.2, masks=masks, zoneout=(RATE, RATE),
                             dropout_key=jax.random.fold_in(step_key, train.STEP_DROPOUT))
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-6)
    assert len(set(train.STEP_MASK_STREAMS.values())
               | {train.STEP_DROPOUT, train.STEP_STATE_RESET}) == 8     # distinct streams


def test_vmapped_runs_draw_their_own_masks():
    """Two runs of one vmapped program with identical parameters and data, differing only in
    their root key: their first losses differ (each drew its own masks), and each run is the
    run it would have been alone."""
    config = _train_config()
    streams = _streams(config)
    num_windows = data.num_windows(streams, config.seq_len)
    states = train.init_train_states(config, len(VOCAB), [0, 1])
    states = states._replace(params=jax.tree.map(lambda leaf: jnp.stack([leaf[0], leaf[0]]),
                                                 states.params),
                             opt_state=jax.tree.map(lambda leaf: jnp.stack([leaf[0], leaf[0]]),
                                                    states.opt_state))
    alone_state = jax.tree.map(lambda leaf: leaf[1], states)
    _, metrics = train.make_multi_seed_chunk(config, num_windows, 2)(states, streams)
    assert abs(float(metrics["loss"][0, 0] - metrics["loss"][1, 0])) > 1e-4
    _, alone = train.make_train_chunk(config, num_windows, 2)(alone_state, streams)
    np.testing.assert_allclose(metrics["loss"][1], alone["loss"], rtol=1e-5)


def test_evaluation_uses_none_of_the_dropout_type_masks():
    """The evaluation loss with every dropout-type regulariser (and dropout) on is the one
    without, bit for bit, and so is the sampler's cell."""
    dropouts = {name: RATE for name in ("variational_dropout", "recurrent_dropout",
                                        "weight_drop", "embedding_dropout")}
    plain = _train_config(**{name: 0.0 for name in regularisers.NAMES})
    regularised = _train_config(dropout=0.3, **{**{name: 0.0 for name in regularisers.NAMES},
                                               **dropouts})
    params = train.init_train_state(plain, len(VOCAB)).params
    streams = _streams(plain)
    assert float(train.make_evaluate(regularised)(params, streams)) == \
        float(train.make_evaluate(plain)(params, streams))
    assert regularised.cell == plain.cell


def _expected_zoneout_forward(params, ids, arch, rates):
    """Log-probabilities (B, T, V) of the expectation written out: each layer's plain step gives
    the new values (h~, c~) from the carried state, then ``x = p x_{t-1} + (1 - p) x~``."""
    plain = cells.get_cell(arch)
    p_h, p_c = rates
    x = ids.T                                                            # (T, B)
    for layer in params["layers"]:
        carry, outputs = plain.zero_carry(ids.shape[0], H, jnp.float64), []
        for t in range(x.shape[0]):
            new, (h_new, _) = plain.forward_step(layer, carry, cells.project_inputs(plain, layer,
                                                                                   x[t]))
            if arch == "lstm":
                carry = type(carry)(p_h * carry.hidden + (1 - p_h) * h_new,
                                    p_c * carry.cell + (1 - p_c) * new.cell)
                outputs.append(carry.hidden)
            else:
                carry = p_h * carry + (1 - p_h) * h_new
                outputs.append(carry)
        x = jnp.stack(outputs)
    return jnp.swapaxes(model.output_log_probs(params, x), 0, 1)


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_zoneout_evaluation_and_sampling_use_the_expectation(x64, arch):
    """`forward_log_probs` (what `make_evaluate` runs) and chained `model_step` (what the sampler
    runs) with zoneout rates equal the expectation written out by hand, and differ from the
    model without zoneout; `Config.cell` hands the rates to both."""
    rates = (0.3, 0.6 if arch == "lstm" else 0.0)
    config = _train_config(arch=arch, dtype="float64",
                           **{**{name: 0.0 for name in regularisers.NAMES},
                              "zoneout_hidden": rates[0], "zoneout_cell": rates[1]})
    assert config.cell.zoneout == rates
    params, inputs, _, _ = _problem(arch, None, 2, False, jnp.float64)
    want = _expected_zoneout_forward(params, inputs, arch, rates)
    got, _ = model.forward_log_probs(params, inputs, arch=arch, zoneout=rates)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    plain, _ = model.forward_log_probs(params, inputs, arch=arch)
    assert np.abs(np.asarray(plain - want)).max() > 1e-3
    state = jaxrnn.init_state(arch, B, H, 2, jnp.float64)
    for t in range(T):
        state, logits = model.model_step(params, state, inputs[:, t], arch=arch, zoneout=rates)
        np.testing.assert_allclose(jax.nn.log_softmax(logits), want[:, t], rtol=1e-12,
                                   atol=1e-12)
