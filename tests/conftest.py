"""Shared fixtures: float64 scoped to the tests that ask for it, and small synthetic corpora.

Every test runs with full-precision float32 matmuls: on GPUs JAX's default float32 matmul is
TF32 (about 3e-4 relative error, measured on an H100), which the float32 tolerances are not about.
On CPUs this changes nothing.
"""
import jax
import pytest


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
