"""Pure training pieces: optimiser factory, the train step, many steps per compiled call, evaluation.

Everything here is a factory returning pure functions of explicit state, so that

* ``train_chunk = make_train_chunk(config, num_windows, length)`` runs ``length`` optimiser steps
  inside one ``jit``-compiled ``lax.scan`` (Python dispatch is paid once per chunk, not per step);
* many seeds are one program: `make_multi_seed_chunk` is ``jit(vmap(chunk))`` over stacked
  `TrainState` s from `init_train_states`;
* host work (logging, checkpoints, sampling) stays outside, in `jaxrnn.loop`.

Truncated BPTT: the training text is cut into B parallel streams (`jaxrnn.data.make_streams`);
step k reads window ``k mod W`` of every stream, the hidden state is carried from one window to the
next with its gradient stopped, and it is reset to zeros at the start of each epoch. With
``random_offsets`` (the default) each epoch shifts all windows by a random 0..T-1 characters
(drawn from the seed and the epoch, so a resumed run draws the same), so that the windows and the
zero state of the epoch start fall at new places in the text each time. Without it, a model only
ever starts from a zero state at the same B places, and measured on Tiny Shakespeare it can lock
into a degenerate state when started from zero elsewhere (see BUILD_NOTES.md).
"""
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jaxrnn import data, model, regularisers
from jaxrnn.errors import ConfigError
from jaxrnn.types import TrainState

LN2 = math.log(2.0)

# Every random stream of a run is derived from its root key ``jax.random.key(seed)`` with
# ``fold_in`` and one of these constants, so no two streams (and no two seeds) share keys:
#   init:    the parameters' initialisation
#   step:    per optimiser step k, fold_in(fold_in(root, STREAM_STEP), k), split by name into
#            dropout masks (STEP_DROPOUT), per-stream state resets (STEP_STATE_RESET) and the
#            masks of each other regulariser (STEP_VARIATIONAL_DROPOUT ... STEP_ZONEOUT_CELL,
#            `jaxrnn.regularisers`; new streams, so the draws of runs without them are unchanged)
#   offsets: per epoch e, fold_in(fold_in(root, STREAM_OFFSETS), e), the random window offset
#   samples: per evaluation at step k, fold_in(fold_in(root, STREAM_SAMPLES), k)
STREAM_INIT, STREAM_STEP, STREAM_OFFSETS, STREAM_SAMPLES = 0, 1, 2, 3
STEP_DROPOUT, STEP_STATE_RESET = 0, 1
STEP_VARIATIONAL_DROPOUT, STEP_RECURRENT_DROPOUT, STEP_WEIGHT_DROP = 2, 3, 4
STEP_EMBEDDING_DROPOUT, STEP_ZONEOUT_HIDDEN, STEP_ZONEOUT_CELL = 5, 6, 7
# The step stream of each regulariser's masks, by its name (`jaxrnn.regularisers.NAMES`).
STEP_MASK_STREAMS = {"variational_dropout": STEP_VARIATIONAL_DROPOUT,
                     "recurrent_dropout": STEP_RECURRENT_DROPOUT,
                     "weight_drop": STEP_WEIGHT_DROP,
                     "embedding_dropout": STEP_EMBEDDING_DROPOUT,
                     "zoneout_hidden": STEP_ZONEOUT_HIDDEN,
                     "zoneout_cell": STEP_ZONEOUT_CELL}


def stream_key(root_key, stream, index=None):
    """The key of ``stream`` (a STREAM_* constant), optionally of its ``index``-th draw."""
    key = jax.random.fold_in(root_key, stream)
    return key if index is None else jax.random.fold_in(key, index)


def regulariser_rates(config):
    """The `jaxrnn.regularisers.Rates` of ``config`` (its fields of the same names)."""
    return config.rates


