"""Bad inputs, table-driven (issue 16): each is refused with one line naming the problem and the
fix, before anything is compiled or written, and nothing already saved changes.

In-process wherever a subprocess adds nothing; subprocesses only for what only a launcher does
(flag parsing, exit status, --helpshort, the TPU probe line).
"""
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from experiments import checks
from jaxrnn import checkpoint, config as config_lib, loop, runchecks, runstate, sample, train
from jaxrnn import validate
from jaxrnn.errors import CheckpointError, ConfigError, JaxrnnError, TrainingDivergedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, H, B, T = 7, 8, 2, 5


def _quiet(*args):
    pass


def _one_line(error):
    text = str(error)
    assert "\n" not in text and text, text
    return text


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {os.path.relpath(os.path.join(base, name), folder):
            open(os.path.join(base, name), "rb").read()
            for base, _, names in os.walk(folder) for name in names}


# ---------------------------------------------------------------------------------------------
# Library entry points
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    params = jaxrnn.init_params(jax.random.key(0), "lstm", V, H)
    state = jaxrnn.init_state("lstm", B, H)
    ids = jnp.zeros((B, T), jnp.int32)
    return params, state, ids


def _loss(params, inputs, targets, state=None, **options):
    return lambda: jaxrnn.loss_fn(params, inputs, targets, state, **{"arch": "lstm", **options})


