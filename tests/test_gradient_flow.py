"""Gradient flow through time (`jaxrnn.gradient_flow`): the hand-written sweeps against jax.grad,
a case with a known answer, and the summary statistics; its table and JSON record
(`jaxrnn.report.gradient_flow`) and the launcher's output checks and flag parsing
(`experiments.reporting`)."""
import ast
import inspect
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import gradient_flow
from jaxrnn.errors import ConfigError
from jaxrnn.report import gradient_flow as flow_report
from experiments import reporting

VOCAB, HIDDEN, BATCH, SEQ = 7, 6, 3, 9


def _window(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(BATCH, SEQ + 1), dtype=np.int32)
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("arch,activation", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None),
                                             ("gru", None)])
def test_manual_sweep_gradients_match_autodiff_float64(x64, arch, activation):
    params = jaxrnn.init_params(jax.random.key(1), arch, VOCAB, HIDDEN, num_layers=2,
                                dtype=jnp.float64, activation=activation)
    inputs, targets = _window()
    manual = gradient_flow.projection_gradients(params, inputs, targets, arch=arch,
                                                activation=activation, backward="manual")
    autodiff = gradient_flow.projection_gradients(params, inputs, targets, arch=arch,
                                                  activation=activation, backward="autodiff")
    gates = jaxrnn.get_cell(arch).num_gates
    assert [g.shape for g in manual] == [(SEQ, BATCH, gates * HIDDEN)] * 2
    for manual_layer, autodiff_layer in zip(manual, autodiff):
        assert float(jnp.abs(manual_layer).max()) > 0
        np.testing.assert_allclose(manual_layer, autodiff_layer, rtol=1e-10, atol=1e-13)


def test_last_step_cotangent_matches_finite_differences_float64(x64):
    params = jaxrnn.init_params(jax.random.key(2), "rnn", VOCAB, HIDDEN, dtype=jnp.float64)
    hidden = jax.random.normal(jax.random.key(3), (BATCH, HIDDEN), jnp.float64)
    targets = jnp.arange(BATCH) % VOCAB

    def loss(h):
        log_probs = jax.nn.log_softmax(h @ params["W_hy"] + params["b_y"], axis=-1)
        return -jnp.take_along_axis(log_probs, targets[:, None], axis=-1).sum()

    analytic = gradient_flow.last_step_cotangent(params, hidden, targets)
    step = 1e-6
    for index in [(0, 0), (1, 3), (2, 5)]:
        unit = jnp.zeros_like(hidden).at[index].set(step)
        numeric = (loss(hidden + unit) - loss(hidden - unit)) / (2 * step)
        assert abs(float(analytic[index]) - float(numeric)) < 1e-8


@pytest.mark.parametrize("scale", [0.3, 0.8, 1.25])
def test_linear_rnn_gradient_scales_by_the_recurrent_gain_each_step(x64, scale):
    """Identity activation, W_hh = scale * Q (Q orthogonal), loss at T only: going back one step
    multiplies every stream's g_t by W_hh^T, so |g| changes by exactly ``scale`` per step."""
    params = jaxrnn.init_params(jax.random.key(4), "rnn", VOCAB, HIDDEN, dtype=jnp.float64,
                                activation="identity")
    params["layers"][0]["W_hh"] = scale * params["layers"][0]["W_hh"]  # orthogonal at init
    inputs, targets = _window(1)
    flow = gradient_flow.gradient_flow(params, inputs, targets, arch="rnn",
                                       activation="identity")
    norms = flow.norms[0]
    np.testing.assert_allclose(norms[1:] / norms[:-1], scale, rtol=1e-10)
    assert flow.factor_per_step[0] == pytest.approx(scale, rel=1e-10)
    expected_reach = int(np.ceil(np.log(gradient_flow.RELATIVE_FLOOR) / np.log(scale)))
    assert flow.reach[0] == (expected_reach if scale < 1 and expected_reach < SEQ else -1)


def test_reach_and_factor_summaries():
    norms = np.array([1.0, 0.5, 0.25, 1e-3, 1e-4, 0.0])
    assert gradient_flow.first_reach(norms) == 4          # strictly below 1e-3 of d = 0
    assert gradient_flow.first_reach(np.array([1.0, 0.9, 0.8])) == -1
    assert gradient_flow.first_reach(np.array([0.0, 0.0, 0.0])) == 0
    assert np.isnan(gradient_flow.fit_factor_per_step(np.array([1.0, 0.0, 0.0, 3.0])))
    assert gradient_flow.fit_factor_per_step(2.0 ** -np.arange(6)) == pytest.approx(0.5)


