"""Shared pieces of the jaxrnn benchmarks: flags, config, the training step, FLOPs, timing.

Memory, environment and the JSON record are in `benchmarks.sysinfo`.

Timing method (the one of ``benchmarks.peers``, which times PyTorch, Flax and plain JAX): the first call of a jitted function is
timed on its own and reported as ``compile_s`` (trace + XLA compile + one execution); then
``warmup`` untimed calls; then ``repeats`` timed blocks of ``steps`` calls each, every block ended
by ``jax.block_until_ready``. A result is the per-call median over blocks with the min..max spread.
`time_interleaved` times several candidates block by block in alternating order (A B, B A, ...),
because this machine drifts by up to ~12% between minutes: compare only what was interleaved.
"""
import dataclasses
import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

import jaxrnn
from jaxrnn import parallel, regularisers
from jaxrnn.cells import ARCHS, get_cell
from jaxrnn.unroll import BACKWARDS
from benchmarks import sysinfo

DTYPES = ("float32", "bfloat16", "float64")
FLAGS = flags.FLAGS


# ---------------------------------------------------------------------------------------------
# Flags shared by the benchmark launchers (each launcher calls the groups it needs)
# ---------------------------------------------------------------------------------------------
def define_model_flags(*, training=True):
    """--archs, --hidden_size, --vocab_size, --num_layers, --dtype, --seed; with ``training``
    also --batch_size and --seq_len (the training window, read by `config_from_flags`)."""
    flags.DEFINE_list("archs", list(ARCHS), f"Cell types to benchmark, out of {', '.join(ARCHS)}.")
    if training:
        flags.DEFINE_integer("batch_size", 64, "B: parallel text streams per training step.")
        flags.DEFINE_integer("seq_len", 100, "T: time steps per training window (BPTT length).")
    flags.DEFINE_integer("hidden_size", 256, "H: hidden units per layer.")
    flags.DEFINE_integer("vocab_size", 65, "V: vocabulary size (65 = tiny-shakespeare).")
    flags.DEFINE_integer("num_layers", 1, "L: stacked recurrent layers.")
    flags.DEFINE_enum("dtype", "float32", DTYPES, "Parameter and activation dtype.")
    flags.DEFINE_integer("seed", 0, "Seed of the parameters and of the random token windows.")


def define_bf16_flag():
    """--bf16_matmuls, for the launchers whose measurement runs `jaxrnn.loss_fn` with it
    (throughput, memory, kernels); the others measure float32 matrix products only."""
    flags.DEFINE_bool("bf16_matmuls", False, "bfloat16 matmul operands with float32 accumulation "
                      "(jaxrnn.matmuls.matmul), in both backward modes.")


def define_timing_flags(*, warmup=3, steps=10, repeats=5):
    flags.DEFINE_integer("warmup", warmup, "Untimed calls after the first (compiling) call.")
    flags.DEFINE_integer("steps", steps, "Calls per timed block.")
    flags.DEFINE_integer("repeats", repeats, "Timed blocks; results are the median over blocks.")


