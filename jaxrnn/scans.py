"""The time scans of a layer, apart from any cell's algebra: the forward scans (writing the gates
over the input projection) and the reverse scans of the hand-written backward, each in the form
its platform runs fastest.

Every function here takes a cell's step as a function and knows nothing of its maths (that is
`jaxrnn.cells`; the layer and the stack around the scans are `jaxrnn.unroll`). Shapes are
time-major, per `jaxrnn.types`: ``buffer: (T, B, G)``, a carry of ``(B, H)`` arrays, ``xs`` a
pytree of ``(T, ...)`` arrays scanned alongside.

* `scan_forward`, `gates_in_place`: a cell's ``forward_step`` over a window; the second writes
  each step's gates over its row of the input projection (`scan_in_place`). `window_forward`
  adds the recurrence masks.
* `reverse_scan`: the backward's time loop, `reverse_scan_in_place` on the CPU and
  `reverse_scan_stacked` elsewhere (`by_platform`); `reverse_scan_two_gradients` the same for a
  step that yields two gradients differing in one block (the GRU's).
* `previous`, `previous_row`: the value at ``t - 1`` (``h_{t-1}``, ``c_{t-1}``), as a shifted
  copy or as a select inside the step.

Why the in-place forms (measured in BUILD_NOTES.md, "Tried and dropped" and "CPU throughput"):
a scan's stacked output allocates and zero-fills a second ``(T, B, G)`` array, and on XLA:CPU
every call page-faults on such fresh temporaries; on a GPU the in-place backward's early read is
one more kernel in a latency-bound step (7-9% slower on an H200), so GPUs keep stacked outputs.
"""
import functools

import jax
import jax.numpy as jnp


# ---------------------------------------------------------------------------------------------
# Time indices and the previous step's value
# ---------------------------------------------------------------------------------------------
def time_steps(sequence):
    """``[0, 1, ..., T-1]`` for a time-major ``sequence: (T, ...)``, to scan alongside it."""
    return jnp.arange(sequence.shape[0])


def previous(first, sequence):
    """first: (...), sequence: (T, ...) -> (T, ...): ``[first, sequence_0, ..., sequence_{T-2}]``,
    i.e. the value at t-1 (the operand ``H_prev`` of ``dW_h = H_prev^T dPre``)."""
    return jnp.concatenate([first[None], sequence[:-1]], axis=0)


def previous_row(sequence, t, first):
    """``sequence[t-1]``, or ``first`` at ``t == 0``, inside a scan over ``t``.

    sequence: (T, ...); first: (...). A select in the step instead of the ``(T, ...)`` copy that
    `previous` makes.
    """
    row = jax.lax.dynamic_index_in_dim(sequence, jnp.maximum(t - 1, 0), keepdims=False)
    return jnp.where(t > 0, row, first)


# ---------------------------------------------------------------------------------------------
# Forward scans
# ---------------------------------------------------------------------------------------------
def scan_forward(forward_step):
    """``forward(params, carry0, xproj, xs=None) -> (carry_T, hiddens, residuals)``: a plain scan
    of ``forward_step(params, carry, xproj_t[, xs_t]) -> (carry, (h_t, residuals_t))`` over
    ``xproj: (T, B, G)`` (and the pytree ``xs`` of (T, ...) arrays, when given), hiddens and
    residuals stacked over T."""
    def forward(params, carry0, xproj, xs=None):
        if xs is None:
            carry_T, (hiddens, residuals) = jax.lax.scan(
                functools.partial(forward_step, params), carry0, xproj)
        else:
            carry_T, (hiddens, residuals) = jax.lax.scan(
                lambda carry, inputs: forward_step(params, carry, *inputs), carry0, (xproj, xs))
        return carry_T, hiddens, residuals
    return forward


