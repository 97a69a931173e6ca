"""Train a character language model: ``python -m experiments.train [--preset=quick] [--flags]``.

With no flags: an LSTM on Tiny Shakespeare, about 10 minutes on a 2-core CPU, printing samples as
it learns and finishing with the test-split bits per character and the checkpoint's location.
"""
from absl import flags

from experiments import checks, common
from jaxrnn import loop, parallel

common.define_config_flags()
flags.adopt_module_key_flags(common)   # --helpshort lists them
flags.DEFINE_string("coordinator_address", None, "multi-host runs: host:port of process 0 "
                    "(jax.distributed); use with --data_parallel")
flags.DEFINE_integer("num_processes", 1, "multi-host runs: number of processes")
flags.DEFINE_integer("process_id", 0, "multi-host runs: index of this process")
flags.DEFINE_bool("overwrite", False, "train into an --output_dir that holds another run, "
                  "replacing its checkpoint and metrics.jsonl (without it that is an error)")
FLAGS = flags.FLAGS


def main(argv):
    config = common.config_from_flags()
    checks.distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                       config.data_parallel)
    if FLAGS.num_processes > 1:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    common.enable_dtype(config.dtype)
    loop.train(config, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    common.run(main)
