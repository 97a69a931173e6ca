"""Evaluation and the sampling forward against the training forward.

`make_evaluate` must be the mean of `loss_fn` over consecutive windows with the state carried by
hand; `model_step` (what the sampler chains) must give the log-probabilities and final state of
`forward_log_probs` and `loss_fn`; the greedy sampler must follow `forward_log_probs` from the
prime on. Every arch, two layers, so that a layer-chaining mistake shows.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import config as config_lib, data, model, sample, train

V, H, L = 11, 8, 2


def _params(arch, scale_readout=1.0):
    params = jaxrnn.init_params(jax.random.key(0), arch, V, H, L)
    # Non-zero biases, so that a layer fed the wrong input or state cannot come out equal.
    params = jax.tree.map(lambda leaf: leaf + 0.1 * jnp.sin(jnp.arange(leaf.size).reshape(
        leaf.shape) + 1.0), params)
    return {**params, "W_hy": scale_readout * params["W_hy"]}


def _assert_states_close(got, want, what):
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{what} at {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_evaluate_is_the_mean_window_loss_with_the_state_carried(arch):
    """Dropout in the config must not reach evaluation; the state flows across the W windows."""
    config = config_lib.make_config(arch=arch, hidden_size=H, num_layers=L, seq_len=7,
                                    dropout=0.5)
    params = _params(arch)
    ids = np.asarray(jax.random.randint(jax.random.key(1), (3 * 4 * 7 + 1,), 0, V))
    streams = data.make_streams(ids, 3, 7)                             # (3, 4*7+1): W = 4
    assert data.num_windows(streams, 7) == 4
    got = float(train.make_evaluate(config)(params, streams))
    carried, fresh, state = [], [], None
    for window in range(4):
        inputs, targets = data.get_window(streams, window, 7)
        loss, state = jaxrnn.loss_fn(params, inputs, targets, state, arch=arch)
        carried.append(float(loss))
        fresh.append(float(jaxrnn.loss_fn(params, inputs, targets, arch=arch)[0]))
    np.testing.assert_allclose(got, np.mean(carried), rtol=1e-6)
    assert abs(np.mean(carried) - np.mean(fresh)) > 1e-4    # the carried state matters here


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_model_step_chain_equals_the_training_forward(arch):
    """Log-softmax of chained `model_step` logits == `forward_log_probs` at every position, and
    the chain's final state == the final state of `forward_log_probs` and of `loss_fn` (both
    backward modes): priming the sampler leaves the state training would."""
    params = _params(arch)
    ids = jax.random.randint(jax.random.key(2), (2, 9), 0, V)               # (B, T)
    log_probs, forward_state = model.forward_log_probs(params, ids, arch=arch)
    step = jax.jit(model.model_step, static_argnames="arch")
    state = model.init_state(arch, 2, H, L)
    for t in range(ids.shape[1]):
        state, logits = step(params, state, ids[:, t], arch=arch)
        np.testing.assert_allclose(jax.nn.log_softmax(logits), log_probs[:, t], rtol=1e-5,
                                   atol=1e-5, err_msg=f"log-probabilities at t={t}")
    _assert_states_close(state, forward_state, "model_step chain vs forward_log_probs")
    for backward in ("manual", "autodiff"):
        _, loss_state = jaxrnn.loss_fn(params, ids, ids, arch=arch, backward=backward)
        _assert_states_close(state, loss_state, f"model_step chain vs loss_fn ({backward})")


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_greedy_sampler_follows_the_training_forward(arch):
    """After a 5-character prime the greedy sample is, at every position, the argmax of
    `forward_log_probs` over the prime and the characters sampled so far (teacher forcing the
    sampler's own output through the training forward, one call)."""
    params = _params(arch, scale_readout=5.0)                 # clear maxima, no near-ties
    prime = jnp.asarray([3, 1, 4, 1, 5], jnp.int32)
    sampled = sample.make_sampler(arch=arch, length=8, num_samples=1, greedy=True)(
        params, prime, jax.random.key(0))[0]                                # (N,)
    text = jnp.concatenate([prime, sampled[:-1]])[None]                     # (1, P + N - 1)
    log_probs, _ = model.forward_log_probs(params, text, arch=arch)
    predicted = jnp.argmax(log_probs[0, len(prime) - 1:], axis=-1)          # (N,)
    np.testing.assert_array_equal(sampled, predicted)
    top_two = jnp.sort(log_probs[0, len(prime) - 1:], axis=-1)[:, -2:]
    assert float((top_two[:, 1] - top_two[:, 0]).min()) > 1e-3             # no near-ties


@pytest.mark.parametrize("arch", jaxrnn.ARCHS)
def test_char_losses_are_each_characters_loss_given_all_before_it(arch):
    """`make_char_losses`' entry j is -log p(character j + 1 | characters 0..j): one forward over
    the whole stream gives the same, so the windows carry the state and line up with their
    targets; `make_evaluate` is their mean."""
    config = config_lib.make_config(arch=arch, hidden_size=H, num_layers=L, seq_len=7,
                                    dropout=0.5)
    params = _params(arch)
    ids = np.asarray(jax.random.randint(jax.random.key(3), (4 * 7 + 1,), 0, V))
    streams = data.make_streams(ids, 1, 7)
    got = np.asarray(train.make_char_losses(config)(params, streams))
    log_probs, _ = model.forward_log_probs(params, streams[:, :-1], arch=arch)
    want = np.asarray(model.token_nll(log_probs, streams[:, 1:]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(train.make_evaluate(config)(params, streams)), want.mean(),
                               rtol=1e-6)


def test_segment_losses_score_each_segments_own_characters():
    """Segment [a, b) is the mean loss of the split's characters a..b-1 as targets (character 0
    is never a target); bad starts are one error naming --segments."""
    from jaxrnn import loop
    from jaxrnn.errors import ConfigError
    config = config_lib.make_config(arch="gru", hidden_size=H, num_layers=1, seq_len=5)
    params = jaxrnn.init_params(jax.random.key(0), "gru", V, H, 1)
    ids = np.asarray(jax.random.randint(jax.random.key(4), (6 * 5 + 1,), 0, V))   # 30 targets
    log_probs, _ = model.forward_log_probs(params, ids[None, :-1], arch="gru")
    per_char = np.asarray(model.token_nll(log_probs, ids[None, 1:]))[0]    # of characters 1..30
    segments = loop.segment_losses(config, params, ids, [0, 4, 17])
    assert [(start, end) for start, end, _ in segments] == [(0, 4), (4, 17), (17, 31)]
    for (start, end, loss), scored in zip(segments, (per_char[0:3], per_char[3:16],
                                                     per_char[16:30])):
        np.testing.assert_allclose(loss, scored.mean(), rtol=1e-5)
    for starts in ([4, 17], [0, 17, 17], [0, 31]):
        with pytest.raises(ConfigError, match="--segments="):
            loop.segment_losses(config, params, ids, starts)
