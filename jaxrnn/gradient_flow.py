"""Vanishing and exploding gradients, measured: how much of the loss at the end of a window
reaches each earlier time step.

For a window of T characters take the loss of its *last* prediction only, summed over the B
independent streams, ``L_T = -sum_b log p(y_T^b | x_1^b .. x_T^b)``. The gradient that reaches
step t of layer l is

    g_t = dL_T / da_t,    a_t = x_t W_x + b    (the step's input projection, (B, G))

which is what BPTT builds every weight gradient from: ``dW_x = sum_t x_t^T g_t`` and, through
the recurrent pre-activation, ``dW_h = sum_t h_{t-1}^T g_t`` (for the GRU's candidate block, the
recurrent part is gated by r). Plotted against the distance ``d = T - t`` (0 for the last step),
``|g|`` shrinking geometrically is the vanishing gradient (Bengio et al. 1994; Hochreiter 1991)
and growing geometrically the exploding one (Pascanu et al. 2013): a step the gradient does not
reach cannot be taught anything by the loss at the end of the window.

``backward="manual"`` takes every ``g_t`` from the model's own hand-written backward (the output
layer's `jaxrnn.model.head_backward`, then `jaxrnn.unroll.stack_backward`: one reverse sweep per
layer, no automatic differentiation); ``"autodiff"`` from `jax.grad` of the plain scan with
respect to an additive zero perturbation of each input projection. The two agree to float64
round-off (tests/test_gradient_flow.py).

This module measures; the tables, plots, JSON records and model specifications of the
``experiments.gradient_flow`` launcher are in `experiments.reporting`.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells import Cell, project_inputs, takes_arch
from jaxrnn.errors import ConfigError
from jaxrnn.model import (head_backward, hidden_size_of, init_params, output_log_probs, token_nll,
                          zero_state_for)
from jaxrnn.unroll import BACKWARDS, stack_backward, stack_forward

RELATIVE_FLOOR = 1e-3   # `reach`: the first distance where |g| < RELATIVE_FLOOR * |g| at d = 0


class GradientFlow(NamedTuple):
    """Per-layer gradient norms by distance from the end of the window.

    norms: (L, T) median over the B streams of ``|g_t|`` (Euclidean norm over the G features of
      one stream), index ``[l, d]`` for layer l and distance ``d = T - t`` (``d = 0``: last step).
    factor_per_step: (L,) the per-step ratio ``|g|_{d+1} / |g|_d`` as ``exp(slope)`` of a
      least-squares line through ``log |g|_d`` over ``d >= 1`` (NaN when fewer than two of those
      norms are non-zero): < 1 vanishes, > 1 explodes.
    reach: (L,) the first distance d with ``|g|_d < RELATIVE_FLOOR * |g|_0``; -1 if none within T;
      0 if ``|g|_0 = 0`` (no gradient reaches even the last step).
    """

    norms: np.ndarray
    factor_per_step: np.ndarray
    reach: np.ndarray


def last_step_cotangent(params, last_hidden, last_targets, matmul_dtype=None):
    """dL_T/dh_T through the output layer, for ``L_T`` summed over streams.

    ``y = h_T W_hy + b_y``, ``p = softmax(y)``: ``dy = p - onehot(target)``, ``dh_T = dy W_hy^T``:
    the model's head backward (`jaxrnn.model.head_backward`) of a one-step window, whose mean
    loss times B is ``L_T`` (cotangent ``d_loss = B``).

    Args: last_hidden: (B, H) top layer's ``h_T``; last_targets: (B,) int32.
    Returns: (B, H).
    """
    log_probs = output_log_probs(params, last_hidden, matmul_dtype)
    _, d_hidden = head_backward(params, last_hidden[None], log_probs[None], last_targets[None],
                                last_targets.size, matmul_dtype)
    return d_hidden[0]


def _last_step_only(d_last, seq_len):
    """(B, H) -> (T, B, H): zeros but the last step, the cotangent of the hiddens under L_T."""
    return jnp.zeros((seq_len, *d_last.shape), d_last.dtype).at[-1].set(d_last)


def _manual_projection_gradients(cell, params, inputs, targets, state):
    """The model's hand-written backward (`jaxrnn.unroll.stack_backward`) of ``L_T``, with no
    gradient on the final state; returns its L arrays g (T, B, G), the bottom layer's first."""
    outputs, _, residuals = stack_forward(cell, params["layers"], inputs, state)
    d_outputs = _last_step_only(
        last_step_cotangent(params, outputs[-1], targets[-1], cell.matmul_dtype), len(outputs))
    return stack_backward(cell, params["layers"], residuals, None, d_outputs,
                          jax.tree.map(jnp.zeros_like, state)).projections


def _autodiff_projection_gradients(cell, params, inputs, targets, state):
    """`jax.grad` of the plain scan w.r.t. a zero perturbation of each layer's projection."""
    def last_loss(perturbations):
        x = inputs
        for layer_params, carry0, perturbation in zip(params["layers"], state, perturbations):
            xproj = project_inputs(cell, layer_params, x) + perturbation
            _, (x, _) = jax.lax.scan(
                lambda carry, xproj_t, p=layer_params: cell.forward_step(p, carry, xproj_t),
                carry0, xproj)
        log_probs = output_log_probs(params, x[-1], cell.matmul_dtype)
        return token_nll(log_probs, targets[-1]).sum()

    seq_len, batch_size = inputs.shape[:2]
    width = cell.num_gates * hidden_size_of(params)
    zeros = [jnp.zeros((seq_len, batch_size, width), params["W_hy"].dtype)
             for _ in params["layers"]]
    return jax.grad(last_loss)(zeros)


