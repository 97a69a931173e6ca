"""Checks at the boundary: bad input becomes one `JaxrnnError` line naming the problem and the fix.

Where each kind of check lives:

* **Static checks** (structure, shapes, dtypes, sizes) run in every public entry point
  (`jaxrnn.init_params`, `init_state`, `loss_fn`, `forward_log_probs`, `model_step`, `unroll`, the
  sampler). They read only ``.shape`` and ``.dtype``, so under ``jit`` they cost one Python pass at
  trace time and nothing per call.
* **Value checks** (every character id in ``[0, V)``) run where data enters: the corpus loader
  builds ids from the text's own vocabulary, the sampler checks its prime, and the model's entry
  points check ids that are concrete arrays (an eager call). Under ``jit`` or ``vmap`` the ids are
  tracers and are *not* checked -- the documented contract is that they lie in ``[0, V)``; an id
  outside would make ``take`` clamp and ``take_along_axis`` return NaN, silently.
* **Run checks** (an output folder that already holds a run or cannot be written, a memory
  estimate against the machine, a loss that ran away, checkpoint metadata, multi-host flags) run on
  the host before anything is compiled or written.

A state whose dtype differs from the parameters' is an error, not a cast: casting float64
parameters' state down to float32 (or up) would silently change the numbers a caller compares.
"""
import math
import numbers
import os
import pathlib
import tempfile

import jax
import numpy as np

from jaxrnn.cells import ACTIVATIONS, ARCHS, PARAM_NAMES, resolve
from jaxrnn.errors import CheckpointError, ConfigError, TrainingDivergedError
from jaxrnn.types import LSTMState


