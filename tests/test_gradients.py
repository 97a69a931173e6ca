"""The hand-written BPTT against jax.grad (float64 round-off) and central finite differences.

The triad of the style guide: scan == Python loop lives in test_cells.py; here manual == autodiff
to <= 1e-10 relative in float64 on every parameter and the initial state, both within 1e-6 of
central finite differences along random directions, and a stated float32 tolerance. Errors are
reported per argument (pytree path) so that a failure names the gradient that is wrong.
"""
import ast
import inspect
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import cells, matmuls, model, regularisers, scans, unroll

V, H, B, T = 7, 5, 3, 6
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("rnn", "identity"),
         ("lstm", None), ("gru", None)]


def _problem(arch, activation, num_layers, with_state, dtype):
    params = jaxrnn.init_params(jax.random.key(0), arch, V, H, num_layers, dtype=dtype,
                                activation=activation)
    # Non-zero biases and a shifted readout so that no gradient is trivially zero.
    params = jax.tree.map(lambda leaf, k: leaf + 0.1 * jax.random.normal(k, leaf.shape, dtype),
                          params, _keys_like(params, 1))
    ids = jax.random.randint(jax.random.key(2), (B, T + 1), 0, V)
    state = None
    if with_state:
        zeros = jaxrnn.init_state(arch, B, H, num_layers, dtype)
        state = jax.tree.map(lambda leaf, k: 0.5 * jax.random.normal(k, leaf.shape, dtype),
                             zeros, _keys_like(zeros, 3))
    return params, ids[:, :-1], ids[:, 1:], state


def _keys_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(jax.random.key(seed), len(leaves))))


def _loss(arch, activation, backward, inputs, targets):
    def loss(params, state):
        value, final_state = jaxrnn.loss_fn(params, inputs, targets, state, arch=arch,
                                            backward=backward, activation=activation)
        return value
    return loss


def _relative_errors(got, want):
    """Per-leaf max|got - want| / max|want|, keyed by pytree path."""
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    want_leaves = jax.tree.leaves(want)
    return {jax.tree_util.keystr(path): float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w)))
            for (path, g), w in zip(got_leaves, want_leaves)}


def _assert_all_below(errors, tolerance, what):
    bad = {name: error for name, error in errors.items() if not error <= tolerance}
    assert not bad, f"{what}: relative error above {tolerance:g} for {bad}"


def _finite_difference(loss, params, state, direction, epsilon=1e-5):
    shifted = lambda sign: jax.tree.map(lambda p, d: p + sign * epsilon * d, (params, state),
                                        direction)
    return (loss(*shifted(+1)) - loss(*shifted(-1))) / (2 * epsilon)


@pytest.mark.parametrize("arch,activation", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True])
def test_manual_matches_autodiff_and_finite_differences_float64(x64, arch, activation,
                                                                num_layers, with_state):
    params, inputs, targets, state = _problem(arch, activation, num_layers, with_state,
                                              jnp.float64)
    manual = _loss(arch, activation, "manual", inputs, targets)
    autodiff = _loss(arch, activation, "autodiff", inputs, targets)
    argnums = (0, 1) if with_state else 0
    grads_manual = jax.jit(jax.grad(manual, argnums))(params, state)
    grads_autodiff = jax.jit(jax.grad(autodiff, argnums))(params, state)
    assert jax.tree.structure(grads_manual) == jax.tree.structure(grads_autodiff)
    _assert_all_below(_relative_errors(grads_manual, grads_autodiff), 1e-10, "manual vs autodiff")

    if not with_state:
        grads_manual, grads_autodiff = (grads_manual, None), (grads_autodiff, None)
    manual_jit = jax.jit(manual)
    for seed in range(3):
        direction = jax.tree.map(lambda leaf, k: jax.random.normal(k, leaf.shape, leaf.dtype),
                                 (params, state), _keys_like((params, state), 10 + seed))
        numeric = _finite_difference(manual_jit, params, state, direction)
        for name, grads in (("manual", grads_manual), ("autodiff", grads_autodiff)):
            analytic = sum(jnp.vdot(g, d) for g, d in
                           zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), \
                f"{name} vs finite differences along direction {seed}: {analytic} vs {numeric}"


