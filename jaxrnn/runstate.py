"""A run's state on disk: what a checkpoint's metadata holds, resuming a run from a checkpoint
(refusing one that does not match the flags), and loading a trained model for evaluation and
sampling. The files themselves (atomic, checksummed, pickle-free) are `jaxrnn.checkpoint`'s."""
import jax

from jaxrnn import checkpoint, config as config_lib
from jaxrnn import train as train_lib
from jaxrnn import validate
from jaxrnn.errors import CheckpointError


def checkpoint_metadata(config, vocab, train_state, best_val_loss, extra=None):
    """The metadata saved with a run's checkpoint: its config, vocabulary, data position (step,
    epoch, window) and best validation loss so far, plus ``extra``."""
    return {"config": config.to_dict(), "vocab": vocab, "step": int(train_state.step),
            "epoch": int(train_state.epoch), "window": int(train_state.window),
            "best_val_loss": best_val_loss, **(extra or {})}


def resume(config, vocab, directory):
    """``(train_state, metadata)`` of the checkpoint in ``directory`` to resume ``config`` from,
    refusing (`CheckpointError` with a hint) a checkpoint whose model, vocabulary or data layout
    does not match."""
    try:
        metadata = validate.run_metadata(checkpoint.read_metadata(directory), directory)
        saved = metadata["config"]
        checkpoint.check_compatible(saved, {name: getattr(config, name)
                                            for name in config_lib.MODEL_FIELDS})
    except CheckpointError as error:
        raise validate.resume_hint(error) from None
    validate.resume_config(saved, config)
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
        raise validate.resume_hint(error) from None


def load_train_state(config, vocab_size, directory, which="latest"):
    """The `TrainState` saved in ``directory``, rebuilt in the structure ``config`` implies."""
    template = jax.eval_shape(lambda: train_lib.init_train_state(config, vocab_size))
    train_state, _ = checkpoint.load_checkpoint(directory, like=template, which=which)
    return jax.device_put(train_state)


def load_model(directory, which="latest"):
    """``(params, config, vocab, metadata)`` from a checkpoint, for evaluation and sampling;
    ``which``: "latest" or "best" (by validation loss) of the folder ``directory``."""
    metadata = validate.run_metadata(checkpoint.read_metadata(directory, which), directory)
    config = config_lib.from_dict(metadata["config"])
    train_state = load_train_state(config, len(metadata["vocab"]), directory, which)
    return train_state.params, config, metadata["vocab"], metadata