def scan_in_place(step, carry, buffer, xs=None):
    """A ``lax.scan`` over the time axis of ``buffer: (T, ...)`` that rewrites it row by row.

    ``step(carry, buffer_t, xs_t) -> (carry, new_buffer_t, ys_t)``: row ``t`` of ``buffer`` is
    read and replaced by ``new_buffer_t`` (same shape), so one ``(T, B, G)`` allocation holds the
    input projection and then the gates, as cuDNN reuses its reserve space; a scan's stacked
    output would allocate and zero-fill a second ``(T, B, G)`` array. XLA updates the buffer in
    place as long as every read of row ``t`` feeds ``new_buffer_t``. Returns
    ``(carry, buffer, ys)``.
    """
    def body(state, inputs):
        carry, buffer = state
        t, xs_t = inputs
        buffer_t = jax.lax.dynamic_index_in_dim(buffer, t, keepdims=False)
        carry, new_buffer_t, ys_t = step(carry, buffer_t, xs_t)
        return (carry, jax.lax.dynamic_update_index_in_dim(buffer, new_buffer_t, t, 0)), ys_t

    (carry, buffer), ys = jax.lax.scan(body, (carry, buffer), (time_steps(buffer), xs))
    return carry, buffer, ys


def gates_in_place(forward_step):
    """``forward(params, carry0, xproj, xs=None) -> (carry_T, hiddens (T, B, H), residuals)``:
    the step over a window, each step's ``residuals.gates`` written over its row of
    ``xproj: (T, B, G)`` by `scan_in_place`; the residuals' other fields are stacked over T as
    usual. ``xs`` (a pytree of (T, ...) arrays), when given, is scanned alongside and its rows
    passed to ``forward_step(params, carry, xproj_t, xs_t)``."""
    def forward(params, carry0, xproj, xs=None):
        def step(carry, xproj_t, xs_t):
            extra = () if xs is None else (xs_t,)
            carry, (h, residuals) = forward_step(params, carry, xproj_t, *extra)
            return carry, residuals.gates, (h, residuals._replace(gates=None))

        carry_T, gates, (hiddens, residuals) = scan_in_place(step, carry0, xproj, xs)
        return carry_T, hiddens, residuals._replace(gates=gates)
    return forward


def window_forward(scan, forward_step):
    """``forward(params, carry0, xproj, masks=None)``: ``scan`` (`scan_forward` or
    `gates_in_place`) of ``forward_step``. With a `jaxrnn.types.RecurrenceMasks` of the window,
    its zoneout masks (T, B, H) are scanned alongside ``xproj`` and each step gets its rows and
    the window's (B, H) recurrent mask; without, the plain scan."""
    plain = scan(forward_step)

    def forward(params, carry0, xproj, masks=None):
        if masks is None:
            return plain(params, carry0, xproj)
        recurrent = masks.recurrent

        def step(params, carry, xproj_t, rows_t):
            return forward_step(params, carry, xproj_t, rows_t._replace(recurrent=recurrent))

        return scan(step)(params, carry0, xproj, masks._replace(recurrent=None))
    return forward


# ---------------------------------------------------------------------------------------------
# Reverse scans (the hand-written backward's time loop)
# ---------------------------------------------------------------------------------------------
def reverse_scan_in_place(step, carry, buffer, xs):
    """A reverse-time ``lax.scan`` that replaces row ``t`` of ``buffer: (T, ...)`` by its gradient.

    ``step(carry, buffer_t, t, xs_t) -> (carry, new_buffer_t, ys_t)``; returns
    ``(carry, new_buffer, ys)``. The backward scans pass the forward's gates, which are dead once
    read, so that the scan writes its ``(T, B, G)`` pre-activation gradients over them and
    allocates (and zero-fills) no second ``(T, B, G)`` array. Row ``t`` is read one iteration
    early: each iteration writes its row and then reads the next one (``t - 1``) from the updated
    buffer into the carry, so the buffer's one reader follows its one writer and XLA updates it
    in place however many element-wise kernels (and carries) use the row. Reading row ``t`` in
    the iteration that overwrites it would make XLA copy the whole buffer every step whenever a
    kernel that does not feed the new row (the LSTM's ``dc * f`` carry) reads it.
    """
    def body(state, inputs):
        carry, buffer_t, buffer = state
        t, xs_t = inputs
        carry, new_buffer_t, ys_t = step(carry, buffer_t, t, xs_t)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, new_buffer_t, t, 0)
        buffer_t = jax.lax.dynamic_index_in_dim(buffer, jnp.maximum(t - 1, 0), keepdims=False)
        return (carry, buffer_t, buffer), ys_t

    (carry, _, buffer), ys = jax.lax.scan(body, (carry, buffer[-1], buffer),
                                          (time_steps(buffer), xs), reverse=True)
    return carry, buffer, ys


