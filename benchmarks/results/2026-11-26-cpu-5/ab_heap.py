"""A/B: compiler option xla_multiheap_size_constraint_per_heap on the train step."""
import sys, functools
import jax, optax
from benchmarks import common
import jaxrnn

arch = sys.argv[1] if len(sys.argv) > 1 else "lstm"
heap = int(sys.argv[2]) if len(sys.argv) > 2 else 16 << 20
cfg = common.ModelConfig()

def runner(backward, opts, spc=1):
    optimizer = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(2e-3))
    grad_fn = jax.value_and_grad(jaxrnn.loss_fn, has_aux=True)
    def step(params, opt_state, inputs, targets):
        (loss, _), grads = grad_fn(params, inputs, targets, None, arch=arch, backward=backward)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    def steps(p, o, i, t):
        if spc == 1: return step(p, o, i, t)
        return jax.lax.fori_loop(0, spc, lambda _, c: step(*c[:2], i, t), (p, o, jax.numpy.zeros(())))
    fn = jax.jit(steps, donate_argnums=(0, 1), compiler_options=opts)
    params = common.make_params(arch, cfg)
    live = {"p": params, "o": optimizer.init(params)}
    inputs, targets = common.make_tokens(cfg)
    def run():
        live["p"], live["o"], loss = fn(live["p"], live["o"], inputs, targets)
        return loss
    return run

opt = {"xla_multiheap_size_constraint_per_heap": heap}
fns = {"manual": runner("manual", None), "manual_heap": runner("manual", opt),
       "autodiff": runner("autodiff", None), "autodiff_heap": runner("autodiff", opt)}
if "--spc" in sys.argv:
    fns.update(manual10=runner("manual", None, 10), manual10_heap=runner("manual", opt, 10))
for f in fns.values(): f()
t = common.time_interleaved(fns, warmup=2, steps=5, repeats=6)
import statistics
for name in fns:
    per = 10 if "10" in name else 1
    s = statistics.median(t.blocks[name]) / per
    print(f"{arch} {name:16s} {6400/s:9,.0f} chars/s  faults/step {statistics.median(t.minor_faults[name])/per:8.0f}  blocks {[round(6400*per/b) for b in t.blocks[name]]}")
