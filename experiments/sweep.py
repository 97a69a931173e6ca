"""Several seeds and learning rates as one vmap-ed program:
``python -m experiments.sweep --preset=quick --seeds=0,1,2 --learning_rates=2e-3,5e-3,1e-2
--clip_norms=1,5,inf``.

Accepts every flag of experiments.train; every (learning rate, clip threshold, seed) of the grid is
one run (runs differ only in seed, peak learning rate and clip threshold). Prints a table of the
final train, validation and test losses and writes ``<output_dir>/sweep.jsonl`` and each run's
``<output_dir>/runs/<run>/metrics.jsonl``. No checkpoints.
"""
from absl import flags

from experiments import checks, common

common.define_config_flags()
flags.adopt_module_key_flags(common)   # --helpshort lists them
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds of the runs (integers)")
flags.DEFINE_list("learning_rates", [], "peak learning rates of the runs; empty: --learning_rate")
flags.DEFINE_list("clip_norms", [], "clip thresholds of the runs (inf: no clipping); empty: "
                  "--clip_norm")
flags.DEFINE_integer("patience", 0, "train each run to its best: stop when no run's validation "
                     "loss improved for this many evaluations and test every run from its own "
                     "best state (0: train all --num_steps, test the last)", lower_bound=0)
FLAGS = flags.FLAGS


def main(argv):
    config = common.config_from_flags()
    common.enable_dtype(config.dtype)
    from jaxrnn import loop
    results, _ = loop.sweep(config, checks.parse_list(FLAGS.seeds, int, "seeds"),
                            checks.parse_list(FLAGS.learning_rates, float, "learning_rates"),
                            checks.parse_list(FLAGS.clip_norms, float, "clip_norms",
                                              allow_inf=True),
                            patience=FLAGS.patience)
    print("| learning rate | clip | seed | train loss | val nats/char | val bpc | test nats/char "
          "| test bpc | clipped |\n|---|---|---|---|---|---|---|---|---|")
    for run in results:
        note = "" if run["diverged_at_step"] is None else \
            f" (diverged at step {run['diverged_at_step']})"
        if "best_step" in run:
            note += f" (best at step {run['best_step']})"
        clip = "none" if run["clip_norm"] is None else f"{run['clip_norm']:g}"
        print(f"| {run['learning_rate']:g} | {clip} | {run['seed']} | "
              f"{_cell(run['train_loss'])} | {_cell(run['val']['loss'])} | "
              f"{_cell(run['val']['bpc'], 3)} | {_cell(run['test']['loss'])} | "
              f"{_cell(run['test']['bpc'], 3)}{note} | {100 * run['clip_fraction']:.0f}% |")


def _cell(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    common.run(main)