def test_norms_are_medians_over_streams_and_do_not_underflow():
    # float32 entries of 1e-25 square to 0 in float32; the norm must still be 1e-25 * sqrt(G).
    tiny = np.full((2, 5, 4), 1e-25, np.float32)                 # (T, B, G)
    tiny[0] *= np.array([1, 2, 3, 100, 1000], np.float32)[:, None]
    norms = gradient_flow.norms_by_distance([jnp.asarray(tiny)])
    assert norms.shape == (1, 2)
    np.testing.assert_allclose(norms[0], [2e-25, 3 * 2e-25], rtol=1e-6)  # d=0 is t=T; medians
    tiny64 = np.full((1, 1, 4), 1e-200)                          # squares below float64's range
    np.testing.assert_allclose(gradient_flow.norms_by_distance([tiny64]), [[2e-200]], rtol=1e-12)


def test_table_and_json_record_of_a_dead_model(tmp_path):
    flow = gradient_flow.GradientFlow(np.zeros((1, 4)), np.array([np.nan]), np.array([0]))
    model = gradient_flow.Model("dead", {}, jaxrnn.get_cell("rnn"), {"kind": "init"})
    lines = flow_report.format_table([(model, flow)], [1, 3])
    assert lines[-1] == "| dead | 0 | 0 | n/a | n/a | n/a | 0 (no gradient at d=0) |"
    path = tmp_path / "v1.2" / "report"                          # a dot in a folder name
    reporting.write_json(path, flow_report.report_record([(model, flow)], seq_len=4))
    record = json.loads(path.read_text())
    assert record["models"][0]["factor_per_step"] == [None]
    assert record["models"][0]["reach"] == [0] and record["seq_len"] == 4
    assert os.listdir(path.parent) == ["report"]                 # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_checks_and_float64_models_need_x64(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        reporting.check_output_path(tmp_path, "--json")
    with pytest.raises(ConfigError, match="name the image file with one of the suffixes"):
        reporting.check_plot_path(tmp_path / "curves.xyz")
    if not jax.config.jax_enable_x64:
        with pytest.raises(ConfigError, match="jax_enable_x64"):
            gradient_flow.fresh_model(VOCAB, HIDDEN, arch="lstm", dtype="float64")
    fresh = gradient_flow.fresh_model(VOCAB, HIDDEN, arch="gru", dtype=jnp.float32)
    assert fresh.source["dtype"] == "float32"


def test_parse_distances_and_model_specs():
    assert reporting.parse_distances(["5", "0", "1", "5", "200", "12"], 12) == [1, 5]
    for bad in (["-1"], ["x"], ["1.5"]):
        with pytest.raises(ConfigError, match="--distances must be integers >= 0"):
            reporting.parse_distances(bad, 12)
    assert reporting.parse_model_spec("rnn:relu:identity") == {
        "arch": "rnn", "activation": "relu", "recurrent_init": "identity"}
    assert reporting.parse_model_spec("gru") == {
        "arch": "gru", "activation": None, "recurrent_init": "orthogonal"}
    for spec, fragment in (("LSTM", "unknown arch"), ("rnn:swish", "unknown activation"),
                           ("lstm:tanh", "expected rnn"), ("gru:identity:x", "expected rnn")):
        with pytest.raises(ConfigError, match=fragment):
            reporting.parse_model_spec(spec)


def test_rejects_bad_arguments():
    params = jaxrnn.init_params(jax.random.key(0), "gru", VOCAB, HIDDEN)
    inputs, targets = _window()
    with pytest.raises(ConfigError, match="backward must be one of"):
        gradient_flow.projection_gradients(params, inputs, targets, arch="gru", backward="fd")
    with pytest.raises(ConfigError, match="--seq_len of 2 or more"):
        gradient_flow.projection_gradients(params, inputs[:, :1], targets[:, :1], arch="gru")


def test_measurement_module_holds_no_presentation_or_host_loop():
    """`jaxrnn.gradient_flow` measures only: it imports neither the training loop (checkpoints
    are loaded by the caller) nor file, JSON or plotting code, and names no launcher flag."""
    source = inspect.getsource(gradient_flow)
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
    banned = {"jaxrnn.loop", "jaxrnn.files", "jaxrnn.checkpoint", "json", "io", "matplotlib"}
    assert not imported & banned, imported & banned
    assert "--plot" not in source and "--json" not in source
