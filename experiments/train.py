"""Train a character language model: ``python -m experiments.train [--preset=quick] [--flags]``.

With no flags: an LSTM on Tiny Shakespeare, about 10 minutes on a 2-core CPU, printing samples as
it learns and finishing with the test-split bits per character and the checkpoint's location.
"""
from absl import app, flags

from experiments import common
from jaxrnn import loop, parallel

common.define_config_flags()
flags.DEFINE_string("coordinator_address", None, "multi-host runs: host:port of process 0 "
                    "(jax.distributed); use with --data_parallel")
flags.DEFINE_integer("num_processes", 1, "multi-host runs: number of processes")
flags.DEFINE_integer("process_id", 0, "multi-host runs: index of this process")
FLAGS = flags.FLAGS


def main(argv):
    config = common.config_from_flags()
    if FLAGS.num_processes > 1:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    common.enable_dtype(config.dtype)
    loop.train(config)


if __name__ == "__main__":
    app.run(common.run_main(main))
