"""Tests for jaxrnn.sample: logit filters, option checks, the jitted sampler and sample_text."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import sample
from jaxrnn.data import encode
from jaxrnn.errors import ConfigError
from jaxrnn.model import init_params, init_state, model_step

VOCAB = "\nabcdefgh "                    # V = 10, includes a newline (the empty-prime start)
HIDDEN = 8


@functools.lru_cache(maxsize=None)
def tiny_params(arch, num_layers=1, seed=0):
    """A random V=10, H=8 model with the layout of `init_params`.

    Filled from NumPy (N(0, 1/fan_in) matrices, N(0, 0.1^2) biases, N(0, 1) output weights so
    the logits have clear, untied maxima): tests need random weights, not a good initialiser, and
    this avoids compiling the initialiser's many small ops.
    """
    layout = jax.eval_shape(lambda key: init_params(key, arch, len(VOCAB), HIDDEN, num_layers),
                            jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        std = 0.1 if len(leaf.shape) == 1 else leaf.shape[0] ** -0.5
        if jax.tree_util.keystr(path) == "['W_hy']":
            std = 1.0
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, layout)


_jitted_model_step = jax.jit(model_step, static_argnames=("arch", "activation"))


def reference_greedy(params, arch, prime_ids, length):
    """Python loop of model_step from the zero state: the argmax chain after the prime.

    prime_ids: (P,) ints -> (ids (N,) list of ints, logits after the prime (V,)).
    """
    state = init_state(arch, 1, HIDDEN, len(params["layers"]))
    for c in prime_ids:
        state, logits = _jitted_model_step(params, state, jnp.array([c], jnp.int32), arch=arch)
    logits_after_prime = logits[0]
    ids = []
    for _ in range(length):
        next_id = int(jnp.argmax(logits[0]))
        ids.append(next_id)
        state, logits = _jitted_model_step(params, state, jnp.array([next_id], jnp.int32),
                                           arch=arch)
    return ids, logits_after_prime


# ---------------------------------------------------------------------------------------------
# filter_logits
# ---------------------------------------------------------------------------------------------
# All filter tests use (B, V) = (4, 10) logits: eager ops compile once per shape.
def random_logits(seed):
    """(4, 10) standard-normal logits."""
    return jax.random.normal(jax.random.key(seed), (4, 10))


def sparse_logits(probs):
    """(4, 10) log-probabilities: row b puts ``probs`` (K values) on tokens (3b + 2i) % 10 for
    i < K, and probability 0 (logit -inf) everywhere else."""
    dense = np.zeros((4, 10))
    for row in range(4):
        dense[row, (3 * row + 2 * np.arange(len(probs))) % 10] = probs
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(dense), jnp.float32)


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_top_k_keeps_exactly_k_largest(top_k):
    logits = random_logits(1)
    filtered = sample.filter_logits(logits, top_k=top_k)
    finite = np.isfinite(np.asarray(filtered))
    assert (finite.sum(axis=-1) == top_k).all()
    kth_largest = np.sort(np.asarray(logits), axis=-1)[:, -top_k][:, None]
    np.testing.assert_array_equal(finite, np.asarray(logits) >= kth_largest)
    np.testing.assert_array_equal(np.asarray(filtered)[finite], np.asarray(logits)[finite])


def test_top_k_zero_or_at_least_vocab_is_a_no_op():
    logits = random_logits(2)
    for top_k in (0, 10, 25):
        np.testing.assert_array_equal(sample.filter_logits(logits, top_k=top_k), logits)


@pytest.mark.parametrize("top_p, kept", [(0.3, 1), (0.5, 1), (0.51, 2), (0.7, 2), (0.8, 2),
                                         (0.81, 3), (0.95, 3), (0.96, 4), (1.0, 4)])
def test_top_p_keeps_the_nucleus(top_p, kept):
    probs = np.array([0.15, 0.5, 0.05, 0.3])           # ranks 2, 0, 3, 1
    logits = sparse_logits(probs)
    filtered = np.asarray(sample.filter_logits(logits, top_p=top_p))
    expected = np.isfinite(np.asarray(sparse_logits(probs >= np.sort(probs)[::-1][kept - 1])))
    np.testing.assert_array_equal(np.isfinite(filtered), expected)


def test_top_p_always_keeps_the_argmax():
    logits = random_logits(3)
    filtered = sample.filter_logits(logits, top_p=1e-6)
    finite = np.isfinite(np.asarray(filtered))
    assert (finite.sum(axis=-1) == 1).all()
    np.testing.assert_array_equal(np.argmax(finite, axis=-1), np.argmax(logits, axis=-1))


def test_top_p_acts_on_the_top_k_distribution():
    logits = sparse_logits(np.array([0.4, 0.3, 0.2, 0.1]))
    # After top_k=2 the distribution is (4/7, 3/7): top_p=0.6 needs both tokens.
    filtered = sample.filter_logits(logits, top_k=2, top_p=0.6)
    expected = np.isfinite(np.asarray(sparse_logits(np.array([1.0, 1.0, 0.0, 0.0]))))
    np.testing.assert_array_equal(np.isfinite(filtered), expected)


def test_temperature_divides_the_logits():
    logits = random_logits(4)
    np.testing.assert_allclose(sample.filter_logits(logits, temperature=2.0), logits / 2.0,
                               rtol=1e-6)
    sharp = jax.nn.softmax(sample.filter_logits(logits, temperature=0.1))
    flat = jax.nn.softmax(sample.filter_logits(logits, temperature=10.0))
    assert (sharp.max(axis=-1) > jax.nn.softmax(logits).max(axis=-1)).all()
    assert (flat.max(axis=-1) < jax.nn.softmax(logits).max(axis=-1)).all()


def test_filter_logits_under_jit_matches_eager():
    logits = random_logits(5)
    options = dict(temperature=0.7, top_k=5, top_p=0.8)
    jitted = jax.jit(functools.partial(sample.filter_logits, **options))(logits)
    eager = sample.filter_logits(logits, **options)
    # The same tokens survive; the kept values may differ by an ulp (XLA may turn x / t into
    # x * (1 / t) under jit, as jax 0.6 on Python 3.10 does).
    np.testing.assert_array_equal(np.isfinite(jitted), np.isfinite(eager))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Option checks
# ---------------------------------------------------------------------------------------------
VALID = dict(temperature=1.0, top_k=0, top_p=1.0, length=5, num_samples=1)


@pytest.mark.parametrize("name, value, message", [
    ("temperature", 0.0, "temperature must be > 0, got 0.0; use --greedy for argmax decoding"),
    ("temperature", -1.0, "temperature must be > 0, got -1.0"),
    ("temperature", float("nan"), "temperature must be > 0, got nan"),
    ("temperature", float("inf"), "temperature must be finite, got inf"),
    ("top_k", -1, "top_k must be an integer >= 0, got -1"),
    ("top_k", 2.5, "top_k must be an integer >= 0, got 2.5"),
    ("top_p", 1.5, "top_p must be in (0, 1], got 1.5"),
    ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
    ("top_p", float("nan"), "top_p must be in (0, 1], got nan"),
    ("length", 0, "length must be an integer >= 1, got 0"),
    ("num_samples", 0, "num_samples must be an integer >= 1, got 0"),
    ("num_samples", 1.0, "num_samples must be an integer >= 1, got 1.0"),
])
def test_invalid_options_raise_config_error(name, value, message):
    options = {**VALID, name: value}
    for call in (lambda: sample.validate_sampling_options(**options),
                 lambda: sample.make_sampler(arch="rnn", **options),
                 lambda: sample.sample_text(tiny_params("rnn"), arch="rnn", vocab=VOCAB,
                                            key=jax.random.key(0), **options)):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value).startswith(message)
        assert "\n" not in str(info.value)


def test_valid_options_pass():
    sample.validate_sampling_options(**VALID)
    sample.validate_sampling_options(temperature=0.5, top_k=3, top_p=0.9, length=1,
                                     num_samples=4)


def test_unknown_prime_characters_are_named():
    with pytest.raises(ConfigError, match="prime has characters not in the vocabulary: 'z', 'é'"):
        sample.sample_text(tiny_params("rnn"), arch="rnn", vocab=VOCAB, key=jax.random.key(0),
                           prime="abzé", length=3)


def test_vocabulary_must_match_the_model():
    with pytest.raises(ConfigError, match="vocabulary has 3 characters but the model predicts 10"):
        sample.sample_text(tiny_params("rnn"), arch="rnn", vocab="abc", key=jax.random.key(0))


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------
GREEDY = dict(length=12, num_samples=2, greedy=True)     # one compiled sampler per arch


@pytest.mark.parametrize("arch, num_layers", [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_greedy_equals_python_argmax_loop(arch, num_layers):
    params = tiny_params(arch, num_layers)
    prime_ids = encode(VOCAB, "abca")
    sampler = sample.make_sampler(arch=arch, **GREEDY)
    ids = np.asarray(sampler(params, jnp.asarray(prime_ids), jax.random.key(0)))
    expected, _ = reference_greedy(params, arch, prime_ids, 12)
    assert ids.shape == (2, 12) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [expected, expected])
    # Greedy decoding ignores the key.
    again = sampler(params, jnp.asarray(prime_ids), jax.random.key(123))
    np.testing.assert_array_equal(again, ids)


def test_the_whole_prime_sets_the_state():
    """Primes that end in the same character lead to different first characters, each one the
    argmax of the logits after feeding the whole prime through a Python loop of model_step."""
    params = tiny_params("gru")
    sampler = sample.make_sampler(arch="gru", **GREEDY)
    first_chars, last_logits = set(), []
    for prime in ("abca", "hhga", "gfea", "\n\nca", "   a", "eeda"):
        prime_ids = encode(VOCAB, prime)
        first = int(sampler(params, jnp.asarray(prime_ids), jax.random.key(0))[0, 0])
        _, logits = reference_greedy(params, "gru", prime_ids, 0)
        assert first == int(jnp.argmax(logits)), prime
        first_chars.add(first)
        last_logits.append(np.asarray(logits))
    assert len(first_chars) > 1
    assert not np.allclose(last_logits[0], last_logits[1])


def test_top_k_one_sampling_equals_greedy():
    params = tiny_params("rnn")
    prime_ids = jnp.asarray(encode(VOCAB, "head"))
    greedy = sample.make_sampler(arch="rnn", **GREEDY)
    top1 = sample.make_sampler(arch="rnn", length=12, num_samples=2, top_k=1, temperature=1.5)
    expected = np.asarray(greedy(params, prime_ids, jax.random.key(0)))
    for seed in range(20):
        np.testing.assert_array_equal(top1(params, prime_ids, jax.random.key(seed)), expected)


FILTERED = dict(arch="rnn", length=3, num_samples=4000, temperature=0.8, top_k=5, top_p=0.75)


def flat_rnn_params():
    """tiny_params("rnn") with smaller output weights, so several characters are likely."""
    return {**tiny_params("rnn"), "W_hy": tiny_params("rnn")["W_hy"] / 3.0}


def test_same_seed_same_samples_different_seed_different():
    params, prime_ids = flat_rnn_params(), jnp.asarray(encode(VOCAB, "bad"))
    sampler = sample.make_sampler(**FILTERED)
    first = np.asarray(sampler(params, prime_ids, jax.random.key(7)))
    np.testing.assert_array_equal(sampler(params, prime_ids, jax.random.key(7)), first)
    assert not np.array_equal(sampler(params, prime_ids, jax.random.key(8)), first)
    assert len({tuple(row) for row in first.tolist()}) > 1       # streams are independent


def test_sampled_frequencies_follow_the_filtered_softmax():
    """4000 first characters sampled with temperature, top-k and top-p: they use exactly the kept
    characters, with frequencies matching softmax(filter_logits(logits after the prime)) (total
    variation distance well within sampling noise, ~0.01 expected)."""
    params, prime_ids = flat_rnn_params(), encode(VOCAB, "bad")
    options = {name: FILTERED[name] for name in ("temperature", "top_k", "top_p")}
    _, logits = reference_greedy(params, "rnn", prime_ids, 0)
    filtered = sample.filter_logits(jnp.broadcast_to(logits, (4, 10)), **options)[0]
    kept = np.flatnonzero(np.isfinite(filtered))
    assert 1 < len(kept) < 5                                # both filters bite
    sampler = sample.make_sampler(**FILTERED)
    ids = np.asarray(sampler(params, jnp.asarray(prime_ids), jax.random.key(11)))[:, 0]
    assert set(ids.tolist()) == set(kept.tolist())
    expected = np.asarray(jax.nn.softmax(filtered))
    observed = np.bincount(ids, minlength=len(VOCAB)) / ids.size
    assert 0.5 * np.abs(observed - expected).sum() < 0.04


# ---------------------------------------------------------------------------------------------
# sample_text
# ---------------------------------------------------------------------------------------------
def test_sample_text_shapes_and_characters():
    # FILTERED options and a 3-character prime: reuses the sampler compiled above.
    texts = sample.sample_text(flat_rnn_params(), vocab=VOCAB, key=jax.random.key(0),
                               prime="cab", **FILTERED)
    assert isinstance(texts, list) and len(texts) == FILTERED["num_samples"]
    for text in texts:
        assert text.startswith("cab") and len(text) == 3 + FILTERED["length"]
        assert set(text) <= set(VOCAB)
    assert len(set(texts)) > 1


def test_empty_prime_starts_from_newline_or_first_character():
    params = tiny_params("gru")
    common = dict(arch="gru", key=jax.random.key(0), length=10, greedy=True)
    empty = sample.sample_text(params, vocab=VOCAB, prime="", **common)[0]
    newline = sample.sample_text(params, vocab=VOCAB, prime="\n", **common)[0]
    assert len(empty) == 10 and empty == newline[1:]
    no_newline = "xabcdefgh "                   # same size, no "\n": starts from vocab[0] = "x"
    assert sample.start_character(no_newline) == "x"
    empty = sample.sample_text(params, vocab=no_newline, prime="", **common)[0]
    assert empty == sample.sample_text(params, vocab=no_newline, prime="x", **common)[0][1:]


def test_sampler_is_cached_per_option_set():
    """Same options -> the same jitted sampler; repeated sample_text calls compile nothing new."""
    options = dict(arch="rnn", **GREEDY)
    assert sample.make_sampler(**options) is sample.make_sampler(**options)
    assert sample.make_sampler(**options) is sample.make_sampler(
        **options, activation=None, temperature=0.5, top_k=3, top_p=0.9)   # greedy: unused
    assert sample.make_sampler(**options) is not sample.make_sampler(**{**options, "length": 5})
    sampler = sample.make_sampler(**options)
    texts = [sample.sample_text(tiny_params("rnn"), vocab=VOCAB, key=jax.random.key(seed),
                                prime="abca", **options) for seed in range(3)]
    compiled = sampler._cache_size()
    texts += [sample.sample_text(tiny_params("rnn"), vocab=VOCAB, key=jax.random.key(seed),
                                 prime="dcba", **options) for seed in range(3)]
    assert sampler._cache_size() == compiled == 1
    assert texts[0] == texts[1] == texts[2] and texts[3] == texts[4] == texts[5]
