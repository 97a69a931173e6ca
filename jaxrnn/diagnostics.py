"""Tools that compare the two backward modes and look inside BPTT.

These functions *use* JAX's differentiation on purpose (they measure it); the manual path in
`jaxrnn.cells`, `jaxrnn.unroll` and `jaxrnn.model` never does.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import model
from jaxrnn.cells import takes_arch


def residual_bytes(fn, *primals):
    """Bytes of the residuals ``jax.vjp(fn, *primals)`` keeps for the backward pass.

    The residuals are the array leaves of the returned VJP closure (for a ``custom_vjp`` they are
    what its forward saved; for autodiff, what JAX's linearisation saved), each array counted once
    even when it is saved twice. Parameters count too: both modes keep them.
    """
    _, vjp_fn = jax.vjp(fn, *primals)
    unique = {id(leaf): leaf for leaf in jax.tree.leaves(vjp_fn) if hasattr(leaf, "nbytes")}
    return sum(int(leaf.nbytes) for leaf in unique.values())


def _tree_vdot(tree_a, tree_b):
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def _median_seconds(function, *args, repeats=5):
    jax.block_until_ready(function(*args))                   # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@takes_arch
def gradient_check(*, arch, activation=None, vocab_size=11, hidden_size=32, seq_len=20,
                   batch_size=8, num_layers=1, dtype=jnp.float64, seed=0, num_directions=3,
                   epsilon=None, repeats=5):
    """Compare the manual and autodiff gradients of `jaxrnn.loss_fn` with each other and with
    central finite differences along random directions.

    The gradient is taken with respect to the parameters and a random initial state. Finite
    differences: ``(L(p + e d) - L(p - e d)) / 2e`` against ``<grad, d>`` for random ``d`` of
    unit norm over the whole (params, state) tree. The error is reported relative to the gradient
    norm ``|<grad, d> - fd| / ||grad||`` (the largest directional derivative there is), because a
    random direction in ~1e5 dimensions is nearly orthogonal to the gradient and ``<grad, d>``
    itself is tiny. ``e`` defaults to 1e-4 in float64 (truncation ~e^2, round-off ~1e-16/e) but
    1e-6 for the ReLU RNN, whose kinks a larger step would cross; 1e-2 in float32.

    Returns a dict: max_abs / max_rel (manual vs autodiff, relative to each leaf's largest
    entry, the worst leaf), fd_rel_manual / fd_rel_autodiff (worst finite-difference error, relative
    to the gradient norm), seconds_manual / seconds_autodiff (one jitted gradient after compilation, median),
    residual_bytes_manual / residual_bytes_autodiff, and worst_leaf (the pytree path of max_rel).
    """
    dtype = jnp.dtype(dtype)
    cell = arch                             # a Cell with the activation in it (`takes_arch`)
    epsilon = epsilon or (1e-2 if dtype != jnp.float64 else 1e-6 if cell.activation == "relu"
                          else 1e-4)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = model.init_params(keys[0], cell, vocab_size, hidden_size, num_layers, dtype=dtype)
    ids = jax.random.randint(keys[1], (batch_size, seq_len + 1), 0, vocab_size)
    state = jax.tree.map(lambda leaf: 0.5 * jax.random.normal(keys[2], leaf.shape, dtype),
                         model.init_state(cell, batch_size, hidden_size, num_layers, dtype))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def loss(backward):
        return lambda params, state: model.loss_fn(params, inputs, targets, state, arch=cell,
                                                   backward=backward)[0]

    grad_fns = {mode: jax.jit(jax.grad(loss(mode), (0, 1))) for mode in ("manual", "autodiff")}
    grads = {mode: fn(params, state) for mode, fn in grad_fns.items()}
    errors = {jax.tree_util.keystr(path): (float(jnp.max(jnp.abs(m - a))),
                                           float(jnp.max(jnp.abs(m - a)) / jnp.max(jnp.abs(a))))
              for (path, m), a in zip(jax.tree_util.tree_flatten_with_path(grads["manual"])[0],
                                      jax.tree.leaves(grads["autodiff"]))}
    worst_leaf = max(errors, key=lambda name: errors[name][1])

    loss_manual = jax.jit(loss("manual"))
    fd_rel = {"manual": 0.0, "autodiff": 0.0}
    grad_norm = float(jnp.sqrt(_tree_vdot(grads["autodiff"], grads["autodiff"])))
    for index in range(num_directions):
        direction = jax.tree.map(
            lambda leaf: jax.random.normal(jax.random.fold_in(keys[3], index), leaf.shape, dtype),
            (params, state))
        norm = jnp.sqrt(_tree_vdot(direction, direction))
        direction = jax.tree.map(lambda leaf: leaf / norm, direction)
        shifted = [jax.tree.map(lambda p, d: p + sign * epsilon * d, (params, state), direction)
                   for sign in (1, -1)]
        numeric = float((loss_manual(*shifted[0]) - loss_manual(*shifted[1])) / (2 * epsilon))
        for mode in fd_rel:
            analytic = float(_tree_vdot(grads[mode], direction))
            fd_rel[mode] = max(fd_rel[mode], abs(analytic - numeric) / grad_norm)

    return {
        "arch": cell.label,
        "max_abs": max(abs_error for abs_error, _ in errors.values()),
        "max_rel": errors[worst_leaf][1], "worst_leaf": worst_leaf,
        "fd_rel_manual": fd_rel["manual"], "fd_rel_autodiff": fd_rel["autodiff"],
        "seconds_manual": _median_seconds(grad_fns["manual"], params, state, repeats=repeats),
        "seconds_autodiff": _median_seconds(grad_fns["autodiff"], params, state, repeats=repeats),
        "residual_bytes_manual": residual_bytes(loss("manual"), params, state),
        "residual_bytes_autodiff": residual_bytes(loss("autodiff"), params, state),
    }


def train_both_modes(config, streams, vocab_size, num_steps, *, round_off_floor=False):
    """``config`` trained once with each backward from the same seed and data:
    ``{backward: (per-step loss (num_steps,), trained params)}``.

    With ``round_off_floor`` also ``"autodiff, one ulp"``: the autodiff run again with a single
    weight (``W_hy[0, 0]``) moved by one unit in the last place -- the difference between two
    runs of the *same* code that round-off alone makes after ``num_steps`` steps.
    """
    from jaxrnn import data, train  # train imports model; keep this module importable alone
    num_windows = data.num_windows(streams, config.seq_len)
    runs = [("manual", "manual", False), ("autodiff", "autodiff", False)]
    if round_off_floor:
        runs.append(("autodiff, one ulp", "autodiff", True))
    results = {}
    for name, backward, nudge in runs:
        mode_config = dataclasses.replace(config, backward=backward)
        chunk = train.make_train_chunk(mode_config, num_windows, num_steps)
        state = train.init_train_state(mode_config, vocab_size)
        if nudge:
            params = dict(state.params)
            params["W_hy"] = params["W_hy"].at[0, 0].set(
                jnp.nextafter(params["W_hy"][0, 0], jnp.inf))
            state = state._replace(params=params)
        state, metrics = chunk(state, streams)
        results[name] = (np.asarray(metrics["loss"]), state.params)
    return results
