"""Kill tests: SIGKILL a training run at random instants, check its checkpoints each time.

``python -m benchmarks.kill_harness --kills=200 [--kill_seed=0] [--slow_save=0.02] [--json=out.json]``

Trains a tiny LSTM on a made-up text in a subprocess (``python -m experiments.train``, saving on
the clock every 0.5 s and at each evaluation, ``--keep=2``), with ``JAXRNN_TEST_SLOW_SAVE`` set
so that every save pauses between its writes and renames (so kills land inside saves too). Each
round starts the run (``--resume`` once a checkpoint exists) and SIGKILLs it after a random delay:
a fifth of the time counted from the start of the process (start-up, import, resume), otherwise
from its first compiled chunk. After each kill every commit record left in the folder (the latest,
the best and the kept step records) must load with its checksum, the latest must not go back in
steps, and the next round must resume from it. A run that completes is compared with an
uninterrupted run of the same flags, parameter by parameter and bit for bit, and the folder is
started afresh. At the end the run is let finish and compared the same way.

Prints a summary (and writes it with --json): kills, where they landed (before training,
during training, inside a save: temp files or an unnamed npz left behind), resumes, completed
runs equal to the reference, and failures (each with its reason). Exits 1 on any failure.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXT = "".join(f"line {i}: now is the winter of our discontent.\n" for i in range(150))
NUM_STEPS = 200
RUN_FLAGS = ["--hidden_size=16", "--batch_size=4", "--seq_len=8", f"--num_steps={NUM_STEPS}",
             "--steps_per_call=5", "--eval_every=50", "--log_every=50", "--sample_length=5",
             "--eval_batch_size=2", "--dropout=0.1", "--checkpoint_every_seconds=0.5",
             "--keep=2"]


def _command(work, name, resume):
    return [sys.executable, "-m", "experiments.train", f"--data={work / 'corpus.txt'}",
            *RUN_FLAGS, f"--output_dir={work / name}"] + (["--resume"] if resume else [])


def _env(work, slow_save):
    """Slow saves; compiled programs cached on disk across rounds (the same executables)."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "JAXRNN_TEST_SLOW_SAVE": str(slow_save),
            "JAX_COMPILATION_CACHE_DIR": str(work / "jax-cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _wait_compiled(process, log_path):
    """Wait until the run has compiled its first chunk (or ended); returns the time."""
    while process.poll() is None and "compiled" not in log_path.read_text():
        time.sleep(0.02)
    return time.perf_counter()


def _final_params(folder):
    from jaxrnn import runstate
    params, _, _, metadata = runstate.load_model(folder)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)], metadata["step"]


def _inside_save(folder):
    """Whether a killed save left traces: temp files, or an npz no record names."""
    if not folder.is_dir():
        return False
    names = os.listdir(folder)
    if any(".tmp" in name for name in names):
        return True
    named = set()
    for name in names:
        if name.endswith(".json"):
            try:
                named.add(json.loads((folder / name).read_text())["npz_file"])
            except (OSError, ValueError, KeyError):
                return True
    return any(name.endswith(".npz") and name not in named for name in names)


def _check_records(folder):
    """Load every commit record of ``folder``; returns the latest's step (None: no checkpoint)."""
    from jaxrnn import checkpoint, runstate
    if not (folder / checkpoint.META_FILE).exists():
        return None
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            checkpoint.load_checkpoint(folder / name)          # checksum, leaves
    runstate.load_model(folder)                                    # the full train state
    return checkpoint.read_metadata(folder)["step"]


def run_kills(kills, *, seed=0, slow_save=0.02, work=None, log=print):
    """The harness (see the module docstring); returns the summary dict. ``work`` (default: a
    new temporary folder, removed at the end) is locked while the harness runs
    (`jaxrnn.files.folder_lock`); its runs lock their own folders in it."""
    from jaxrnn import files
    processes = []
    own_work = work is None
    work = pathlib.Path(tempfile.mkdtemp(prefix="kill-harness-") if own_work else work)
    try:
        with files.folder_lock(work):
            return _run_kills(kills, seed, slow_save, work, own_work, log, processes)
    finally:
        for process in processes:  # never leave a run behind
            if process.poll() is None:
                process.kill()
                process.wait()


