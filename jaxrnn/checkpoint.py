"""Atomic, checksummed, pickle-free checkpoints of any JAX pytree.

A checkpoint is a directory with two files:

* ``arrays-<sha256[:16]>.npz`` — one array per pytree leaf, keyed by
  ``jax.tree_util.keystr(path)`` (``"['params']['W_xh']"``, ``"[1][0].mu['b']"``), written with
  `np.savez` and read back with ``allow_pickle=False``: object arrays are refused, so loading never
  runs code. Its name carries the start of its own SHA-256, so a new save never overwrites the
  arrays that the current ``checkpoint.json`` names (identical contents give the identical file).
* ``checkpoint.json`` — the commit record: the caller's metadata (config, vocabulary, step, data
  position, best validation loss, ...), the format version, the name of the npz file, every leaf's
  key, shape and dtype, and the SHA-256 and size of the npz.

Saving writes both files completely to fsynced temp files in the same folder first (so any error
while serialising leaves the previous checkpoint untouched), renames the npz to its versioned name,
fsyncs the folder, then atomically replaces ``checkpoint.json`` (the commit point), fsyncs the
folder again, and only then deletes the npz files the new JSON no longer names. A crash at any
instant leaves either the old JSON with the old npz (still present) or the new JSON with the new
npz; an interrupted save at worst leaves an unnamed npz behind, which the next save deletes.
So a save needs room for one more arrays file (and its records) beside those already there: a
full disk, an exceeded quota or a failing device (ENOSPC, EDQUOT, EIO) during any of its steps is
one `jaxrnn.errors.StorageError` line naming the folder, the bytes needed and free, and the
previous checkpoint, which stays intact. Loading reads the JSON, then the npz it names.
Checkpoints of format version 1 (a fixed ``checkpoint.npz``) still load.

Several checkpoints share one folder as several commit records naming their npz files:
``checkpoint.json`` is always the latest; a save given a ``step`` also commits ``step-<step>.json``
(the ``keep`` most recent of those are kept) and, with ``best=True``, ``best.json``. All records of
one save are written to fsynced temp files first and renamed after the npz, ``checkpoint.json``
last; only then are the step records beyond ``keep`` deleted, then every npz that no remaining
record names, then the temp files of saves that were killed midway. Identical arrays give one npz,
so ``best.json`` and ``checkpoint.json`` of the same step share it. `load_checkpoint` and
`read_metadata` take ``which="latest"`` (``checkpoint.json``) or ``"best"`` (``best.json``), or
the path of any record.

Restoring takes an optional template pytree (``like``; arrays or `jax.ShapeDtypeStruct` leaves, e.g.
from `jax.eval_shape`) and rebuilds that exact structure, checking every leaf's presence and shape.
Leaves come back as NumPy arrays with their saved dtype (bfloat16 included); the caller places
them on devices. Typed PRNG keys (`jax.random.key`) are stored as their uint32 key data and
rewrapped. Python scalar leaves in the template come back as Python scalars of the same type.
"""
import hashlib
import io
import json
import os
import pathlib
import re
import tempfile
import time
import zipfile
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import files
from jaxrnn.errors import CheckpointError

FORMAT_NAME = "jaxrnn-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_FILE = "checkpoint.json"
BEST_FILE = "best.json"
RECORDS = {"latest": META_FILE, "best": BEST_FILE}  # what --which names
_STEP_RE = re.compile(r"step-([0-9]+)\.json")
_TEMP_RE = re.compile(r"(arrays-[0-9a-f]{16}\.npz|checkpoint\.json|best\.json|step-[0-9]+\.json)"
                      r"\.tmp\w+")
LEGACY_ARRAYS_FILE = "checkpoint.npz"  # the fixed npz name of format version 1
_ARRAYS_RE = re.compile(r"arrays-[0-9a-f]{16}\.npz")
_REDO = "re-train or pick another --checkpoint"


# ----------------------------------------------------------------------------------------------
# Saving.


def _json_default(value):
    """Lets NumPy/JAX scalars (e.g. a float32 loss) into the metadata; anything else is an error."""
    if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
        return np.asarray(value).item()
    raise TypeError(f"checkpoint metadata must be JSON-serialisable, got {type(value).__name__}: "
                    f"{value!r:.60}")


