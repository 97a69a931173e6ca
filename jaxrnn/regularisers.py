"""Training-time regularisers of the recurrent language model: their rates, their masks, and the
element-wise pieces the cells' forward steps and backward sweeps use.

Each is off at rate 0; its masks are drawn afresh for every training window, inside the
compiled training chunk, from the run's key (`jaxrnn.train` folds one ``STEP_*`` stream per
regulariser out of the step's key), and none acts at evaluation or sampling::

    rate p               mask (one window)     values        acts on                     paper
    variational_dropout  outputs (L, 1, B, H)  0 | 1/(1-p)   each layer's output         [1]
    recurrent_dropout    recurrent (L, B, H)   0 | 1/(1-p)   h_{t-1} entering h W_h      [1]
    weight_drop          weights (L, H, G)     0 | 1/(1-p)   W_h, shared by the streams  [2]
    embedding_dropout    embedding (B, V)      0 | 1/(1-p)   layer 0's rows of W_x       [1]
    zoneout_hidden       zoneout_hidden        1 (keep h_{t-1}) with prob. p, per unit   [3]
                         (L, T, B, H)          and step
    zoneout_cell         zoneout_cell          the same for the LSTM's c                 [3]
                         (L, T, B, H)

    [1] Gal & Ghahramani 2016, variational RNN dropout; [2] Merity, Keskar & Socher 2018,
    AWD-LSTM; [3] Krueger et al. 2017, zoneout.

The dropout masks are inverted (kept entries scaled by ``1/(1-p)``), so their expected multiplier
is 1 and evaluation uses none. Variational, recurrent and embedding masks are one per stream and
window, the same at every step; the weight-drop mask is one per window shared by the streams, so
each step's recurrent product stays one ``(B, H) x (H, G)`` GEMM; zoneout's masks are fresh at
every step, and evaluation and sampling use their expectation ``p * x_{t-1} + (1 - p) * x~_t``
(the zoneout rates are part of the cell, `jaxrnn.cells.get_cell`). Dropout on the same
connections as variational dropout but with a fresh mask at every step (Zaremba et al. 2014) is
``loss_fn(dropout=...)``, drawn in `jaxrnn.model`; with both, the two output masks multiply.

The forward and adjoint equations live beside the code that runs them: recurrent dropout and
zoneout in each cell's step and backward (`jaxrnn.cells`), weight-drop and embedding dropout in
`jaxrnn.unroll.layer_forward` / `layer_backward`, the output masks in
`jaxrnn.unroll.stack_backward`.

Masks are drawn as 16-bit random numbers, two from each 32-bit word of ``jax.random.bits``,
compared with ``round(p * 2^16)``: rates are rounded to multiples of 2^-16 (`rounded_rate`:
0.1 -> 0.100006), and the dropout masks' ``1/(1-p)`` uses the rounded rate, so their expected
multiplier is exactly 1. On the CPU the random bits are most of the cost of the (L, T, B, H)
zoneout masks, and half as many words halve it (BUILD_NOTES.md, "Regularisers").
"""
import math
from typing import Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn.errors import ConfigError
from jaxrnn.types import RecurrenceMasks, WindowMasks


class Rates(NamedTuple):
    """The rates of the regularisers (each in [0, 1); 0 is off). Field names are the launcher
    flags (`jaxrnn.config.Config`)."""

    variational_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0
    zoneout_hidden: float = 0.0
    zoneout_cell: float = 0.0


NAMES = Rates._fields


def zoneout_of(rates: Rates):
    """The cell's zoneout rates ``(p_h, p_c)``, or None when both are 0 (`jaxrnn.cells`)."""
    if not (rates.zoneout_hidden or rates.zoneout_cell):
        return None
    return (float(rates.zoneout_hidden), float(rates.zoneout_cell))


_LEVELS = 2 ** 16     # resolution of the masks' probabilities


def rounded_rate(probability):
    """``probability`` rounded to the multiple of 2^-16 that `bernoulli_bits` draws (below 1)."""
    return min(round(float(probability) * _LEVELS), _LEVELS - 1) / _LEVELS


