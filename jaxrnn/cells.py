"""Recurrent cells as pure functions: initialisers, forward steps and hand-written backward passes.

Every cell exposes the same functions (see `Cell`):

* ``init(key, input_size, hidden_size, recurrent_init, dtype) -> params``
* ``zero_carry(batch_size, hidden_size, dtype) -> carry``
* ``forward_step(params, carry, xproj_t) -> (carry, (h_t, residual_t))`` -- one time step, given the
  step's *input projection* ``xproj_t = x_t @ W_x + b_x`` (hoisted out of the recurrence).
* ``forward(params, carry0, xproj) -> (carry_T, hiddens, residuals)`` -- ``forward_step`` over a
  window ``xproj: (T, B, G)``; the LSTM and GRU write their gates over ``xproj`` in place.
* ``backward(params, carry0, hiddens, residuals, d_hiddens, d_carry_T)
  -> (d_xproj, d_carry0, recurrent_grads)`` -- the whole reverse-time sweep (BPTT) of one layer.

Every function that multiplies matrices takes ``matmul_dtype``: None (the default) multiplies in
the operands' dtype; ``"bfloat16"`` rounds both operands of every matrix product to bfloat16 and
accumulates in the operands' own dtype (float32): the tensor-core mode of GPUs and TPUs
(`jaxrnn.matmuls`). `get_cell` binds it, so a `Cell`'s functions all use one choice.

The public one-step signature ``step(params, carry, x_t) -> (carry, h_t)`` (`rnn_step`, `lstm_step`,
`gru_step`) is the input projection followed by ``forward_step``.

Row-vector convention, shapes per `jaxrnn.types`: ``x_t: (B, I)``, ``h_t: (B, H)``, ``W_x: (I, G)``,
``W_h: (H, G)`` with ``G = k*H`` for a cell with ``k`` gate blocks.

The backward functions contain no automatic differentiation: each is a reverse ``lax.scan`` that
carries ``dh`` (and ``dc``) back through time and writes the pre-activation gradients ``d_xproj``
over a buffer the forward filled and the sweep no longer needs (`sweeps.reverse_scan_in_place`);
the weight gradients are then single large GEMMs over all ``N = T*B`` rows, e.g.
``dW_h = H_prev^T @ dPre`` with ``H_prev = [h_0, ..., h_{T-1}]``. Each backward's docstring
holds its adjoint equations; BUILD_NOTES.md, "Hand-written BPTT", the structure they share. The scans themselves (forward in place, the reverse
sweeps and their per-platform form) are `jaxrnn.sweeps`; this module is the three cells and
their table (`get_cell`).
"""
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import sweeps
from jaxrnn.errors import ConfigError
from jaxrnn.matmuls import MATMUL_DTYPES, matmul, sum_outer
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
        raise ConfigError(
            f"unknown recurrent_init {recurrent_init!r}; choose one of {', '.join(RECURRENT_INITS)}")
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


# ---------------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------------
def rnn_init(key, input_size, hidden_size, recurrent_init="orthogonal", dtype=jnp.float32):
    """Params ``{"W_xh": (I, H), "W_hh": (H, H), "b_h": (H,)}``; zero bias."""
    key_x, key_h = jax.random.split(key)
    return {"W_xh": _input_weights(key_x, input_size, hidden_size, 1, dtype),
            "W_hh": _recurrent_weights(key_h, hidden_size, 1, recurrent_init, dtype),
            "b_h": jnp.zeros((hidden_size,), dtype)}


def rnn_forward_step(params, h_prev, xproj_t, *, activation="tanh", matmul_dtype=None):
    """One vanilla-RNN step.

    Forward::

        a_t = xproj_t + h_{t-1} W_hh          xproj_t = x_t W_xh + b_h
        h_t = act(a_t)

    Args: h_prev: (B, H); xproj_t: (B, H). Returns ``(h_t, (h_t, RNNResiduals()))``.
    """
    act, _ = ACTIVATIONS[activation]
    h = act(xproj_t + matmul(h_prev, params["W_hh"], matmul_dtype))
    return h, (h, RNNResiduals())


