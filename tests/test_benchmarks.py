"""The benchmark harness runs end to end on tiny shapes and times what it says it times."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *flags):
    """``python -m benchmarks.<module> FLAGS`` from the repository root; the finished process."""
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *flags], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_steps_per_call_runs_that_many_training_steps():
    cfg = common.ModelConfig(batch_size=3, seq_len=5, hidden_size=8, vocab_size=7)
    inputs, targets = common.make_tokens(cfg)
    results = {}
    for steps_per_call, calls in ((1, 3), (3, 1)):
        bench = common.make_bench_train_step("lstm", "manual", donate=False,
                                             steps_per_call=steps_per_call)
        params = common.make_params("lstm", cfg)
        opt_state = bench.init(params)
        for _ in range(calls):
            params, opt_state, loss = bench.step(params, opt_state, inputs, targets)
        results[steps_per_call] = (params, loss)
    for one, many in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[3])):
        np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
    # Three Adam steps moved the parameters: the loop did not run zero times.
    fresh = common.make_params("lstm", cfg)
    assert not np.allclose(results[3][0]["W_hy"], fresh["W_hy"])


def test_throughput_writes_its_record(tmp_path):
    path = tmp_path / "tp.json"
    _run("throughput", "--archs=rnn", "--hidden_size=8", "--seq_len=5", "--batch_size=4",
         "--steps_per_call=2", "--warmup=1", "--steps=2", "--repeats=2", f"--json={path}")
    record = json.loads(path.read_text())
    assert record["config"]["steps_per_call"] == 2
    rnn = record["results"]["default"]["archs"]["rnn"]
    for mode in ("manual", "autodiff"):
        assert rnn[mode]["rate_median"] > 0 and rnn[mode]["steps_per_call"] == 2
        assert len(rnn[mode]["minor_faults_blocks"]) == 2
    assert len(rnn["speedup"]["blocks"]) == 2
    assert "GLIBC_TUNABLES" in record["environment"]


def test_kernels_reads_xla_trace(tmp_path):
    if getattr(jax.profiler, "ProfileData", None) is None:       # e.g. jax 0.6 (Python 3.10)
        pytest.skip("this jax has no jax.profiler.ProfileData")
    path = tmp_path / "kernels.json"
    _run("kernels", "--archs=lstm", "--modes=manual", "--hidden_size=8", "--seq_len=5",
         "--batch_size=4", "--calls=2", f"--json={path}")
    kernels = json.loads(path.read_text())["results"]["lstm manual"]["kernels"]
    # The recurrence shows up as kernels that ran once per time step (T = 5).
    assert any(runs == 5 for _, runs in kernels.values())
    assert sum(ms for ms, _ in kernels.values()) > 0


def test_peers_times_each_peer_and_skips_the_missing_ones(tmp_path):
    """benchmarks.peers runs every peer in its own process on the same model and FLOP count;
    a peer whose package is not installed is skipped with a one-line note, not an error."""
    from benchmarks import peers
    path = tmp_path / "peers.json"
    result = _run("peers", "--archs=rnn", "--peers=jax,jaxrnn_manual,torch", "--hidden_size=8",
                  "--seq_len=5", "--batch_size=4", "--warmup=1", "--steps=2", "--repeats=2",
                  f"--json={path}")
    record = json.loads(path.read_text())
    measured = record["results"]["rnn"]
    expected = {"jax", "jaxrnn_manual"} | ({"torch"} if peers.missing_package("torch") is None
                                           else set())
    assert set(measured) == expected
    for peer in measured.values():
        assert peer["chars_per_s"] > 0 and len(peer["runs"][0]["seconds_blocks"]) == 2
    if peers.missing_package("torch"):
        assert record["config"]["skipped"] == {"torch": "torch"}
        assert "note: peer torch skipped: no module torch" in result.stdout
    cfg = common.ModelConfig(batch_size=4, seq_len=5, hidden_size=8)
    assert record["config"]["flops_per_step"]["rnn"] == common.cfg_flops("rnn", cfg)["train"]


def test_config_trace_counts_stops_and_returns_to_modules_already_left():
    from benchmarks import config_trace
    order = [("a", "f"), ("a", "g"), ("b", "h"), ("a", "i"), ("c", "j"), ("b", "k"), ("b", "l")]
    merged = config_trace.stops(order)
    assert merged == [("a", ["f", "g"]), ("b", ["h"]), ("a", ["i"]), ("c", ["j"]),
                      ("b", ["k", "l"])]
    assert config_trace.returns(merged) == 2          # back to a, back to b


def test_config_trace_follows_a_real_training_run(tmp_path, small_text):
    from benchmarks import config_trace
    from jaxrnn import config as config_lib
    path = tmp_path / "corpus.txt"
    path.write_text(small_text)
    config = config_lib.make_config(
        data=str(path), hidden_size=8, batch_size=2, seq_len=8, num_steps=2, steps_per_call=2,
        eval_every=2, log_every=2, warmup_steps=1, eval_batch_size=1, sample_length=5,
        output_dir=str(tmp_path / "run"))
    order = config_trace.trace_train(config)
    assert order[0] == ("jaxrnn.loop", "train")
    assert ("jaxrnn.model", "init_params") in order and len(set(order)) == len(order)
