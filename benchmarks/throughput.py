"""Training throughput in characters/second (B*T / step time) per config x arch x backward mode.

The step is `common.make_bench_train_step`: forward, cross-entropy over all B*T positions,
backward (hand-written "manual" or JAX "autodiff"), global-norm clip, Adam. For each config and
arch, all modes are compiled first (compile s = first call), then timed block by block in
alternating order (`common.time_interleaved`), so the manual/autodiff speedup compares runs made
side by side. The speedup column is the median over rounds of the paired per-block ratio
(autodiff step time / manual step time), with its min..max.

``--steps_per_call=K`` runs K steps in one compiled call (a ``lax.fori_loop``), as jaxrnn's own
training loop runs its chunks; the default K=1 is one call per step, as `benchmarks.peers` times PyTorch.
The difference is memory mapping: XLA:CPU maps a call's temporaries fresh (one mmap/munmap of the
whole temporary block per call), so each call page-faults on every temporary page it touches;
the "faults/step" column counts those minor page faults (getrusage), per step.

Configs: "default" is the model flags as given; "big" overrides H=512 and L=2; "wide" B=256 and
H=1024 (GEMMs big enough for a GPU's matrix units; minutes per step on a 2-core CPU).
GFLOP/s counts matmul FLOPs only (`common.train_flops`, layer-0 input as a gather). The "of
roofline" column is chars/s as a fraction of the roofline bound: --roofline_gflops / (FLOPs per
char) if given, else with --measure_roofline the FLOP-weighted mix bound of `benchmarks.roofline`
measured in this run.

Usage:
  python -m benchmarks.throughput                                  # B=64 T=100 H=256 V=65 L=1
  python -m benchmarks.throughput --configs=default,big --measure_roofline --json=tp.json
  python -m benchmarks.throughput --archs=lstm --modes=manual --hidden_size=32 --seq_len=10
  python -m benchmarks.throughput --archs=lstm --steps_per_call=10     # as jaxrnn.train runs
"""
import dataclasses
import statistics

import jax
from absl import app, flags

from benchmarks import common, roofline, sysinfo
from jaxrnn.unroll import BACKWARDS

FLAGS = flags.FLAGS
CONFIGS = {"default": {}, "big": {"hidden_size": 512, "num_layers": 2},
           "wide": {"batch_size": 256, "hidden_size": 1024}}     # a GPU-sized GEMM


def define_flags():
    common.define_model_flags()
    common.define_bf16_flag()
    common.define_timing_flags()
    common.define_json_flag()
    roofline.define_roofline_flags()
    flags.DEFINE_list("modes", list(BACKWARDS), "Backward modes: manual (hand-written BPTT) "
                      "and/or autodiff (jax.grad of the plain scan).")
    flags.DEFINE_list("configs", ["default"], "Configs to run: default (the model flags) and/or "
                      "big (the model flags with hidden_size=512, num_layers=2) and/or wide "
                      "(batch_size=256, hidden_size=1024).")
    flags.DEFINE_float("roofline_gflops", None, "GEMM rate (GFLOP/s) for the roofline column; "
                       "overrides --measure_roofline.")
    flags.DEFINE_bool("data_parallel", False, "Split the batch over all devices (jaxrnn.parallel); "
                      "on one CPU set XLA_FLAGS=--xla_force_host_platform_device_count=2 first.")
    flags.DEFINE_integer("steps_per_call", 1, "Training steps per compiled call (a fori_loop "
                         "inside one jit, as jaxrnn.train runs its chunks); 1 = one call per "
                         "step, as `benchmarks.peers` times PyTorch.", lower_bound=1)
    flags.DEFINE_bool("measure_roofline", False, "Measure the GEMM roofline of each config in "
                      "this run (benchmarks.roofline) and report the fraction of its mix bound.")


def run_arch(arch, modes, cfg, *, warmup, steps, repeats, seed, data_parallel=False,
             steps_per_call=1):
    """Compile and time all ``modes`` of one arch, interleaved. Returns {mode: result dict};
    times and page faults are per training step (per call / ``steps_per_call``)."""
    runners = {mode: common.train_step_runner(arch, mode, cfg, seed, data_parallel,
                                              steps_per_call)
               for mode in modes}
    compile_s = {mode: common.first_call_seconds(run) for mode, run in runners.items()}
    timing = common.time_interleaved(runners, warmup=warmup, steps=steps, repeats=repeats)
    blocks = {mode: [s / steps_per_call for s in timing.blocks[mode]] for mode in modes}
    flops = common.cfg_flops(arch, cfg)
    out = {}
    for mode in modes:
        res = common.summarize(blocks[mode], cfg.chars_per_step)
        faults = [f / steps_per_call for f in timing.minor_faults[mode]]
        res.update(compile_s=compile_s[mode], steal_pct=timing.steal_pct,
                   flops_per_step=flops["train"],
                   gflops=flops["train"] / res["seconds_median"] / 1e9,
                   minor_faults_per_step=statistics.median(faults),
                   minor_faults_blocks=faults, steps_per_call=steps_per_call,
                   final_loss=float(runners[mode]()[1]))
        out[mode] = res
    if "manual" in out and "autodiff" in out:
        ratios = [a / m for a, m in zip(blocks["autodiff"], blocks["manual"])]
        out["speedup"] = {"median": statistics.median(ratios), "min": min(ratios),
                          "max": max(ratios), "blocks": ratios}
    return out


