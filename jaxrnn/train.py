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

import jax
import jax.numpy as jnp
import optax

from jaxrnn import data, model
from jaxrnn.errors import ConfigError
from jaxrnn.types import TrainState

LN2 = math.log(2.0)


def cell_options(config):
    """The cell keyword arguments of ``config``: the activation (arch=rnn only) and the matmul
    dtype ("bfloat16" with --bf16_matmuls, else None)."""
    return {"activation": config.activation if config.arch == "rnn" else None,
            "matmul_dtype": "bfloat16" if config.bf16_matmuls else None}


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
    """``clip_by_global_norm(clip_norm)`` followed by the chosen optimiser on the schedule.

    Clipping the global gradient norm is the standard remedy for exploding RNN gradients
    (Pascanu et al. 2013)."""
    schedule = make_schedule(config)
    optimizers = {
        "adam": lambda: optax.adam(schedule),
        "adamw": lambda: optax.adamw(schedule, weight_decay=config.weight_decay),
        "rmsprop": lambda: optax.rmsprop(schedule),
        "adagrad": lambda: optax.adagrad(schedule),
        "sgd": lambda: optax.sgd(schedule, momentum=config.momentum),
    }
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizers[config.optimizer]())


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------
def zero_model_state(config, batch_size):
    return model.init_state(config.arch, batch_size, config.hidden_size, config.num_layers,
                            dtype_of(config))


def init_train_state(config, vocab_size, key=None):
    """Fresh `TrainState` from ``config.seed`` (or ``key``)."""
    key = jax.random.key(config.seed) if key is None else key
    init_key, dropout_key = jax.random.split(key)
    params = model.init_params(init_key, config.arch, vocab_size, config.hidden_size,
                               config.num_layers, dtype=dtype_of(config),
                               recurrent_init=config.recurrent_init, **cell_options(config))
    counters = [jnp.zeros((), jnp.int32) for _ in range(3)]  # distinct buffers: they are donated
    return TrainState(params, make_optimizer(config).init(params),
                      zero_model_state(config, config.batch_size), *counters, dropout_key)


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
    """``train_step(train_state, streams (B, W*T+1), learning_rate_scale=None) -> (train_state,
    metrics)``, pure; ``learning_rate_scale`` (a scalar, may be traced) multiplies the learning
    rate of the schedule, so that runs at different rates can share one compiled program.

    metrics: loss (nats/char, before the update), grad_norm (before clipping), clipped (1.0 when
    the global-norm clip fired).
    """
    optimizer = make_optimizer(config)
    windows_per_epoch = epoch_windows(config, num_windows)
    offset_key = jax.random.key(config.seed + 1)
    value_and_grad = jax.value_and_grad(
        functools.partial(model.loss_fn, arch=config.arch, backward=config.backward,
                          dropout=config.dropout, **cell_options(config)), has_aux=True)

    def train_step(train_state, streams, learning_rate_scale=None):
        params, opt_state, model_state, step, window, epoch, key = train_state
        key, dropout_key = jax.random.split(key)
        # Zero the carried state at each epoch start and, with state_reset_probability, that of
        # each stream before a window, so the model also learns to start from zeros mid-text.
        reset = window == 0
        if config.state_reset_probability > 0:
            reset = reset | jax.random.bernoulli(jax.random.fold_in(dropout_key, 1),
                                                 config.state_reset_probability,
                                                 (config.batch_size, 1))
        model_state = jax.tree.map(lambda carry: jnp.where(reset, 0, carry), model_state)
        offset = 0
        if config.random_offsets:
            offset = jax.random.randint(jax.random.fold_in(offset_key, epoch), (), 0,
                                        config.seq_len)
        inputs, targets = data.get_window_jax(streams, window, config.seq_len, offset)
        (loss, final_state), grads = value_and_grad(params, inputs, targets, model_state,
                                                    dropout_key=dropout_key)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if learning_rate_scale is not None:
            # Every optimiser here ends by multiplying its update by the schedule's learning
            # rate, so scaling the update is running it at learning_rate_scale times that rate.
            updates = jax.tree.map(lambda update: update * learning_rate_scale, updates)
        params = optax.apply_updates(params, updates)
        next_window = (window + 1) % windows_per_epoch
        epoch = epoch + (next_window == 0).astype(jnp.int32)
        metrics = {"loss": loss, "grad_norm": grad_norm,
                   "clipped": (grad_norm > config.clip_norm).astype(loss.dtype)}
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
                               next_window, epoch, key)
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
    leading axis of the stacked train states (one compiled program; every run reads the same
    windows). ``chunk(train_states, streams, learning_rate_scales=None)``: optional (S,)
    multipliers of the learning rate, one per run, for a learning-rate sweep in the same program.
    Returns metrics of shape (S, length)."""
    train_step = make_train_step(config, num_windows)

    def one_run(train_state, streams, learning_rate_scale):
        return jax.lax.scan(lambda state, _: train_step(state, streams, learning_rate_scale),
                            train_state, None, length=length)

    def chunk(train_states, streams, learning_rate_scales=None):
        return jax.vmap(one_run, in_axes=(0, None, None if learning_rate_scales is None else 0))(
            train_states, streams, learning_rate_scales)

    return jax.jit(chunk, donate_argnums=0)


def make_evaluate(config):
    """Jitted ``evaluate(params, streams (B, W*T+1)) -> mean loss in nats/char`` over all W
    windows, carrying the hidden state across windows (as in training, without dropout)."""
    def evaluate(params, streams):
        batch_size = streams.shape[0]
        count = data.num_windows(streams, config.seq_len)

        def window_loss(state, index):
            inputs, targets = data.get_window_jax(streams, index, config.seq_len)
            log_probs, state = model.forward_log_probs(params, inputs, state, arch=config.arch,
                                                       **cell_options(config))
            nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1).mean()
            return state, nll

        _, losses = jax.lax.scan(window_loss, zero_model_state(config, batch_size),
                                 jnp.arange(count))
        return losses.mean()

    return jax.jit(evaluate)


def loss_report(loss):
    """nats/char -> {"loss": nats, "bpc": bits per character, "perplexity": exp(loss)}."""
    loss = float(loss)
    return {"loss": loss, "bpc": loss / LN2, "perplexity": math.exp(min(loss, 700.0))}
