"""A/B: sum_outer as a 3-D tensordot (HEAD) vs a 2-D dot_general contracting rows; full train step."""
import sys, statistics
import jax, jax.numpy as jnp, optax
from benchmarks import common
import jaxrnn, jaxrnn.cells, jaxrnn.model
mods = [sys.modules["jaxrnn.cells"], sys.modules["jaxrnn.model"], sys.modules["jaxrnn.unroll"]]
orig = mods[0].sum_outer
def rows_form(a, b, matmul_dtype=None):
    a2 = a.reshape(-1, a.shape[-1]); b2 = b.reshape(-1, b.shape[-1])
    dims = (((0,), (0,)), ((), ()))
    if matmul_dtype is None:
        return jax.lax.dot_general(a2, b2, dims)
    return jax.lax.dot_general(a2.astype(matmul_dtype), b2.astype(matmul_dtype), dims,
                               preferred_element_type=a.dtype)
IMPL = {"head": orig, "rows": rows_form, "rows+onehot": rows_form}
unroll_mod = mods[2]
orig_lb = unroll_mod.layer_backward
ONEHOT = {"on": False}
def patched_lb(cell, params, residuals, d_hiddens, d_carry_T):
    if not ONEHOT["on"] or not unroll_mod._is_ids(residuals.inputs):
        return orig_lb(cell, params, residuals, d_hiddens, d_carry_T)
    d_xproj, d_carry0, grads = cell.backward(
        params, residuals.carry0, residuals.hiddens, residuals.cell, d_hiddens, d_carry_T)
    weight = params[cell.input_weight]
    grads = dict(grads)
    grads[cell.input_bias] = d_xproj.sum(axis=(0, 1))
    ids = residuals.inputs.reshape(-1)
    flat = d_xproj.reshape(ids.shape[0], -1)
    onehot_t = (jnp.arange(weight.shape[0])[:, None] == ids[None, :]).astype(flat.dtype)
    grads[cell.input_weight] = onehot_t @ flat
    return grads, None, d_carry0
unroll_mod.layer_backward = patched_lb
def set_impl(name):
    for m in mods: m.sum_outer = IMPL[name]
    ONEHOT['on'] = name.endswith('onehot')

arch = sys.argv[1]; variants = sys.argv[2].split(","); spc = int(sys.argv[3]); repeats = int(sys.argv[4])
modes = sys.argv[5].split(",") if len(sys.argv) > 5 else ["manual"]
cfg = common.ModelConfig(hidden_size=int(sys.argv[6]) if len(sys.argv) > 6 else 256,
                         num_layers=int(sys.argv[7]) if len(sys.argv) > 7 else 1)
def runner(variant, mode):
    optimizer = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(2e-3))
    grad_fn = jax.value_and_grad(jaxrnn.loss_fn, has_aux=True)
    def step(params, opt_state, inputs, targets):
        (loss, _), grads = grad_fn(params, inputs, targets, None, arch=arch, backward=mode)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    def steps(p, o, i, t):
        if spc == 1: return step(p, o, i, t)
        return jax.lax.fori_loop(0, spc, lambda _, c: step(*c[:2], i, t), (p, o, jnp.zeros(())))
    fn = jax.jit(steps, donate_argnums=(0, 1))
    params = common.make_params(arch, cfg)
    live = {"p": params, "o": optimizer.init(params)}
    inputs, targets = common.make_tokens(cfg)
    set_impl(variant)
    comp = fn.lower(live["p"], live["o"], inputs, targets).compile()
    temp = comp.memory_analysis().temp_size_in_bytes / 2**20
    def run():
        live["p"], live["o"], loss = comp(live["p"], live["o"], inputs, targets)
        return loss
    return run, temp, float(run())
fns, info = {}, {}
for mode in modes:
    for v in variants:
        key = f"{mode}/{v}"
        fns[key], *info[key] = runner(v, mode)
t = common.time_interleaved(fns, warmup=2, steps=5 if spc == 1 else 1, repeats=repeats)
for key in fns:
    s = statistics.median(t.blocks[key]) / spc
    print(f"{arch} H={cfg.hidden_size} L={cfg.num_layers} spc={spc} {key:16s} {cfg.chars_per_step/s:9,.0f} chars/s  temp {info[key][0]:.1f} MiB  loss0 {info[key][1]:.6f}  faults/step {statistics.median(t.minor_faults[key])/spc:7.0f}  best {cfg.chars_per_step*spc/min(t.blocks[key]):,.0f}")
