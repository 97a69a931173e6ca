"""Roofline: sustained GEMM GFLOP/s under jit for the model's shapes, and the chars/s it allows.

GEMMs timed (M, K) x (K, N), with G = k*H (k = 1 rnn, 3 gru, 4 lstm) and N = T*B rows:

  <arch>/step_fwd   (B, H) x (H, G)   T times inside one jitted fori_loop, as in the forward scan
  <arch>/step_bwd   (B, G) x (G, H)   T times inside one jitted fori_loop, as in the reverse sweep
  <arch>/window     (T*B, H) x (H, G) one jitted dot: weight gradients, input projections
  output            (T*B, H) x (H, V) one jitted dot: logits, dW_hy, dh of the output layer
  square            S x S x S         one jitted dot (S = --square_size): the machine's GEMM peak

Each loop iteration also does a (B, H) add so the next GEMM depends on the previous one (no
hoisting). Bounds on training chars/s for one step of `common.train_flops` (B*T chars):

  per-step bound  all FLOPs at the step_fwd rate
  large bound     all FLOPs at the window rate
  mix bound       each FLOP class at its own shape's rate: time = sum_c flops_c / rate_c, i.e. the
                  FLOP-weighted harmonic mean of the rates. This is the bound that
                  `benchmarks.throughput` uses for "fraction of roofline".
  peak bound      all FLOPs at the square rate

Usage: python -m benchmarks.roofline [--archs=lstm] [--hidden_size=512] [--json=roof.json]
"""
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common, sysinfo
from jaxrnn.cells import get_cell

FLAGS = flags.FLAGS


def define_roofline_flags():
    flags.DEFINE_integer("square_size", 2048, "S of the S x S x S reference GEMM.")
    flags.DEFINE_float("block_seconds", 0.2,
                       "Target length of one timed block; calls per block are sized to reach it.")


def gemm_shapes(cfg, archs):
    """name -> (M, K, N, loop): loop = how many dependent GEMMs run inside one jitted call."""
    b, t, h, v = cfg.batch_size, cfg.seq_len, cfg.hidden_size, cfg.vocab_size
    shapes = {}
    for arch in archs:
        g = get_cell(arch).num_gates * h
        shapes[f"{arch}/step_fwd"] = (b, h, g, t)
        shapes[f"{arch}/step_bwd"] = (b, g, h, t)
        shapes[f"{arch}/window"] = (t * b, h, g, 1)
    shapes["output"] = (t * b, h, v, 1)
    return shapes


def _gemm_call(m, k, n, loop, dtype, seed):
    """A zero-argument callable running ``loop`` dependent (M,K)x(K,N) GEMMs in one jitted call."""
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.standard_normal((m, k)), dtype)
    w = jnp.asarray(rng.standard_normal((k, n)) / math.sqrt(k), dtype)
    if loop == 1:
        dot = jax.jit(jnp.dot)
        return lambda: dot(a, w)
    width = min(k, n)

    @jax.jit
    def chain(a, w):
        def body(_, acc):  # acc: (M, K); feed a slice of the product back so steps depend
            return acc.at[:, :width].add(1e-7 * (acc @ w)[:, :width])
        return jax.lax.fori_loop(0, loop, body, a)

    return lambda: chain(a, w)


def time_gemm(m, k, n, loop, *, dtype, repeats, block_seconds, seed=0):
    """Summary of the GFLOP/s of one shape: median and min..max over ``repeats`` blocks."""
    fn = _gemm_call(m, k, n, loop, dtype, seed)
    compile_s = common.first_call_seconds(fn)
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    calls = max(1, math.ceil(block_seconds / max(time.perf_counter() - t0, 1e-6)))
    seconds = common.time_blocks(fn, warmup=1, steps=calls, repeats=repeats)
    out = common.summarize(seconds, 2.0 * m * k * n * loop / 1e9)
    out.update(shape=[m, k, n], loop=loop, calls_per_block=calls, compile_s=compile_s)
    return out


