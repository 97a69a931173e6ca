"""Unrolling stacked cells over time: the autodiff reference and the hand-written BPTT.

Two ways to run the same stack of layers over a window, with identical forward values:

* `reference_unroll` -- the obvious code: one ``lax.scan`` per layer whose body projects ``x_t``
  and steps the cell. Differentiated by JAX (``backward="autodiff"``). Equivalent Python loop::

      for layer in layers:
          carry = state[layer]
          for t in range(T):
              carry, h[t] = step(params[layer], carry, x[t])
          x = h                                  # layer k+1 reads layer k's hidden states

* `stack_forward` / `stack_backward` -- the hand-written path (``backward="manual"``). The input
  projection of each layer is hoisted out of the recurrence (a row gather for character ids, one
  ``(T*B, I) x (I, G)`` GEMM otherwise), the scan body is the one ``(B, H) x (H, G)`` GEMM plus fused
  element-wise work, and the backward is each cell's reverse sweep followed by large GEMMs for the
  weight gradients. `unroll` wraps it in a ``jax.custom_vjp`` for float inputs; `jaxrnn.model` wraps
  the whole language-model loss the same way. The whole manual path of a layer and of the stack
  is here (`layer_forward` / `layer_backward`, `stack_forward` / `stack_backward`); each cell's
  step and its backward are `jaxrnn.cells`, the scans they run in `jaxrnn.scans`.

Layer inputs are ``(T, B) int32`` character ids or ``(T, B, I)`` floats; masks, where given, are
a `jaxrnn.types.WindowMasks` of training-time multipliers: the layers' outputs (dropout and
variational dropout), the recurrence (recurrent dropout and zoneout: `jaxrnn.cells`), and the
parameters (weight-drop on ``W_h`` and embedding dropout on layer 0's rows of ``W_x``: here, in
`layer_forward` and `layer_backward`, with their equations).
"""
import functools

import jax
import jax.numpy as jnp

from jaxrnn import validate
from jaxrnn.cells import make_step, project_inputs, takes_arch
from jaxrnn.errors import ConfigError
from jaxrnn.matmuls import matmul, sum_outer
from jaxrnn.types import LayerMasks, LayerResiduals, RecurrenceMasks, StackGradients

BACKWARDS = ("manual", "autodiff")


def _is_ids(inputs):
    return jnp.issubdtype(inputs.dtype, jnp.integer)


def _apply_mask(hiddens, output_masks, layer):
    """hiddens: (T, B, H); output_masks: None or (L, T, B, H) / (L, 1, B, H) (`WindowMasks`)."""
    return hiddens if output_masks is None else hiddens * output_masks[layer]


def _output_masks(masks):
    return None if masks is None else masks.outputs


def _all_none(fields):
    return all(field is None for field in fields)


def layer_masks(masks, layer):
    """Layer ``layer``'s `LayerMasks` out of a `WindowMasks`; None when it has none (the plain
    layer). The embedding mask goes to layer 0 only."""
    if masks is None:
        return None
    pick = lambda stacked: None if stacked is None else stacked[layer]
    recurrence = RecurrenceMasks(pick(masks.recurrent), pick(masks.zoneout_hidden),
                                 pick(masks.zoneout_cell))
    this = LayerMasks(embedding=masks.embedding if layer == 0 else None,
                      weights=pick(masks.weights),
                      recurrence=None if _all_none(recurrence) else recurrence)
    return None if _all_none(this) else this


def _or_no_masks(masks):
    """``masks``, or a `LayerMasks` of Nones for None."""
    return masks or LayerMasks()


def dropped_weights(cell, params, weight_mask):
    """Weight-drop (DropConnect on the recurrent weights, Merity et al. 2018): ``params`` with
    ``W_h`` replaced by ``W_h * M``, M: (H, G) the window's mask (0 or 1/(1-rate)), shared by all
    streams so that each step is still one ``(B, H) x (H, G)`` GEMM; ``params`` when None."""
    if weight_mask is None:
        return params
    return {**params, cell.recurrent_weight: params[cell.recurrent_weight] * weight_mask}


def embedding_row_scale(embedding_mask, ids):
    """Embedding dropout's multiplier of each gathered row: embedding_mask (B, V), ids (T, B)
    -> (T, B), ``e[b, ids[t, b]]``; None when the mask is None."""
    if embedding_mask is None:
        return None
    return jnp.take_along_axis(embedding_mask.T, ids, axis=0)


