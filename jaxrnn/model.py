"""The character language model: ids -> stacked cells -> output projection -> cross-entropy.

Parameters::

    {"layers": [cell params, ...],   # layer 0 reads one-hot characters (I = V), the others I = H
     "W_hy": (H, V), "b_y": (V,)}

The one-hot input is a row gather of layer 0's input weights, never a dense one-hot matmul.
`loss_fn` returns the mean negative log-likelihood in nats per character and the final state.
With ``backward="manual"`` the whole loss is one ``jax.custom_vjp`` whose backward is written by
hand end to end: ``softmax - onehot`` for the output layer, then `jaxrnn.unroll.stack_backward`.

Training-time regularisers enter as a `jaxrnn.types.WindowMasks` (`jaxrnn.regularisers`), and
dropout's masks are drawn here from ``dropout_key``; evaluation and sampling (`forward_log_probs`,
`model_step`) take no masks, and a cell with zoneout rates uses their expectation there.
"""
import functools

import jax
import jax.numpy as jnp

from jaxrnn import regularisers, validate
from jaxrnn.cells import project_inputs, takes_arch
from jaxrnn.errors import ConfigError
from jaxrnn.matmuls import matmul, sum_outer
from jaxrnn.types import WindowMasks
from jaxrnn.unroll import BACKWARDS, reference_unroll, stack_backward, stack_forward


def _float_dtype(dtype):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"dtype must be a floating-point type such as float32, got {dtype}")
    return dtype


@takes_arch
def init_params(key, arch, vocab_size, hidden_size, num_layers=1, *, dtype=jnp.float32,
                recurrent_init="orthogonal", activation=None, matmul_dtype=None, zoneout=None):
    """Initial parameters of an ``arch`` language model (see the module docstring for names).

    Cell initialisers are documented in `jaxrnn.cells`; the output projection is Glorot normal
    with a zero bias. ``activation``, ``matmul_dtype`` and ``zoneout`` are accepted (and checked)
    so that the same options can be passed here and to `loss_fn`; ``arch`` is a name or a
    `jaxrnn.cells.Cell` (`jaxrnn.cells.takes_arch`). Sizes are integers >= 1 (NumPy integers too).
    """
    vocab_size = validate.size("vocab_size", vocab_size)
    hidden_size = validate.size("hidden_size", hidden_size)
    num_layers = validate.size("num_layers", num_layers)
    dtype = _float_dtype(dtype)
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    keys = jax.random.split(key, num_layers + 1)
    layers = [cell.init(keys[index], vocab_size if index == 0 else hidden_size, hidden_size,
                        recurrent_init, dtype) for index in range(num_layers)]
    std = (2.0 / (hidden_size + vocab_size)) ** 0.5
    return {"layers": layers,
            "W_hy": std * jax.random.normal(keys[-1], (hidden_size, vocab_size), dtype),
            "b_y": jnp.zeros((vocab_size,), dtype)}


@takes_arch
def init_state(arch, batch_size, hidden_size, num_layers=1, dtype=jnp.float32):
    """Zero state: a tuple of ``num_layers`` carries (``(B, H)``, or ``LSTMState`` for lstm)."""
    cell = arch                             # a Cell (`takes_arch`)
    batch_size = validate.size("batch_size", batch_size)
    hidden_size = validate.size("hidden_size", hidden_size)
    num_layers = validate.size("num_layers", num_layers)
    dtype = _float_dtype(dtype)
    return tuple(cell.zero_carry(batch_size, hidden_size, dtype) for _ in range(num_layers))


def hidden_size_of(params):
    return params["W_hy"].shape[0]


def zero_state_for(params, cell, batch_size):
    """The zero state (tuple of L carries of shape (B, H)) of ``cell`` that fits ``params``: their
    hidden size, depth and dtype; the default wherever a caller passes no state."""
    return init_state(cell, batch_size, hidden_size_of(params), len(params["layers"]),
                      params["W_hy"].dtype)


def make_dropout_masks(key, rate, num_layers, shape, dtype):
    """Inverted-dropout multipliers ``(L, T, B, H)``: 0 with prob. ``rate``, else ``1/(1-rate)``.

    Applied to every layer's output -- between layers and before the output projection, never on
    the recurrent connections (Zaremba et al. 2014). Returns None when ``rate == 0``.
    """
    if rate == 0.0:
        return None
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {rate}")
    keep = jax.random.bernoulli(key, 1.0 - rate, (num_layers, *shape))
    return keep.astype(dtype) / (1.0 - rate)


# ---------------------------------------------------------------------------------------------
# Output layer: logits, cross-entropy and its hand-written gradient
# ---------------------------------------------------------------------------------------------
def output_log_probs(params, outputs, matmul_dtype=None):
    """outputs: (..., H), e.g. (T, B, H) -> log-softmax of the logits ``outputs W_hy + b_y``,
    (..., V)."""
    return jax.nn.log_softmax(matmul(outputs, params["W_hy"], matmul_dtype) + params["b_y"],
                              axis=-1)


