"""How far back the gradient reaches, per cell: vanishing and exploding gradients, measured.
``python -m experiments.gradient_flow --models=rnn:tanh,rnn:relu:identity,lstm,gru --plot=flow.png``

For freshly initialised models (--models) and trained ones (--checkpoints), takes B windows of T
characters of a split of the corpus and prints, per model and layer, the norm of the gradient of
the last character's loss with respect to each earlier step's input projection, relative to the
last step's (median over the B streams), its fitted factor per step and the distance at which it
falls below 1/1000 (measured by `jaxrnn.gradient_flow`, shown by `jaxrnn.report.gradient_flow`).
"""
import datetime
import sys

from absl import flags

from experiments import common

flags.DEFINE_list("models", ["rnn:tanh", "rnn:relu:identity", "lstm", "gru"],
                  "freshly initialised models: rnn[:ACTIVATION[:INIT]] or lstm|gru[:INIT], INIT "
                  "one of orthogonal, identity, scaled_normal; empty for none")
flags.DEFINE_list("checkpoints", [], "trained models: checkpoint folders (their corpus must have "
                  "the same vocabulary as --data)")
flags.DEFINE_string("data", "tinyshakespeare", "'tinyshakespeare' or a path to a UTF-8 text file")
flags.DEFINE_enum("text_split", "val", ["train", "val", "test"], "split the windows come from")
flags.DEFINE_integer("hidden_size", 128, "H of the fresh models")
flags.DEFINE_integer("num_layers", 1, "L of the fresh models")
flags.DEFINE_integer("seed", 0, "seed of the fresh models' initialisation")
flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "dtype of the fresh models")
flags.DEFINE_integer("batch_size", 32, "B: windows (streams) the median is taken over")
flags.DEFINE_integer("seq_len", 200, "T: window length; distances 0..T-1")
flags.DEFINE_enum("backward", "manual", ["manual", "autodiff"], "hand-written sweeps or jax.grad")
flags.DEFINE_list("distances", ["1", "2", "5", "10", "20", "50", "100", "199"],
                  "distances printed in the table besides d=0 (those >= T are dropped)")
flags.DEFINE_string("plot", "", "write the curves to this image (.png, .svg, .pdf, ...; needs "
                    "matplotlib)")
flags.DEFINE_string("json", "", "write every norm and summary to this JSON file")
FLAGS = flags.FLAGS


def main(argv):
    from jaxrnn import data, gradient_flow
    from jaxrnn.errors import ConfigError
    from jaxrnn.report import gradient_flow as flow_report
    from experiments import reporting
    distances = reporting.parse_distances(FLAGS.distances, FLAGS.seq_len)
    specs = [reporting.parse_model_spec(spec) for spec in FLAGS.models if spec]
    if FLAGS.plot:
        reporting.check_plot_path(FLAGS.plot)
    if FLAGS.json:
        reporting.check_output_path(FLAGS.json, "--json")
    for dtype in [FLAGS.dtype] + [reporting.checkpoint_dtype(folder)
                                  for folder in FLAGS.checkpoints]:
        common.enable_dtype(dtype)
    corpus = data.load_corpus(FLAGS.data)
    ids = {"train": corpus.train, "val": corpus.val, "test": corpus.test}[FLAGS.text_split]
    streams = data.make_streams(ids, FLAGS.batch_size, FLAGS.seq_len,
                                name=f"{FLAGS.text_split} split")
    inputs, targets = data.get_window(streams, 0, FLAGS.seq_len)
    models = ([gradient_flow.fresh_model(len(corpus.vocab), FLAGS.hidden_size, FLAGS.num_layers,
                                         seed=FLAGS.seed, dtype=FLAGS.dtype, **spec)
               for spec in specs]
              + [reporting.load_trained_model(folder, corpus.vocab)
                 for folder in FLAGS.checkpoints])
    if not models:
        raise ConfigError("nothing to measure; pass --models and/or --checkpoints")
    results = [(model, gradient_flow.gradient_flow(model.params, inputs, targets, arch=model.cell,
                                                   backward=FLAGS.backward))
               for model in models]
    window = dict(batch_size=FLAGS.batch_size, seq_len=FLAGS.seq_len,
                  text_split=FLAGS.text_split)
    print(flow_report.heading(**window, backward=FLAGS.backward))
    print("\n".join(flow_report.format_table(results, distances)))
    if FLAGS.plot:
        reporting.write_plot(FLAGS.plot, lambda image_format: flow_report.render_plot(
            results, image_format, **window))
        print(f"plot: {FLAGS.plot}")
    if FLAGS.json:
        reporting.write_json(FLAGS.json, flow_report.report_record(
            results, command=" ".join(["python -m experiments.gradient_flow"] + sys.argv[1:]),
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            data=FLAGS.data, text_split=FLAGS.text_split,
            batch_size=FLAGS.batch_size, seq_len=FLAGS.seq_len, backward=FLAGS.backward))
        print(f"json: {FLAGS.json}")


if __name__ == "__main__":
    common.run(main)
