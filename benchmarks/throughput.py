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

``--regularisers=none,dropout,...`` times one row per regulariser instead (`common.REGULARISER_ROWS`,
each at ``--regulariser_rate``; the step draws its masks inside, as `jaxrnn.train` does): every
row of an arch and mode is compiled first and all are timed interleaved in this one invocation.
The cost columns are the median over rounds of the paired per-block ratio of a row's step time to
the "none" row's, minus 1, with its min..max: in wall time, and in the process's CPU time
(`time.process_time`), which on a machine shared with other jobs measures the work added rather
than the waits for a core.

Usage:
  python -m benchmarks.throughput                                  # B=64 T=100 H=256 V=65 L=1
  python -m benchmarks.throughput --configs=default,big --measure_roofline --json=tp.json
  python -m benchmarks.throughput --archs=lstm --modes=manual --hidden_size=32 --seq_len=10
  python -m benchmarks.throughput --archs=lstm --steps_per_call=10     # as jaxrnn.train runs
  python -m benchmarks.throughput --archs=lstm --modes=manual --hidden_size=384 --seq_len=50 \
      --regularisers=none,dropout,variational_dropout,recurrent_dropout,weight_drop,\
embedding_dropout,zoneout_hidden,zoneout_cell,all --json=/tmp/regularisers.json
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
    flags.DEFINE_list("regularisers", [], "Regulariser rows, timed interleaved with each other "
                      f"instead of the plain rows: out of {', '.join(common.REGULARISER_ROWS)} "
                      "(include none: the cost column is relative to it).")
    flags.DEFINE_float("regulariser_rate", 0.25, "The rate of every regulariser of "
                       "--regularisers.")


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


def run_regularisers(arch, mode, cfg, rows, rate, *, warmup, steps, repeats, seed,
                     data_parallel=False, steps_per_call=1):
    """Compile and time one arch and mode with each regulariser row of ``rows`` (its masks drawn
    inside the step at ``rate``), interleaved. Returns {row: result dict}, times per training
    step, and each row's ``cost`` against "none": the paired per-block ratio of step times."""
    runners = {}
    for row in rows:
        dropout, rates = common.regulariser_settings(row, arch, rate)
        runners[row] = common.train_step_runner(arch, mode, cfg, seed, data_parallel,
                                                steps_per_call, dropout=dropout, rates=rates)
    compile_s = {row: common.first_call_seconds(run) for row, run in runners.items()}
    timing = common.time_interleaved(runners, warmup=warmup, steps=steps, repeats=repeats)
    blocks = {row: [s / steps_per_call for s in timing.blocks[row]] for row in rows}
    cpu = {row: [s / steps_per_call for s in timing.cpu_blocks[row]] for row in rows}
    out = {}
    for row in rows:
        dropout, rates = common.regulariser_settings(row, arch, rate)
        res = common.summarize(blocks[row], cfg.chars_per_step)
        res.update(compile_s=compile_s[row], steal_pct=timing.steal_pct, rate=rate,
                   settings=rates._asdict(), dropout=dropout, steps_per_call=steps_per_call,
                   cpu_seconds_median=statistics.median(cpu[row]), cpu_seconds_blocks=cpu[row],
                   final_loss=float(runners[row]()[1]))
        if "none" in blocks:
            res["cost"] = _paired_cost(blocks[row], blocks["none"])
            res["cpu_cost"] = _paired_cost(cpu[row], cpu["none"])
        out[row] = res
    return out


def _paired_cost(seconds, baseline):
    """Median, min and max over blocks of ``seconds / baseline - 1`` (paired block by block)."""
    ratios = [s / b - 1 for s, b in zip(seconds, baseline)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "blocks": ratios}


def regulariser_table_rows(name, arch, mode, res):
    def cost(r, key):
        if key not in r or r is res.get("none"):
            return "-"
        c = r[key]
        return common.fmt_spread(100 * c["median"], 100 * c["min"], 100 * c["max"], "{:+.1f}%")

    return [[name, arch, mode, row, f"{r['seconds_median'] * 1e3:.1f}", cost(r, "cost"),
             f"{r['cpu_seconds_median'] * 1e3:.1f}", cost(r, "cpu_cost"),
             f"{r['compile_s']:.1f}", f"{r['steal_pct']:.1f}"] for row, r in res.items()]


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
    if FLAGS.regularisers:
        return regularisers_main(archs, modes, timing)
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


def regularisers_main(archs, modes, timing):
    """The --regularisers rows: per config, arch and mode, all rows timed interleaved."""
    unknown = [row for row in FLAGS.regularisers if row not in common.REGULARISER_ROWS]
    if unknown:
        raise app.UsageError(f"unknown regulariser(s) {unknown}; choose from "
                             f"{', '.join(common.REGULARISER_ROWS)}")
    if not 0.0 < FLAGS.regulariser_rate < 1.0:
        raise app.UsageError(f"--regulariser_rate must be in (0, 1), got {FLAGS.regulariser_rate}")
    results, rows = {}, []
    for name in FLAGS.configs:
        cfg = common.config_from_flags(**CONFIGS[name])
        print(f"config {name}: {cfg}", flush=True)
        entry = {"config": dataclasses.asdict(cfg), "archs": {}}
        for arch in archs:
            entry["archs"][arch] = {}
            for mode in modes:
                res = run_regularisers(arch, mode, cfg, FLAGS.regularisers,
                                       FLAGS.regulariser_rate, seed=FLAGS.seed,
                                       data_parallel=FLAGS.data_parallel,
                                       steps_per_call=FLAGS.steps_per_call, **timing)
                entry["archs"][arch][mode] = res
                rows += regulariser_table_rows(name, arch, mode, res)
                for row, r in res.items():
                    print(f"  {arch} {mode} {row}: {r['seconds_median'] * 1e3:.1f} ms/step",
                          flush=True)
        results[name] = entry
    print(f"\nTraining step with each regulariser at rate {FLAGS.regulariser_rate:g}, timed "
          f"interleaved; median (min..max over {FLAGS.repeats} blocks of {FLAGS.steps} calls of "
          f"{FLAGS.steps_per_call} step(s)); cost = step time / the none row's - 1, paired per "
          "block, in wall time and in this process's CPU time:")
    common.print_table(["config", "arch", "mode", "regulariser", "step ms", "cost vs none",
                        "CPU ms", "CPU cost vs none", "compile s", "steal %"], rows)
    if FLAGS.json:
        config = {"configs": FLAGS.configs, "archs": archs, "modes": modes, **timing,
                  "seed": FLAGS.seed, "regularisers": FLAGS.regularisers,
                  "regulariser_rate": FLAGS.regulariser_rate,
                  "data_parallel": FLAGS.data_parallel, "devices": len(jax.devices()),
                  "steps_per_call": FLAGS.steps_per_call,
                  "train_step": "optax.chain(clip_by_global_norm(5.0), adam(2e-3)), donated; "
                                "masks drawn inside the step"}
        sysinfo.write_json(FLAGS.json, benchmark="throughput-regularisers", config=config,
                           results=results)


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    flags.adopt_module_key_flags(roofline)
    app.run(main)
