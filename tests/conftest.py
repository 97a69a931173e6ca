"""Shared fixtures: float64 scoped to the tests that ask for it, and small synthetic corpora."""
import jax
import pytest


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
