"""The sampling study: what temperature, top-p and top-k do to generated text, beyond perplexity.
``python -m experiments.text_quality --checkpoint=runs/default/checkpoint --top_ps=0.8,0.9,1.0
--json=tq.json --plot=tq.png``

For every (temperature, top-p, top-k) of the grid, samples --num_samples texts of --length
characters as one batched jitted call (`jaxrnn.sample`), scores them against the training split
(`jaxrnn.text_quality`: real words, diversity, copying, loops, play structure) and prints one
table row per setting, plus the same metrics for random windows of the held-out test split (the
reference row) and the model's bits/char on the test split.
"""
import datetime
import io
import json
import math
import os
import statistics
import sys
import time

import jax
from absl import app, flags

from experiments import common
from jaxrnn import checkpoint, data, loop, runstate, sample, text_quality, train
from jaxrnn.errors import CheckpointError, ConfigError

flags.DEFINE_string("checkpoint", "runs/default/checkpoint", "checkpoint folder (or its JSON)")
flags.DEFINE_string("data", None, "score against this corpus instead of the checkpoint's (same "
                    "vocabulary); its train split is the text copies are looked up in")
flags.DEFINE_list("temperatures", ["0.2", "0.5", "0.8", "1.0", "1.2", "1.5"],
                  "temperatures to sample at, each > 0")
flags.DEFINE_list("top_ps", ["1.0"], "nucleus thresholds, each in (0, 1]; 1.0 is no filtering")
flags.DEFINE_list("top_ks", ["0"], "top-k values, each >= 0; 0 is no filtering")
flags.DEFINE_integer("num_samples", 64, "texts per setting, sampled as one batch")
flags.DEFINE_integer("length", 500, "characters per text (the prime is not scored)")
flags.DEFINE_string("prime", "", "text fed through the network before sampling; empty starts "
                    "from a newline")
flags.DEFINE_integer("seed", 0, "random seed of the samples (the same for every setting) and of "
                     "the reference windows")
flags.DEFINE_string("json", "", "write every setting's metrics, timings and one example text to "
                    "this JSON file")
flags.DEFINE_string("plot", "", "write the trade-off plot to this image (.png, .svg, .pdf)")
FLAGS = flags.FLAGS

COLUMNS = (("word_validity", "words valid", ".3f"), ("distinct_1", "distinct-1", ".3f"),
           ("distinct_2", "distinct-2", ".3f"), ("copied_8gram_fraction", "copied 8-grams", ".3f"),
           ("longest_copy_median", "longest copy (median)", ".1f"),
           ("repeated_4gram_fraction", "repeated 4-grams", ".3f"),
           ("speaker_line_fraction", "speaker lines", ".3f"),
           ("mean_line_length", "mean line length", ".1f"))


def parse_numbers(texts, flag, cast, valid, rule):
    """The values of a list flag, each ``cast`` and checked by ``valid``; ConfigError naming the
    flag and ``rule`` otherwise."""
    if not texts:
        raise ConfigError(f"{flag} is empty; give at least one value ({rule})")
    values = []
    for text in texts:
        try:
            value = cast(text)
        except ValueError:
            raise ConfigError(f"{flag} must be a comma-separated list of numbers, got "
                              f"{text!r}") from None
        if not valid(value):
            raise ConfigError(f"{flag} values must be {rule}, got {text}")
        values.append(value)
    return values


def settings_from_flags():
    """The grid: every (temperature, top_p, top_k), temperature varying fastest."""
    temperatures = parse_numbers(FLAGS.temperatures, "--temperatures", float,
                                 lambda t: math.isfinite(t) and t > 0, "finite and > 0")
    top_ps = parse_numbers(FLAGS.top_ps, "--top_ps", float, lambda p: 0 < p <= 1,
                           "in (0, 1]; use 1.0 to disable nucleus filtering")
    top_ks = parse_numbers(FLAGS.top_ks, "--top_ks", int, lambda k: k >= 0,
                           "integers >= 0; use 0 to disable top-k filtering")
    return [{"temperature": t, "top_p": p, "top_k": k}
            for k in top_ks for p in top_ps for t in temperatures]


