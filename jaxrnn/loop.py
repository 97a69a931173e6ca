"""The host-side training loop: data, compiled chunks of steps, logging, evaluation, checkpoints.

`train(config)` (one run: ``python -m experiments.train``) and `sweep` (a vmapped group of runs:
``experiments.sweep``) share one runner: `_opened` (corpus, memory, the output folder's lock and
checks, deferred signals) and `_run_chunks` (the chunks, the log and evaluation steps,
interrupts); each hands it the records it writes as small functions, and a single run adds its
checkpoints and resume (`jaxrnn.runstate`). All math is in `jaxrnn.train` (pure, jitted); this
module only moves data between the host and those functions, prints progress, appends metrics to
``<output_dir>/metrics.jsonl`` and keeps ``<output_dir>/checkpoint`` current.
"""
import contextlib
import functools
import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import checkpoint, data, files, interrupt, parallel, runchecks, runstate, sample
from jaxrnn import train as train_lib
from jaxrnn.errors import ConfigError, FolderBusyError, JaxrnnError, StorageError

CHECKPOINT_SUBDIR = "checkpoint"
SPIKE_NATS = 0.5   # a step whose loss exceeds the previous step's by more is a loss spike
TIMED_CHUNKS = 3     # chunks timed by seconds_per_step (a VM's step time varies by ~20%)
DIVERGED_NATS = 1.0  # a sweep run ending this far above the uniform model's ln V has diverged


def _finite_or_none(value):
    if isinstance(value, dict):
        return {name: _finite_or_none(item) for name, item in value.items()}
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _append_jsonl(path, record, checkpoint_dir=None):
    """One JSON line, whole or not at all (`jaxrnn.files.append_line`); a non-finite number (a
    diverged run's loss) is written as null. Only process 0 writes (one copy of the records in a
    multi-process run). A full or failing disk is a `StorageError` that names, with
    ``checkpoint_dir``, the checkpoint left to resume from."""
    if jax.process_index() != 0:
        return
    line = json.dumps(_finite_or_none(record), allow_nan=False) + "\n"
    note = "" if checkpoint_dir is None else (lambda: checkpoint.describe_latest(checkpoint_dir))
    with files.storage_errors(f"writing {path}", len(line.encode("utf-8")), path.parent, note):
        files.append_line(path, line)


def _lock_as_writer(held, output_dir):
    """Take ``output_dir``'s lock (`jaxrnn.files.folder_lock`) into the ExitStack ``held``: in
    process 0 only, the one that writes. Every process learns whether it was taken, so that with
    several processes all stop when it was not (one collective; none with one process)."""
    failure = None
    if jax.process_index() == 0:
        try:
            held.enter_context(files.folder_lock(output_dir, "--output_dir"))
        except JaxrnnError as error:
            failure = error
    if parallel.process_max([failure is not None])[0]:
        raise failure or FolderBusyError(
            f"process 0 could not take the lock of --output_dir={output_dir} (its own message "
            "says why); fix that, then start every process again")


