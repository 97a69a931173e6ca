"""Evaluate a checkpoint on a split of its corpus:
``python -m experiments.evaluate --checkpoint=runs/default/checkpoint --text_split=test``

Prints the loss in nats per character, bits per character and perplexity, and with --segments the
loss of each segment of the split. The corpus and split fractions are the checkpoint's own unless
--data is given (its vocabulary must match).
"""
import json

from absl import flags

from experiments import checks, common

flags.DEFINE_string("checkpoint", "runs/default/checkpoint", "checkpoint folder (or its JSON)")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "which checkpoint of the folder: the "
                  "latest saved, or the best by validation loss")
flags.DEFINE_enum("text_split", "test", ["train", "val", "test"], "which split of the corpus to "
                  "evaluate (--split, in the training flags, is the fractions of the splits)")
flags.DEFINE_string("data", None, "evaluate on this corpus instead of the checkpoint's")
flags.DEFINE_list("segments", None, "also print the loss of each segment of the split read as one "
                  "stream: the character offsets in the split where the segments begin, the "
                  "first 0, e.g. 0,21115 (Tiny Shakespeare's test split: the end of The Taming "
                  "of the Shrew, then The Tempest, a play absent from train and val)")
flags.DEFINE_string("json", None, "also write the figures printed (and the checkpoint's step and "
                    "folder) to this JSON file")
FLAGS = flags.FLAGS


def main(argv):
    from jaxrnn import data, loop, runstate, train
    from jaxrnn.errors import CheckpointError
    params, config, vocab, metadata = runstate.load_model(FLAGS.checkpoint, FLAGS.which)
    corpus = data.load_corpus(FLAGS.data or config.data, config.split)
    if corpus.vocab != vocab:
        raise CheckpointError(f"the corpus {corpus.text_path} has a different vocabulary from the "
                              "checkpoint's; evaluate on the text it was trained on")
    ids = {"train": corpus.train, "val": corpus.val, "test": corpus.test}[FLAGS.text_split]
    report = train.loss_report(loop.evaluate_split(config, params, ids, FLAGS.text_split))
    print(f"{FLAGS.text_split}: loss {report['loss']:.4f} nats/char, {report['bpc']:.4f} "
          f"bits/char, perplexity {train.format_perplexity(report['perplexity'])} "
          f"({len(ids):,} characters, step {metadata['step']}, {config.arch} "
          f"H={config.hidden_size} L={config.num_layers})")
    segments = []
    if FLAGS.segments:
        starts = checks.parse_list(FLAGS.segments, int, "segments")
        for start, end, loss in loop.segment_losses(config, params, ids, starts):
            print(f"  characters {start:,}..{end:,} of {FLAGS.text_split}: loss {loss:.4f} "
                  f"nats/char ({end - start:,} characters, one stream)")
            segments.append({"start": start, "end": end, "loss": loss})
    if FLAGS.json:
        record = {"checkpoint": FLAGS.checkpoint, "which": FLAGS.which, "step": metadata["step"],
                  "text_split": FLAGS.text_split, "characters": len(ids),
                  "eval_batch_size": config.eval_batch_size, **report, "segments": segments}
        common.write_output(FLAGS.json, json.dumps(record, indent=1, allow_nan=False).encode(
            "utf-8"), "--json")


if __name__ == "__main__":
    common.run(main)
