"""The launchers end a user mistake with one line on stderr and exit status 2, no traceback.

A few runs go through a real ``python -m`` process (the entry point, the exit status, nothing on
stderr but the one line); the rest run the same launcher module in this process (`_run_here`:
its absl app, flags and `run_main` wrapper, without paying for a new interpreter and JAX import
and compilations each time).
"""
import contextlib
import errno
import io
import json
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *flags, env=None):
    return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _run_here(module, *flags, alter_sys=False):
    """``python -m module flags`` run in this process: the module executes as ``__main__``; the
    flags it defines are removed afterwards, so the next launcher can define its own. With
    ``alter_sys`` it is ``sys.modules["__main__"]`` meanwhile, as under ``python -m`` (what the
    resume commands the launchers print are made from)."""
    from absl import flags as absl_flags
    defined_before = set(absl_flags.FLAGS)
    stdout, stderr, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    sys.argv = [module, *flags]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_module(module, run_name="__main__", alter_sys=alter_sys)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
        for name in set(absl_flags.FLAGS) - defined_before:   # absl's own flags stay
            module_name = absl_flags.FLAGS.find_module_defining_flag(name) or ""
            if not module_name.startswith("absl."):
                delattr(absl_flags.FLAGS, name)
    return subprocess.CompletedProcess([module, *flags], code, stdout.getvalue(),
                                       stderr.getvalue())


def _assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    good = folder / "good.txt"
    good.write_text("".join(f"line {i}: all the world's a stage.\n" for i in range(200)),
                    encoding="utf-8")
    return folder


@pytest.mark.parametrize("flags,fragment", [
    (["--hidden_size=0"], "--hidden_size must be a positive integer"),
    (["--arch=transformer"], "unknown arch"),
    (["--arch=rnn", "--activation=swish"], "unknown activation"),
    (["--optimizer=lion"], "unknown optimizer"),
    (["--split=0.9,0.1"], "--split must be three positive fractions"),
    (["stray"], "unexpected arguments"),
])
def test_train_rejects_bad_flags(flags, fragment):
    _assert_one_line_error(_run_here("experiments.train", *flags), fragment)


def test_train_rejects_bad_corpora(corpus):
    empty = corpus / "empty.txt"
    empty.write_bytes(b"")
    latin = corpus / "latin1.txt"
    latin.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    short = corpus / "short.txt"
    short.write_text("shorter than one window of 64 x 100 characters. " * 40, encoding="utf-8")
    _assert_one_line_error(_run_here("experiments.train", f"--data={empty}"), "is empty")
    _assert_one_line_error(_run_here("experiments.train", f"--data={latin}"), "byte offset 3")
    _assert_one_line_error(_run_here("experiments.train", f"--data={short}"), "needs at least")
    tiny = corpus / "tiny.txt"
    tiny.write_text("too short", encoding="utf-8")
    _assert_one_line_error(_run_here("experiments.train", f"--data={tiny}"), "too short to split")
    _assert_one_line_error(_run_here("experiments.train", f"--data={corpus / 'missing.txt'}"),
                           "does not exist")