def _is_prng_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _flatten(state_pytree) -> Tuple[Dict[str, np.ndarray], list]:
    """Pytree -> ({keystr: host array}, [leaf records for the JSON])."""
    arrays, records = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state_pytree)[0]:
        key = jax.tree_util.keystr(path)
        record = {"key": key}
        if _is_prng_key(leaf):
            record.update(prng_impl=str(jax.random.key_impl(leaf)), key_shape=list(leaf.shape))
            leaf = jax.random.key_data(leaf)
        array = np.asarray(jax.device_get(leaf))
        if array.dtype.hasobject:
            raise TypeError(f"checkpoint leaf {key} is an object array ({type(leaf).__name__}); "
                            f"only numeric, bool and string arrays can be saved")
        if key in arrays:
            raise ValueError(f"two checkpoint leaves share the key {key}")
        record.update(shape=list(array.shape), dtype=array.dtype.name)
        arrays[key] = array
        records.append(record)
    return arrays, records


def arrays_file_name(sha256_hex: str) -> str:
    """The versioned npz name for arrays whose SHA-256 is `sha256_hex`."""
    return f"arrays-{sha256_hex[:16]}.npz"


def _write_temp(directory: pathlib.Path, final_name: str, payload: bytes) -> str:
    """Writes `payload` to a new temp file beside `final_name` and fsyncs it; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=final_name + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def step_file_name(step: int) -> str:
    """The commit record of the checkpoint of ``step`` (kept besides ``checkpoint.json``)."""
    return f"step-{step:09d}.json"


def _pause():
    """Test hook for the kill tests: sleep ``$JAXRNN_TEST_SLOW_SAVE`` seconds between the steps
    of a save, so that a kill can land inside one."""
    seconds = float(os.environ.get("JAXRNN_TEST_SLOW_SAVE") or 0)
    if seconds > 0:
        time.sleep(seconds)


def save_checkpoint(directory: os.PathLike, *, state_pytree: Any, metadata: Dict[str, Any],
                    step: int = None, keep: int = 1, best: bool = False) -> pathlib.Path:
    """Saves a pytree and its metadata atomically to ``directory/checkpoint.{npz,json}``.

    Args:
      directory: folder to write (created if needed); an existing checkpoint there is replaced.
      state_pytree: any pytree of arrays (jax or numpy, any shape/dtype, typed PRNG keys included)
        and Python scalars: dicts, lists, tuples, NamedTuples such as optax states. Arrays must be
        fully addressable from this process.
      metadata: JSON-serialisable dict (NumPy/JAX scalars are converted with ``.item()``).
      step: when given, also commit ``step-<step>.json``; after the commit, keep the ``keep``
        most recent step records and delete the others, and those of later steps (left by an
        earlier run in the same folder).
      keep: how many step records to keep (>= 1).
      best: also commit ``best.json`` (the caller decides what is best).

    Returns:
      The checkpoint directory.

    Raises:
      TypeError: metadata not JSON-serialisable, or a leaf is an object array; nothing is written.
      jaxrnn.errors.StorageError: the disk is full, a quota is exceeded or the device fails
        (ENOSPC, EDQUOT, EIO) at any step of the save: one line naming the folder, the bytes the
        save needed (the arrays file and the records), the bytes free there and the previous
        checkpoint, which is intact; temp files removed. An OSError, otherwise.
    """
    directory = pathlib.Path(directory)
    arrays, records = _flatten(state_pytree)
    metadata_json = json.loads(json.dumps(metadata, default=_json_default))  # fail before writing
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz_bytes = buffer.getvalue()
    npz_sha256 = hashlib.sha256(npz_bytes).hexdigest()
    npz_name = arrays_file_name(npz_sha256)
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "npz_file": npz_name,
        "npz_sha256": npz_sha256,
        "npz_bytes": len(npz_bytes),
        "leaves": records,
        "metadata": metadata_json,
    }
    json_bytes = (json.dumps(record, indent=1) + "\n").encode("utf-8")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    record_names = ([step_file_name(step)] if step is not None else []) \
        + ([BEST_FILE] if best else []) + [META_FILE]      # checkpoint.json last: the commit
    needed = len(npz_bytes) + len(record_names) * len(json_bytes)
    what = f"saving the checkpoint{'' if step is None else f' of step {step}'} in {directory}"
    with files.storage_errors(what, needed, directory, note=lambda: describe_latest(directory)):
        _commit(directory, npz_name, npz_bytes, record_names, json_bytes)
    _pause()
    if step is not None:
        _remove_old_steps(directory, step, keep)
    _remove_stale_arrays(directory, keep=npz_name)
    return directory


def _commit(directory: pathlib.Path, npz_name: str, npz_bytes: bytes, record_names: list,
            json_bytes: bytes) -> None:
    """The writes of a save: every file to an fsynced temp file, the npz renamed first, the
    records after it (``checkpoint.json`` last: the commit point). On any error the temp files
    are removed and the error raised; the previous checkpoint is untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    temps = []
    try:
        temps.append(_write_temp(directory, npz_name, npz_bytes))
        for name in record_names:
            temps.append(_write_temp(directory, name, json_bytes))
        _pause()
        # Never the npz the current JSON names, unless it holds these very bytes.
        os.replace(temps[0], directory / npz_name)
        files.fsync_dir(directory)  # the npz entry is durable before the JSON that names it
        for tmp, name in zip(temps[1:], record_names):
            _pause()
            os.replace(tmp, directory / name)  # checkpoint.json's rename is the commit point
        files.fsync_dir(directory)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def describe_latest(directory: os.PathLike) -> str:
    """What a failed write leaves to continue from, for its message: ``the last checkpoint
    saved, DIR/checkpoint.json (step N), is intact``, or that none was saved in ``directory``."""
    path = pathlib.Path(directory) / META_FILE
    if not path.is_file():
        return f"no checkpoint was saved in {directory} yet"
    try:
        step = read_metadata(directory).get("step")
    except (CheckpointError, AttributeError):
        step = None
    return (f"the last checkpoint saved, {path}"
            + (f" (step {step})" if isinstance(step, int) else "") + ", is intact")