def define_json_flag():
    flags.DEFINE_string("json", None, "Write config, environment and all results to this file.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One benchmark shape: B, T, H, V, L, the dtype name and whether matmuls take bfloat16."""

    batch_size: int = 64
    seq_len: int = 100
    hidden_size: int = 256
    vocab_size: int = 65
    num_layers: int = 1
    dtype: str = "float32"
    bf16_matmuls: bool = False

    def __post_init__(self):
        for field in ("batch_size", "seq_len", "hidden_size", "vocab_size", "num_layers"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def matmul_dtype(self):
        """The ``matmul_dtype`` of `jaxrnn.loss_fn`: "bfloat16" or None."""
        return "bfloat16" if self.bf16_matmuls else None

    @property
    def chars_per_step(self):
        return self.batch_size * self.seq_len

    def jnp_dtype(self):
        return resolve_dtype(self.dtype)


def resolve_dtype(name):
    """The jnp dtype called ``name``; float64 switches on jax_enable_x64 for this process."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name == "float64":
        jax.config.update("jax_enable_x64", True)
    return jnp.dtype(name)


def config_from_flags(**overrides):
    """The `ModelConfig` given by the model flags, with ``overrides`` applied (a field whose flag
    this launcher does not define keeps its default)."""
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(ModelConfig)
              if f.name in FLAGS}
    return ModelConfig(**{**values, **overrides})


def checked_archs(names):
    for name in names:
        get_cell(name)  # raises ConfigError with the valid names
    return list(names)


def checked_modes(names):
    bad = [name for name in names if name not in BACKWARDS]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; choose from {', '.join(BACKWARDS)}")
    return list(names)


# ---------------------------------------------------------------------------------------------
# Model inputs and the benchmark training step
# ---------------------------------------------------------------------------------------------
def numpy_tokens(cfg, seed=0):
    """Random ``(B, T)`` int32 NumPy inputs and targets (targets = inputs shifted by one)."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, cfg.vocab_size, size=(cfg.batch_size, cfg.seq_len + 1), dtype=np.int32)
    return seq[:, :-1], seq[:, 1:]


def make_tokens(cfg, seed=0):
    """`numpy_tokens` as JAX arrays."""
    return tuple(jnp.asarray(tokens) for tokens in numpy_tokens(cfg, seed))


def make_params(arch, cfg, seed=0):
    """`jaxrnn.init_params` in float32, cast to ``cfg.dtype`` (the orthogonal initialiser's QR
    has no bfloat16 kernel on CPU; the values do not matter for timing)."""
    dtype = cfg.jnp_dtype()
    params = jaxrnn.init_params(jax.random.key(seed), arch, cfg.vocab_size, cfg.hidden_size,
                                cfg.num_layers, dtype=jnp.float32)
    return jax.tree.map(lambda leaf: leaf.astype(dtype), params)


class BenchTrainStep(NamedTuple):
    """``init(params) -> opt_state`` and the jitted
    ``step(params, opt_state, inputs (B,T), targets (B,T), counter=None) -> (params, opt_state,
    loss)``; ``counter`` (a () uint32, a new value each call) seeds the masks of a step with
    regularisers."""

    init: Callable
    step: Callable


# A regulariser row of the benchmarks: "none", "dropout" (Zaremba et al.'s, a fresh mask each
# step), a name of `jaxrnn.regularisers.NAMES`, or "all" (all of those, zoneout_cell for the
# LSTM only).
REGULARISER_ROWS = ("none", "dropout") + regularisers.NAMES + ("all",)


def regulariser_settings(row, arch, rate):
    """``(dropout rate, jaxrnn.regularisers.Rates)`` of a `REGULARISER_ROWS` entry at ``rate``."""
    if row not in REGULARISER_ROWS:
        raise ValueError(f"unknown regulariser {row!r}; choose from {', '.join(REGULARISER_ROWS)}")
    names = [name for name in regularisers.NAMES if row in (name, "all")
             and (name != "zoneout_cell" or arch == "lstm")]
    return (rate if row in ("dropout", "all") else 0.0,
            regularisers.Rates(**{name: rate for name in names}))


def make_bench_train_step(arch, backward, *, learning_rate=2e-3, grad_clip=5.0, donate=True,
                          steps_per_call=1, matmul_dtype=None, dropout=0.0,
                          rates=regularisers.Rates()):
    """The full training step that `benchmarks.peers` times for every peer, on jaxrnn's loss.

    Forward over T from a zero state, mean cross-entropy over all B*T positions, backward
    (``backward="manual"`` hand-written BPTT or ``"autodiff"``), global-norm clipping to
    ``grad_clip`` (Pascanu et al. 2013) and Adam. ``donate`` lets XLA reuse the parameter and
    optimiser buffers in place, as a training loop would. ``steps_per_call > 1`` runs that many
    steps (on the same tokens) in one compiled ``lax.fori_loop``, as `jaxrnn.train` runs its
    chunks: the call's temporaries are then mapped once for all of them. ``matmul_dtype``: see
    `jaxrnn.loss_fn`. ``dropout`` and ``rates`` (`jaxrnn.regularisers.Rates`): the step draws
    their masks inside, as `jaxrnn.train`'s step does, from keys folded out of the ``counter``
    argument (and the step index within the call).
    """
    optimizer = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(learning_rate))
    grad_fn = jax.value_and_grad(jaxrnn.loss_fn, has_aux=True)
    num_gates = get_cell(arch).num_gates

    def step(params, opt_state, inputs, targets, key):
        masks = None
        if any(rates):
            masks = regularisers.draw_masks(
                rates, {name: jax.random.fold_in(key, index)
                        for index, name in enumerate(regularisers.NAMES)},
                num_layers=len(params["layers"]), seq_len=inputs.shape[1],
                batch_size=inputs.shape[0], vocab_size=params["W_hy"].shape[1],
                hidden_size=params["W_hy"].shape[0], num_gates=num_gates,
                dtype=params["W_hy"].dtype)
        (loss, _), grads = grad_fn(params, inputs, targets, None, arch=arch, backward=backward,
                                   matmul_dtype=matmul_dtype, dropout=dropout, masks=masks,
                                   dropout_key=jax.random.fold_in(key, len(regularisers.NAMES)),
                                   zoneout=regularisers.zoneout_of(rates))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def steps(params, opt_state, inputs, targets, counter=None):
        key = jax.random.key(0) if counter is None else jax.random.fold_in(jax.random.key(0),
                                                                           counter)
        if steps_per_call == 1:
            return step(params, opt_state, inputs, targets, key)
        loss0 = jnp.zeros((), jax.tree.leaves(params)[0].dtype)
        return jax.lax.fori_loop(
            0, steps_per_call,
            lambda index, carry: step(*carry[:2], inputs, targets, jax.random.fold_in(key, index)),
            (params, opt_state, loss0))

    return BenchTrainStep(optimizer.init,
                          jax.jit(steps, donate_argnums=(0, 1) if donate else ()))


def train_step_runner(arch, backward, cfg, seed=0, data_parallel=False, steps_per_call=1,
                      dropout=0.0, rates=regularisers.Rates()):
    """A zero-argument callable running ``steps_per_call`` training steps (one compiled call) on
    fixed tokens; returns the new params and loss (block on them). It owns fresh parameters, so
    several runners can be interleaved. With ``dropout`` or ``rates`` (see
    `make_bench_train_step`) each call draws new masks (it passes a call counter).

    ``data_parallel``: parameters and optimiser state replicated on every device and the B token
    rows split over them (`jaxrnn.parallel`), as ``--data_parallel`` trains; on one CPU, run with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` to make its cores two devices."""
    bench = make_bench_train_step(arch, backward, steps_per_call=steps_per_call,
                                  matmul_dtype=cfg.matmul_dtype, dropout=dropout, rates=rates)
    params = make_params(arch, cfg, seed)
    live = {"params": params, "opt": bench.init(params), "calls": 0}
    regularised = bool(dropout or any(rates))
    inputs, targets = make_tokens(cfg, seed)
    if data_parallel:
        mesh = parallel.data_mesh()
        live = jax.device_put(live, parallel.replicated(mesh))
        inputs, targets = parallel.shard_batch((inputs, targets), mesh)

    def run():
        extra = ()
        if regularised:
            live["calls"] += 1
            extra = (np.uint32(live["calls"]),)
        live["params"], live["opt"], loss = bench.step(live["params"], live["opt"], inputs, targets,
                                                       *extra)
        return live["params"], loss

    return run


# ---------------------------------------------------------------------------------------------
# FLOPs of one training step
# ---------------------------------------------------------------------------------------------
def train_flops(arch, batch_size, seq_len, hidden_size, vocab_size, num_layers):
    """Matmul FLOPs of one training step, split by GEMM shape class (2 FLOPs per multiply-add).

    Per layer, with ``G = k*H`` (k = 1 rnn, 3 gru, 4 lstm) and ``N = B*T`` rows:

    * ``step_fwd``: ``h_{t-1} @ W_h``, a ``(B, H) x (H, G)`` GEMM per step: ``2 N H G``.
    * ``step_bwd``: ``dpre_t @ W_h^T``, a ``(B, G) x (G, H)`` GEMM per step: ``2 N H G``.
    * ``window``: the ``(N, .)`` GEMMs over the whole window: ``dW_h = H_prev^T dPre`` (``2 N H G``)
      and, for layers above the first, the input projection forward, ``dx`` and ``dW_x``
      (``3 * 2 N H G``). Layer 0's input projection is a row gather of ``W_x``: 0 FLOPs (its
      scatter-add gradient is not counted either).
    * ``output``: logits ``(N, H) x (H, V)``, ``dW_hy`` and ``dh``: ``3 * 2 N H V``.

    The total is the count `benchmarks.peers` uses for every peer (backward = 2x forward, so
    3x the forward matmul FLOPs). ``train_dense`` counts the one-hot input multiplied
    densely, as the obvious cell does. Element-wise work (gates, softmax,
    Adam) is not counted.
    """
    g = get_cell(arch).num_gates * hidden_size
    n = batch_size * seq_len
    per = 2.0 * n * hidden_size * g
    out = {"step_fwd": num_layers * per, "step_bwd": num_layers * per,
           "window": num_layers * per + (num_layers - 1) * 3 * per,
           "output": 3 * 2.0 * n * hidden_size * vocab_size}
    out["train"] = sum(out.values())
    out["train_dense"] = out["train"] + 3 * 2.0 * n * vocab_size * g
    out["per_char"] = out["train"] / n
    return out


def cfg_flops(arch, cfg):
    return train_flops(arch, cfg.batch_size, cfg.seq_len, cfg.hidden_size, cfg.vocab_size,
                       cfg.num_layers)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def first_call_seconds(fn):
    """Seconds of the first call of ``fn`` (trace + compile + one execution), blocked on."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def cpu_ticks():
    """(steal, total) jiffies from /proc/stat: steal = time the hypervisor ran someone else."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
        return v[7], sum(v)
    except (OSError, IndexError, ValueError):
        return 0, 0


class Timing(NamedTuple):
    """What `time_interleaved` measured. blocks: {name: [per-call seconds of each block]};
    steal_pct: hypervisor steal over all timed blocks; minor_faults: {name: [per-call minor page
    faults of each block]} (`sysinfo.minor_page_faults`); cpu_blocks: {name: [per-call CPU
    seconds of this process, all its threads, of each block]} (`time.process_time`: on a machine
    shared with other jobs it counts the work done, not the time spent waiting for a core)."""

    blocks: dict
    steal_pct: float
    minor_faults: dict
    cpu_blocks: dict


def time_interleaved(fns, *, warmup, steps, repeats):
    """Per-call seconds (and page faults) of each block, for every zero-argument callable in
    ``fns`` (name -> fn).

    Each fn is warmed up ``warmup`` times; then round r times one block of ``steps`` calls of every
    fn, in the given order for even r and reversed for odd r. Returns a `Timing`.
    """
    for fn in fns.values():
        out = None
        for _ in range(warmup):
            out = fn()
        jax.block_until_ready(out)
    names = list(fns)
    blocks = {name: [] for name in names}
    faults = {name: [] for name in names}
    cpu = {name: [] for name in names}
    steal0, total0 = cpu_ticks()
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = fns[name]
            faults0, cpu0 = sysinfo.minor_page_faults(), time.process_time()
            t0 = time.perf_counter()
            for _ in range(steps):
                out = fn()
            jax.block_until_ready(out)
            blocks[name].append((time.perf_counter() - t0) / steps)
            cpu[name].append((time.process_time() - cpu0) / steps)
            faults[name].append((sysinfo.minor_page_faults() - faults0) / steps)
    steal1, total1 = cpu_ticks()
    return Timing(blocks, 100.0 * (steal1 - steal0) / max(1, total1 - total0), faults, cpu)


def time_blocks(fn, *, warmup, steps, repeats):
    """`time_interleaved` for a single callable: the list of per-call seconds of each block."""
    return time_interleaved({"fn": fn}, warmup=warmup, steps=steps, repeats=repeats).blocks["fn"]


def summarize(seconds, work_per_call=None):
    """Median and min..max of per-call seconds; with ``work_per_call`` also the rate (work/s)
    at the median, the fastest and the slowest block."""
    out = {"seconds_blocks": list(seconds), "seconds_median": statistics.median(seconds),
           "seconds_min": min(seconds), "seconds_max": max(seconds)}
    if work_per_call is not None:
        out.update(rate_median=work_per_call / out["seconds_median"],
                   rate_min=work_per_call / out["seconds_max"],
                   rate_max=work_per_call / out["seconds_min"])
    return out


def fmt_spread(median, low, high, fmt="{:,.0f}"):
    return f"{fmt.format(median)} ({fmt.format(low)}..{fmt.format(high)})"


def print_table(header, rows):
    """A markdown table: header is a list of column names, rows a list of lists of strings."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
