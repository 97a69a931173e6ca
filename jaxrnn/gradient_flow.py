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
import io
import json
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import checkpoint, files, loop, train
from jaxrnn import config as config_lib
from jaxrnn.cells import ACTIVATIONS, ARCHS, RECURRENT_INITS, get_cell, matmul, project_inputs
from jaxrnn.errors import CheckpointError, ConfigError
from jaxrnn.model import hidden_size_of, init_params, init_state, output_log_probs
from jaxrnn.unroll import BACKWARDS, stack_forward

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

    ``y = h_T W_hy + b_y``, ``p = softmax(y)``: ``dy = p - onehot(target)``, ``dh_T = dy W_hy^T``.

    Args: last_hidden: (B, H) top layer's ``h_T``; last_targets: (B,) int32.
    Returns: (B, H).
    """
    log_probs = output_log_probs(params, last_hidden, matmul_dtype)
    d_logits = (jnp.exp(log_probs)
                - jax.nn.one_hot(last_targets, log_probs.shape[-1], dtype=log_probs.dtype))
    return matmul(d_logits, params["W_hy"].T, matmul_dtype)


def _last_step_only(d_last, seq_len):
    """(B, H) -> (T, B, H): zeros but the last step, the cotangent of the hiddens under L_T."""
    return jnp.zeros((seq_len, *d_last.shape), d_last.dtype).at[-1].set(d_last)


def _manual_projection_gradients(cell, params, inputs, targets, state):
    """Hand-written sweeps, run from the top layer down; returns L arrays g (T, B, G), the
    bottom layer's first."""
    outputs, _, saved = stack_forward(cell, params["layers"], inputs, state)
    zero_carry = jax.tree.map(jnp.zeros_like, state[-1])
    d_hiddens = _last_step_only(
        last_step_cotangent(params, outputs[-1], targets[-1], cell.matmul_dtype), len(outputs))
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
        log_probs = output_log_probs(params, x[-1], cell.matmul_dtype)
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
class Model(NamedTuple):
    """A model to measure: ``label``, ``params``, ``arch``, ``cell_options`` (activation and
    matmul_dtype, for `gradient_flow`) and ``source`` (a JSON-ready description)."""

    label: str
    params: dict
    arch: str
    cell_options: dict
    source: dict


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


def fresh_model(spec, vocab_size, hidden_size, num_layers=1, *, seed=0, dtype="float32"):
    """A freshly initialised `Model` from a `parse_model_spec` string."""
    options = parse_model_spec(spec)
    dtype = jnp.dtype(dtype).name
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("float64 models need jax_enable_x64; switch it on first")
    params = init_params(jax.random.key(seed), options["arch"], vocab_size, hidden_size,
                         num_layers, dtype=jnp.dtype(dtype),
                         recurrent_init=options["recurrent_init"],
                         activation=options["activation"])
    name = ":".join(filter(None, options.values()))
    return Model(f"{name} H={hidden_size} init", params, options["arch"],
                 {"activation": options["activation"]},
                 {"kind": "init", "seed": seed, "dtype": dtype, **options,
                  "hidden_size": hidden_size, "num_layers": num_layers})


def checkpoint_dtype(folder):
    """The dtype name ("float32" or "float64") a checkpoint was trained in, read from its metadata
    (so that a launcher can switch on float64 before loading it)."""
    return config_lib.from_dict(checkpoint.read_metadata(folder)["config"]).dtype


def trained_model(folder, vocab):
    """The `Model` of a checkpoint, which must have been trained on a text with ``vocab``."""
    params, config, checkpoint_vocab, metadata = loop.load_model(folder)
    if checkpoint_vocab != vocab:
        raise CheckpointError(f"checkpoint {folder} was trained on a text with a different "
                              "vocabulary; pass the corpus it was trained on with --data")
    if config.dtype == "float64" and params["W_hy"].dtype != jnp.float64:
        raise ConfigError(f"checkpoint {folder} is float64; switch on jax_enable_x64 first")
    options = train.cell_options(config)
    name = ":".join(filter(None, [config.arch, options["activation"], config.recurrent_init]))
    dtype = "bfloat16 matmuls" if config.bf16_matmuls else config.dtype
    return Model(f"{name} H={config.hidden_size} step {metadata['step']} ({folder})", params,
                 config.arch, options,
                 {"kind": "checkpoint", "path": str(folder), "step": metadata["step"],
                  "arch": config.arch, "activation": options["activation"],
                  "recurrent_init": config.recurrent_init, "hidden_size": config.hidden_size,
                  "num_layers": config.num_layers, "dtype": dtype})


def parse_distances(texts, seq_len):
    """Distances for the table's columns: the integers among ``texts`` in ``1..T-1`` (0 has its
    own column), sorted and unique; a text that is not an integer >= 0 is a ConfigError."""
    distances = set()
    for text in texts:
        try:
            distance = int(text)
        except ValueError:
            distance = -1
        if distance < 0:
            raise ConfigError(f"--distances must be integers >= 0, got {text!r}")
        if 0 < distance < seq_len:
            distances.add(distance)
    return sorted(distances)