def rnn_backward(params, h0, hiddens, residuals, d_hiddens, d_h_T, *, activation="tanh",
                 matmul_dtype=None):
    """Reverse-time sweep of a vanilla RNN layer.

    Adjoint equations, with ``g_t`` the gradient arriving at ``h_t`` from above (``d_hiddens[t]``)::

        dh_t = g_t + da_{t+1} W_hh^T          (dh_T starts from d_h_T, the final-carry cotangent)
        da_t = dh_t * act'(h_t)               (act' written in terms of h_t)
        dW_hh = sum_t h_{t-1}^T da_t          (one GEMM after the sweep)
        dh_0  = da_1 W_hh^T

    Args:
      h0: (B, H) initial carry; hiddens: (T, B, H); residuals: RNNResiduals();
      d_hiddens: (T, B, H); d_h_T: (B, H).
    Returns: ``(d_xproj (T, B, H), d_h0 (B, H), {"W_hh": (H, H)})``; ``d_xproj = da``.
    """
    del residuals
    _, act_grad = ACTIVATIONS[activation]
    W_hh_T = params["W_hh"].T

    def step(dh_from_next, g_t, t, h_t):
        del t
        da = (g_t + dh_from_next) * act_grad(h_t)
        return matmul(da, W_hh_T, matmul_dtype), da, None

    # On the CPU da is written over d_hiddens row by row (`sweeps.reverse_sweep`).
    d_h0, d_pre, _ = sweeps.reverse_sweep(step, d_h_T, d_hiddens, hiddens)
    return d_pre, d_h0, {"W_hh": sum_outer(sweeps.previous(h0, hiddens), d_pre, matmul_dtype)}


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


def lstm_forward_step(params, carry, xproj_t, *, matmul_dtype=None):
    """One LSTM step (the seed equations, no peepholes).

    Forward, with ``[a_i, a_f, a_g, a_o] = xproj_t + h_{t-1} W_h`` and ``xproj_t = x_t W_x + b``::

        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    Args: carry: LSTMState((B, H), (B, H)); xproj_t: (B, 4H).
    Returns ``(LSTMState(h_t, c_t), (h_t, LSTMResiduals(gates=[i, f, g, o], cells=c_t)))``.
    """
    h_prev, c_prev = carry
    hidden_size = h_prev.shape[-1]
    scale, offset = _lstm_gate_affine(hidden_size, h_prev.dtype)
    pre = xproj_t + matmul(h_prev, params["W_h"], matmul_dtype)
    gates = scale * jnp.tanh(scale * pre) + offset                                   # (B, 4H)
    i, f, g, o = jnp.split(gates, 4, axis=-1)   # split (not slices): its transpose is a concat
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return LSTMState(h, c), (h, LSTMResiduals(gates=gates, cells=c))


def lstm_backward(params, carry0, hiddens, residuals, d_hiddens, d_carry_T, *,
                  matmul_dtype=None):
    """Reverse-time sweep of an LSTM layer.

    Adjoint equations (``g_t`` = gradient arriving at ``h_t`` from above, ``*`` elementwise)::

        dh_t  = g_t + da_{t+1} W_h^T
        do    = dh_t * tanh(c_t)
        dc_t  = dc_{t+1} * f_{t+1} + dh_t * o * (1 - tanh(c_t)^2)
        di    = dc_t * g        dg = dc_t * i        df = dc_t * c_{t-1}
        da_i  = di * i (1 - i)  da_f = df * f (1 - f)  da_g = dg (1 - g^2)  da_o = do * o (1 - o)
        dW_h  = sum_t h_{t-1}^T da_t          (one GEMM after the sweep)

    The sweep starts from the final-carry cotangent ``d_carry_T``; it carries
    ``(da_{t+1} W_h^T, dc_{t+1} * f_{t+1})`` backwards.

    Args:
      carry0: LSTMState((B, H), (B, H)); hiddens: (T, B, H); residuals: LSTMResiduals with
      gates (T, B, 4H) and cells (T, B, H); d_hiddens: (T, B, H); d_carry_T: LSTMState.
    Returns: ``(d_xproj (T, B, 4H), d_carry0 LSTMState, {"W_h": (H, 4H)})``.
    """
    W_h_T = params["W_h"].T
    cells = residuals.cells

    def step(carry, gates, t, inputs_t):
        dh_from_next, dc_from_next = carry
        g_t, c = inputs_t
        c_prev = sweeps.previous_row(cells, t, carry0.cell)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        dh = g_t + dh_from_next
        tanh_c = jnp.tanh(c)
        dc = dc_from_next + dh * o * (1 - tanh_c * tanh_c)
        da = jnp.concatenate([dc * g * i * (1 - i),
                              dc * c_prev * f * (1 - f),
                              dc * i * (1 - g * g),
                              dh * tanh_c * o * (1 - o)], axis=-1)
        return (matmul(da, W_h_T, matmul_dtype), dc * f), da, None

    # On the CPU da is written over the gates row by row (`sweeps.reverse_sweep`).
    (d_h0, d_c0), d_pre, _ = sweeps.reverse_sweep(
        step, tuple(d_carry_T), residuals.gates, (d_hiddens, cells))
    grads = {"W_h": sum_outer(sweeps.previous(carry0.hidden, hiddens), d_pre, matmul_dtype)}
    return d_pre, LSTMState(d_h0, d_c0), grads


