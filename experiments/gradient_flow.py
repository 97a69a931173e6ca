"""How far back the gradient reaches, per cell: vanishing and exploding gradients, measured.
``python -m experiments.gradient_flow --models=rnn:tanh,rnn:relu:identity,lstm,gru --plot=flow.png``

For freshly initialised models (--models) and trained ones (--checkpoints), takes B windows of T
characters of a split of the corpus and prints, per model and layer, the norm of the gradient of
the last character's loss with respect to each earlier step's input projection, relative to the
last step's (median over the B streams), its fitted factor per step and the distance at which it
falls below 1/1000 (`jaxrnn.gradient_flow`).
"""
import datetime
import sys

from absl import app, flags

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
flags.DEFINE_integer("batch_size", 32, "B: windows (streams) the median is taken over")
flags.DEFINE_integer("seq_len", 200, "T: window length; distances 0..T-1")
flags.DEFINE_enum("backward", "manual", ["manual", "autodiff"], "hand-written sweeps or jax.grad")
flags.DEFINE_list("distances", ["0", "1", "2", "5", "10", "20", "50", "100", "199"],
                  "distances printed in the table (those >= T are dropped)")
flags.DEFINE_string("plot", "", "write the curves to this image (PNG/SVG/PDF; needs matplotlib)")
flags.DEFINE_string("json", "", "write every norm and summary to this JSON file")
FLAGS = flags.FLAGS


def _models(vocab_size):
    """[(label, params, arch, cell options, source)] for --models then --checkpoints."""
    import jax
    import jaxrnn
    from jaxrnn import gradient_flow, loop, train
    from jaxrnn.errors import CheckpointError
    out = []
    for spec in filter(None, FLAGS.models):
        options = gradient_flow.parse_model_spec(spec)
        params = jaxrnn.init_params(jax.random.key(FLAGS.seed), options["arch"], vocab_size,
                                    FLAGS.hidden_size, FLAGS.num_layers,
                                    recurrent_init=options["recurrent_init"],
                                    activation=options["activation"])
        label = ":".join(filter(None, [options["arch"], options["activation"],
                                       options["recurrent_init"]])) + f" H={FLAGS.hidden_size} init"
        out.append((label, params, options["arch"], {"activation": options["activation"]},
                    {"kind": "init", "seed": FLAGS.seed, **options, "hidden_size":
                     FLAGS.hidden_size, "num_layers": FLAGS.num_layers}))
    for folder in FLAGS.checkpoints:
        params, config, vocab, metadata = loop.load_model(folder)
        if len(vocab) != vocab_size:
            raise CheckpointError(f"checkpoint {folder} has a {len(vocab)}-character vocabulary "
                                  f"but --data has {vocab_size}; pass the corpus it was trained on")
        kind = ":".join(filter(None, [config.arch, train.cell_options(config)["activation"],
                                      config.recurrent_init]))
        label = f"{kind} H={config.hidden_size} step {metadata['step']} ({folder})"
        out.append((label, params, config.arch, train.cell_options(config),
                    {"kind": "checkpoint", "path": folder, "step": metadata["step"],
                     "arch": config.arch, "activation": train.cell_options(config)["activation"],
                     "recurrent_init": config.recurrent_init, "hidden_size": config.hidden_size,
                     "num_layers": config.num_layers}))
    return out


def main(argv):
    from jaxrnn import data, gradient_flow
    from jaxrnn.errors import ConfigError
    distances = [int(d) for d in FLAGS.distances if int(d) < FLAGS.seq_len]
    corpus = data.load_corpus(FLAGS.data)
    ids = {"train": corpus.train, "val": corpus.val, "test": corpus.test}[FLAGS.text_split]
    streams = data.make_streams(ids, FLAGS.batch_size, FLAGS.seq_len,
                                name=f"{FLAGS.text_split} split")
    inputs, targets = data.get_window(streams, 0, FLAGS.seq_len)
    models = _models(len(corpus.vocab))
    if not models:
        raise ConfigError("nothing to measure; pass --models and/or --checkpoints")
    print(f"|dL_T/da_t| relative to d = 0 (median over {FLAGS.batch_size} windows of "
          f"{FLAGS.seq_len} characters of the {FLAGS.text_split} split, {FLAGS.backward} "
          "backward):")
    print("| model | layer | |g| at d=0 | " + " | ".join(f"d={d}" for d in distances[1:])
          + " | factor per step | reach (1e-3) |")
    print("|" + "---|" * (len(distances) + 4))
    curves, records = [], []
    for label, params, arch, options, source in models:
        flow = gradient_flow.gradient_flow(params, inputs, targets, arch=arch,
                                           backward=FLAGS.backward, **options)
        for layer, norms in enumerate(flow.norms):
            relative = " | ".join(f"{norms[d] / norms[0]:.2e}" for d in distances[1:])
            reach = flow.reach[layer] if flow.reach[layer] >= 0 else f">{FLAGS.seq_len - 1}"
            print(f"| {label} | {layer} | {norms[0]:.3g} | {relative} | "
                  f"{flow.factor_per_step[layer]:.4f} | {reach} |")
            curves.append((label if len(flow.norms) == 1 else f"{label} layer {layer}", norms))
        records.append({"label": label, "source": source, "norms": flow.norms.tolist(),
                        "factor_per_step": flow.factor_per_step.tolist(),
                        "reach": flow.reach.tolist()})
    title = f"{FLAGS.batch_size} x {FLAGS.seq_len} characters, {FLAGS.text_split} split"
    if FLAGS.plot:
        gradient_flow.save_plot(FLAGS.plot, curves, title=title)
        print(f"plot: {FLAGS.plot}")
    if FLAGS.json:
        gradient_flow.write_json(FLAGS.json, {
            "command": " ".join(sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data": str(corpus.text_path), "text_split": FLAGS.text_split,
            "batch_size": FLAGS.batch_size, "seq_len": FLAGS.seq_len,
            "backward": FLAGS.backward, "relative_floor": gradient_flow.RELATIVE_FLOOR,
            "models": records})
        print(f"json: {FLAGS.json}")


if __name__ == "__main__":
    app.run(common.run_main(main))