# ---------------------------------------------------------------------------------------------
# Reference: plain scan, differentiated by JAX
# ---------------------------------------------------------------------------------------------
def reference_unroll(cell, layers, inputs, state, masks=None):
    """Plain per-step unroll of a stack of layers; JAX differentiates it.

    Args:
      cell: a `jaxrnn.cells.Cell`; layers: list of L cell-parameter dicts;
      inputs: (T, B) int ids or (T, B, I) floats; state: tuple of L carries;
      masks: None or a `WindowMasks`: each layer's recurrent weights times its weight-drop mask,
        its input rows times the embedding mask (layer 0), each step given its rows of the
        recurrence masks, and each layer's output times its output mask.
    Returns: ``(outputs (T, B, H), final_state)`` -- outputs of the top layer after its mask.
    """
    step = make_step(cell)
    x, final_state = inputs, []
    for index, (params, carry0) in enumerate(zip(layers, state)):
        this = layer_masks(masks, index)
        if this is None:
            carry, hiddens = jax.lax.scan(functools.partial(step, params), carry0, x)
        else:
            params = dropped_weights(cell, params, this.weights)
            recurrence = this.recurrence or RecurrenceMasks()
            row_scale = embedding_row_scale(this.embedding, x) if _is_ids(x) else None

            def masked_step(carry, inputs_t, params=params, recurrent=recurrence.recurrent):
                x_t, rows_t, row_scale_t = inputs_t
                return step(params, carry, x_t, rows_t._replace(recurrent=recurrent), row_scale_t)

            carry, hiddens = jax.lax.scan(masked_step, carry0,
                                          (x, recurrence._replace(recurrent=None), row_scale))
        final_state.append(carry)
        x = _apply_mask(hiddens, _output_masks(masks), index)
    return x, tuple(final_state)


# ---------------------------------------------------------------------------------------------
# Hand-written BPTT
# ---------------------------------------------------------------------------------------------
def layer_forward(cell, params, inputs, carry0, masks=None):
    """One layer, input projection hoisted: ``(carry_T, hiddens (T, B, H), LayerResiduals)``.

    masks: None or the layer's `LayerMasks`. Forward of the two that act on the parameters,
    with ``M`` the weight-drop mask (H, G), shared by the streams, and ``e`` the embedding mask
    (B, V), both 0 or ``1/(1-rate)``::

        W_h' = W_h * M                                  (the cell runs with W_h')
        xproj[t, b] = W_x[id_tb] * e[b, id_tb] + b_x    (layer 0 on ids: whole characters)

    The recurrence masks go to the cell (`jaxrnn.cells`).
    """
    masks = _or_no_masks(masks)
    params = dropped_weights(cell, params, masks.weights)
    row_scale = embedding_row_scale(masks.embedding, inputs) if _is_ids(inputs) else None
    xproj = project_inputs(cell, params, inputs, row_scale)          # (T, B, G)
    carry_T, hiddens, cell_residuals = cell.forward(params, carry0, xproj, masks.recurrence)
    return carry_T, hiddens, LayerResiduals(inputs, carry0, hiddens, cell_residuals)


def layer_backward(cell, params, residuals, d_hiddens, d_carry_T, masks=None):
    """Backward of `layer_forward`.

    Runs the cell's reverse sweep (with ``W_h' = W_h * M`` under weight-drop, and the recurrence
    masks) for ``d_xproj: (T, B, G)``, then the input projection's gradients as whole-window
    operations::

        dW_h = M * dW_h'    (the sweep's gradient of the weights it ran with, masked)
        dW_x = X^T dXproj   (one (I, N) x (N, G) GEMM; for ids, a scatter-add of rows:
                             dW_x[v] = sum over (t, b) with id_tb = v of e[b, v] * dXproj[t, b])
        db_x = sum over all N rows of dXproj
        dX   = dXproj W_x^T (one (N, G) x (G, I) GEMM; None for ids)

    Returns: ``(grads like params, d_inputs (T, B, I) or None, d_carry0, d_xproj (T, B, G))``.
    """
    masks = _or_no_masks(masks)
    d_xproj, d_carry0, grads = cell.backward(
        dropped_weights(cell, params, masks.weights), residuals.carry0, residuals.hiddens,
        residuals.cell, d_hiddens, d_carry_T, masks.recurrence)
    weight = params[cell.input_weight]
    grads = dict(grads)
    if masks.weights is not None:
        grads[cell.recurrent_weight] = grads[cell.recurrent_weight] * masks.weights
    grads[cell.input_bias] = d_xproj.sum(axis=(0, 1))
    if _is_ids(residuals.inputs):
        row_scale = embedding_row_scale(masks.embedding, residuals.inputs)
        d_rows = d_xproj if row_scale is None else d_xproj * row_scale[..., None]
        grads[cell.input_weight] = jnp.zeros_like(weight).at[residuals.inputs].add(d_rows)
        d_inputs = None
    else:
        grads[cell.input_weight] = sum_outer(residuals.inputs, d_xproj, cell.matmul_dtype)
        d_inputs = matmul(d_xproj, weight.T, cell.matmul_dtype)
    return grads, d_inputs, d_carry0, d_xproj


