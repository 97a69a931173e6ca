"""Shared launcher plumbing: config flags with help strings, and one-line error reporting.

No math here: flags become a validated `jaxrnn.config.Config`, then one library call.
"""
import dataclasses
import logging
import shlex
import sys

from absl import app, flags

from jaxrnn import config as config_lib
from jaxrnn.errors import ConfigError, JaxrnnError

# One help string per Config field; README.md's flag table is this table.
CONFIG_HELP = {
    "arch": "cell type: rnn, lstm or gru",
    "activation": "vanilla RNN non-linearity: tanh, relu, sigmoid or identity (arch=rnn only)",
    "hidden_size": "hidden units per layer (H)",
    "num_layers": "stacked recurrent layers (L)",
    "recurrent_init": "recurrent weight initialiser: orthogonal, identity (IRNN) or scaled_normal",
    "dropout": "dropout rate on non-recurrent connections (between layers, before the output)",
    "dtype": "parameter and compute dtype: float32 or float64",
    "bf16_matmuls": "round the operands of every matrix product to bfloat16, accumulate in "
                    "float32 (for GPU/TPU tensor cores; slower on CPUs without bfloat16 units)",
    "backward": "gradient: manual (hand-written BPTT) or autodiff (jax.grad of the plain scan)",
    "data": "'tinyshakespeare' (found via $JAXRNN_DATA_DIR, the cache, or downloaded) or a path "
            "to any UTF-8 text file",
    "split": "train,val,test fractions of the corpus, contiguous, e.g. 0.9,0.05,0.05",
    "batch_size": "parallel text streams per step (B)",
    "seq_len": "truncated-BPTT window length in characters (T)",
    "random_offsets": "at each epoch shift every stream by a random 0..T-1 characters, so the "
                      "windows (and the zero state of the epoch start) fall at new places",
    "state_reset_probability": "probability that a stream's carried state is zeroed before a "
                               "window, so the model learns to start from a zero state anywhere "
                               "(as sampling and evaluation do)",
    "num_steps": "optimiser steps in total (a resumed run continues up to this)",
    "steps_per_call": "train steps fused into one compiled call (lax.scan over steps)",
    "data_parallel": "split the B streams over all devices (of all hosts with "
                     "--coordinator_address): parameters replicated, gradients all-reduced",
    "optimizer": "adam, adamw, rmsprop, adagrad or sgd (with --momentum)",
    "learning_rate": "peak learning rate",
    "schedule": "learning-rate schedule after warm-up: constant, cosine or exponential",
    "warmup_steps": "linear warm-up steps from 0 to --learning_rate",
    "final_lr_fraction": "cosine schedule: final learning rate as a fraction of the peak",
    "decay_rate": "exponential schedule: factor the learning rate decays by over the run",
    "weight_decay": "decoupled weight decay (adamw only)",
    "momentum": "momentum (sgd only)",
    "clip_norm": "clip threshold: the global gradient norm (--clip_mode=global) or every "
                 "gradient entry's magnitude (--clip_mode=element)",
    "clip_mode": "gradient clipping: global (rescale to norm <= --clip_norm), element (clip each "
                 "entry to [-clip_norm, clip_norm], as in min-char-rnn) or none",
    "seed": "random seed for initialisation and dropout",
    "eval_every": "evaluate on the validation split, print a sample and checkpoint every N steps",
    "eval_batch_size": "parallel streams for evaluation; 1 reads the split as one stream, so every "
                       "character is predicted from all the text before it (more is faster, but "
                       "each stream starts from a zero state)",
    "sample_length": "characters of the sample printed at each evaluation",
    "sample_temperature": "temperature of the sample printed at each evaluation",
    "log_every": "print a progress line every N steps",
    "output_dir": "folder for checkpoint/ and metrics.jsonl",
    "resume": "continue from <output_dir>/checkpoint exactly where it stopped",
    "checkpoint_every_seconds": "also checkpoint after the first chunk that ends this many "
                                "seconds after the last save (0: only at evaluations)",
    "keep": "step checkpoints to keep in <output_dir>/checkpoint (step-N.json records), newest "
            "first; the best by validation loss (best.json) is kept besides",
    "skip_nonfinite": "skip (do not apply) updates whose loss or gradient is not finite and restart "
                      "that step's streams from a zero state, instead of stopping the run",
    "max_consecutive_nonfinite": "with --skip_nonfinite: stop after this many skipped steps in a "
                                 "row",
}


