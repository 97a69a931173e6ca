"""Tables of a study (`jaxrnn.studies`): runs are flattened into rows, seeds aggregated as mean
and standard deviation, and the hyper-parameters a study explores analysed by main effects. No
training and no plotting here (`jaxrnn.report.study` writes the tables with the plots).

Every table reports the seeds of a row as mean ± sample standard deviation, the 95 % Student-t
interval of its mean test loss, and whether it differs from the row with the lowest mean test
loss (Welch's t-test over seeds at 5 %, `jaxrnn.stats`): "not distinguishable" otherwise.
"""
import math
from typing import Dict, List

import numpy as np

from jaxrnn import stats

# The numbers a table reports per row: (column title, run field path, digits, scale).
METRICS = (("test nats/char", ("test", "loss"), 4, 1), ("test bpc", ("test", "bpc"), 3, 1),
           ("test ppl", ("test", "perplexity"), 2, 1), ("val nats/char", ("val", "loss"), 4, 1),
           ("train loss", ("train_loss",), 4, 1), ("steps clipped %", ("clip_fraction",), 1, 100),
           ("max grad norm", ("max_grad_norm",), 1, 1), ("loss spikes", ("loss_spikes",), 1, 1))


def run_field(run, path):
    """The value at ``path`` (keys, e.g. ``("test", "loss")``) of a run's fields, None where
    missing."""
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
            losses = [run_field(row, ("val", "loss")) for row in item[1]]
            return (np.mean([loss if loss is not None and not row["diverged"] else np.inf
                             for loss, row in zip(losses, item[1])]))

        # ties (every rate diverged) go to the lowest rate, as the runner's (`studies.next_rate`)
        best[config] = min(by_rate, key=lambda item: (score(item), item[0][0]))[0][0]
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
    return [run_field(row, ("test", "loss")) for row in group]


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
        cells = [value_text(value) for value in values]
        if study.best_lr:
            config = _key(group[0], config_keys)
            cells.append(learning_rate_choice(all_rows, config_keys, config, best_rates[config]))
        cells += [str(len(group)), _diverged(group)]
        for index, (_, path, digits, scale) in enumerate(METRICS):
            values = [run_field(row, path) for row in group]
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
                [None if row.get("train_loss_at_best") is None or run_field(row, ("val", "loss"))
                 is None else row["val"]["loss"] - row["train_loss_at_best"]
                 for row in group]), 4, len(group)))
        cells += [f"{group[0]['num_params']:,}" if group[0].get("num_params") else "n/a",
                  f"{group[0]['seconds']:.0f}", f"{group[0]['chars_per_second']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def value_text(value):
    """A label value in a table cell or a legend: floats as ``%g``, None and inf as "none"."""
    if isinstance(value, float):
        return "none" if math.isinf(value) else f"{value:g}"
    return "none" if value is None else str(value)


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


# ---------------------------------------------------------------------------------------------
# Hyper-parameters explored: which matter, and do they interact
# ---------------------------------------------------------------------------------------------
def _outcome(row, uniform):
    """A run's test loss, with a diverged run scored as the uniform model (ln V)."""
    loss = run_field(row, ("test", "loss"))
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
        lines.append(f"| {row['factor']} | {', '.join(value_text(v) for v in row['values'])} | "
                     f"{value_text(row['best'])} | "
                     f"{' / '.join(f'{m:.3f}' for m in row['marginal_means'])} | "
                     f"{row['spread']:.3f} |")
    return "\n".join(lines) + "\n"
