"""Sampling text from a trained model: temperature, top-k, top-p (nucleus), greedy, priming.

Shapes follow `jaxrnn.types` (B streams, V vocabulary); in addition ``P`` is the length of the
priming sequence, ``S`` the number of samples drawn in parallel and ``N`` the number of characters
sampled per stream (``length``).

The sampler is built by a factory, like the training step::

    sample_ids = make_sampler(arch="lstm", length=200, num_samples=4, temperature=0.8, top_k=20)
    ids = sample_ids(params, prime_ids, jax.random.key(0))        # (4, 200) int32

``sample_ids`` is jitted and pure. It is equivalent to this Python loop (run for all S streams at
once)::

    state = init_state(arch, S, H, L)
    for c in prime_ids:                                  # P >= 1 priming characters
        state, logits = model_step(params, state, c)
    for t in range(N):
        ids[t] = categorical(key_t, filter_logits(logits))   # or argmax(logits) when greedy
        state, logits = model_step(params, state, ids[t])

`sample_text` is the string-level entry point used by the launchers: it validates the options,
encodes the prime, runs a cached sampler and decodes the result.
"""
import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import validate
from jaxrnn.cells import takes_arch
from jaxrnn.data import decode, encode
from jaxrnn.errors import ConfigError
from jaxrnn.model import model_step, zero_state_for

# Tolerance of the top-p comparison in units of the dtype's epsilon: a prefix of the sorted
# distribution whose probability falls short of ``top_p`` by less than this counts as reaching it,
# so that e.g. probabilities (0.5, 0.3, ...) with top_p=0.8 keep two tokens even when the float32
# softmax-then-cumsum rounds 0.5 + 0.3 to just below 0.8.
_TOP_P_TOLERANCE_EPS = 16


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_sampling_options(temperature, top_k, top_p, length, num_samples, greedy=False):
    """Checks the sampling options; returns None or raises `ConfigError` with a one-line message.

    Args:
      temperature: finite float > 0 (divides the logits; < 1 sharpens, > 1 flattens); with
        ``greedy`` also 0, the limit that greedy decoding is.
      top_k: int >= 0; 0 disables top-k filtering.
      top_p: float in (0, 1]; 1 disables nucleus filtering.
      length: int >= 1, characters to sample per stream (N).
      num_samples: int >= 1, independent streams sampled in parallel (S).
    """
    if greedy and _is_real(temperature) and temperature == 0:
        pass                                      # temperature -> 0 is greedy decoding
    elif greedy and (not _is_real(temperature) or math.isnan(temperature) or temperature < 0):
        raise ConfigError(f"temperature must be >= 0, got {temperature!r}; greedy decoding "
                          f"ignores it, so drop --temperature")
    elif not _is_real(temperature) or math.isnan(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}; use --greedy for argmax "
                          f"decoding")
    if math.isinf(temperature):
        raise ConfigError(f"temperature must be finite, got {temperature!r}; use a value such as "
                          f"0.5-1.5")
    if not _is_int(top_k) or top_k < 0:
        raise ConfigError(f"top_k must be an integer >= 0, got {top_k!r}; use 0 to disable top-k "
                          f"filtering")
    if not _is_real(top_p) or not 0.0 < top_p <= 1.0:   # also rejects NaN
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}; use 1.0 to disable nucleus "
                          f"filtering")
    if not _is_int(length) or length < 1:
        raise ConfigError(f"length must be an integer >= 1, got {length!r}; pass the number of "
                          f"characters to sample")
    if not _is_int(num_samples) or num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples!r}; pass how "
                          f"many independent samples to draw")


def _keep_top_k(logits, top_k):
    """logits (B, V) -> bool mask (B, V) of exactly min(top_k, V) largest entries per row.

    Ties at the k-th value are broken towards the lower index (as `jax.lax.top_k` does).
    """
    vocab_size = logits.shape[-1]
    _, top_indices = jax.lax.top_k(logits, min(top_k, vocab_size))              # (B, k)
    return jax.nn.one_hot(top_indices, vocab_size, dtype=jnp.bool_).any(axis=-2)  # (B, V)


