"""Data parallelism (`jaxrnn.parallel`): two CPU devices give the one-device run, and a run
interrupted and resumed across epoch boundaries gives the straight run bit for bit.

The device count must be fixed before JAX starts, so each check runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jaxrnn import config as config_lib, loop, parallel
    from jaxrnn.errors import ConfigError
    text_path, output = sys.argv[1], sys.argv[2]
    results = {"devices": len(jax.devices())}
    params, configs, states = {}, {}, {}
    quiet = lambda *args: None
    for data_parallel in (False, True):
        # 16 streams of 64 characters: 5 windows, 4 per epoch with random offsets, so the 12
        # steps cross two epoch boundaries (and the resume below starts mid-epoch 1).
        config = configs[data_parallel] = config_lib.make_config(
            data=text_path, hidden_size=16, batch_size=16, seq_len=64, num_steps=12,
            steps_per_call=6, eval_every=6, log_every=6, sample_length=5, dropout=0.1,
            state_reset_probability=0.3, data_parallel=data_parallel,
            output_dir=f"{output}/{data_parallel}")
        run = loop.train(config, log=quiet)
        states[data_parallel] = run["train_state"]
        params[data_parallel] = [np.asarray(leaf) for leaf in jax.tree.leaves(run["train_state"].params)]
        state = run["train_state"].model_state[0].hidden
        results[f"state_devices_{data_parallel}"] = len(state.sharding.device_set)
        results[f"test_{data_parallel}"] = run["test"]["loss"]
    results["max_param_difference"] = max(
        float(np.abs(a - b).max()) for a, b in zip(params[False], params[True]))
    results["epoch_window"] = [int(states[True].epoch), int(states[True].window)]
    # Data parallel, interrupted after 6 steps and resumed: bit for bit the straight run.
    split = config_lib.make_config(**{**configs[True].to_dict(), "output_dir": f"{output}/split"})
    loop.train(split, log=quiet, stop_at_step=6)
    resumed = loop.train(config_lib.make_config(**{**split.to_dict(), "resume": True}),
                         log=quiet)["train_state"]
    unkeyed = lambda state: state._replace(key=jax.random.key_data(state.key))
    results["resume_bit_for_bit"] = all(
        np.array_equal(np.asarray(got), np.asarray(want)) for got, want in
        zip(jax.tree.leaves(unkeyed(resumed)), jax.tree.leaves(unkeyed(states[True]))))
    try:
        parallel.shard_batch(np.zeros((3, 5)), parallel.data_mesh())
    except ConfigError as error:
        results["odd_batch_error"] = str(error)
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_two_devices_match_one(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: to be, or not to be, that is the question.\n"
                            for i in range(120)), encoding="utf-8")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(text), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["devices"] == 2
    assert results["state_devices_False"] == 1 and results["state_devices_True"] == 2
    # Same windows, same dropout masks; only the order of the gradient's batch sum differs.
    assert results["max_param_difference"] < 1e-5
    assert results["epoch_window"] == [3, 0]
    assert results["resume_bit_for_bit"]
    assert abs(results["test_True"] - results["test_False"]) < 1e-5 * results["test_False"]
    assert "does not split over 2 devices" in results["odd_batch_error"]
