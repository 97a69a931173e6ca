"""A run's state on disk: what a checkpoint's metadata holds, saving a run's checkpoint, resuming
a run from one (refusing one that does not match the flags, with a hint for ``train --resume``),
and loading a trained model for evaluation and sampling. The files themselves (atomic,
checksummed, pickle-free) are `jaxrnn.checkpoint`'s."""
import jax

from jaxrnn import checkpoint, config as config_lib, parallel
from jaxrnn import train as train_lib
from jaxrnn.errors import CheckpointError


def checkpoint_metadata(config, vocab, train_state, best_val_loss, extra=None):
    """The metadata saved with a run's checkpoint: its config, vocabulary, data position (step,
    epoch, window) and best validation loss so far, plus ``extra``."""
    return {"config": config.to_dict(), "vocab": vocab, "step": int(train_state.step),
            "epoch": int(train_state.epoch), "window": int(train_state.window),
            "best_val_loss": best_val_loss, **(extra or {})}


def save(config, vocab, directory, train_state, best_val_loss, best=False):
    """Checkpoint ``train_state`` (every process must call this; process 0 writes) as the latest,
    a step record kept per ``config.keep``, and with ``best`` as the best."""
    host_state = parallel.gather_to_host(train_state)
    if jax.process_index() == 0:
        checkpoint.save_checkpoint(directory, state_pytree=host_state, step=int(host_state.step),
                                   keep=config.keep, best=best, metadata=checkpoint_metadata(
                                       config, vocab, host_state, best_val_loss))


def resume(config, vocab, directory):
    """``(train_state, metadata)`` of the checkpoint in ``directory`` to resume ``config`` from,
    refusing (`CheckpointError` with a hint) a checkpoint whose model, vocabulary or data layout
    does not match."""
    try:
        metadata = _run_metadata(checkpoint.read_metadata(directory), directory)
        saved = metadata["config"]
        checkpoint.check_compatible(saved, {name: getattr(config, name)
                                            for name in config_lib.MODEL_FIELDS})
    except CheckpointError as error:
        raise _resume_hint(error) from None
    _check_optimizer(saved, config)
    if metadata["vocab"] != vocab:
        raise CheckpointError(f"checkpoint {directory} was trained on a different vocabulary "
                              f"({len(metadata['vocab'])} symbols, this corpus has {len(vocab)}); "
                              "resume with the same --data or start a new --output_dir")
    if saved["batch_size"] != config.batch_size or saved["seq_len"] != config.seq_len:
        raise CheckpointError("checkpoint used --batch_size/--seq_len "
                              f"{saved['batch_size']}/{saved['seq_len']}; resume with the same "
                              "values so the data position stays valid")
    try:
        return load_train_state(config, len(vocab), directory), metadata
    except CheckpointError as error:
        raise _resume_hint(error) from None


def _run_metadata(metadata, directory):
    """A training checkpoint's metadata has a config dict, a non-empty vocab string and a step."""
    problems = [name for name, kind in (("config", dict), ("vocab", str), ("step", int))
                if not isinstance(metadata.get(name), kind)]
    if not problems and not metadata["vocab"]:
        problems = ["vocab"]
    if problems:
        raise CheckpointError(f"checkpoint {directory} has no valid {', '.join(problems)} in its "
                              "metadata (was checkpoint.json edited?); re-train, or use an intact "
                              "checkpoint")
    return metadata


def _check_optimizer(saved, config):
    """Settings a resumed optimiser state depends on (beyond `config.MODEL_FIELDS`)."""
    if saved.get("optimizer") != config.optimizer:
        raise CheckpointError(f"checkpoint was trained with --optimizer={saved.get('optimizer')} "
                              f"but flags ask for --optimizer={config.optimizer}: the optimiser "
                              f"differs, so its state cannot continue; resume with "
                              f"--optimizer={saved.get('optimizer')} or start a new --output_dir")


def _resume_hint(error):
    """A `CheckpointError` from `jaxrnn.checkpoint` reworded for ``train --resume``, which has no
    --checkpoint flag: the remedy is the run folder."""
    text = str(error)
    for old in ("pick another --checkpoint", "a different --checkpoint"):
        text = text.replace(old, "start a new --output_dir (drop --resume)")
    return CheckpointError(text)


def load_train_state(config, vocab_size, directory, which="latest"):
    """The `TrainState` saved in ``directory``, rebuilt in the structure ``config`` implies."""
    template = jax.eval_shape(lambda: train_lib.init_train_state(config, vocab_size))
    train_state, _ = checkpoint.load_checkpoint(directory, like=template, which=which)
    return jax.device_put(train_state)


def load_model(directory, which="latest"):
    """``(params, config, vocab, metadata)`` from a checkpoint, for evaluation and sampling;
    ``which``: "latest" or "best" (by validation loss) of the folder ``directory``."""
    metadata = _run_metadata(checkpoint.read_metadata(directory, which), directory)
    config = config_lib.from_dict(metadata["config"])
    train_state = load_train_state(config, len(metadata["vocab"]), directory, which)
    return train_state.params, config, metadata["vocab"], metadata
