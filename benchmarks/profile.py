"""Where the time of one manual training gradient goes: ``python -m benchmarks.profile``.

Times, interleaved and in one process, the pieces of the hand-written path for one layer at the
benchmark shape, plus GEMM-only versions of the two scans, so that the step splits into
recurrent GEMMs, element-wise work inside the scans, scan overhead, the weight-gradient GEMMs,
the output layer and the rest. Each figure is the minimum over ``--rounds`` interleaved rounds
(the minimum is the least disturbed by the shared machine).
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
from absl import app, flags

import jaxrnn
from jaxrnn import cells, model
from benchmarks import common, sysinfo

common.define_model_flags()
common.define_json_flag()
flags.DEFINE_integer("rounds", 15, "Interleaved timing rounds; the minimum is reported.")
FLAGS = flags.FLAGS


def _pieces(arch, config):
    B, T, H, V = config.batch_size, config.seq_len, config.hidden_size, config.vocab_size
    cell = cells.get_cell(arch)
    G = cell.num_gates * H
    params = jaxrnn.init_params(jax.random.key(0), arch, V, H)
    layer = params["layers"][0]
    ids = jax.random.randint(jax.random.key(1), (B, T + 1), 0, V)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    state = jaxrnn.init_state(arch, B, H)
    xproj = jax.random.normal(jax.random.key(2), (T, B, G))
    d_hiddens = jax.random.normal(jax.random.key(3), (T, B, H))
    carry_T, hiddens, residuals = cell.forward(layer, state[0], xproj)
    d_carry = jax.tree.map(jnp.zeros_like, carry_T)
    W_h = layer["W_hh" if arch == "rnn" else "W_h"]

    def loss(backward):
        return lambda p: jaxrnn.loss_fn(p, inputs, targets, state, arch=arch,
                                        backward=backward)[0]

    def gemm_scan(weight, xs):
        """T dependent (B, in) x (in, out) GEMMs, out folded back to the carry's width."""
        width_in, width_out = weight.shape

        def step(h, x_t):
            out = h @ weight
            out = out[:, :width_in] if width_out >= width_in else jnp.tile(
                out, (1, width_in // width_out))
            return out * 1e-3 + x_t[:, :width_in], None
        return jax.lax.scan(step, jnp.zeros((B, width_in)), xs)[0]

    def trivial_scan(xs):
        return jax.lax.scan(lambda h, x_t: (h + x_t[:, :H], None), jnp.zeros((B, H)), xs)[0]

    def head(p, outputs):
        log_probs = model.output_log_probs(p, outputs)
        return model.head_backward(p, outputs, log_probs, targets.T, 1.0)

    return {
        "grad manual": (jax.grad(loss("manual")), (params,)),
        "grad autodiff": (jax.grad(loss("autodiff")), (params,)),
        # Both forward pieces make their (T, B, G) input inside the jitted function, as the
        # gradient does: `cell.forward` overwrites it in place, which an argument would forbid.
        "forward scan": (lambda l, x: cell.forward(l, state[0], x * 1.0), (layer, xproj)),
        "forward GEMM-only scan": (lambda w, x: gemm_scan(w, x * 1.0), (W_h, xproj)),
        "backward (sweep + dW_h)": (lambda l, hs, r, dh: cell.backward(
            l, state[0], hs, r, dh, d_carry), (layer, hiddens, residuals, d_hiddens)),
        "backward GEMM-only sweep": (gemm_scan, (W_h.T, xproj)),
        "dW_h GEMM": (lambda hs, d: jnp.tensordot(hs, d, ((0, 1), (0, 1))), (hiddens, xproj)),
        "dW_x scatter-add": (lambda d, i: jnp.zeros((V, G)).at[i].add(d), (xproj, inputs.T)),
        "output layer fwd+bwd": (head, (params, hiddens)),
        "trivial scan (T steps)": (trivial_scan, (xproj,)),
        # A piece that overwrites its argument in place (the forward of the LSTM and GRU writes
        # its gates over xproj, on the CPU every backward writes over its gates or d_hiddens)
        # first copies it: a jitted function may not overwrite an argument it was not donated.
        # Inside the gradient that buffer is the program's own, so the breakdown subtracts one
        # such copy, timed here, per overwriting piece. Timed alone its output pages are mapped
        # already; inside a piece the copy may also page-fault, so this correction is a lower
        # bound and the element-wise figure an upper one.
        "(T, B, G) argument copy": (lambda x: x * 2.0, (xproj,)),
    }


def _profile(arch, config, rounds):
    pieces = {name: (jax.jit(fn), args) for name, (fn, args) in _pieces(arch, config).items()}
    for fn, args in pieces.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in pieces}
    for _ in range(rounds):
        for name, (fn, args) in pieces.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    best = {name: 1e3 * min(values) for name, values in times.items()}
    # Argument copies inside the pieces, not in the gradient (see `_pieces`): the forward copies
    # xproj (lstm, gru); on the CPU the backward copies its gates (lstm, gru) or d_hiddens (rnn).
    copy = best["(T, B, G) argument copy"]
    forward_copies = 0 if arch == "rnn" else 1
    backward_copies = 1 if jax.default_backend() == "cpu" else 0
    sweep = (best["backward (sweep + dW_h)"] - best["dW_h GEMM"]
             - backward_copies * copy)
    breakdown = {
        "recurrent GEMMs (fwd + bwd)": best["forward GEMM-only scan"]
        + best["backward GEMM-only sweep"] - 2 * best["trivial scan (T steps)"],
        "element-wise in the scans": best["forward scan"] - forward_copies * copy
        - best["forward GEMM-only scan"] + sweep - best["backward GEMM-only sweep"],
        "scan overhead (2 x T steps)": 2 * best["trivial scan (T steps)"],
        "weight-gradient GEMM dW_h": best["dW_h GEMM"],
        "dW_x scatter-add": best["dW_x scatter-add"],
        "output layer fwd+bwd": best["output layer fwd+bwd"],
    }
    breakdown["rest (gather, transposes, copies)"] = best["grad manual"] - sum(breakdown.values())
    return best, breakdown


def main(argv):
    config = common.config_from_flags()
    records = {}
    for arch in FLAGS.archs:
        best, breakdown = _profile(arch, config, FLAGS.rounds)
        records[arch] = {"pieces_ms": best, "breakdown_ms": breakdown}
        print(f"\n{arch}: B={config.batch_size} T={config.seq_len} H={config.hidden_size} "
              f"V={config.vocab_size}, min over {FLAGS.rounds} interleaved rounds")
        for name, value in best.items():
            print(f"  {name:<34}{value:8.2f} ms")
        print(f"  breakdown of 'grad manual' ({best['grad manual']:.1f} ms):")
        for name, value in breakdown.items():
            print(f"    {name:<34}{value:8.2f} ms  {100 * value / best['grad manual']:5.1f}%")
    if FLAGS.json:
        sysinfo.write_json(FLAGS.json, benchmark="profile", config=dataclasses.asdict(config),
                           results=records)


if __name__ == "__main__":
    app.run(main)
