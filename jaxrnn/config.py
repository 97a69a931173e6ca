"""The training configuration: one frozen dataclass, validated once, and the named presets.

Launchers turn flags into a `Config` (only the flags a user set override the preset), call
`validate`, and hand it to the library. The config is stored in every checkpoint, so a resumed
run knows exactly what it was.
"""
import dataclasses
import math
from typing import Tuple

from jaxrnn.cells import ACTIVATIONS, ARCHS, RECURRENT_INITS
from jaxrnn.errors import ConfigError
from jaxrnn.unroll import BACKWARDS

OPTIMIZERS = ("adam", "adamw", "rmsprop", "adagrad", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
CLIP_MODES = ("global", "element", "none")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Field names are the launcher's flag names."""

    # model
    arch: str = "lstm"
    activation: str = "tanh"            # arch=rnn only
    hidden_size: int = 384
    num_layers: int = 1
    recurrent_init: str = "orthogonal"
    dropout: float = 0.25
    dtype: str = "float32"
    bf16_matmuls: bool = False          # bfloat16 matmul operands, float32 accumulation
    backward: str = "manual"
    # data
    data: str = "tinyshakespeare"       # the default corpus, or a path to any UTF-8 text file
    split: Tuple[float, float, float] = (0.9, 0.05, 0.05)
    batch_size: int = 64
    seq_len: int = 50
    random_offsets: bool = True         # shift the windows by a random 0..T-1 chars each epoch
    state_reset_probability: float = 0.05  # per stream and window: start from a zero state
    # optimisation
    num_steps: int = 4400
    steps_per_call: int = 25            # train steps fused into one compiled call (lax.scan)
    data_parallel: bool = False         # split the B streams over all devices (jaxrnn.parallel)
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup_steps: int = 50
    final_lr_fraction: float = 0.05     # cosine: final lr = fraction * peak
    decay_rate: float = 0.1             # exponential: lr multiplied by this over num_steps
    weight_decay: float = 1e-4          # adamw only
    momentum: float = 0.9               # sgd only
    clip_norm: float = 5.0
    clip_mode: str = "global"           # global norm | element-wise | none
    seed: int = 0
    # evaluation, sampling, output
    eval_every: int = 1100
    eval_batch_size: int = 1
    sample_length: int = 200
    sample_temperature: float = 0.8
    log_every: int = 100
    output_dir: str = "runs/default"
    resume: bool = False
    # fault tolerance (jaxrnn.interrupt, jaxrnn.checkpoint)
    checkpoint_every_seconds: float = 600.0  # also save after the chunk passing this; 0: never
    keep: int = 1                       # step checkpoints kept (besides the best)
    skip_nonfinite: bool = False        # skip updates whose loss or gradient is not finite
    max_consecutive_nonfinite: int = 10  # ... and stop after this many in a row

    def to_dict(self):
        return dataclasses.asdict(self)


PRESETS = {
    # The main job: about 10 minutes on a 2-core CPU (BUILD_NOTES.md has the measured run).
    "default": {},
    # A first look in well under a minute.
    "quick": dict(hidden_size=128, num_steps=300, batch_size=32, seq_len=50, eval_every=150,
                  log_every=50, steps_per_call=25, warmup_steps=10, learning_rate=5e-3,
                  dropout=0.0, output_dir="runs/quick", sample_length=120),
    # The capacity study's winner at a fixed wall-time budget (the main job's model: one LSTM
    # layer of 384, dropout 0.25), trained about an hour on a 2-core CPU: 18,000 steps, 4.1x
    # the main job's. Measured (BUILD_NOTES.md, "Capacity"): it over-fits after ~6,000 steps
    # and tests worse than the default; kept as the measured baseline for longer recipes.
    "long": dict(num_steps=18000, eval_every=3000, log_every=500, output_dir="runs/long"),
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


def make_config(preset="default", **overrides):
    """A validated config: the preset's values, then ``overrides``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = from_dict({**PRESETS[preset], **overrides})
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
    _require(config.arch == "rnn" or config.activation == "tanh",
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


