"""Tables and plots of a study (`jaxrnn.studies`), shared by every study and by
``experiments.plot_runs``: runs are flattened into rows, seeds aggregated as mean and standard
deviation, and curves read back from each run's ``metrics.jsonl``. No training here.

Every table reports the seeds of a row as mean ± sample standard deviation, the 95 % Student-t
interval of its mean test loss, and whether it differs from the row with the lowest mean test
loss (Welch's t-test over seeds at 5 %, `jaxrnn.stats`): "not distinguishable" otherwise.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global figure state).
"""
import io
import json
import math
import pathlib
from typing import Dict, List, Sequence

import numpy as np

from jaxrnn import stats

LN2 = math.log(2.0)

# The numbers a table reports per row: (column title, run field path, digits, scale).
METRICS = (("test nats/char", ("test", "loss"), 4, 1), ("test bpc", ("test", "bpc"), 3, 1),
           ("test ppl", ("test", "perplexity"), 2, 1), ("val nats/char", ("val", "loss"), 4, 1),
           ("train loss", ("train_loss",), 4, 1), ("steps clipped %", ("clip_fraction",), 1, 100),
           ("max grad norm", ("max_grad_norm",), 1, 1), ("loss spikes", ("loss_spikes",), 1, 1))


def _field(run, path):
    value = run
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def flatten(results):
    """One dict per run: the group's labels and name, the run's fields, its group's timing."""
    rows = []
    for group in results:
        for run in group["runs"]:
            rows.append({**group["labels"], **run, "group": group.get("runs_dir", group["group"]),
                         "note": group.get("note"),
                         "num_params": group.get("num_params"),
                         "vocab_size": group.get("vocab_size"),
                         "batch_chars": group["config"]["batch_size"]
                         * group["config"]["seq_len"],
                         "runs_in_group": len(group["runs"])})
    return rows


def _key(row, keys):
    return tuple(row.get(key) for key in keys)


def aggregate(rows, keys):
    """Rows grouped by ``keys``: ``[(key values, [rows of that configuration])]`` in first-seen
    order (so the study's own order)."""
    groups: Dict[tuple, List[dict]] = {}
    for row in rows:
        groups.setdefault(_key(row, keys), []).append(row)
    return list(groups.items())


def mean_std(values):
    """(mean, sample std, count) of the finite values (NaN, 0 when there are none)."""
    summary = stats.summarize(values)
    return summary.mean, summary.std, summary.count


def best_learning_rates(rows, keys):
    """For each configuration (``keys`` without learning_rate): the learning rate with the lowest
    mean validation loss over seeds (diverged runs count as infinitely bad)."""
    config_keys = tuple(key for key in keys if key != "learning_rate")
    best = {}
    for config, group in aggregate(rows, config_keys):
        by_rate = aggregate(group, ("learning_rate",))

        def score(item):
            losses = [_field(row, ("val", "loss")) for row in item[1]]
            return (np.mean([loss if loss is not None and not row["diverged"] else np.inf
                             for loss, row in zip(losses, item[1])]))

        best[config] = min(by_rate, key=score)[0][0]
    return config_keys, best


def learning_rate_choice(rows, config_keys, config, best):
    """How the reported learning rate of one configuration was chosen: the group's own note
    (a rate handed over from a bracketing group), else whether the rates tried for it bracket
    ``best`` (`jaxrnn.studies.bracket_status`)."""
    from jaxrnn.studies import bracket_status
    group = [row for row in rows if _key(row, config_keys) == config]
    notes = [row["note"] for row in group if row.get("note")]
    if notes:
        return max(notes, key=len)     # a later phase's note repeats the earlier one's and adds
    tried = sorted({row["learning_rate"] for row in group})
    return f"{bracket_status(tried, best)} ({', '.join(f'{rate:g}' for rate in tried)})"


def selected_rows(study, rows):
    """The rows the table reports: all, or only each configuration's best learning rate."""
    if not study.best_lr:
        return rows
    config_keys, best = best_learning_rates(rows, study.table_keys)
    return [row for row in rows if row["learning_rate"] == best[_key(row, config_keys)]]


def _format(mean, std, count, digits, total):
    if count == 0:
        return "n/a"
    spec = ".2e" if abs(mean) >= 1e5 else f".{digits}f"
    text = f"{mean:{spec}}" if count == 1 else f"{mean:{spec}} ± {std:{spec}}"
    return text if count == total else f"{text} ({count}/{total})"


def _test_losses(group):
    return [_field(row, ("test", "loss")) for row in group]