def _run_kills(kills, seed, slow_save, work, own_work, log, processes):
    rng = random.Random(seed)
    (work / "corpus.txt").write_text(TEXT, encoding="utf-8")
    summary = {"kills": 0, "before_training": 0, "during_training": 0, "inside_save": 0,
               "resumed": 0, "runs_completed": 0, "completed_equal_reference": 0,
               "max_step_reached": 0, "failures": []}
    tick = time.perf_counter()
    with open(work / "reference.log", "w") as out:  # with slow saves, to time the same run
        reference = subprocess.Popen(_command(work, "reference", False), cwd=ROOT,
                                     env=_env(work, slow_save), stdout=out,
                                     stderr=subprocess.STDOUT)
    processes.append(reference)
    compiled_at = _wait_compiled(reference, work / "reference.log")
    if reference.wait(timeout=900) != 0:
        raise RuntimeError(f"the reference run failed: "
                           f"{(work / 'reference.log').read_text()[-2000:]}")
    run_seconds, train_seconds = (time.perf_counter() - tick,
                                  time.perf_counter() - compiled_at)
    want, _ = _final_params(work / "reference" / "checkpoint")
    folder, last_step, attempt = work / "run" / "checkpoint", None, 0

    def finished(process, log_path):
        """A process that ended on its own: it must have completed equal to the reference."""
        text = log_path.read_text()
        summary["resumed"] += "resumed from" in text
        if process.returncode != 0:
            summary["failures"].append(f"round {attempt}: exit {process.returncode}: "
                                       f"{text[-300:]!r}")
            return
        summary["runs_completed"] += 1
        got, step = _final_params(folder)
        if step == NUM_STEPS and all(np.array_equal(a, b) for a, b in zip(got, want)):
            summary["completed_equal_reference"] += 1
        else:
            summary["failures"].append(f"round {attempt}: completed run differs from the "
                                       f"reference (step {step})")
        shutil.rmtree(work / "run")

    def committed():
        """Whether the run has a committed checkpoint to resume from. A run killed before its
        first save committed leaves a folder without one (and maybe a metrics.jsonl): it is
        started afresh, as a user would with --overwrite; --resume would be refused."""
        if (folder / "checkpoint.json").exists():
            return True
        shutil.rmtree(work / "run", ignore_errors=True)
        return False

    while summary["kills"] < kills:
        attempt += 1
        log_path = work / f"round-{attempt % 2}.log"
        resume = committed()
        with open(log_path, "w") as out:
            process = subprocess.Popen(_command(work, "run", resume), cwd=ROOT,
                                       env=_env(work, slow_save), stdout=out,
                                       stderr=subprocess.STDOUT)
        processes.append(process)
        if rng.random() < 0.2:
            deadline = time.perf_counter() + rng.uniform(0, run_seconds)
        else:
            deadline = _wait_compiled(process, log_path) + rng.uniform(0, train_seconds)
        while process.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        if process.poll() is not None:
            finished(process, log_path)
            last_step = None
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        summary["kills"] += 1
        text = log_path.read_text()
        summary["resumed"] += "resumed from" in text
        if _inside_save(folder):
            summary["inside_save"] += 1
        elif "compiled" in text:
            summary["during_training"] += 1
        else:
            summary["before_training"] += 1
        try:
            step = _check_records(folder)
        except Exception as error:  # noqa: BLE001 -- any failure to load is what we look for
            summary["failures"].append(f"kill {summary['kills']}: {type(error).__name__}: "
                                       f"{error}")
            shutil.rmtree(work / "run", ignore_errors=True)
            last_step = None
            continue
        if step is not None and last_step is not None and step < last_step:
            summary["failures"].append(f"kill {summary['kills']}: latest went back from step "
                                       f"{last_step} to {step}")
        last_step = step if step is not None else last_step
        summary["max_step_reached"] = max(summary["max_step_reached"], step or 0)
        if summary["kills"] % 10 == 0:
            log(f"{summary['kills']} kills: {summary['inside_save']} inside saves, "
                f"{summary['during_training']} during training, {summary['before_training']} "
                f"before; {summary['runs_completed']} runs completed; "
                f"{len(summary['failures'])} failures")
    if folder.exists():  # let the last run finish: it must equal the reference
        attempt += 1
        log_path = work / "final.log"
        resume = committed()
        with open(log_path, "w") as out:
            process = subprocess.Popen(_command(work, "run", resume), cwd=ROOT, env=_env(work, 0),
                                       stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        process.wait(timeout=900)
        finished(process, log_path)
    summary["seconds"] = time.perf_counter() - tick
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def define_flags():
    """The launcher's flags, defined only when it runs as a program: importing the module (as
    tests/test_interrupt.py does) must not claim flag names that the launchers define."""
    flags.DEFINE_integer("kills", 200, "SIGKILLs to send")
    flags.DEFINE_integer("kill_seed", 0, "seed of the random kill instants")
    flags.DEFINE_float("slow_save", 0.02, "seconds each save pauses between its steps "
                       "(JAXRNN_TEST_SLOW_SAVE), so that kills land inside saves")
    flags.DEFINE_string("json", None, "also write the summary to this JSON file")


def main(argv):
    summary = run_kills(flags.FLAGS.kills, seed=flags.FLAGS.kill_seed,
                        slow_save=flags.FLAGS.slow_save)
    print(json.dumps(summary, indent=1))
    if flags.FLAGS.json:
        from benchmarks import sysinfo
        sysinfo.write_json(flags.FLAGS.json, benchmark="kill_harness",
                           config={"run_flags": RUN_FLAGS, "slow_save": flags.FLAGS.slow_save,
                                   "kill_seed": flags.FLAGS.kill_seed}, results=summary)
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    define_flags()
    app.run(main)
