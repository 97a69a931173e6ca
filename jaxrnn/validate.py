"""Checks at the library's boundary: bad arguments become one `JaxrnnError` line naming the
argument, the problem and the fix.

* **Static checks** (structure, shapes, dtypes, sizes) run in every public entry point
  (`jaxrnn.init_params`, `init_state`, `loss_fn`, `forward_log_probs`, `model_step`, `unroll`, the
  sampler). They read only ``.shape`` and ``.dtype``, so under ``jit`` they cost one Python pass at
  trace time and nothing per call.
* **Value checks** (every character id in ``[0, V)``) run where data enters: the corpus loader
  builds ids from the text's own vocabulary, the sampler checks its prime, and the model's entry
  points check ids that are concrete arrays (an eager call). Under ``jit`` or ``vmap`` the ids are
  tracers and are *not* checked -- the documented contract is that they lie in ``[0, V)``; an id
  outside would make ``take`` clamp and ``take_along_axis`` return NaN, silently.

A state whose dtype differs from the parameters' is an error, not a cast: casting float64
parameters' state down to float32 (or up) would silently change the numbers a caller compares.

Checks of a training run (its output folder, a memory estimate, a loss that ran away) are
`jaxrnn.runchecks`'s, of a checkpoint to resume from `jaxrnn.runstate`'s, and of launcher flags
``experiments/checks.py``'s.
"""
import numbers

import jax
import numpy as np

from jaxrnn.cells import ARCHS, PARAM_NAMES
from jaxrnn.errors import ConfigError
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
def layer_shapes(cell, input_size, hidden_size):
    """``{name: shape}`` of one layer of ``cell`` reading ``input_size`` features: in the order of
    ``cell.param_names``, input weight (I, G), recurrent weight (H, G), then biases (G,)."""
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
        for name, want in layer_shapes(cell, rows, hidden_size).items():
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
