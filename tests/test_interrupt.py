"""Faults a run must survive: SIGINT/SIGTERM (save, exit 130/143, exact resume), a second SIGINT
(exit at once, the previous checkpoint intact), the checkpoint policy (--keep, best, time-based
saves) and non-finite steps (--skip_nonfinite), and a short run of the kill harness
(benchmarks/kill_harness.py).
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import track

from experiments import common
from jaxrnn import checkpoint, config as config_lib, data, loop, runstate, train
from jaxrnn.errors import TrainingDivergedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"line {i}: to be, or not to be, that is the question.\n" for i in range(150))
# Long enough that a signal sent at the first progress line lands mid-run; one evaluation only.
FLAGS = ["--hidden_size=16", "--batch_size=4", "--seq_len=8", "--num_steps=3000",
         "--steps_per_call=10", "--eval_every=3000", "--log_every=10", "--sample_length=5",
         "--eval_batch_size=2", "--dropout=0.1", "--checkpoint_every_seconds=0"]


def _quiet(*args):
    pass


def _start(tmp_path, name, *extra, env=None):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    argv = ["-m", "experiments.train", f"--data={corpus}", *FLAGS,
            f"--output_dir={tmp_path / name}", *extra]
    return track(subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu",
                        **(env or {})}))


def _wait_for_line(process, fragment, timeout=240):
    """Read stdout until a line contains ``fragment``; returns the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if fragment in line:
            return lines
    raise AssertionError(f"no {fragment!r} in the output: {''.join(lines)[-2000:]}")


