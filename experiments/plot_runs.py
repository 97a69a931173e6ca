"""Training curves of any runs: ``python -m experiments.plot_runs --run_dirs=runs/a,runs/b
--plot=curves.png``.

Each run folder holds a ``metrics.jsonl`` (written by experiments.train, or by a sweep or study
run under ``<output_dir>/runs/<run>/``); the plot shows train and validation loss against steps
and against wall seconds.
"""
import pathlib

from absl import flags

from experiments import common
from jaxrnn.errors import ConfigError

flags.DEFINE_list("run_dirs", None, "run folders, each holding a metrics.jsonl")
flags.DEFINE_string("plot", "curves.png", "image to write (.png, .svg or .pdf)")
FLAGS = flags.FLAGS


def main(argv):
    from jaxrnn.report import study as study_report
    if not FLAGS.run_dirs:
        raise ConfigError("--run_dirs is empty; give run folders, e.g. --run_dirs=runs/default")
    for run in FLAGS.run_dirs:
        if not (pathlib.Path(run) / "metrics.jsonl").is_file():
            raise ConfigError(f"--run_dirs: {run} has no metrics.jsonl; give the folder a run "
                              "wrote (its --output_dir)")
    out = pathlib.Path(FLAGS.plot)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--plot must end in .png, .svg or .pdf, got {FLAGS.plot!r}")
    if not out.parent.is_dir():
        raise ConfigError(f"--plot: folder {out.parent} does not exist; create it first")
    study_report.plot_runs(FLAGS.run_dirs, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    common.run(main)