def _remove_old_steps(directory: pathlib.Path, step: int, keep: int) -> None:
    """Deletes step records beyond the ``keep`` most recent up to ``step``, and any of later
    steps; best effort."""
    steps = sorted(int(match.group(1)) for match in map(_STEP_RE.fullmatch, os.listdir(directory))
                   if match)
    kept = [old for old in steps if old <= step][-keep:]
    for old in steps:
        if old not in kept:
            try:
                os.unlink(directory / step_file_name(old))
            except OSError:
                pass


def _remove_stale_arrays(directory: pathlib.Path, keep: str) -> None:
    """Deletes the npz files (versioned or legacy) that no commit record names, except `keep`,
    and temp files of interrupted saves; best effort. An unreadable record stops the npz
    deletion (its npz might be the one it names)."""
    named = {keep}
    for entry in os.listdir(directory):
        if entry in (META_FILE, BEST_FILE) or _STEP_RE.fullmatch(entry):
            try:
                record = json.loads((directory / entry).read_text(encoding="utf-8"))
                named.add(record.get("npz_file", LEGACY_ARRAYS_FILE))
            except (OSError, ValueError, AttributeError):
                named = None
                break
    for entry in os.listdir(directory):
        ours = entry == LEGACY_ARRAYS_FILE or _ARRAYS_RE.fullmatch(entry)
        if (ours and named is not None and entry not in named) or _TEMP_RE.fullmatch(entry):
            try:
                _pause()
                os.unlink(directory / entry)
            except OSError:
                pass  # the new checkpoint is committed; a leftover file is harmless


# ----------------------------------------------------------------------------------------------
# Loading.


def _locate(path: os.PathLike, which: str = "latest") -> Tuple[pathlib.Path, str]:
    """``(folder, record name)``: ``path`` is the folder (the record is ``which``'s), the path
    of a record (``checkpoint.json``, ``best.json``, ``step-*.json``), or of a .npz in it."""
    if which not in RECORDS:
        raise CheckpointError(f"unknown checkpoint {which!r}; choose one of "
                              f"{', '.join(RECORDS)}")
    path = pathlib.Path(path).expanduser()
    if path.suffix in (".json", ".npz") and not path.is_dir():
        if path.suffix == ".json" and which != "latest":
            raise CheckpointError(f"{path} names one checkpoint record; pass its folder to "
                                  f"choose {which!r}, or drop the choice")
        return path.parent, path.name if path.suffix == ".json" else RECORDS[which]
    return path, RECORDS[which]


