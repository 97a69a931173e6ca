"""Shared fixtures: float64 scoped to the tests that ask for it, and small synthetic corpora.

Every test runs with full-precision float32 matmuls: on GPUs JAX's default float32 matmul is
TF32 (about 3e-4 relative error, measured on an H100), which the float32 tolerances are not about.
On CPUs this changes nothing.

Compiled programs go to JAX's persistent compilation cache, in ``$JAXRNN_TEST_CACHE_DIR`` or
else ``.jax-test-cache/`` in the repository (git-ignored; ``make clean`` removes it), and the
launchers the tests start as subprocesses inherit it: many tests and every subprocess compile the
same tiny programs, and a hit replaces a compile of seconds, within one session and the next. The
cache is keyed by the program, the JAX/jaxlib version and the compile options, so it cannot
change a result; a clean clone (CI) starts with it empty.
"""
import os

import jax
import pytest

_CACHE_DIR = os.environ.get("JAXRNN_TEST_CACHE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax-test-cache")
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE_DIR,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def float32_matmuls_are_float32():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture
def x64():
    """Enable float64 for one test only, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def small_text():
    """A few kilobytes of made-up text with a small vocabulary (no real corpus needed)."""
    lines = [f"line {index}: the quick brown fox jumps over the lazy dog {index % 7}.\n"
             for index in range(120)]
    return "".join(lines)


_CHILDREN = []  # processes the running test started (`track`)


def track(process):
    """Register a subprocess a test starts (``from conftest import track``): if it is still
    running when the test ends, pass or fail, it is killed, so no training process outlives its
    test."""
    _CHILDREN.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while _CHILDREN:
        process = _CHILDREN.pop()
        if process.poll() is None:
            process.kill()
            process.wait()
