"""Recurrent cells as pure functions: initialisers, forward steps and hand-written backward passes.

Each cell's section holds its initialiser, then its forward step (the forward equations in its
docstring) and its backward (the adjoint equations), side by side. The time loops they run in are
`jaxrnn.scans`; the layer and the stack around them, `jaxrnn.unroll`. A `Cell` binds one cell's
functions to its options (`get_cell`); all cells share these signatures:

* ``init(key, input_size, hidden_size, recurrent_init, dtype) -> params``
* ``zero_carry(batch_size, hidden_size, dtype) -> carry``
* ``forward_step(params, carry, xproj_t, masks_t=None) -> (carry, (h_t, residuals_t))``: one
  step, given its input projection ``xproj_t = x_t W_x + b_x: (B, G)`` (hoisted out of the
  recurrence).
* ``forward(params, carry0, xproj, masks=None) -> (carry_T, hiddens (T, B, H), residuals)``:
  ``forward_step`` over a window ``xproj: (T, B, G)`` (`jaxrnn.scans`; the LSTM and GRU write
  their gates over ``xproj`` in place).
* ``backward(params, carry0, hiddens, residuals, d_hiddens, d_carry_T, masks=None)
  -> (d_xproj (T, B, G), d_carry0, recurrent_grads)``: one layer's reverse-time sweep (BPTT), with
  ``hiddens: (T, B, H)``, ``d_hiddens: (T, B, H)`` the gradient ``g_t`` arriving at each ``h_t``
  from above and ``d_carry_T`` the final carry's cotangent.

``masks`` is a `jaxrnn.types.RecurrenceMasks` ((B, H) rows in a step, the window's in a
backward; None: no regulariser inside the recurrence): recurrent dropout multiplies ``h_{t-1}``
by ``r`` (the GRU's ``m``) where it enters ``h_{t-1} W_h`` (Gal & Ghahramani 2016), and zoneout
(Krueger et al. 2017) keeps ``x_t = k * x_{t-1} + (1 - k) * x~_t`` with ``k`` the step's 0/1 mask
in training, the cell's rate ``p`` where no mask is given (evaluation and sampling), 0 when off.
With ``r = 1`` and ``k = 0`` the equations are the plain cell's, and with masks None the code is
the plain cell's, operation for operation. Weight-drop and embedding dropout act on the
parameters, outside the cells (`jaxrnn.unroll.layer_forward`).

``matmul_dtype`` (bound by `get_cell`, like ``zoneout`` and the RNN's ``activation``): None
multiplies in the operands' dtype; ``"bfloat16"`` rounds both operands of every matrix product
to bfloat16 and accumulates in their own dtype (float32), the tensor-core mode of GPUs and TPUs
(`jaxrnn.matmuls`). The public one-step signature ``step(params, carry, x_t) -> (carry, h_t)``
(`rnn_step`, `lstm_step`, `gru_step`) is the input projection followed by ``forward_step``.

Row-vector convention, shapes per `jaxrnn.types`: ``x_t: (B, I)``, ``h_t: (B, H)``, ``W_x: (I, G)``,
``W_h: (H, G)`` with ``G = k*H`` for a cell with ``k`` gate blocks. The backward passes contain no
automatic differentiation: each is a reverse scan (`jaxrnn.scans.reverse_scan`) that carries
``dh`` (and ``dc``) back through time and writes the pre-activation gradients ``d_xproj`` over a
buffer the forward filled and the backward no longer needs; the weight gradients are then single
large GEMMs over all ``N = T*B`` rows, e.g. ``dW_h = H_prev^T @ dPre`` with
``H_prev = [h_0, ..., h_{T-1}]`` (BUILD_NOTES.md, "Hand-written BPTT").
"""
import functools
import inspect
from typing import Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from jaxrnn import regularisers, scans
from jaxrnn.errors import ConfigError
from jaxrnn.matmuls import MATMUL_DTYPES, matmul, sum_outer
from jaxrnn.regularisers import (dropped, keep_factor, step_regularisers, to_new, to_previous,
                                 window_regularisers, zoned)
from jaxrnn.types import GRUResiduals, LSTMResiduals, LSTMState, RNNResiduals

ARCHS = ("rnn", "lstm", "gru")
RECURRENT_INITS = ("orthogonal", "identity", "scaled_normal")

