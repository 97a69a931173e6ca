"""Run the test suite as N pytest processes at once: ``python tests/run_shards.py --jobs=2 --
-q -m "not slow"`` (what ``make test`` runs).

Compiling XLA programs is most of a cold run and uses one core per process, so on the 2-core
machine two shards take about two thirds of the time of one (367 s against 537 s for a cold
``make test``, BUILD_NOTES.md). Each shard is ``python -m pytest ARGS`` with
``JAXRNN_TEST_SHARD=i/N`` set; ``tests/conftest.py`` then keeps shard i's groups of the collected
tests, each group going to the shard with the fewest tests so far (a group is one test, or all
the tests of a module that share a module-scoped fixture, so that no fixture is built twice).
Each shard's output is printed when it ends, then one summary line; the exit status is the first
non-zero one (a shard that selected no test counts as passed unless every shard did).
"""
import os
import subprocess
import sys
import tempfile
import time

import pytest

NO_TESTS_COLLECTED = pytest.ExitCode.NO_TESTS_COLLECTED


def main(argv):
    jobs, args = 2, list(argv)
    if args and args[0].startswith("--jobs="):
        jobs = int(args.pop(0).split("=", 1)[1])
    if args and args[0] == "--":
        args.pop(0)
    if jobs < 1:
        raise SystemExit(f"--jobs={jobs}: give at least 1 process")
    start = time.monotonic()
    shards = []
    for index in range(jobs):
        log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, JAXRNN_TEST_SHARD=f"{index}/{jobs}")
        shards.append((subprocess.Popen([sys.executable, "-m", "pytest", *args], env=env,
                                        stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for index, (process, log) in enumerate(shards):
        codes.append(process.wait())
        log.seek(0)
        print(f"===== shard {index + 1}/{jobs} (exit {codes[-1]}) =====")
        print(log.read(), end="", flush=True)
    failed = [code for code in codes if code not in (0, NO_TESTS_COLLECTED)]
    status = failed[0] if failed else (NO_TESTS_COLLECTED if set(codes) == {NO_TESTS_COLLECTED}
                                       else 0)
    print(f"===== {jobs} shards, exit codes {codes}, {time.monotonic() - start:.0f} s wall =====")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