LIBRARY_CASES = {
    "init_state batch_size=0": (lambda m: lambda: jaxrnn.init_state("lstm", 0, H),
                                "batch_size must be an integer >= 1, got 0"),
    "init_params hidden_size=0": (lambda m: lambda: jaxrnn.init_params(
        jax.random.key(0), "lstm", V, 0), "hidden_size must be an integer >= 1"),
    "init_params vocab_size=True": (lambda m: lambda: jaxrnn.init_params(
        jax.random.key(0), "gru", True, H), "vocab_size must be an integer"),
    "init_params integer dtype": (lambda m: lambda: jaxrnn.init_params(
        jax.random.key(0), "gru", V, H, dtype=jnp.int32), "dtype must be a floating-point"),
    "init_state unknown arch": (lambda m: lambda: jaxrnn.init_state("transformer", B, H),
                                "unknown arch"),
    "ids >= V": (lambda m: _loss(m[0], m[2] + V, m[2]), "inputs holds id 7 outside [0, 7)"),
    "target id -1": (lambda m: _loss(m[0], m[2], m[2] - 1), "targets holds id -1 outside"),
    "T = 0 manual": (lambda m: _loss(m[0], m[2][:, :0], m[2][:, :0]), "T=0 time steps"),
    "T = 0 autodiff": (lambda m: _loss(m[0], m[2][:, :0], m[2][:, :0], backward="autodiff"),
                       "T=0 time steps"),
    "B = 0": (lambda m: _loss(m[0], m[2][:0], m[2][:0]), "empty batch B=0"),
    "float inputs": (lambda m: _loss(m[0], m[2].astype(jnp.float32), m[2]),
                     "integer character ids"),
    "1-D inputs": (lambda m: _loss(m[0], m[2][0], m[2][0]), "inputs must have shape (B, T)"),
    "targets of another shape": (lambda m: _loss(m[0], m[2], m[2][:, :3]),
                                 "targets have shape (2, 3) but inputs (2, 5)"),
    "GRU state on LSTM params": (lambda m: _loss(m[0], m[2], m[2],
                                                 jaxrnn.init_state("gru", B, H)),
                                 "lstm carries LSTMState(hidden, cell)"),
    "LSTM state on GRU params": (lambda m: lambda: jaxrnn.loss_fn(
        jaxrnn.init_params(jax.random.key(0), "gru", V, H), m[2], m[2], m[1], arch="gru"),
        "is a pair (an lstm carry) but gru carries one"),
    "arch mismatched with params": (lambda m: _loss(m[0], m[2], m[2], arch="gru"),
                                    "holds the parameters of lstm, not of gru; pass arch='lstm'"),
    "state dtype != params dtype": (lambda m: _loss(m[0], m[2], m[2], jaxrnn.init_state(
        "lstm", B, H, dtype=jnp.bfloat16)), "state[0] is bfloat16 but the parameters are float32"),
    "state of another batch": (lambda m: _loss(m[0], m[2], m[2], jaxrnn.init_state("lstm", 3, H)),
                               "state[0] has shape (3, 8), expected (B, H) = (2, 8)"),
    "state with too many layers": (lambda m: _loss(m[0], m[2], m[2], m[1] * 2),
                                   "state must be a tuple of 1 carries"),
    "params not from init_params": (lambda m: _loss({"W": 1}, m[2], m[2]),
                                    "params must be the dict from jaxrnn.init_params"),
    "params of mixed dtypes": (lambda m: _loss({**m[0], "b_y": m[0]["b_y"].astype(jnp.bfloat16)},
                                               m[2], m[2]), "cast all parameters to one dtype"),
    "forward_log_probs ids >= V": (lambda m: lambda: jaxrnn.forward_log_probs(
        m[0], m[2] + 9, arch="lstm"), "inputs holds id 9 outside [0, 7)"),
    "model_step (B, T) ids": (lambda m: lambda: jaxrnn.model_step(m[0], m[1], m[2], arch="lstm"),
                              "ids must have shape (B,)"),
    "model_step without state": (lambda m: lambda: jaxrnn.model_step(m[0], None, m[2][:, 0],
                                                                     arch="lstm"),
                                 "model_step needs a state"),
    "unroll T = 0": (lambda m: lambda: jaxrnn.unroll(m[0]["layers"], jnp.zeros((0, B, V)),
                                                     arch="lstm"), "with T, B >= 1"),
    "unroll input width": (lambda m: lambda: jaxrnn.unroll(m[0]["layers"], jnp.zeros((3, B, 5)),
                                                           arch="lstm"), "I=7"),
    "unroll float64 xs on float32 layers": (
        lambda m: lambda: jaxrnn.unroll(m[0]["layers"], np.zeros((3, B, V)), arch="lstm"),
        "cast xs to float32"),
    "unroll arch mismatch": (lambda m: lambda: jaxrnn.unroll(m[0]["layers"],
                                                             jnp.zeros((3, B, V)), arch="rnn"),
                             "pass arch='lstm'"),
    "sampler greedy with negative temperature": (lambda m: lambda: sample.make_sampler(
        arch="lstm", length=3, num_samples=1, greedy=True, temperature=-1.0),
        "greedy decoding ignores it"),
    "sample_text with a GRU's arch": (lambda m: lambda: sample.sample_text(
        m[0], arch="gru", vocab="abcdefg", key=jax.random.key(0)), "pass arch='lstm'"),
    "sample_text vocabulary of another size": (lambda m: lambda: sample.sample_text(
        m[0], arch="lstm", vocab="abc", key=jax.random.key(0)), "the vocabulary has 3"),
    "loss_fn with a Cell and an activation": (lambda m: _loss(
        m[0], m[2], m[2], arch=jaxrnn.get_cell("lstm"), activation="tanh"),
        "arch is a Cell (lstm), which carries its activation, matmul_dtype and zoneout; pass "
        "them to get_cell instead"),
    "model_step with a Cell and a matmul_dtype": (lambda m: lambda: jaxrnn.model_step(
        m[0], m[1], m[2][:, 0], arch=jaxrnn.get_cell("lstm"), matmul_dtype="bfloat16"),
        "arch is a Cell (lstm), which carries its activation"),
    "loss_fn zoneout_cell on a GRU": (lambda m: _loss(m[0], m[2], m[2], arch="gru",
                                                      zoneout=(0.1, 0.2)),
                                      "zoneout_cell applies to arch=lstm only"),
    "sampler prime of shape (1, P)": (lambda m: lambda: sample.make_sampler(
        arch="lstm", length=2, num_samples=1)(m[0], jnp.zeros((1, 3), jnp.int32),
                                             jax.random.key(0)), "prime_ids must have shape (P,)"),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_library_entry_points_refuse_bad_input(model, name):
    make, fragment = LIBRARY_CASES[name]
    with pytest.raises(JaxrnnError) as caught:
        make(model)()
    assert fragment in _one_line(caught.value)


def test_numpy_integer_sizes_and_greedy_temperature_zero_are_accepted(model):
    params = jaxrnn.init_params(jax.random.key(0), "gru", np.int64(V), np.int32(H),
                                np.int64(1))
    state = jaxrnn.init_state("gru", np.int64(B), np.int64(H))
    assert params["W_hy"].shape == (H, V) and state[0].shape == (B, H)
    loss, _ = jaxrnn.loss_fn(params, np.zeros((B, T), np.int64), np.ones((B, T), np.int64),
                             state, arch="gru")
    assert np.isfinite(loss)
    greedy = sample.sample_text(model[0], arch="lstm", vocab="abcdefg", key=jax.random.key(0),
                                prime="ab", length=4, greedy=True, temperature=0)
    assert len(greedy[0]) == 6


def test_checks_are_free_under_jit(model):
    """Traced ids are not value-checked (the documented contract), and the static checks still
    let jit and grad through with the same loss as an eager call."""
    params, state, ids = model
    eager = jaxrnn.loss_fn(params, ids, ids + 1, state, arch="lstm")[0]
    jitted = jax.jit(lambda p, x: jaxrnn.loss_fn(p, x, x + 1, state, arch="lstm")[0])
    assert jitted(params, ids) == eager
    grads = jax.grad(lambda p: jaxrnn.loss_fn(p, ids, ids + 1, state, arch="lstm")[0])(params)
    assert grads["W_hy"].shape == (H, V)


# ---------------------------------------------------------------------------------------------
# Launcher options that are checked by library functions (in-process)
# ---------------------------------------------------------------------------------------------
GRADCHECK = dict(archs=["rnn"], activations=["tanh"], activations_given=True, vocab_size=V,
                 hidden_size=H, seq_len=T, batch_size=B, num_layers=1, dtype="float64")
ALL_ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity"]

OPTION_CASES = {
    "gradcheck --seq_len=0": (lambda: checks.gradcheck_cases(**{**GRADCHECK, "seq_len": 0}),
                              "--seq_len must be an integer >= 1, got 0"),
    "gradcheck --batch_size=0": (lambda: checks.gradcheck_cases(**{**GRADCHECK,
                                                                   "batch_size": 0}),
                                 "--batch_size must be"),
    "gradcheck --vocab_size=1": (lambda: checks.gradcheck_cases(**{**GRADCHECK,
                                                                   "vocab_size": 1}),
                                 "--vocab_size must be >= 2"),
    "gradcheck --archs=lstm --activations=relu": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "archs": ["lstm"],
                                          "activations": ["relu"]}),
        "--activations=relu applies to the vanilla RNN only; add rnn to --archs"),
    "gradcheck --activations=swish": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "activations": ["swish"]}),
        "unknown activation 'swish' in --activations"),
    "gradcheck --archs=transformer": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "archs": ["rnn", "transformer"]}),
        "unknown arch 'transformer' in --archs"),
    "gradcheck --archs=lstm,lstm": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "archs": ["lstm", "lstm"],
                                          "activations_given": False}),
        "--archs lists a value twice: lstm,lstm"),
    "gradcheck --archs=": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "archs": [],
                                          "activations_given": False}), "--archs is empty"),
    "gradcheck --activations=": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "activations": []}),
        "--activations is empty"),
    "gradcheck --hidden_size=1000000": (
        lambda: checks.gradcheck_cases(**{**GRADCHECK, "hidden_size": 10**6}),
        "lower --hidden_size"),
    "compare_backward --compare_steps=0": (lambda: validate.size("--compare_steps", 0),
                                           "--compare_steps must be an integer >= 1"),
    "--num_processes=0": (lambda: checks.distributed(None, 0, 0, False),
                          "--num_processes must be >= 1"),
    "--num_processes=2 without --coordinator_address": (
        lambda: checks.distributed(None, 2, 0, True), "needs --coordinator_address"),
    "--num_processes=2 without --data_parallel": (
        lambda: checks.distributed("localhost:1234", 2, 0, False), "needs --data_parallel"),
    "--process_id=2 of 2": (lambda: checks.distributed("localhost:1234", 2, 2, True),
                            "--process_id must be in [0, --num_processes=2)"),
    "memory of a huge batch": (
        lambda: runchecks.check_memory(jaxrnn.get_cell("lstm"), 65, 64, 1, 10**6, 10**3, 4),
        "lower --batch_size or --seq_len"),
}