# Activation and its derivative *written in terms of the activation's output* y = act(a), so that
# the backward needs no pre-activation residuals: tanh' = 1 - y^2, sigmoid' = y (1 - y),
# relu' = [y > 0], identity' = 1.
ACTIVATIONS = {
    "tanh": (jnp.tanh, lambda y: 1 - y * y),
    "relu": (jax.nn.relu, lambda y: (y > 0).astype(y.dtype)),
    "sigmoid": (jax.nn.sigmoid, lambda y: y * (1 - y)),
    "identity": (lambda a: a, jnp.ones_like),
}


# ---------------------------------------------------------------------------------------------
# Initialisers
# ---------------------------------------------------------------------------------------------
def _input_weights(key, input_size, hidden_size, num_gates, dtype):
    """Glorot (Xavier) normal per gate block: std = sqrt(2 / (I + H)). Returns (I, k*H)."""
    std = (2.0 / (input_size + hidden_size)) ** 0.5
    return std * jax.random.normal(key, (input_size, num_gates * hidden_size), dtype)


def _recurrent_weights(key, hidden_size, num_gates, recurrent_init, dtype):
    """(H, k*H): k square blocks, each orthogonal, identity (IRNN, Le et al. 2015) or N(0, 1/H)."""
    if recurrent_init not in RECURRENT_INITS:
        raise ConfigError(f"unknown recurrent_init {recurrent_init!r}; choose one of "
                          f"{', '.join(RECURRENT_INITS)}")
    keys = jax.random.split(key, num_gates)
    if recurrent_init == "orthogonal":
        # QR in float32 at least (CPU has no bfloat16 QR), then cast.
        init = jax.nn.initializers.orthogonal()
        qr_dtype = jnp.promote_types(dtype, jnp.float32)
        blocks = [init(k, (hidden_size, hidden_size), qr_dtype).astype(dtype) for k in keys]
    elif recurrent_init == "identity":
        blocks = [jnp.eye(hidden_size, dtype=dtype)] * num_gates
    else:
        blocks = [jax.random.normal(k, (hidden_size, hidden_size), dtype) / hidden_size ** 0.5
                  for k in keys]
    return jnp.concatenate(blocks, axis=1)


def _zero_hidden(batch_size, hidden_size, dtype):
    return jnp.zeros((batch_size, hidden_size), dtype)


def _lstm_zero_carry(batch_size, hidden_size, dtype):
    return LSTMState(_zero_hidden(batch_size, hidden_size, dtype),
                     _zero_hidden(batch_size, hidden_size, dtype))


def _recurrent_weight_grad(h0, hiddens, recurrent, d_pre, matmul_dtype):
    """``dW_h = sum_t (h_{t-1} * r)^T dPre_t`` as one ``(H, N) x (N, G)`` GEMM after the sweep.

    h0: (B, H); hiddens: (T, B, H); recurrent: the (B, H) recurrent dropout mask or None;
    d_pre: (T, B, G), the gradient of the recurrent product's output. Returns (H, G)."""
    return sum_outer(dropped(scans.previous(h0, hiddens), recurrent), d_pre, matmul_dtype)


# ---------------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------------
def rnn_init(key, input_size, hidden_size, recurrent_init="orthogonal", dtype=jnp.float32):
    """Params ``{"W_xh": (I, H), "W_hh": (H, H), "b_h": (H,)}``; zero bias."""
    key_x, key_h = jax.random.split(key)
    return {"W_xh": _input_weights(key_x, input_size, hidden_size, 1, dtype),
            "W_hh": _recurrent_weights(key_h, hidden_size, 1, recurrent_init, dtype),
            "b_h": jnp.zeros((hidden_size,), dtype)}


def rnn_forward_step(params, h_prev, xproj_t, masks_t=None, *, activation="tanh",
                     matmul_dtype=None, zoneout=None):
    """One vanilla-RNN step; h_prev: (B, H), xproj_t: (B, H) (see the module docstring)::

        a_t  = xproj_t + (h_{t-1} * r) W_hh      xproj_t = x_t W_xh + b_h
        h~_t = act(a_t)
        h_t  = k * h_{t-1} + (1 - k) * h~_t

    Returns ``(h_t, (h_t, RNNResiduals(candidates=h~_t with zoneout, else None)))``.
    """
    act, _ = ACTIVATIONS[activation]
    recurrent, keep, _ = step_regularisers(masks_t, zoneout)
    new = act(xproj_t + matmul(dropped(h_prev, recurrent), params["W_hh"], matmul_dtype))
    if keep is None:
        return new, (new, RNNResiduals())
    h = zoned(keep, h_prev, new)
    return h, (h, RNNResiduals(candidates=new))


