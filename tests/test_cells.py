"""Cell steps against independent NumPy formulas, scan against a Python loop, initialisers, and
the public entry points' one conversion of ``arch`` into a Cell (`jaxrnn.cells.takes_arch`)."""
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import cells, diagnostics, gradient_flow, model, sample
from jaxrnn.types import LSTMState

B, I, H, T = 3, 4, 5, 6


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _random_params(arch, key=0):
    params = cells.get_cell(arch).init(jax.random.key(key), I, H, "scaled_normal", jnp.float32)
    # Non-zero biases so that every bias term is exercised.
    return {name: value + 0.1 * jax.random.normal(jax.random.key(key + 1), value.shape)
            for name, value in params.items()}


def _numpy_step(arch, params, carry, x, activation="tanh"):
    """The issue's equations written out in NumPy, independently of the library."""
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    if arch == "rnn":
        act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": _sigmoid,
               "identity": lambda a: a}[activation]
        h = act(x @ p["W_xh"] + carry @ p["W_hh"] + p["b_h"])
        return h, h
    if arch == "lstm":
        h_prev, c_prev = carry
        a = x @ p["W_x"] + h_prev @ p["W_h"] + p["b"]
        i, f, g, o = np.split(a, 4, axis=-1)
        c = _sigmoid(f) * c_prev + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h, c), h
    gx = x @ p["W_x"] + p["b_x"]
    gh = carry @ p["W_h"] + p["b_h"]
    r = _sigmoid(gx[:, :H] + gh[:, :H])
    z = _sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
    h = (1 - z) * n + z * carry
    return h, h


@pytest.mark.parametrize("arch,activation", [("rnn", "tanh"), ("rnn", "relu"),
                                             ("rnn", "sigmoid"), ("rnn", "identity"),
                                             ("lstm", None), ("gru", None)])
def test_step_matches_numpy_equations(arch, activation):
    params = _random_params(arch)
    x = np.random.default_rng(0).normal(size=(B, I)).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(B, H)).astype(np.float32)
    c0 = np.random.default_rng(2).normal(size=(B, H)).astype(np.float32)
    if arch == "lstm":
        carry, expected_carry = LSTMState(h0, c0), (h0, c0)
        new_carry, h = jaxrnn.lstm_step(params, carry, x)
    elif arch == "gru":
        carry = expected_carry = h0
        new_carry, h = jaxrnn.gru_step(params, carry, x)
    else:
        carry = expected_carry = h0
        new_carry, h = jaxrnn.rnn_step(params, carry, x, activation=activation)
    expected_new_carry, expected_h = _numpy_step(arch, params, expected_carry, x, activation)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(new_carry), jax.tree.leaves(expected_new_carry)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