def _keep_top_p(logits, top_p):
    """logits (B, V) -> bool mask (B, V) of the nucleus: the smallest set of most-likely tokens
    whose probability sums to >= top_p (within `_TOP_P_TOLERANCE_EPS` epsilons), never empty.

    A token is kept when the probability of all tokens ranked strictly above it is < top_p.
    """
    order = jnp.argsort(-logits, axis=-1, stable=True)                    # (B, V) most likely first
    # At least float32 for the cumulative sum, so the tolerance stays small for bfloat16 logits.
    precision = jnp.promote_types(logits.dtype, jnp.float32)
    sorted_probs = jax.nn.softmax(
        jnp.take_along_axis(logits, order, axis=-1).astype(precision), axis=-1)
    cumulative = jnp.cumsum(sorted_probs, axis=-1)                        # (B, V)
    mass_above = jnp.concatenate(                                         # (B, V) exclusive cumsum
        [jnp.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], axis=-1)
    tolerance = _TOP_P_TOLERANCE_EPS * jnp.finfo(precision).eps
    keep_sorted = mass_above < top_p - tolerance
    keep_sorted = keep_sorted.at[..., 0].set(True)                        # at least the argmax
    rank = jnp.argsort(order, axis=-1)                                    # inverse permutation
    return jnp.take_along_axis(keep_sorted, rank, axis=-1)