def rnn_backward(params, h0, hiddens, residuals, d_hiddens, d_h_T, masks=None, *,
                 activation="tanh", matmul_dtype=None, zoneout=None):
    """Backward of a vanilla RNN layer; h0, d_h_T: (B, H); residuals: candidates (T, B, H)
    with zoneout. With ``g_t = d_hiddens[t]`` (``h~_t = h_t`` without zoneout)::

        dh_t  = g_t + [(da_{t+1} W_hh^T) * r + k_{t+1} * dh_{t+1}]   (dh_T starts from d_h_T)
        da_t  = (1 - k_t) * dh_t * act'(h~_t)   (act' written in terms of h~_t)
        dh_0  = (da_1 W_hh^T) * r + k_1 * dh_1
        dW_hh = sum_t (h_{t-1} * r)^T da_t      (one GEMM after the sweep)

    Returns ``(d_xproj = da (T, B, H), d_h0 (B, H), {"W_hh": (H, H)})``.
    """
    _, act_grad = ACTIVATIONS[activation]
    W_hh_T = params["W_hh"].T
    recurrent, keep_rows, _, keep_rate, _ = window_regularisers(masks, zoneout)

    def step(dh_from_next, g_t, t, inputs_t):
        del t
        h_t, new_t, keep_row = inputs_t
        keep = keep_factor(keep_row, keep_rate)
        dh = g_t + dh_from_next
        da = to_new(dh, keep) * act_grad(h_t if keep is None else new_t)
        d_previous = to_previous(dropped(matmul(da, W_hh_T, matmul_dtype), recurrent), dh, keep)
        return d_previous, da, None

    # On the CPU da is written over d_hiddens row by row (`scans.reverse_scan`).
    d_h0, d_pre, _ = scans.reverse_scan(step, d_h_T, d_hiddens,
                                        (hiddens, residuals.candidates, keep_rows))
    return d_pre, d_h0, {"W_hh": _recurrent_weight_grad(h0, hiddens, recurrent, d_pre,
                                                        matmul_dtype)}


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------
def lstm_init(key, input_size, hidden_size, recurrent_init="orthogonal", dtype=jnp.float32):
    """Params ``{"W_x": (I, 4H), "W_h": (H, 4H), "b": (4H,)}``, gates packed ``[i, f, g, o]``.

    The forget-gate bias starts at 1 so that early in training the cell keeps its memory and
    gradients flow through ``c`` (Gers et al. 2000; Jozefowicz et al. 2015).
    """
    key_x, key_h = jax.random.split(key)
    bias = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size:2 * hidden_size].set(1.0)
    return {"W_x": _input_weights(key_x, input_size, hidden_size, 4, dtype),
            "W_h": _recurrent_weights(key_h, hidden_size, 4, recurrent_init, dtype),
            "b": bias}


def _lstm_gate_affine(hidden_size, dtype):
    """Per-column ``(scale, offset)`` with ``[i, f, g, o] = scale * tanh(scale * a) + offset``.

    ``sigmoid(a) = 0.5 * tanh(a / 2) + 0.5``, so the three sigmoid gates and the tanh gate are one
    tanh over the whole ``(B, 4H)`` pre-activation block: one fused loop instead of four (and no
    divisions), which matters on CPU where each time step is a handful of small kernels.
    """
    half, one = jnp.full((hidden_size,), 0.5, dtype), jnp.ones((hidden_size,), dtype)
    zero = jnp.zeros((hidden_size,), dtype)
    return (jnp.concatenate([half, half, one, half]), jnp.concatenate([half, half, zero, half]))


