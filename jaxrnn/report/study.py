"""A study's report (`jaxrnn.studies`) and the plots of any runs: ``results.json`` (every run),
``table.md`` (`jaxrnn.report.study_tables`) and the study's plots, curves read back from each run's
``metrics.jsonl``; shared by every study and by ``experiments.plot_runs``. No training here.

Plots use matplotlib's Agg canvas directly (`jaxrnn.report.figures`: no pyplot, no display, no
global figure state).
"""
import json
import math
import pathlib
from typing import Dict, List, Sequence

import numpy as np

from jaxrnn.report import figures
from jaxrnn.report.study_tables import (aggregate, explore, explored_table, flatten, mean_std,
                                        run_field, selected_rows, table, value_text)


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------
def read_metrics(path):
    """The records of a ``metrics.jsonl`` grouped by kind: ``{"train": [...], "val": [...]}``."""
    records: Dict[str, List[dict]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                records.setdefault(record.get("kind", "train"), []).append(record)
    return records


def _series(records, kind, x_name, y_name):
    points = [(record.get(x_name), record.get(y_name)) for record in records.get(kind, [])]
    points = [(x, y) for x, y in points if x is not None]
    return (np.asarray([x for x, _ in points], float),
            np.asarray([np.nan if y is None else y for _, y in points], float))


def run_metrics(output_dir, row):
    return read_metrics(pathlib.Path(output_dir) / row["group"] / "runs" / row["run"]
                        / "metrics.jsonl")


def _label(values, keys):
    return ", ".join(f"{key}={value_text(value)}" for key, value in zip(keys, values)
                     if key not in ("part",))


def _figure(columns=1, width=6.4, height=4.2, rows=1):
    """A figure of ``rows`` x ``columns`` panels, each ``width`` wide: (figure, [axes])."""
    figure = figures.new_figure(width * columns, height)
    return figure, [figure.add_subplot(rows, columns, index + 1)
                    for index in range(rows * columns)]


def _band(axis, xs, ys, label):
    """Mean line and a ±1 std band over seeds (rows of ``ys`` on the shared ``xs``)."""
    mean = np.nanmean(ys, axis=0) if len(ys) else ys
    line, = axis.plot(xs, mean, label=label)
    if len(ys) > 1:
        std = np.nanstd(ys, axis=0)
        axis.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())


def plot_curves(study, results, output_dir, path, x="step", kind="val", y="bpc",
                title_suffix=""):
    """Validation bits/char (or another metric) against steps, wall seconds or characters,
    one line per configuration of the table, mean ± std over seeds; one panel per part of
    ``study.curve_parts`` (only those parts' runs), else every run in one panel."""
    rows = selected_rows(study, flatten(results))
    parts = study.curve_parts or (None,)
    unit = "nats/char" if y == "loss" else y
    figure, axes = _figure(columns=len(parts))
    for part, axis in zip(parts, axes):
        panel_rows = rows if part is None else [row for row in rows if row.get("part") == part]
        _draw_curves(axis, study.table_keys, panel_rows, output_dir, x, kind, y)
        axis.set_title(f"{kind} {unit}{title_suffix}" + ("" if part is None else f": {part}"),
                       fontsize=9)
    figure.tight_layout()
    figures.save(figure, path, dpi=110)


def _draw_curves(axis, keys, rows, output_dir, x, kind, y):
    for values, group in aggregate(rows, keys):
        curves = []
        for row in group:
            records = run_metrics(output_dir, row)
            xs, ys = _series(records, kind, "elapsed_seconds" if x == "wall" else "step", y)
            if x == "chars":
                xs = xs * row["batch_chars"]
            curves.append((xs, ys))
        length = min(len(xs) for xs, _ in curves)
        if length == 0:
            continue
        xs = np.mean([xs[:length] for xs, _ in curves], axis=0)
        _band(axis, xs, np.asarray([ys[:length] for _, ys in curves]), _label(values, keys))
    axis.set_xlabel({"step": "step", "wall": "wall seconds (the group's program, all seeds "
                     "at once)", "chars": "training characters per run"}[x])
    axis.set_ylabel(f"{kind} {'nats/char' if y == 'loss' else y}")
    if x == "chars":
        axis.set_xscale("log")
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:      # a panel whose runs are not trained yet: none
        axis.legend(fontsize=6)