def _checkpoint_dir(path: os.PathLike) -> pathlib.Path:
    """Accepts the directory or a path to a record or a .npz file inside it."""
    return _locate(path)[0]


def _read_record(directory: pathlib.Path, name: str = META_FILE) -> dict:
    """Parses and sanity-checks the commit record ``name`` (default ``checkpoint.json``)."""
    meta_path = directory / name
    if not meta_path.is_file():
        if name == BEST_FILE:
            raise CheckpointError(f"no best checkpoint at {directory} ({BEST_FILE} is missing; it "
                                  f"is written at evaluations); choose the latest instead")
        raise CheckpointError(f"no checkpoint at {directory} ({name} is missing); train one "
                              f"first or pass a different --checkpoint")
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_path} is unreadable or truncated ({type(err).__name__}); "
                              f"{_REDO}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path} is not a jaxrnn checkpoint; {_REDO}")
    version = record.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{meta_path} has format version {version}, this jaxrnn reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}; {_REDO}")
    if version == 1:
        record.setdefault("npz_file", LEGACY_ARRAYS_FILE)
    if not {"npz_file", "npz_sha256", "leaves", "metadata"} <= record.keys():
        raise CheckpointError(f"{meta_path} is missing fields; {_REDO}")
    npz_file = record["npz_file"]
    if not (isinstance(npz_file, str) and (_ARRAYS_RE.fullmatch(npz_file)
                                           or (version == 1 and npz_file == LEGACY_ARRAYS_FILE))):
        raise CheckpointError(f"{meta_path} names an invalid arrays file {npz_file!r:.60}; "
                              f"{_REDO}")
    return record


def read_metadata(directory: os.PathLike, which: str = "latest") -> Dict[str, Any]:
    """The caller's metadata dict of a checkpoint, from its JSON only (the npz is not read)."""
    return _read_record(*_locate(directory, which))["metadata"]


def _read_arrays(directory: pathlib.Path, record: dict) -> Dict[str, np.ndarray]:
    """Reads the npz the record names, checks its SHA-256; returns {keystr: array} in saved dtypes.

    Raises FileNotFoundError (not a CheckpointError) when that npz is absent, so that
    `load_checkpoint` can re-read a JSON that a concurrent save replaced in the meantime.
    """
    npz_path = directory / record["npz_file"]
    try:
        payload = npz_path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CheckpointError(f"cannot read {npz_path} ({err.strerror or err}); {_REDO}") from None
    if hashlib.sha256(payload).hexdigest() != record["npz_sha256"]:
        raise CheckpointError(f"{npz_path} is truncated or corrupted ({len(payload)} bytes, "
                              f"SHA-256 differs from {META_FILE}); {_REDO}")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"{npz_path} cannot be decoded ({err}); {_REDO}") from None
    for leaf in record["leaves"]:
        key = leaf["key"]
        if key not in arrays or list(arrays[key].shape) != leaf["shape"]:
            raise CheckpointError(f"{npz_path} does not match {META_FILE} at leaf {key}; {_REDO}")
        if arrays[key].dtype.name != leaf["dtype"]:  # e.g. bfloat16, which np.save stores as V2
            try:
                wanted = jnp.dtype(leaf["dtype"])
            except TypeError:
                wanted = None
            if wanted is None or arrays[key].dtype.kind != "V" \
                    or arrays[key].dtype.itemsize != wanted.itemsize:
                raise CheckpointError(f"{META_FILE} says leaf {key} is {leaf['dtype']!r:.20} but "
                                      f"{npz_path.name} holds {arrays[key].dtype.name}; {_REDO}")
            arrays[key] = arrays[key].view(wanted)
    return arrays


