"""Follow a training configuration through the library: which modules it visits, in order.

A tiny `jaxrnn.loop.train` run is traced (`sys.setprofile`); every function of `jaxrnn` that
receives the configuration (a `Config`), the model description made from it (the `Cell`) or the
arch string as an argument is recorded at its first call, in call order. Consecutive
functions of one module are one *stop*; a stop in a module already left earlier is a *return*.
Many returns mean the configuration is re-read in many places (the model rebuilt from strings
over and over); a resolved model handed down makes few.

    python -m benchmarks.config_trace            # the stops and the counts
    python -m benchmarks.config_trace --json=trace.json
"""
import json
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS


def trace_train(config):
    """``[(module, function)]``: the first call of each `jaxrnn` function that received the
    configuration or what the model's identity is made from it -- a `Config`, the resolved
    `Cell`, or the arch string -- during ``loop.train(config)``, in call order."""
    from jaxrnn import cells, config as config_lib, loop
    seen, order = set(), []

    def carries_model(value):
        return (isinstance(value, (config_lib.Config, cells.Cell))
                or (isinstance(value, str) and value == config.arch))

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("jaxrnn") or (module, code.co_name) in seen:
            return
        arguments = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if any(carries_model(frame.f_locals.get(name)) for name in arguments):
            seen.add((module, code.co_name))
            order.append((module, code.co_name))

    sys.setprofile(profile)
    try:
        loop.train(config, log=lambda *_: None)
    finally:
        sys.setprofile(None)
    return order


def stops(order):
    """Consecutive calls of one module merged: ``[(module, [functions])]``."""
    merged = []
    for module, function in order:
        if merged and merged[-1][0] == module:
            merged[-1][1].append(function)
        else:
            merged.append((module, [function]))
    return merged


def returns(merged):
    """How many stops are in a module already left earlier."""
    left, count = set(), 0
    for index, (module, _) in enumerate(merged):
        if module in left:
            count += 1
        if index + 1 < len(merged):
            left.add(module)
    return count


def main(argv):
    from jaxrnn import config as config_lib
    del argv
    text = "".join(chr(97 + (i * 7) % 26) + (" " if i % 5 == 0 else "") for i in range(4000))
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/corpus.txt"
        with open(path, "w") as handle:
            handle.write(text)
        config = config_lib.make_config(
            data=path, hidden_size=8, batch_size=2, seq_len=8, num_steps=4, steps_per_call=2,
            eval_every=2, log_every=2, warmup_steps=1, eval_batch_size=1, sample_length=5,
            output_dir=f"{folder}/run")
        merged = stops(trace_train(config))
    for module, functions in merged:
        print(f"{module}: {', '.join(functions)}")
    modules = {module for module, _ in merged}
    print(f"{len(merged)} stops in {len(modules)} modules, {returns(merged)} of them returns to "
          f"a module already left")
    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump({"stops": merged, "modules": len(modules), "returns": returns(merged)},
                      handle, indent=1)


if __name__ == "__main__":
    # Defined here, not on import: the tests import this module beside launchers that define
    # their own --json (one flag registry per process).
    flags.DEFINE_string("json", None, "also write the trace as JSON to this path")
    app.run(main)