@pytest.mark.parametrize("arch,activation", CELLS)
def test_manual_matches_autodiff_float32(arch, activation):
    """float32: the two paths sum the same products in different orders (one (N, H) x (N, G) GEMM
    against T accumulated (B, H) x (B, G) ones), so they differ by round-off that grows with the
    number of terms. With ~T*B = 18 terms of unit-order values, eps_32 * 18 ~ 2e-6; we test
    2e-5 relative to each leaf's largest entry, an order of magnitude of headroom, far below
    what any real error would give (a wrong term is O(1) relative)."""
    params, inputs, targets, state = _problem(arch, activation, 2, True, jnp.float32)
    grads = {backward: jax.jit(jax.grad(_loss(arch, activation, backward, inputs, targets),
                                        (0, 1)))(params, state)
             for backward in ("manual", "autodiff")}
    _assert_all_below(_relative_errors(grads["manual"], grads["autodiff"]), 2e-5, "float32")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_final_state_cotangent_flows_back(x64, arch):
    """A loss that also uses the final state: d(final state) must enter the reverse sweep."""
    params, inputs, targets, state = _problem(arch, None, 2, True, jnp.float64)

    def objective(backward):
        def value(params, state):
            loss, final_state = jaxrnn.loss_fn(params, inputs, targets, state, arch=arch,
                                               backward=backward)
            return loss + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final_state))
        return value

    grads_manual = jax.grad(objective("manual"), (0, 1))(params, state)
    grads_autodiff = jax.grad(objective("autodiff"), (0, 1))(params, state)
    _assert_all_below(_relative_errors(grads_manual, grads_autodiff), 1e-10, "final state")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_dropout_gradients_match(x64, arch):
    params, inputs, targets, state = _problem(arch, None, 2, True, jnp.float64)
    grads = {}
    for backward in ("manual", "autodiff"):
        loss = lambda p: jaxrnn.loss_fn(p, inputs, targets, state, arch=arch, backward=backward,
                                        dropout=0.3, dropout_key=jax.random.key(7))[0]
        grads[backward] = jax.grad(loss)(params)
    _assert_all_below(_relative_errors(grads["manual"], grads["autodiff"]), 1e-10, "dropout")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_float_input_unroll_gradients(x64, arch):
    """The custom_vjp on the stack unroll gives cotangents for params, inputs and initial state."""
    cell = cells.get_cell(arch)
    layers = [cell.init(jax.random.key(index), 4 if index == 0 else H, H, "orthogonal",
                        jnp.float64) for index in range(2)]
    xs = jax.random.normal(jax.random.key(5), (T, B, 4), jnp.float64)
    state = jax.tree.map(lambda leaf: leaf + 0.2,
                         tuple(cell.zero_carry(B, H, jnp.float64) for _ in layers))
    weights = jax.random.normal(jax.random.key(6), (T, B, H), jnp.float64)

    def objective(backward):
        def value(layers, xs, state):
            hiddens, final_state = jaxrnn.unroll(layers, xs, state, arch=arch, backward=backward)
            return jnp.sum(hiddens * weights) + sum(jnp.sum(leaf ** 2)
                                                     for leaf in jax.tree.leaves(final_state))
        return value

    grads_manual = jax.grad(objective("manual"), (0, 1, 2))(layers, xs, state)
    grads_autodiff = jax.grad(objective("autodiff"), (0, 1, 2))(layers, xs, state)
    _assert_all_below(_relative_errors(grads_manual, grads_autodiff), 1e-10, "unroll")


def test_manual_path_really_is_used(monkeypatch):
    """The manual gradient goes through the custom_vjp and the hand-written sweep; autodiff not."""
    params, inputs, targets, state = _problem("lstm", None, 1, True, jnp.float32)
    forward_jaxprs = {backward: str(jax.make_jaxpr(
        _loss("lstm", None, backward, inputs, targets))(params, state))
        for backward in ("manual", "autodiff")}
    assert "custom_vjp_call" in forward_jaxprs["manual"]
    assert "custom_vjp_call" not in forward_jaxprs["autodiff"]

    calls = []
    original = model.stack_backward
    monkeypatch.setattr(model, "stack_backward",
                        lambda *args: calls.append(1) or original(*args))
    jax.make_jaxpr(jax.grad(_loss("lstm", None, "autodiff", inputs, targets)))(params, state)
    assert not calls
    jax.make_jaxpr(jax.grad(_loss("lstm", None, "manual", inputs, targets)))(params, state)
    assert calls


def test_manual_unroll_really_is_used(monkeypatch):
    """`jaxrnn.unroll(backward="manual")` is a custom_vjp whose backward is the hand-written sweep
    (the float-input twin of the guard above); with "autodiff" neither is involved."""
    cell = cells.get_cell("gru")
    layers = [cell.init(jax.random.key(index), 4 if index == 0 else H, H, "orthogonal",
                        jnp.float32) for index in range(2)]
    xs = jax.random.normal(jax.random.key(5), (T, B, 4), jnp.float32)

    def objective(backward):
        return lambda layers, xs: jnp.sum(
            jaxrnn.unroll(layers, xs, arch="gru", backward=backward)[0] ** 2)

    forward_jaxprs = {backward: str(jax.make_jaxpr(objective(backward))(layers, xs))
                      for backward in ("manual", "autodiff")}
    assert "custom_vjp_call" in forward_jaxprs["manual"]
    assert "custom_vjp_call" not in forward_jaxprs["autodiff"]

    calls = []
    unroll_module = sys.modules["jaxrnn.unroll"]    # `jaxrnn.unroll` is the function
    original = unroll_module.stack_backward
    monkeypatch.setattr(unroll_module, "stack_backward",
                        lambda *args: calls.append(1) or original(*args))
    jax.make_jaxpr(jax.grad(objective("autodiff"), (0, 1)))(layers, xs)
    assert not calls
    jax.make_jaxpr(jax.grad(objective("manual"), (0, 1)))(layers, xs)
    assert calls


