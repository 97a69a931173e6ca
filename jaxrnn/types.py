"""Shape legend and the small NamedTuples that travel through the library.

Shape legend, used in every docstring of the package::

    T  time steps in one window (sequence length)
    B  batch: parallel streams of text
    V  vocabulary size (number of distinct characters)
    I  input width of a layer (V for the first layer of the language model, H above it)
    H  hidden size
    G  gates times H: 1*H (rnn), 4*H (lstm, packed i, f, g, o), 3*H (gru, packed r, z, n)
    L  number of stacked layers
    N  T*B rows, when the time and batch axes are flattened together

Inside the library arrays are *time-major*, ``(T, B, ...)``; the public model functions take
batch-major ``(B, T)`` integer windows and transpose once at that boundary. Hidden states are row
vectors: ``h_t = act(x_t @ W_xh + h_{t-1} @ W_hh + b_h)`` acts on a ``(B, I)`` block at a time.

Carries: an RNN or GRU layer carries ``h: (B, H)``; an LSTM layer carries ``LSTMState(hidden, cell)``.
A model state is a tuple with one carry per layer.
"""
from typing import NamedTuple, Optional, Sequence, Union

import jax

Array = jax.Array


class LSTMState(NamedTuple):
    """Carry of one LSTM layer: ``hidden: (B, H)`` and ``cell: (B, H)``."""

    hidden: Array
    cell: Array


Carry = Union[Array, LSTMState]
ModelState = Sequence[Carry]  # one carry per layer, a tuple


class LSTMResiduals(NamedTuple):
    """What the LSTM forward saves per step for the hand-written backward.

    gates: (T, B, 4H) post-activation gates packed ``[i, f, g, o]``.
    cells: (T, B, H) cell states ``c_t`` (``tanh(c_t)`` is recomputed in the backward).
    The hidden states ``h_t`` are the layer's output and are held once, by the caller.
    """

    gates: Array
    cells: Array


class GRUResiduals(NamedTuple):
    """What the GRU forward saves per step.

    gates: (T, B, 3H) packed ``[r, z, n]``: the reset and update gates and the candidate.
    hn: (T, B, H) ``h_{t-1} @ W_hn + b_hn``, the recurrent part of the candidate's
        pre-activation (needed for ``d r``).
    """

    gates: Array
    hn: Array


class RNNResiduals(NamedTuple):
    """The vanilla RNN saves nothing beyond its outputs: ``act'`` is written in terms of ``h_t``.

    candidates: None, or with zoneout (T, B, H) the new values ``act(a_t)`` before zoneout mixes
        in ``h_{t-1}`` (``act'`` is then written in terms of them).
    """

    candidates: Optional[Array] = None


Residuals = Union[LSTMResiduals, GRUResiduals, RNNResiduals]


class LayerResiduals(NamedTuple):
    """Everything one layer's backward needs.

    inputs: the layer input, ``(T, B) int32`` character ids for the first layer of the language
        model, else ``(T, B, I)`` floats (the previous layer's output after dropout).
    carry0: the initial carry of the layer.
    hiddens: (T, B, H) the layer's outputs ``h_1 .. h_T`` (before dropout).
    cell: the cell-specific residuals.
    """

    inputs: Array
    carry0: Carry
    hiddens: Array
    cell: Residuals


class RecurrenceMasks(NamedTuple):
    """One layer's training-time multipliers inside its recurrence, for one window; None: off.

    recurrent: (B, H) recurrent (variational) dropout on ``h_{t-1}`` where it enters
        ``h_{t-1} W_h``: 0 or ``1/(1-rate)``, the same at every step (Gal & Ghahramani 2016).
    zoneout_hidden: (T, B, H) 1 where a unit keeps ``h_{t-1}`` at step t, else 0 (Krueger et al.
        2017).
    zoneout_cell: (T, B, H) the same for the LSTM's cell ``c``.

    A cell's ``forward_step`` takes the same tuple with the zoneout fields cut to the step's rows
    (B, H). Where a zoneout field is None and the cell has a zoneout rate p, the cell uses the
    expectation ``p`` in place of the mask (evaluation and sampling).
    """

    recurrent: Optional[Array] = None
    zoneout_hidden: Optional[Array] = None
    zoneout_cell: Optional[Array] = None


class LayerMasks(NamedTuple):
    """One layer's training-time multipliers for one window; None: off.

    embedding: (B, V) embedding dropout of layer 0 on character ids: each stream's rows of the
        input weights (whole characters) scaled by 0 or ``1/(1-rate)``; None for other layers.
    weights: (H, G) weight-drop (DropConnect) multipliers of the recurrent weights, 0 or
        ``1/(1-rate)``, shared by the B streams (Merity et al. 2018).
    recurrence: `RecurrenceMasks` or None.
    """

    embedding: Optional[Array] = None
    weights: Optional[Array] = None
    recurrence: Optional[RecurrenceMasks] = None


class WindowMasks(NamedTuple):
    """Every training-time multiplier of the model for one window, stacked over the L layers;
    None where that regulariser is off (`jaxrnn.regularisers.draw_masks` draws them).

    outputs: (L, T, B, H) or (L, 1, B, H) multipliers of each layer's output (between layers and
        before the output projection): dropout (a fresh mask per step) and/or variational
        dropout (one per window, the size-1 time axis), multiplied together.
    embedding: (B, V); weights: (L, H, G); recurrent: (L, B, H); zoneout_hidden, zoneout_cell:
        (L, T, B, H): per layer as in `LayerMasks` and `RecurrenceMasks`.
    """

    outputs: Optional[Array] = None
    embedding: Optional[Array] = None
    weights: Optional[Array] = None
    recurrent: Optional[Array] = None
    zoneout_hidden: Optional[Array] = None
    zoneout_cell: Optional[Array] = None


class StackGradients(NamedTuple):
    """What the manual backward of a stack of L layers returns (`jaxrnn.unroll.stack_backward`).

    layers: list of L gradient dicts, like the layers' parameters.
    inputs: (T, B, I) gradient of the float inputs, None for character ids.
    state0: tuple of L carries, the gradient of the initial state.
    masks: None without masks, else a `WindowMasks` of the output masks' gradient.
    projections: list of L (T, B, G) gradients of each layer's input projection
        ``x W_x + b_x`` (`jaxrnn.gradient_flow` measures them).
    """

    layers: list
    inputs: Optional[Array]
    state0: tuple
    masks: Optional[WindowMasks]
    projections: list


class TrainState(NamedTuple):
    """Everything that evolves during training; a checkpoint saves exactly this.

    params: model parameters; opt_state: the optax state; model_state: the hidden state carried
    from one truncated-BPTT window to the next (tuple of L carries, batch B); step: () int32
    optimiser steps taken; window: () int32 index of the next window within the epoch;
    epoch: () int32; key: PRNG key for dropout.
    """

    params: dict
    opt_state: object
    model_state: tuple
    step: Array
    window: Array
    epoch: Array
    key: Array