# ---------------------------------------------------------------------------------------------
# GRU (the cuDNN / PyTorch formulation: the reset gate multiplies h W_hn + b_hn)
# ---------------------------------------------------------------------------------------------
def gru_init(key, input_size, hidden_size, recurrent_init="orthogonal", dtype=jnp.float32):
    """Params ``{"W_x": (I, 3H), "W_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, packed ``[r, z, n]``."""
    key_x, key_h = jax.random.split(key)
    return {"W_x": _input_weights(key_x, input_size, hidden_size, 3, dtype),
            "W_h": _recurrent_weights(key_h, hidden_size, 3, recurrent_init, dtype),
            "b_x": jnp.zeros((3 * hidden_size,), dtype),
            "b_h": jnp.zeros((3 * hidden_size,), dtype)}


def gru_forward_step(params, h_prev, xproj_t, *, matmul_dtype=None):
    """One GRU step.

    Forward, with ``[x_r, x_z, x_n] = xproj_t = x_t W_x + b_x`` and
    ``[h_r, h_z, h_n] = h_{t-1} W_h + b_h``::

        r = sigmoid(x_r + h_r)
        z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h_t = (1 - z) * n + z * h_{t-1}

    Args: h_prev: (B, H); xproj_t: (B, 3H).
    Returns ``(h_t, (h_t, GRUResiduals(gates=[r, z, n], hn=h_n)))``.
    """
    hidden_size = h_prev.shape[-1]
    x_rz, x_n = jnp.split(xproj_t, [2 * hidden_size], axis=-1)
    h_rz, h_n = jnp.split(matmul(h_prev, params["W_h"], matmul_dtype) + params["b_h"],
                          [2 * hidden_size], axis=-1)
    # Both sigmoid gates in one tanh over (B, 2H): sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.
    r, z = jnp.split(0.5 * jnp.tanh(0.5 * (x_rz + h_rz)) + 0.5, 2, axis=-1)
    n = jnp.tanh(x_n + r * h_n)
    h = (1 - z) * n + z * h_prev
    return h, (h, GRUResiduals(gates=jnp.concatenate([r, z, n], axis=-1), hn=h_n))