def draw_window_masks(config, step_key, vocab_size):
    """The regularisers' `WindowMasks` of the step whose key is ``step_key`` (each from its
    STEP_* stream), or None when they are all off; drawn inside the compiled step, so each run
    of a vmapped group draws its own from its own key."""
    rates = regulariser_rates(config)
    if not any(rates):
        return None
    keys = {name: jax.random.fold_in(step_key, stream)
            for name, stream in STEP_MASK_STREAMS.items() if getattr(rates, name)}
    return regularisers.draw_masks(
        rates, keys, num_layers=config.num_layers, seq_len=config.seq_len,
        batch_size=config.batch_size, vocab_size=vocab_size, hidden_size=config.hidden_size,
        num_gates=config.cell.num_gates, dtype=dtype_of(config))


def dtype_of(config):
    return jnp.float64 if config.dtype == "float64" else jnp.float32


# ---------------------------------------------------------------------------------------------
# Optimiser
# ---------------------------------------------------------------------------------------------
def make_schedule(config):
    """Learning rate as a function of the step: optional linear warm-up, then
    constant | cosine decay to ``final_lr_fraction * peak`` | exponential decay by ``decay_rate``
    over the remaining steps."""
    peak = config.learning_rate
    decay_steps = max(config.num_steps - config.warmup_steps, 1)
    if config.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_lr_fraction)
    else:
        main = optax.exponential_decay(peak, decay_steps, config.decay_rate)
    if config.warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
    return optax.join_schedules([warmup, main], [config.warmup_steps])


def make_optimizer(config):
    """The chosen optimiser on the schedule, without clipping: `clip_gradients` runs before it
    inside the train step, so that the clip threshold can differ per run of a vmapped sweep."""
    schedule = make_schedule(config)
    optimizers = {
        "adam": lambda: optax.adam(schedule),
        "adamw": lambda: optax.adamw(schedule, weight_decay=config.weight_decay),
        "rmsprop": lambda: optax.rmsprop(schedule),
        "adagrad": lambda: optax.adagrad(schedule),
        "sgd": lambda: optax.sgd(schedule, momentum=config.momentum),
    }
    return optimizers[config.optimizer]()


def clip_gradients(grads, clip_mode, threshold):
    """Clip a gradient pytree; returns ``(clipped grads, clipped)`` with ``clipped`` 1.0 when the
    clip changed anything, else 0.0. ``threshold`` is a scalar and may be traced.

    global:  g * min(1, c / |g|), |g| the global L2 norm over all leaves (Pascanu et al. 2013;
             the same formula as ``optax.clip_by_global_norm``)
    element: every entry clipped to [-c, c] (as in Karpathy's min-char-rnn)
    none:    g unchanged
    """
    if clip_mode == "none":
        return grads, jnp.zeros((), jax.tree.leaves(grads)[0].dtype)
    if clip_mode == "element":
        largest = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(grads)]))
        return (jax.tree.map(lambda leaf: jnp.clip(leaf, -threshold, threshold), grads),
                (largest > threshold).astype(largest.dtype))
    norm = optax.tree.norm(grads)
    clipped = norm >= threshold
    grads = jax.tree.map(lambda leaf: jnp.where(clipped, leaf / norm * threshold, leaf), grads)
    return grads, clipped.astype(norm.dtype)


class RunHparams(NamedTuple):
    """Per-run values of a vmapped sweep (each () or (S,) for S runs): a multiplier of the
    schedule's learning rate, and the clip threshold (`clip_gradients`)."""

    learning_rate_scale: jax.Array
    clip_norm: jax.Array


def run_hparams(config, learning_rates, clip_norms, dtype=None):
    """`RunHparams` with (S,) arrays for runs at ``learning_rates`` and ``clip_norms`` (S each)."""
    dtype = dtype or dtype_of(config)
    return RunHparams(jnp.asarray([rate / config.learning_rate for rate in learning_rates], dtype),
                      jnp.asarray(clip_norms, dtype))


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------
def zero_model_state(config, batch_size):
    return model.init_state(config.cell, batch_size, config.hidden_size, config.num_layers,
                            dtype_of(config))


