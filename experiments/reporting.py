"""The launchers' side of reporting: output files checked against their flags before anything is
measured, JSON records and images written (errors name ``--json`` and ``--plot``), and the model
specs and checkpoints of ``experiments.gradient_flow``'s flags.

Tables and plots themselves are the library's (`jaxrnn.report`); nothing here draws or computes.
"""
import json
import os

from experiments import common
from jaxrnn import checkpoint, gradient_flow, runstate
from jaxrnn import config as config_lib
from jaxrnn.cells import ACTIVATIONS, ARCHS, RECURRENT_INITS, takes_activation
from jaxrnn.errors import CheckpointError, ConfigError
from jaxrnn.report import figures

_NO_MATPLOTLIB = "--plot needs matplotlib: pip install matplotlib (or pip install -e '.[plots]')"


# ---------------------------------------------------------------------------------------------
# Output files: JSON records and images, checked before anything is measured
# ---------------------------------------------------------------------------------------------
def check_output_path(path, flag):
    """Fail early (before any measuring) when ``path`` names a folder."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a folder; name a file in it")


def check_writable_path(path, flag, suffixes=None):
    """Fail before any sampling when ``path`` cannot be written: a folder, a read-only or
    missing-and-uncreatable folder, or (with ``suffixes``) a suffix not among them."""
    check_output_path(path, flag)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}={path} cannot be written ({folder} is not a writable folder); "
                          "name a file in a writable folder")
    suffix = os.path.splitext(path)[1][1:].lower()
    if suffixes is not None and suffix not in suffixes:
        raise ConfigError(f"{flag}={path}: name the file with one of the suffixes "
                          + ", ".join("." + name for name in sorted(suffixes)))


def plot_formats():
    """The image suffixes ``--plot`` may name here (`jaxrnn.report.figures.image_formats`)."""
    try:
        return figures.image_formats()
    except ImportError:
        raise ConfigError(_NO_MATPLOTLIB) from None


def check_plot_path(path):
    """Fail early (before any measuring) when ``path`` cannot be written as an image: no
    matplotlib, a folder, or a suffix whose format cannot be rendered here (tried on a figure
    with a title)."""
    formats = plot_formats()
    check_output_path(path, "--plot")
    image_format = figures.image_format(path)
    if image_format not in formats:
        raise ConfigError(f"--plot={path}: name the image file with one of the suffixes "
                          f"{', '.join('.' + name for name in sorted(formats))}")
    _named_plot(path, figures.check_renderable, image_format)


def _named_plot(path, draw, image_format):
    """``draw(image_format)``, its ConfigError (a format that cannot be rendered here) naming
    ``--plot``."""
    try:
        return draw(image_format)
    except ConfigError as error:
        raise ConfigError(f"--plot={path}: {error}") from None


def write_plot(path, draw):
    """The image ``draw(image_format) -> bytes`` at ``path`` (format from its suffix), written
    atomically; errors name ``--plot``."""
    common.write_output(path, _named_plot(path, draw, figures.image_format(path)), "--plot")


def write_json(path, record, flag="--json"):
    """``record`` as JSON at ``path``, atomically (strict JSON: no NaN)."""
    common.write_output(path, json.dumps(record, indent=1, allow_nan=False).encode("utf-8"),
                        flag)


# ---------------------------------------------------------------------------------------------
# experiments.gradient_flow: --models, --distances and --checkpoints
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
    if takes_activation(arch):
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
