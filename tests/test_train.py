"""Training: optimiser factory, exact resume, manual == autodiff training curves, divergence."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxrnn import checkpoint, config as config_lib, data, loop, train
from jaxrnn.errors import CheckpointError, ConfigError, TrainingDivergedError


def _config(tmp_path, text, **overrides):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(text, encoding="utf-8")
    values = dict(data=str(corpus), hidden_size=16, batch_size=4, seq_len=8, num_steps=6,
                  steps_per_call=3, eval_every=3, log_every=3, eval_batch_size=2,
                  sample_length=10, warmup_steps=2, dropout=0.0,
                  output_dir=str(tmp_path / "run"))
    values.update(overrides)
    return config_lib.make_config(**values)


def _quiet(*args):
    pass


@pytest.mark.parametrize("optimizer,schedule", [
    (optimizer, config_lib.SCHEDULES[index % len(config_lib.SCHEDULES)])
    for index, optimizer in enumerate(config_lib.OPTIMIZERS)])
def test_optimizers_and_schedules_reduce_the_loss(tmp_path, small_text, optimizer, schedule):
    """30 compiled steps (`make_train_chunk`, no loop): the loss falls well below its start.
    Each optimiser's exact update is checked against optax in test_training_semantics."""
    config = _config(tmp_path, small_text, optimizer=optimizer, schedule=schedule,
                     learning_rate=0.3 if optimizer in ("sgd", "adagrad") else 0.01,
                     num_steps=30)
    corpus = data.load_corpus(config.data, config.split)
    streams = data.make_streams(corpus.train, config.batch_size, config.seq_len, name="train")
    chunk = train.make_train_chunk(config, data.num_windows(streams, config.seq_len), 30)
    state, metrics = chunk(train.init_train_state(config, len(corpus.vocab)), streams)
    losses = np.asarray(metrics["loss"])
    assert int(state.step) == 30 and np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[0] - 0.2, losses


def test_bf16_matmuls_train_and_log_the_option(tmp_path, small_text):
    config = _config(tmp_path, small_text, bf16_matmuls=True, learning_rate=0.01, num_steps=30,
                     steps_per_call=30, eval_every=30, log_every=30)
    summary = loop.train(config, log=_quiet)
    assert summary["test"]["loss"] < np.log(len(set(small_text)))
    saved = checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["config"]
    assert saved["bf16_matmuls"] is True


@pytest.mark.parametrize("schedule,end", [("constant", 1.0), ("cosine", 0.1),
                                          ("exponential", 0.5)])
def test_schedules_warm_up_then_decay(schedule, end):
    config = config_lib.make_config(num_steps=100, warmup_steps=10, learning_rate=1.0,
                                    schedule=schedule, final_lr_fraction=0.1, decay_rate=0.5)
    learning_rate = train.make_schedule(config)
    assert float(learning_rate(0)) == 0.0
    assert float(learning_rate(5)) == pytest.approx(0.5)
    assert float(learning_rate(10)) == pytest.approx(1.0)
    assert float(learning_rate(100)) == pytest.approx(end)


ALL_REGULARISERS = dict(variational_dropout=0.2, recurrent_dropout=0.2, weight_drop=0.2,
                        embedding_dropout=0.2, zoneout_hidden=0.1, zoneout_cell=0.1)


@pytest.mark.parametrize("arch,regularisers", [("lstm", {}), ("gru", {}), ("rnn", {}),
                                               ("lstm", ALL_REGULARISERS)],
                         ids=["lstm", "gru", "rnn", "lstm-all-regularisers"])
def test_resume_is_exact(tmp_path, small_text, arch, regularisers):
    """N steps + resume + N steps == 2N straight steps, bit for bit (dropout included, and once
    every other regulariser), across epoch boundaries: 16 streams of 64 characters give 5
    windows, 4 per epoch with random offsets, so both halves of the 10 steps cross an epoch
    (new offset, zero state), with a stream's state also reset at random (probability 0.3)
    before windows."""
    resume_config = dict(arch=arch, dropout=0.2, hidden_size=8, batch_size=16, seq_len=64,
                         num_steps=10, steps_per_call=5, eval_every=5, log_every=5,
                         random_offsets=True, state_reset_probability=0.3, **regularisers)
    straight = _config(tmp_path, small_text, **resume_config,
                       output_dir=str(tmp_path / "straight"))
    expected = loop.train(straight, log=_quiet)["train_state"]
    assert (int(expected.epoch), int(expected.window)) == (2, 2)
    split = _config(tmp_path, small_text, **resume_config, output_dir=str(tmp_path / "split"))
    loop.train(split, log=_quiet, stop_at_step=5)
    stopped = checkpoint.read_metadata(tmp_path / "split" / "checkpoint")
    assert (stopped["step"], stopped["epoch"], stopped["window"]) == (5, 1, 1)
    resumed = loop.train(config_lib.make_config(**{**split.to_dict(), "resume": True}),
                         log=_quiet)["train_state"]
    resumed, expected = (state._replace(key=jax.random.key_data(state.key))
                         for state in (resumed, expected))
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)


