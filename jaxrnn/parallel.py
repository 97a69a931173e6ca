"""Data parallelism over devices and hosts with `jax.sharding`: the same training code, sharded.

The training step is written for one global batch; `jit` partitions it. `data_mesh` makes a 1-D
mesh over every device (of every process, after `initialize_distributed`); `shard_train_state`
places the parameters, optimiser state and counters replicated and the carried hidden state split
over the batch axis, and `shard_batch` splits the ``(B, ...)`` training streams the same way. XLA's
SPMD partitioner then runs each device's share of the B streams and all-reduces the gradients
(their sum over the batch is what the loss's mean needs), so the result matches one device up to
the order of that sum. Nothing in `jaxrnn.model` or `jaxrnn.train` knows about devices.

Usage (single host, several devices)::

    mesh = data_mesh()
    train_state = shard_train_state(train_state, mesh)
    streams = shard_batch(streams, mesh)
    train_state, metrics = train_chunk(train_state, streams)   # the usual jitted chunk

Multi-host: call `initialize_distributed` first in every process (``python -m experiments.train
--data_parallel --coordinator_address=host:port --num_processes=N --process_id=i``); every process
loads the same corpus and builds the same initial state from the seed, and process 0 writes the
checkpoints (`gather_to_host`) and metrics. Decisions the host loop takes from a process's own
clock or signals (a time-based checkpoint, an interrupt) are first agreed on with
`process_max`, so that every process runs the same collectives. Tested with two processes on
one host over CPU collectives (gloo, JAX's default): tests/test_multihost.py.
"""
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from jaxrnn.errors import ConfigError
from jaxrnn.types import TrainState

DATA_AXIS = "data"


def initialize_distributed(coordinator_address, num_processes, process_id):
    """`jax.distributed.initialize` for a multi-host run; a no-op for ``num_processes == 1``."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id must be in [0, --num_processes), got {process_id} of "
                          f"{num_processes}")
    if num_processes > 1:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)


def data_mesh(devices=None):
    """A 1-D `Mesh` with axis ``"data"`` over ``devices`` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
    """Split the leading (batch) axis over the mesh's data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def place(tree, sharding):
    """``tree`` (arrays or typed PRNG keys, the same values in every process) laid out per
    ``sharding``. One process: `jax.device_put`. Several: `device_put` cannot target another
    process's devices, so each global array is built from this process's copy of the whole value
    (`jax.make_array_from_callback` takes the slices its own devices hold)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(one(jax.random.key_data(leaf)), impl=impl)
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def shard_batch(batch, mesh):
    """``batch: (B, ...)`` (any pytree of such arrays) split over the devices on axis 0; the B
    rows must split evenly."""
    batch_size, count = jax.tree.leaves(batch)[0].shape[0], mesh.devices.size
    if batch_size % count:
        raise ConfigError(f"--batch_size={batch_size} does not split over {count} devices; "
                          f"use a multiple of {count} with --data_parallel")
    return place(batch, batch_sharded(mesh))


def shard_train_state(train_state, mesh):
    """Parameters, optimiser state, counters and key replicated; the carried hidden state
    (tuple of ``(B, H)`` carries) split over the batch axis."""
    everywhere = replicated(mesh)
    return TrainState(
        params=place(train_state.params, everywhere),
        opt_state=place(train_state.opt_state, everywhere),
        model_state=shard_batch(train_state.model_state, mesh),
        step=place(train_state.step, everywhere),
        window=place(train_state.window, everywhere),
        epoch=place(train_state.epoch, everywhere),
        key=place(train_state.key, everywhere))


def gather_to_host(train_state):
    """The train state with every array whole in this process, for writing a checkpoint.

    One process: unchanged (every shard is addressable). Several: the carried state, the only
    part split over hosts, is all-gathered (every process must call this); process 0 writes.
    """
    if jax.process_count() == 1:
        return train_state
    return train_state._replace(
        model_state=multihost_utils.process_allgather(train_state.model_state, tiled=True))


def process_max(values):
    """``values: (K,)`` small integers -> their element-wise maximum over all processes (every
    process must call this); the values themselves in a one-process run."""
    values = np.asarray(values, np.int32)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).reshape(-1, values.size).max(0)