def format_table(results, distances):
    """Markdown lines: per (model, layer) the norm at d = 0, the norms at ``distances`` relative
    to it, the factor per step and the reach. ``results``: list of (Model, GradientFlow)."""
    lines = ["| model | layer | norm at d=0 | "
             + "".join(f"d={distance} | " for distance in distances)
             + f"factor per step | below {RELATIVE_FLOOR:g} at |",
             "|" + "---|" * (len(distances) + 5)]
    for model, flow in results:
        for layer, norms in enumerate(flow.norms):
            if norms[0] == 0:
                cells = ["n/a"] * len(distances) + ["n/a", "0 (no gradient at d=0)"]
            else:
                factor, reach = flow.factor_per_step[layer], flow.reach[layer]
                cells = ([f"{norms[d] / norms[0]:.2e}" for d in distances]
                         + [f"{factor:.4f}" if math.isfinite(factor) else "n/a",
                            str(reach) if reach >= 0 else f"> {len(norms) - 1}"])
            lines.append(f"| {model.label} | {layer} | {norms[0]:.3g} | " + " | ".join(cells)
                         + " |")
    return lines


def _finite_or_none(values):
    return [None if not math.isfinite(value) else value for value in np.asarray(values).tolist()]


def report_record(results, **run):
    """A JSON-ready dict: ``run`` (what was measured) and, per model, its source, every norm
    (``norms[layer][d]``), the factor per step (null where undefined) and the reach."""
    return {**run, "relative_floor": RELATIVE_FLOOR, "models": [
        {"label": model.label, "source": model.source,
         "norms": [_finite_or_none(row) for row in flow.norms],
         "factor_per_step": _finite_or_none(flow.factor_per_step),
         "reach": [int(reach) for reach in flow.reach]} for model, flow in results]}


def check_output_path(path, flag):
    """Fail early (before any measuring) when ``path`` names a folder."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a folder; name a file in it")


def _write(path, payload, flag):
    try:
        files.write_atomically(path, payload)
    except OSError as error:
        raise ConfigError(f"could not write {flag}={path} ({error.strerror or error}); name a "
                          "writable file") from None


def write_json(path, record, flag="--json"):
    """``record`` as JSON at ``path``, atomically (strict JSON: no NaN)."""
    _write(path, json.dumps(record, indent=1, allow_nan=False).encode("utf-8"), flag)


def _new_figure():
    """A matplotlib Figure outside pyplot (no global state, no backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib "
                          "(or pip install -e '.[plots]')") from None
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    return figure


def _plot_format(path):
    """The image format named by the file's suffix ("png" for "curves.png"), "" without one."""
    return os.path.splitext(os.path.basename(str(path)))[1][1:].lower()


def _checked_format(figure, path):
    """The image format of ``path``, after checking that it names a file with a suffix this
    matplotlib can write."""
    check_output_path(path, "--plot")
    formats = figure.canvas.get_supported_filetypes()
    if _plot_format(path) not in formats:
        raise ConfigError(f"--plot={path}: name the image file with one of the suffixes "
                          f"{', '.join('.' + name for name in sorted(formats))}")
    return _plot_format(path)


def check_plot_path(path):
    """Fail early (before any measuring) when ``path`` cannot be written as an image: no
    matplotlib, a folder, or a suffix whose format cannot be rendered here (tried on an empty
    figure with a title)."""
    figure = _new_figure()
    image_format = _checked_format(figure, path)
    figure.add_subplot().set_title("d = T - t")         # text, which some formats need TeX for
    _render(figure, image_format, path)


def _render(figure, image_format, path):
    """The figure as image bytes; a format that cannot be rendered here is a ConfigError."""
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=image_format)
        return buffer.getvalue()
    except Exception as error:  # e.g. .pgf without a LaTeX installation
        raise ConfigError(f"--plot={path}: cannot write .{image_format} here ({error}); "
                          "use .png or .svg") from None


def save_plot(path, results, *, title=""):
    """``|g|_d / |g|_0`` against d on a log scale, one line per model and layer, as an image at
    ``path`` (format from its suffix), written atomically. ``results``: list of (Model,
    GradientFlow)."""
    figure = _new_figure()
    image_format = _checked_format(figure, path)
    axes = figure.add_subplot()
    for model, flow in results:
        for layer, norms in enumerate(flow.norms):
            label = model.label if len(flow.norms) == 1 else f"{model.label} layer {layer}"
            relative = np.where(norms > 0, norms / norms[0], np.nan) if norms[0] > 0 else norms
            axes.semilogy(np.arange(len(norms)), relative, label=label)
    axes.set_xlabel("distance d = T - t (steps back from the predicted character)")
    axes.set_ylabel("|dL_T / da_t|  relative to d = 0 (median over streams)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    _write(path, _render(figure, image_format, path), "--plot")
