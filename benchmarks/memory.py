"""Memory of one training step per arch x backward mode, each measured in a fresh subprocess.

For every (arch, mode) a new Python process (so allocator caches, thread pools and compiled code
of one run never inflate another) builds the model at the given config and reports:

  residual_bytes   `jaxrnn.diagnostics.residual_bytes` of the loss at this config: every array the
                   VJP keeps for the backward, parameters included (both modes keep them), each
                   array once. param_bytes is given alongside for reference.
  xla_temp_bytes   XLA's temp buffer size of the compiled training step (memory_analysis).
  compile_peak_rss ru_maxrss after import, parameters and AOT compile (no step run yet).
  first_step_*     peak resident set (VmHWM, reset just before) of the first training step, and
                   its delta over the RSS before it: what the step's buffers add the first time.
  step_peak_rss    the same for the second step (steady state: the allocator reuses buffers);
  step_rss_delta   step_peak_rss - rss_before_step, with rss_before_step the RSS just before.

The step is `common.make_bench_train_step` (forward, CE, backward, clip, Adam), compiled ahead of
time (lower + compile, reported as compile_s). The residuals are measured after the RSS figures.

Usage: python -m benchmarks.memory [--archs=lstm] [--modes=manual] [--json=mem.json]
"""
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time

import jax
from absl import app, flags

import jaxrnn
from benchmarks import common, sysinfo
from jaxrnn.diagnostics import residual_bytes
from jaxrnn.unroll import BACKWARDS

FLAGS = flags.FLAGS
RESULT_TAG = "@@MEMORY_RESULT@@ "
MIB = 2.0 ** 20


def define_flags():
    common.define_model_flags()
    common.define_bf16_flag()
    common.define_json_flag()
    flags.DEFINE_list("modes", list(BACKWARDS), "Backward modes: manual and/or autodiff.")
    flags.DEFINE_string("worker", None, "Internal: run one 'arch:mode' measurement in this "
                        "process and print its result as a tagged JSON line.")


def measure(arch, mode, cfg, seed):
    """Run inside the worker process: one (arch, mode) measurement, returned as a dict."""
    bench = common.make_bench_train_step(arch, mode, matmul_dtype=cfg.matmul_dtype)
    params = common.make_params(arch, cfg, seed)
    inputs, targets = common.make_tokens(cfg, seed)
    param_bytes = sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))
    opt_state = bench.init(params)
    t0 = time.perf_counter()
    compiled = bench.step.lower(params, opt_state, inputs, targets).compile()
    compile_s = time.perf_counter() - t0
    analysis = compiled.memory_analysis()
    xla_temp = None if analysis is None else int(analysis.temp_size_in_bytes)

    compile_peak = sysinfo.peak_rss_bytes()  # read before the resets below lower it

    def one_step(params, opt_state):
        """(params, opt_state, loss, rss before, peak RSS during the step or None)."""
        before = sysinfo.current_rss_bytes()
        reset_ok = sysinfo.reset_rss_high_water()
        params, opt_state, loss = compiled(params, opt_state, inputs, targets)
        jax.block_until_ready(loss)
        return params, opt_state, loss, before, sysinfo.rss_high_water_bytes() if reset_ok else None

    params, opt_state, _, first_before, first_peak = one_step(params, opt_state)
    params, opt_state, loss, rss_before, step_peak = one_step(params, opt_state)

    fn = functools.partial(jaxrnn.loss_fn, arch=arch, backward=mode)
    res = residual_bytes(fn, params, inputs, targets)
    return {"arch": arch, "mode": mode, "residual_bytes": res, "param_bytes": param_bytes,
            "xla_temp_bytes": xla_temp, "compile_s": compile_s, "rss_before_step": rss_before,
            "step_peak_rss": step_peak, "step_rss_delta": _minus(step_peak, rss_before),
            "first_step_peak_rss": first_peak,
            "first_step_rss_delta": _minus(first_peak, first_before),
            "compile_peak_rss": compile_peak, "loss": float(loss)}


def _minus(a, b):
    return None if a is None or b is None else a - b


def run_worker(arch, mode):
    """Launch a fresh process for one (arch, mode) and parse its tagged result line."""
    model_flags = [f"--{f.name}={getattr(FLAGS, f.name)}"
                   for f in dataclasses.fields(common.ModelConfig)]
    argv = [sys.executable, "-m", "benchmarks.memory", f"--worker={arch}:{mode}",
            f"--seed={FLAGS.seed}", *model_flags]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=root)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    return {"arch": arch, "mode": mode, "error": f"worker exit {proc.returncode}",
            "stderr_tail": proc.stderr[-2000:]}


def _mib(value):
    return "-" if value is None else f"{value / MIB:.1f}"


def main(argv):
    del argv
    cfg = common.config_from_flags()
    if FLAGS.worker:
        arch, mode = FLAGS.worker.split(":")
        print(RESULT_TAG + json.dumps(measure(arch, mode, cfg, FLAGS.seed)), flush=True)
        return
    archs = common.checked_archs(FLAGS.archs)
    modes = common.checked_modes(FLAGS.modes)
    print(f"config: {cfg}", flush=True)
    results, rows = [], []
    for arch in archs:
        for mode in modes:
            r = run_worker(arch, mode)
            results.append(r)
            if "error" in r:
                print(f"  {arch} {mode}: ERROR {r['error']}\n{r['stderr_tail']}", flush=True)
                continue
            print(f"  {arch} {mode}: residuals {_mib(r['residual_bytes'])} MiB, step peak RSS "
                  f"{_mib(r['step_peak_rss'])} MiB", flush=True)
            rows.append([arch, mode, _mib(r["residual_bytes"]), _mib(r["param_bytes"]),
                         _mib(r["xla_temp_bytes"]), _mib(r["compile_peak_rss"]),
                         _mib(r["first_step_peak_rss"]), _mib(r["first_step_rss_delta"]),
                         _mib(r["step_peak_rss"]), _mib(r["step_rss_delta"]),
                         f"{r['compile_s']:.2f}"])
    print("\nMemory of one training step, MiB (each row a fresh process):")
    common.print_table(["arch", "mode", "residuals", "params", "XLA temp", "peak after compile",
                        "1st step peak", "1st step delta", "2nd step peak", "2nd step delta",
                        "compile s"], rows)
    if FLAGS.json:
        config = {**dataclasses.asdict(cfg), "archs": archs, "modes": modes, "seed": FLAGS.seed}
        sysinfo.write_json(FLAGS.json, benchmark="memory", config=config, results=results)


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    app.run(main)