def token_nll(log_probs, targets):
    """log_probs: (..., V); targets: (...) int -> negative log-likelihood of each target, (...)."""
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def mean_nll(log_probs, targets):
    """log_probs: (T, B, V); targets: (T, B) int -> mean negative log-likelihood (nats/char)."""
    return token_nll(log_probs, targets).mean()


def softmax_cotangent(log_probs, targets):
    """d(-log p[target]) / d logits = ``softmax(y) - onehot(target)``; log_probs: (..., V),
    targets: (...) int -> (..., V)."""
    return jnp.exp(log_probs) - jax.nn.one_hot(targets, log_probs.shape[-1],
                                               dtype=log_probs.dtype)


def head_backward(params, outputs, log_probs, targets, d_loss, matmul_dtype=None):
    """Gradient of the mean cross-entropy through the output projection.

    With ``p = softmax(y)``, ``y = h W_hy + b_y`` over all ``N = T*B`` rows::

        dy = d_loss * (p - onehot(target)) / N
        dW_hy = h^T dy      db_y = sum_rows dy      dh = dy W_hy^T

    outputs: (T, B, H); log_probs: (T, B, V); targets: (T, B) int; d_loss: the loss's cotangent.
    Returns: ``({"W_hy", "b_y"} grads, d_outputs (T, B, H))``.
    """
    d_logits = softmax_cotangent(log_probs, targets) * (d_loss / targets.size)
    grads = {"W_hy": sum_outer(outputs, d_logits, matmul_dtype),
             "b_y": d_logits.sum(axis=(0, 1))}
    return grads, matmul(d_logits, params["W_hy"].T, matmul_dtype)


# ---------------------------------------------------------------------------------------------
# The manual loss: one custom_vjp over the whole model
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _manual_loss(cell, params, inputs, targets, state, masks):
    loss, final_state = _manual_loss_fwd(cell, params, inputs, targets, state, masks)[0]
    return loss, final_state


def _manual_loss_fwd(cell, params, inputs, targets, state, masks):
    # fwd: (params, inputs (T,B), targets (T,B), state, masks) -> ((loss, final_state), saved)
    outputs, final_state, residuals = stack_forward(cell, params["layers"], inputs, state, masks)
    log_probs = output_log_probs(params, outputs, cell.matmul_dtype)
    loss = mean_nll(log_probs, targets)
    return (loss, final_state), (params, targets, masks, outputs, log_probs, residuals)


def _manual_loss_bwd(cell, saved, cotangents):
    # bwd: (saved, (d_loss, d_final_state)) -> (d_params, None, None, d_state0, d_masks)
    params, targets, masks, outputs, log_probs, residuals = saved
    d_loss, d_final_state = cotangents
    head_grads, d_outputs = head_backward(params, outputs, log_probs, targets, d_loss,
                                          cell.matmul_dtype)
    grads = stack_backward(cell, params["layers"], residuals, masks, d_outputs, d_final_state)
    # Integer inputs and targets have no cotangent: None is JAX's symbolic zero here.
    return {"layers": grads.layers, **head_grads}, None, None, grads.state0, grads.masks


_manual_loss.defvjp(_manual_loss_fwd, _manual_loss_bwd)


def _autodiff_loss(cell, params, inputs, targets, state, masks):
    outputs, final_state = reference_unroll(cell, params["layers"], inputs, state, masks)
    return mean_nll(output_log_probs(params, outputs, cell.matmul_dtype), targets), final_state


def _with_dropout(masks, dropout_masks):
    """``masks`` (a `WindowMasks` or None) with dropout's (L, T, B, H) multipliers (or None)
    multiplied into its output masks."""
    if dropout_masks is None:
        return masks
    if masks is None:
        return WindowMasks(outputs=dropout_masks)
    outputs = dropout_masks if masks.outputs is None else dropout_masks * masks.outputs
    return masks._replace(outputs=outputs)