def lstm_forward_step(params, carry, xproj_t, masks_t=None, *, matmul_dtype=None, zoneout=None):
    """One LSTM step (no peepholes); carry: LSTMState((B, H), (B, H)), xproj_t: (B, 4H); with
    ``[a_i, a_f, a_g, a_o] = xproj_t + (h_{t-1} * r) W_h``, ``xproj_t = x_t W_x + b``::

        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c~_t = f * c_{t-1} + i * g                h~_t = o * tanh(c~_t)
        c_t  = k^c * c_{t-1} + (1 - k^c) * c~_t   h_t  = k^h * h_{t-1} + (1 - k^h) * h~_t

    Returns ``(LSTMState(h_t, c_t), (h_t, LSTMResiduals(gates=[i, f, g, o], cells=c_t)))``.
    """
    h_prev, c_prev = carry
    recurrent, keep_h, keep_c = step_regularisers(masks_t, zoneout)
    scale, offset = _lstm_gate_affine(h_prev.shape[-1], h_prev.dtype)
    pre = xproj_t + matmul(dropped(h_prev, recurrent), params["W_h"], matmul_dtype)
    gates = scale * jnp.tanh(scale * pre) + offset                                   # (B, 4H)
    i, f, g, o = jnp.split(gates, 4, axis=-1)   # split (not slices): its transpose is a concat
    c_new = f * c_prev + i * g
    h = zoned(keep_h, h_prev, o * jnp.tanh(c_new))
    c = zoned(keep_c, c_prev, c_new)
    return LSTMState(h, c), (h, LSTMResiduals(gates=gates, cells=c))


def lstm_backward(params, carry0, hiddens, residuals, d_hiddens, d_carry_T, masks=None, *,
                  matmul_dtype=None, zoneout=None):
    """Backward of an LSTM layer; carry0, d_carry_T: LSTMState((B, H), (B, H)); residuals:
    gates (T, B, 4H), cells (T, B, H). With ``g_t = d_hiddens[t]`` and ``dh~``, ``dc~`` the
    cotangents of ``h~_t``, ``c~_t`` (``dh``, ``dc``, and ``c~_t = c_t``, without zoneout)::

        dh_t  = g_t + [(da_{t+1} W_h^T) * r + k^h_{t+1} * dh_{t+1}]
        dc_t  = dc~_{t+1} * f_{t+1} + k^c_{t+1} * dc_{t+1}    (the carried c_t's cotangent)
        dh~   = (1 - k^h_t) * dh_t          dc~ = (1 - k^c_t) * dc_t + dh~ * o * (1 - tanh(c~_t)^2)
        da_i  = dc~ * g * i (1 - i)         da_f = dc~ * c_{t-1} * f (1 - f)
        da_g  = dc~ * i * (1 - g^2)         da_o = dh~ * tanh(c~_t) * o (1 - o)
        dW_h  = sum_t (h_{t-1} * r)^T da_t  (one GEMM after the sweep)

    With zoneout on ``c``, ``c~_t = f * c_{t-1} + i * g`` is recomputed from the saved residuals.
    Returns ``(d_xproj = da (T, B, 4H), d_carry0 LSTMState, {"W_h": (H, 4H)})``.
    """
    W_h_T = params["W_h"].T
    cells = residuals.cells
    recurrent, keep_h_rows, keep_c_rows, rate_h, rate_c = window_regularisers(masks, zoneout)

    def step(carry, gates, t, inputs_t):
        dh_from_next, dc_from_next = carry
        g_t, c, keep_h_row, keep_c_row = inputs_t
        keep_h, keep_c = keep_factor(keep_h_row, rate_h), keep_factor(keep_c_row, rate_c)
        c_prev = scans.previous_row(cells, t, carry0.cell)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        dh = g_t + dh_from_next
        dh_new = to_new(dh, keep_h)
        tanh_c = jnp.tanh(c if keep_c is None else f * c_prev + i * g)
        dc = to_new(dc_from_next, keep_c) + dh_new * o * (1 - tanh_c * tanh_c)
        da = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                              dc * i * (1 - g * g), dh_new * tanh_c * o * (1 - o)], axis=-1)
        return (to_previous(dropped(matmul(da, W_h_T, matmul_dtype), recurrent), dh, keep_h),
                to_previous(dc * f, dc_from_next, keep_c)), da, None

    # On the CPU da is written over the gates row by row (`scans.reverse_scan`).
    (d_h0, d_c0), d_pre, _ = scans.reverse_scan(
        step, tuple(d_carry_T), residuals.gates, (d_hiddens, cells, keep_h_rows, keep_c_rows))
    return d_pre, LSTMState(d_h0, d_c0), {"W_h": _recurrent_weight_grad(
        carry0.hidden, hiddens, recurrent, d_pre, matmul_dtype)}