def _versus(group, best_group):
    """The tested-difference cell of a row against the table's (or part's) best row with at
    least two seeds."""
    if group is best_group:
        return "best"
    test = stats.welch(_test_losses(group), _test_losses(best_group))
    if test is None:
        return "untested (< 2 seeds)"
    verdict = "worse" if test.p < stats.ALPHA else "not distinguishable"
    return f"{verdict} (p={test.p:.2g})"


def _diverged(group):
    count = sum(bool(row["diverged"]) for row in group)
    if len(group) < 2:
        return str(count)
    low, high = stats.wilson(count, len(group))
    return f"{count}/{len(group)} [{low:.2f}, {high:.2f}]"


def table(study, results):
    """The study's markdown table: one row per configuration, mean ± sample std over seeds, the
    95 % interval of the test loss and the tested difference from the best row among the rows
    that share the study's ``compare_within`` labels."""
    all_rows = flatten(results)
    rows = selected_rows(study, all_rows)
    keys = study.table_keys
    config_keys, best_rates = best_learning_rates(all_rows, keys) if study.best_lr else ((), {})
    to_best = any("best_step" in row for row in rows)
    titles = [key.replace("_", " ") + (" (best)" if key == "learning_rate" and study.best_lr
                                       else "") for key in keys]
    titles += (["learning rate chosen"] if study.best_lr else []) + ["seeds", "diverged"]
    titles += [title for title, _, _, _ in METRICS[:1]] + ["test 95% CI", "vs best (Welch, 5%)"]
    titles += [title for title, _, _, _ in METRICS[1:]]
    titles += (["epochs at best", "val - train at best"] if to_best else [])
    titles += ["params", "wall s (group)", "chars/s (group, all runs)"]
    configurations = aggregate(rows, keys)
    # `_versus` tells the best row by identity: the same lists as the table's rows.
    rows = [row for _, group in configurations for row in group]
    within = study.compare_within
    best_of_part = {}
    for part, _ in aggregate(rows, within):
        # The reference is the best row with at least two seeds (else the best row at all).
        candidates = [item for item in configurations if _key(item[1][0], within) == part]
        tested = [item for item in candidates if mean_std(_test_losses(item[1]))[2] >= 2]
        best_of_part[part] = min(tested or candidates,
                                 key=lambda item: mean_std(_test_losses(item[1]))[0]
                                 if mean_std(_test_losses(item[1]))[2] else math.inf)[1]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for values, group in configurations:
        part = _key(group[0], within)
        cells = [_cell(value) for value in values]
        if study.best_lr:
            config = _key(group[0], config_keys)
            cells.append(learning_rate_choice(all_rows, config_keys, config, best_rates[config]))
        cells += [str(len(group)), _diverged(group)]
        for index, (_, path, digits, scale) in enumerate(METRICS):
            values = [_field(row, path) for row in group]
            cells.append(_format(*mean_std([None if value is None else scale * value
                                            for value in values]), digits, len(group)))
            if index == 0:
                summary = stats.summarize(_test_losses(group))
                cells.append("n/a" if summary.half_width is None else
                             f"[{summary.mean - summary.half_width:.4f}, "
                             f"{summary.mean + summary.half_width:.4f}]")
                cells.append(_versus(group, best_of_part[part]))
        if to_best:
            cells.append(_format(*mean_std([row.get("best_epoch") for row in group]), 1,
                                 len(group)))
            cells.append(_format(*mean_std(
                [None if row.get("train_loss_at_best") is None or _field(row, ("val", "loss"))
                 is None else row["val"]["loss"] - row["train_loss_at_best"]
                 for row in group]), 4, len(group)))
        cells += [f"{group[0]['num_params']:,}" if group[0].get("num_params") else "n/a",
                  f"{group[0]['seconds']:.0f}", f"{group[0]['chars_per_second']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value):
    if isinstance(value, float):
        return "none" if math.isinf(value) else f"{value:g}"
    return "none" if value is None else str(value)


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
    return ", ".join(f"{key}={_cell(value)}" for key, value in zip(keys, values)
                     if key not in ("part",))


def _figure(columns=1, width=6.4, height=4.2, rows=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width * columns, height))
    FigureCanvasAgg(figure)
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
    one line per configuration of the table, mean ± std over seeds."""
    rows = selected_rows(study, flatten(results))
    keys = study.table_keys
    figure, (axis,) = _figure()
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
    axis.set_ylabel(f"{kind} {y}")
    if x == "chars":
        axis.set_xscale("log")
    axis.set_title(f"{kind} {y}{title_suffix}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
    figure.tight_layout()
    _save_figure(figure, path)


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
    _save_figure(figure, path)


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
                [_field(row, ("test", "loss")) for row in cell_rows])[0]
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
    _save_figure(figure, path)


def plot_depth(study, results, output_dir, path):
    """Test loss (mean ± std over seeds) against dropout, one line per number of layers."""
    rows = [row for row in flatten(results) if row.get("part") == "depth"]
    if not rows:
        return
    figure, (axis,) = _figure()
    for (layers,), group in aggregate(rows, ("num_layers",)):
        points = sorted((dropout, mean_std([_field(row, ("test", "loss")) for row in cell]))
                        for (dropout,), cell in aggregate(group, ("dropout",)))
        axis.errorbar([p for p, _ in points], [m[0] for _, m in points],
                      yerr=[m[1] for _, m in points], marker="o", capsize=3,
                      label=f"{layers} layer{'s' if layers > 1 else ''}")
    axis.set_xlabel("dropout")
    axis.set_ylabel("test nats/char")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    _save_figure(figure, path)


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
    _save_figure(figure, path)


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
    _save_figure(figure, path)


PLOTS = {"curves": lambda s, r, o, p: plot_curves(s, r, o, p),
         "curves_wall": lambda s, r, o, p: plot_curves(s, r, o, p, x="wall"),
         "curves_chars": lambda s, r, o, p: plot_curves(s, r, o, p, x="chars"),
         "grad_norms": plot_grad_norms, "heatmaps": plot_heatmaps, "depth": plot_depth,
         "gradient_reach": plot_gradient_reach}


def explore(study, rows):
    """The hyper-parameters-explored analyses of a study (its ``explore`` parts), by title."""
    analyses = {}
    for part, factors in study.explore:
        for arch in sorted({row["arch"] for row in rows if row.get("part") == part}):
            selected = [row for row in rows if row.get("part") == part and row["arch"] == arch]
            uniform = math.log(selected[0]["vocab_size"])
            analyses[f"{arch}, {part}: {' x '.join(factors)}"] = explored(selected, factors,
                                                                           uniform)
    return analyses


def _save_figure(figure, path):
    """The figure as an image at ``path`` (format from its suffix), written atomically
    (`jaxrnn.files.write_atomically`: a full disk is a `StorageError`, no half-written image)."""
    from jaxrnn import files
    path = pathlib.Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix[1:] or "png", dpi=110)
    files.write_atomically(path, buffer.getvalue())


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


# ---------------------------------------------------------------------------------------------
# Hyper-parameters explored: which matter, and do they interact
# ---------------------------------------------------------------------------------------------
def _outcome(row, uniform):
    """A run's test loss, with a diverged run scored as the uniform model (ln V)."""
    loss = _field(row, ("test", "loss"))
    return uniform if row["diverged"] or loss is None else min(loss, uniform)