def filter_logits(logits, *, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature, then top-k, then top-p filtering of a batch of next-character logits.

    Removed entries are set to ``-inf`` so that `jax.random.categorical` never draws them; the
    kept entries keep their (temperature-scaled) values, i.e. the distribution is renormalised
    over the kept set. Top-p acts on the distribution left by top-k.

    Args:
      logits: (B, V) float.
      temperature: > 0; the logits are divided by it (may be a traced scalar).
      top_k: static Python int; 0 disables it, k >= V keeps everything, otherwise exactly the k
        largest logits of each row are kept.
      top_p: static Python float in (0, 1]; 1.0 disables it. Keeps the smallest set of most-likely
        tokens whose cumulative probability is >= top_p -- always at least the most likely one.
        Ties are broken towards the lower index.

    Returns:
      filtered logits, (B, V), same dtype.
    """
    logits = logits / jnp.asarray(temperature, logits.dtype)
    removed = jnp.asarray(-jnp.inf, logits.dtype)
    if top_k > 0 and top_k < logits.shape[-1]:
        logits = jnp.where(_keep_top_k(logits, top_k), logits, removed)
    if top_p < 1.0:
        logits = jnp.where(_keep_top_p(logits, top_p), logits, removed)
    return logits


@takes_arch
def make_sampler(*, arch, activation=None, length, num_samples, temperature=1.0, top_k=0,
                 top_p=1.0, greedy=False, matmul_dtype=None, zoneout=None):
    """A jitted, pure ``sample_ids(params, prime_ids, key) -> ids`` for one set of options.

    Cached per option set, so repeated calls with the same options (however they are spelled:
    defaults or explicit, ``1`` or ``1.0``) return the same function and reuse its compilations;
    jit compiles again only for a new prime length P or new parameter shapes/dtypes.

    Args:
      arch, activation, matmul_dtype, zoneout: the model's cell, as for
        `jaxrnn.model.model_step` (zoneout rates as their expectation).
      length: N >= 1 characters sampled per stream.
      num_samples: S >= 1 streams, sampled independently in parallel from the same prime.
      temperature, top_k, top_p: see `filter_logits` (ignored when ``greedy``).
      greedy: argmax decoding instead of sampling; the output then does not depend on ``key``.

    Returns:
      ``sample_ids(params, prime_ids, key)`` with
        params: from `jaxrnn.init_params` (L layers, hidden size H, vocabulary V);
        prime_ids: (P,) int32, P >= 1, ids in [0, V) (a contract: under jit they are not
          checked; `sample_text` checks its prime), fed through the net from the zero state; the logits after
          the last one give the first sampled character;
        key: a `jax.random` key (split into one key per sampled character);
      returning ids: (S, N) int32 in [0, V), the sampled continuation without the prime.

    Raises:
      ConfigError: invalid options (see `validate_sampling_options`), unknown arch/activation.
    """
    validate_sampling_options(temperature, top_k, top_p, length, num_samples, greedy)
    cell = arch                     # a Cell (`takes_arch`): one cache key, however spelled
    if greedy:                      # the filters do not matter: share one sampler
        temperature, top_k, top_p = 1.0, 0, 1.0
    return _cached_sampler(cell, int(length), int(num_samples),
                           float(temperature), int(top_k), float(top_p), bool(greedy))


@functools.lru_cache(maxsize=64)
def _cached_sampler(cell, length, num_samples, temperature, top_k, top_p, greedy):
    """`make_sampler` for validated options in canonical types, one entry per option set."""
    step = functools.partial(model_step, arch=cell)

    def draw(logits, key):
        """logits (S, V) -> next ids (S,) int32."""
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)

    @jax.jit
    def sample_ids(params, prime_ids, key):
        prime_ids = jnp.asarray(prime_ids, jnp.int32)
        if prime_ids.ndim != 1 or prime_ids.shape[0] < 1:
            raise ConfigError(f"prime_ids must have shape (P,) with P >= 1, got "
                              f"{prime_ids.shape}; pass at least one priming character")
        dtype = params["W_hy"].dtype
        vocab_size = params["W_hy"].shape[1]
        state = zero_state_for(params, cell, num_samples)
        prime = jnp.broadcast_to(prime_ids[:, None], (prime_ids.shape[0], num_samples))  # (P, S)

        def prime_step(carry, ids):                 # ids: (S,)
            state, _ = carry
            return step(params, state, ids), None

        logits0 = jnp.zeros((num_samples, vocab_size), dtype)
        (state, logits), _ = jax.lax.scan(prime_step, (state, logits0), prime)  # logits (S, V)

        def sample_step(carry, key_t):
            state, logits = carry
            ids = draw(logits, key_t)                                           # (S,)
            # The last iteration's model_step is not needed; one wasted step out of N keeps the
            # scan body uniform.
            return step(params, state, ids), ids

        _, ids = jax.lax.scan(sample_step, (state, logits), jax.random.split(key, length))
        return ids.T                                                            # (S, N)

    return sample_ids


def start_character(vocab):
    """The character that primes an empty prime: ``"\\n"`` if it is in ``vocab``, else ``vocab[0]``.

    A newline is the natural "beginning of a line/paragraph" context of a text corpus.
    """
    return "\n" if "\n" in vocab else vocab[0]


@takes_arch
def sample_text(params, *, arch, vocab, key, prime="", length=200, num_samples=1, temperature=1.0,
                top_k=0, top_p=1.0, greedy=False, activation=None, matmul_dtype=None,
                zoneout=None):
    """Samples ``num_samples`` continuations of ``prime`` and returns them as strings.

    An empty ``prime`` starts from `start_character` (a newline when the vocabulary has one, else
    its first character); that start character is not part of the returned text.

    Args:
      params: from `jaxrnn.init_params` or a checkpoint; its output layer must have V = len(vocab).
      arch, activation, matmul_dtype, zoneout: the model's cell (`make_sampler`).
      vocab: str of length V, the training vocabulary (`jaxrnn.data.build_vocab`).
      key: a `jax.random` key.
      prime: str of P >= 0 characters, all in ``vocab``.
      length, num_samples, temperature, top_k, top_p, greedy: see `make_sampler`.

    Returns:
      list of ``num_samples`` strings, each ``prime`` followed by ``length`` sampled characters.

    Raises:
      ConfigError: invalid options, a vocabulary that does not match the model, or a prime with
        characters outside the vocabulary (the message names them).
    """
    validate_sampling_options(temperature, top_k, top_p, length, num_samples, greedy)
    cell = arch                             # a Cell with the options in it (`takes_arch`)
    vocab_size = validate.params(params, cell)[0]
    if not vocab or len(vocab) != vocab_size:
        raise ConfigError(f"the vocabulary has {len(vocab)} characters but the model predicts "
                          f"{vocab_size}; use the vocabulary saved with the model's checkpoint")
    unknown = sorted(set(prime) - set(vocab))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise ConfigError(f"prime has characters not in the vocabulary: {shown}; use only "
                          f"characters of the training text")
    prime_ids = encode(vocab, prime or start_character(vocab))                  # (P,) int32
    sampler = make_sampler(arch=cell, length=length, num_samples=num_samples,
                           temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    ids = np.asarray(sampler(params, jnp.asarray(prime_ids), key))             # (S, N)
    return [prime + decode(vocab, row) for row in ids]