def plot_grad_norms(study, results, output_dir, path):
    """Per panel (``study.panels`` values, e.g. one per arch x optimizer): the training loss
    (top) and the largest gradient norm of each logging interval, before clipping (bottom, log
    scale), against steps; one line per configuration, the seeds' mean with their min..max."""
    rows = selected_rows(study, flatten(results))
    panels = aggregate(rows, study.panels) if study.panels else [((), rows)]
    line_keys = tuple(key for key in study.table_keys if key not in study.panels)
    figure, axes = _figure(columns=len(panels), width=4.2, height=6.4, rows=2)
    for column, (panel, panel_rows) in enumerate(panels):
        loss_axis, norm_axis = axes[column], axes[len(panels) + column]
        for values, group in aggregate(panel_rows, line_keys):
            for axis, name in ((loss_axis, "loss"), (norm_axis, "max_grad_norm")):
                curves = [_series(run_metrics(output_dir, row), "train", "step", name)
                          for row in group]
                length = min(len(xs) for xs, _ in curves)
                if not length:
                    continue
                ys = np.asarray([ys[:length] for _, ys in curves])
                line, = axis.plot(curves[0][0][:length], np.nanmean(ys, axis=0),
                                  label=_label(values, line_keys))
                if len(ys) > 1:
                    axis.fill_between(curves[0][0][:length], np.nanmin(ys, axis=0),
                                      np.nanmax(ys, axis=0), alpha=0.15,
                                      color=line.get_color())
        loss_axis.set_title(_label(panel, study.panels) or "all runs", fontsize=8)
        loss_axis.set_ylabel("train loss (nats/char)")
        # A fixed loss axis (0 to 2 ln V): runs whose loss blew up are named, not drawn to scale.
        ceiling = 2 * math.log(panel_rows[0].get("vocab_size") or 65)
        peaks = [np.nanmax(_series(run_metrics(output_dir, row), "train", "step", "loss")[1],
                           initial=0.0) for row in panel_rows]
        loss_axis.set_ylim(0.0, ceiling)
        above = [peak for peak in peaks if peak > ceiling]
        if above:
            loss_axis.text(0.02, 0.97, f"{len(above)} of {len(peaks)} runs leave the axis "
                           f"(peak logged loss up to {max(above):.1e})", transform=loss_axis.transAxes,
                           fontsize=6, va="top")
        norm_axis.set_yscale("log")
        norm_axis.set_ylabel("max |g| per log interval (before clipping)")
        for axis in (loss_axis, norm_axis):
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
        norm_axis.legend(fontsize=5)
    figure.tight_layout()
    figures.save(figure, path, dpi=110)


def plot_heatmaps(study, results, output_dir, path, part="grid"):
    """Test loss (mean over seeds) on learning rate x clip, one panel per (arch, hidden size)."""
    rows = [row for row in flatten(results) if row.get("part") == part]
    panels = aggregate(rows, ("arch", "hidden_size"))
    if not panels:
        return
    figure, axes = _figure(columns=len(panels), width=2.6, height=3.0)
    for index, (axis, ((arch, hidden), group)) in enumerate(zip(axes, panels)):
        rates = sorted({row["learning_rate"] for row in group})
        clips = sorted({row["clip_norm"] for row in group})
        grid = np.full((len(rates), len(clips)), np.nan)
        for (rate, clip), cell_rows in aggregate(group, ("learning_rate", "clip_norm")):
            grid[rates.index(rate), clips.index(clip)] = mean_std(
                [run_field(row, ("test", "loss")) for row in cell_rows])[0]
        image = axis.imshow(np.minimum(grid, 4.5), cmap="viridis_r", vmin=1.3, vmax=4.5)
        for i in range(len(rates)):
            for j in range(len(clips)):
                axis.text(j, i, "div" if not np.isfinite(grid[i, j]) else f"{grid[i, j]:.2f}",
                          ha="center", va="center", fontsize=7, color="w")
        axis.set_xticks(range(len(clips)), [f"{clip:g}" for clip in clips])
        axis.set_yticks(range(len(rates)), [f"{rate:g}" for rate in rates])
        axis.set_xlabel("clip")
        if index == 0:
            axis.set_ylabel("learning rate")
        axis.set_title(f"{arch} H={hidden}: test nats/char", fontsize=8)
    figure.subplots_adjust(left=0.05, right=0.92, bottom=0.18, top=0.88, wspace=0.3)
    figure.colorbar(image, ax=axes, shrink=0.7, pad=0.02)
    figures.save(figure, path, dpi=110)


