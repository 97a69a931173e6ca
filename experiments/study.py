"""Run a study: ``python -m experiments.study --study=architectures --budget=full
--output_dir=experiments/results/architectures``.

Studies (grids, fixed settings, vmapped axes) are defined in `jaxrnn.studies`; this launcher only
parses flags. Each group of runs (one vmapped program) writes its runs' ``metrics.jsonl`` and its
``result.json``; the study writes ``results.json``, ``table.md``, its PNG plots and
``command.txt`` into ``--output_dir``. Re-running a finished study only redraws its outputs; an
interrupted one resumes with the groups it has not finished. The folder is locked from the start
to the last write: a second study into it stops with one line (`jaxrnn.files.folder_lock`).
"""
import shlex
import sys

from absl import flags

from experiments import common

flags.DEFINE_enum("study", None, ["architectures", "activations", "seq_len", "hyperparams",
                                  "clipping", "schedules", "capacity", "cells_108k",
                                  "cells_720k", "irnn", "schedules_depth", "regularisation"],
                  "which study to run")
flags.DEFINE_enum("budget", "quick", ["quick", "full", "to_best"],
                  "quick: tiny models, under 2 minutes; full: the report's sizes at a fixed "
                  "number of steps (capacity: a wall-time budget per model); to_best (cells_108k, "
                  "cells_720k, irnn, schedules_depth, "
                  "regularisation): bracketed learning rates, every run trained to its best "
                  "validation loss")
flags.DEFINE_string("output_dir", None, "folder for the study's results (default "
                    "runs/studies/<study>-<budget>)")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds of every configuration (integers)")
flags.DEFINE_string("data", "tinyshakespeare", "'tinyshakespeare' or a path to a UTF-8 text file")
flags.DEFINE_integer("num_steps", None, "override every group's number of steps (e.g. for a "
                     "smoke test); default: the study's budget")
flags.DEFINE_list("groups", None, "train only these groups of the study (names as in its "
                  "output folder, e.g. lr-lstm-L2), in the study's order; the others are loaded "
                  "when finished, else left out of the report; default: every group")
flags.DEFINE_bool("report_only", False, "train nothing: draw the table and plots of the groups "
                  "finished so far (of a study still running elsewhere, or stopped half-way)")
FLAGS = flags.FLAGS


def main(argv):
    from jaxrnn import files
    from jaxrnn.errors import ConfigError, StorageError
    try:
        seeds = [int(seed) for seed in FLAGS.seeds]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got "
                          f"{','.join(FLAGS.seeds)!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds must list at least one seed, each once, e.g. --seeds=0,1,2")
    output_dir = FLAGS.output_dir or f"runs/studies/{FLAGS.study}-{FLAGS.budget}"
    overrides = {"data": FLAGS.data}
    if FLAGS.num_steps is not None:
        overrides.update(num_steps=FLAGS.num_steps,
                         eval_every=max(1, FLAGS.num_steps // 2),
                         log_every=max(1, FLAGS.num_steps // 4),
                         warmup_steps=min(10, FLAGS.num_steps))
    try:
        with files.folder_lock(output_dir, "--output_dir"):   # to the last write: command.txt
            _run(output_dir, seeds, overrides)
    except StorageError as error:
        error.rerun = ""                     # the same command resumes with the groups left
        raise


def _run(output_dir, seeds, overrides):
    """Train the study's unfinished groups, then write its report and ``command.txt``."""
    from jaxrnn import files, studies
    from jaxrnn.report import study as study_report
    from jaxrnn.interrupt import Interrupted
    command = "python -m experiments.study " + " ".join(
        shlex.quote(arg) for arg in sys.argv[1:]
        if arg not in ("--report_only", "--noreport_only") and not arg.startswith("--groups"))

    def redraw(study, results):
        study_report.write_report(study, results, output_dir, command)

    try:
        study, results = studies.run_study(FLAGS.study, FLAGS.budget, output_dir, seeds=seeds,
                                           overrides=overrides, after_group=redraw,
                                           train=not FLAGS.report_only,
                                           only=FLAGS.groups)
    except Interrupted as stop:
        raise Interrupted(stop.signum, f"{stop}; the study keeps every group it finished: run "
                          f"the same command again to resume with the others",
                          resumable=False) from None
    print(study_report.write_report(study, results, output_dir, command))
    if FLAGS.report_only:
        return
    files.write_atomically(f"{output_dir}/command.txt", (command + "\n").encode("utf-8"))
    print(f"results: {output_dir}/results.json, table.md, "
          + ", ".join(f"{name}.png" for name in study.plots))


if __name__ == "__main__":
    flags.mark_flag_as_required("study")
    common.run(main)