@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_launcher_options_are_refused(name):
    check, fragment = OPTION_CASES[name]
    with pytest.raises(JaxrnnError) as caught:
        check()
    assert fragment in _one_line(caught.value)


def test_valid_options_pass_and_memory_rule_is_what_it_says():
    assert checks.gradcheck_cases(**GRADCHECK) == [("rnn", "tanh")]
    defaults = {**GRADCHECK, "archs": ["rnn", "lstm", "gru"], "activations": ALL_ACTIVATIONS,
                "activations_given": False}                  # experiments.gradcheck's defaults
    assert checks.gradcheck_cases(**defaults) == [("rnn", name) for name in ALL_ACTIVATIONS] \
        + [("lstm", None), ("gru", None)]
    assert checks.gradcheck_cases(**{**defaults, "archs": ["gru", "lstm"]}) == [
        ("gru", None), ("lstm", None)]               # activations apply to rnn only
    checks.distributed(None, 1, 0, False)
    state_bytes, activations = runchecks.training_bytes(jaxrnn.get_cell("lstm"), 65, 1024, 1, 64,
                                                        50, 4)
    assert state_bytes > activations
    runchecks.check_memory(jaxrnn.get_cell("lstm"), 65, 1024, 1, 64, 50, 4,
                           available=state_bytes + activations)             # fits exactly
    with pytest.raises(ConfigError, match="MiB activations.* lower --hidden_size"):
        runchecks.check_memory(jaxrnn.get_cell("lstm"), 65, 1024, 1, 64, 50, 4,
                               available=state_bytes + activations - 1)
    params = jaxrnn.init_params(jax.random.key(0), "lstm", 65, 1024)
    assert state_bytes == 5 * 4 * sum(leaf.size for leaf in jax.tree.leaves(params))