def bound_for(arch, cfg, rates):
    """(chars/s bound, where it comes from) or (None, None)."""
    if FLAGS.roofline_gflops:
        per_char = common.cfg_flops(arch, cfg)["per_char"]
        return FLAGS.roofline_gflops * 1e9 / per_char, f"--roofline_gflops={FLAGS.roofline_gflops}"
    if rates:
        return roofline.arch_bounds(arch, cfg, rates)["bound_mix"], "measured mix bound"
    return None, None


def table_rows(name, arch, modes, res, bound):
    rows = []
    for mode in modes:
        r = res[mode]
        frac = "-" if bound is None else f"{100 * r['rate_median'] / bound:.1f}%"
        speed = "-"
        if mode == "manual" and "speedup" in res:
            s = res["speedup"]
            speed = common.fmt_spread(s["median"], s["min"], s["max"], "{:.2f}x")
        rows.append([name, arch, mode,
                     common.fmt_spread(r["rate_median"], r["rate_min"], r["rate_max"]),
                     f"{r['seconds_median'] * 1e3:.2f}", f"{r['compile_s']:.2f}",
                     f"{r['gflops']:.1f}", frac, speed, f"{r['minor_faults_per_step']:,.0f}",
                     f"{r['steal_pct']:.1f}"])
    return rows


def main(argv):
    del argv
    archs = common.checked_archs(FLAGS.archs)
    modes = common.checked_modes(FLAGS.modes)
    if FLAGS.bf16_matmuls and (FLAGS.measure_roofline or FLAGS.roofline_gflops):
        raise app.UsageError("the roofline is measured with float32 GEMMs; drop "
                             "--measure_roofline/--roofline_gflops with --bf16_matmuls")
    unknown = [c for c in FLAGS.configs if c not in CONFIGS]
    if unknown:
        raise app.UsageError(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    timing = dict(warmup=FLAGS.warmup, steps=FLAGS.steps, repeats=FLAGS.repeats)
    results, rows = {}, []
    for name in FLAGS.configs:
        cfg = common.config_from_flags(**CONFIGS[name])
        print(f"config {name}: {cfg}", flush=True)
        rates = None
        if FLAGS.measure_roofline and not FLAGS.roofline_gflops:
            rates = roofline.measure_rates(cfg, archs, repeats=FLAGS.repeats,
                                           square_size=FLAGS.square_size,
                                           block_seconds=FLAGS.block_seconds)
        entry = {"config": dataclasses.asdict(cfg), "roofline_gemm": rates, "archs": {}}
        for arch in archs:
            res = run_arch(arch, modes, cfg, seed=FLAGS.seed, data_parallel=FLAGS.data_parallel,
                           steps_per_call=FLAGS.steps_per_call, **timing)
            bound, source = bound_for(arch, cfg, rates)
            res.update(roofline_bound_chars_per_s=bound, roofline_source=source)
            entry["archs"][arch] = res
            rows += table_rows(name, arch, modes, res, bound)
            for mode in modes:
                print(f"  {arch} {mode}: {res[mode]['rate_median']:,.0f} chars/s "
                      f"(compile {res[mode]['compile_s']:.2f} s)", flush=True)
        results[name] = entry
    print(f"\nTraining throughput; chars/s median (min..max over {FLAGS.repeats} blocks of "
          f"{FLAGS.steps} calls of {FLAGS.steps_per_call} step(s)); speedup = autodiff/manual "
          f"step time, paired per block; faults/step = minor page faults:")
    common.print_table(["config", "arch", "mode", "chars/s", "step ms", "compile s", "GFLOP/s",
                        "of roofline", "manual speedup", "faults/step", "steal %"], rows)
    if FLAGS.json:
        config = {"configs": FLAGS.configs, "archs": archs, "modes": modes, **timing,
                  "seed": FLAGS.seed, "roofline_gflops": FLAGS.roofline_gflops,
                  "measure_roofline": FLAGS.measure_roofline,
                  "data_parallel": FLAGS.data_parallel, "devices": len(jax.devices()),
                  "steps_per_call": FLAGS.steps_per_call,
                  "train_step": "optax.chain(clip_by_global_norm(5.0), adam(2e-3)), donated"}
        sysinfo.write_json(FLAGS.json, benchmark="throughput", config=config, results=results)


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    flags.adopt_module_key_flags(roofline)
    app.run(main)