def _params(directory, which="latest"):
    params, _, _, metadata = runstate.load_model(directory, which)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)], metadata


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The parameters of the uninterrupted run."""
    tmp_path = tmp_path_factory.mktemp("straight")
    process = _start(tmp_path, "run")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return _params(tmp_path / "run" / "checkpoint")[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_then_resume_is_exact(tmp_path, straight, signum):
    process = _start(tmp_path, "run")
    _wait_for_line(process, "step 10/3000")
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err
    assert f"{signal.Signals(signum).name} received" in err
    saved = checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["step"]
    assert 10 <= saved < 3000 and saved % 10 == 0, saved  # mid-run, at a chunk boundary
    assert f"stopped by {signal.Signals(signum).name} at step {saved} of 3000" in err
    command = next(line for line in err.splitlines() if line.startswith("resume with: "))
    argv = shlex.split(command[len("resume with: "):])
    assert argv[:3] == ["python", "-m", "experiments.train"] and argv[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {tmp_path / 'run' / 'checkpoint'} at step {saved}" in resumed.stdout
    got, metadata = _params(tmp_path / "run" / "checkpoint")
    assert metadata["step"] == 3000
    for leaf, want in zip(got, straight):
        np.testing.assert_array_equal(leaf, want)


@pytest.mark.slow
def test_second_sigint_exits_at_once_and_keeps_the_previous_checkpoint(tmp_path):
    first = _start(tmp_path, "run", "--num_steps=20", "--eval_every=20")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    folder = tmp_path / "run" / "checkpoint"
    before = _params(folder)[0]
    # Resume with slow saves: the interrupt's save pauses 2 s between its steps.
    process = _start(tmp_path, "run", "--resume", env={"JAXRNN_TEST_SLOW_SAVE": "2"})
    _wait_for_line(process, "step 30/3000")
    process.send_signal(signal.SIGINT)
    deadline = time.time() + 120
    while not [name for name in os.listdir(folder) if ".tmp" in name]:
        assert time.time() < deadline and process.poll() is None, "the save never started"
        time.sleep(0.05)
    tick = time.time()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == -signal.SIGINT
    assert time.time() - tick < 1.5  # did not wait for the save's 2-second pauses
    after, metadata = _params(folder)
    assert metadata["step"] == 20
    for leaf, want in zip(after, before):
        np.testing.assert_array_equal(leaf, want)
    process.stdout.close()
    process.stderr.close()


@pytest.mark.slow
def test_sweep_stops_cleanly_and_says_so(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", f"--data={corpus}", *FLAGS, "--seeds=0,1",
         f"--output_dir={tmp_path / 'sweep'}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"})
    track(process)
    _wait_for_line(process, "step 10/3000")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "sweep stopped by SIGINT at step" in err and "keeps no checkpoints" in err
    assert "resume with" not in err and "Traceback" not in err
    assert "| learning rate |" not in out  # no results table for a stopped sweep


def test_resume_command_drops_resume_flags():
    argv = ["/x/experiments/train.py", "--preset=quick", "--noresume", "--output_dir=a b",
            "--resume=false"]
    assert common.resume_command(argv, module="experiments.train") == \
        "python -m experiments.train --preset=quick '--output_dir=a b' --resume"


def _config(tmp_path, **overrides):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    values = dict(data=str(corpus), hidden_size=16, batch_size=4, seq_len=8, num_steps=12,
                  steps_per_call=3, eval_every=3, log_every=3, eval_batch_size=2,
                  sample_length=5, warmup_steps=2, dropout=0.0, checkpoint_every_seconds=0,
                  output_dir=str(tmp_path / "run"))
    values.update(overrides)
    return config_lib.make_config(**values)


def _records(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".json"))


def test_keep_and_best_in_save_checkpoint(tmp_path):
    losses = {1: 3.0, 2: 2.0, 3: 2.5, 4: 2.6, 5: 2.7}
    best = None
    for step, loss in losses.items():
        improved = best is None or loss < best
        best = loss if improved else best
        checkpoint.save_checkpoint(tmp_path, state_pytree={"w": np.full(3, step, np.float32)},
                                   metadata={"step": step, "loss": loss}, step=step, keep=2,
                                   best=improved)
    assert _records(tmp_path) == ["best.json", "checkpoint.json", checkpoint.step_file_name(4),
                                  checkpoint.step_file_name(5)]
    assert checkpoint.read_metadata(tmp_path, "best")["step"] == 2
    assert checkpoint.read_metadata(tmp_path)["step"] == 5
    assert checkpoint.read_metadata(tmp_path / checkpoint.step_file_name(4))["step"] == 4
    assert checkpoint.load_checkpoint(tmp_path, which="best")[0]["['w']"].tolist() == [2, 2, 2]
    # One npz per kept checkpoint (steps 2, 4, 5): the others were deleted after the commits.
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".npz")]) == 3
    # A fresh run in the same folder: records of later steps than the new save go.
    checkpoint.save_checkpoint(tmp_path, state_pytree={"w": np.zeros(3, np.float32)},
                               metadata={"step": 1}, step=1, keep=2)
    assert _records(tmp_path) == ["best.json", "checkpoint.json", checkpoint.step_file_name(1)]


def test_training_keeps_the_best_and_saves_on_time(tmp_path):
    config = _config(tmp_path, keep=2, learning_rate=0.05)
    loop.train(config, log=_quiet)
    folder = tmp_path / "run" / "checkpoint"
    val = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val = [record for record in val if record["kind"] == "val"]
    best = min(val, key=lambda record: record["loss"])
    assert checkpoint.read_metadata(folder, "best")["step"] == best["step"]
    assert checkpoint.read_metadata(folder, "best")["best_val_loss"] == best["loss"]
    assert _records(folder) == ["best.json", "checkpoint.json", checkpoint.step_file_name(9),
                                checkpoint.step_file_name(12)]
    # Evaluations only every 12 steps; a save after every 3-step chunk on the clock.
    timed = _config(tmp_path, keep=10, eval_every=12, checkpoint_every_seconds=1e-9,
                    output_dir=str(tmp_path / "timed"))
    loop.train(timed, log=_quiet)
    assert _records(tmp_path / "timed" / "checkpoint") == ["best.json", "checkpoint.json"] + [
        checkpoint.step_file_name(step) for step in (3, 6, 9, 12)]
    untimed = _config(tmp_path, keep=10, eval_every=12, output_dir=str(tmp_path / "untimed"))
    loop.train(untimed, log=_quiet)
    assert _records(tmp_path / "untimed" / "checkpoint") == [
        "best.json", "checkpoint.json", checkpoint.step_file_name(12)]


def _poisoned_state(train_state):
    """The carried hidden state made NaN: the next step's loss and gradient are NaN."""
    return train_state._replace(model_state=jax.tree.map(lambda carry: carry * jnp.nan,
                                                         train_state.model_state))