def test_divergence_rule_and_perplexity_text():
    limit = runchecks.divergence_limit(65)
    assert limit == pytest.approx(2 * math.log(65))
    assert runchecks.divergence_limit(2) == pytest.approx(math.log(2) + 1)
    assert runchecks.first_divergent_step([4.2, 4.1, 3.9], 65) is None
    assert runchecks.first_divergent_step([4.2, 4.1, 1.5e32], 65) == 2
    assert runchecks.first_divergent_step([4.0, float("nan"), 4.0], 65) == 1
    assert runchecks.first_divergent_step([4.0, limit + 0.5, 4.0], 65) is None   # one spike
    report = train.loss_report(1.5e32)
    assert report["perplexity"] == math.inf and train.format_perplexity(math.inf) == "inf"
    assert train.format_perplexity(math.exp(100.0)) == "2.69e+43"
    assert train.format_perplexity(4.87) == "4.87"


# ---------------------------------------------------------------------------------------------
# Runs and checkpoints: nothing lost
# ---------------------------------------------------------------------------------------------
def _config(folder, corpus, **overrides):
    values = dict(data=str(corpus), arch="lstm", hidden_size=8, batch_size=2, seq_len=8,
                  num_steps=4, steps_per_call=2, eval_every=2, log_every=2, eval_batch_size=2,
                  sample_length=5, warmup_steps=0, dropout=0.0, output_dir=str(folder / "run"))
    values.update(overrides)
    return config_lib.make_config(**values)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An LSTM run stopped after its first checkpoint (step 2 of 4)."""
    folder = tmp_path_factory.mktemp("runs")
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"line {i}: all the world's a stage.\n" for i in range(60)),
                      encoding="utf-8")
    config = _config(folder, corpus)
    loop.train(config, log=_quiet, stop_at_step=2)
    return config, folder / "run"


def _copy(run, tmp_path):
    config, folder = run
    shutil.copytree(folder, tmp_path / "run")
    return config_lib.make_config(**{**config.to_dict(), "output_dir": str(tmp_path / "run")})


def _resumed(config, **changes):
    return config_lib.make_config(**{**config.to_dict(), "resume": True, **changes})


@pytest.mark.parametrize("changes,error,fragment", [
    ({"arch": "gru"}, ConfigError, "already holds a run"),                       # no --resume
    ({}, ConfigError, "pass --resume to continue it, --overwrite to replace it"),
    ({"resume": True, "optimizer": "sgd"}, CheckpointError, "the optimiser differs"),
    ({"resume": True, "learning_rate": 1e30, "clip_norm": 1e38}, TrainingDivergedError,
     "the last good checkpoint is kept"),
    ({"resume": True, "learning_rate": 1e12, "clip_norm": 1e38}, TrainingDivergedError,
     "above the divergence limit 6.66"),                          # V = 28: 2 ln 28
    ({"hidden_size": 10**6, "resume": True}, ConfigError, "lower --hidden_size"),
])
def test_a_run_is_never_lost(run, changes, error, fragment):
    config, folder = run
    before = _snapshot(folder)
    with pytest.raises(error) as caught:
        loop.train(config_lib.make_config(**{**config.to_dict(), **changes}), log=_quiet)
    assert fragment in _one_line(caught.value)
    assert _snapshot(folder) == before


def test_overwrite_replaces_the_run_on_request(run, tmp_path):
    config = _copy(run, tmp_path)
    gru = config_lib.make_config(**{**config.to_dict(), "arch": "gru", "num_steps": 2})
    loop.train(gru, log=_quiet, overwrite=True)
    assert checkpoint.read_metadata(tmp_path / "run" / "checkpoint")["config"]["arch"] == "gru"
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == [2, 2, 2]   # train, val, test


@pytest.mark.parametrize("kind", ["file", "unwritable", "unwritable resume"])
def test_output_dir_must_be_a_writable_folder(run, tmp_path, monkeypatch, kind):
    config = _copy(run, tmp_path)
    if kind == "file":
        target = tmp_path / "a_file"
        target.write_text("keep me", encoding="utf-8")
        changes, fragment = {"output_dir": str(target)}, "is a file, not a folder"
    elif kind == "unwritable":
        target = "/sys/jaxrnn-test-run" if os.path.isdir("/sys/kernel") else "/proc/x/y"
        changes, fragment = {"output_dir": target}, "cannot be written"
    else:                                   # root can write anywhere: make the probe fail
        def read_only(folder):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(runchecks, "_probe_write", read_only)
        changes, fragment = {"resume": True}, "cannot be written (Permission denied)"
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError) as caught:
        loop.train(config_lib.make_config(**{**config.to_dict(), **changes}), log=_quiet)
    assert fragment in _one_line(caught.value)
    assert _snapshot(tmp_path) == before


def _edit_metadata(folder, edit):
    path = folder / "checkpoint" / checkpoint.META_FILE
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("edit,fragment", [
    (lambda record: record["leaves"][0].update(dtype="float64"), "holds float32"),
    (lambda record: record["leaves"][0].update(dtype="no-such-type"), "'no-such-type'"),
    (lambda record: record["metadata"].pop("vocab"), "no valid vocab"),
    (lambda record: record["metadata"].update(config=[]), "no valid config"),
])
def test_edited_checkpoint_metadata_is_refused(run, tmp_path, edit, fragment):
    config = _copy(run, tmp_path)
    _edit_metadata(tmp_path / "run", edit)
    before = _snapshot(tmp_path)
    for load in (lambda: runstate.load_model(tmp_path / "run" / "checkpoint"),
                 lambda: loop.train(_resumed(config), log=_quiet)):
        with pytest.raises(CheckpointError) as caught:
            load()
        assert fragment in _one_line(caught.value)
    assert _snapshot(tmp_path) == before


def test_resume_hints_name_flags_that_train_has(run, tmp_path):
    config = _copy(run, tmp_path)
    arrays = next((tmp_path / "run" / "checkpoint").glob("*.npz"))
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(CheckpointError) as caught:
        loop.train(_resumed(config), log=_quiet)
    message = _one_line(caught.value)
    assert "--checkpoint" not in message and "--output_dir" in message
    with pytest.raises(CheckpointError) as caught:        # a mismatch, too
        loop.train(_resumed(config, hidden_size=16), log=_quiet)
    assert "--checkpoint" not in str(caught.value) and "--output_dir" in str(caught.value)


def test_sweep_refuses_nan_and_writes_strict_json_with_a_sweep_id(run, tmp_path):
    config = _config(tmp_path, run[0].data, output_dir=str(tmp_path / "sweep"))
    for rates in ([float("nan")], [float("inf")], [0.1, -1.0]):
        with pytest.raises(ConfigError, match="--learning_rates must all be finite and > 0"):
            loop.sweep(config, [0], rates, log=_quiet)
    assert not (tmp_path / "sweep").exists()
    results, _ = loop.sweep(config, [0], [1e-3, 1e30], log=_quiet)
    assert results[0]["diverged_at_step"] is None and results[1]["diverged_at_step"] == 2

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    records = [json.loads(line, parse_constant=no_constants)
               for line in (tmp_path / "sweep" / "sweep.jsonl").read_text().splitlines()]
    assert len({record["sweep_id"] for record in records}) == 1 and len(records) == 6


# ---------------------------------------------------------------------------------------------
# Launchers: flag parsing and exit status (the few cases only a subprocess can show)
# ---------------------------------------------------------------------------------------------
def _launch(module, *flags):
    return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("module,flags,fragment", [
    ("experiments.train", ["--hidden_size=abc"], "flag --hidden_size=abc"),
    ("experiments.evaluate", ["--text_split=dev"], "flag --text_split=dev"),
    ("experiments.gradcheck", ["--seq_len=0"], "--seq_len must be an integer >= 1"),
])
def test_launcher_errors_are_one_line_with_status_2(module, flags, fragment):
    result = _launch(module, *flags)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], \
        result.stderr


def test_flag_parsing_errors_are_one_line(capsys):
    from absl import flags
    from experiments import common
    values = flags.FlagValues()
    flags.DEFINE_integer("hidden_size", 1, "H", flag_values=values)
    flags.DEFINE_enum("text_split", "test", ["train", "val", "test"], "split",
                      flag_values=values)
    flags.DEFINE_integer("seq_len", 1, "T", flag_values=values)
    flags.register_validator("seq_len", lambda value: value < 1000,
                             message="--seq_len is long:\nmore than 999", flag_values=values)
    for argv, fragment in ((["prog", "--hidden_size=abc"], "flag --hidden_size=abc"),
                           (["prog", "--hidden=10"], "Did you mean: hidden_size"),
                           (["prog", "--text_split=dev"], "should be one of <train|val|test>"),
                           (["prog", "--nosuchflag"], "nosuchflag"),
                           (["prog", "--seq_len=1000"], "long: more than 999")):
        with pytest.raises(SystemExit) as exited:
            common.parse_flags(argv, values)
        assert exited.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_helpshort_lists_every_flag_and_no_tpu_probe_line():
    result = _launch("experiments.train", "--helpshort")
    names = [field.name for field in config_lib.dataclasses.fields(config_lib.Config)]
    for name in names + ["preset", "overwrite", "num_processes", "coordinator_address"]:
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, name
    for launcher in ("sweep", "compare_backward"):
        with open(os.path.join(ROOT, "experiments", f"{launcher}.py"), encoding="utf-8") as src:
            assert "flags.adopt_module_key_flags(common)" in src.read(), launcher
    # A launcher that starts JAX on the CPU prints no TPU probe line.
    started = _launch("experiments.gradcheck", "--archs=rnn", "--activations=tanh",
                      "--hidden_size=2", "--seq_len=2", "--batch_size=1", "--vocab_size=2",
                      "--dtype=float32")
    assert started.returncode == 0, started.stderr
    assert "Unable to initialize backend" not in started.stderr, started.stderr


def test_the_tpu_probe_line_is_dropped_and_nothing_else():
    """This machine has no TPU plugin, so the launcher run above cannot show the line; the filter
    that `common.run` installs on JAX's backend logger is checked on records directly."""
    import logging
    from experiments import common

    def record(message, level=logging.INFO):
        return logging.LogRecord("jax._src.xla_bridge", level, __file__, 1, message, None, None)

    probe = common._NoTpuProbe()
    assert not probe.filter(record("Unable to initialize backend 'tpu': INTERNAL: no TPU"))
    for kept in ("Unable to initialize backend 'cuda': driver too old",
                 "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not "
                 "installed. Falling back to cpu."):
        assert probe.filter(record(kept, logging.WARNING))