def explored(rows, factors, uniform):
    """Main effects of ``factors`` on the test loss and how much of its variance they explain.

    For each factor: the values tried, the value with the lowest marginal mean (averaged over all
    the other factors' values and the seeds) and the spread of the marginal means (max - min:
    how much the factor matters). ``additive_r2`` is the fraction of the variance of the outcome
    explained by the sum of main effects; 1 - additive_r2 is what interactions (and seed noise)
    explain. Diverged runs count as ln V (the uniform model).
    """
    outcomes = np.asarray([_outcome(row, uniform) for row in rows])
    grand = outcomes.mean()
    prediction = np.full_like(outcomes, grand)
    table_rows = []
    for factor in factors:
        values = sorted({row[factor] for row in rows})
        means = {value: outcomes[[row[factor] == value for row in rows]].mean()
                 for value in values}
        prediction += np.asarray([means[row[factor]] - grand for row in rows])
        best = min(values, key=lambda value: means[value])
        table_rows.append({"factor": factor, "values": values, "best": best,
                           "marginal_means": [float(means[value]) for value in values],
                           "spread": float(max(means.values()) - min(means.values()))})
    total = float(((outcomes - grand) ** 2).sum())
    residual = float(((outcomes - prediction) ** 2).sum())
    return {"factors": table_rows, "additive_r2": 1.0 - residual / total if total > 0 else 1.0,
            "runs": len(rows)}


def explored_table(title, analysis):
    """Markdown: one row per factor (values tried, best, marginal means, spread)."""
    lines = [f"**{title}** ({analysis['runs']} runs; main effects explain "
             f"{100 * analysis['additive_r2']:.0f}% of the variance of the test loss)", "",
             "| hyper-parameter | values tried | best value | marginal mean test nats/char | "
             "how much it matters (spread) |", "|---|---|---|---|---|"]
    for row in analysis["factors"]:
        lines.append(f"| {row['factor']} | {', '.join(_cell(v) for v in row['values'])} | "
                     f"{_cell(row['best'])} | "
                     f"{' / '.join(f'{m:.3f}' for m in row['marginal_means'])} | "
                     f"{row['spread']:.3f} |")
    return "\n".join(lines) + "\n"