# ---------------------------------------------------------------------------------------------
# Sizes and arrays
# ---------------------------------------------------------------------------------------------
def size(name, value, minimum=1):
    """``value`` as a Python int if it is an integer (NumPy integers too) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _shape(value):
    return tuple(np.shape(value))


def _is_concrete(array):
    return not isinstance(array, jax.core.Tracer)


def ids(name, values, ndim, vocab_size=None):
    """Character ids: an integer array of ``ndim`` dims, none of them empty; returns the array.

    ``vocab_size``: when given and ``values`` is concrete (not traced), every id must be in
    ``[0, vocab_size)``.
    """
    values = values if isinstance(values, (jax.Array, np.ndarray)) else np.asarray(values)
    layout = "(B,)" if ndim == 1 else "(B, T)"
    if not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(f"{name} must hold integer character ids, got dtype {values.dtype}; "
                          "encode text with jaxrnn.data.encode")
    if values.ndim != ndim:
        raise ConfigError(f"{name} must have shape {layout}, got {_shape(values)}")
    if 0 in values.shape:
        what = "T=0 time steps" if ndim == 2 and values.shape[-1] == 0 else "an empty batch B=0"
        raise ConfigError(f"{name} has {what} (shape {_shape(values)}); pass at least one "
                          "stream of at least one character")
    if vocab_size is not None and _is_concrete(values):
        host = np.asarray(values)   # on the host: inside a trace, jnp reductions would be staged
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= vocab_size:
            raise ConfigError(f"{name} holds id {low if low < 0 else high} outside [0, "
                              f"{vocab_size}) (the model's vocabulary); encode the text with "
                              "the vocabulary the model was built for")
    return values


# ---------------------------------------------------------------------------------------------
# Parameters and states
# ---------------------------------------------------------------------------------------------
def _expected_layer_shapes(cell, input_size, hidden_size):
    """``cell.param_names``: input weight (I, G), recurrent weight (H, G), then biases (G,)."""
    gates = cell.num_gates * hidden_size
    input_weight, recurrent_weight, *biases = cell.param_names
    return {input_weight: (input_size, gates), recurrent_weight: (hidden_size, gates),
            **{name: (gates,) for name in biases}}


def layers(layer_list, cell, input_size=None, where="layers"):
    """A list of cell-parameter dicts of ``cell`` (a `jaxrnn.cells.Cell`); returns
    ``(L, H, dtype)``.

    Layer 0 reads ``input_size`` features (any when None), the others H.
    """
    if not isinstance(layer_list, (list, tuple)) or not layer_list:
        raise ConfigError(f"{where} must be a non-empty list of cell parameters, got "
                          f"{type(layer_list).__name__}; build them with jaxrnn.init_params")
    hidden_size, dtype = None, None
    for index, layer in enumerate(layer_list):
        names = tuple(sorted(layer)) if isinstance(layer, dict) else ()
        arch = cell.name
        if names != tuple(sorted(cell.param_names)):
            owner = [name for name in ARCHS if tuple(sorted(PARAM_NAMES[name])) == names]
            if owner:
                raise ConfigError(f"{where}[{index}] holds the parameters of {owner[0]}, not of "
                                  f"{arch}; pass arch={owner[0]!r} or parameters built for {arch}")
            raise ConfigError(f"{where}[{index}] holds keys {list(names)}, not the parameters of "
                              f"{arch}; build them with jaxrnn.init_params")
        recurrent = layer[cell.param_names[1]]
        if hidden_size is None:
            hidden_size = _shape(recurrent)[0] if len(_shape(recurrent)) == 2 else None
        first_input = _shape(layer[cell.param_names[0]])[:1]
        rows = (first_input[0] if input_size is None and first_input else input_size) \
            if index == 0 else hidden_size
        for name, want in _expected_layer_shapes(cell, rows, hidden_size).items():
            got = _shape(layer[name])
            if got != want:
                raise ConfigError(f"{where}[{index}]['{name}'] has shape {got}, expected {want} "
                                  f"for {arch} with H={hidden_size}; build the parameters with "
                                  "jaxrnn.init_params")
            leaf_dtype = np.dtype(layer[name].dtype)
            if not np.issubdtype(leaf_dtype, np.floating):
                raise ConfigError(f"{where}[{index}]['{name}'] has dtype {leaf_dtype}; "
                                  "parameters must be floating point")
            if dtype is None:
                dtype = leaf_dtype
            elif leaf_dtype != dtype:
                raise ConfigError(f"{where}[{index}]['{name}'] is {leaf_dtype} but other "
                                  f"parameters are {dtype}; cast all of them to one dtype")
    return len(layer_list), hidden_size, dtype


def params(tree, cell):
    """Model parameters from `jaxrnn.init_params` for ``cell``; returns ``(V, H, L, dtype)``."""
    if not isinstance(tree, dict) or not {"layers", "W_hy", "b_y"} <= set(tree):
        raise ConfigError("params must be the dict from jaxrnn.init_params (keys layers, W_hy, "
                          f"b_y), got {type(tree).__name__}"
                          + (f" with keys {sorted(tree)}" if isinstance(tree, dict) else ""))
    head = _shape(tree["W_hy"])
    if len(head) != 2:
        raise ConfigError(f"params['W_hy'] must have shape (H, V), got {head}")
    hidden_size, vocab_size = head
    num_layers, layer_hidden, dtype = layers(tree["layers"], cell, vocab_size, "params['layers']")
    if layer_hidden != hidden_size or _shape(tree["b_y"]) != (vocab_size,):
        raise ConfigError(f"params['W_hy'] {head} and params['b_y'] {_shape(tree['b_y'])} do not "
                          f"match the layers' H={layer_hidden}; build the parameters with "
                          "jaxrnn.init_params")
    for name in ("W_hy", "b_y"):
        if np.dtype(tree[name].dtype) != dtype:
            raise ConfigError(f"params['{name}'] is {np.dtype(tree[name].dtype)} but the layers "
                              f"are {dtype}; cast all parameters to one dtype")
    return vocab_size, hidden_size, num_layers, dtype


def state(carries, cell, num_layers, batch_size, hidden_size, dtype):
    """A model state (tuple of L carries of ``cell``) that fits the parameters; returns it as a
    tuple.

    The state's dtype must equal the parameters' (an error, not a cast; see the module docstring).
    """
    if not isinstance(carries, (list, tuple)) or isinstance(carries, LSTMState) \
            or len(carries) != num_layers:
        count = len(carries) if isinstance(carries, (list, tuple)) else type(carries).__name__
        raise ConfigError(f"state must be a tuple of {num_layers} carries (one per layer), got "
                          f"{count}; build it with jaxrnn.init_state")
    fixed, arch = [], cell.name
    for index, carry in enumerate(carries):
        is_pair = isinstance(carry, (tuple, list)) and len(carry) == 2
        if arch == "lstm" and not is_pair:
            raise ConfigError(f"state[{index}] is a single array but lstm carries "
                              "LSTMState(hidden, cell); build the state with "
                              "jaxrnn.init_state('lstm', ...)")
        if arch != "lstm" and isinstance(carry, (tuple, list)):
            raise ConfigError(f"state[{index}] is a pair (an lstm carry) but {arch} carries one "
                              f"(B, H) array; build the state with jaxrnn.init_state({arch!r}, ...)")
        for array in (carry if arch == "lstm" else (carry,)):
            if _shape(array) != (batch_size, hidden_size):
                raise ConfigError(f"state[{index}] has shape {_shape(array)}, expected "
                                  f"(B, H) = ({batch_size}, {hidden_size}); build it with "
                                  f"jaxrnn.init_state({arch!r}, {batch_size}, {hidden_size})")
            if np.dtype(array.dtype) != dtype:
                raise ConfigError(f"state[{index}] is {np.dtype(array.dtype)} but the parameters "
                                  f"are {dtype}; build the state with init_state(..., "
                                  f"dtype=params['W_hy'].dtype)")
        fixed.append(LSTMState(*carry) if arch == "lstm" else carry)
    return tuple(fixed)


def float_inputs(xs, input_size, dtype):
    """``xs: (T, B, I)`` floats of the layers' dtype with T, B >= 1."""
    if not hasattr(xs, "dtype") or not np.issubdtype(np.dtype(xs.dtype), np.floating):
        raise ConfigError(f"xs must be a float array (T, B, I), got "
                          f"{getattr(xs, 'dtype', type(xs).__name__)}")
    if xs.ndim != 3 or xs.shape[-1] != input_size or 0 in xs.shape:
        raise ConfigError(f"xs must have shape (T, B, I={input_size}) with T, B >= 1, got "
                          f"{_shape(xs)}")
    if np.dtype(xs.dtype) != dtype:
        raise ConfigError(f"xs is {np.dtype(xs.dtype)} but the layers are {dtype}; cast xs to "
                          f"{dtype}")