@pytest.mark.parametrize("backward", ["manual", "autodiff"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_unroll_matches_python_loop(arch, backward, num_layers):
    cell = cells.get_cell(arch)
    keys = jax.random.split(jax.random.key(3), num_layers)
    layers = [cell.init(keys[index], I if index == 0 else H, H, "orthogonal", jnp.float32)
              for index in range(num_layers)]
    xs = jax.random.normal(jax.random.key(4), (T, B, I))
    state = tuple(jax.tree.map(lambda leaf: leaf + 0.3, cell.zero_carry(B, H, jnp.float32))
                  for _ in range(num_layers))
    hiddens, final_state = jaxrnn.unroll(layers, xs, state, arch=arch, backward=backward)
    step = cells.make_step(cell)
    x = xs
    for index in range(num_layers):
        carry, outputs = state[index], []
        for t in range(T):
            carry, h = step(layers[index], carry, x[t])
            outputs.append(h)
        x = jnp.stack(outputs)
        for got, want in zip(jax.tree.leaves(final_state[index]), jax.tree.leaves(carry)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hiddens, x, rtol=1e-5, atol=1e-6)


def test_unroll_defaults_to_zero_state():
    cell = cells.get_cell("lstm")
    layers = [cell.init(jax.random.key(0), I, H, "orthogonal", jnp.float32)]
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    zero = (cell.zero_carry(B, H, jnp.float32),)
    np.testing.assert_array_equal(jaxrnn.unroll(layers, xs, arch="lstm")[0],
                                  jaxrnn.unroll(layers, xs, zero, arch="lstm")[0])


@pytest.mark.parametrize("arch,names,gates", [
    ("rnn", {"W_xh": (7, 8), "W_hh": (8, 8), "b_h": (8,)}, 1),
    ("lstm", {"W_x": (7, 32), "W_h": (8, 32), "b": (32,)}, 4),
    ("gru", {"W_x": (7, 24), "W_h": (8, 24), "b_x": (24,), "b_h": (24,)}, 3)])
def test_init_params_names_and_shapes(arch, names, gates):
    params = jaxrnn.init_params(jax.random.key(0), arch, 7, 8, num_layers=2)
    assert set(params) == {"layers", "W_hy", "b_y"}
    assert params["W_hy"].shape == (8, 7) and params["b_y"].shape == (7,)
    assert {name: value.shape for name, value in params["layers"][0].items()} == names
    upper = {name: (8, shape[1]) if name.startswith("W_x") else shape
             for name, shape in names.items()}
    assert {name: value.shape for name, value in params["layers"][1].items()} == upper
    state = jaxrnn.init_state(arch, 3, 8, num_layers=2)
    assert len(state) == 2
    assert all(leaf.shape == (3, 8) for leaf in jax.tree.leaves(state))


def test_lstm_forget_bias_is_one_and_others_zero():
    bias = jaxrnn.init_params(jax.random.key(0), "lstm", 7, 8)["layers"][0]["b"]
    np.testing.assert_array_equal(bias[8:16], 1.0)
    np.testing.assert_array_equal(bias[:8], 0.0)
    np.testing.assert_array_equal(bias[16:], 0.0)


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_recurrent_initialisers(arch):
    ortho = jaxrnn.init_params(jax.random.key(0), arch, 7, 16)["layers"][0]
    recurrent = ortho["W_hh" if arch == "rnn" else "W_h"]
    for block in jnp.split(recurrent, recurrent.shape[1] // 16, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(16), atol=1e-5)
    identity = jaxrnn.init_params(jax.random.key(0), arch, 7, 16,
                                  recurrent_init="identity")["layers"][0]
    recurrent = identity["W_hh" if arch == "rnn" else "W_h"]
    for block in jnp.split(recurrent, recurrent.shape[1] // 16, axis=1):
        np.testing.assert_array_equal(block, np.eye(16))
    normal = jaxrnn.init_params(jax.random.key(0), arch, 7, 64,
                                recurrent_init="scaled_normal")["layers"][0]
    recurrent = normal["W_hh" if arch == "rnn" else "W_h"]
    assert 0.8 / 8 < float(jnp.std(recurrent)) < 1.2 / 8


@pytest.mark.parametrize("kwargs,message", [
    ({"arch": "transformer"}, "unknown arch"),
    ({"arch": "rnn", "activation": "swish"}, "unknown activation"),
    ({"arch": "lstm", "activation": "relu"}, "arch=rnn only"),
    ({"arch": "rnn", "recurrent_init": "zeros"}, "unknown recurrent_init"),
    ({"arch": "gru", "hidden_size": 0}, "hidden_size must be an integer >= 1"),
])
def test_bad_options_raise_config_error(kwargs, message):
    arguments = {"vocab_size": 7, "hidden_size": 8, **kwargs}
    with pytest.raises(jaxrnn.ConfigError, match=message):
        jaxrnn.init_params(jax.random.key(0), **arguments)


# ---------------------------------------------------------------------------------------------
# The entry points' one conversion: a name (with its options) or the Cell, the same model
# ---------------------------------------------------------------------------------------------
V, VOCAB = 7, "abcdefg"
unroll_module = importlib.import_module("jaxrnn.unroll")


def _entry_points(params, state, ids):
    """{name: (entry point, call(entry point, arch, **options))} for every public function that
    takes ``arch``, on a one-layer model of V = 7 characters and H = 5 units."""
    key = jax.random.key(0)
    return {
        "init_params": (model.init_params, lambda f, arch, **o: f(key, arch, V, H, **o)),
        "init_state": (model.init_state, lambda f, arch, **o: f(arch, B, H)),
        "loss_fn": (model.loss_fn, lambda f, arch, **o: f(params, ids, ids, state, arch=arch,
                                                           **o)),
        "forward_log_probs": (model.forward_log_probs, lambda f, arch, **o: f(
            params, ids, state, arch=arch, **o)),
        "model_step": (model.model_step, lambda f, arch, **o: f(params, state, ids[:, 0],
                                                                 arch=arch, **o)),
        "make_sampler": (sample.make_sampler, lambda f, arch, **o: f(
            arch=arch, length=3, num_samples=2, **o)),
        "sample_text": (sample.sample_text, lambda f, arch, **o: f(
            params, arch=arch, vocab=VOCAB, key=key, prime="ab", length=3, **o)),
        "projection_gradients": (gradient_flow.projection_gradients, lambda f, arch, **o: f(
            params, ids, ids, arch=arch, **o)),
        "fresh_model": (gradient_flow.fresh_model, lambda f, arch, **o: f(V, H, arch=arch, **o)),
        "unroll": (unroll_module.unroll, lambda f, arch, **o: f(
            params["layers"], jax.random.normal(key, (T, B, V)), state, arch=arch, **o)),
        "resolve": (cells.resolve, lambda f, arch, **o: f(arch, **o)),
    }


def _small_model(arch, options):
    cell = cells.get_cell(arch, **options)
    params = jaxrnn.init_params(jax.random.key(1), cell, V, H)
    state = jaxrnn.init_state(cell, B, H)
    ids = jax.random.randint(jax.random.key(2), (B, T), 0, V)
    return params, state, ids


def _assert_same(got, want):
    got_leaves, got_tree = jax.tree.flatten(got)
    want_leaves, want_tree = jax.tree.flatten(want)
    assert got_tree == want_tree
    for got_leaf, want_leaf in zip(got_leaves, want_leaves):
        if isinstance(got_leaf, (jax.Array, np.ndarray, float, int)):
            np.testing.assert_array_equal(got_leaf, want_leaf)
        else:                                   # a Cell's functions, a cached sampler, a string
            assert got_leaf == want_leaf


@pytest.mark.parametrize("arch,options", [
    ("rnn", {"activation": "relu"}), ("lstm", {"zoneout": (0.1, 0.2)}),
    ("gru", {"matmul_dtype": "bfloat16"})])
def test_an_entry_point_given_a_name_or_its_cell_gives_the_same(arch, options):
    params, state, ids = _small_model(arch, options)
    for name, (entry_point, call) in _entry_points(params, state, ids).items():
        accepted = {option: value for option, value in options.items()
                    if option in inspect.signature(entry_point).parameters}
        cell = cells.get_cell(arch, **accepted)
        by_name = call(entry_point, arch, **accepted)
        _assert_same(by_name, call(entry_point, cell))
        if name == "resolve":
            assert by_name == cell


def test_takes_arch_is_the_one_conversion(monkeypatch):
    """Each entry point converts a name once (one `get_cell`, in `takes_arch`, however many
    entry points it calls), a Cell not at all, and keeps its signature and docstring."""
    params, state, ids = _small_model("lstm", {})
    calls = []
    get_cell = cells.get_cell
    monkeypatch.setattr(cells, "get_cell", lambda *args, **kwargs: calls.append(args) or
                        get_cell(*args, **kwargs))
    entry_points = _entry_points(params, state, ids)
    entry_points["gradient_check"] = (diagnostics.gradient_check, lambda f, arch, **o: f(
        arch=arch, dtype=jnp.float32, vocab_size=V, hidden_size=H, seq_len=3, batch_size=B,
        num_directions=1, repeats=1))
    for name, (entry_point, call) in entry_points.items():
        wrapped = entry_point.__wrapped__                       # decorated by takes_arch
        assert inspect.signature(entry_point) == inspect.signature(wrapped), name
        assert entry_point.__doc__ == wrapped.__doc__ and entry_point.__name__ == wrapped.__name__
        del calls[:]
        call(entry_point, "lstm")
        assert calls == [("lstm",)], name
        del calls[:]
        call(entry_point, get_cell("lstm"))
        assert calls == [], name
    for step, arch in ((jaxrnn.rnn_step, "rnn"), (jaxrnn.lstm_step, "lstm"),
                       (jaxrnn.gru_step, "gru")):
        cell = get_cell(arch)
        del calls[:]
        step(cell.init(jax.random.key(0), I, H, "orthogonal", jnp.float32),
             cell.zero_carry(B, H, jnp.float32), jnp.ones((B, I)))
        assert [args[0] for args in calls] == [arch]


def test_a_wrong_call_keeps_pythons_own_message():
    params, state, ids = _small_model("lstm", {})
    with pytest.raises(TypeError, match=r"^loss_fn\(\) missing 1 required keyword-only "
                                        r"argument: 'arch'$"):
        jaxrnn.loss_fn(params, ids, ids)
    with pytest.raises(TypeError, match=r"^init_params\(\) got an unexpected keyword argument "
                                        r"'hidden'$"):
        jaxrnn.init_params(jax.random.key(0), "lstm", V, hidden=H)