def init_train_state(config, vocab_size, key=None):
    """Fresh `TrainState` from the root key ``jax.random.key(config.seed)`` (or ``key``); the
    state keeps the root key, from which every later random stream is folded (STREAM_*)."""
    key = jax.random.key(config.seed) if key is None else key
    model_state = zero_model_state(config, config.batch_size)
    params = model.init_params(stream_key(key, STREAM_INIT), config.cell, vocab_size,
                               config.hidden_size, config.num_layers, dtype=dtype_of(config),
                               recurrent_init=config.recurrent_init)
    counters = [jnp.zeros((), jnp.int32) for _ in range(3)]  # distinct buffers: they are donated
    return TrainState(params, make_optimizer(config).init(params), model_state, *counters, key)


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def epoch_windows(config, num_windows):
    """Windows per epoch: all W of the streams, or W - 1 with random offsets (the shifted
    windows need one window of slack at the end of each stream)."""
    if not config.random_offsets:
        return num_windows
    if num_windows < 2:
        raise ConfigError(f"--random_offsets needs at least 2 windows per stream, the text gives "
                          f"{num_windows}; pass --norandom_offsets or lower --batch_size/--seq_len")
    return num_windows - 1


def make_train_step(config, num_windows):
    """``train_step(train_state, streams (B, W*T+1), hparams=None) -> (train_state, metrics)``,
    pure. Dropout's and the other regularisers' masks (`draw_window_masks`) are drawn inside, from
    the run's key and the step. ``hparams`` (a `RunHparams` of scalars, may be traced) overrides the learning rate (as a
    multiple of the schedule's) and the clip threshold, so that runs at different values can share
    one compiled program; None runs ``config``'s values.

    metrics: loss (nats/char, before the update), grad_norm (global L2 norm before clipping),
    clipped (1.0 when the clip changed the gradient).
    """
    optimizer = make_optimizer(config)
    windows_per_epoch = epoch_windows(config, num_windows)
    value_and_grad = jax.value_and_grad(
        functools.partial(model.loss_fn, arch=config.cell, backward=config.backward,
                          dropout=config.dropout), has_aux=True)

    def train_step(train_state, streams, hparams: Optional[RunHparams] = None):
        params, opt_state, model_state, step, window, epoch, root_key = train_state
        step_key = stream_key(root_key, STREAM_STEP, step)
        # Zero the carried state at each epoch start and, with state_reset_probability, that of
        # each stream before a window, so the model also learns to start from zeros mid-text.
        reset = window == 0
        if config.state_reset_probability > 0:
            reset = reset | jax.random.bernoulli(jax.random.fold_in(step_key, STEP_STATE_RESET),
                                                 config.state_reset_probability,
                                                 (config.batch_size, 1))
        model_state = jax.tree.map(lambda carry: jnp.where(reset, 0, carry), model_state)
        offset = 0
        if config.random_offsets:
            offset = jax.random.randint(stream_key(root_key, STREAM_OFFSETS, epoch), (), 0,
                                        config.seq_len)
        inputs, targets = data.get_window_jax(streams, window, config.seq_len, offset)
        (loss, final_state), grads = value_and_grad(
            params, inputs, targets, model_state,
            dropout_key=jax.random.fold_in(step_key, STEP_DROPOUT),
            masks=draw_window_masks(config, step_key, params["W_hy"].shape[1]))
        grad_norm = optax.tree.norm(grads)
        clip_norm = config.clip_norm if hparams is None else hparams.clip_norm
        grads, clipped = clip_gradients(grads, config.clip_mode, clip_norm)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if hparams is not None:
            # Every optimiser here ends by multiplying its update by the schedule's learning
            # rate, so scaling the update is running it at learning_rate_scale times that rate.
            updates = jax.tree.map(lambda update: update * hparams.learning_rate_scale, updates)
        params = optax.apply_updates(params, updates)
        next_window = (window + 1) % windows_per_epoch
        epoch = epoch + (next_window == 0).astype(jnp.int32)
        metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped.astype(loss.dtype)}
        if config.skip_nonfinite:
            # A non-finite loss or gradient changes neither parameters nor optimiser state; the
            # step's streams restart from zeros (their carried state may be what overflowed).
            ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            params, opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                             (params, opt_state),
                                             (train_state.params, train_state.opt_state))
            final_state = jax.tree.map(lambda carry: jnp.where(ok, carry, 0), final_state)
            metrics["skipped"] = (~ok).astype(loss.dtype)
        new_state = TrainState(params, opt_state, jax.lax.stop_gradient(final_state), step + 1,
                               next_window, epoch, root_key)
        return new_state, metrics

    return train_step


