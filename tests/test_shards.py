"""`make test` runs the suite in shards (`tests/run_shards.py`): together the shards run every
test exactly once, and the tests sharing a module-scoped fixture stay in one shard."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# test_bad_inputs.py: a module fixture (`run`, a training run) shared by some of its tests.
FILE = "tests/test_bad_inputs.py"


def _collected(shard=None):
    env = dict(os.environ)
    env.pop("JAXRNN_TEST_SHARD", None)
    if shard:
        env["JAXRNN_TEST_SHARD"] = shard
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", FILE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if "::" in line]


def _users_of_the_run_fixture():
    source = open(os.path.join(ROOT, FILE), encoding="utf-8").read()
    names = [line.split("(")[0][len("def "):] for line in source.splitlines()
             if line.startswith("def test_") and "(run" in line.replace(" ", "")]
    assert names, "no test of test_bad_inputs.py uses its module fixture `run`"
    return names


@pytest.mark.parametrize("count", [3])
def test_shards_split_the_tests_once_and_keep_module_fixtures_together(count):
    everything = _collected()
    shards = [_collected(f"{index}/{count}") for index in range(count)]
    assert sorted(sum(shards, [])) == sorted(everything)
    assert all(shards), [len(shard) for shard in shards]
    users = _users_of_the_run_fixture()
    holding = [index for index, shard in enumerate(shards)
               if any(test.split("::")[1].split("[")[0] in users for test in shard)]
    assert len(holding) == 1, holding