@takes_arch
def projection_gradients(params, inputs, targets, *, arch, activation=None, backward="manual",
                         matmul_dtype=None, zoneout=None):
    """``g_t = dL_T/da_t`` for every step and layer (see the module docstring), zero start state.

    Args:
      params: a language model's parameters (`jaxrnn.init_params` or a checkpoint).
      inputs, targets: (B, T) int32 windows; only the last target enters ``L_T``.
      backward: "manual" (hand-written sweeps) or "autodiff" (`jax.grad`).
      zoneout: the cell's zoneout rates (None: none), as their expectation (no masks here).
    Returns: list of L arrays (T, B, G), bottom layer first.
    """
    if backward not in BACKWARDS:
        raise ConfigError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")
    inputs, targets = jnp.asarray(inputs).T, jnp.asarray(targets).T       # (T, B), time-major
    if inputs.shape[0] < 2:
        raise ConfigError(f"a window of {inputs.shape[0]} step(s) has no earlier step to reach; "
                          "use --seq_len of 2 or more")
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    state = zero_state_for(params, cell, inputs.shape[1])
    compute_gradients = (_manual_projection_gradients if backward == "manual"
                         else _autodiff_projection_gradients)
    return compute_gradients(cell, params, inputs, targets, state)


def norms_by_distance(gradients):
    """list of L arrays (T, B, G) -> (L, T) NumPy: per-stream norms over G, median over B,
    reversed so that index d is the distance from the last step."""
    per_stream = np.stack([_norms(np.asarray(grads, np.float64)) for grads in gradients])
    return np.median(per_stream, axis=-1)[:, ::-1]               # (L, T, B) -> (L, T)


def _norms(values):
    """Euclidean norms over the last axis, scaled by the largest entry first so that tiny
    gradients (float32 entries below ~1e-19 square to zero; float64 below ~1e-154) do not
    underflow."""
    scale = np.abs(values).max(axis=-1, keepdims=True)
    safe = np.where(scale > 0, scale, 1.0)
    return (safe * np.sqrt(((values / safe) ** 2).sum(axis=-1, keepdims=True)))[..., 0]


def fit_factor_per_step(norms):
    """norms: (T,) by distance -> the geometric per-step ratio fitted on ``log |g|`` over d >= 1."""
    distances = np.arange(1, len(norms))
    values = np.asarray(norms[1:], dtype=np.float64)
    keep = values > 0
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(distances[keep], np.log(values[keep]), 1)[0]
    return float(np.exp(slope))


def first_reach(norms, relative_floor=RELATIVE_FLOOR):
    """norms: (T,) by distance -> first d with ``norms[d] < relative_floor * norms[0]``; -1 if
    none; 0 if ``norms[0] == 0``."""
    if norms[0] == 0:
        return 0
    below = np.nonzero(np.asarray(norms) < relative_floor * norms[0])[0]
    return int(below[0]) if below.size else -1


def gradient_flow(params, inputs, targets, *, arch, activation=None, backward="manual",
                  matmul_dtype=None, zoneout=None):
    """`projection_gradients` summarised as a `GradientFlow`."""
    norms = norms_by_distance(projection_gradients(
        params, inputs, targets, arch=arch, activation=activation, backward=backward,
        matmul_dtype=matmul_dtype, zoneout=zoneout))
    return GradientFlow(norms, np.array([fit_factor_per_step(row) for row in norms]),
                        np.array([first_reach(row) for row in norms]))


# ---------------------------------------------------------------------------------------------
# Models to compare
# ---------------------------------------------------------------------------------------------
class Model(NamedTuple):
    """A model to measure: ``label``, ``params``, ``cell`` (its `Cell`, the ``arch`` of
    `gradient_flow`) and ``source`` (a JSON-ready description)."""

    label: str
    params: dict
    cell: Cell
    source: dict


@takes_arch
def fresh_model(vocab_size, hidden_size, num_layers=1, *, arch, activation=None,
                recurrent_init="orthogonal", seed=0, dtype="float32"):
    """A freshly initialised `Model` (``activation``: `jaxrnn.cells.get_cell`)."""
    cell = arch                             # a Cell with the activation in it (`takes_arch`)
    dtype = jnp.dtype(dtype).name
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("float64 models need jax_enable_x64; switch it on first")
    params = init_params(jax.random.key(seed), cell, vocab_size, hidden_size, num_layers,
                         dtype=jnp.dtype(dtype), recurrent_init=recurrent_init)
    options = {"arch": cell.name, "activation": cell.activation, "recurrent_init": recurrent_init}
    name = ":".join(filter(None, options.values()))
    return Model(f"{name} H={hidden_size} init", params, cell,
                 {"kind": "init", "seed": seed, "dtype": dtype, **options,
                  "hidden_size": hidden_size, "num_layers": num_layers})


def trained_model(params, config, *, step, path):
    """The `Model` of a trained checkpoint's ``params`` and `jaxrnn.config.Config` (loaded by the
    caller); ``step`` and ``path`` only label it."""
    if config.dtype == "float64" and params["W_hy"].dtype != jnp.float64:
        raise ConfigError(f"checkpoint {path} is float64; switch on jax_enable_x64 first")
    cell = config.cell
    name = ":".join(filter(None, [cell.name, cell.activation, config.recurrent_init]))
    dtype = "bfloat16 matmuls" if config.bf16_matmuls else config.dtype
    return Model(f"{name} H={config.hidden_size} step {step} ({path})", params, cell,
                 {"kind": "checkpoint", "path": str(path), "step": step, "arch": config.arch,
                  "activation": cell.activation, "recurrent_init": config.recurrent_init,
                  "hidden_size": config.hidden_size, "num_layers": config.num_layers,
                  "dtype": dtype})
