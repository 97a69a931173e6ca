"""One writer per folder (issue 24): `jaxrnn.files.folder_lock` refuses a second process with one
line naming the holder, a lock whose process was SIGKILLed never blocks, and a training checks
and writes its folder only while it holds the lock; two launchers started into one folder at once
end with one run in it, the other refused with exit status 2.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import track

from jaxrnn import checkpoint, files, loop, runchecks
from jaxrnn.errors import ConfigError, FolderBusyError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"line {i}: brevity is the soul of wit.\n" for i in range(150))
# A process that takes the lock of argv[1], says so, and holds it until its stdin closes.
HOLDER = ("import sys\nfrom jaxrnn import files\n"
          "with files.folder_lock(sys.argv[1], '--output_dir'):\n"
          "    print('locked', flush=True)\n    sys.stdin.read()\n")


def _quiet(*args):
    pass


def _holder(folder):
    """A running process holding ``folder``'s lock."""
    process = track(subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True))
    assert process.stdout.readline() == "locked\n", process.stderr.read()
    return process


def _one_line(error):
    text = str(error)
    assert text and "\n" not in text, text
    return text


def test_a_second_process_is_refused_with_one_line_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    assert files.locked_by_anyone(folder)
    with pytest.raises(FolderBusyError) as caught:
        with files.folder_lock(folder, "--output_dir"):
            pytest.fail("took a lock another process holds")
    message = _one_line(caught.value)
    assert message.startswith(f"--output_dir={folder} is being written by another process "
                              f"(pid {holder.pid} on host ")
    assert "-c import sys from jaxrnn import files" in message            # its command line
    assert message.endswith("wait for it to end or stop it, or pass another --output_dir")
    holder.stdin.close()                                   # the holder ends: the lock is free
    assert holder.wait(timeout=60) == 0
    with files.folder_lock(folder, "--output_dir"):
        assert f"pid {os.getpid()} on host" in (folder / files.LOCK_FILE).read_text()
    assert (folder / files.LOCK_FILE).read_text() == ""    # released: no holder named


def test_a_lock_left_by_a_sigkilled_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    stale = (folder / files.LOCK_FILE).read_text()
    assert f"pid {holder.pid} " in stale
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    assert (folder / files.LOCK_FILE).read_text() == stale      # its words stay, its lock not
    assert not files.locked_by_anyone(folder)
    with files.folder_lock(folder, "--output_dir"):
        assert (folder / files.LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_the_lock_is_reentrant_in_a_process_and_released_on_errors(tmp_path):
    folder = tmp_path / "a" / "b"
    assert not files.locked_by_anyone(folder)
    with pytest.raises(RuntimeError):
        with files.folder_lock(folder):                 # creates the folder
            with files.folder_lock(folder):             # nested: no second flock, no deadlock
                assert files.locked_by_anyone(folder)
            assert files.locked_by_anyone(folder)       # the outer block still holds it
            raise RuntimeError("boom")
    assert not files.locked_by_anyone(folder)
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        with files.folder_lock(tmp_path / "a_file", "--output_dir"):
            pass
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_training_checks_and_writes_its_folder_only_under_the_lock(tmp_path, monkeypatch,
                                                                  tiny_run_config):
    """The occupied-folder check and every write (each metrics line, each checkpoint) happen
    while the folder is locked; the lock is released when `train` returns."""
    config = tiny_run_config(TEXT)
    folder = tmp_path / "run"
    seen = []

    def spy(name, function):
        def wrapped(*args, **kwargs):
            seen.append((name, files.locked_by_anyone(folder)))
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(runchecks, "prepare_output_dir",
                        spy("check", runchecks.prepare_output_dir))
    monkeypatch.setattr(files, "append_line", spy("metrics", files.append_line))
    monkeypatch.setattr(checkpoint, "save_checkpoint", spy("save", checkpoint.save_checkpoint))
    loop.train(config, log=_quiet)
    assert [name for name, _ in seen] == ["check", "metrics", "metrics", "save", "metrics",
                                          "metrics", "save", "metrics"]   # ... the test line
    assert all(locked for _, locked in seen), seen
    assert not files.locked_by_anyone(folder)


def test_training_into_a_folder_another_process_writes_is_refused(tmp_path, tiny_run_config):
    """Refused before the folder is checked (so the message says what is going on, not 'already
    holds a run') and before anything in it changes."""
    config = tiny_run_config(TEXT)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"kind": "train"}\n')        # the other run's
    holder = _holder(folder)
    with pytest.raises(FolderBusyError) as caught:
        loop.train(config, log=_quiet)
    assert f"is being written by another process (pid {holder.pid} " in _one_line(caught.value)
    assert sorted(os.listdir(folder)) == [files.LOCK_FILE, "metrics.jsonl"]
    assert (folder / "metrics.jsonl").read_text() == '{"kind": "train"}\n'



def test_a_sweep_into_a_folder_another_process_writes_is_refused(tmp_path, tiny_run_config):
    """The sweep takes the same lock (one runner with `train`): refused before anything in the
    folder is written, and its lock is released after a sweep that ran."""
    config = tiny_run_config(TEXT)
    folder = tmp_path / "run"
    holder = _holder(folder)
    with pytest.raises(FolderBusyError) as caught:
        loop.sweep(config, [0], log=_quiet)
    assert f"is being written by another process (pid {holder.pid} " in _one_line(caught.value)
    assert sorted(os.listdir(folder)) == [files.LOCK_FILE]
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0
    loop.sweep(config, [0], log=_quiet)
    assert (folder / "sweep.jsonl").exists() and not files.locked_by_anyone(folder)

def _launch(tmp_path, arch):
    flags = ["--hidden_size=8", "--batch_size=2", "--seq_len=8", "--num_steps=40",
             "--steps_per_call=10", "--eval_every=20", "--log_every=10", "--sample_length=5",
             "--eval_batch_size=2", "--warmup_steps=0", f"--data={tmp_path / 'corpus.txt'}",
             f"--output_dir={tmp_path / 'run'}", f"--arch={arch}"]
    return track(subprocess.Popen([sys.executable, "-m", "experiments.train", *flags], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "JAX_PLATFORMS": "cpu"}))


def test_two_trainings_started_into_one_folder_leave_one_run(tmp_path):
    """The issue's case: an LSTM and a GRU started into one --output_dir a moment apart. One
    trains and exits 0; the other exits 2 with one line naming the winner; the folder holds the
    winner's checkpoint and its metrics only."""
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    lstm = _launch(tmp_path, "lstm")
    time.sleep(0.5)
    gru = _launch(tmp_path, "gru")
    outcomes = {arch: (process, *process.communicate(timeout=600))
                for arch, process in (("lstm", lstm), ("gru", gru))}
    codes = {arch: process.returncode for arch, (process, _, _) in outcomes.items()}
    assert sorted(codes.values()) == [0, 2], outcomes
    winner = next(arch for arch, code in codes.items() if code == 0)
    loser = next(arch for arch, code in codes.items() if code == 2)
    err = outcomes[loser][2]
    assert err.count("\n") == 1 and err.startswith("error: --output_dir=")
    assert f"is being written by another process (pid {outcomes[winner][0].pid} " in err
    assert "Traceback" not in err and outcomes[loser][1] == ""
    folder = tmp_path / "run"
    assert checkpoint.read_metadata(folder / "checkpoint")["config"]["arch"] == winner
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [record["kind"] for record in records] == ["train", "train", "val"] * 2 + ["test"]
    assert (folder / files.LOCK_FILE).read_text() == ""
