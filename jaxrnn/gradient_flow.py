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

``backward="manual"`` takes every ``g_t`` of a layer from one call of its hand-written reverse
sweep (`Cell.backward`, no automatic differentiation); ``"autodiff"`` from `jax.grad` of the plain
scan with respect to an additive zero perturbation of each input projection. The two agree to
float64 round-off (tests/test_gradient_flow.py).
"""
import json
import os
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells import ACTIVATIONS, ARCHS, RECURRENT_INITS, get_cell, matmul, project_inputs
from jaxrnn.errors import ConfigError
from jaxrnn.model import hidden_size_of, init_state
from jaxrnn.unroll import BACKWARDS, layer_forward

RELATIVE_FLOOR = 1e-3   # `reach`: the first distance where |g| < RELATIVE_FLOOR * |g| at d = 0


class GradientFlow(NamedTuple):
    """Per-layer gradient norms by distance from the end of the window.

    norms: (L, T) median over the B streams of ``|g_t|`` (Euclidean norm over the G features of
      one stream), index ``[l, d]`` for layer l and distance ``d = T - t`` (``d = 0``: last step).
    factor_per_step: (L,) geometric mean ratio ``|g|_{d+1} / |g|_d`` fitted over ``d >= 1`` by least
      squares on ``log |g|`` (NaN when fewer than two distances have a non-zero norm): < 1 vanishes,
      > 1 explodes.
    reach: (L,) the first distance d with ``|g|_d < RELATIVE_FLOOR * |g|_0``; -1 if none within T.
    """

    norms: np.ndarray
    factor_per_step: np.ndarray
    reach: np.ndarray


def last_step_cotangent(params, last_hidden, last_targets):
    """dL_T/dh_T through the output layer, for ``L_T`` summed over streams.

    ``y = h_T W_hy + b_y``, ``p = softmax(y)``: ``dy = p - onehot(target)``, ``dh_T = dy W_hy^T``.

    Args: last_hidden: (B, H) top layer's ``h_T``; last_targets: (B,) int32.
    Returns: (B, H).
    """
    logits = last_hidden @ params["W_hy"] + params["b_y"]
    d_logits = (jax.nn.softmax(logits, axis=-1)
                - jax.nn.one_hot(last_targets, logits.shape[-1], dtype=logits.dtype))
    return d_logits @ params["W_hy"].T


def _last_step_only(d_last, seq_len):
    """(B, H) -> (T, B, H): zeros but the last step, the cotangent of the hiddens under L_T."""
    return jnp.zeros((seq_len, *d_last.shape), d_last.dtype).at[-1].set(d_last)


def _manual_projection_gradients(cell, params, inputs, targets, state):
    """Hand-written sweeps, top layer first: list of L arrays g (T, B, G), bottom layer first."""
    x, saved = inputs, []
    for layer_params, carry0 in zip(params["layers"], state):
        _, hiddens, residuals = layer_forward(cell, layer_params, x, carry0)
        saved.append(residuals)
        x = hiddens
    zero_carry = jax.tree.map(jnp.zeros_like, state[-1])
    d_hiddens = _last_step_only(last_step_cotangent(params, x[-1], targets[-1]), x.shape[0])
    grads = [None] * len(saved)
    for index in reversed(range(len(saved))):
        layer_params, residuals = params["layers"][index], saved[index]
        d_xproj, _, _ = cell.backward(layer_params, residuals.carry0, residuals.hiddens,
                                      residuals.cell, d_hiddens, zero_carry)
        grads[index] = d_xproj
        if index > 0:  # the layer's input is the hiddens of the layer below
            d_hiddens = matmul(d_xproj, layer_params[cell.input_weight].T, cell.matmul_dtype)
    return grads


def _autodiff_projection_gradients(cell, params, inputs, targets, state):
    """`jax.grad` of the plain scan w.r.t. a zero perturbation of each layer's projection."""
    def last_loss(perturbations):
        x = inputs
        for layer_params, carry0, perturbation in zip(params["layers"], state, perturbations):
            xproj = project_inputs(cell, layer_params, x) + perturbation
            _, (x, _) = jax.lax.scan(
                lambda carry, xproj_t, p=layer_params: cell.forward_step(p, carry, xproj_t),
                carry0, xproj)
        logits = x[-1] @ params["W_hy"] + params["b_y"]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(log_probs, targets[-1][:, None], axis=-1).sum()

    seq_len, batch_size = inputs.shape[:2]
    width = cell.num_gates * hidden_size_of(params)
    zeros = [jnp.zeros((seq_len, batch_size, width), params["W_hy"].dtype)
             for _ in params["layers"]]
    return jax.grad(last_loss)(zeros)


