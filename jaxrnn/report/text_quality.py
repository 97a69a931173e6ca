"""The table and plot of the sampling study (`jaxrnn.text_quality.evaluate_checkpoint`): per
setting of the grid its text metrics, beside those of held-out text (the reference row).

Everything here reads the study's JSON-ready record; images come back as bytes (writing them, and
the checks that name the launcher's flags, are ``experiments.text_quality``'s).
"""
import statistics

from jaxrnn.report import figures
from jaxrnn.text_quality import model_label

# The table's columns: (metric, column title, format).
COLUMNS = (("word_validity", "words valid", ".3f"), ("distinct_1", "distinct-1", ".3f"),
           ("distinct_2", "distinct-2", ".3f"), ("copied_8gram_fraction", "copied 8-grams", ".3f"),
           ("longest_copy_median", "longest copy (median)", ".1f"),
           ("repeated_4gram_fraction", "repeated 4-grams", ".3f"),
           ("speaker_line_fraction", "speaker lines", ".3f"),
           ("mean_line_length", "mean line length", ".1f"))


def setting_label(setting):
    """``"T=0.8 p=0.9"``, with ``" k=K"`` when top-k filters."""
    label = f"T={setting['temperature']:g} p={setting['top_p']:g}"
    return label + (f" k={setting['top_k']}" if setting["top_k"] else "")


def format_table(rows, reference):
    """Markdown lines: one row per setting (dicts with the setting and "metrics"), then the
    reference row."""
    lines = ["| setting | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for label, metrics in [(setting_label(row), row["metrics"]) for row in rows] + [
            ("held-out test text (reference)", reference["metrics"])]:
        lines.append(f"| {label} | " + " | ".join(format(metrics[key], spec)
                                                   for key, _, spec in COLUMNS) + " |")
    return lines


def summary_lines(result):
    """What the launcher prints for a `jaxrnn.text_quality.GridResult`: the model and its test
    bits/char, the table, and how long indexing and scoring took."""
    record = result.record
    rows = record["settings"]
    return ([f"{model_label(record)}: test {record['test_bpc']:.4f} bits/char "
             f"({result.test_characters:,} characters); {record['num_samples']} texts of "
             f"{record['length']} characters per setting, seed {record['seed']}, prime "
             f"{record['prime']!r}"]
            + format_table(rows, record["reference"])
            + [f"indexed the train split ({result.train_characters:,} characters) in "
               f"{record['index_seconds']:.2f} s; scoring took "
               f"{statistics.median(row['score_seconds'] for row in rows):.3f} s per setting "
               "(median)"])


def render_plot(record, image_format):
    """Three panels from the record: diversity against word validity (one point per setting),
    copied 8-grams and repeated 4-grams against temperature (one line per top-p/top-k); the
    reference as a star or a dashed line. Returns the bytes of an image in ``image_format``
    (`jaxrnn.report.figures.render`)."""
    figure = figures.new_figure(15, 4.5)
    diversity, copying, looping = figure.subplots(1, 3)
    reference = record["reference"]["metrics"]
    groups = {}
    for row in record["settings"]:
        groups.setdefault((row["top_p"], row["top_k"]), []).append(row)
    for (top_p, top_k), rows in groups.items():
        label = f"p={top_p:g}" + (f" k={top_k}" if top_k else "")
        temperatures = [row["temperature"] for row in rows]
        metric = lambda key: [row["metrics"][key] for row in rows]   # noqa: E731
        points = diversity.plot(metric("word_validity"), metric("distinct_2"), "o-", label=label)
        for row in rows:
            diversity.annotate(f"{row['temperature']:g}", (row["metrics"]["word_validity"],
                                                           row["metrics"]["distinct_2"]),
                               fontsize=7, color=points[0].get_color(),
                               xytext=(3, 3), textcoords="offset points")
        copying.plot(temperatures, metric("copied_8gram_fraction"), "o-", label=label)
        looping.plot(temperatures, metric("repeated_4gram_fraction"), "o-", label=label)
    diversity.plot([reference["word_validity"]], [reference["distinct_2"]], "k*", markersize=12,
                   label="held-out text")
    for axes, key in ((copying, "copied_8gram_fraction"), (looping, "repeated_4gram_fraction")):
        axes.axhline(reference[key], color="k", linestyle="--", label="held-out text")
        axes.set_xlabel("temperature")
    diversity.set_xlabel("word validity (fraction of words found in the training text)")
    diversity.set_ylabel("distinct-2 (distinct word pairs / word pairs)")
    diversity.set_title("diversity vs real words (labels: temperature)")
    copying.set_ylabel("fraction of character 8-grams found in the training text")
    copying.set_title("copying")
    looping.set_ylabel("fraction of word 4-grams repeated within a text")
    looping.set_title("loops")
    for axes in (diversity, copying, looping):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(record["title"], fontsize=10)
    figure.tight_layout()
    return figures.render(figure, image_format)
