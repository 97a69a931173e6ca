"""Train the same model from the same seed with --backward=manual and =autodiff and compare the
loss curves: ``python -m experiments.compare_backward --compare_steps=200``.

Accepts every flag of experiments.train (the preset's model, data and optimiser are used).
"""
from absl import flags

from experiments import common

common.define_config_flags()
flags.adopt_module_key_flags(common)   # --helpshort lists them
flags.DEFINE_integer("compare_steps", 200, "training steps to run in each mode")
flags.DEFINE_bool("round_off_floor", True, "also rerun autodiff with one weight moved by one ulp: "
                  "how far round-off alone moves the same code's curve")
FLAGS = flags.FLAGS


def main(argv):
    import numpy as np
    from jaxrnn import data, diagnostics, loop
    from jaxrnn import validate
    config = common.config_from_flags()
    validate.size("--compare_steps", FLAGS.compare_steps)
    common.enable_dtype(config.dtype)
    corpus = data.load_corpus(config.data, config.split)
    streams = data.make_streams(corpus.train, config.batch_size, config.seq_len,
                                name="training split")
    results = diagnostics.train_both_modes(config, streams, len(corpus.vocab),
                                           FLAGS.compare_steps,
                                           round_off_floor=FLAGS.round_off_floor)
    (manual, manual_params), (autodiff, autodiff_params) = results["manual"], results["autodiff"]
    relative = np.abs(manual - autodiff) / np.abs(autodiff)
    print(f"{config.arch} H={config.hidden_size} L={config.num_layers} B={config.batch_size} "
          f"T={config.seq_len} {config.dtype}, {FLAGS.compare_steps} steps, seed {config.seed}")
    for step in sorted({1, 10, 50, 100, FLAGS.compare_steps} & set(range(1, len(manual) + 1))):
        print(f"step {step:>5}: manual {manual[step - 1]:.6f}  autodiff {autodiff[step - 1]:.6f}"
              f"  relative difference {relative[step - 1]:.2e}")
    print(f"largest relative difference over all steps: {relative.max():.2e}")
    if FLAGS.round_off_floor:
        nudged = results["autodiff, one ulp"][0]
        floor = np.abs(nudged - autodiff) / np.abs(autodiff)
        print(f"round-off floor (autodiff vs autodiff with W_hy[0,0] one ulp up): "
              f"{floor[-1]:.2e} at step {FLAGS.compare_steps}, largest {floor.max():.2e}")
    # One training batch's loss is a noisy read-out of the model; the validation loss of the
    # two trained models is the smoother one.
    val = {name: float(loop.evaluate_split(config, params, corpus.val, "validation"))
           for name, params in (("manual", manual_params), ("autodiff", autodiff_params))}
    print(f"validation loss after {FLAGS.compare_steps} steps: manual {val['manual']:.6f}  "
          f"autodiff {val['autodiff']:.6f}  relative difference "
          f"{abs(val['manual'] - val['autodiff']) / val['autodiff']:.2e}")


if __name__ == "__main__":
    common.run(main)