def measure_rates(cfg, archs, *, repeats, square_size=2048, block_seconds=0.2):
    """name -> GEMM summary (``rate_*`` in GFLOP/s) for every shape of `gemm_shapes` + square."""
    dtype = cfg.jnp_dtype()
    shapes = gemm_shapes(cfg, archs)
    shapes["square"] = (square_size, square_size, square_size, 1)
    return {name: time_gemm(m, k, n, loop, dtype=dtype, repeats=repeats,
                            block_seconds=block_seconds)
            for name, (m, k, n, loop) in shapes.items()}


def arch_bounds(arch, cfg, rates):
    """Chars/s bounds of one training step of ``arch`` from measured GEMM rates (GFLOP/s)."""
    flops = common.cfg_flops(arch, cfg)
    rate = {key: rates[key]["rate_median"] * 1e9 for key in rates}
    class_rate = {"step_fwd": rate[f"{arch}/step_fwd"], "step_bwd": rate[f"{arch}/step_bwd"],
                  "window": rate[f"{arch}/window"], "output": rate["output"]}
    mix_seconds = sum(flops[c] / class_rate[c] for c in class_rate)
    chars = cfg.chars_per_step
    return {"flops": flops,
            "bound_per_step": chars * class_rate["step_fwd"] / flops["train"],
            "bound_large": chars * class_rate["window"] / flops["train"],
            "bound_mix": chars / mix_seconds,
            "mix_gflops": flops["train"] / mix_seconds / 1e9,
            "bound_peak": chars * rate["square"] / flops["train"],
            "bound_used": "bound_mix"}


def print_report(cfg, archs, rates):
    rows = [[name, "x".join(map(str, r["shape"])) + (f" x{r['loop']} in loop" if r["loop"] > 1
                                                     else ""),
             common.fmt_spread(r["rate_median"], r["rate_min"], r["rate_max"], "{:.1f}")]
            for name, r in rates.items()]
    print(f"\nGEMM rates, {cfg.dtype}, GFLOP/s median (min..max over blocks):")
    common.print_table(["gemm", "M x K x N", "GFLOP/s"], rows)
    rows = []
    for arch in archs:
        b = arch_bounds(arch, cfg, rates)
        f = b["flops"]
        parts = (f["step_fwd"] + f["step_bwd"], f["window"], f["output"])
        share = "/".join(f"{100 * part / f['train']:.0f}" for part in parts)
        rows.append([arch, f"{f['train'] / 1e9:.3f}", f"{f['per_char'] / 1e6:.3f}", share,
                     f"{b['bound_per_step']:,.0f}", f"{b['bound_large']:,.0f}",
                     f"{b['bound_mix']:,.0f} ({b['mix_gflops']:.1f} GFLOP/s)",
                     f"{b['bound_peak']:,.0f}"])
    print(f"\nTraining-step bounds, chars/s (B={cfg.batch_size} T={cfg.seq_len} "
          f"H={cfg.hidden_size} V={cfg.vocab_size} L={cfg.num_layers}); FLOP share % = "
          "per-step/window/output; the mix bound is the one used:")
    common.print_table(["arch", "GFLOP/step", "MFLOP/char", "FLOP share %", "per-step bound",
                        "large bound", "mix bound (used)", "square-peak bound"], rows)


def main(argv):
    del argv
    cfg = common.config_from_flags()
    archs = common.checked_archs(FLAGS.archs)
    rates = measure_rates(cfg, archs, repeats=FLAGS.repeats, square_size=FLAGS.square_size,
                          block_seconds=FLAGS.block_seconds)
    print_report(cfg, archs, rates)
    if FLAGS.json:
        results = {"gemm": rates, "bounds": {a: arch_bounds(a, cfg, rates) for a in archs}}
        config = {**dataclasses.asdict(cfg), "archs": archs, "square_size": FLAGS.square_size,
                  "repeats": FLAGS.repeats, "block_seconds": FLAGS.block_seconds}
        sysinfo.write_json(FLAGS.json, benchmark="roofline", config=config, results=results)


def define_flags():
    common.define_model_flags()
    common.define_json_flag()
    flags.DEFINE_integer("repeats", 5, "Timed blocks per GEMM shape; median over blocks.")
    define_roofline_flags()


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    app.run(main)
