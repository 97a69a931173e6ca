"""Gradient-only A/B of sum_outer forms (min/median of interleaved rounds)."""
import sys, statistics, time
exec(open("benchmarks/results/2026-11-26-cpu-5/ab_sumouter.py").read().split("arch = sys.argv[1]")[0])
from benchmarks import common
import jaxrnn
archs = sys.argv[1].split(","); variants = sys.argv[2].split(","); rounds = int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "manual"
cfg = common.ModelConfig()
fns = {}
for arch in archs:
    params = common.make_params(arch, cfg)
    i, t = common.make_tokens(cfg)
    for v in variants:
        set_impl(v)
        def loss(p, arch=arch):
            return jaxrnn.loss_fn(p, i, t, None, arch=arch, backward=mode)[0]
        c = jax.jit(jax.grad(loss)).lower(params).compile()
        fns[(arch, v)] = (c, params)
        jax.block_until_ready(c(params))
times = {k: [] for k in fns}
for r in range(rounds):
    keys = list(fns) if r % 2 == 0 else list(fns)[::-1]
    for k in keys:
        c, p = fns[k]
        t0 = time.perf_counter(); jax.block_until_ready(c(p)); times[k].append(time.perf_counter() - t0)
for k in fns:
    print(f"{k[0]} {k[1]:12s} min {1e3*min(times[k]):7.1f} ms  median {1e3*statistics.median(times[k]):7.1f} ms")
