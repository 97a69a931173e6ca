"""The sampling study: what temperature, top-p and top-k do to generated text, beyond perplexity.
``python -m experiments.text_quality --checkpoint=runs/default/checkpoint --top_ps=0.8,0.9,1.0
--json=tq.json --plot=tq.png``

For every (temperature, top-p, top-k) of the grid, samples --num_samples texts of --length
characters as one batched jitted call (`jaxrnn.sample`), scores them against the training split
(`jaxrnn.text_quality`: real words, diversity, copying, loops, play structure) and prints one
table row per setting, plus the same metrics for random windows of the held-out test split (the
reference row) and the model's bits/char on the test split. The study is one library call
(`jaxrnn.text_quality.evaluate_checkpoint`), its table and plot `jaxrnn.report.text_quality`'s;
this launcher parses the flags and writes the outputs.
"""
import math
import sys

from absl import app, flags

from experiments import common, reporting
from jaxrnn import checkpoint, sample, text_quality
from jaxrnn.errors import ConfigError
from jaxrnn.report import text_quality as quality_report

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


def main(argv):
    settings = settings_from_flags()
    sample.validate_sampling_options(1.0, 0, 1.0, FLAGS.length, FLAGS.num_samples)
    if FLAGS.json:
        reporting.check_writable_path(FLAGS.json, "--json")
    if FLAGS.plot:
        reporting.check_writable_path(FLAGS.plot, "--plot", reporting.plot_formats())
    common.enable_dtype(checkpoint.read_metadata(FLAGS.checkpoint)["config"].get("dtype"))
    result = text_quality.evaluate_checkpoint(
        FLAGS.checkpoint, settings, num_samples=FLAGS.num_samples, length=FLAGS.length,
        prime=FLAGS.prime, seed=FLAGS.seed, data=FLAGS.data,
        command=" ".join(["python -m experiments.text_quality", *sys.argv[1:]]))
    print("\n".join(quality_report.summary_lines(result)))
    if FLAGS.json:
        reporting.write_json(FLAGS.json, result.record)
        print(f"json: {FLAGS.json}")
    if FLAGS.plot:
        reporting.write_plot(FLAGS.plot, lambda image_format: quality_report.render_plot(
            result.record, image_format))
        print(f"plot: {FLAGS.plot}")


if __name__ == "__main__":
    app.run(common.run_main(main))