def test_manual_and_autodiff_train_the_same_curve(tmp_path, small_text):
    """Same seed, float32: the loss after 200 steps agrees to 1e-4 relative."""
    losses = {}
    for backward in ("manual", "autodiff"):
        config = _config(tmp_path, small_text, backward=backward, num_steps=200,
                         steps_per_call=50, eval_every=200, log_every=200,
                         output_dir=str(tmp_path / backward))
        state = train.init_train_state(config, len(set(small_text)))
        ids = data.encode(data.build_vocab(small_text), small_text)
        streams = data.make_streams(ids, config.batch_size, config.seq_len)
        chunk = train.make_train_chunk(config, data.num_windows(streams, config.seq_len), 50)
        curve = []
        for _ in range(4):
            state, metrics = chunk(state, streams)
            curve.extend(np.asarray(metrics["loss"]).tolist())
        losses[backward] = np.array(curve)
    assert losses["manual"][-1] < losses["manual"][0] - 0.5
    np.testing.assert_allclose(losses["manual"], losses["autodiff"], rtol=1e-4)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, small_text):
    config = _config(tmp_path, small_text, num_steps=9)
    loop.train(config, log=_quiet, stop_at_step=3)
    good = checkpoint.load_checkpoint(tmp_path / "run" / "checkpoint")[0]
    exploding = config_lib.make_config(**{**config.to_dict(), "resume": True,
                                          "learning_rate": 1e38, "clip_norm": 1e38})
    with pytest.raises(TrainingDivergedError, match="last good checkpoint is kept"):
        loop.train(exploding, log=_quiet)
    after = checkpoint.load_checkpoint(tmp_path / "run" / "checkpoint")[0]
    assert checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["step"] == 3
    for name in good:
        np.testing.assert_array_equal(good[name], after[name])


def test_resume_refuses_a_mismatched_checkpoint(tmp_path, small_text):
    config = _config(tmp_path, small_text)
    loop.train(config, log=_quiet, stop_at_step=3)
    for change, message in (({"hidden_size": 32}, "hidden_size=16 but flags ask for 32"),
                            ({"arch": "gru"}, "arch='lstm' but flags ask for 'gru'")):
        mismatched = config_lib.make_config(**{**config.to_dict(), "resume": True, **change})
        with pytest.raises(CheckpointError, match=message):
            loop.train(mismatched, log=_quiet)
    other_text = tmp_path / "other.txt"
    other_text.write_text(small_text + "XYZ", encoding="utf-8")
    with pytest.raises(CheckpointError, match="different vocabulary"):
        loop.train(config_lib.make_config(**{**config.to_dict(), "resume": True,
                                             "data": str(other_text)}), log=_quiet)


def test_resume_without_checkpoint_says_so(tmp_path, small_text):
    config = _config(tmp_path, small_text, resume=True)
    with pytest.raises(CheckpointError):
        loop.train(config, log=_quiet)


@pytest.mark.parametrize("overrides,message", [
    ({"hidden_size": 0}, "--hidden_size must be a positive integer"),
    ({"hidden_size": -3}, "--hidden_size must be a positive integer"),
    ({"arch": "transformer"}, "unknown arch"),
    ({"arch": "rnn", "activation": "swish"}, "unknown activation"),
    ({"optimizer": "lion"}, "unknown optimizer"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"learning_rate": 0.0}, "--learning_rate must be > 0"),
    ({"dropout": 1.0}, "--dropout must be in"),
    ({"split": (0.5, 0.5, 0.5)}, "--split must be three positive fractions"),
    ({"backward": "numeric"}, "unknown backward"),
    ({"bf16_matmuls": True, "dtype": "float64"}, "--bf16_matmuls accumulates in float32"),
])
def test_invalid_config_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.make_config(**overrides)