def stack_forward(cell, layers, inputs, state, masks=None):
    """Forward of a stack of layers saving what `stack_backward` needs.

    masks: None or a `WindowMasks` (each layer gets its `LayerMasks`, see `layer_forward`).
    Returns: ``(outputs (T, B, H), final_state, residuals: list of L LayerResiduals)``; outputs are
    the top layer's hidden states after its output mask.
    """
    x, final_state, residuals = inputs, [], []
    for index, (params, carry0) in enumerate(zip(layers, state)):
        carry_T, hiddens, layer_residuals = layer_forward(cell, params, x, carry0,
                                                          layer_masks(masks, index))
        final_state.append(carry_T)
        residuals.append(layer_residuals)
        x = _apply_mask(hiddens, _output_masks(masks), index)
    return x, tuple(final_state), residuals


def stack_backward(cell, layers, residuals, masks, d_outputs, d_final_state):
    """Backward of `stack_forward`, top layer first.

    Each layer's output mask ``m`` (``x = m * h``) gives ``dh = m * dx``, and its own cotangent
    ``h * dx`` (summed over time for a variational mask, whose time axis has size 1).

    Args:
      residuals: from `stack_forward`; masks: None or a `WindowMasks`;
      d_outputs: (T, B, H) cotangent of the top outputs; d_final_state: cotangent of final_state.
    Returns: a `StackGradients`; its masks are None without masks, else a `WindowMasks` holding
    the output masks' cotangent (L, T or 1, B, H) and None (zero) for the others: every mask is
    drawn from a key, and nothing differentiates it.
    """
    num_layers = len(layers)
    layer_grads, d_state0, d_masks = [None] * num_layers, [None] * num_layers, [None] * num_layers
    d_projections = [None] * num_layers
    output_masks = _output_masks(masks)
    d_x = d_outputs
    for index in reversed(range(num_layers)):
        layer_residuals = residuals[index]
        if output_masks is not None:
            d_masks[index] = d_x * layer_residuals.hiddens
            if output_masks.shape[1] == 1:
                d_masks[index] = d_masks[index].sum(axis=0, keepdims=True)
        d_hiddens = _apply_mask(d_x, output_masks, index)
        layer_grads[index], d_x, d_state0[index], d_projections[index] = layer_backward(
            cell, layers[index], layer_residuals, d_hiddens, d_final_state[index],
            layer_masks(masks, index))
    if masks is not None:
        d_masks = type(masks)(outputs=None if output_masks is None else jnp.stack(d_masks))
    return StackGradients(layer_grads, d_x, tuple(d_state0), None if masks is None else d_masks,
                          d_projections)


# ---------------------------------------------------------------------------------------------
# custom_vjp over a stack unroll of float inputs
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _manual_unroll(cell, layers, xs, state):
    outputs, final_state, _ = stack_forward(cell, layers, xs, state)
    return outputs, final_state


def _manual_unroll_fwd(cell, layers, xs, state):
    # fwd: (layers, xs, state) -> ((outputs, final_state), (layers, residuals))
    outputs, final_state, residuals = stack_forward(cell, layers, xs, state)
    return (outputs, final_state), (layers, residuals)


def _manual_unroll_bwd(cell, saved, cotangents):
    # bwd: ((layers, residuals), (d_outputs, d_final_state)) -> (d_layers, d_xs, d_state)
    layers, residuals = saved
    d_outputs, d_final_state = cotangents
    grads = stack_backward(cell, layers, residuals, None, d_outputs, d_final_state)
    return grads.layers, grads.inputs, grads.state0


_manual_unroll.defvjp(_manual_unroll_fwd, _manual_unroll_bwd)


@takes_arch
def unroll(layers, xs, state=None, *, arch, backward="manual", activation=None,
           matmul_dtype=None):
    """Run stacked cells over float inputs.

    Args:
      layers: list of L cell-parameter dicts (layer 0 has input width I, the others H).
      xs: (T, B, I) float inputs, time-major, T >= 1, in the layers' dtype.
      state: tuple of L carries in the layers' dtype (an error otherwise, not a cast), or None
        for zeros.
      arch: "rnn" | "lstm" | "gru", or a `jaxrnn.cells.Cell` (`jaxrnn.cells.takes_arch`);
        activation: see `jaxrnn.cells.get_cell`.
      backward: "manual" (hand-written BPTT via custom_vjp) or "autodiff" (JAX differentiates).
      matmul_dtype: None, or "bfloat16" for bfloat16 matmuls with float32 accumulation
        (`jaxrnn.matmuls.matmul`).
    Returns: ``(hiddens (T, B, H) of the top layer, final_state)``.
    """
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    num_layers, hidden_size, dtype = validate.layers(layers, cell)
    validate.float_inputs(xs, layers[0][cell.input_weight].shape[0], dtype)
    if state is None:
        state = tuple(cell.zero_carry(xs.shape[1], hidden_size, xs.dtype) for _ in layers)
    state = validate.state(state, cell, num_layers, xs.shape[1], hidden_size, dtype)
    if backward == "manual":
        return _manual_unroll(cell, list(layers), xs, tuple(state))
    if backward == "autodiff":
        return reference_unroll(cell, layers, xs, tuple(state))
    raise ConfigError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")
