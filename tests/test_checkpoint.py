"""Tests for jaxrnn.checkpoint: round trips, corruption, mismatches and atomic saves."""
import functools
import hashlib
import json
import os
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn import checkpoint
from jaxrnn.errors import CheckpointError


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    key: jax.Array
    step: int
    extras: list


def make_state(hidden=3, vocab=5, seed=0):
    """A small training state: params, a stepped clip+adam state, key data, step, extras."""
    params, opt_state, key = _params_and_adam(hidden, vocab, seed)
    extras = [jnp.ones((hidden, 2), jnp.bfloat16), jnp.arange(vocab, dtype=jnp.int32), True, 0.5]
    return TrainState(params, opt_state, key, 7, extras)


@functools.partial(jax.jit, static_argnums=(0, 1))  # one compile instead of many eager ops
def _params_and_adam(hidden, vocab, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {
        "W_xh": jax.random.normal(keys[0], (vocab, hidden), jnp.float32),
        "W_hh": jax.random.normal(keys[1], (hidden, hidden), jnp.float32),
        "b_h": jnp.zeros((hidden,), jnp.float32),
        "head": [jnp.ones((hidden, vocab), jnp.float32), jnp.zeros((vocab,), jnp.float32)],
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial mu, nu and count
    return params, opt_state, jax.random.key_data(keys[2])


METADATA = {"config": {"arch": "lstm", "hidden_size": 3, "layers": 1}, "vocab": "abc\n\u00e9",
            "step": 7, "best_val_loss": 1.25, "data_position": [0, 3]}


def npz_path(directory):
    """The arrays file that `directory`'s checkpoint.json names."""
    record = json.loads((directory / checkpoint.META_FILE).read_text())
    return directory / record["npz_file"]


def npz_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".npz"))


def assert_same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if isinstance(x, (bool, int, float)):
            assert type(x) is type(y)  # Python scalars stay Python scalars
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_optax_state(tmp_path):
    state = make_state()
    out = checkpoint.save_checkpoint(tmp_path / "ck", state_pytree=state, metadata=METADATA)
    arrays_file = npz_path(out)
    assert sorted(os.listdir(out)) == [arrays_file.name, "checkpoint.json"]
    sha256 = hashlib.sha256(arrays_file.read_bytes()).hexdigest()
    assert arrays_file.name == f"arrays-{sha256[:16]}.npz"
    restored, metadata = checkpoint.load_checkpoint(out, like=state)
    assert metadata == METADATA
    assert isinstance(restored, TrainState) and isinstance(restored.step, int)
    assert type(restored.opt_state[1][0]) is type(state.opt_state[1][0])  # ScaleByAdamState
    assert restored.extras[0].dtype == jnp.bfloat16 and restored.key.dtype == np.uint32
    assert restored.extras[2:] == [True, 0.5] and restored.opt_state[1][0].count.dtype == np.int32
    assert_same_tree(restored, state)


def test_paths_and_flat_dict(tmp_path):
    state = make_state()
    checkpoint.save_checkpoint(tmp_path, state_pytree=state, metadata=METADATA)
    # The directory, its JSON, its npz, or any .npz path inside it (e.g. the legacy name).
    for where in (tmp_path, tmp_path / "checkpoint.json", npz_path(tmp_path),
                  tmp_path / "checkpoint.npz", str(tmp_path / "arrays-0000000000000000.npz")):
        flat, metadata = checkpoint.load_checkpoint(where)
        assert metadata == METADATA
    expected = {jax.tree_util.keystr(p): v
                for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert list(flat) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(flat[key], np.asarray(value))
    assert checkpoint.read_metadata(tmp_path / "checkpoint.json") == METADATA
    assert checkpoint.read_metadata(npz_path(tmp_path)) == METADATA


def test_template_from_eval_shape(tmp_path):
    state = make_state()
    checkpoint.save_checkpoint(tmp_path, state_pytree=state.params, metadata={})
    like = jax.eval_shape(lambda: state.params)
    restored, _ = checkpoint.load_checkpoint(tmp_path, like=like)
    assert_same_tree(restored, state.params)


def test_typed_prng_key(tmp_path):
    state = {"key": jax.random.key(3), "x": jnp.float32(2.0)}
    checkpoint.save_checkpoint(tmp_path, state_pytree=state, metadata={})
    restored, _ = checkpoint.load_checkpoint(tmp_path, like=state)
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                  jax.random.key_data(state["key"]))