def projection_gradients(params, inputs, targets, *, arch, activation=None, backward="manual",
                         matmul_dtype=None):
    """``g_t = dL_T/da_t`` for every step and layer (see the module docstring), zero start state.

    Args:
      params: a language model's parameters (`jaxrnn.init_params` or a checkpoint).
      inputs, targets: (B, T) int32 windows; only the last target enters ``L_T``.
      backward: "manual" (hand-written sweeps) or "autodiff" (`jax.grad`).
    Returns: list of L arrays (T, B, G), bottom layer first.
    """
    if backward not in BACKWARDS:
        raise ConfigError(f"backward must be one of {', '.join(BACKWARDS)}, got {backward!r}")
    inputs, targets = jnp.asarray(inputs).T, jnp.asarray(targets).T       # (T, B), time-major
    if inputs.shape[0] < 2:
        raise ConfigError(f"a window of {inputs.shape[0]} step(s) has no earlier step to reach; "
                          "use --seq_len of 2 or more")
    cell = get_cell(arch, activation, matmul_dtype)
    state = init_state(arch, inputs.shape[1], hidden_size_of(params), len(params["layers"]),
                       params["W_hy"].dtype)
    parts = (_manual_projection_gradients if backward == "manual"
             else _autodiff_projection_gradients)
    return parts(cell, params, inputs, targets, state)


def norms_by_distance(gradients):
    """list of L arrays (T, B, G) -> (L, T) NumPy: per-stream norms over G, median over B,
    reversed so that index d is the distance from the last step."""
    per_stream = jnp.stack([jnp.linalg.norm(grads, axis=-1) for grads in gradients])  # (L, T, B)
    return np.asarray(jnp.median(per_stream, axis=-1))[:, ::-1]


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
    """norms: (T,) by distance -> first d with ``norms[d] < relative_floor * norms[0]``, or -1."""
    below = np.nonzero(np.asarray(norms) < relative_floor * norms[0])[0]
    return int(below[0]) if below.size else -1


def gradient_flow(params, inputs, targets, *, arch, activation=None, backward="manual",
                  matmul_dtype=None):
    """`projection_gradients` summarised as a `GradientFlow`."""
    norms = norms_by_distance(projection_gradients(
        params, inputs, targets, arch=arch, activation=activation, backward=backward,
        matmul_dtype=matmul_dtype))
    return GradientFlow(norms, np.array([fit_factor_per_step(row) for row in norms]),
                        np.array([first_reach(row) for row in norms]))


# ---------------------------------------------------------------------------------------------
# Models to compare, and the report
# ---------------------------------------------------------------------------------------------
def parse_model_spec(spec):
    """``"rnn[:ACTIVATION[:INIT]]"`` or ``"lstm|gru[:INIT]"`` -> ``{"arch", "activation",
    "recurrent_init"}``; e.g. ``"rnn:relu:identity"`` (the IRNN), ``"gru"``. Defaults: tanh,
    orthogonal."""
    parts = spec.strip().split(":")
    arch = parts[0]
    if arch not in ARCHS:
        raise ConfigError(f"model {spec!r}: unknown arch {arch!r}; write rnn[:ACTIVATION[:INIT]] "
                          f"or lstm|gru[:INIT], e.g. rnn:relu:identity")
    activation = None
    if arch == "rnn":
        activation = parts[1] if len(parts) > 1 else "tanh"
        if activation not in ACTIVATIONS:
            raise ConfigError(f"model {spec!r}: unknown activation {activation!r}; choose one of "
                              f"{', '.join(ACTIVATIONS)}")
        parts = parts[1:]
    init = parts[1] if len(parts) > 1 else "orthogonal"
    if init not in RECURRENT_INITS or len(parts) > 2:
        raise ConfigError(f"model {spec!r}: expected rnn[:ACTIVATION[:INIT]] or lstm|gru[:INIT] "
                          f"with INIT one of {', '.join(RECURRENT_INITS)}")
    return {"arch": arch, "activation": activation, "recurrent_init": init}


def save_plot(path, curves, *, title=""):
    """Write ``|g|_d / |g|_0`` against d on a log scale, one line per (label, norms (T,)) in
    ``curves``, as an image at ``path`` (format from the suffix; needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib "
                          "(or pip install -e '.[plots]')") from None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, norms in curves:
        norms = np.asarray(norms, dtype=np.float64)
        relative = np.where(norms > 0, norms / norms[0], np.nan)
        axes.semilogy(np.arange(len(norms)), relative, label=label)
    axes.set_xlabel("distance d = T - t (steps back from the predicted character)")
    axes.set_ylabel("|dL_T / da_t|  relative to d = 0 (median over streams)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    _replace_atomically(path, lambda temp: figure.savefig(temp, format=_suffix(path)))
    plt.close(figure)


def _suffix(path):
    return str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else "png"


def _replace_atomically(path, write):
    """Call ``write(temp_path)`` beside ``path``, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="." + _suffix(path))
    os.close(handle)
    try:
        write(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)   # mkstemp makes it private; give it a new file's mode
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_json(path, record):
    """``record`` as JSON at ``path``, written to a temporary file first."""
    def write(temp):
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
    _replace_atomically(path, write)