def make_train_chunk(config, num_windows, length):
    """Jitted ``train_chunk(train_state, streams) -> (train_state, metrics stacked over length)``:
    ``length`` train steps in one ``lax.scan``. The input state's buffers are donated."""
    train_step = make_train_step(config, num_windows)

    def train_chunk(train_state, streams):
        return jax.lax.scan(lambda state, _: train_step(state, streams), train_state, None,
                            length=length)

    return jax.jit(train_chunk, donate_argnums=0)


def init_train_states(config, vocab_size, seeds):
    """A `TrainState` per seed, stacked on a leading axis S (for `make_multi_seed_chunk`)."""
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    return jax.vmap(lambda key: init_train_state(config, vocab_size, key))(keys)


def make_multi_seed_chunk(config, num_windows, length):
    """Like `make_train_chunk`, for S independent runs at once: ``jit(vmap(chunk))`` over the
    leading axis of the stacked train states (one compiled program; each run draws its own
    windows' offsets, dropout and resets from its own root key).
    ``chunk(train_states, streams, hparams=None)``: an optional `RunHparams` of (S,) arrays (see
    `run_hparams`), one learning rate and clip threshold per run, for lr x clip x seed grids in
    the same program. Returns metrics of shape (S, length)."""
    train_step = make_train_step(config, num_windows)

    def one_run(train_state, streams, hparams):
        return jax.lax.scan(lambda state, _: train_step(state, streams, hparams),
                            train_state, None, length=length)

    def chunk(train_states, streams, hparams=None):
        if jax.tree.leaves(train_states)[0].shape[0] == 1:     # one run: no batched GEMMs
            first = functools.partial(jax.tree.map, lambda leaf: leaf[0])
            state, metrics = one_run(first(train_states), streams,
                                     None if hparams is None else first(hparams))
            return jax.tree.map(lambda leaf: leaf[None], (state, metrics))
        return jax.vmap(one_run, in_axes=(0, None, None if hparams is None else 0))(
            train_states, streams, hparams)

    return jax.jit(chunk, donate_argnums=0)


def make_char_losses(config):
    """``char_losses(params, streams (B, W*T+1)) -> (B, W*T)``: the loss in nats of every target
    character of the W windows, the hidden state carried across windows (as in training, without
    dropout or any other mask; zoneout as its expectation, through
    `jaxrnn.config.Config.cell`): entry ``[b, j]`` is
    ``-log p(streams[b, j+1] | streams[b, :j+1])``."""
    cell = config.cell

    def char_losses(params, streams):
        batch_size = streams.shape[0]
        count = data.num_windows(streams, config.seq_len)

        def window_losses(state, index):
            inputs, targets = data.get_window_jax(streams, index, config.seq_len)
            log_probs, state = model.forward_log_probs(params, inputs, state, arch=cell)
            return state, model.token_nll(log_probs, targets)                 # (B, T)

        _, losses = jax.lax.scan(window_losses, zero_model_state(config, batch_size),
                                 jnp.arange(count))                            # (W, B, T)
        return jnp.swapaxes(losses, 0, 1).reshape(batch_size, count * config.seq_len)

    return char_losses


def make_evaluate(config):
    """Jitted ``evaluate(params, streams (B, W*T+1)) -> mean loss in nats/char`` over all W
    windows: the mean of `make_char_losses`."""
    char_losses = make_char_losses(config)
    return jax.jit(lambda params, streams: char_losses(params, streams).mean())


def loss_report(loss):
    """nats/char -> {"loss": nats, "bpc": bits per character, "perplexity": exp(loss)}."""
    loss = float(loss)
    return {"loss": loss, "bpc": loss / LN2,
            "perplexity": math.exp(loss) if loss < 700.0 else math.inf}


def format_perplexity(value):
    """Two decimals, or three significant digits once it is large (never a 300-digit number)."""
    return f"{value:.2f}" if value < 1e6 else f"{value:.3g}"
