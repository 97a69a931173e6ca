"""Train a character language model: ``python -m experiments.train [--preset=quick] [--flags]``.

With no flags: an LSTM on Tiny Shakespeare, about 10 minutes on a 2-core CPU, printing samples as
it learns and finishing with the test-split bits per character and the checkpoint's location.
"""
from absl import app

from experiments import common
from jaxrnn import loop

common.define_config_flags()


def main(argv):
    config = common.config_from_flags()
    common.enable_dtype(config.dtype)
    loop.train(config)


if __name__ == "__main__":
    app.run(common.run_main(main))