# ---------------------------------------------------------------------------------------------
# Training: divergence, memory, output folder, checkpoints, multi-host flags
# ---------------------------------------------------------------------------------------------
def divergence_limit(vocab_size):
    """Mean loss (nats/char) above which a run has diverged: ``ln V + max(ln V, 1)``.

    A uniform guess costs ln V nats per character, and a fresh model starts there. A chunk whose
    mean loss is a further ln V above it (at least 1 nat) puts, on geometric average, less than
    1/V^2 of its probability on the right character: worse than knowing nothing, by a factor V.
    """
    log_v = math.log(max(vocab_size, 1))
    return log_v + max(log_v, 1.0)


def first_divergent_step(losses, vocab_size):
    """losses: (N,) of one chunk -> index of the step that shows divergence, or None.

    Diverged: a loss that is not finite, or a chunk mean above `divergence_limit`.
    """
    losses = np.asarray(losses, np.float64)
    bad = ~np.isfinite(losses)
    if bad.any():
        return int(np.argmax(bad))
    limit = divergence_limit(vocab_size)
    if losses.mean() > limit:
        return int(np.argmax(losses > limit))
    return None


def check_losses(losses, first_step, vocab_size, checkpoint_dir, kept):
    """Raise `TrainingDivergedError` when a chunk's ``losses`` (N,) diverged; ``first_step`` is the
    step number of ``losses[0]``, ``kept``: whether a checkpoint exists in ``checkpoint_dir``."""
    index = first_divergent_step(losses, vocab_size)
    if index is None:
        return
    loss = float(np.asarray(losses)[index])
    where = (f"the last good checkpoint is kept in {checkpoint_dir}" if kept
             else "no checkpoint was saved yet")
    rule = "" if not math.isfinite(loss) else (
        f" (the chunk's mean is above the divergence limit {divergence_limit(vocab_size):.2f}: a "
        f"uniform guess's ln V = {math.log(vocab_size):.2f} plus a margin of max(ln V, 1))")
    raise TrainingDivergedError(f"loss became {loss:.4g} at step {first_step + index}{rule}; "
                                f"{where}; lower --learning_rate or --clip_norm")


