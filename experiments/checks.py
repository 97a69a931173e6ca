"""Launcher checks: flag values and combinations that only a launcher has (the multi-host flags of
``experiments.train``, the cells and sizes of ``experiments.gradcheck``), refused with one
`ConfigError` line naming the flags, before anything is compiled.

The training flags are checked by `jaxrnn.config.validate` (they are `Config` fields), a run's
folder and memory by `jaxrnn.runchecks`, a library call's arguments by `jaxrnn.validate`.
"""
import numpy as np

from jaxrnn import runchecks, validate
from jaxrnn.cells import ACTIVATIONS, ARCHS, resolve, takes_activation
from jaxrnn.errors import ConfigError


def distributed(coordinator_address, num_processes, process_id, data_parallel):
    """The multi-host flags of experiments.train."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ConfigError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id must be in [0, --num_processes={num_processes}), got "
                          f"{process_id}")
    if num_processes > 1 and not coordinator_address:
        raise ConfigError(f"--num_processes={num_processes} needs --coordinator_address=HOST:PORT "
                          "of process 0")
    if num_processes > 1 and not data_parallel:
        raise ConfigError(f"--num_processes={num_processes} needs --data_parallel (the processes "
                          "share one batch)")
    if coordinator_address and num_processes == 1:
        raise ConfigError("--coordinator_address needs --num_processes of 2 or more")


def _names(flag, names, choices, kind):
    """A list flag of names out of ``choices``: each known, none twice."""
    for name in names:
        if name not in choices:
            raise ConfigError(f"unknown {kind} {name!r} in {flag}; choose one of "
                              f"{', '.join(choices)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"{flag} lists a value twice: {','.join(names)}")


def gradcheck_cases(archs, activations, *, activations_given, vocab_size, hidden_size, seq_len,
                    batch_size, num_layers, dtype):
    """The flags of experiments.gradcheck -> its ``[(arch, activation), ...]`` rows.

    ``archs`` are the cells to check (rnn, lstm, gru); ``rnn`` is checked once per name of
    ``activations``, which therefore need ``rnn`` among ``archs`` when given; --vocab_size >= 2.
    """
    _names("--archs", archs, ARCHS, "arch")
    _names("--activations", activations, tuple(ACTIVATIONS), "activation")
    if not archs:
        raise ConfigError(f"--archs is empty; give one or more of {', '.join(ARCHS)}")
    if any(takes_activation(arch) for arch in archs) and not activations:
        raise ConfigError(f"--activations is empty; give one or more of "
                          f"{', '.join(ACTIVATIONS)}, or drop rnn from --archs")
    if activations_given and not any(takes_activation(arch) for arch in archs):
        raise ConfigError(f"--activations={','.join(activations)} applies to the vanilla RNN "
                          "only; add rnn to --archs or drop --activations")
    for name, value in (("hidden_size", hidden_size), ("seq_len", seq_len),
                        ("batch_size", batch_size), ("num_layers", num_layers)):
        validate.size(f"--{name}", value)
    if vocab_size < 2:
        raise ConfigError(f"--vocab_size must be >= 2 (one symbol leaves nothing to predict and "
                          f"every gradient zero), got {vocab_size}")
    # The LSTM (4 gates) needs the most memory of the three cells.
    runchecks.check_memory(resolve("lstm"), vocab_size, hidden_size, num_layers, batch_size,
                           seq_len, np.dtype(dtype).itemsize)
    return [(arch, activation) for arch in archs
            for activation in (activations if takes_activation(arch) else [None])]


def parse_list(values, kind, name, allow_inf=False):
    """The comma-separated values of the list flag ``--name`` as ``kind`` (int or float), each
    given once; floats must be > 0 and finite (or inf with ``allow_inf``)."""
    try:
        parsed = [kind(value) for value in values]
    except ValueError:
        raise ConfigError(f"--{name} must be a comma-separated list of {kind.__name__}s, got "
                          f"{','.join(values)!r}") from None
    if kind is float and not all(0 < value < float("inf") or (allow_inf and value == float("inf"))
                                 for value in parsed):
        rule = "must all be > 0 (inf: no clipping)" if allow_inf else "must all be > 0 and finite"
        raise ConfigError(f"--{name} {rule}, got {','.join(values)}")
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--{name} lists a value twice: {','.join(values)}")
    return parsed