def test_manual_path_has_no_automatic_differentiation():
    """Source check: the modules of the manual path never use JAX's differentiation APIs
    (attribute access such as ``jax.grad`` or an import of the name; docstrings may mention them)."""
    forbidden = {"grad", "value_and_grad", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian"}
    for module in (cells, scans, matmuls, unroll, model, regularisers):
        tree = ast.parse(inspect.getsource(module))
        found = [node.attr for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr in forbidden]
        found += [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  for alias in node.names if alias.name in forbidden]
        assert not found, f"{module.__name__} uses {found}"


@pytest.mark.parametrize("arch,activation", [("rnn", "tanh"), ("lstm", None), ("gru", None)])
def test_other_platforms_sweep_form_matches_autodiff_float64(x64, monkeypatch, arch, activation):
    """The sweeps' form for GPUs (stacked outputs instead of writing over the gates), which
    `jax.lax.platform_dependent` never picks on the CPU, forced here: manual == autodiff."""
    chosen = []

    def default_form(*args, cpu, default):
        chosen.append(default)
        return default(*args)

    monkeypatch.setattr(scans, "by_platform", default_form)
    params, inputs, targets, state = _problem(arch, activation, 2, True, jnp.float64)
    grads = {backward: jax.jit(jax.grad(_loss(arch, activation, backward, inputs, targets),
                                        (0, 1)))(params, state)
             for backward in ("manual", "autodiff")}
    assert len(chosen) == 2, "one sweep per layer should have taken the non-CPU form"
    _assert_all_below(_relative_errors(grads["manual"], grads["autodiff"]), 1e-10,
                      "stacked sweep vs autodiff")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the in-place sweep is the CPU form")
@pytest.mark.parametrize("arch,num_gates", [("lstm", 4), ("gru", 3)])
def test_backward_sweep_writes_over_the_gates_in_place(arch, num_gates):
    """On the CPU the compiled manual gradient holds one (T, B, G) buffer for the input
    projection, the gates and then the sweep's pre-activation gradients: no zero-filled second
    one (a scan's stacked output) and no copy of it (what XLA makes when a row is read after its
    overwrite)."""
    params, inputs, targets, state = _problem(arch, None, 1, True, jnp.float32)
    grad = jax.jit(jax.grad(_loss(arch, None, "manual", inputs, targets)))
    hlo = grad.lower(params, state).compile().as_text()
    shape = re.escape(f"f32[{T},{B},{num_gates * H}]")
    zero_filled = re.findall(rf"= {shape}\S* broadcast\([^)]*\), dimensions={{}}", hlo)
    copies = re.findall(rf"= {shape}\S* copy\(", hlo)
    assert not zero_filled and not copies, (zero_filled, copies)


# ---------------------------------------------------------------------------------------------
# bfloat16 matmuls with float32 accumulation (matmul_dtype="bfloat16")
# ---------------------------------------------------------------------------------------------
def test_matmul_rounds_both_operands_to_bfloat16_and_accumulates_in_float32():
    a = jax.random.normal(jax.random.key(0), (4, 64), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (64, 3), jnp.float32)
    rounded = (a.astype(jnp.bfloat16).astype(jnp.float32)
               @ b.astype(jnp.bfloat16).astype(jnp.float32))
    product = matmuls.matmul(a, b, "bfloat16")
    assert product.dtype == jnp.float32
    np.testing.assert_allclose(product, rounded, rtol=1e-5, atol=1e-5)
    assert np.abs(product - a @ b).max() > 1e-3       # the rounding happened
    np.testing.assert_array_equal(matmuls.matmul(a, b), a @ b)


@pytest.mark.parametrize("arch,activation", [("rnn", "tanh"), ("lstm", None), ("gru", None)])
def test_bf16_matmul_manual_gradient_agrees_with_autodiff(arch, activation):
    """Both backwards differentiate the same bfloat16-matmul forward (identical losses); they
    round different cotangents to bfloat16, so they agree to a few bfloat16 epsilons (2^-8),
    and both move away from the float32 gradient by about as much."""
    params, inputs, targets, state = _problem(arch, activation, 2, True, jnp.float32)
    results = {}
    for backward in ("manual", "autodiff"):
        for matmul_dtype in (None, "bfloat16"):
            def loss(p, s):
                return jaxrnn.loss_fn(p, inputs, targets, s, arch=arch, backward=backward,
                                      activation=activation, matmul_dtype=matmul_dtype)[0]
            value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, state)
            results[backward, matmul_dtype] = (float(value), _flat(grads))
    assert results["manual", "bfloat16"][0] == results["autodiff", "bfloat16"][0]
    assert results["manual", "bfloat16"][0] != results["manual", None][0]
    manual, autodiff = results["manual", "bfloat16"][1], results["autodiff", "bfloat16"][1]
    exact = results["autodiff", None][1]
    assert _rel(manual, autodiff) < 2e-2
    assert 1e-4 < _rel(manual, exact) < 3e-2


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