def define_config_flags():
    """One absl flag per Config field (defaults shown are the 'default' preset's)."""
    flags.DEFINE_string("preset", "default",
                        f"named defaults: {', '.join(config_lib.PRESETS)} (quick: under a minute)")
    defaults = config_lib.Config()
    for field in dataclasses.fields(config_lib.Config):
        default, help_text = getattr(defaults, field.name), CONFIG_HELP[field.name]
        if field.name == "split":
            flags.DEFINE_string(field.name, ",".join(str(part) for part in default), help_text)
        elif isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)


def _parse_split(text):
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--split must be three comma-separated fractions, got {text!r}") \
            from None


def config_from_flags():
    """The preset, overridden by every flag the user set explicitly, validated."""
    values = flags.FLAGS
    overrides = {field.name: getattr(values, field.name)
                 for field in dataclasses.fields(config_lib.Config) if values[field.name].present}
    if "split" in overrides:
        overrides["split"] = _parse_split(overrides["split"])
    return config_lib.make_config(values.preset, **overrides)


def write_output(path, payload, flag):
    """Write ``payload`` (bytes) to ``path`` atomically (`jaxrnn.files.write_atomically`); an
    OS error is one ConfigError naming ``flag``."""
    from jaxrnn import files
    try:
        files.write_atomically(path, payload)
    except OSError as error:
        raise ConfigError(f"could not write {flag}={path} ({error.strerror or error}); name a "
                          "writable file") from None


def enable_dtype(dtype):
    """float64 needs JAX's x64 mode, switched on for the whole process by the launcher."""
    if dtype == "float64":
        import jax
        jax.config.update("jax_enable_x64", True)


def parse_flags(argv, flag_values=flags.FLAGS):
    """absl ``flags_parser``: a flag that does not parse (a bad value, an unknown or misspelt name)
    is one ``error:`` line on stderr and exit status 2, like every other user mistake."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        print(f"error: {message}; see --helpshort for the flags", file=sys.stderr)
        sys.exit(2)


class _NoTpuProbe(logging.Filter):
    """Drops JAX's "Unable to initialize backend 'tpu'" line: on a machine without a TPU the probe
    failing is expected. Every other record of that logger still passes."""

    def filter(self, record):
        return not record.getMessage().startswith("Unable to initialize backend 'tpu'")


def run(main):
    """``app.run`` of a launcher's main with this module's error convention (`run_main`,
    `parse_flags`)."""
    logging.getLogger("jax._src.xla_bridge").addFilter(_NoTpuProbe())
    app.run(run_main(main), flags_parser=parse_flags)


def resume_command(argv=None, module=None):
    """The command line that continues this run: ``python -m <module> <its flags> --resume``
    (``--resume``/``--noresume`` as given are dropped first); ``module`` defaults to the one
    run as ``__main__``."""
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = module or (spec.name if spec is not None else None)
    head = ["python", "-m", module] if module else ["python", argv[0]]
    flags_given = [arg for arg in argv[1:] if arg.lstrip("-").split("=")[0]
                   not in ("resume", "noresume")]
    return shlex.join(head + flags_given + ["--resume"])


def run_main(main):
    """Wrap an absl main: user errors print one line to stderr and exit with status 2; a run
    stopped by SIGINT/SIGTERM (`jaxrnn.interrupt.Interrupted`) prints what was saved and how to
    resume, and exits with 130/143."""
    from jaxrnn.interrupt import Interrupted

    def wrapped(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]}; flags look like --name=value",
                  file=sys.stderr)
            sys.exit(2)
        try:
            return main(argv)
        except Interrupted as stop:
            print(f"interrupted: {stop}", file=sys.stderr)
            if stop.resumable:
                print(f"resume with: {resume_command()}", file=sys.stderr)
            sys.exit(stop.exit_code)
        except JaxrnnError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; the last checkpoint written is intact", file=sys.stderr)
            sys.exit(130)
    return wrapped
