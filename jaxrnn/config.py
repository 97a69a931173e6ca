"""The training configuration: one frozen dataclass, validated once, and the named presets.

Launchers turn flags into a `Config` (only the flags a user set override the preset), call
`validate`, and hand it to the library. The config is stored in every checkpoint, so a resumed
run knows exactly what it was.
"""
import dataclasses
import math
from typing import Tuple

from jaxrnn.cells import (ACTIVATIONS, ARCHS, RECURRENT_INITS, activation_applies, resolve,
                          zoneout_cell_applies)
from jaxrnn import regularisers
from jaxrnn.errors import ConfigError
from jaxrnn.unroll import BACKWARDS

OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
CLIP_MODES = ("global", "element", "none")
DTYPES = ("float32", "float64")
# The regularisers' rate fields, each in [0, 1): `jaxrnn.regularisers.Rates`.
REGULARISERS = regularisers.NAMES


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Field names are the launcher's flag names, and each
    field's ``metadata["help"]`` is its flag's help text (README.md's flag table quotes it)."""

    # model
    arch: str = dataclasses.field(default="lstm", metadata={"help": "cell type: rnn, lstm or gru"})
    activation: str = dataclasses.field(default="tanh", metadata={
        "help": "vanilla RNN non-linearity: tanh, relu, sigmoid or identity (arch=rnn only)"})
    hidden_size: int = dataclasses.field(default=384, metadata={
        "help": "hidden units per layer (H)"})
    num_layers: int = dataclasses.field(default=1, metadata={
        "help": "stacked recurrent layers (L)"})
    recurrent_init: str = dataclasses.field(default="orthogonal", metadata={
        "help": "recurrent weight initialiser: orthogonal, identity (IRNN) or scaled_normal"})
    dropout: float = dataclasses.field(default=0.25, metadata={
        "help": "dropout rate on non-recurrent connections (between layers, before the output)"})
    # regularisers (jaxrnn.regularisers), all off at 0
    variational_dropout: float = dataclasses.field(default=0.0, metadata={
        "help": "variational dropout rate on the same connections as --dropout, one mask per "
                "stream and window, the same at every step (Gal & Ghahramani 2016); with "
                "--dropout the two masks multiply"})
    recurrent_dropout: float = dataclasses.field(default=0.0, metadata={
        "help": "variational dropout rate on the recurrent state h_{t-1} where it enters "
                "h_{t-1} W_h, one mask per stream and window (Gal & Ghahramani 2016); the "
                "carried state itself is not dropped"})
    weight_drop: float = dataclasses.field(default=0.0, metadata={
        "help": "DropConnect rate on the recurrent weights W_h, one mask per window shared by "
                "all streams (Merity et al. 2018, AWD-LSTM)"})
    embedding_dropout: float = dataclasses.field(default=0.0, metadata={
        "help": "rate at which whole characters (layer 0's rows of the input weights) are "
                "dropped, per stream and window, the others scaled by 1/(1-rate)"})
    zoneout_hidden: float = dataclasses.field(default=0.0, metadata={
        "help": "zoneout rate of the hidden state: each unit keeps h_{t-1} with this "
                "probability at each step (Krueger et al. 2017); evaluation and sampling use "
                "the expectation"})
    zoneout_cell: float = dataclasses.field(default=0.0, metadata={
        "help": "zoneout rate of the LSTM's cell state c (--arch=lstm only), as --zoneout_hidden"})
    dtype: str = dataclasses.field(default="float32", metadata={
        "help": "parameter and compute dtype: float32 or float64"})
    bf16_matmuls: bool = dataclasses.field(default=False, metadata={
        "help": "round the operands of every matrix product to bfloat16, accumulate in float32 "
                "(for GPU/TPU tensor cores; slower on CPUs without bfloat16 units)"})
    backward: str = dataclasses.field(default="manual", metadata={
        "help": "gradient: manual (hand-written BPTT) or autodiff (jax.grad of the plain scan)"})
    # data
    data: str = dataclasses.field(default="tinyshakespeare", metadata={
        "help": "'tinyshakespeare' (found via $JAXRNN_DATA_DIR, the cache, or downloaded) or a "
                "path to any UTF-8 text file"})
    split: Tuple[float, float, float] = dataclasses.field(default=(0.9, 0.05, 0.05), metadata={
        "help": "train,val,test fractions of the corpus, contiguous, e.g. 0.9,0.05,0.05"})
    batch_size: int = dataclasses.field(default=64, metadata={
        "help": "parallel text streams per step (B)"})
    seq_len: int = dataclasses.field(default=50, metadata={
        "help": "truncated-BPTT window length in characters (T)"})
    random_offsets: bool = dataclasses.field(default=True, metadata={
        "help": "at each epoch shift every stream by a random 0..T-1 characters, so the windows "
                "(and the zero state of the epoch start) fall at new places"})
    state_reset_probability: float = dataclasses.field(default=0.05, metadata={
        "help": "probability that a stream's carried state is zeroed before a window, so the "
                "model learns to start from a zero state anywhere (as sampling and evaluation "
                "do)"})
    # optimisation
    num_steps: int = dataclasses.field(default=4400, metadata={
        "help": "optimiser steps in total (a resumed run continues up to this)"})
    steps_per_call: int = dataclasses.field(default=25, metadata={
        "help": "train steps fused into one compiled call (lax.scan over steps)"})
    data_parallel: bool = dataclasses.field(default=False, metadata={
        "help": "split the B streams over all devices (of all hosts with --coordinator_address): "
                "parameters replicated, gradients all-reduced"})
    optimizer: str = dataclasses.field(default="adam", metadata={
        "help": "adam, adamw, rmsprop, adagrad or sgd (with --momentum)"})
    learning_rate: float = dataclasses.field(default=3e-3, metadata={"help": "peak learning rate"})
    schedule: str = dataclasses.field(default="cosine", metadata={
        "help": "learning-rate schedule after warm-up: constant, cosine or exponential"})
    warmup_steps: int = dataclasses.field(default=50, metadata={
        "help": "linear warm-up steps from 0 to --learning_rate"})
    final_lr_fraction: float = dataclasses.field(default=0.05, metadata={
        "help": "cosine schedule: final learning rate as a fraction of the peak"})
    decay_rate: float = dataclasses.field(default=0.1, metadata={
        "help": "exponential schedule: factor the learning rate decays by over the run"})
    weight_decay: float = dataclasses.field(default=1e-4, metadata={
        "help": "decoupled weight decay (adamw only)"})
    momentum: float = dataclasses.field(default=0.9, metadata={"help": "momentum (sgd only)"})
    clip_norm: float = dataclasses.field(default=5.0, metadata={
        "help": "clip threshold: the global gradient norm (--clip_mode=global) or every gradient "
                "entry's magnitude (--clip_mode=element)"})
    clip_mode: str = dataclasses.field(default="global", metadata={
        "help": "gradient clipping: global (rescale to norm <= --clip_norm), element (clip each "
                "entry to [-clip_norm, clip_norm], as in min-char-rnn) or none"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "random seed for initialisation and dropout"})
    # evaluation, sampling, output
    eval_every: int = dataclasses.field(default=1100, metadata={
        "help": "evaluate on the validation split, print a sample and checkpoint every N steps"})
    eval_batch_size: int = dataclasses.field(default=1, metadata={
        "help": "parallel streams for evaluation; 1 reads the split as one stream, so every "
                "character is predicted from all the text before it (more is faster, but each "
                "stream starts from a zero state)"})
    sample_length: int = dataclasses.field(default=200, metadata={
        "help": "characters of the sample printed at each evaluation"})
    sample_temperature: float = dataclasses.field(default=0.8, metadata={
        "help": "temperature of the sample printed at each evaluation"})
    log_every: int = dataclasses.field(default=100, metadata={
        "help": "print a progress line every N steps"})
    output_dir: str = dataclasses.field(default="runs/default", metadata={
        "help": "folder for checkpoint/ and metrics.jsonl"})
    resume: bool = dataclasses.field(default=False, metadata={
        "help": "continue from <output_dir>/checkpoint exactly where it stopped"})
    # fault tolerance (jaxrnn.interrupt, jaxrnn.checkpoint)
    checkpoint_every_seconds: float = dataclasses.field(default=600.0, metadata={
        "help": "also checkpoint after the first chunk that ends this many seconds after the last "
                "save (0: only at evaluations)"})
    keep: int = dataclasses.field(default=1, metadata={
        "help": "step checkpoints to keep in <output_dir>/checkpoint (step-N.json records), "
                "newest first; the best by validation loss (best.json) is kept besides"})
    skip_nonfinite: bool = dataclasses.field(default=False, metadata={
        "help": "skip (do not apply) updates whose loss or gradient is not finite and restart "
                "that step's streams from a zero state, instead of stopping the run"})
    max_consecutive_nonfinite: int = dataclasses.field(default=10, metadata={
        "help": "with --skip_nonfinite: stop after this many skipped steps in a row"})

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def cell(self):
        """The model's `jaxrnn.cells.Cell`, resolved here once for everything below the entry
        points: the arch with its activation, the matmul dtype ("bfloat16" with
        --bf16_matmuls) and the zoneout rates ``(p_h, p_c)`` (None without zoneout), which
        evaluation and sampling use as the expectation."""
        return resolve(self.arch, self.activation, "bfloat16" if self.bf16_matmuls else None,
                       regularisers.zoneout_of(self.rates))

    @property
    def rates(self):
        """The `jaxrnn.regularisers.Rates` of the regularisers' fields of the same names."""
        return regularisers.Rates(*(getattr(self, name) for name in regularisers.NAMES))


PRESETS = {
    # The main job (`make train`): the regularisation study's bracketed rate and the best of its
    # methods on the recurrent path, weight-drop on W_h, on top of dropout 0.25; 4,400 steps,
    # about 4 minutes on the 2-core AMD EPYC. Measured side by side (BUILD_NOTES.md, "Main
    # job"): test 1.535 nats/char, against 1.592 for the recipe before it (Adam 3e-3, no
    # weight-drop) in the same wall time.
    "default": dict(learning_rate=0.03, weight_drop=0.25),
    # A first look in well under a minute.
    "quick": dict(hidden_size=128, num_steps=300, batch_size=32, seq_len=50, eval_every=150,
                  log_every=50, steps_per_call=25, warmup_steps=10, learning_rate=5e-3,
                  dropout=0.0, weight_drop=0.0, output_dir="runs/quick", sample_length=120),
    # The main job's model (one LSTM layer of 384) with the regularisation study's two best
    # methods on validation, at its rates: AdamW weight decay 0.1 and weight-drop 0.25 on W_h,
    # besides dropout 0.25; its bracketed rate (0.03); 18,000 steps (58 epochs): under an hour
    # at the 110-180 ms a step the 2-core AMD EPYC VM ran at within one day (BUILD_NOTES.md,
    # "--preset=long").
    "long": dict(hidden_size=384, num_layers=1, learning_rate=0.03, dropout=0.25,
                 weight_drop=0.25, optimizer="adamw", weight_decay=0.1, num_steps=18000,
                 eval_every=2000, log_every=500, output_dir="runs/long"),
}

# Fields that must match between a checkpoint and the flags of a run that resumes from it.
MODEL_FIELDS = ("arch", "activation", "hidden_size", "num_layers", "dtype")


def from_dict(values):
    """Config from a dict (e.g. a checkpoint's metadata); unknown keys are an error."""
    known = {field.name for field in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; remove them")
    values = dict(values)
    if "split" in values:
        values["split"] = tuple(values["split"])
    return Config(**values)


def make_config(preset=None, **overrides):
    """A validated config: `Config`'s field defaults (the library's, every regulariser off), then
    the values of ``preset`` (a name in PRESETS, as the launchers' --preset; None: no preset),
    then ``overrides``. Studies and tests build on the field defaults, so a change of the
    'default' preset (the main job's recipe) changes neither."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = from_dict({**(PRESETS[preset] if preset else {}), **overrides})
    validate(config)
    return config


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def _choice(config, name, choices):
    value = getattr(config, name)
    _require(value in choices, f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def validate(config: Config) -> Config:
    """Check every field once; raise ConfigError with a one-line message naming the flag."""
    _choice(config, "arch", ARCHS)
    _choice(config, "activation", tuple(ACTIVATIONS))
    _require(activation_applies(config.arch, config.activation),
             f"--activation={config.activation} applies to --arch=rnn only; drop it")
    _choice(config, "recurrent_init", RECURRENT_INITS)
    _choice(config, "optimizer", OPTIMIZERS)
    _choice(config, "schedule", SCHEDULES)
    _choice(config, "clip_mode", CLIP_MODES)
    _choice(config, "backward", BACKWARDS)
    _choice(config, "dtype", DTYPES)
    _require(not config.bf16_matmuls or config.dtype == "float32",
             f"--bf16_matmuls accumulates in float32 and needs --dtype=float32, got "
             f"--dtype={config.dtype}; drop one of the two")
    for name in ("hidden_size", "num_layers", "batch_size", "seq_len", "num_steps",
                 "steps_per_call", "eval_every", "eval_batch_size", "sample_length", "log_every"):
        value = getattr(config, name)
        _require(isinstance(value, int) and value > 0,
                 f"--{name} must be a positive integer, got {value!r}")
    for name in ("keep", "max_consecutive_nonfinite"):
        _require(isinstance(getattr(config, name), int) and getattr(config, name) > 0,
                 f"--{name} must be a positive integer, got {getattr(config, name)!r}")
    _require(math.isfinite(config.checkpoint_every_seconds) and config.checkpoint_every_seconds
             >= 0, "--checkpoint_every_seconds must be >= 0 (0: only at evaluations), got "
             f"{config.checkpoint_every_seconds}")
    _require(config.warmup_steps >= 0, f"--warmup_steps must be >= 0, got {config.warmup_steps}")
    for name in ("learning_rate", "clip_norm", "sample_temperature"):
        value = getattr(config, name)
        _require(math.isfinite(value) and value > 0, f"--{name} must be > 0, got {value}")
    _require(0.0 <= config.state_reset_probability <= 1.0, "--state_reset_probability must be "
             f"in [0, 1], got {config.state_reset_probability}")
    _require(0.0 <= config.dropout < 1.0, f"--dropout must be in [0, 1), got {config.dropout}")
    for name in REGULARISERS:
        value = getattr(config, name)
        _require(isinstance(value, (int, float)) and 0.0 <= value < 1.0,
                 f"--{name} must be in [0, 1) (0: off), got {value!r}")
    _require(zoneout_cell_applies(config.arch, config.zoneout_cell),
             f"--zoneout_cell applies to --arch=lstm only (its memory cell); drop it or use "
             f"--zoneout_hidden with --arch={config.arch}")
    _require(0.0 < config.final_lr_fraction <= 1.0,
             f"--final_lr_fraction must be in (0, 1], got {config.final_lr_fraction}")
    _require(0.0 < config.decay_rate <= 1.0,
             f"--decay_rate must be in (0, 1], got {config.decay_rate}")
    _require(config.weight_decay >= 0, f"--weight_decay must be >= 0, got {config.weight_decay}")
    _require(0.0 <= config.momentum < 1.0, f"--momentum must be in [0, 1), got {config.momentum}")
    _require(len(config.split) == 3 and all(part > 0 for part in config.split)
             and abs(sum(config.split) - 1.0) < 1e-6,
             f"--split must be three positive fractions summing to 1, got {config.split}")
    return config


