"""Figures outside pyplot, shared by every report: a matplotlib `Figure` on its own Agg canvas (no
pyplot, no global figure state, no backend switch, no display), the image formats it can write,
and a figure rendered to image bytes or written to a file atomically.

matplotlib is an optional dependency (``pip install -e '.[plots]'``), imported on the first figure:
tables and JSON records need none, and a figure without it is an ImportError for the caller to
explain.
"""
import io
import os

from jaxrnn.errors import ConfigError


def new_figure(width, height):
    """An empty Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def image_formats():
    """The image formats this matplotlib can write, as file suffixes without the dot ("png",
    "svg", "pdf", ...)."""
    return set(new_figure(1, 1).canvas.get_supported_filetypes())


def image_format(path):
    """The image format named by the suffix of ``path`` ("png" for "out/curves.PNG"), "" when
    it has none."""
    return os.path.splitext(os.path.basename(str(path)))[1][1:].lower()


def render(figure, image_format, dpi=None):
    """``figure`` as the bytes of an image in ``image_format`` (at ``dpi``, default the
    figure's); a format that cannot be rendered here (e.g. .pgf without a LaTeX installation) is a
    ConfigError."""
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=image_format, **({} if dpi is None else {"dpi": dpi}))
        return buffer.getvalue()
    except Exception as error:  # whatever the format's writer raises
        raise ConfigError(f"cannot write .{image_format} here ({error}); use .png or .svg") \
            from None


def check_renderable(image_format):
    """A ConfigError (`render`'s) unless a figure with text in it, which some formats need TeX
    for, renders as ``image_format`` here: checked before anything is measured."""
    figure = new_figure(7, 4.5)
    figure.add_subplot().set_title("d = T - t")
    render(figure, image_format)


def save(figure, path, dpi=None):
    """``figure`` as an image at ``path`` (format from its suffix, PNG without one), written
    atomically (`jaxrnn.files.write_atomically`: a full disk is a `StorageError`, no half-written
    image)."""
    from jaxrnn import files
    files.write_atomically(path, render(figure, image_format(path) or "png", dpi))