# ---------------------------------------------------------------------------------------------
# GRU (the cuDNN / PyTorch formulation: the reset gate multiplies h W_hn + b_hn)
# ---------------------------------------------------------------------------------------------
def gru_init(key, input_size, hidden_size, recurrent_init="orthogonal", dtype=jnp.float32):
    """Params ``{"W_x": (I, 3H), "W_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, packed
    ``[r, z, n]``."""
    key_x, key_h = jax.random.split(key)
    return {"W_x": _input_weights(key_x, input_size, hidden_size, 3, dtype),
            "W_h": _recurrent_weights(key_h, hidden_size, 3, recurrent_init, dtype),
            "b_x": jnp.zeros((3 * hidden_size,), dtype),
            "b_h": jnp.zeros((3 * hidden_size,), dtype)}


def gru_forward_step(params, h_prev, xproj_t, masks_t=None, *, matmul_dtype=None, zoneout=None):
    """One GRU step; h_prev: (B, H), xproj_t: (B, 3H); with ``[x_r, x_z, x_n] = xproj_t =
    x_t W_x + b_x`` and ``[h_r, h_z, h_n] = (h_{t-1} * m) W_h + b_h`` (``m`` drops the state
    entering the GEMM only, not the interpolation's ``z * h_{t-1}``)::

        r = sigmoid(x_r + h_r)      z = sigmoid(x_z + h_z)      n = tanh(x_n + r * h_n)
        h~_t = (1 - z) * n + z * h_{t-1}       h_t = k * h_{t-1} + (1 - k) * h~_t

    Returns ``(h_t, (h_t, GRUResiduals(gates=[r, z, n], hn=h_n)))``.
    """
    recurrent, keep, _ = step_regularisers(masks_t, zoneout)
    rz_width = 2 * h_prev.shape[-1]
    x_rz, x_n = jnp.split(xproj_t, [rz_width], axis=-1)
    h_rz, h_n = jnp.split(matmul(dropped(h_prev, recurrent), params["W_h"], matmul_dtype)
                          + params["b_h"], [rz_width], axis=-1)
    # Both sigmoid gates in one tanh over (B, 2H): sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.
    r, z = jnp.split(0.5 * jnp.tanh(0.5 * (x_rz + h_rz)) + 0.5, 2, axis=-1)
    n = jnp.tanh(x_n + r * h_n)
    h = zoned(keep, h_prev, (1 - z) * n + z * h_prev)
    return h, (h, GRUResiduals(gates=jnp.concatenate([r, z, n], axis=-1), hn=h_n))


def gru_backward(params, h0, hiddens, residuals, d_hiddens, d_h_T, masks=None, *,
                 matmul_dtype=None, zoneout=None):
    """Backward of a GRU layer; h0, d_h_T: (B, H); residuals: gates (T, B, 3H), hn (T, B, H).
    With ``g_t = d_hiddens[t]`` and ``dh~`` the cotangent of ``h~_t`` (``dh`` without zoneout)::

        dh_t  = g_t + [dh~_{t+1} * z_{t+1} + (dgh_{t+1} W_h^T) * m + k_{t+1} * dh_{t+1}]
        dh~   = (1 - k_t) * dh_t                  da_n = dh~ * (1 - z) * (1 - n^2)
        da_z  = dh~ * (h_{t-1} - n) * z (1 - z)    da_r = da_n * h_n * r (1 - r)
        dxproj_t = [da_r, da_z, da_n]              (gradient of x_t W_x + b_x)
        dgh_t    = [da_r, da_z, da_n * r]          (gradient of (h_{t-1} * m) W_h + b_h)
        dW_h = sum_t (h_{t-1} * m)^T dgh_t,  db_h = sum_t dgh_t

    Returns ``(d_xproj (T, B, 3H), d_h0 (B, H), {"W_h": (H, 3H), "b_h": (3H,)})``.
    """
    W_h_T = params["W_h"].T
    hidden_size = h0.shape[-1]
    recurrent, keep_rows, _, keep_rate, _ = window_regularisers(masks, zoneout)

    def step(dh_from_next, gates, t, inputs_t):
        g_t, h_n, keep_row = inputs_t
        keep = keep_factor(keep_row, keep_rate)
        r, z, n = jnp.split(gates, 3, axis=-1)
        dh = g_t + dh_from_next
        dh_new = to_new(dh, keep)
        da_n = dh_new * (1 - z) * (1 - n * n)
        da_z = dh_new * (scans.previous_row(hiddens, t, h0) - n) * z * (1 - z)
        da_r = da_n * h_n * r * (1 - r)
        d_gh = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        carry = to_previous(dh_new * z + dropped(matmul(d_gh, W_h_T, matmul_dtype), recurrent),
                            dh, keep)
        return carry, d_gh, da_n

    # dxproj and dgh differ in their n block only: dgh's is dxproj's times r, the gates' first.
    d_h0, d_xproj, d_gh = scans.reverse_scan_two_gradients(
        step, d_h_T, residuals.gates, (d_hiddens, residuals.hn, keep_rows),
        tail_factor=lambda gates: gates[..., :hidden_size])
    return d_xproj, d_h0, {"W_h": _recurrent_weight_grad(h0, hiddens, recurrent, d_gh,
                                                        matmul_dtype),
                           "b_h": d_gh.sum(axis=(0, 1))}


