"""Generate text from a checkpoint:
``python -m experiments.sample --checkpoint=runs/default/checkpoint --prime="ROMEO:" --temperature=0.8 --top_p=0.9``
"""
from absl import flags

from experiments import common

flags.DEFINE_string("checkpoint", "runs/default/checkpoint", "checkpoint folder (or its JSON)")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "which checkpoint of the folder: the "
                  "latest saved, or the best by validation loss")
flags.DEFINE_string("prime", "", "text fed through the network before sampling; empty starts "
                    "from a newline")
flags.DEFINE_integer("length", 500, "characters to generate after the prime")
flags.DEFINE_integer("num_samples", 1, "independent samples, generated as one batch")
flags.DEFINE_float("temperature", 1.0, "divide the logits by this (> 0); lower is more "
                   "conservative")
flags.DEFINE_integer("top_k", 0, "sample only among the k most likely characters (0: all)")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling: the smallest set of characters whose "
                   "probability reaches top_p, in (0, 1]")
flags.DEFINE_bool("greedy", False, "always take the most likely character (ignores the above)")
flags.DEFINE_integer("seed", 0, "random seed")
FLAGS = flags.FLAGS


def main(argv):
    import jax
    from jaxrnn import runstate, sample
    params, config, vocab, _ = runstate.load_model(FLAGS.checkpoint, FLAGS.which)
    texts = sample.sample_text(
        params, arch=config.cell, vocab=vocab, key=jax.random.key(FLAGS.seed), prime=FLAGS.prime, length=FLAGS.length,
        num_samples=FLAGS.num_samples, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
        top_p=FLAGS.top_p, greedy=FLAGS.greedy)
    for index, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {index + 1}/{len(texts)}")
        print(text)


if __name__ == "__main__":
    common.run(main)