def check_output(path, flag, suffixes=None):
    """Fail before any sampling when ``path`` cannot be written (a folder, a read-only or
    missing-and-uncreatable folder, or an image suffix matplotlib cannot write)."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a folder; name a file in it")
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



def setting_label(setting):
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


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(15, 4.5))
    FigureCanvasAgg(figure)
    return figure


def plot_suffixes():
    return set(_figure().canvas.get_supported_filetypes())


def render_plot(record, path):
    """Three panels from the JSON record: diversity against word validity (one point per
    setting), copied 8-grams and repeated 4-grams against temperature (one line per top-p/top-k);
    the reference as a star or a dashed line. Returns the image bytes in the format of the suffix
    of ``path``."""
    figure = _figure()
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
    image_format = os.path.splitext(path)[1][1:].lower()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format)
    return buffer.getvalue()


def main(argv):
    settings = settings_from_flags()
    sample.validate_sampling_options(1.0, 0, 1.0, FLAGS.length, FLAGS.num_samples)
    if FLAGS.json:
        check_output(FLAGS.json, "--json")
    if FLAGS.plot:
        check_output(FLAGS.plot, "--plot", plot_suffixes())
    common.enable_dtype(checkpoint.read_metadata(FLAGS.checkpoint)["config"].get("dtype"))
    params, config, vocab, metadata = runstate.load_model(FLAGS.checkpoint)
    corpus = data.load_corpus(FLAGS.data or config.data, config.split)
    if corpus.vocab != vocab:
        raise CheckpointError(f"the corpus {corpus.text_path} has a different vocabulary from the "
                              "checkpoint's; score against the text it was trained on")
    train_text = data.decode(vocab, corpus.train)
    tick = time.perf_counter()
    index = text_quality.get_index(train_text)
    index_seconds = time.perf_counter() - tick
    rows = []
    for setting in settings:
        tick = time.perf_counter()
        texts = sample.sample_text(params, arch=config.cell, vocab=vocab,
                                   key=jax.random.key(FLAGS.seed), prime=FLAGS.prime,
                                   length=FLAGS.length, num_samples=FLAGS.num_samples,
                                   **setting)
        texts = [text[len(FLAGS.prime):] for text in texts]
        sampled = time.perf_counter()
        metrics = text_quality.text_metrics(texts, index=index)
        rows.append({**setting, "metrics": metrics, "sample_seconds": sampled - tick,
                     "score_seconds": time.perf_counter() - sampled, "example": texts[0]})
    windows = text_quality.reference_windows(data.decode(vocab, corpus.test), FLAGS.num_samples,
                                             FLAGS.length, FLAGS.seed)
    reference = {"metrics": text_quality.text_metrics(windows, index=index),
                 "example": windows[0]}
    test = train.loss_report(loop.evaluate_split(config, params, corpus.test, "test"))
    model = (f"{config.arch} H={config.hidden_size} L={config.num_layers} step "
             f"{metadata['step']}")
    print(f"{model}: test {test['bpc']:.4f} bits/char ({len(corpus.test):,} characters); "
          f"{FLAGS.num_samples} texts of {FLAGS.length} characters per setting, seed "
          f"{FLAGS.seed}, prime {FLAGS.prime!r}")
    print("\n".join(format_table(rows, reference)))
    print(f"indexed the train split ({len(train_text):,} characters) in {index_seconds:.2f} s; "
          f"scoring took {statistics.median(row['score_seconds'] for row in rows):.3f} s per "
          "setting (median)")
    record = {"command": " ".join(["python -m experiments.text_quality", *sys.argv[1:]]),
              "date": datetime.datetime.now(
                  datetime.timezone.utc).isoformat(timespec="seconds"),
              "title": f"{model}, {FLAGS.num_samples} x {FLAGS.length} characters per setting",
              "checkpoint": str(FLAGS.checkpoint), "step": metadata["step"],
              "model": {"arch": config.arch, **config.cell.options,
                        "hidden_size": config.hidden_size, "num_layers": config.num_layers},
              "data": FLAGS.data or config.data, "test_loss": test["loss"], "test_bpc": test["bpc"],
              "num_samples": FLAGS.num_samples, "length": FLAGS.length, "prime": FLAGS.prime,
              "seed": FLAGS.seed, "index_seconds": index_seconds, "settings": rows,
              "reference": reference}
    if FLAGS.json:
        common.write_output(FLAGS.json,
                            json.dumps(record, indent=1, allow_nan=False).encode("utf-8"), "--json")
        print(f"json: {FLAGS.json}")
    if FLAGS.plot:
        common.write_output(FLAGS.plot, render_plot(record, FLAGS.plot), "--plot")
        print(f"plot: {FLAGS.plot}")


if __name__ == "__main__":
    app.run(common.run_main(main))
