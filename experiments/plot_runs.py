"""Training curves of any runs: ``python -m experiments.plot_runs --runs=runs/a,runs/b
--out=curves.png``.

Each run folder holds a ``metrics.jsonl`` (written by experiments.train, or by a sweep or study
run under ``<output_dir>/runs/<run>/``); the plot shows train and validation loss against steps
and against wall seconds.
"""
import pathlib

from absl import flags

from experiments import common
from jaxrnn.errors import ConfigError

flags.DEFINE_list("runs", None, "run folders, each holding a metrics.jsonl")
flags.DEFINE_string("out", "curves.png", "image to write (.png, .svg or .pdf)")
FLAGS = flags.FLAGS


def main(argv):
    from jaxrnn import report
    if not FLAGS.runs:
        raise ConfigError("--runs is empty; give run folders, e.g. --runs=runs/default")
    for run in FLAGS.runs:
        if not (pathlib.Path(run) / "metrics.jsonl").is_file():
            raise ConfigError(f"--runs: {run} has no metrics.jsonl; give the folder a run "
                              "wrote (its --output_dir)")
    out = pathlib.Path(FLAGS.out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--out must end in .png, .svg or .pdf, got {FLAGS.out!r}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out: folder {out.parent} does not exist; create it first")
    report.plot_runs(FLAGS.runs, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    common.run(main)
