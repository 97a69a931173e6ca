"""Several seeds and learning rates as one vmap-ed program:
``python -m experiments.sweep --preset=quick --seeds=0,1,2 --learning_rates=2e-3,5e-3,1e-2``.

Accepts every flag of experiments.train; every (learning rate, seed) pair of the grid is one run
(runs differ only in seed and peak learning rate). Prints a table of the final train, validation
and test losses and writes ``<output_dir>/sweep.jsonl``. No checkpoints.
"""
from absl import flags

from experiments import common
from jaxrnn.errors import ConfigError

common.define_config_flags()
flags.adopt_module_key_flags(common)   # --helpshort lists them
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds of the runs (integers)")
flags.DEFINE_list("learning_rates", [], "peak learning rates of the runs; empty: --learning_rate")
FLAGS = flags.FLAGS


def _parse(values, kind, name):
    try:
        parsed = [kind(value) for value in values]
    except ValueError:
        raise ConfigError(f"--{name} must be a comma-separated list of {kind.__name__}s, got "
                          f"{','.join(values)!r}") from None
    if kind is float and not all(0 < value < float("inf") for value in parsed):
        raise ConfigError(f"--{name} must all be > 0 and finite, got {','.join(values)}")
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--{name} lists a value twice: {','.join(values)}")
    return parsed


def main(argv):
    config = common.config_from_flags()
    common.enable_dtype(config.dtype)
    from jaxrnn import loop
    results = loop.sweep(config, _parse(FLAGS.seeds, int, "seeds"),
                         _parse(FLAGS.learning_rates, float, "learning_rates"))
    print("| learning rate | seed | train loss | val nats/char | val bpc | test nats/char | "
          "test bpc |\n|---|---|---|---|---|---|---|")
    for run in results:
        note = "" if run["diverged_at_step"] is None else \
            f" (diverged at step {run['diverged_at_step']})"
        print(f"| {run['learning_rate']:g} | {run['seed']} | {run['train_loss']:.4f} | "
              f"{run['val']['loss']:.4f} | {run['val']['bpc']:.3f} | {run['test']['loss']:.4f} | "
              f"{run['test']['bpc']:.3f}{note} |")


if __name__ == "__main__":
    common.run(main)
