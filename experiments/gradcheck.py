"""Manual BPTT vs jax.grad vs finite differences: ``python -m experiments.gradcheck``.

Checks every cell of ``--archs`` (the vanilla RNN once per activation of ``--activations``);
prints one row per cell: the largest absolute and relative difference between the hand-written
and the autodiff gradient (over all parameters and the initial state), the relative error of each
against central finite differences along random directions, the time of one jitted gradient
after compilation, and the bytes of residuals each mode saves for its backward pass.
"""
from absl import flags

from experiments import common
from jaxrnn.cells import ACTIVATIONS, ARCHS

flags.DEFINE_list("archs", list(ARCHS), f"cells to check, out of {', '.join(ARCHS)}")
flags.DEFINE_list("activations", list(ACTIVATIONS), "vanilla RNN activations to check (rnn in "
                  f"--archs), out of {', '.join(ACTIVATIONS)}")
flags.DEFINE_integer("hidden_size", 64, "hidden units (H)")
flags.DEFINE_integer("seq_len", 50, "time steps (T)")
flags.DEFINE_integer("batch_size", 16, "batch (B)")
flags.DEFINE_integer("num_layers", 1, "stacked layers (L)")
flags.DEFINE_integer("vocab_size", 65, "vocabulary size (V)")
flags.DEFINE_string("dtype", "float64", "float64 (round-off check) or float32")
flags.DEFINE_integer("seed", 0, "random seed")
FLAGS = flags.FLAGS


def main(argv):
    if FLAGS.dtype not in ("float32", "float64"):
        from jaxrnn.errors import ConfigError
        raise ConfigError(f"--dtype must be float32 or float64, got {FLAGS.dtype!r}")
    from experiments import checks
    cases = checks.gradcheck_cases(
        FLAGS.archs, FLAGS.activations, activations_given=FLAGS["activations"].present,
        vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size, seq_len=FLAGS.seq_len,
        batch_size=FLAGS.batch_size, num_layers=FLAGS.num_layers, dtype=FLAGS.dtype)
    common.enable_dtype(FLAGS.dtype)
    import jax.numpy as jnp
    from jaxrnn import diagnostics
    print(f"V={FLAGS.vocab_size} H={FLAGS.hidden_size} T={FLAGS.seq_len} B={FLAGS.batch_size} "
          f"L={FLAGS.num_layers} dtype={FLAGS.dtype} seed={FLAGS.seed}")
    header = (f"{'cell':<13}{'max abs':>10}{'max rel':>10}{'fd rel man':>12}{'fd rel auto':>12}"
              f"{'ms manual':>11}{'ms auto':>10}{'speedup':>9}{'res MiB man':>13}"
              f"{'res MiB auto':>14}")
    print(header)
    print("-" * len(header))
    for arch, activation in cases:
        row = diagnostics.gradient_check(
            arch=arch, activation=activation, vocab_size=FLAGS.vocab_size,
            hidden_size=FLAGS.hidden_size, seq_len=FLAGS.seq_len, batch_size=FLAGS.batch_size,
            num_layers=FLAGS.num_layers, dtype=getattr(jnp, FLAGS.dtype), seed=FLAGS.seed)
        print(f"{row['arch']:<13}{row['max_abs']:>10.1e}{row['max_rel']:>10.1e}"
              f"{row['fd_rel_manual']:>12.1e}{row['fd_rel_autodiff']:>12.1e}"
              f"{1e3 * row['seconds_manual']:>11.2f}{1e3 * row['seconds_autodiff']:>10.2f}"
              f"{row['seconds_autodiff'] / row['seconds_manual']:>9.2f}"
              f"{row['residual_bytes_manual'] / 2**20:>13.2f}"
              f"{row['residual_bytes_autodiff'] / 2**20:>14.2f}")


if __name__ == "__main__":
    common.run(main)