def bernoulli_bits(key, probability, shape):
    """A bool array of ``shape``, each entry True with `rounded_rate` ``(probability)``: 16-bit
    random numbers below ``round(probability * 2^16)``, the two halves of each 32-bit word of
    ``jax.random.bits`` (half the words of one per entry: on the CPU the draw costs about half)."""
    size = math.prod(shape)
    words = jax.random.bits(key, ((size + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([words & jnp.uint32(_LEVELS - 1), words >> 16])[:size]
    threshold = round(rounded_rate(probability) * _LEVELS)
    return (halves < jnp.uint32(threshold)).reshape(shape)


def inverted_dropout(key, rate, shape, dtype):
    """Multipliers of ``shape``: 0 with probability ``rate`` (`rounded_rate`), else
    ``1/(1-rate)`` of the rounded rate."""
    keep = ~bernoulli_bits(key, rate, shape)
    scale = 1.0 / (1.0 - rounded_rate(rate))
    return jnp.where(keep, jnp.asarray(scale, dtype), jnp.zeros((), dtype))


def mask_shapes(num_layers, seq_len, batch_size, vocab_size, hidden_size, num_gates):
    """The documented shape of each `WindowMasks` field this module draws (L, T, B, V, H, and
    G = num_gates * H)."""
    L, T, B, V, H = num_layers, seq_len, batch_size, vocab_size, hidden_size
    return WindowMasks(outputs=(L, 1, B, H), embedding=(B, V), weights=(L, H, num_gates * H),
                       recurrent=(L, B, H), zoneout_hidden=(L, T, B, H),
                       zoneout_cell=(L, T, B, H))


def draw_masks(rates: Rates, keys: Mapping[str, jax.Array], *, num_layers, seq_len, batch_size,
               vocab_size, hidden_size, num_gates, dtype) -> Optional[WindowMasks]:
    """The `WindowMasks` of one training window, or None when every rate is 0.

    Args:
      rates: a `Rates`; keys: one PRNG key per regulariser with a rate above 0, by its name
        (`NAMES`); the others are not read.
      num_layers, seq_len, batch_size, vocab_size, hidden_size: L, T, B, V, H; num_gates: G / H
        (1 rnn, 4 lstm, 3 gru); dtype: the masks' float dtype (the parameters').
    Returns: the masks in the shapes of `mask_shapes` (see the module docstring), None where
    their rate is 0.
    """
    if not any(rates):
        return None
    shapes = mask_shapes(num_layers, seq_len, batch_size, vocab_size, hidden_size, num_gates)
    dropped = {"variational_dropout": "outputs", "recurrent_dropout": "recurrent",
               "weight_drop": "weights", "embedding_dropout": "embedding"}
    masks = {}
    for name, field in dropped.items():
        rate = getattr(rates, name)
        if rate:
            masks[field] = inverted_dropout(keys[name], rate, getattr(shapes, field), dtype)
    for name in ("zoneout_hidden", "zoneout_cell"):
        rate = getattr(rates, name)
        if rate:
            masks[name] = bernoulli_bits(keys[name], rate, getattr(shapes, name)).astype(dtype)
    return WindowMasks(**masks)


def check_masks(masks: WindowMasks, cell, num_layers, seq_len, batch_size, vocab_size,
                hidden_size):
    """Raise ConfigError unless every mask of ``masks`` has its documented shape (outputs may
    also be dropout's (L, T, B, H)) and zoneout_cell comes with an LSTM."""
    if not isinstance(masks, WindowMasks):
        raise ConfigError(f"masks must be a jaxrnn.types.WindowMasks, got {type(masks).__name__}; "
                          "draw them with jaxrnn.regularisers.draw_masks")
    shapes = mask_shapes(num_layers, seq_len, batch_size, vocab_size, hidden_size,
                         cell.num_gates)
    for field, mask in zip(WindowMasks._fields, masks):
        if mask is None:
            continue
        expected = [getattr(shapes, field)]
        if field == "outputs":
            expected.append((num_layers, seq_len, batch_size, hidden_size))
        if tuple(mask.shape) not in expected:
            raise ConfigError(f"masks.{field} has shape {tuple(mask.shape)}, expected "
                              f"{' or '.join(str(shape) for shape in expected)} for L, T, B, V, "
                              f"H = {num_layers}, {seq_len}, {batch_size}, {vocab_size}, "
                              f"{hidden_size}; draw them for this window's shape")
    if masks.zoneout_cell is not None and not cell.zones_out_cell:
        raise ConfigError(f"masks.zoneout_cell is for the LSTM's cell state; arch={cell.name} has "
                          "none, leave it None")


# ---------------------------------------------------------------------------------------------
# Inside the recurrence (`jaxrnn.cells`): r multiplies h_{t-1} where it enters h_{t-1} W_h, and
# zoneout mixes the new value with the previous one, x_t = k * x_{t-1} + (1 - k) * x~_t. Each
# helper is the identity when its mask is None, so the plain cell runs exactly its own operations.
# ---------------------------------------------------------------------------------------------
def dropped(values, mask):
    """``values * mask``: recurrent dropout's ``h_{t-1} * r`` (forward) and ``(da W_h^T) * r``
    (adjoint); ``values`` when ``mask`` is None."""
    return values if mask is None else values * mask


def zoned(keep, previous, new):
    """Zoneout forward, ``k * previous + (1 - k) * new``; ``new`` when ``keep`` is None."""
    return new if keep is None else keep * previous + (1 - keep) * new


def to_new(d_zoned, keep):
    """Zoneout adjoint to the new value: ``(1 - k) * d``; ``d`` when ``keep`` is None."""
    return d_zoned if keep is None else (1 - keep) * d_zoned


def to_previous(d_previous, d_zoned, keep):
    """Zoneout adjoint to the previous value: ``d_previous + k * d``."""
    return d_previous if keep is None else d_previous + keep * d_zoned


def keep_factor(mask_row, rate):
    """The zoneout factor k of a step: the mask's row (training), else the rate p (the
    expectation, evaluation), else None (no zoneout)."""
    if mask_row is not None:
        return mask_row
    return rate if rate else None


def step_regularisers(masks_t, zoneout):
    """``(r (B, H) or None, k_h, k_c)`` of one step from a `RecurrenceMasks` of rows and the
    cell's zoneout rates ``(p_h, p_c)`` or None."""
    rates = zoneout or (0.0, 0.0)
    masks_t = masks_t or RecurrenceMasks()
    return (masks_t.recurrent, keep_factor(masks_t.zoneout_hidden, rates[0]),
            keep_factor(masks_t.zoneout_cell, rates[1]))


def window_regularisers(masks, zoneout):
    """``(r (B, H) or None, k_h rows (T, B, H) or None, k_c rows or None, p_h, p_c)`` of a
    window: the masks to scan alongside the sweep and the rates that stand in for them."""
    rates = zoneout or (0.0, 0.0)
    masks = masks or RecurrenceMasks()
    return masks.recurrent, masks.zoneout_hidden, masks.zoneout_cell, rates[0], rates[1]