def _available_bytes():
    """Memory a computation may use: the first device's limit on an accelerator, else the
    host's MemAvailable (Linux) or physical memory."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(count):
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"


def training_bytes(cell, vocab_size, hidden_size, num_layers, batch_size, seq_len, itemsize,
                   runs=1):
    """A lower estimate of training memory: ``(state bytes, activation bytes)``.

    State: parameters, gradients, two optimiser moments and one update (5 copies of P). Activations
    of one window: per layer the gates, hidden and cell states ``T*B*(G + 2H)``, and the output's
    logits, probabilities and their gradient ``3*T*B*V``.
    """
    gates = cell.num_gates * hidden_size
    count = sum(math.prod(shape) for index in range(num_layers) for shape in _expected_layer_shapes(
        cell, vocab_size if index == 0 else hidden_size, hidden_size).values())
    count += (hidden_size + 1) * vocab_size
    activations = seq_len * batch_size * (num_layers * (gates + 2 * hidden_size) + 3 * vocab_size)
    return runs * 5 * count * itemsize, runs * activations * itemsize


def check_memory(cell, vocab_size, hidden_size, num_layers, batch_size, seq_len, itemsize,
                 runs=1, available=None):
    """ConfigError when `training_bytes` exceeds the memory available, naming the flag to lower."""
    state_bytes, activation_bytes = training_bytes(cell, vocab_size, hidden_size, num_layers,
                                                   batch_size, seq_len, itemsize, runs)
    available = _available_bytes() if available is None else available
    if state_bytes + activation_bytes <= available:
        return
    lower = ("--hidden_size (or --num_layers)" if state_bytes >= activation_bytes
             else "--batch_size or --seq_len")
    raise ConfigError(f"--hidden_size={hidden_size} --num_layers={num_layers} --batch_size="
                      f"{batch_size} --seq_len={seq_len} needs at least "
                      f"{_gib(state_bytes + activation_bytes)} ({_gib(state_bytes)} parameters and "
                      f"optimiser state, {_gib(activation_bytes)} activations) but "
                      f"{_gib(available)} is available; lower {lower}")


def _probe_write(folder):
    handle, path = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    os.close(handle)
    os.unlink(path)


def prepare_output_dir(output_dir, *, run_files=(), overwrite=False,
                       checkpoint_subdir="checkpoint"):
    """Create ``output_dir`` (if needed) after checking that a run may write there.

    Refused: a path that is a file; a folder that cannot be written (nor its checkpoint
    subfolder); a folder holding any of ``run_files`` (paths relative to it that mean "another
    run lives here", e.g. its checkpoint), unless ``overwrite``, which empties those of them that
    are JSON-lines logs (the checkpoint is replaced at the next save). Returns the folder's path.
    """
    folder = pathlib.Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output_dir={folder} is a file, not a folder; pass a folder path")
    held = [folder / name for name in run_files if (folder / name).exists()]
    if held and not overwrite:
        raise ConfigError(f"--output_dir={folder} already holds a run ({held[0]}); pass --resume "
                          "to continue it, --overwrite to replace it, or another --output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe_write(folder)
        if (folder / checkpoint_subdir).is_dir():
            _probe_write(folder / checkpoint_subdir)
    except OSError as error:
        raise ConfigError(f"--output_dir={folder} cannot be written ({error.strerror or error}); "
                          "pass a folder you can write to") from None
    for path in held:
        if path.suffix == ".jsonl":
            path.write_text("", encoding="utf-8")
    return folder


def run_metadata(metadata, directory):
    """A training checkpoint's metadata has a config dict, a non-empty vocab string and a step."""
    problems = [name for name, kind in (("config", dict), ("vocab", str), ("step", int))
                if not isinstance(metadata.get(name), kind)]
    if not problems and not metadata["vocab"]:
        problems = ["vocab"]
    if problems:
        raise CheckpointError(f"checkpoint {directory} has no valid {', '.join(problems)} in its "
                              "metadata (was checkpoint.json edited?); re-train, or use an intact "
                              "checkpoint")
    return metadata


def resume_config(saved, config):
    """Settings a resumed optimiser state depends on (beyond `config.MODEL_FIELDS`)."""
    if saved.get("optimizer") != config.optimizer:
        raise CheckpointError(f"checkpoint was trained with --optimizer={saved.get('optimizer')} "
                              f"but flags ask for --optimizer={config.optimizer}: the optimiser "
                              f"differs, so its state cannot continue; resume with "
                              f"--optimizer={saved.get('optimizer')} or start a new --output_dir")


def resume_hint(error):
    """A `CheckpointError` from `jaxrnn.checkpoint` reworded for ``train --resume``, which has no
    --checkpoint flag: the remedy is the run folder."""
    text = str(error)
    for old in ("pick another --checkpoint", "a different --checkpoint"):
        text = text.replace(old, "start a new --output_dir (drop --resume)")
    return CheckpointError(text)


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
    if "rnn" in archs and not activations:
        raise ConfigError(f"--activations is empty; give one or more of "
                          f"{', '.join(ACTIVATIONS)}, or drop rnn from --archs")
    if activations_given and "rnn" not in archs:
        raise ConfigError(f"--activations={','.join(activations)} applies to the vanilla RNN "
                          "only; add rnn to --archs or drop --activations")
    for name, value in (("hidden_size", hidden_size), ("seq_len", seq_len),
                        ("batch_size", batch_size), ("num_layers", num_layers)):
        size(f"--{name}", value)
    if vocab_size < 2:
        raise ConfigError(f"--vocab_size must be >= 2 (one symbol leaves nothing to predict and "
                          f"every gradient zero), got {vocab_size}")
    # The LSTM (4 gates) needs the most memory of the three cells.
    check_memory(resolve("lstm"), vocab_size, hidden_size, num_layers, batch_size, seq_len,
                 np.dtype(dtype).itemsize)
    return [(arch, activation) for arch in archs
            for activation in (activations if arch == "rnn" else [None])]
