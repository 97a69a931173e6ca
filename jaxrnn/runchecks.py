"""Checks of a training run, on the host, by the loop (`jaxrnn.loop`): before anything is compiled
or written (a sweep's grid, a memory estimate against the machine, an output folder that already
holds a run or cannot be written) and after each compiled chunk (a loss that ran away).

These speak to the user of ``experiments.train`` and ``experiments.sweep`` (`loop.train` and
`loop.sweep` take a `jaxrnn.config.Config` whose fields are those flags), so their messages name
the flags to change. Checks of a library call's arguments are `jaxrnn.validate`'s; checks of a
checkpoint to resume from are `jaxrnn.runstate`'s.
"""
import math
import os
import pathlib
import tempfile

import jax
import numpy as np

from jaxrnn import checkpoint
from jaxrnn.errors import ConfigError, TrainingDivergedError
from jaxrnn.validate import layer_shapes


# ---------------------------------------------------------------------------------------------
# Divergence: after each chunk
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


def check_chunk(config, metrics, step, consecutive, checkpoint_dir, vocab_size):
    """Raise `TrainingDivergedError` when a chunk of one run diverged (`check_losses`: a
    non-finite loss, or a mean above the divergence limit); with ``skip_nonfinite`` the skipped
    steps are left out of that check and counted instead, and ``max_consecutive_nonfinite``
    skipped steps in a row raise. ``metrics``: the chunk's host metrics, ``loss`` (N,) (and
    ``skipped`` (N,)); ``step``: the step before the chunk. Returns the count of skipped steps in
    a row at the chunk's end, from ``consecutive`` at its start."""
    kept = (checkpoint_dir / checkpoint.META_FILE).exists()
    if not config.skip_nonfinite:
        check_losses(metrics["loss"], step + 1, vocab_size, checkpoint_dir, kept=kept)
        return 0
    skipped = metrics["skipped"].astype(bool)
    for index, skip in enumerate(skipped):
        consecutive = consecutive + 1 if skip else 0
        if consecutive >= config.max_consecutive_nonfinite:
            where = (f"the last good checkpoint is kept in {checkpoint_dir}" if kept
                     else "no checkpoint was saved yet")
            raise TrainingDivergedError(
                f"{consecutive} steps in a row up to step {step + index + 1} had a non-finite "
                f"loss or gradient and were skipped; {where}; lower --learning_rate or "
                "--clip_norm")
    if (~skipped).any():
        check_losses(metrics["loss"][~skipped], step + 1, vocab_size, checkpoint_dir, kept=kept)
    return consecutive


# ---------------------------------------------------------------------------------------------
# A sweep's grid: before anything is loaded
# ---------------------------------------------------------------------------------------------
def check_sweep(config, seeds, learning_rates, clip_norms, patience):
    """The arguments of `jaxrnn.loop.sweep` (the flags of ``experiments.sweep``): one program
    without ``data_parallel``, ``patience`` an integer >= 0, at least one seed, learning rates
    finite and > 0, clip thresholds > 0 (``inf``: no clipping)."""
    if config.data_parallel:
        raise ConfigError("--data_parallel is not supported by the sweep; drop it (the runs of a "
                          "sweep share the devices as one vmapped program)")
    if not isinstance(patience, int) or patience < 0:
        raise ConfigError(f"--patience must be an integer >= 0 (0: train every step), got "
                          f"{patience!r}")
    if not seeds:
        raise ConfigError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2")
    if any(not rate > 0 or not np.isfinite(rate) for rate in learning_rates or ()):
        raise ConfigError("--learning_rates must all be finite and > 0, got "
                          + ",".join(f"{rate:g}" for rate in learning_rates))
    if any(not clip > 0 for clip in clip_norms or ()):
        raise ConfigError("--clip_norms must all be > 0 (inf: no clipping), got "
                          + ",".join(f"{clip:g}" for clip in clip_norms))


# ---------------------------------------------------------------------------------------------
# Memory: before anything is compiled
# ---------------------------------------------------------------------------------------------
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
    count = sum(math.prod(shape) for index in range(num_layers) for shape in layer_shapes(
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


# ---------------------------------------------------------------------------------------------
# The output folder: before anything is written
# ---------------------------------------------------------------------------------------------
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