# ---------------------------------------------------------------------------------------------
# The cell table
# ---------------------------------------------------------------------------------------------
class Cell(NamedTuple):
    """The functions and parameter names that make up one cell type (see the module docstring).

    input_weight / input_bias: names of the parameters of the input projection
    ``xproj = x W_x + b_x``, which the unroll hoists out of the recurrence.
    recurrent_weight: name of ``W_h`` (H, G), the recurrent weights (weight-drop acts on it).
    matmul_dtype: the one bound into the functions (`matmul`); None = the operands' dtype.
    zoneout: ``(p_h, p_c)`` bound into the functions, or None: the zoneout rates of the hidden
    state and (LSTM) the cell, used as the expectation wherever no zoneout mask is given.
    activation: the vanilla RNN's non-linearity bound into its functions; None for the others.
    param_names: the names of one layer's parameters, input weight, recurrent weight, then the
    biases (shapes (I, G), (H, G), (G,) ...: `jaxrnn.validate.layers` checks them).

    A `Cell` is the model's description below the public entry points: their decorator
    `takes_arch` turns ``arch`` and its options into one (`jaxrnn.config.Config.cell` for a
    configuration) and they hand it down; the two ``jax.custom_vjp`` s take it as their
    non-differentiable argument.
    """

    name: str
    num_gates: int
    input_weight: str
    input_bias: str
    init: Callable
    zero_carry: Callable
    forward_step: Callable
    forward: Callable
    backward: Callable
    matmul_dtype: str = None
    recurrent_weight: str = "W_h"
    zoneout: Optional[Tuple[float, float]] = None
    activation: Optional[str] = None
    param_names: Tuple[str, ...] = ()

    @property
    def label(self):
        """``"lstm"``, or for the vanilla RNN its activation too: ``"rnn-tanh"``."""
        return self.name if self.activation is None else f"{self.name}-{self.activation}"

    @property
    def zones_out_cell(self):
        """Whether the cell has a memory cell that zoneout may act on (`zoneout_cell_applies`)."""
        return zoneout_cell_applies(self.name, True)

    @property
    def options(self):
        """The options beyond the name, as keywords of `get_cell` (for JSON descriptions)."""
        return {"activation": self.activation, "matmul_dtype": self.matmul_dtype,
                "zoneout": self.zoneout}


def takes_activation(arch):
    """The rule for ``activation``, stated once: it is the vanilla RNN's option."""
    return arch == "rnn"


def activation_applies(arch, activation):
    """Whether ``activation`` may be given with ``arch`` (`takes_activation`); the other cells
    take none (None, or the default "tanh", which they ignore)."""
    return takes_activation(arch) or activation in (None, "tanh")


def zoneout_cell_applies(arch, cell_zoneout):
    """The rule for the cell-state zoneout, stated once: it is the LSTM's (its memory cell c);
    the other cells take none. ``cell_zoneout``: its rate, or whether a mask is given (0 or
    False: none)."""
    return arch == "lstm" or not cell_zoneout


