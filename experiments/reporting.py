"""What the study launchers show and write: tables, plots and JSON records, and the specs and
checkpoints they read. Errors here name the launchers' flags (``--json``, ``--plot``, ...).

The measurements themselves are library calls (`jaxrnn.gradient_flow`); nothing here computes
a gradient.
"""
import io
import json
import math
import os

import numpy as np

from experiments import common
from jaxrnn import checkpoint, gradient_flow, runstate
from jaxrnn import config as config_lib
from jaxrnn.cells import ACTIVATIONS, ARCHS, RECURRENT_INITS
from jaxrnn.errors import CheckpointError, ConfigError


# ---------------------------------------------------------------------------------------------
# Output files: JSON records and images, checked before anything is measured
# ---------------------------------------------------------------------------------------------
def check_output_path(path, flag):
    """Fail early (before any measuring) when ``path`` names a folder."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a folder; name a file in it")



def write_json(path, record, flag="--json"):
    """``record`` as JSON at ``path``, atomically (strict JSON: no NaN)."""
    common.write_output(path, json.dumps(record, indent=1, allow_nan=False).encode("utf-8"),
                        flag)


def _finite_or_none(values):
    return [None if not math.isfinite(value) else value for value in np.asarray(values).tolist()]


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


# ---------------------------------------------------------------------------------------------
# Gradient flow (experiments.gradient_flow): models in, table / JSON / plot out
# ---------------------------------------------------------------------------------------------
def parse_model_spec(spec):
    """``"rnn[:ACTIVATION[:INIT]]"`` or ``"lstm|gru[:INIT]"`` -> ``{"arch", "activation",
    "recurrent_init"}``, the keywords of `jaxrnn.gradient_flow.fresh_model`; e.g.
    ``"rnn:relu:identity"`` (the IRNN), ``"gru"``. Defaults: tanh, orthogonal."""
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


def checkpoint_dtype(folder):
    """The dtype name ("float32" or "float64") a checkpoint was trained in, read from its metadata
    (so that a launcher can switch on float64 before loading it)."""
    return config_lib.from_dict(checkpoint.read_metadata(folder)["config"]).dtype


def load_trained_model(folder, vocab):
    """The `jaxrnn.gradient_flow.Model` of a checkpoint, which must have been trained on a text
    with ``vocab``."""
    params, config, checkpoint_vocab, metadata = runstate.load_model(folder)
    if checkpoint_vocab != vocab:
        raise CheckpointError(f"checkpoint {folder} was trained on a text with a different "
                              "vocabulary; pass the corpus it was trained on with --data")
    return gradient_flow.trained_model(params, config, step=metadata["step"], path=folder)


def format_table(results, distances):
    """Markdown lines: per (model, layer) the norm at d = 0, the norms at ``distances`` relative
    to it, the factor per step and the reach. ``results``: list of (Model, GradientFlow)."""
    lines = ["| model | layer | norm at d=0 | "
             + "".join(f"d={distance} | " for distance in distances)
             + f"factor per step | below {gradient_flow.RELATIVE_FLOOR:g} at |",
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


def report_record(results, **run):
    """A JSON-ready dict: ``run`` (what was measured) and, per model, its source, every norm
    (``norms[layer][d]``), the factor per step (null where undefined) and the reach."""
    return {**run, "relative_floor": gradient_flow.RELATIVE_FLOOR, "models": [
        {"label": model.label, "source": model.source,
         "norms": [_finite_or_none(row) for row in flow.norms],
         "factor_per_step": _finite_or_none(flow.factor_per_step),
         "reach": [int(reach) for reach in flow.reach]} for model, flow in results]}


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
    common.write_output(path, _render(figure, image_format, path), "--plot")