@takes_arch
def loss_fn(params, inputs, targets, state=None, *, arch, backward="manual", dropout=0.0,
            dropout_key=None, masks=None, activation=None, recurrent_init=None, matmul_dtype=None,
            zoneout=None):
    """Mean cross-entropy in nats per character and the final state.

    Args:
      params: from `init_params`.
      inputs, targets: (B, T) int32 windows (targets are the inputs shifted by one character),
        T >= 1; ids in [0, V) (checked when concrete, a contract under jit: `jaxrnn.validate`).
      state: tuple of L carries from `init_state` or a previous window, in the parameters' dtype
        (a different dtype is an error, not a cast); None for zeros.
      arch: "rnn" | "lstm" | "gru", or a `jaxrnn.cells.Cell` that carries the options below
        (`jaxrnn.cells.takes_arch`); activation, matmul_dtype, zoneout: see `jaxrnn.cells.get_cell`;
        recurrent_init: ignored (init-only, accepted so one set of options serves `init_params`
        and `loss_fn`).
      backward: "manual" (hand-written BPTT, `jax.custom_vjp`) or "autodiff" (`jax.grad` of the
        plain scan). Forward values are identical.
      dropout, dropout_key: inverted dropout on the non-recurrent connections (training only),
        a fresh mask at every step (Zaremba et al. 2014).
      masks: None, or the window's other training-time multipliers, a `jaxrnn.types.WindowMasks`
        from `jaxrnn.regularisers.draw_masks` (variational, recurrent and embedding dropout,
        weight-drop, zoneout); their shapes are checked (`jaxrnn.regularisers.check_masks`).
      matmul_dtype: None, or "bfloat16": every matrix product (forward and backward, both modes)
        with bfloat16 operands and float32 accumulation (`jaxrnn.matmuls.matmul`).
      zoneout: None or ``(p_h, p_c)``, the cell's zoneout rates (`jaxrnn.cells.get_cell`): with
        zoneout masks in ``masks`` those are used (training), without, the expectation.
    Returns: ``(loss scalar, final_state)``; use ``jax.value_and_grad(loss_fn, has_aux=True)``.
    """
    del recurrent_init
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    inputs, targets, state = _checked_inputs(params, cell, inputs, state, targets)
    inputs, targets = jnp.asarray(inputs).T, jnp.asarray(targets).T       # (T, B), time-major
    dtype = params["W_hy"].dtype
    if masks is not None:
        regularisers.check_masks(masks, cell, len(params["layers"]), *inputs.shape,
                                 params["W_hy"].shape[1], hidden_size_of(params))
    dropout_masks = None
    if dropout:
        if dropout_key is None:
            raise ConfigError("dropout > 0 needs a dropout_key; pass jax.random.key(...)")
        dropout_masks = make_dropout_masks(dropout_key, dropout, len(params["layers"]),
                                           (*inputs.shape, hidden_size_of(params)), dtype)
    masks = _with_dropout(masks, dropout_masks)
    if backward == "manual":
        return _manual_loss(cell, params, inputs, targets, state, masks)
    if backward == "autodiff":
        return _autodiff_loss(cell, params, inputs, targets, state, masks)
    raise ConfigError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")


def _checked_inputs(params, cell, inputs, state, targets=None, ndim=2):
    """Static checks of a call's arguments (and id ranges when concrete), see `jaxrnn.validate`.

    inputs: (B, T) or (B,) ids; returns ``(inputs, targets, state)`` with a zero state for None.
    """
    vocab_size, hidden_size, num_layers, dtype = validate.params(params, cell)
    inputs = validate.ids("inputs" if ndim == 2 else "ids", inputs, ndim, vocab_size)
    if targets is not None:
        targets = validate.ids("targets", targets, 2, vocab_size)
        if targets.shape != inputs.shape:
            raise ConfigError(f"targets have shape {tuple(targets.shape)} but inputs "
                              f"{tuple(inputs.shape)}; pass windows of the same (B, T)")
    if state is None:
        state = zero_state_for(params, cell, inputs.shape[0])
    return inputs, targets, validate.state(state, cell, num_layers, inputs.shape[0], hidden_size,
                                           dtype)


# ---------------------------------------------------------------------------------------------
# Inference helpers (evaluation and sampling)
# ---------------------------------------------------------------------------------------------
@takes_arch
def forward_log_probs(params, inputs, state=None, *, arch, activation=None, matmul_dtype=None,
                      zoneout=None):
    """inputs: (B, T) int32, T >= 1 -> ``(log_probs (B, T, V), final_state)``; no dropout, and
    zoneout (rates ``(p_h, p_c)`` or None) as its expectation.

    state: as for `loss_fn` (None for zeros)."""
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    inputs, _, state = _checked_inputs(params, cell, inputs, state)
    inputs = jnp.asarray(inputs).T
    outputs, final_state, _ = stack_forward(cell, params["layers"], inputs, state)
    return jnp.swapaxes(output_log_probs(params, outputs, cell.matmul_dtype), 0, 1), final_state


@takes_arch
def model_step(params, state, ids, *, arch, activation=None, matmul_dtype=None, zoneout=None):
    """One character for every stream: ids (B,) int32 -> ``(state, logits (B, V))``; zoneout
    (rates ``(p_h, p_c)`` or None) as its expectation.

    state: tuple of L carries of batch B in the parameters' dtype (from `init_state`)."""
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    if state is None:
        raise ConfigError("model_step needs a state; start from jaxrnn.init_state(arch, B, H, L)")
    ids, _, state = _checked_inputs(params, cell, ids, state, ndim=1)
    x, new_state = jnp.asarray(ids), []
    for params_layer, carry in zip(params["layers"], state):
        carry, (x, _) = cell.forward_step(params_layer, carry,
                                          project_inputs(cell, params_layer, x))
        new_state.append(carry)
    return tuple(new_state), matmul(x, params["W_hy"], cell.matmul_dtype) + params["b_y"]