@pytest.mark.parametrize("skip", [True, False])
def test_skip_nonfinite_step(tmp_path, skip):
    config = _config(tmp_path, skip_nonfinite=skip, state_reset_probability=0.0)
    corpus = data.load_corpus(config.data, config.split)
    streams = data.make_streams(corpus.train, config.batch_size, config.seq_len)
    state = train.init_train_state(config, len(corpus.vocab))
    state = train.make_train_chunk(config, data.num_windows(streams, config.seq_len), 1)(
        state, streams)[0]  # one good step, so the window's state is carried (not reset)
    before = jax.tree.map(np.asarray, state.params)
    chunk = train.make_train_chunk(config, data.num_windows(streams, config.seq_len), 3)
    after, metrics = chunk(_poisoned_state(jax.tree.map(jnp.copy, state)), streams)  # donated
    assert not np.isfinite(metrics["loss"][0]) and np.isfinite(metrics["loss"][1:]).all() == skip
    if skip:
        np.testing.assert_array_equal(metrics["skipped"], [1, 0, 0])
        assert int(after.step) == 4
        # Skipped: the next step starts from the same parameters, so the two good steps moved
        # them, and exactly as two steps from a zero state would have.
        # (the root key stays: every step's randomness is folded from it and the step counter)
        reference = state._replace(model_state=jax.tree.map(jnp.zeros_like, state.model_state),
                                   step=state.step + 1, window=state.window + 1)
        want = train.make_train_chunk(config, data.num_windows(streams, config.seq_len), 2)(
            reference, streams)[0]
        for got, expected in zip(jax.tree.leaves(after.params), jax.tree.leaves(want.params)):
            np.testing.assert_array_equal(got, expected)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(after.params))
    else:
        assert "skipped" not in metrics
        assert not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(after.params))
    assert any((np.asarray(b) != np.asarray(a)).any()
               for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before)))


def _poison_at(monkeypatch, steps):
    """Make the compiled chunks of `loop.train` start from a NaN state at ``steps``."""
    real = loop._compile

    def compile_poisoned(jitted, *args):
        compiled, seconds = real(jitted, *args)

        def run(train_state, streams):
            if int(train_state.step) in steps:
                train_state = _poisoned_state(train_state)
            return compiled(train_state, streams)
        return run, seconds

    monkeypatch.setattr(loop, "_compile", compile_poisoned)


def test_skipped_steps_are_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    _poison_at(monkeypatch, {3, 6})
    lines = []
    summary = loop.train(_config(tmp_path, skip_nonfinite=True, state_reset_probability=0.0),
                         log=lines.append)
    assert np.isfinite(summary["test"]["loss"])
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    skipped = [record["skipped_steps"] for record in records if record["kind"] == "train"]
    assert skipped == [0, 1, 1, 0]
    assert all(np.isfinite(record["loss"]) for record in records)
    assert sum(" skipped 1" in line for line in lines) == 2


def test_nonfinite_steps_in_a_row_stop_the_run(tmp_path, monkeypatch):
    _poison_at(monkeypatch, {3, 4, 5, 6, 7, 8})
    config = _config(tmp_path, skip_nonfinite=True, max_consecutive_nonfinite=3,
                     steps_per_call=1, state_reset_probability=0.0)
    with pytest.raises(TrainingDivergedError, match="3 steps in a row up to step 6"):
        loop.train(config, log=_quiet)
    assert checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["step"] == 3
    # Without --skip_nonfinite the first one stops the run.
    with pytest.raises(TrainingDivergedError, match="at step 4; the last good checkpoint"):
        loop.train(_config(tmp_path, steps_per_call=1, state_reset_probability=0.0,
                           output_dir=str(tmp_path / "plain")), log=_quiet)


@pytest.mark.slow
def test_kill_harness_short():
    """SIGKILLs at random instants (inside slow saves too): every committed checkpoint loads,
    every round resumes, and a run that completes equals the uninterrupted one."""
    from benchmarks import kill_harness
    summary = kill_harness.run_kills(6, seed=1, log=_quiet)
    assert summary["failures"] == [], summary
    assert summary["kills"] == 6 and summary["completed_equal_reference"] >= 1
    assert summary["resumed"] >= 1