def gru_backward(params, h0, hiddens, residuals, d_hiddens, d_h_T, *, matmul_dtype=None):
    """Reverse-time sweep of a GRU layer.

    Adjoint equations (``g_t`` = gradient arriving at ``h_t`` from above)::

        dh_t  = g_t + [dh_{t+1} * z_{t+1}] + dgh_{t+1} W_h^T
        da_n  = dh_t * (1 - z) * (1 - n^2)            (a_n = x_n + r * h_n)
        da_z  = dh_t * (h_{t-1} - n) * z (1 - z)
        da_r  = da_n * h_n * r (1 - r)
        dxproj_t = [da_r, da_z, da_n]                 (gradient of x_t W_x + b_x)
        dgh_t    = [da_r, da_z, da_n * r]             (gradient of h_{t-1} W_h + b_h)
        dW_h = sum_t h_{t-1}^T dgh_t,  db_h = sum_t dgh_t

    The carry sent back to ``h_{t-1}`` is ``dh_t * z + dgh_t W_h^T``.

    Args:
      h0: (B, H); hiddens: (T, B, H); residuals: GRUResiduals, gates (T, B, 3H), hn (T, B, H);
      d_hiddens: (T, B, H); d_h_T: (B, H).
    Returns: ``(d_xproj (T, B, 3H), d_h0 (B, H), {"W_h": (H, 3H), "b_h": (3H,)})``.
    """
    W_h_T = params["W_h"].T
    hidden_size = h0.shape[-1]
    n_block = jnp.arange(3 * hidden_size) >= 2 * hidden_size

    def with_n_block(sequence, n_values):
        """(T, B, 3H) with its n block replaced by n_values (T, B, H): one fused select (a
        concatenate is a slice copy plus a concatenate kernel on XLA:CPU: 5.8 vs 2.1 ms)."""
        return jnp.where(n_block, jnp.pad(n_values, ((0, 0), (0, 0), (2 * hidden_size, 0))),
                         sequence)

    def adjoints(dh_from_next, gates, t, g_t, h_n):
        """One step: ``(carry to h_{t-1}, dgh_t, (da_r, da_z, da_n))``."""
        h_prev = sweeps.previous_row(hiddens, t, h0)
        r, z, n = jnp.split(gates, 3, axis=-1)
        dh = g_t + dh_from_next
        da_n = dh * (1 - z) * (1 - n * n)
        da_z = dh * (h_prev - n) * z * (1 - z)
        da_r = da_n * h_n * r * (1 - r)
        d_gh = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        return dh * z + matmul(d_gh, W_h_T, matmul_dtype), d_gh, (da_r, da_z, da_n)

    def in_place(d_h_T, gates, d_hiddens, hn):
        # dgh (the step's GEMM operand) is written over the gates (`sweeps.reverse_scan_in_place`),
        # da_n is emitted as a (T, B, H) output, and dxproj is dgh with that n block.
        def step(dh_from_next, gates_t, t, inputs_t):
            carry, d_gh, (_, _, da_n) = adjoints(dh_from_next, gates_t, t, *inputs_t)
            return carry, d_gh, da_n

        d_h0, d_gh, d_a_n = sweeps.reverse_scan_in_place(step, d_h_T, gates, (d_hiddens, hn))
        return d_h0, with_n_block(d_gh, d_a_n), d_gh

    def stacked(d_h_T, gates, d_hiddens, hn):
        # The sweep emits dxproj; dgh is dxproj with its n block times r, read from the gates.
        def step(dh_from_next, gates_t, t, inputs_t):
            carry, _, (da_r, da_z, da_n) = adjoints(dh_from_next, gates_t, t, *inputs_t)
            return carry, jnp.concatenate([da_r, da_z, da_n], axis=-1), None

        d_h0, d_xproj, _ = sweeps.reverse_scan_stacked(step, d_h_T, gates, (d_hiddens, hn))
        reset = gates[..., :hidden_size]
        return d_h0, d_xproj, with_n_block(d_xproj, d_xproj[..., 2 * hidden_size:] * reset)

    # In place on the CPU, stacked elsewhere, as `sweeps.reverse_sweep` chooses for the other cells.
    d_h0, d_xproj, d_gh = sweeps.by_platform(d_h_T, residuals.gates, d_hiddens, residuals.hn,
                                       cpu=in_place, default=stacked)
    grads = {"W_h": sum_outer(sweeps.previous(h0, hiddens), d_gh, matmul_dtype),
             "b_h": d_gh.sum(axis=(0, 1))}
    return d_xproj, d_h0, grads


