"""The host-side training loop: data, compiled chunks of steps, logging, evaluation, checkpoints.

`train(config)` is what ``python -m experiments.train`` calls. All math is in `jaxrnn.train`
(pure, jitted); this module only moves data between the host and those functions, prints progress,
appends metrics to ``<output_dir>/metrics.jsonl`` and keeps ``<output_dir>/checkpoint`` current.
"""
import json
import pathlib
import time

import jax
import numpy as np

from jaxrnn import checkpoint, config as config_lib, data, interrupt, parallel, sample
from jaxrnn import train as train_lib
from jaxrnn.errors import CheckpointError, ConfigError, TrainingDivergedError

CHECKPOINT_SUBDIR = "checkpoint"


def _append_jsonl(path, record):
    if jax.process_index() != 0:  # one copy of the records in a multi-process run
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _format_seconds(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def checkpoint_metadata(config, vocab, train_state, best_val_loss, extra=None):
    return {"config": config.to_dict(), "vocab": vocab, "step": int(train_state.step),
            "epoch": int(train_state.epoch), "window": int(train_state.window),
            "best_val_loss": best_val_loss, **(extra or {})}


def _resume(config, vocab, directory):
    """Load the training state of ``directory``, refusing a checkpoint that does not match."""
    metadata = checkpoint.read_metadata(directory)
    saved = metadata["config"]
    checkpoint.check_compatible(saved, {name: getattr(config, name)
                                        for name in config_lib.MODEL_FIELDS})
    if metadata["vocab"] != vocab:
        raise CheckpointError(f"checkpoint {directory} was trained on a different vocabulary "
                              f"({len(metadata['vocab'])} symbols, this corpus has {len(vocab)}); "
                              "resume with the same --data or start a new --output_dir")
    if saved["batch_size"] != config.batch_size or saved["seq_len"] != config.seq_len:
        raise CheckpointError("checkpoint used --batch_size/--seq_len "
                              f"{saved['batch_size']}/{saved['seq_len']}; resume with the same "
                              "values so the data position stays valid")
    return _load_train_state(config, len(vocab), directory), metadata


def _load_train_state(config, vocab_size, directory, which="latest"):
    """The `TrainState` saved in ``directory``, rebuilt in the structure ``config`` implies."""
    template = jax.eval_shape(lambda: train_lib.init_train_state(config, vocab_size))
    train_state, _ = checkpoint.load_checkpoint(directory, like=template, which=which)
    return jax.device_put(train_state)


def load_model(directory, which="latest"):
    """``(params, config, vocab, metadata)`` from a checkpoint, for evaluation and sampling;
    ``which``: "latest" or "best" (by validation loss) of the folder ``directory``."""
    metadata = checkpoint.read_metadata(directory, which)
    config = config_lib.from_dict(metadata["config"])
    train_state = _load_train_state(config, len(metadata["vocab"]), directory, which)
    return train_state.params, config, metadata["vocab"], metadata


def eval_streams(config, ids, name):
    """``(B', W*T+1)`` streams of a held-out split: ``eval_batch_size`` streams, fewer when the
    split is too short to give each stream one window."""
    batch_size = min(config.eval_batch_size, max(1, (len(ids) - 1) // config.seq_len))
    return data.make_streams(ids, batch_size, config.seq_len, name=f"{name} split")


def evaluate_split(config, params, ids, name):
    """Mean loss (nats/char) over a split, the hidden state carried across windows."""
    return train_lib.make_evaluate(config)(params, eval_streams(config, ids, name))


def _chunk_length(config, step):
    """Steps of the next compiled call from ``step``: at most ``steps_per_call``, ending at the
    next evaluation (every ``eval_every`` steps) or at ``num_steps``."""
    boundary = min(config.num_steps, (step // config.eval_every + 1) * config.eval_every)
    return min(config.steps_per_call, boundary - step)


def _save(config, vocab, directory, train_state, best_val_loss, best=False):
    """Checkpoint ``train_state`` (every process must call this; process 0 writes) as the latest,
    a step record kept per ``config.keep``, and with ``best`` as the best; returns the time."""
    host_state = parallel.gather_to_host(train_state)
    if jax.process_index() == 0:
        checkpoint.save_checkpoint(directory, state_pytree=host_state, step=int(host_state.step),
                                   keep=config.keep, best=best, metadata=checkpoint_metadata(
                                       config, vocab, host_state, best_val_loss))
    return time.perf_counter()


def _nonfinite_steps(config, metrics, step, consecutive, checkpoint_dir):
    """The count of skipped steps in a row at the chunk's end, from ``consecutive`` at its start;
    raises `TrainingDivergedError` at a non-finite step (or, with ``skip_nonfinite``, after
    ``max_consecutive_nonfinite`` skipped steps in a row)."""
    kept = (f"the last good checkpoint is kept in {checkpoint_dir}"
            if (checkpoint_dir / checkpoint.META_FILE).exists() else "no checkpoint was saved yet")
    if not config.skip_nonfinite:
        finite = np.isfinite(metrics["loss"])
        if not finite.all():
            first_bad = int(np.argmin(finite))
            raise TrainingDivergedError(
                f"loss became {metrics['loss'][first_bad]} at step {step + first_bad + 1}; "
                f"{kept}; lower --learning_rate or --clip_norm (or pass --skip_nonfinite)")
        return 0
    for index, skipped in enumerate(metrics["skipped"]):
        consecutive = consecutive + 1 if skipped else 0
        if consecutive >= config.max_consecutive_nonfinite:
            raise TrainingDivergedError(
                f"{consecutive} steps in a row up to step {step + index + 1} had a non-finite "
                f"loss or gradient and were skipped; {kept}; lower --learning_rate or --clip_norm")
    return consecutive


def _compile(jitted, *args):
    """Ahead-of-time compile, so that compile time is reported apart from step time."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def train(config, *, log=print, stop_at_step=None):
    """Train (or resume) per ``config``; returns a summary dict with the final metrics.

    ``stop_at_step`` ends this invocation early, right after the checkpoint of that step (it must
    be a multiple of ``eval_every``), as if the run had been interrupted there; the test split is
    not evaluated then. A later call with ``config.resume`` continues exactly.

    Checkpoints are saved at each evaluation and every ``checkpoint_every_seconds`` (at the end of
    a chunk). A first SIGINT/SIGTERM lets the running chunk finish, saves a checkpoint at that
    step and raises `jaxrnn.interrupt.Interrupted`; a second one ends the process at once.
    """
    with interrupt.deferred_signals() as received:
        return _train(config, log, stop_at_step, received)


def _train(config, log, stop_at_step, received):
    corpus = data.load_corpus(config.data, config.split)
    streams = data.make_streams(corpus.train, config.batch_size, config.seq_len,
                                name="training split")
    num_windows = data.num_windows(streams, config.seq_len)
    output_dir = pathlib.Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output_dir / CHECKPOINT_SUBDIR
    metrics_path = output_dir / "metrics.jsonl"
    best_val_loss = None
    if config.resume:
        train_state, metadata = _resume(config, corpus.vocab, checkpoint_dir)
        best_val_loss = metadata.get("best_val_loss")
        log(f"resumed from {checkpoint_dir} at step {int(train_state.step)}")
    else:
        train_state = train_lib.init_train_state(config, len(corpus.vocab))
    val_streams = eval_streams(config, corpus.val, "validation")
    evaluate = train_lib.make_evaluate(config)
    streams = jax.device_put(streams)
    if config.data_parallel:
        mesh = parallel.data_mesh()
        train_state = parallel.shard_train_state(train_state, mesh)  # checks B splits evenly
        streams = parallel.shard_batch(streams, mesh)
        log(f"data parallel over {mesh.devices.size} devices: "
            f"{config.batch_size // mesh.devices.size} streams each")
    num_params = sum(leaf.size for leaf in jax.tree.leaves(train_state.params))
    log(f"{config.arch} H={config.hidden_size} L={config.num_layers} ({num_params:,} params), "
        f"vocab {len(corpus.vocab)}, train {len(corpus.train):,} chars = "
        f"{train_lib.epoch_windows(config, num_windows)} windows of "
        f"{config.batch_size}x{config.seq_len} per epoch, backward={config.backward}")

    chunks, step, start = {}, int(train_state.step), time.perf_counter()
    train_seconds, steps_timed, pending, last_save, consecutive = 0.0, 0, [], start, 0
    schedule = train_lib.make_schedule(config)
    while step < config.num_steps:
        length = _chunk_length(config, step)
        if length not in chunks:
            chunks[length], seconds = _compile(
                train_lib.make_train_chunk(config, num_windows, length), train_state, streams)
            log(f"compiled a {length}-step chunk in {seconds:.1f}s")
        tick = time.perf_counter()
        new_state, metrics = chunks[length](train_state, streams)
        metrics = jax.device_get(metrics)
        train_seconds += time.perf_counter() - tick
        steps_timed += length
        consecutive = _nonfinite_steps(config, metrics, step, consecutive, checkpoint_dir)
        train_state, step = new_state, step + length
        pending.append(metrics)
        if step % config.log_every == 0 or step == config.num_steps:
            merged = {name: np.concatenate([m[name] for m in pending]) for name in pending[0]}
            pending = []
            kept = ~merged["skipped"].astype(bool) if "skipped" in merged else slice(None)
            merged.update(loss=merged["loss"][kept], grad_norm=merged["grad_norm"][kept])
            chars_per_second = steps_timed * config.batch_size * config.seq_len / train_seconds
            eta = train_seconds / steps_timed * (config.num_steps - step)
            record = {"kind": "train", "step": step, "epoch": int(train_state.epoch),
                      "loss": float(merged["loss"].mean()),
                      "grad_norm": float(merged["grad_norm"].mean()),
                      "clip_fraction": float(merged["clipped"].mean()),
                      "learning_rate": float(schedule(step)), "chars_per_second": chars_per_second,
                      "elapsed_seconds": time.perf_counter() - start}
            if config.skip_nonfinite:
                record["skipped_steps"] = int(merged["skipped"].sum())
            _append_jsonl(metrics_path, record)
            log(f"step {step}/{config.num_steps} epoch {record['epoch']} "
                f"loss {record['loss']:.4f} |g| {record['grad_norm']:.2f} "
                f"clipped {100 * record['clip_fraction']:.0f}% lr {record['learning_rate']:.2e} "
                f"{chars_per_second:,.0f} chars/s elapsed {_format_seconds(record['elapsed_seconds'])}"
                f" eta {_format_seconds(eta)}"
                + (f" skipped {record['skipped_steps']}" if config.skip_nonfinite else ""))
        saved = False
        if step % config.eval_every == 0 or step == config.num_steps:
            report = train_lib.loss_report(evaluate(train_state.params, val_streams))
            improved = best_val_loss is None or report["loss"] < best_val_loss
            best_val_loss = report["loss"] if improved else best_val_loss
            _append_jsonl(metrics_path, {"kind": "val", "step": step, **report})
            log(f"  val loss {report['loss']:.4f} nats/char = {report['bpc']:.3f} bpc, "
                f"perplexity {report['perplexity']:.2f}")
            text = sample.sample_text(train_state.params, arch=config.arch, vocab=corpus.vocab,
                                      key=jax.random.key(step), length=config.sample_length,
                                      temperature=config.sample_temperature,
                                      **train_lib.cell_options(config))[0]
            log("  sample: " + text.replace("\n", "\n          "))
            last_save = _save(config, corpus.vocab, checkpoint_dir, train_state, best_val_loss,
                              best=improved)
            saved = True
            if step == stop_at_step:
                return {"train_state": train_state, "best_val_loss": best_val_loss,
                        "checkpoint": str(checkpoint_dir)}
        # Every process takes the same decision (a save is collective with several processes).
        signum, due = parallel.process_max([received[0] if received else 0,
                                            0 < config.checkpoint_every_seconds
                                            <= time.perf_counter() - last_save])
        if (signum or due) and not saved:
            last_save = _save(config, corpus.vocab, checkpoint_dir, train_state, best_val_loss)
        if signum:
            raise interrupt.Interrupted(
                int(signum), f"stopped by {interrupt.signal_name(signum)} at step {step} of "
                f"{config.num_steps}; checkpoint saved in {checkpoint_dir}")

    test = train_lib.loss_report(evaluate(train_state.params,
                                          eval_streams(config, corpus.test, "test")))
    _append_jsonl(metrics_path, {"kind": "test", "step": step, **test})
    total = time.perf_counter() - start
    log(f"test loss {test['loss']:.4f} nats/char = {test['bpc']:.3f} bpc, perplexity "
        f"{test['perplexity']:.2f}; {_format_seconds(total)} in all; checkpoint: {checkpoint_dir}")
    return {"test": test, "best_val_loss": best_val_loss, "seconds": total,
            "checkpoint": str(checkpoint_dir), "train_state": train_state,
            "chars_per_second": steps_timed * config.batch_size * config.seq_len
            / max(train_seconds, 1e-9)}


def sweep(config, seeds, learning_rates=None, *, log=print):
    """Train every (learning rate, seed) pair of the grid as one ``jit(vmap)`` program.

    All runs share ``config`` except the seed (initialisation, dropout, state resets) and the peak
    learning rate (a per-run multiplier of the schedule, `jaxrnn.train.make_multi_seed_chunk`),
    and read the same windows. Validation loss of every run is reported every ``eval_every``
    steps and the test loss at the end; a run whose loss stops being finite is reported as
    diverged while the others go on. Records go to ``<output_dir>/sweep.jsonl``; no checkpoints.

    Returns a list with one dict per run: seed, learning_rate, train_loss (mean of the last
    ``log_every`` steps), val and test (`jaxrnn.train.loss_report`), diverged_at_step (or None).

    A first SIGINT/SIGTERM lets the running chunk finish and raises
    `jaxrnn.interrupt.Interrupted` (not resumable: there are no checkpoints).
    """
    with interrupt.deferred_signals() as received:
        return _sweep(config, seeds, learning_rates, log, received)


def _sweep(config, seeds, learning_rates, log, received):
    if config.data_parallel:
        raise ConfigError("--data_parallel is not supported by the sweep; drop it (the runs of a "
                          "sweep share the devices as one vmapped program)")
    if not seeds:
        raise ConfigError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2")
    if any(rate <= 0 for rate in learning_rates or ()):
        raise ConfigError("--learning_rates must all be > 0, got "
                          + ",".join(f"{rate:g}" for rate in learning_rates))
    learning_rates = [config.learning_rate] if not learning_rates else list(learning_rates)
    runs = [(seed, rate) for rate in learning_rates for seed in seeds]
    corpus = data.load_corpus(config.data, config.split)
    streams = jax.device_put(data.make_streams(corpus.train, config.batch_size, config.seq_len,
                                               name="training split"))
    num_windows = data.num_windows(streams, config.seq_len)
    output_dir = pathlib.Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records_path = output_dir / "sweep.jsonl"
    train_states = train_lib.init_train_states(config, len(corpus.vocab),
                                               [seed for seed, _ in runs])
    scales = np.asarray([rate / config.learning_rate for _, rate in runs],
                        np.dtype(config.dtype))
    evaluate = jax.jit(jax.vmap(train_lib.make_evaluate(config), in_axes=(0, None)))
    val_streams = eval_streams(config, corpus.val, "validation")
    log(f"sweep of {len(runs)} runs ({len(learning_rates)} learning rates x {len(seeds)} seeds) "
        f"as one program: {config.arch} H={config.hidden_size} L={config.num_layers}, "
        f"{config.num_steps} steps of {config.batch_size}x{config.seq_len}")

    chunks, step, start, train_seconds = {}, 0, time.perf_counter(), 0.0
    diverged_at = [None] * len(runs)
    recent = np.zeros((len(runs), 0))                      # (S, up to log_every) last losses
    while step < config.num_steps:
        length = _chunk_length(config, step)
        if length not in chunks:
            chunks[length], seconds = _compile(
                train_lib.make_multi_seed_chunk(config, num_windows, length), train_states,
                streams, scales)
            log(f"compiled a {length}-step chunk of {len(runs)} runs in {seconds:.1f}s")
        tick = time.perf_counter()
        train_states, metrics = chunks[length](train_states, streams, scales)
        losses = np.asarray(jax.device_get(metrics["loss"]))             # (S, length)
        train_seconds += time.perf_counter() - tick
        for index, run_losses in enumerate(losses):
            bad = ~np.isfinite(run_losses)
            if diverged_at[index] is None and bad.any():
                diverged_at[index] = step + int(np.argmax(bad)) + 1
                log(f"  run seed={runs[index][0]} lr={runs[index][1]:g} diverged at step "
                    f"{diverged_at[index]} (loss {run_losses[bad][0]}); the others go on")
        step += length
        recent = np.concatenate([recent, losses], axis=1)[:, -config.log_every:]
        if step % config.log_every == 0 or step == config.num_steps:
            mean = recent.mean(axis=1)
            finite = mean[np.isfinite(mean)]
            chars = step * len(runs) * config.batch_size * config.seq_len
            log(f"step {step}/{config.num_steps} train loss over runs "
                + (f"{finite.min():.4f}..{finite.max():.4f}" if finite.size else "-")
                + f" {chars / train_seconds:,.0f} chars/s (all runs) elapsed "
                f"{_format_seconds(time.perf_counter() - start)}")
        if step % config.eval_every == 0 or step == config.num_steps:
            val = np.asarray(evaluate(train_states.params, val_streams))
            for (seed, rate), loss in zip(runs, val):
                _append_jsonl(records_path, {"kind": "val", "step": step, "seed": seed,
                                             "learning_rate": rate,
                                             **train_lib.loss_report(loss)})
            log(f"  val loss over runs {np.nanmin(val):.4f}..{np.nanmax(val):.4f} nats/char")
        if received:
            raise interrupt.Interrupted(
                received[0], f"sweep stopped by {interrupt.signal_name(received[0])} at step "
                f"{step} of {config.num_steps}; a sweep keeps no checkpoints (its records so far "
                f"are in {records_path}): run it again to start over", resumable=False)

    test = np.asarray(evaluate(train_states.params, eval_streams(config, corpus.test, "test")))
    results = []
    final_train = recent.mean(axis=1)
    for index, (seed, rate) in enumerate(runs):
        result = {"seed": seed, "learning_rate": rate, "train_loss": float(final_train[index]),
                  "val": train_lib.loss_report(val[index]),
                  "test": train_lib.loss_report(test[index]),
                  "diverged_at_step": diverged_at[index]}
        _append_jsonl(records_path, {"kind": "final", "step": step, **result})
        results.append(result)
    log(f"{len(runs)} runs in {_format_seconds(time.perf_counter() - start)}; records: "
        f"{records_path}")
    return results