def reverse_scan_stacked(step, carry, buffer, xs):
    """`reverse_scan_in_place`'s contract with the new rows as a scan's stacked output (a second
    ``(T, B, G)`` array): the form for GPUs, where each step costs kernel launches rather than
    memory and the early read would be one more per step."""
    def body(carry, inputs):
        t, buffer_t, xs_t = inputs
        carry, new_buffer_t, ys_t = step(carry, buffer_t, t, xs_t)
        return carry, (new_buffer_t, ys_t)

    carry, (buffer, ys) = jax.lax.scan(body, carry, (time_steps(buffer), buffer, xs),
                                       reverse=True)
    return carry, buffer, ys


def by_platform(*args, cpu, default):
    """``cpu(*args)`` in a program lowered for the CPU, ``default(*args)`` elsewhere
    (`jax.lax.platform_dependent`). The tests replace it to run the other platforms' forms."""
    return jax.lax.platform_dependent(*args, cpu=cpu, default=default)


def reverse_scan(step, carry, buffer, xs):
    """`reverse_scan_in_place` on the CPU, `reverse_scan_stacked` elsewhere: on an H200 the
    in-place form measured 7-9% slower; on the CPU it saves a zero-filled ``(T, B, G)`` array
    and its page faults."""
    return by_platform(carry, buffer, xs, cpu=functools.partial(reverse_scan_in_place, step),
                       default=functools.partial(reverse_scan_stacked, step))


def _with_tail(sequence, tail):
    """``sequence: (..., G)`` with its last W columns replaced by ``tail: (..., W)``: one fused
    select (a concatenate is a slice copy plus a concatenate kernel on XLA:CPU: 5.8 vs 2.1 ms
    for the GRU)."""
    width, tail_width = sequence.shape[-1], tail.shape[-1]
    in_tail = jnp.arange(width) >= width - tail_width
    padding = [(0, 0)] * (tail.ndim - 1) + [(width - tail_width, 0)]
    return jnp.where(in_tail, jnp.pad(tail, padding), sequence)


def reverse_scan_two_gradients(step, carry, buffer, xs, *, tail_factor):
    """`reverse_scan` for a step that yields two ``(B, G)`` gradients equal but in their last W
    columns, where the second's are the first's times a factor read from the buffer (the GRU's
    ``dxproj = [da_r, da_z, da_n]`` and ``dgh = [da_r, da_z, da_n * r]``).

    ``step(carry, buffer_t, t, xs_t) -> (carry, second_t (B, G), first_tail_t (B, W))``;
    ``tail_factor(buffer) -> (T, B, W)``. Returns ``(carry, first (T, B, G), second (T, B, G))``.
    On the CPU the second (the step's GEMM operand) is written over the buffer and the first's
    tail emitted as a (T, B, W) output; elsewhere the first is the stacked output and the second
    is rebuilt from it and the untouched buffer after the scan (on an H200 the in-place form
    measured 12% slower: 2.413 vs 2.157 ms).
    """
    def in_place(carry, buffer, xs):
        carry, second, first_tail = reverse_scan_in_place(step, carry, buffer, xs)
        return carry, _with_tail(second, first_tail), second

    def stacked(carry, buffer, xs):
        def first_only(carry, buffer_t, t, xs_t):
            carry, second_t, first_tail_t = step(carry, buffer_t, t, xs_t)
            head = second_t[..., :second_t.shape[-1] - first_tail_t.shape[-1]]
            return carry, jnp.concatenate([head, first_tail_t], axis=-1), None

        carry, first, _ = reverse_scan_stacked(first_only, carry, buffer, xs)
        factor = tail_factor(buffer)
        return carry, first, _with_tail(first, first[..., first.shape[-1] - factor.shape[-1]:]
                                        * factor)

    return by_platform(carry, buffer, xs, cpu=in_place, default=stacked)