# ---------------------------------------------------------------------------------------------
# The cell table
# ---------------------------------------------------------------------------------------------
class Cell(NamedTuple):
    """The functions and parameter names that make up one cell type (see the module docstring).

    input_weight / input_bias: names of the parameters of the input projection
    ``xproj = x W_x + b_x``, which the unroll hoists out of the recurrence.
    matmul_dtype: the one bound into the functions (`matmul`); None = the operands' dtype.
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


def get_cell(arch, activation=None, matmul_dtype=None):
    """The `Cell` for ``arch`` in ("rnn", "lstm", "gru"); ``activation`` applies to "rnn" only;
    ``matmul_dtype`` (None or "bfloat16", see `matmul`) is bound into all its functions."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if matmul_dtype not in MATMUL_DTYPES:
        raise ConfigError(f"matmul_dtype must be None or 'bfloat16', got {matmul_dtype!r}")
    if arch == "rnn":
        activation = "tanh" if activation is None else activation
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of "
                              f"{', '.join(ACTIVATIONS)}")
    elif activation not in (None, "tanh"):
        raise ConfigError(f"activation={activation!r} applies to arch=rnn only; drop it for "
                          f"arch={arch}")
    else:
        activation = None
    return _build_cell(arch, activation, matmul_dtype)


# Each arch's parts, by name. ``forward`` turns the bound step into the window's forward: the
# LSTM and GRU write their gates (the same width as the input projection) over it in place.
_CELL_PARTS = {
    "rnn": dict(num_gates=1, input_weight="W_xh", input_bias="b_h", init=rnn_init,
                zero_carry=_zero_hidden, forward_step=rnn_forward_step,
                forward=sweeps.scan_forward, backward=rnn_backward),
    "lstm": dict(num_gates=4, input_weight="W_x", input_bias="b", init=lstm_init,
                 zero_carry=_lstm_zero_carry, forward_step=lstm_forward_step,
                 forward=sweeps.gates_in_place, backward=lstm_backward),
    "gru": dict(num_gates=3, input_weight="W_x", input_bias="b_x", init=gru_init,
                zero_carry=_zero_hidden, forward_step=gru_forward_step,
                forward=sweeps.gates_in_place, backward=gru_backward),
}


@functools.lru_cache(maxsize=None)
def _build_cell(arch, activation, matmul_dtype):
    parts = _CELL_PARTS[arch]
    options = {"matmul_dtype": matmul_dtype}
    if arch == "rnn":
        options["activation"] = activation
    forward_step = functools.partial(parts["forward_step"], **options)
    return Cell(name=arch, num_gates=parts["num_gates"], input_weight=parts["input_weight"],
                input_bias=parts["input_bias"], init=parts["init"],
                zero_carry=parts["zero_carry"], forward_step=forward_step,
                forward=parts["forward"](forward_step),
                backward=functools.partial(parts["backward"], **options),
                matmul_dtype=matmul_dtype)


# ---------------------------------------------------------------------------------------------
# The public one-step signature (params, carry, x_t) -> (carry, h_t)
# ---------------------------------------------------------------------------------------------
def project_inputs(cell, params, inputs):
    """Input projection ``x W_x + b_x`` for any leading shape.

    inputs: integer character ids ``(...)`` -- a row gather of ``W_x`` (a one-hot matmul without
    the matmul) -- or floats ``(..., I)``. Returns ``(..., G)``.
    """
    weight, bias = params[cell.input_weight], params[cell.input_bias]
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        return jnp.take(weight, inputs, axis=0) + bias
    return matmul(inputs, weight, cell.matmul_dtype) + bias


def make_step(cell):
    """``step(params, carry, x_t) -> (carry, h_t)`` for ``x_t: (B, I)`` floats or ``(B,)`` ids."""
    def step(params, carry, x_t):
        carry, (h, _) = cell.forward_step(params, carry, project_inputs(cell, params, x_t))
        return carry, h
    return step


def rnn_step(params, h_prev, x_t, *, activation="tanh"):
    """Vanilla RNN ``h_t = act(x_t W_xh + h_{t-1} W_hh + b_h)``; returns ``(h_t, h_t)``."""
    return make_step(get_cell("rnn", activation))(params, h_prev, x_t)


def lstm_step(params, carry, x_t):
    """LSTM step on ``x_t: (B, I)``; returns ``(LSTMState(h_t, c_t), h_t)``."""
    return make_step(get_cell("lstm"))(params, carry, x_t)


def gru_step(params, h_prev, x_t):
    """GRU step on ``x_t: (B, I)``; returns ``(h_t, h_t)``."""
    return make_step(get_cell("gru"))(params, h_prev, x_t)
