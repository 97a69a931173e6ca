"""Text-quality metrics on hand-made texts whose values are known exactly, the suffix-array
matching statistics against brute force, the sampling study as one library call and its launcher
end to end."""
import contextlib
import importlib
import json
import math
import os
import pathlib
import random
import sys

import numpy as np
import pytest
from absl import flags

from experiments import common
from jaxrnn import checkpoint, config as config_lib, data, loop, runstate, text_quality, train

TRAIN = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
         "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to "
         "famish?\n\nAll:\nResolved. resolved.\n")


def test_suffix_array_and_matching_statistics_equal_brute_force():
    rng = random.Random(0)
    for _ in range(150):
        alphabet = "ab\nc"[:rng.randint(1, 4)]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        index = text_quality.build_index(text)
        assert list(index.suffix_array) == sorted(range(len(text)), key=lambda i: text[i:])
        queries = ["".join(rng.choice(alphabet + "z") for _ in range(rng.randint(0, 30)))
                   for _ in range(3)]
        for query, match in zip(queries, text_quality.matching_statistics(index, queries)):
            expected = [max(n for n in range(len(query) - i + 1) if query[i:i + n] in text)
                        for i in range(len(query))]
            assert list(match) == expected, (text, query)


def test_a_copy_of_the_training_text_is_all_copied_and_all_real_words():
    copy = TRAIN[15:120]                       # "Before ... speak.\n\nAll:\nSpeak, speak.\n\nFi"
    copy = copy[:copy.rindex("\n") + 1]         # whole words only
    metrics = text_quality.text_metrics([copy, TRAIN], TRAIN)
    assert metrics["copied_8gram_fraction"] == 1.0
    assert metrics["word_validity"] == 1.0
    assert metrics["longest_copy_median"] == (len(copy) + len(TRAIN)) / 2


def test_random_characters_score_near_zero():
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ")
    samples = ["".join(rng.choice(alphabet, 300)) for _ in range(8)]
    metrics = text_quality.text_metrics(samples, TRAIN)
    assert metrics["copied_8gram_fraction"] == 0.0
    assert metrics["word_validity"] < 0.05
    assert metrics["longest_copy_median"] <= 4
    assert metrics["repeated_4gram_fraction"] == 0.0
    assert metrics["speaker_line_fraction"] == 0.0


def test_a_repeated_sentence_has_a_high_repeated_4gram_fraction():
    looping = "the cat sat on the mat. " * 10          # 60 words, 57 4-grams, 6 distinct
    fresh = "one two three four five six"              # 3 4-grams, none repeated
    metrics = text_quality.text_metrics([looping, fresh, "too short"], TRAIN)
    assert metrics["repeated_4gram_fraction"] == pytest.approx(((1 - 6 / 57) + 0) / 2,
                                                               abs=1e-15)


def test_distinct_n_of_a_crafted_batch():
    # Words: [a, b, a, b] and [c, a] -> 6 unigrams, 3 distinct; bigrams (a b)(b a)(a b) and (c a):
    # 4, 3 distinct ((b c) spans two texts and is not a bigram). Case is folded; apostrophes
    # stay inside words, digits, hyphens and punctuation split them.
    metrics = text_quality.text_metrics(["A b, a-B 42", "c A"], TRAIN)
    assert metrics["distinct_1"] == 3 / 6
    assert metrics["distinct_2"] == 3 / 4
    assert text_quality.words("O'er 'tis the King's-men 3rd") == ["o'er", "'tis", "the",
                                                                  "king's", "men", "rd"]


def test_word_validity_counts_words_of_the_training_text():
    # 'speak' and 'resolved' occur (case folded); 'speaks' and 'zounds' do not.
    metrics = text_quality.text_metrics(["SPEAK speaks resolved zounds"], TRAIN)
    assert metrics["word_validity"] == 2 / 4


def test_speaker_lines_and_line_length():
    sample = "ROMEO:\nBut soft!\n\nFirst Citizen:\nSpeak.\nnot a speaker: here\nKING RICHARD III:"
    metrics = text_quality.text_metrics([sample], TRAIN)
    assert metrics["speaker_line_fraction"] == 3 / 6
    assert metrics["mean_line_length"] == (6 + 9 + 14 + 6 + 19 + 17) / 6
    for line in ("ROMEO", "romeo:", "ROMEO: But soft", ":"):
        assert not text_quality.is_speaker_line(line), line