def test_no_pickle_anywhere(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    real_load = np.load
    calls = []

    def spy_load(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy_load)
    checkpoint.load_checkpoint(tmp_path)
    assert calls == [False]
    with pytest.raises(TypeError, match="object array"):
        checkpoint.save_checkpoint(tmp_path / "obj", state_pytree={"a": np.array([{}, 1], object)},
                                   metadata={})
    assert not (tmp_path / "obj").exists()


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save_checkpoint(tmp_path, state_pytree={"a": jnp.ones(2)},
                                   metadata={"bad": object()})
    assert not (tmp_path / "checkpoint.json").exists()
    checkpoint.save_checkpoint(tmp_path, state_pytree={"a": jnp.ones(2)},
                               metadata={"loss": np.float32(0.5), "step": jnp.int32(3)})
    assert checkpoint.read_metadata(tmp_path) == {"loss": 0.5, "step": 3}


def test_truncated_npz(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    npz = npz_path(tmp_path)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as err:
        checkpoint.load_checkpoint(tmp_path)
    assert str(npz) in str(err.value) and "re-train" in str(err.value)


def test_corrupted_bytes(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    npz = npz_path(tmp_path)
    payload = bytearray(npz.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    npz.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load_checkpoint(tmp_path)


def test_truncated_json(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    meta = tmp_path / "checkpoint.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CheckpointError, match="checkpoint.json is unreadable or truncated"):
        checkpoint.read_metadata(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "nothing")


def test_missing_npz(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    npz = npz_path(tmp_path)
    npz.unlink()
    with pytest.raises(CheckpointError, match="cannot read") as err:
        checkpoint.load_checkpoint(tmp_path)
    assert str(npz) in str(err.value) and "\n" not in str(err.value)


def test_json_must_name_a_plain_arrays_file(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    meta = tmp_path / "checkpoint.json"
    record = json.loads(meta.read_text())
    for bad in ("../arrays-0123456789abcdef.npz", "/etc/passwd", "checkpoint.npz", 3):
        meta.write_text(json.dumps({**record, "npz_file": bad}))
        with pytest.raises(CheckpointError, match="names an invalid arrays file"):
            checkpoint.load_checkpoint(tmp_path)
    meta.write_text(json.dumps({k: v for k, v in record.items() if k != "npz_file"}))
    with pytest.raises(CheckpointError, match="missing fields"):
        checkpoint.load_checkpoint(tmp_path)


def test_loads_format_version_1(tmp_path):
    """Checkpoints written before versioned npz names (fixed checkpoint.npz) still load."""
    state = make_state()
    checkpoint.save_checkpoint(tmp_path, state_pytree=state, metadata=METADATA)
    npz_path(tmp_path).rename(tmp_path / "checkpoint.npz")
    meta = tmp_path / "checkpoint.json"
    record = json.loads(meta.read_text())
    del record["npz_file"]
    meta.write_text(json.dumps({**record, "format_version": 1}))
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=state)
    assert metadata == METADATA
    assert_same_tree(restored, state)
    checkpoint.save_checkpoint(tmp_path, state_pytree=state, metadata=METADATA)  # upgrades it
    assert npz_files(tmp_path) == [npz_path(tmp_path).name]  # the legacy npz is gone


def test_unknown_format_version(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree={"a": jnp.ones(2)}, metadata={})
    meta = tmp_path / "checkpoint.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        checkpoint.read_metadata(tmp_path)


def test_shape_mismatch_names_leaf(tmp_path):
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(hidden=3), metadata=METADATA)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_checkpoint(tmp_path, like=make_state(hidden=4))
    message = str(err.value)
    assert message.startswith("checkpoint leaf .params['W_hh'] has shape (3, 3)")  # first leaf
    assert "expects (4, 4)" in message
    assert "\n" not in message


def test_structure_mismatch(tmp_path):
    params = make_state().params
    checkpoint.save_checkpoint(tmp_path, state_pytree=params, metadata={})
    with pytest.raises(CheckpointError, match=r"no leaf \['W_extra'\]"):
        checkpoint.load_checkpoint(tmp_path, like={**params, "W_extra": jnp.ones(2)})
    smaller = {k: v for k, v in params.items() if k != "b_h"}
    with pytest.raises(CheckpointError, match=r"leaf \['b_h'\] has no place"):
        checkpoint.load_checkpoint(tmp_path, like=smaller)


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    old = make_state(seed=0)
    checkpoint.save_checkpoint(tmp_path, state_pytree=old, metadata={"step": 1})
    real_write = checkpoint._write_temp

    def failing_write(directory, final_name, payload):
        if final_name == checkpoint.META_FILE:  # the npz temp is already on disk at this point
            raise OSError(28, "No space left on device")
        return real_write(directory, final_name, payload)

    monkeypatch.setattr(checkpoint, "_write_temp", failing_write)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(seed=1), metadata={"step": 2})
    old_npz = npz_path(tmp_path).name
    assert sorted(os.listdir(tmp_path)) == [old_npz, "checkpoint.json"]  # no temp files
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=old)
    assert metadata == {"step": 1}
    assert_same_tree(restored, old)


def test_crash_between_renames_keeps_previous(tmp_path, monkeypatch):
    """The new npz is in place but checkpoint.json is not replaced: the old checkpoint loads."""
    old, new = make_state(seed=0), make_state(seed=1)
    checkpoint.save_checkpoint(tmp_path, state_pytree=old, metadata={"step": 1})
    old_npz = npz_path(tmp_path).name
    real_replace = os.replace

    def crashing_replace(src, dst):
        if os.path.basename(os.fspath(dst)) == checkpoint.META_FILE:
            raise OSError(5, "Input/output error (simulated crash)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save_checkpoint(tmp_path, state_pytree=new, metadata={"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    files = npz_files(tmp_path)
    assert len(files) == 2 and old_npz in files  # the new npz landed beside the old one
    assert npz_path(tmp_path).name == old_npz  # the JSON still names the old one
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=old)
    assert metadata == {"step": 1}
    assert_same_tree(restored, old)
    for where in (tmp_path / files[0], tmp_path / files[1]):  # either npz path means the dir
        assert checkpoint.read_metadata(where) == {"step": 1}

    checkpoint.save_checkpoint(tmp_path, state_pytree=new, metadata={"step": 2})  # retry works
    assert npz_files(tmp_path) == [npz_path(tmp_path).name]  # the orphan and the old npz gone
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=new)
    assert metadata == {"step": 2}
    assert_same_tree(restored, new)


def test_old_npz_removed_after_save(tmp_path):
    (tmp_path / "notes.npz").write_bytes(b"not ours")  # other files are left alone
    (tmp_path / "checkpoint.npz").write_bytes(b"legacy")  # the version-1 npz name is ours
    first, second = make_state(seed=0), make_state(seed=1)
    checkpoint.save_checkpoint(tmp_path, state_pytree=first, metadata={"step": 1})
    first_npz = npz_path(tmp_path).name
    assert npz_files(tmp_path) == [first_npz, "notes.npz"]
    checkpoint.save_checkpoint(tmp_path, state_pytree=second, metadata={"step": 2})
    second_npz = npz_path(tmp_path).name
    assert second_npz != first_npz
    assert sorted(os.listdir(tmp_path)) == [second_npz, "checkpoint.json", "notes.npz"]
    # Saving identical arrays again reuses the same name and keeps it.
    checkpoint.save_checkpoint(tmp_path, state_pytree=second, metadata={"step": 3})
    assert sorted(os.listdir(tmp_path)) == [second_npz, "checkpoint.json", "notes.npz"]
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=second)
    assert metadata == {"step": 3}
    assert_same_tree(restored, second)


def test_load_rereads_json_after_concurrent_save(tmp_path, monkeypatch):
    """A save that commits between reading the JSON and reading its npz is followed once."""
    first, second = make_state(seed=0), make_state(seed=1)
    checkpoint.save_checkpoint(tmp_path, state_pytree=first, metadata={"step": 1})
    real_read_record = checkpoint._read_record
    calls = []

    def racing_read_record(directory, *name):
        record = real_read_record(directory, *name)
        if not calls:  # another process saves right after this load read the JSON
            checkpoint.save_checkpoint(tmp_path, state_pytree=second, metadata={"step": 2})
        calls.append(record["npz_file"])
        return record

    monkeypatch.setattr(checkpoint, "_read_record", racing_read_record)
    restored, metadata = checkpoint.load_checkpoint(tmp_path, like=second)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert metadata == {"step": 2}
    assert_same_tree(restored, second)


def test_save_writes_npz_before_json(tmp_path, monkeypatch):
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync

    def spy_replace(src, dst):
        assert ".tmp" in os.path.basename(src)  # always from a temp file in the same folder
        assert os.path.dirname(os.fspath(src)) == os.path.dirname(os.fspath(dst))
        replaced.append(os.path.basename(dst))
        return real_replace(src, dst)

    def spy_fsync(fd):
        synced.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
                       if os.path.exists("/proc/self/fd") else "?", list(replaced)))
        return real_fsync(fd)

    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    checkpoint.save_checkpoint(tmp_path, state_pytree=make_state(), metadata=METADATA)
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert re.fullmatch(r"arrays-[0-9a-f]{16}\.npz", record["npz_file"])
    assert replaced == [record["npz_file"], "checkpoint.json"]
    assert record["format_version"] == checkpoint.FORMAT_VERSION
    # Both temp files are fsynced before any rename; the folder after each rename where the
    # platform can open a directory (not on Windows).
    assert all(done == [] for _, done in synced[:2])
    assert [done for _, done in synced[2:]] in ([], [replaced[:1], replaced])
    if synced[0][0] != "?":
        assert ".tmp" in synced[0][0] and ".tmp" in synced[1][0]
        assert synced[2:] == [] or synced[2][0] == synced[3][0] == tmp_path.name
    assert {leaf["key"] for leaf in record["leaves"]} >= {".params['W_xh']", ".step"}


def test_check_compatible():
    metadata = {"arch": "lstm", "hidden_size": 256, "fractions": [0.9, 0.05, 0.05]}
    checkpoint.check_compatible(metadata, {"arch": "lstm", "fractions": (0.9, 0.05, 0.05)})
    with pytest.raises(CheckpointError) as err:
        checkpoint.check_compatible(metadata, {"hidden_size": 512, "arch": "gru", "layers": 2})
    message = str(err.value)
    assert "checkpoint has hidden_size=256 but flags ask for 512" in message
    assert "arch='lstm' but flags ask for 'gru'" in message and "no layers" in message
    assert message.endswith("pass matching flags or a different --checkpoint")