def test_train_sample_evaluate_end_to_end(corpus, tmp_path):
    output = tmp_path / "run"
    flags = [f"--data={corpus / 'good.txt'}", "--hidden_size=16", "--batch_size=4",
             "--seq_len=16", "--num_steps=4", "--steps_per_call=2", "--eval_every=2",
             "--log_every=2", "--sample_length=20", f"--output_dir={output}"]
    trained = _run("experiments.train", *flags)
    assert trained.returncode == 0, trained.stderr
    assert "test loss" in trained.stdout and "bpc" in trained.stdout
    checkpoint = str(output / "checkpoint")
    sampled = _run_here("experiments.sample", f"--checkpoint={checkpoint}", "--prime=line",
                        "--length=30", "--temperature=0.8", "--top_p=0.9", "--num_samples=2")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.count("line") >= 2
    evaluated = _run_here("experiments.evaluate", f"--checkpoint={checkpoint}",
                          "--text_split=val")
    assert evaluated.returncode == 0 and "bits/char" in evaluated.stdout, evaluated.stderr
    # The printed loss is the checkpoint's mean validation loss (state carried across windows).
    from jaxrnn import data, loop, runstate
    params, config, _, _ = runstate.load_model(checkpoint)
    val = data.load_corpus(config.data, config.split).val
    printed = float(re.search(r"val: loss (\S+) nats/char", evaluated.stdout).group(1))
    assert abs(printed - float(loop.evaluate_split(config, params, val, "val"))) <= 5e-5
    # --segments prints each segment's loss, the segments as the library scores them
    segmented = _run_here("experiments.evaluate", f"--checkpoint={checkpoint}",
                          "--text_split=val", "--segments=0,20", f"--json={tmp_path / 'e.json'}")
    assert segmented.returncode == 0, segmented.stderr
    record = json.loads((tmp_path / "e.json").read_text())
    assert [segment["start"] for segment in record["segments"]] == [0, 20]
    assert record["text_split"] == "val" and record["step"] == 4
    printed = [float(loss) for loss in re.findall(r"of val: loss (\S+) nats/char",
                                                  segmented.stdout)]
    want = [loss for _, _, loss in loop.segment_losses(config, params, val, [0, 20])]
    assert len(printed) == 2 and np.allclose(printed, want, atol=5e-5), segmented.stdout
    _assert_one_line_error(_run_here("experiments.evaluate", f"--checkpoint={checkpoint}",
                                     "--segments=0,x"), "--segments must be a comma-separated")

    _assert_one_line_error(_run_here("experiments.sample", f"--checkpoint={checkpoint}",
                                "--prime=\u00e9t\u00e9"), "not in the vocabulary")
    for flag, fragment in (("--temperature=0", "temperature must be > 0"),
                           ("--top_p=1.5", "top_p must be in (0, 1]"),
                           ("--top_k=-1", "top_k must be")):
        _assert_one_line_error(
            _run_here("experiments.sample", f"--checkpoint={checkpoint}", flag), fragment)
    _assert_one_line_error(
        _run_here("experiments.train", *flags, "--resume", "--hidden_size=32"),
        "hidden_size=16 but flags ask for 32")

    # Gradient flow of fresh models and of the trained checkpoint, with its JSON and plot.
    flow_flags = [f"--data={corpus / 'good.txt'}", "--hidden_size=8", "--batch_size=4",
                  "--seq_len=12", "--distances=0,1,11,50"]   # 0 has its own column; 50 >= T
    flowed = _run_here("experiments.gradient_flow", *flow_flags,
                       "--models=rnn:relu:identity,gru", f"--checkpoints={checkpoint}",
                       f"--json={tmp_path / 'flow.json'}", f"--plot={tmp_path / 'flow.png'}")
    assert flowed.returncode == 0, flowed.stderr
    assert "| d=0 |" not in flowed.stdout and "d=50" not in flowed.stdout
    with open(tmp_path / "flow.json", encoding="utf-8") as handle:
        report = json.load(handle)
    assert [model["source"]["kind"] for model in report["models"]] == ["init", "init",
                                                                       "checkpoint"]
    for model in report["models"]:
        assert np.asarray(model["norms"]).shape == (1, 12)
        assert np.all(np.isfinite(model["norms"])) and model["norms"][0][0] > 0
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| d=1 | d=11 | factor" in flowed.stdout
    # A text whose vocabulary has the same size but other characters ('w' -> 'z').
    other = tmp_path / "other.txt"
    other.write_text((corpus / "good.txt").read_text().replace("w", "z"), encoding="utf-8")
    for flag, fragment in (("--models=rnn:swish", "unknown activation"),
                           ("--models=", "nothing to measure"),
                           ("--seq_len=1", "--seq_len of 2 or more"),
                           ("--distances=1,x", "--distances must be integers >= 0"),
                           ("--plot=curves.xyz", "name the image file with one of the suffixes")):
        _assert_one_line_error(_run_here("experiments.gradient_flow", *flow_flags, flag),
                               fragment)
    _assert_one_line_error(_run_here("experiments.gradient_flow", *flow_flags[1:],
                                     f"--data={other}", "--models=",
                                     f"--checkpoints={checkpoint}"),
                           "different vocabulary")

    # A truncated arrays file: every reader refuses it with one line, and nothing is overwritten.
    arrays = [name for name in os.listdir(checkpoint) if name.endswith(".npz")]
    path = os.path.join(checkpoint, arrays[0])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    for module, module_flags in (("experiments.sample", [f"--checkpoint={checkpoint}"]),
                                 ("experiments.evaluate", [f"--checkpoint={checkpoint}"]),
                                 ("experiments.train", [*flags, "--resume"])):
        _assert_one_line_error(_run_here(module, *module_flags),
                               f"{arrays[0]} is truncated or corrupted")
    _assert_one_line_error(
        _run_here("experiments.sample", f"--checkpoint={tmp_path / 'nothing'}"),
        "no checkpoint at")


def test_gradcheck_rejects_unknown_arch():
    _assert_one_line_error(_run("experiments.gradcheck", "--archs=lstm,transformer"),
                           "unknown arch 'transformer' in --archs")