def test_longest_copy_is_the_median_over_texts():
    train = "abcdefgh ijklmnop"
    samples = ["zzcdefzz", "xx" + "ijklmnop" + "yy", "qq", "h ijk"]   # 4, 8, 0 and 5
    assert text_quality.text_metrics(samples, train)["longest_copy_median"] == (4 + 5) / 2
    assert text_quality.text_metrics(samples[:3], train)["longest_copy_median"] == 4


def test_every_metric_is_finite_and_texts_without_words_score_zero():
    metrics = text_quality.text_metrics(["", "12 34\n", "?!"], TRAIN)
    assert set(metrics) == set(text_quality.METRICS)
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics["word_validity"] == metrics["distinct_2"] == 0.0


def test_a_prebuilt_index_gives_the_same_metrics_and_is_cached():
    index = text_quality.get_index(TRAIN)
    assert text_quality.get_index(TRAIN) is index
    samples = ["Speak, speak. You are all resolved", "All:\nfamish?"]
    assert text_quality.text_metrics(samples, index=index) == text_quality.text_metrics(
        samples, TRAIN)


def test_reference_windows_start_at_lines_and_are_seeded():
    text = "".join(f"line {index:03d} of the held-out text\n" for index in range(200))
    windows = text_quality.reference_windows(text, 16, 50, seed=3)
    assert len(windows) == 16 and all(len(window) == 50 for window in windows)
    assert all(window.startswith("line ") and window in text for window in windows)
    assert len(set(windows)) == 16                               # without replacement
    assert windows == text_quality.reference_windows(text, 16, 50, seed=3)
    assert windows != text_quality.reference_windows(text, 16, 50, seed=4)
    with pytest.raises(text_quality.ConfigError, match="fewer than the 50 of one window"):
        text_quality.reference_windows(text[:40], 1, 50)