def _restore_leaf(key: str, template, array: np.ndarray, leaf_record: dict):
    """One leaf in the template's kind: typed PRNG key, Python scalar, or NumPy array."""
    if "prng_impl" in leaf_record:
        expected = tuple(leaf_record["key_shape"])
        restored = jax.random.wrap_key_data(array, impl=leaf_record["prng_impl"])
    else:
        expected, restored = array.shape, array
    want = tuple(getattr(template, "shape", np.shape(template)))
    if want != expected:
        raise CheckpointError(f"checkpoint leaf {key} has shape {expected} but the model expects "
                              f"{want}; pass matching flags or a different --checkpoint")
    if isinstance(template, (bool, int, float, complex)):
        return type(template)(array.item())
    return restored


def load_checkpoint(directory: os.PathLike, like: Any = None, which: str = "latest"
                    ) -> Tuple[Any, Dict[str, Any]]:
    """Loads and verifies a checkpoint written by `save_checkpoint`.

    Args:
      directory: the checkpoint folder, or the path of one of its records or of a .npz in it;
        the arrays are always those that the record names.
      like: optional template pytree with the structure that was saved (leaves: arrays,
        `jax.ShapeDtypeStruct`s, typed PRNG keys or Python scalars). Only shapes are compared.

    Returns:
      (state, metadata): with `like`, `state` has `like`'s structure and NumPy leaves of the saved
      dtypes (typed keys rewrapped, Python scalars kept Python); without it, `state` is a dict
      {keystr: np.ndarray} in save order. `metadata` is the dict given to `save_checkpoint`.

    Raises:
      CheckpointError: missing, truncated or corrupted files, or a leaf of `like` that is missing
        from the checkpoint, has a different shape, or a checkpoint leaf absent from `like`.
      which: "latest" (``checkpoint.json``) or "best" (``best.json``), when ``directory`` is the
        folder.
    """
    directory, name = _locate(directory, which)
    record = _read_record(directory, name)
    try:
        arrays = _read_arrays(directory, record)
    except FileNotFoundError as err:
        # A save in another process may have committed a new JSON and deleted the npz that the
        # JSON read above names: if checkpoint.json has moved on since, read the new pair once.
        newer = _read_record(directory, name)
        if newer["npz_file"] == record["npz_file"]:
            raise CheckpointError(f"cannot read {directory / record['npz_file']} "
                                  f"({err.strerror or err}); {_REDO}") from None
        record = newer
        try:
            arrays = _read_arrays(directory, record)
        except FileNotFoundError as err2:
            raise CheckpointError(f"cannot read {directory / record['npz_file']} "
                                  f"({err2.strerror or err2}); {_REDO}") from None
    by_key = {leaf["key"]: leaf for leaf in record["leaves"]}
    if like is None:
        return {key: arrays[key] for key in by_key}, record["metadata"]
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    restored = []
    for path, template in paths_leaves:
        key = jax.tree_util.keystr(path)
        if key not in by_key:
            raise CheckpointError(f"checkpoint has no leaf {key} that the model expects; pass "
                                  f"matching flags or a different --checkpoint")
        restored.append(_restore_leaf(key, template, arrays[key], by_key[key]))
    extra = by_key.keys() - {jax.tree_util.keystr(p) for p, _ in paths_leaves}
    if extra:
        first = next(k for k in by_key if k in extra)
        raise CheckpointError(f"checkpoint leaf {first} has no place in the model ({len(extra)} "
                              f"unexpected leaves); pass matching flags or a different "
                              f"--checkpoint")
    return jax.tree_util.tree_unflatten(treedef, restored), record["metadata"]


def check_compatible(metadata: Dict[str, Any], expected: Dict[str, Any]) -> None:
    """Raises a `CheckpointError` listing every key where `metadata` disagrees with `expected`.

    Values are compared after a JSON round trip, so tuples equal lists as they do once saved.
    Example message: ``checkpoint has hidden_size=256 but flags ask for 512; pass matching flags
    or a different --checkpoint``.
    """
    expected = json.loads(json.dumps(expected, default=_json_default))
    problems = []
    for key, want in expected.items():
        if key not in metadata:
            problems.append(f"no {key} but flags ask for {want!r}")
        elif metadata[key] != want:
            problems.append(f"{key}={metadata[key]!r} but flags ask for {want!r}")
    if problems:
        raise CheckpointError(f"checkpoint has {', '.join(problems)}; pass matching flags or a "
                              f"different --checkpoint")
