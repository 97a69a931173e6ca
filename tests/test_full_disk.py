"""A full disk, an exceeded quota or a failing device (issue 24), without root: the errors are
injected where the writes happen. A checkpoint save failing at any of its steps, a metrics line
or a results file failing: one `StorageError` line naming the folder, the bytes needed and free
and what is intact; the previous checkpoint loads bit for bit; nothing half-written stays.
(The launchers' line, exit status and resume command: tests/test_launchers.py.)
"""
import errno
import json
import os
import re
import shutil
import tempfile

import jax
import numpy as np
import pytest

from experiments import common
from jaxrnn import checkpoint, files, loop
from jaxrnn.errors import ConfigError, JaxrnnError, StorageError

TEXT = "".join(f"line {i}: the rest is silence.\n" for i in range(150))
CODES = [errno.ENOSPC, errno.EDQUOT, errno.EIO]
STAGES = ["npz", "records", "rename", "commit"]


def _quiet(*args):
    pass


def _one_line(error):
    text = str(error)
    assert text and "\n" not in text, text
    return text


def _state(seed):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {"params": {"W": jax.random.normal(keys[0], (16, 8)),
                       "b": jax.random.normal(keys[1], (8,), jax.numpy.bfloat16)},
            "mu": jax.random.normal(keys[2], (16, 8)), "step": np.int32(seed), "key": keys[0]}


