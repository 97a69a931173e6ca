"""The multi-host path run for real: two processes on localhost, CPU collectives over gloo (JAX's
default ``jax_cpu_collectives_implementation``), one CPU device each.

Each process runs ``python -m experiments.train --data_parallel --coordinator_address=localhost:P
--num_processes=2 --process_id=i``. Checked: both finish; only process 0 writes the checkpoint
and the metrics and locks the folder; the parameters equal a one-process run to float32
round-off (the gradient's batch sum is split in two and all-reduced); SIGTERM to both mid-run
saves one checkpoint at a step both agreed on, both exit 143, and both resumed finish with the
same parameters (the shared folder locked by process 0 alone: process 1 would be refused).
"""
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import track

from jaxrnn import checkpoint, files, runstate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"line {i}: to be, or not to be, that is the question.\n" for i in range(120))
FLAGS = ["--hidden_size=16", "--batch_size=4", "--seq_len=8", "--num_steps=400",
         "--steps_per_call=10", "--eval_every=200", "--log_every=10", "--sample_length=5",
         "--eval_batch_size=2", "--dropout=0.1", "--checkpoint_every_seconds=0",
         "--data_parallel", "--weight_drop=0.25",
         # At the main job's 0.03 the batch sum's round-off grows past 1e-5 in 400 Adam steps.
         "--learning_rate=0.003"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
ENV.pop("XLA_FLAGS", None)  # one CPU device per process


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _train(tmp_path, output_dirs, *extra):
    """Start the processes (one per output folder; several: a multi-process run)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    port, count = _free_port(), len(output_dirs)
    processes = []
    for index, output_dir in enumerate(output_dirs):
        multi = [f"--coordinator_address=localhost:{port}", f"--num_processes={count}",
                 f"--process_id={index}"] if count > 1 else []
        log = open(tmp_path / f"log-{os.path.basename(output_dir)}-{index}.txt", "a")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", f"--data={corpus}", *FLAGS,
             f"--output_dir={output_dir}", *multi, *extra], cwd=ROOT, env=ENV, stdout=log,
            stderr=subprocess.STDOUT))
        processes[-1].log_path = log.name
        track(processes[-1])
    return processes


def _finish(processes, timeout=600):
    codes = [process.wait(timeout=timeout) for process in processes]
    logs = [open(process.log_path).read() for process in processes]
    return codes, logs


def _params(folder):
    params = runstate.load_model(folder)[0]
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def _assert_close(got, want):
    # Same windows and dropout masks; only the order of the gradient's batch sum differs.
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) < 1e-5


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("one")
    codes, logs = _finish(_train(tmp_path, [str(tmp_path / "run")]))
    assert codes == [0], logs[0][-3000:]
    return _params(tmp_path / "run" / "checkpoint")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, one_process):
    out = [str(tmp_path / "out0"), str(tmp_path / "out1")]
    codes, logs = _finish(_train(tmp_path, out))
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert all("data parallel over 2 devices: 2 streams each" in log for log in logs)
    # Only process 0 writes, and only it takes the folder's lock (jaxrnn.files.folder_lock).
    assert sorted(os.listdir(out[0])) == [files.LOCK_FILE, "checkpoint", "metrics.jsonl"]
    assert os.listdir(out[1]) == []  # process 1 writes nothing, not even a lock file
    _assert_close(_params(tmp_path / "out0" / "checkpoint"), one_process)


@pytest.mark.slow
def test_sigterm_to_both_then_resume(tmp_path, one_process):
    out = [str(tmp_path / "run")] * 2  # a shared folder, as on a cluster's file system
    processes = _train(tmp_path, out)
    deadline = time.time() + 600
    while "step 10/400" not in open(processes[0].log_path).read():
        assert time.time() < deadline and processes[0].poll() is None, \
            open(processes[0].log_path).read()[-3000:]
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    codes, logs = _finish(processes)
    assert codes == [143, 143], "\n".join(log[-3000:] for log in logs)
    step = checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["step"]
    assert 10 <= step < 400 and step % 10 == 0
    assert all(f"at step {step} of 400" in log for log in logs)
    codes, logs = _finish(_train(tmp_path, out, "--resume"))
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert all(f"at step {step}" in log for log in logs)
    assert checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["step"] == 400
    _assert_close(_params(tmp_path / "run" / "checkpoint"), one_process)