def plot_depth(study, results, output_dir, path):
    """Test loss (mean ± std over seeds) against dropout, one line per number of layers."""
    rows = [row for row in flatten(results) if row.get("part") == "depth"]
    if not rows:
        return
    figure, (axis,) = _figure()
    for (layers,), group in aggregate(rows, ("num_layers",)):
        points = sorted((dropout, mean_std([run_field(row, ("test", "loss")) for row in cell]))
                        for (dropout,), cell in aggregate(group, ("dropout",)))
        axis.errorbar([p for p, _ in points], [m[0] for _, m in points],
                      yerr=[m[1] for _, m in points], marker="o", capsize=3,
                      label=f"{layers} layer{'s' if layers > 1 else ''}")
    axis.set_xlabel("dropout")
    axis.set_ylabel("test nats/char")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figures.save(figure, path, dpi=110)


def plot_gradient_reach(study, results, output_dir, path):
    """Median gradient norm of the loss at the last step against distance, per group
    (``gradient_reach`` entries that the study's post-processing adds to each result)."""
    figure, (axis,) = _figure()
    drawn = False
    for group in results:
        reach = group.get("gradient_reach")
        if not reach:
            continue
        norms = np.asarray([np.nan if value is None else value for value in reach["norms"]])
        axis.plot(np.arange(len(norms)), norms, label=_label(tuple(group["labels"].values()),
                                                             tuple(group["labels"])))
        drawn = True
    if not drawn:
        return
    axis.set_yscale("log")
    axis.set_xlabel("distance k (steps back from the loss)")
    axis.set_ylabel("median |dL_T / dh_{T-k}|, layer 0")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
    figure.tight_layout()
    figures.save(figure, path, dpi=110)


def plot_runs(run_dirs: Sequence[str], path):
    """Train and validation loss against steps and against wall seconds for any runs (folders
    holding a ``metrics.jsonl``), two panels."""
    figure, (by_step, by_time) = _figure(columns=2)
    for run_dir in run_dirs:
        records = read_metrics(pathlib.Path(run_dir) / "metrics.jsonl")
        for kind, style in (("train", "-"), ("val", "o-")):
            for axis, x_name in ((by_step, "step"), (by_time, "elapsed_seconds")):
                xs, ys = _series(records, kind, x_name, "loss")
                if len(xs):
                    axis.plot(xs, ys, style, markersize=3, label=f"{run_dir} {kind}")
    for axis, name in ((by_step, "step"), (by_time, "wall seconds")):
        axis.set_xlabel(name)
        axis.set_ylabel("loss (nats/char)")
        axis.grid(alpha=0.3)
    by_step.legend(fontsize=6)
    figure.tight_layout()
    figures.save(figure, path, dpi=110)


PLOTS = {"curves": lambda s, r, o, p: plot_curves(s, r, o, p),
         "curves_nats": lambda s, r, o, p: plot_curves(s, r, o, p, y="loss"),
         "curves_wall": lambda s, r, o, p: plot_curves(s, r, o, p, x="wall"),
         "curves_chars": lambda s, r, o, p: plot_curves(s, r, o, p, x="chars"),
         "grad_norms": plot_grad_norms, "heatmaps": plot_heatmaps, "depth": plot_depth,
         "gradient_reach": plot_gradient_reach}


def write_report(study, results, output_dir, command=None):
    """Write ``results.json`` (every run), ``table.md`` and the study's PNG plots into
    ``output_dir``; returns the table."""
    from jaxrnn import files
    output_dir = pathlib.Path(output_dir)
    rows = flatten(results)
    payload = {"question": study.question, "command": command, "runs": rows,
               "samples": {group["group"]: group.get("sample") for group in results
                           if group.get("sample")}}
    text = table(study, results)
    analyses = explore(study, rows)
    if analyses:
        payload["explored"] = analyses
        text += "\n" + "\n".join(explored_table(title, analysis)
                                  for title, analysis in analyses.items())
    files.write_atomically(output_dir / "results.json",
                           (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())
    header = f"# {study.question}\n\n" + (f"Command: `{command}`\n\n" if command else "")
    files.write_atomically(output_dir / "table.md", (header + text).encode())
    for name in study.plots:
        PLOTS[name](study, results, output_dir, output_dir / f"{name}.png")
    return text