def _format_seconds(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def eval_streams(config, ids, name):
    """``(B', W*T+1)`` streams of a held-out split: ``eval_batch_size`` streams, fewer when the
    split is too short to give each stream one window."""
    batch_size = min(config.eval_batch_size, max(1, (len(ids) - 1) // config.seq_len))
    return data.make_streams(ids, batch_size, config.seq_len, name=f"{name} split")


def evaluate_split(config, params, ids, name):
    """Mean loss (nats/char) over a split, the hidden state carried across windows."""
    return train_lib.make_evaluate(config)(params, eval_streams(config, ids, name))


def segment_losses(config, params, ids, starts):
    """Mean loss (nats/char) of each segment of a split read as one stream (every character
    predicted from all the text before it): ``ids`` (N,) int; ``starts``: increasing offsets in
    the split, the first 0, where the segments of target characters begin (the last segment
    ends where the last whole window does). Returns ``[(start, end, loss)]``."""
    streams = data.make_streams(ids, 1, config.seq_len, name="split")
    scored = streams.shape[1]                         # characters 0..W*T; 1..W*T are targets
    ends = list(starts[1:]) + [scored]                # loss j is that of character j + 1
    if list(starts[:1]) != [0] or any(b <= a for a, b in zip(starts, ends)):
        raise ConfigError(f"--segments={','.join(map(str, starts))}: the segments' starts "
                          f"must begin at 0 and increase below {scored}, the "
                          f"characters scored; pass e.g. --segments=0,{len(ids) // 2}")
    losses = np.asarray(jax.jit(train_lib.make_char_losses(config))(params, streams))[0]
    return [(start, end, float(losses[max(start - 1, 0):end - 1].mean()))
            for start, end in zip(starts, ends)]


def _chunk_length(config, step):
    """Steps of the next compiled call from ``step``: at most ``steps_per_call``, ending at the
    next evaluation (every ``eval_every`` steps) or at ``num_steps``."""
    boundary = min(config.num_steps, (step // config.eval_every + 1) * config.eval_every)
    return min(config.steps_per_call, boundary - step)


def _compile(jitted, *args):
    """Ahead-of-time compile, so that compile time is reported apart from step time."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _chunk_runner(make_chunk, log, what=""):
    """``run(length, state, *args) -> (state, host metrics, seconds)``: compiles
    ``make_chunk(length)`` once per length (reporting the compile time apart), runs it and brings
    its metrics to the host; ``seconds`` is the call's wall time, compilation excluded."""
    compiled = {}

    def run(length, state, *args):
        if length not in compiled:
            compiled[length], seconds = _compile(make_chunk(length), state, *args)
            log(f"compiled a {length}-step chunk{what} in {seconds:.1f}s")
        tick = time.perf_counter()
        state, metrics = compiled[length](state, *args)
        metrics = {name: np.asarray(value) for name, value in jax.device_get(metrics).items()}
        return state, metrics, time.perf_counter() - tick

    return run


def seconds_per_step(config, num_runs=1, *, log=print):
    """Wall seconds of one training step of ``num_runs`` vmapped runs of ``config`` on this
    machine: TIMED_CHUNKS ``steps_per_call``-step chunks timed after a first call
    (compilation excluded). Used to
    turn a wall-time budget into a number of steps (`jaxrnn.studies`, the ``long`` preset)."""
    corpus = data.load_corpus(config.data, config.split)
    streams = jax.device_put(data.make_streams(corpus.train, config.batch_size, config.seq_len,
                                               name="training split"))
    states = train_lib.init_train_states(config, len(corpus.vocab), list(range(num_runs)))
    hparams = train_lib.run_hparams(config, [config.learning_rate] * num_runs,
                                    [config.clip_norm] * num_runs)
    run_chunk = _chunk_runner(functools.partial(train_lib.make_multi_seed_chunk, config,
                                                data.num_windows(streams, config.seq_len)),
                              log, " (timing)")
    states, _, _ = run_chunk(config.steps_per_call, states, streams, hparams)
    seconds = 0.0
    for _ in range(TIMED_CHUNKS):
        states, _, chunk_seconds = run_chunk(config.steps_per_call, states, streams, hparams)
        seconds += chunk_seconds
    return seconds / (TIMED_CHUNKS * config.steps_per_call)


@contextlib.contextmanager
def _opened(config, rerun, runs=1, **folder_checks):
    """``(received, corpus, streams (B, W*T+1) on the host, output folder)`` for the body of a run
    of ``runs`` vmapped runs, once its memory, the folder's lock (held to the end) and the folder
    (`runchecks.prepare_output_dir` with ``folder_checks``) passed; the first SIGINT/SIGTERM is
    deferred into ``received``; a `StorageError` leaves with ``rerun()`` as its rerun."""
    with interrupt.deferred_signals() as received, contextlib.ExitStack() as held:
        try:
            corpus = data.load_corpus(config.data, config.split)
            streams = data.make_streams(corpus.train, config.batch_size, config.seq_len,
                                        name="training split")
            runchecks.check_memory(config.cell, len(corpus.vocab), config.hidden_size,
                                   config.num_layers, config.batch_size, config.seq_len,
                                   np.dtype(config.dtype).itemsize, runs=runs)
            _lock_as_writer(held, config.output_dir)   # before the folder is checked or written
            yield received, corpus, streams, runchecks.prepare_output_dir(config.output_dir,
                                                                          **folder_checks)
        except StorageError as error:
            error.rerun = rerun()
            raise


class Progress(NamedTuple):
    """The host loop after a chunk: its ``step``, the loop's ``start`` (`time.perf_counter`) and
    ``elapsed`` seconds, and the ``train_seconds`` and ``steps`` of this call's chunks."""
    step: int
    start: float
    elapsed: float
    train_seconds: float
    steps: int


def _run_chunks(config, log, make_chunk, train_state, chunk_args, step, received, *, what="",
                evaluate, val_streams, on_chunk, on_log, on_eval, stopped, save=None):
    """The host loop of `train` and `sweep`: chunks ``make_chunk(length)`` (`_chunk_runner`, whose
    compile lines add ``what``) from ``step`` to ``num_steps``. After each, ``on_chunk(step before it, host metrics)`` checks and
    keeps them; every ``log_every`` steps ``on_log(train_state, progress)`` and every
    ``eval_every`` steps ``on_eval(train_state, evaluate(params, val_streams), progress) ->
    (stop, best)`` (both at ``num_steps``), then ``save(train_state, best)`` (a single run's
    checkpoint, also every ``checkpoint_every_seconds``). A first signal in ``received`` saves
    and raises ``stopped(signum, step)``, one decision for all processes (a save is collective).
    Returns ``(train_state, progress, whether on_eval stopped it)``."""
    run_chunk = _chunk_runner(make_chunk, log, what)
    progress = Progress(step, time.perf_counter(), 0.0, 0.0, 0)
    last_save = progress.start
    while step < config.num_steps:
        length = _chunk_length(config, step)
        train_state, metrics, seconds = run_chunk(length, train_state, *chunk_args)
        on_chunk(step, metrics)
        step += length
        progress = Progress(step, progress.start, time.perf_counter() - progress.start,
                            progress.train_seconds + seconds, progress.steps + length)
        if step % config.log_every == 0 or step == config.num_steps:
            on_log(train_state, progress)
        saved = False
        if step % config.eval_every == 0 or step == config.num_steps:
            stop, best = on_eval(train_state, evaluate(train_state.params, val_streams), progress)
            if save is not None:
                save(train_state, best)
                last_save, saved = time.perf_counter(), True
            if stop:
                return train_state, progress, True
        signum, due = parallel.process_max([received[0] if received else 0, save is not None and
                                            0 < config.checkpoint_every_seconds
                                            <= time.perf_counter() - last_save])
        if (signum or due) and not saved and save is not None:
            save(train_state, False)
            last_save = time.perf_counter()
        if signum:
            raise stopped(int(signum), step)
    return train_state, progress, False


def train(config, *, log=print, stop_at_step=None, overwrite=False):
    """Train (or resume) per ``config``; returns a summary dict with the final metrics.

    ``stop_at_step`` ends this invocation early, right after the checkpoint of that step (it must
    be a multiple of ``eval_every``), as if the run had been interrupted there; the test split is
    not evaluated then. A later call with ``config.resume`` continues exactly.

    Before anything is compiled or written: a memory estimate against the machine, the output
    folder's lock (`jaxrnn.files.folder_lock`, taken by process 0 and held until this returns or
    raises: a second run into the folder gets `FolderBusyError`), then the folder itself (without
    ``config.resume`` it must not hold another run, unless ``overwrite``;
    `jaxrnn.runchecks.prepare_output_dir`). A chunk of steps whose loss is not finite or above
    `jaxrnn.runchecks.divergence_limit` raises `TrainingDivergedError` before anything is saved.
    A full or failing disk while saving a checkpoint or appending to ``metrics.jsonl`` raises
    `StorageError` naming the last checkpoint saved (intact), its ``rerun`` set to ``--resume``
    (``--overwrite`` when none was saved yet).

    Checkpoints are saved at each evaluation and every ``checkpoint_every_seconds`` (at the end of
    a chunk). A first SIGINT/SIGTERM lets the running chunk finish, saves a checkpoint at that
    step and raises `jaxrnn.interrupt.Interrupted`; a second one ends the process at once.
    """
    saved = os.path.join(config.output_dir, CHECKPOINT_SUBDIR, checkpoint.META_FILE)
    run_files = () if config.resume else (f"{CHECKPOINT_SUBDIR}/{checkpoint.META_FILE}",
                                          "metrics.jsonl")
    with _opened(config, lambda: "--resume" if os.path.exists(saved) else "--overwrite",
                 overwrite=overwrite, checkpoint_subdir=CHECKPOINT_SUBDIR,
                 run_files=run_files) as run:
        return _train(config, log, stop_at_step, *run)


def _train(config, log, stop_at_step, received, corpus, streams, output_dir):
    num_windows = data.num_windows(streams, config.seq_len)
    checkpoint_dir, metrics_path = output_dir / CHECKPOINT_SUBDIR, output_dir / "metrics.jsonl"
    best_val_loss, val_streams = None, eval_streams(config, corpus.val, "validation")
    if config.resume:
        train_state, metadata = runstate.resume(config, corpus.vocab, checkpoint_dir)
        best_val_loss = metadata.get("best_val_loss")
        log(f"resumed from {checkpoint_dir} at step {int(train_state.step)}")
    else:
        train_state = train_lib.init_train_state(config, len(corpus.vocab))
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
    pending, consecutive, schedule = [], 0, train_lib.make_schedule(config)

    def on_chunk(step, metrics):
        nonlocal consecutive
        consecutive = runchecks.check_chunk(config, metrics, step, consecutive, checkpoint_dir,
                                            len(corpus.vocab))
        pending.append(metrics)

    def on_log(train_state, progress):
        merged = {name: np.concatenate([m[name] for m in pending]) for name in pending[0]}
        pending.clear()
        kept = ~merged["skipped"].astype(bool) if "skipped" in merged else slice(None)
        merged.update(loss=merged["loss"][kept], grad_norm=merged["grad_norm"][kept])
        step, train_seconds = progress.step, progress.train_seconds
        chars_per_second = progress.steps * config.batch_size * config.seq_len / train_seconds
        eta = train_seconds / progress.steps * (config.num_steps - step)
        record = {"kind": "train", "step": step, "epoch": int(train_state.epoch),
                  "loss": float(merged["loss"].mean()),
                  "grad_norm": float(merged["grad_norm"].mean()),
                  "max_grad_norm": float(merged["grad_norm"].max()),
                  "clip_fraction": float(merged["clipped"].mean()),
                  "learning_rate": float(schedule(step)), "chars_per_second": chars_per_second,
                  "elapsed_seconds": time.perf_counter() - progress.start}
        if config.skip_nonfinite:
            record["skipped_steps"] = int(merged["skipped"].sum())
        _append_jsonl(metrics_path, record, checkpoint_dir)
        log(f"step {step}/{config.num_steps} epoch {record['epoch']} "
            f"loss {record['loss']:.4f} |g| {record['grad_norm']:.2f} "
            f"clipped {100 * record['clip_fraction']:.0f}% lr {record['learning_rate']:.2e} "
            f"{chars_per_second:,.0f} chars/s elapsed {_format_seconds(record['elapsed_seconds'])}"
            f" eta {_format_seconds(eta)}"
            + (f" skipped {record['skipped_steps']}" if config.skip_nonfinite else ""))

    def on_eval(train_state, val, progress):
        nonlocal best_val_loss
        report = train_lib.loss_report(val)
        improved = best_val_loss is None or report["loss"] < best_val_loss
        best_val_loss = report["loss"] if improved else best_val_loss
        _append_jsonl(metrics_path, {"kind": "val", "step": progress.step, **report,
                                     "elapsed_seconds": time.perf_counter() - progress.start},
                      checkpoint_dir)
        log(f"  val loss {report['loss']:.4f} nats/char = {report['bpc']:.3f} bpc, "
            f"perplexity {train_lib.format_perplexity(report['perplexity'])}")
        key = train_lib.stream_key(train_state.key, train_lib.STREAM_SAMPLES, progress.step)
        text = sample.sample_text(train_state.params, arch=config.cell, vocab=corpus.vocab,
                                  key=key, length=config.sample_length,
                                  temperature=config.sample_temperature)[0]
        log("  sample: " + text.replace("\n", "\n          "))
        return progress.step == stop_at_step, improved

    train_state, progress, stopped_early = _run_chunks(
        config, log, functools.partial(train_lib.make_train_chunk, config, num_windows),
        train_state, (streams,), int(train_state.step), received, evaluate=evaluate,
        val_streams=val_streams, on_chunk=on_chunk, on_log=on_log, on_eval=on_eval,
        save=lambda state, best: runstate.save(config, corpus.vocab, checkpoint_dir, state,
                                               best_val_loss, best),
        stopped=lambda signum, step: interrupt.Interrupted(
            signum, f"stopped by {interrupt.signal_name(signum)} at step {step} of "
            f"{config.num_steps}; checkpoint saved in {checkpoint_dir}"))
    if stopped_early:
        return {"train_state": train_state, "best_val_loss": best_val_loss,
                "checkpoint": str(checkpoint_dir)}
    test = train_lib.loss_report(evaluate(train_state.params,
                                          eval_streams(config, corpus.test, "test")))
    _append_jsonl(metrics_path, {"kind": "test", "step": progress.step, **test}, checkpoint_dir)
    total = time.perf_counter() - progress.start
    log(f"test loss {test['loss']:.4f} nats/char = {test['bpc']:.3f} bpc, perplexity "
        f"{train_lib.format_perplexity(test['perplexity'])}; {_format_seconds(total)} in all; "
        f"checkpoint: {checkpoint_dir}")
    return {"test": test, "best_val_loss": best_val_loss, "seconds": total,
            "checkpoint": str(checkpoint_dir), "train_state": train_state,
            "chars_per_second": progress.steps * config.batch_size * config.seq_len
            / max(progress.train_seconds, 1e-9)}


def run_name(learning_rate, clip_norm, seed):
    """The folder name of one run of a sweep, e.g. ``lr0.003-clip5-seed0``."""
    return f"lr{learning_rate:g}-clip{clip_norm:g}-seed{seed}"


def _json_number(value):
    """A float for JSON: None for NaN and the infinities (strict JSON has no such numbers)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _loss_spikes(losses, threshold=SPIKE_NATS):
    """Steps whose loss exceeds the previous step's by more than ``threshold`` nats/char (steps
    next to a non-finite loss are not counted: that is a divergence)."""
    jumps = np.diff(losses)
    return int(np.sum(jumps[np.isfinite(jumps)] > threshold))


def sweep(config, seeds, learning_rates=None, clip_norms=None, *, patience=0, log=print):
    """Train every (learning rate, clip threshold, seed) of the grid as one ``jit(vmap)`` program.

    All runs share ``config`` except the seed (each run's root key: initialisation, dropout, state
    resets, window offsets), the peak learning rate and the clip threshold (per-run values,
    `jaxrnn.train.RunHparams`). ``clip_norms`` may hold ``inf`` (no clipping in that run; with
    ``--clip_mode=global``). A run whose loss stops being finite is reported as diverged while
    the others go on.

    Writes ``<output_dir>/sweep.jsonl`` (val and final records, each with its run's name and the
    sweep's ``sweep_id``) and, per run, ``<output_dir>/runs/<run name>/metrics.jsonl`` in the
    format of `train` (train records every ``log_every`` steps, val every ``eval_every``, test at
    the end). No checkpoints.

    Returns ``(results, train_states)``: one dict per run (seed, learning_rate, clip_norm,
    train_loss = mean of the last ``log_every`` steps, val and test (`jaxrnn.train.loss_report`),
    diverged_at_step (first non-finite loss, or None), diverged (non-finite, or a final train loss
    more than DIVERGED_NATS above the uniform model's ln V), clip_fraction and max_grad_norm over all steps, loss_spikes
    (steps whose loss jumped by more than SPIKE_NATS), seconds (the sweep's wall time, shared by
    all runs), chars_per_second (the sweep's, summed over runs)) and the final stacked
    `TrainState` s (leading axis: the runs, in the order of ``results``).

    ``patience`` > 0 trains each run *to its best*: every run keeps its own `TrainState` at its
    lowest validation loss so far (a per-run select on the device after each evaluation), the
    program stops once no run has improved for ``patience`` evaluations in a row (or at
    ``num_steps``, the cap), and each run is tested from its own best state. Its result then
    reports ``val`` and ``test`` at that best evaluation, with ``best_step``, ``best_epoch``
    (epochs of training characters at that step) and ``train_loss_at_best`` (mean training loss
    of the ``log_every`` steps before it), and ``last_val`` at the step the program stopped; the
    returned train states are the best ones. With 0 (the default) every run trains
    ``num_steps`` and is tested at the end.

    A first SIGINT/SIGTERM lets the running chunk finish and raises
    `jaxrnn.interrupt.Interrupted` (not resumable: there are no checkpoints; a study resumes
    from its finished groups). ``output_dir`` is locked (`jaxrnn.files.folder_lock`) from before
    it is first written until this returns; a full or failing disk raises `StorageError`.
    """
    runchecks.check_sweep(config, seeds, learning_rates, clip_norms, patience)
    learning_rates = [config.learning_rate] if not learning_rates else list(learning_rates)
    clip_norms = [config.clip_norm] if not clip_norms else list(clip_norms)
    with _opened(config, lambda: "",           # "": the same command runs the sweep again
                 runs=len(seeds) * len(learning_rates) * len(clip_norms)) as run:
        return _sweep(config, seeds, learning_rates, clip_norms, patience, log, *run)


@jax.jit
def _keep_best(improved, best_states, train_states):
    """Per run, the new state where its validation loss ``improved`` ((S,) bool), else the kept
    one (every leaf has the runs on its leading axis)."""
    def select(best, new):
        return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, best)
    return jax.tree.map(select, best_states, train_states)


def _sweep(config, seeds, learning_rates, clip_norms, patience, log, received, corpus, streams,
           output_dir):
    runs = [(seed, rate, clip) for rate in learning_rates for clip in clip_norms for seed in seeds]
    names = [run_name(rate, clip, seed) for seed, rate, clip in runs]
    streams, num_windows = jax.device_put(streams), data.num_windows(streams, config.seq_len)
    records_path = output_dir / "sweep.jsonl"
    run_paths = [output_dir / "runs" / name / "metrics.jsonl" for name in names]
    for path in run_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.storage_errors(f"writing {path}", 0, path.parent):
            path.write_text("")                      # a rerun of the sweep starts its records anew
    sweep_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"     # tells two sweeps apart
    train_states = train_lib.init_train_states(config, len(corpus.vocab),
                                               [seed for seed, _, _ in runs])
    hparams = train_lib.run_hparams(config, [rate for _, rate, _ in runs],
                                    [clip for _, _, clip in runs])
    evaluate = jax.jit(jax.vmap(train_lib.make_evaluate(config), in_axes=(0, None)))
    val_streams = eval_streams(config, corpus.val, "validation")
    log(f"sweep of {len(runs)} runs ({len(learning_rates)} learning rates x {len(clip_norms)} "
        f"clip thresholds x {len(seeds)} seeds) as one program: {config.arch} "
        f"H={config.hidden_size} L={config.num_layers}, {config.num_steps} steps of "
        f"{config.batch_size}x{config.seq_len}")
    diverged_at = [None] * len(runs)
    recent = {name: np.zeros((len(runs), 0)) for name in ("loss", "grad_norm", "clipped")}
    totals = {"clipped": np.zeros(len(runs)), "max_grad_norm": np.zeros(len(runs)),
              "spikes": np.zeros(len(runs), int)}
    last_loss = np.full((len(runs), 1), np.nan)
    steps_per_epoch = train_lib.epoch_windows(config, num_windows)
    best = {"val": np.full(len(runs), np.inf), "step": np.zeros(len(runs), int),
            "train_loss": np.full(len(runs), np.nan), "waited": np.zeros(len(runs), int)}
    best_states = None       # the first evaluation's copy (the chunks donate the train states)
    last_val = np.full(len(runs), np.nan)

    def on_chunk(step, metrics):
        nonlocal last_loss
        for index, run_losses in enumerate(metrics["loss"]):                # (S, length)
            bad = runchecks.first_divergent_step(run_losses, len(corpus.vocab))
            if diverged_at[index] is None and bad is not None:
                diverged_at[index] = step + bad + 1
                log(f"  run {names[index]} diverged at step {diverged_at[index]} (loss "
                    f"{run_losses[bad]:.4g}); the others go on")
            totals["spikes"][index] += _loss_spikes(np.concatenate([last_loss[index], run_losses]))
        last_loss = metrics["loss"][:, -1:]
        totals["clipped"] += metrics["clipped"].sum(axis=1)
        finite_norms = np.where(np.isfinite(metrics["grad_norm"]), metrics["grad_norm"], 0.0)
        totals["max_grad_norm"] = np.maximum(totals["max_grad_norm"], finite_norms.max(axis=1))
        for name in recent:
            recent[name] = np.concatenate([recent[name], metrics[name]],
                                          axis=1)[:, -config.log_every:]

    def on_log(train_states, progress):
        step, mean = progress.step, recent["loss"].mean(axis=1)
        for index, path in enumerate(run_paths):
            _append_jsonl(path, {
                "kind": "train", "step": step, "loss": _json_number(mean[index]),
                "grad_norm": _json_number(recent["grad_norm"][index].mean()),
                "max_grad_norm": _json_number(np.max(recent["grad_norm"][index])),
                "clip_fraction": float(recent["clipped"][index].mean()),
                "learning_rate": float(hparams.learning_rate_scale[index])
                * float(train_lib.make_schedule(config)(step)),
                "elapsed_seconds": progress.elapsed})
        finite = mean[np.isfinite(mean)]
        chars = step * len(runs) * config.batch_size * config.seq_len
        log(f"step {step}/{config.num_steps} train loss over runs "
            + (f"{finite.min():.4f}..{finite.max():.4f}" if finite.size else "-")
            + f" {chars / progress.train_seconds:,.0f} chars/s (all runs) elapsed "
            f"{_format_seconds(progress.elapsed)}")

    def on_eval(train_states, val, progress):
        nonlocal best_states, last_val
        step, val = progress.step, np.asarray(val)
        last_val = val
        for index, ((seed, rate, clip), loss) in enumerate(zip(runs, val)):
            report = {key: _json_number(value)
                      for key, value in train_lib.loss_report(loss).items()}
            _append_jsonl(run_paths[index], {"kind": "val", "step": step, **report,
                                             "elapsed_seconds": progress.elapsed})
            _append_jsonl(records_path, {"kind": "val", "sweep_id": sweep_id,
                                         "run": names[index], "step": step, "seed": seed,
                                         "learning_rate": rate,
                                         "clip_norm": _json_number(clip), **report})
        log(f"  val loss over runs {np.nanmin(val):.4f}..{np.nanmax(val):.4f} nats/char")
        if not patience:
            return False, None
        improved = np.isfinite(val) & (val < best["val"])
        best_states = _keep_best(jnp.asarray(improved), train_states if best_states is None
                                 else best_states, train_states)
        best["val"] = np.where(improved, val, best["val"])
        best["step"] = np.where(improved, step, best["step"])
        best["train_loss"] = np.where(improved, recent["loss"].mean(axis=1), best["train_loss"])
        best["waited"] = np.where(improved, 0, best["waited"] + 1)
        stop = (best["waited"] >= patience).all() and step < config.num_steps
        if stop:
            log(f"  no run improved for {patience} evaluations: stopped at step {step} of "
                f"{config.num_steps}")
        return stop, None

    train_states, progress, _ = _run_chunks(
        config, log, functools.partial(train_lib.make_multi_seed_chunk, config, num_windows),
        train_states, (streams, hparams), 0, received, what=f" of {len(runs)} runs",
        evaluate=evaluate, val_streams=val_streams, on_chunk=on_chunk, on_log=on_log,
        on_eval=on_eval, stopped=lambda signum, step: interrupt.Interrupted(
            signum, f"sweep stopped by {interrupt.signal_name(signum)} at step {step} of "
            f"{config.num_steps}; a sweep keeps no checkpoints (its records so far are in "
            f"{records_path}): run it again to start over", resumable=False))
    step, val = progress.step, last_val
    if patience:
        train_states, val = best_states, best["val"]
    test = np.asarray(evaluate(train_states.params, eval_streams(config, corpus.test, "test")))
    seconds = time.perf_counter() - progress.start
    uniform = float(np.log(len(corpus.vocab)))
    results = []
    final_train = recent["loss"].mean(axis=1)
    for index, (seed, rate, clip) in enumerate(runs):
        test_report = {key: _json_number(value)
                       for key, value in train_lib.loss_report(test[index]).items()}
        _append_jsonl(run_paths[index], {"kind": "test", "step": step, **test_report})
        result = {"run": names[index], "seed": seed, "learning_rate": rate,
                  "clip_norm": _json_number(clip),
                  "train_loss": _json_number(final_train[index]),
                  "val": {key: _json_number(value)
                          for key, value in train_lib.loss_report(val[index]).items()},
                  "test": test_report,
                  "diverged_at_step": diverged_at[index],
                  "diverged": bool(diverged_at[index] is not None
                                   or not final_train[index] < uniform + DIVERGED_NATS),
                  "clip_fraction": float(totals["clipped"][index] / step),
                  "max_grad_norm": _json_number(totals["max_grad_norm"][index]),
                  "loss_spikes": int(totals["spikes"][index]),
                  "steps": step, "epochs": step / steps_per_epoch, "seconds": seconds,
                  "chars_per_second": step * len(runs) * config.batch_size * config.seq_len
                  / max(progress.train_seconds, 1e-9)}
        if patience:
            result.update(best_step=int(best["step"][index]),
                          best_epoch=float(best["step"][index] / steps_per_epoch),
                          train_loss_at_best=_json_number(best["train_loss"][index]),
                          last_val=_json_number(last_val[index]))
        _append_jsonl(records_path, {"kind": "final", "sweep_id": sweep_id, **result})
        results.append(result)
    log(f"{len(runs)} runs in {_format_seconds(seconds)}; records: {records_path}")
    return results, train_states