# ----------------------------------------------------------------------------------------------
# The launcher, in-process.


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A freshly initialised H=8 LSTM saved as a checkpoint of a small corpus (no training: the
    launcher reads it like any other)."""
    folder = tmp_path_factory.mktemp("text_quality")
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"KING:\nall the world's a stage, {index % 9}.\n\n"
                              for index in range(200)), encoding="utf-8")
    config = config_lib.make_config("quick", data=str(corpus), hidden_size=8, batch_size=4,
                                    seq_len=16, output_dir=str(folder / "run"))
    vocab = data.build_vocab(corpus.read_text(encoding="utf-8"))
    state = train.init_train_state(config, len(vocab))
    directory = folder / "run" / loop.CHECKPOINT_SUBDIR
    checkpoint.save_checkpoint(directory, state_pytree=state,
                               metadata=runstate.checkpoint_metadata(config, vocab, state, None))
    return str(directory)


@contextlib.contextmanager
def launcher_module():
    """experiments.text_quality imported for one test: its absl flags are defined on entry and
    removed on exit, so that other launchers run in this process (tests/test_launchers.py) can
    define flags of the same names (--data, --checkpoint, --seed)."""
    defined_before = set(flags.FLAGS)
    sys.modules.pop("experiments.text_quality", None)
    module = importlib.import_module("experiments.text_quality")
    try:
        yield module
    finally:
        flags.FLAGS.unparse_flags()
        for name in set(flags.FLAGS) - defined_before:
            delattr(flags.FLAGS, name)
        sys.modules.pop("experiments.text_quality", None)


def run_launcher(capsys, *argv):
    """``python -m experiments.text_quality ARGV``, in this process: (exit status, stdout,
    stderr)."""
    with launcher_module() as launcher:
        flags.FLAGS(["text_quality", *argv])
        try:
            common.run_main(launcher.main)(["text_quality"])
            status = 0
        except SystemExit as exit_:
            status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_grid_is_every_temperature_top_p_and_top_k():
    with launcher_module() as launcher:
        flags.FLAGS(["text_quality", "--temperatures=0.5,1.5", "--top_ps=0.9,1", "--top_ks=0,3"])
        grid = [(row["temperature"], row["top_p"], row["top_k"])
                for row in launcher.settings_from_flags()]
    assert grid == [(t, p, k) for k in (0, 3) for p in (0.9, 1.0) for t in (0.5, 1.5)]


def test_launcher_end_to_end(tiny_checkpoint, tmp_path, capsys):
    report, image = tmp_path / "out" / "tq.json", tmp_path / "tq.png"
    status, out, err = run_launcher(
        capsys, f"--checkpoint={tiny_checkpoint}", "--temperatures=0.5,1.5", "--top_ps=0.9",
        "--top_ks=3", "--num_samples=3", "--length=40", "--prime=KING", f"--json={report}",
        f"--plot={image}")
    assert status == 0, err
    assert "bits/char" in out and "| held-out test text (reference) |" in out
    assert out.count("| T=") == 2 and "| T=1.5 p=0.9 k=3 |" in out
    record = json.loads(report.read_text(encoding="utf-8"))
    assert [(row["temperature"], row["top_p"], row["top_k"]) for row in record["settings"]] == [
        (0.5, 0.9, 3), (1.5, 0.9, 3)]
    for metrics in [row["metrics"] for row in record["settings"]] + [
            record["reference"]["metrics"]]:
        assert set(metrics) == set(text_quality.METRICS)
        assert all(math.isfinite(value) for value in metrics.values())
    assert all(len(row["example"]) == 40 for row in record["settings"])   # prime not scored
    assert len(record["reference"]["example"]) == 40
    assert record["reference"]["metrics"]["word_validity"] > 0.9       # real text of the corpus
    assert math.isfinite(record["test_bpc"]) and record["test_bpc"] > 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_study_is_one_library_call(tiny_checkpoint):
    """`evaluate_checkpoint` returns the record the launcher writes (the fields of the records in
    experiments/results/text_quality*/, in that order) and the lengths its summary prints."""
    from jaxrnn.report import text_quality as quality_report
    settings = [{"temperature": 0.8, "top_p": 1.0, "top_k": 0}]
    result = text_quality.evaluate_checkpoint(tiny_checkpoint, settings, num_samples=2,
                                              length=30, command="test")
    record = result.record
    assert list(record) == ["command", "date", "title", "checkpoint", "step", "model", "data",
                            "test_loss", "test_bpc", "num_samples", "length", "prime", "seed",
                            "index_seconds", "settings", "reference"]
    assert list(record["settings"][0]) == ["temperature", "top_p", "top_k", "metrics",
                                           "sample_seconds", "score_seconds", "example"]
    assert record["title"] == "lstm H=8 L=1 step 0, 2 x 30 characters per setting"
    lines = quality_report.summary_lines(result)
    assert lines[0].startswith("lstm H=8 L=1 step 0: test ") and len(lines) == 2 + 2 + 1 + 1
    assert f"({result.train_characters:,} characters)" in lines[-1]


@pytest.mark.parametrize("flag,fragment", [
    ("--temperatures=0.8,0", "--temperatures values must be finite and > 0, got 0"),
    ("--temperatures=warm", "--temperatures must be a comma-separated list of numbers"),
    ("--top_ps=1.5", "--top_ps values must be in (0, 1]"),
    ("--top_ps=0", "--top_ps values must be in (0, 1]"),
    ("--top_ks=-1", "--top_ks values must be integers >= 0"),
    ("--length=0", "length must be an integer >= 1"),
    ("--plot=tq.xyz", "name the file with one of the suffixes"),
])
def test_launcher_rejects_bad_flags_with_one_line(tiny_checkpoint, capsys, flag, fragment):
    status, _, err = run_launcher(capsys, f"--checkpoint={tiny_checkpoint}", flag)
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err


def test_launcher_rejects_missing_corrupt_checkpoints_and_unwritable_outputs(
        tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(tiny_checkpoint):
        payload = pathlib.Path(tiny_checkpoint, name).read_bytes()
        (broken / name).write_bytes(payload[:len(payload) // 2] if name.endswith(".npz")
                                    else payload)
    for argv, fragment in (
            ([f"--checkpoint={tmp_path / 'nothing'}"], "no checkpoint at"),
            ([f"--checkpoint={broken}"], "truncated or corrupted"),
            ([f"--checkpoint={tiny_checkpoint}", f"--json={tmp_path}"], "is a folder"),
            ([f"--checkpoint={tiny_checkpoint}", f"--json={blocker / 'tq.json'}"],
             "cannot be written")):
        status, _, err = run_launcher(capsys, *argv)
        assert status == 2 and err.count("\n") == 1 and fragment in err, err
