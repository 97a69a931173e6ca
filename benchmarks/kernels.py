"""Per-kernel times of one training gradient, from XLA's own trace: ``python -m benchmarks.kernels``.

`benchmarks.profile` splits a gradient into pieces by timing variants; this reads what XLA:CPU
ran. It traces ``--calls`` calls of the jitted ``jax.grad`` of the loss with ``jax.profiler``
(XLA:CPU's per-thunk trace events need ``--xla_cpu_enable_xprof_traceme=true``, which this module
adds to ``XLA_FLAGS`` before JAX starts), reads the trace back with ``jax.profiler.ProfileData``,
and prints, per kernel (fusion, GEMM, copy, loop), its time per call summed over the threads that
ran it, and how often it ran per call: a kernel inside the time loop runs T times.
Times are CPU time: a kernel split over both cores counts both. Also prints the minor page faults
per call (`sysinfo.minor_page_faults`): XLA:CPU maps each call's temporaries afresh.

Usage:
  python -m benchmarks.kernels --archs=lstm --modes=manual,autodiff --top=25
"""
import os

if "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()

import collections  # noqa: E402  (XLA_FLAGS must be set before JAX starts)
import glob  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

import jaxrnn  # noqa: E402
from benchmarks import common, sysinfo  # noqa: E402

common.define_model_flags()
common.define_bf16_flag()
common.define_json_flag()
flags.DEFINE_list("modes", ["manual", "autodiff"], "Backward modes to trace.")
flags.DEFINE_integer("calls", 5, "Traced calls; times are per call.")
flags.DEFINE_integer("top", 25, "Kernels to print per mode.")
FLAGS = flags.FLAGS

def kernel_names(hlo_text):
    """The instructions of an optimized HLO module that run as kernels: every named instruction
    except the loops and calls, whose trace events span the kernels inside them."""
    names = set(re.findall(r"%([\w.\-]+) = ", hlo_text))
    containers = set(re.findall(r"%([\w.\-]+) = [^\n]* (?:while|conditional|call)\(", hlo_text))
    return names - containers


def kernel_times(fn, calls, kernels):
    """{kernel name: (ms per call, runs per call)} of ``calls`` traced calls of ``fn``, counting
    the trace events named in ``kernels`` (`kernel_names`); the runtime's other events
    (dispatch, executor bookkeeping, waits) are left out."""
    jax.block_until_ready(fn())
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(calls):
                jax.block_until_ready(fn())
        path = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0]
        trace = jax.profiler.ProfileData.from_file(path)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in trace.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if event.name in kernels:
                    totals[event.name][0] += event.duration_ns
                    totals[event.name][1] += 1
    return {name: (ns / 1e6 / calls, count / calls) for name, (ns, count) in totals.items()}


def main(argv):
    del argv
    if getattr(jax.profiler, "ProfileData", None) is None:
        raise app.UsageError(f"jax {jax.__version__} cannot read its traces back "
                             "(no jax.profiler.ProfileData); use a newer jax, e.g. the pinned "
                             "0.10.2 on Python >= 3.11")
    archs = common.checked_archs(FLAGS.archs)
    modes = common.checked_modes(FLAGS.modes)
    cfg = common.config_from_flags()
    inputs, targets = common.make_tokens(cfg)
    results = {}
    for arch in archs:
        params = common.make_params(arch, cfg)
        for mode in modes:
            def loss(p, mode=mode, arch=arch):
                return jaxrnn.loss_fn(p, inputs, targets, arch=arch, backward=mode,
                                      matmul_dtype=cfg.matmul_dtype)[0]
            grad = jax.jit(jax.grad(loss))
            jax.block_until_ready(grad(params))
            faults0 = sysinfo.minor_page_faults()
            jax.block_until_ready(grad(params))
            faults = sysinfo.minor_page_faults() - faults0
            kernels = kernel_names(grad.lower(params).compile().as_text())
            times = kernel_times(lambda: grad(params), FLAGS.calls, kernels)
            total = sum(ms for ms, _ in times.values())
            print(f"\n{arch} {mode}: B={cfg.batch_size} T={cfg.seq_len} H={cfg.hidden_size}; "
                  f"kernel time {total:.1f} ms per call (all threads); {faults:,} minor page "
                  f"faults per call")
            common.print_table(["kernel", "ms per call", "runs per call"], [
                [name, f"{ms:.2f}", f"{runs:g}"]
                for name, (ms, runs) in sorted(times.items(), key=lambda kv: -kv[1][0])
                [:FLAGS.top]])
            results[f"{arch} {mode}"] = {"kernels": times, "minor_faults_per_call": faults}
    if FLAGS.json:
        sysinfo.write_json(FLAGS.json, benchmark="kernels",
                           config={"model": str(cfg), "calls": FLAGS.calls}, results=results)


if __name__ == "__main__":
    app.run(main)