def zoneout_rates(cell, zoneout):
    """``zoneout`` as ``(p_h, p_c)`` floats in [0, 1), or None when it is None or both are 0;
    ``p_c`` (the cell state) is for an LSTM ``cell`` (a `jaxrnn.cells.Cell`) only."""
    if zoneout is None:
        return None
    if len(zoneout) != 2:
        raise ConfigError(f"zoneout must be (hidden rate, cell rate), got {zoneout!r}")
    hidden, cell_rate = (float(rate) for rate in zoneout)
    for name, rate in (("zoneout_hidden", hidden), ("zoneout_cell", cell_rate)):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {rate}")
    if not zoneout_cell_applies(cell.name, cell_rate):
        raise ConfigError(f"zoneout_cell applies to arch=lstm only (its memory cell c); set it to "
                          f"0 for arch={cell.name}")
    return None if hidden == cell_rate == 0.0 else (hidden, cell_rate)


def get_cell(arch, activation=None, matmul_dtype=None, zoneout=None):
    """The `Cell` for ``arch`` in ("rnn", "lstm", "gru"); ``activation`` applies to "rnn" only
    (`activation_applies`); ``matmul_dtype`` (None or "bfloat16", see `matmul`) and ``zoneout``
    (None or ``(p_h, p_c)``, see `zoneout_rates`) are bound into all its functions."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if matmul_dtype not in MATMUL_DTYPES:
        raise ConfigError(f"matmul_dtype must be None or 'bfloat16', got {matmul_dtype!r}")
    if not activation_applies(arch, activation):
        raise ConfigError(f"activation={activation!r} applies to arch=rnn only; drop it for "
                          f"arch={arch}")
    if not takes_activation(arch):
        activation = None
    elif activation is None:
        activation = "tanh"
    elif activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of "
                          f"{', '.join(ACTIVATIONS)}")
    plain = _build_cell(arch, activation, matmul_dtype, None)
    zoneout = zoneout_rates(plain, zoneout)
    return plain if zoneout is None else _build_cell(arch, activation, matmul_dtype, zoneout)


# The options of a cell that a public entry point may take beside ``arch`` (`get_cell`).
CELL_OPTIONS = ("activation", "matmul_dtype", "zoneout")


def takes_arch(function):
    """Decorator: the public entry points' one conversion of ``arch`` into a `Cell`.

    ``function`` takes an ``arch`` argument and any of `CELL_OPTIONS`. The decorated function has
    its signature and docstring and accepts ``arch`` as a name -- "rnn", "lstm" or "gru", with
    the options given (`get_cell`) -- or already a `Cell`, which carries its options, so none may
    be given. It calls ``function`` with ``arch`` the `Cell` and the options None: the body uses
    the `Cell` alone, and an entry point that calls another hands it the `Cell`.
    """
    signature = inspect.signature(function)
    defaults = {name: signature.parameters[name].default for name in CELL_OPTIONS
                if name in signature.parameters}

    @functools.wraps(function)
    def with_cell(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:                       # a wrong call: let Python name what is wrong
            return function(*args, **kwargs)
        arguments = bound.arguments
        arch = arguments["arch"]
        options = {name: arguments.get(name, default) for name, default in defaults.items()}
        if not isinstance(arch, Cell):
            arch = get_cell(arch, **options)
        elif any(value is not None for value in options.values()):
            raise ConfigError(f"arch is a Cell ({arch.label}), which carries its activation, "
                              "matmul_dtype and zoneout; pass them to get_cell instead")
        arguments.update(dict.fromkeys(defaults), arch=arch)
        return function(*bound.args, **bound.kwargs)

    return with_cell


@takes_arch
def resolve(arch, activation=None, matmul_dtype=None, zoneout=None):
    """``arch`` as a `Cell`: a name with its options (`get_cell`), or a `Cell` as it is (it
    carries its options, so none may be given); `takes_arch`'s conversion on its own, for a
    caller that needs the `Cell` itself (`jaxrnn.config.Config.cell`)."""
    del activation, matmul_dtype, zoneout                   # None here: they are in the Cell
    return arch


# Each arch's parts, by name. ``forward`` turns the bound step into the window's forward: the
# LSTM and GRU write their gates (the same width as the input projection) over it in place.
_CELL_PARTS = {
    "rnn": dict(param_names=("W_xh", "W_hh", "b_h"),
                num_gates=1, input_weight="W_xh", input_bias="b_h", recurrent_weight="W_hh",
                init=rnn_init,
                zero_carry=_zero_hidden, forward_step=rnn_forward_step,
                forward=scans.scan_forward, backward=rnn_backward),
    "lstm": dict(param_names=("W_x", "W_h", "b"),
                 num_gates=4, input_weight="W_x", input_bias="b", recurrent_weight="W_h",
                 init=lstm_init,
                 zero_carry=_lstm_zero_carry, forward_step=lstm_forward_step,
                 forward=scans.gates_in_place, backward=lstm_backward),
    "gru": dict(param_names=("W_x", "W_h", "b_x", "b_h"),
                num_gates=3, input_weight="W_x", input_bias="b_x", recurrent_weight="W_h",
                init=gru_init,
                zero_carry=_zero_hidden, forward_step=gru_forward_step,
                forward=scans.gates_in_place, backward=gru_backward),
}


@functools.lru_cache(maxsize=None)
def _build_cell(arch, activation, matmul_dtype, zoneout):
    parts = _CELL_PARTS[arch]
    options = {"matmul_dtype": matmul_dtype, "zoneout": zoneout}
    if activation is not None:                              # `get_cell`: the vanilla RNN's only
        options["activation"] = activation
    forward_step = functools.partial(parts["forward_step"], **options)
    return Cell(name=arch, num_gates=parts["num_gates"], input_weight=parts["input_weight"],
                input_bias=parts["input_bias"], init=parts["init"],
                zero_carry=parts["zero_carry"], forward_step=forward_step,
                forward=scans.window_forward(parts["forward"], forward_step),
                backward=functools.partial(parts["backward"], **options),
                matmul_dtype=matmul_dtype, recurrent_weight=parts["recurrent_weight"],
                zoneout=zoneout, activation=activation, param_names=parts["param_names"])


# Each arch's layer parameter names (`Cell.param_names`), to name the owner of a wrong set.
PARAM_NAMES = {arch: parts["param_names"] for arch, parts in _CELL_PARTS.items()}


# ---------------------------------------------------------------------------------------------
# The public one-step signature (params, carry, x_t) -> (carry, h_t)
# ---------------------------------------------------------------------------------------------
def project_inputs(cell, params, inputs, row_scale=None):
    """Input projection ``x W_x + b_x`` for any leading shape.

    inputs: integer character ids ``(...)`` -- a row gather of ``W_x`` (a one-hot matmul without
    the matmul) -- or floats ``(..., I)``. Returns ``(..., G)``.
    row_scale: None, or for ids ``(...)`` multipliers of the gathered rows (embedding dropout:
    ``W_x[id] * e[id] + b_x``, the bias not dropped).
    """
    weight, bias = params[cell.input_weight], params[cell.input_bias]
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        rows = jnp.take(weight, inputs, axis=0)
        return (rows if row_scale is None else rows * row_scale[..., None]) + bias
    if row_scale is not None:
        raise ConfigError("embedding dropout scales rows of the input weights and needs "
                          "character ids as inputs, not floats")
    return matmul(inputs, weight, cell.matmul_dtype) + bias


def make_step(cell):
    """``step(params, carry, x_t, masks_t=None, row_scale_t=None) -> (carry, h_t)`` for
    ``x_t: (B, I)`` floats or ``(B,)`` ids; ``masks_t`` a `RecurrenceMasks` of (B, H) rows and
    ``row_scale_t: (B,)`` embedding-dropout multipliers (`project_inputs`), both optional."""
    def step(params, carry, x_t, masks_t=None, row_scale_t=None):
        carry, (h, _) = cell.forward_step(params, carry,
                                          project_inputs(cell, params, x_t, row_scale_t), masks_t)
        return carry, h
    return step


@takes_arch
def _step_of(arch, activation=None):
    """The public one-step function of ``arch`` (a name, with the RNN's ``activation``)."""
    del activation                                          # None here: it is in the Cell
    return make_step(arch)


def rnn_step(params, h_prev, x_t, *, activation="tanh"):
    """Vanilla RNN ``h_t = act(x_t W_xh + h_{t-1} W_hh + b_h)``; returns ``(h_t, h_t)``."""
    return _step_of("rnn", activation)(params, h_prev, x_t)


def lstm_step(params, carry, x_t):
    """LSTM step on ``x_t: (B, I)``; returns ``(LSTMState(h_t, c_t), h_t)``."""
    return _step_of("lstm")(params, carry, x_t)


def gru_step(params, h_prev, x_t):
    """GRU step on ``x_t: (B, I)``; returns ``(h_t, h_t)``."""
    return _step_of("gru")(params, h_prev, x_t)