def test_train_both_modes_round_off_floor_moves_one_weight_by_one_ulp(tmp_path, small_text):
    """The floor run is the autodiff run from parameters one ulp apart in one weight."""
    from jaxrnn import diagnostics
    config = _config(tmp_path, small_text)
    ids = data.encode(data.build_vocab(small_text), small_text)
    streams = data.make_streams(ids, config.batch_size, config.seq_len)
    results = diagnostics.train_both_modes(config, streams, len(set(small_text)), 3,
                                           round_off_floor=True)
    assert sorted(results) == ["autodiff", "autodiff, one ulp", "manual"]
    autodiff, nudged = results["autodiff"], results["autodiff, one ulp"]
    np.testing.assert_allclose(nudged[0], autodiff[0], rtol=1e-5)   # same run, up to round-off
    # Deterministic runs: without the nudge the parameters would be bit-identical.
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(nudged[1]),
                                                        jax.tree.leaves(autodiff[1])))


def test_multi_seed_chunk_equals_separate_runs(tmp_path, small_text):
    """jit(vmap) over seeds gives each seed the run it would have had alone."""
    config = _config(tmp_path, small_text, dropout=0.1)
    ids = data.encode(data.build_vocab(small_text), small_text)
    streams = data.make_streams(ids, config.batch_size, config.seq_len)
    num_windows = data.num_windows(streams, config.seq_len)
    vocab_size = len(set(small_text))
    states, metrics = train.make_multi_seed_chunk(config, num_windows, 4)(
        train.init_train_states(config, vocab_size, [3, 4]), streams)
    assert metrics["loss"].shape == (2, 4)
    for index, seed in enumerate([3, 4]):
        alone, alone_metrics = train.make_train_chunk(config, num_windows, 4)(
            train.init_train_state(config, vocab_size, jax.random.key(seed)), streams)
        np.testing.assert_allclose(metrics["loss"][index], alone_metrics["loss"], rtol=1e-5)
        for got, want in zip(jax.tree.leaves(states.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(got[index], want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(metrics["loss"][0], metrics["loss"][1])


@pytest.mark.parametrize("clip_mode", ["global", "element"])
def test_multi_seed_chunk_lr_clip_seed_grid_equals_each_run_alone(tmp_path, small_text,
                                                                  clip_mode):
    """Per-run learning rates and clip thresholds in the vmapped program: each run of an
    lr x clip x seed grid is the run it would have been alone at those values."""
    config = _config(tmp_path, small_text, dropout=0.1, clip_mode=clip_mode)
    ids = data.encode(data.build_vocab(small_text), small_text)
    streams = data.make_streams(ids, config.batch_size, config.seq_len)
    num_windows = data.num_windows(streams, config.seq_len)
    vocab_size = len(set(small_text))
    # thresholds that clip every step (0.05, 0.002), none (inf), at two rates and two seeds
    grid = [(rate, clip, seed) for rate in (0.5 * config.learning_rate, 3 * config.learning_rate)
            for clip in (0.05 if clip_mode == "global" else 0.002, float("inf"))
            for seed in (7, 8)]
    hparams = train.run_hparams(config, [rate for rate, _, _ in grid],
                                [clip for _, clip, _ in grid])
    states, metrics = train.make_multi_seed_chunk(config, num_windows, 4)(
        train.init_train_states(config, vocab_size, [seed for _, _, seed in grid]), streams,
        hparams)
    for index, (rate, clip, seed) in enumerate(grid):
        alone_config = dataclasses.replace(config, learning_rate=rate, clip_norm=clip)
        alone, alone_metrics = train.make_train_chunk(alone_config, num_windows, 4)(
            train.init_train_state(alone_config, vocab_size, jax.random.key(seed)), streams)
        for name in ("loss", "grad_norm", "clipped"):
            np.testing.assert_allclose(metrics[name][index], alone_metrics[name], rtol=1e-5)
        assert metrics["clipped"][index].all() == (clip < 1)    # the clip fired, or never
        for got, want in zip(jax.tree.leaves(states.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(got[index], want, rtol=1e-4, atol=1e-6)
    final_losses = np.asarray(metrics["loss"][:, -1])
    assert len(set(np.round(final_losses, 6))) == len(grid)     # every run went its own way


def test_clip_gradients_modes_match_optax():
    """global = optax.clip_by_global_norm, element = optax.clip, none = unchanged; the flag says
    whether anything changed."""
    import optax
    grads = {"a": jax.numpy.asarray([3.0, -4.0]), "b": jax.numpy.asarray([[0.5, -12.0]])}
    for threshold in (2.0, 100.0):
        want, _ = optax.clip_by_global_norm(threshold).update(grads, None)
        got, clipped = train.clip_gradients(grads, "global", threshold)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-6)
        assert float(clipped) == (threshold < 13.0)                   # |g| = 13
        want, _ = optax.clip(threshold).update(grads, None)
        got, clipped = train.clip_gradients(grads, "element", threshold)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(g, w)
        assert float(clipped) == (threshold < 12.0)                   # largest entry 12
    got, clipped = train.clip_gradients(grads, "none", 1e-3)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(g, w)
    assert float(clipped) == 0.0


def test_state_reset_probability_one_starts_every_window_from_zeros(tmp_path, small_text):
    """With probability 1 the carried state never reaches the next window."""
    config = _config(tmp_path, small_text, state_reset_probability=1.0, random_offsets=False)
    ids = data.encode(data.build_vocab(small_text), small_text)
    streams = data.make_streams(ids, config.batch_size, config.seq_len)
    num_windows = data.num_windows(streams, config.seq_len)
    step = jax.jit(train.make_train_step(config, num_windows))
    state = train.init_train_state(config, len(set(small_text)))
    state, _ = step(state, streams)
    params_before = state.params
    _, metrics = step(state, streams)
    inputs, targets = data.get_window(streams, 1, config.seq_len)
    from jaxrnn import model
    expected, _ = model.loss_fn(params_before, inputs, targets, None, arch=config.arch)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    carried = _config(tmp_path, small_text, state_reset_probability=0.0, random_offsets=False)
    step = jax.jit(train.make_train_step(carried, num_windows))
    state, _ = step(train.init_train_state(carried, len(set(small_text))), streams)
    _, metrics = step(state, streams)
    assert abs(float(metrics["loss"]) - float(expected)) > 1e-4


def test_sweep_to_best_tests_each_run_at_its_own_best_evaluation(tmp_path):
    """``patience`` > 0: each vmapped run keeps its own state at its lowest validation loss and
    is tested from it; the group stops once no run improved for ``patience`` evaluations.

    The corpus over-fits on purpose: the training split repeats one random string, the held-out
    splits are fresh random text with the same letter frequencies, so the validation loss falls
    (the frequencies) and then rises (memorised continuations) -- sooner at the higher rate."""
    rng = np.random.default_rng(0)
    letters, shares = np.array(list("abcdefgh")), [0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    text = "".join(rng.choice(letters, 97, p=shares)) * 40 + "".join(
        rng.choice(letters, 440, p=shares))
    config = _config(tmp_path, text, hidden_size=32, num_steps=150, steps_per_call=5,
                     eval_every=5, log_every=5, schedule="constant", warmup_steps=0,
                     random_offsets=False)
    corpus = data.load_corpus(config.data, config.split)
    results, states = loop.sweep(config, [0], [3e-2, 1e-3], patience=2, log=_quiet)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "sweep.jsonl").read_text().splitlines()]
    for index, result in enumerate(results):
        evaluations = [record for record in records
                       if record["kind"] == "val" and record["run"] == result["run"]]
        best = min(evaluations, key=lambda record: record["loss"])
        assert result["best_step"] == best["step"] and result["val"]["loss"] == best["loss"]
        assert result["last_val"] == evaluations[-1]["loss"]
        # The returned state is that evaluation's: its step, validation and test losses.
        assert int(states.step[index]) == best["step"]
        params = jax.tree.map(lambda leaf: leaf[index], states.params)
        np.testing.assert_allclose(loop.evaluate_split(config, params, corpus.val, "val"),
                                   best["loss"], rtol=1e-5)
        np.testing.assert_allclose(loop.evaluate_split(config, params, corpus.test, "test"),
                                   result["test"]["loss"], rtol=1e-5)
    assert results[0]["best_step"] != results[1]["best_step"]    # a selection per run
    assert results[0]["steps"] < config.num_steps                 # stopped by patience
