"""The table, JSON record and plot of gradient-flow measurements (`jaxrnn.gradient_flow`): per
model and layer, the norm of the gradient that reaches each earlier step, relative to the last
step's, with its factor per step and its reach.

``results`` everywhere: a list of (`jaxrnn.gradient_flow.Model`,
`jaxrnn.gradient_flow.GradientFlow`) pairs, the latter's ``norms`` (L, T) by layer and distance.
Images come back as bytes; writing them, and the checks that name the launcher's flags, are the
launcher's (``experiments.gradient_flow``).
"""
import math

import numpy as np

from jaxrnn import gradient_flow
from jaxrnn.report import figures


def heading(*, batch_size, seq_len, text_split, backward):
    """The line above the table: what the norms were measured on."""
    return (f"|dL_T/da_t| relative to d = 0 (median over {batch_size} windows of {seq_len} "
            f"characters of the {text_split} split, {backward} backward):")


def format_table(results, distances):
    """Markdown lines: per (model, layer) the norm at d = 0, the norms at ``distances`` relative
    to it, the factor per step and the reach."""
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


def _finite_or_none(values):
    return [None if not math.isfinite(value) else value for value in np.asarray(values).tolist()]


def report_record(results, **run):
    """A JSON-ready dict: ``run`` (what was measured) and, per model, its source, every norm
    (``norms[layer][d]``), the factor per step (null where undefined) and the reach."""
    return {**run, "relative_floor": gradient_flow.RELATIVE_FLOOR, "models": [
        {"label": model.label, "source": model.source,
         "norms": [_finite_or_none(row) for row in flow.norms],
         "factor_per_step": _finite_or_none(flow.factor_per_step),
         "reach": [int(reach) for reach in flow.reach]} for model, flow in results]}


def render_plot(results, image_format, *, batch_size, seq_len, text_split):
    """``|g|_d / |g|_0`` against d on a log scale, one line per model and layer: the bytes of an
    image in ``image_format`` (`jaxrnn.report.figures.render`)."""
    figure = figures.new_figure(7, 4.5)
    axes = figure.add_subplot()
    for model, flow in results:
        for layer, norms in enumerate(flow.norms):
            label = model.label if len(flow.norms) == 1 else f"{model.label} layer {layer}"
            relative = np.where(norms > 0, norms / norms[0], np.nan) if norms[0] > 0 else norms
            axes.semilogy(np.arange(len(norms)), relative, label=label)
    axes.set_xlabel("distance d = T - t (steps back from the predicted character)")
    axes.set_ylabel("|dL_T / da_t|  relative to d = 0 (median over streams)")
    axes.set_title(f"{batch_size} x {seq_len} characters, {text_split} split")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figures.render(figure, image_format)