def _snapshot(folder):
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def _assert_bit_identical(got, want):
    leaves_got, leaves_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(leaves_got) == len(leaves_want)
    for a, b in zip(leaves_got, leaves_want):
        if jax.dtypes.issubdtype(getattr(b, "dtype", None), jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _fail_at(monkeypatch, stage, code):
    """Make ``stage`` of the next save fail with ``code``: "npz"/"records": writing the arrays /
    ``checkpoint.json`` temp file stops half-way (the disk fills while it is written); "rename":
    moving the arrays file into place; "commit": renaming ``checkpoint.json`` (the commit)."""
    error = OSError(code, os.strerror(code))
    if stage in ("npz", "records"):
        pattern = r"arrays-[0-9a-f]+\.npz\.tmp" if stage == "npz" else r"checkpoint\.json\.tmp"
        real_mkstemp, real_fdopen, doomed = tempfile.mkstemp, os.fdopen, set()

        def mkstemp(*args, **kwargs):
            handle, path = real_mkstemp(*args, **kwargs)
            if re.fullmatch(pattern, kwargs.get("prefix") or ""):
                doomed.add(handle)
            return handle, path

        class HalfWritten:
            def __init__(self, stream):
                self.stream = stream

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.stream.close()

            def write(self, payload):
                self.stream.write(payload[:len(payload) // 2])
                self.stream.flush()
                raise error

        def fdopen(handle, *args, **kwargs):
            stream = real_fdopen(handle, *args, **kwargs)
            return HalfWritten(stream) if handle in doomed else stream

        monkeypatch.setattr(checkpoint.tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(checkpoint.os, "fdopen", fdopen)
    else:
        real_replace = os.replace
        target = r"arrays-[0-9a-f]+\.npz" if stage == "rename" else r"checkpoint\.json"

        def replace(source, destination):
            if re.fullmatch(target, os.path.basename(os.fspath(destination))):
                raise error
            return real_replace(source, destination)

        monkeypatch.setattr(checkpoint.os, "replace", replace)


@pytest.mark.parametrize("code", CODES, ids=[errno.errorcode[code] for code in CODES])
@pytest.mark.parametrize("stage", STAGES)
def test_a_save_failing_at_any_step_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch,
                                                                        stage, code):
    folder, old, new = tmp_path / "checkpoint", _state(1), _state(2)
    checkpoint.save_checkpoint(folder, state_pytree=old, metadata={"step": 1}, step=1, best=True)
    before = _snapshot(folder)
    checkpoint.save_checkpoint(tmp_path / "reference", state_pytree=new, metadata={"step": 2},
                               step=2, best=True)
    needed = sum(os.path.getsize(tmp_path / "reference" / name)
                 for name in os.listdir(tmp_path / "reference"))   # the npz and 3 records
    _fail_at(monkeypatch, stage, code)
    with pytest.raises(StorageError) as caught:
        checkpoint.save_checkpoint(folder, state_pytree=new, metadata={"step": 2}, step=2,
                                   best=True)
    monkeypatch.undo()
    error = caught.value
    assert isinstance(error, OSError) and isinstance(error, JaxrnnError) and error.errno == code
    message = _one_line(error)
    assert message.startswith(
        f"saving the checkpoint of step 2 in {folder} failed ({os.strerror(code)}, "
        f"{errno.errorcode[code]}): it needs {needed:,} bytes")
    free = int(re.search(r", ([0-9,]+) bytes( \([^)]*\))? are free in ", message)
               .group(1).replace(",", ""))
    assert abs(free - shutil.disk_usage(folder).free) < 2 ** 30
    assert f" are free in {folder}" in message
    assert (f"; the last checkpoint saved, {folder / 'checkpoint.json'} (step 1), is intact; "
            "free space there") in message
    assert message.endswith("free space there")
    after = _snapshot(folder)
    assert not [name for name in after if ".tmp" in name]           # no temp file left
    for name, payload in before.items():
        if name != "best.json" or stage != "commit":       # committed before checkpoint.json
            assert after[name] == payload, name
    restored, metadata = checkpoint.load_checkpoint(folder, like=old)
    assert metadata == {"step": 1}
    _assert_bit_identical(restored, old)
    for name in after:                                    # whatever is left loads
        if name.endswith(".json"):
            checkpoint.load_checkpoint(folder / name)
    # Once there is room, the same save succeeds and leaves one checkpoint.
    checkpoint.save_checkpoint(folder, state_pytree=new, metadata={"step": 2}, step=2, best=True)
    assert sorted(os.listdir(folder)) == sorted(os.listdir(tmp_path / "reference"))
    _assert_bit_identical(checkpoint.load_checkpoint(folder, like=new)[0], new)


def test_other_os_errors_are_not_reworded(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, state_pytree=_state(1), metadata={})
    _fail_at(monkeypatch, "npz", errno.EACCES)
    with pytest.raises(PermissionError) as caught:
        checkpoint.save_checkpoint(tmp_path, state_pytree=_state(2), metadata={})
    assert not isinstance(caught.value, StorageError)


def test_a_log_line_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    files.append_line(path, '{"step": 1}\n')
    real_write = os.write

    def half_then_full(handle, payload):
        real_write(handle, bytes(payload[:len(payload) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        files.append_line(path, '{"step": 2, "loss": 1.5}\n')
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'


def test_results_and_plots_are_written_whole_or_reported(tmp_path, monkeypatch):
    """`write_atomically` (a study's results.json, table.md and plots; --json/--plot files):
    the old file stays, no temp file, one StorageError line; common.write_output passes it on
    instead of calling it an unwritable path."""
    path = tmp_path / "out" / "results.json"
    files.write_atomically(path, b"old")
    monkeypatch.setattr(os, "fsync", lambda handle: (_ for _ in ()).throw(
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))))
    with pytest.raises(StorageError) as caught:
        files.write_atomically(path, b"x" * 5000)
    assert _one_line(caught.value).startswith(
        f"writing {path} failed (Disk quota exceeded, EDQUOT): it needs 5,000 bytes (4.9 KiB), ")
    assert "(your quota may allow less); free space there" in str(caught.value)
    with pytest.raises(StorageError):
        common.write_output(path, b"new", "--json")
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["results.json"] and path.read_bytes() == b"old"
    with pytest.raises(ConfigError, match="could not write --json"):
        common.write_output(tmp_path, b"new", "--json")          # a folder: still a ConfigError


def _fail_line(monkeypatch, number):
    """The ``number``-th line appended from now on half-lands, then the disk is full."""
    real_append, real_write, lines = files.append_line, os.write, []

    def append(path, line):
        lines.append(line)
        if len(lines) != number:
            return real_append(path, line)

        def half(handle, payload):
            real_write(handle, bytes(payload[:len(payload) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as patch:
            patch.setattr(os, "write", half)
            return real_append(path, line)

    monkeypatch.setattr(files, "append_line", append)
    return lines


@pytest.mark.parametrize("number,rerun", [(1, "--overwrite"), (4, "--resume")])
def test_a_metrics_line_failing_stops_training_with_the_checkpoint_to_resume(
        tmp_path, monkeypatch, number, rerun, tiny_run_config):
    """Line 1: the first train record (no checkpoint yet); line 4: the train record of step 4,
    after the checkpoint of step 2."""
    lines = _fail_line(monkeypatch, number)
    with pytest.raises(StorageError) as caught:
        loop.train(tiny_run_config(TEXT), log=_quiet)
    metrics, folder = tmp_path / "run" / "metrics.jsonl", tmp_path / "run" / "checkpoint"
    message = _one_line(caught.value)
    assert message.startswith(f"writing {metrics} failed (No space left on device, ENOSPC): "
                              f"it needs {len(lines[-1].encode()):,} bytes, ")
    assert caught.value.rerun == rerun
    records = [json.loads(line) for line in metrics.read_text().splitlines()]   # no half line
    assert [record["kind"] for record in records] == ["train", "val", "train", "val"][:number - 1]
    if number == 1:
        assert f"; no checkpoint was saved in {folder} yet; free space there" in message
    else:
        assert (f"; the last checkpoint saved, {folder / 'checkpoint.json'} (step 2), is intact"
                in message)
        assert checkpoint.read_metadata(folder)["step"] == 2
    assert not files.locked_by_anyone(tmp_path / "run")


def test_a_sweep_on_a_full_disk_is_run_again(tmp_path, monkeypatch, tiny_run_config):
    """No checkpoints: the same command runs it again (line 2: the run's first val record)."""
    _fail_line(monkeypatch, 2)
    with pytest.raises(StorageError) as caught:
        loop.sweep(tiny_run_config(TEXT, output_dir=str(tmp_path / "sweep")), [0], log=_quiet)
    assert caught.value.rerun == ""
    assert _one_line(caught.value).startswith(f"writing {tmp_path / 'sweep' / 'runs'}")
    assert not files.locked_by_anyone(tmp_path / "sweep")