def test_sweep_runs_the_grid_and_rejects_bad_lists(corpus, tmp_path):
    flags = [f"--data={corpus / 'good.txt'}", "--hidden_size=16", "--batch_size=4",
             "--seq_len=16", "--num_steps=4", "--steps_per_call=2", "--eval_every=2",
             "--log_every=2", f"--output_dir={tmp_path / 'sweep'}"]
    swept = _run_here("experiments.sweep", *flags, "--seeds=0,1",
                      "--learning_rates=1e-3,1e-2", "--clip_norms=5,inf")
    assert swept.returncode == 0, swept.stderr
    rows = [line for line in swept.stdout.splitlines() if line.startswith("| 0.0")]
    assert [row.split("|")[1:4] for row in rows] == [                  # lr, clip, seed
        [f" {rate} ", f" {clip} ", f" {seed} "] for rate in ("0.001", "0.01")
        for clip in ("5", "none") for seed in (0, 1)]
    records = (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()
    assert sum('"kind": "final"' in record for record in records) == 8
    for flag, fragment in (("--seeds=a,b", "--seeds must be a comma-separated list of ints"),
                           ("--seeds=1,1", "--seeds lists a value twice"),
                           ("--learning_rates=0.1,-1", "--learning_rates must all be > 0 and finite"),
                           ("--clip_norms=1,0", "--clip_norms must all be > 0 (inf: no clipping)")):
        _assert_one_line_error(_run_here("experiments.sweep", *flags, flag), fragment)


# ---------------------------------------------------------------------------------------------
# A full disk (issue 24): one line, exit status 2, and the command that continues once there is
# room. The failures themselves, at every step of a save: tests/test_full_disk.py.
# ---------------------------------------------------------------------------------------------
def test_a_full_disk_during_a_save_is_one_line_and_its_resume_command_continues(
        corpus, tmp_path, monkeypatch):
    from jaxrnn import checkpoint
    output = tmp_path / "run"
    flags = [f"--data={corpus / 'good.txt'}", "--hidden_size=8", "--batch_size=2",
             "--seq_len=8", "--num_steps=4", "--steps_per_call=2", "--eval_every=2",
             "--log_every=2", "--sample_length=5", "--eval_batch_size=2",
             f"--output_dir={output}"]
    real_write_temp, arrays = checkpoint._write_temp, []

    def full_at_second_arrays_file(directory, final_name, payload):
        arrays.extend([final_name] if final_name.endswith(".npz") else [])
        if len(arrays) == 2 and final_name.endswith(".npz"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_temp(directory, final_name, payload)

    monkeypatch.setattr(checkpoint, "_write_temp", full_at_second_arrays_file)
    result = _run_here("experiments.train", *flags, alter_sys=True)
    _assert_one_line_error(result, f"error: saving the checkpoint of step 4 in {output}/"
                                   "checkpoint failed (No space left on device, ENOSPC): it needs ")
    line = result.stderr.strip().splitlines()[-1]
    assert (f"; the last checkpoint saved, {output}/checkpoint/checkpoint.json (step 2), is "
            "intact; free space there, then resume with: python -m experiments.train ") in line
    command = shlex.split(line.split("then resume with: ", 1)[1])
    assert command == ["python", "-m", "experiments.train", *flags, "--resume"]
    monkeypatch.undo()                                                 # room again
    resumed = _run_here(*command[2:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {output}/checkpoint at step 2" in resumed.stdout
    assert checkpoint.read_metadata(output / "checkpoint")["step"] == 4


@pytest.mark.parametrize("full", [False, True])
def test_a_study_holds_its_folder_to_its_last_write_and_reports_a_full_disk(
        tmp_path, monkeypatch, full):
    """The study launcher locks --output_dir around training, the report and command.txt (the
    last write); a full disk while writing its results is one line whose command runs the
    study again. (Training and the report are stand-ins here: tests/test_studies.py.)"""
    from jaxrnn import files, studies
    from jaxrnn.report import study as study_report
    output, seen = tmp_path / "study", []
    real_write = files.write_atomically

    def run_study(name, budget, output_dir, **options):
        seen.append(("train", files.locked_by_anyone(output_dir)))
        return studies.Study("tiny?", {}, (), ("arch",), plots=()), []

    def write_report(study, results, output_dir, command=None):
        seen.append(("report", files.locked_by_anyone(output_dir)))
        if full:
            monkeypatch.setattr(os, "fsync", lambda handle: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        real_write(pathlib.Path(output_dir) / "results.json", b"{}\n")
        return "| table |"

    def write_atomically(path, payload):
        seen.append((os.path.basename(path), files.locked_by_anyone(output)))
        return real_write(path, payload)

    monkeypatch.setattr(studies, "run_study", run_study)
    monkeypatch.setattr(study_report, "write_report", write_report)
    monkeypatch.setattr(files, "write_atomically", write_atomically)
    flags = ["--study=schedules", f"--output_dir={output}", "--seeds=0"]
    result = _run_here("experiments.study", *flags, alter_sys=True)
    monkeypatch.undo()
    assert not files.locked_by_anyone(output)
    if full:
        _assert_one_line_error(result, f"error: writing {output / 'results.json'} failed (No "
                                       "space left on device, ENOSPC): it needs 3 bytes, ")
        assert result.stderr.strip().endswith(
            "; free space there, then run it again with: python -m experiments.study "
            + " ".join(flags))
        assert seen == [("train", True), ("report", True)]
        assert sorted(os.listdir(output)) == [files.LOCK_FILE]          # nothing half-written
    else:
        assert result.returncode == 0, result.stderr
        assert seen == [("train", True), ("report", True), ("command.txt", True)]
        assert (output / "command.txt").read_text() == \
            "python -m experiments.study " + " ".join(flags) + "\n"
