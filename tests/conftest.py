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

XLA compiles with most optimisations off (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, also inherited
by the subprocesses) unless the environment already sets that variable: the tests run tiny
shapes, where compiling dominates and running does not (a cold ``tests/test_training_semantics.py``
took 115 s optimised and 47 s not, on 2 cores). The tests check jaxrnn's programs, not XLA's
optimiser; ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 make test`` runs them fully optimised.
"""
import os

import jax
import pytest

_CACHE_DIR = os.environ.get("JAXRNN_TEST_CACHE_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax-test-cache")
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE_DIR,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update("jax_disable_most_optimizations",
                  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true"))
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


def _shard_groups(items):
    """The collected tests in groups that must run in one process: all the tests of a module that
    use one of its module-scoped fixtures form one group (the fixture is built once), every other
    test is a group of its own. Order is kept."""
    groups, by_module = [], {}
    for item in items:
        fixture_defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        shared = any(defs and defs[-1].scope == "module" for defs in fixture_defs.values())
        if not shared:
            groups.append([item])
            continue
        key = item.module.__name__
        if key not in by_module:
            by_module[key] = []
            groups.append(by_module[key])
        by_module[key].append(item)
    return groups


def pytest_collection_modifyitems(config, items):
    """With ``JAXRNN_TEST_SHARD=i/n`` (set by ``tests/run_shards.py``) keep shard i's share: the
    groups of `_shard_groups`, each given to the shard holding the fewest tests so far."""
    shard = os.environ.get("JAXRNN_TEST_SHARD")
    if not shard:
        return
    index, count = (int(part) for part in shard.split("/"))
    sizes, kept = [0] * count, []
    for group in _shard_groups(items):
        target = sizes.index(min(sizes))
        sizes[target] += len(group)
        if target == index:
            kept.extend(group)
    kept_ids = {id(item) for item in kept}
    deselected = [item for item in items if id(item) not in kept_ids]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept


@pytest.fixture
def tiny_run_config(tmp_path):
    """``make(text, **overrides)``: the validated `Config` of a 4-step run of an 8-unit model on
    ``text`` (written to ``tmp_path/corpus.txt``), its output in ``tmp_path/run``; one save per
    evaluation (every 2 steps), no time-based saves."""
    from jaxrnn import config as config_lib

    def make(text, **overrides):
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(text, encoding="utf-8")
        values = dict(data=str(corpus), hidden_size=8, batch_size=2, seq_len=8, num_steps=4,
                      steps_per_call=2, eval_every=2, log_every=2, eval_batch_size=2,
                      sample_length=5, warmup_steps=0, dropout=0.0, checkpoint_every_seconds=0,
                      output_dir=str(tmp_path / "run"))
        values.update(overrides)
        return config_lib.make_config(**values)
    return make
