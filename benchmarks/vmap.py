"""Does vmap pay for small models? K runs as one ``jit(vmap)`` program against the same K runs
one after another:
``python -m benchmarks.vmap --archs=lstm --hidden_sizes=50,100,200 --num_runs=8``.

Both sides run `jaxrnn.train.make_multi_seed_chunk` / `make_train_chunk` (the programs the
studies and `experiments.train` run: manual BPTT, Adam, global-norm clip) for ``--chunk`` steps
per call, timed interleaved block by block (`benchmarks.common.time_interleaved`). The bound is
the recurrent GEMM of one time step: K separate (B, H) x (H, G) products against one batched
(K, B, H) x (K, H, G) ``einsum`` (what vmap makes of it), each timed in a chain of T dependent
calls. Each side's achieved GEMM rate is its chars/s times the GEMM FLOPs one character costs
(`common.train_flops`' ``per_char``: the recurrent and output-layer GEMMs of the forward pass
and their two backward GEMMs each; the input layer is a gather), so the table says how close
each program runs to the batched-GEMM bound and how much a perfect vmap could gain at most.
Prints a table and, with --json, writes every block.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common, sysinfo
from jaxrnn import config as config_lib, data, train
from jaxrnn.cells import get_cell

flags.DEFINE_list("archs", ["lstm"], "cells to measure")
flags.DEFINE_list("hidden_sizes", ["50", "100", "200"], "H values")
flags.DEFINE_integer("num_runs", 8, "K: runs vmapped together (and run one by one)")
flags.DEFINE_integer("batch_size", 32, "B per run")
flags.DEFINE_integer("seq_len", 50, "T per run")
flags.DEFINE_integer("chunk", 10, "train steps per compiled call")
flags.DEFINE_integer("repeats", 3, "timed blocks per candidate (median reported)")
flags.DEFINE_string("json", "", "write the results to this JSON file")
FLAGS = flags.FLAGS

def _streams(batch_size, seq_len, vocab_size=65, windows=8, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab_size, batch_size * (windows * seq_len + 1))
    return jnp.asarray(ids.reshape(batch_size, -1), jnp.int32)


def measure_training(arch, hidden, runs, batch_size, seq_len, chunk, repeats):
    """Per-call seconds of the vmapped program (K runs) and of K single-run calls."""
    config = config_lib.make_config(arch=arch, hidden_size=hidden, batch_size=batch_size,
                                    seq_len=seq_len, dropout=0.0, num_steps=10 ** 6)
    streams = _streams(batch_size, seq_len)
    windows = data.num_windows(streams, seq_len)
    multi = train.make_multi_seed_chunk(config, windows, chunk)
    single = train.make_train_chunk(config, windows, chunk)
    hparams = train.run_hparams(config, [config.learning_rate] * runs, [config.clip_norm] * runs)
    state = {"multi": train.init_train_states(config, 65, list(range(runs))),
             "single": [train.init_train_state(config, 65, jax.random.key(seed))
                        for seed in range(runs)]}

    def run_multi():
        state["multi"], metrics = multi(state["multi"], streams, hparams)
        return metrics["loss"]

    def run_single():
        out = None
        for index in range(runs):
            state["single"][index], out = single(state["single"][index], streams)
        return out["loss"]

    compile_s = {"vmapped": common.first_call_seconds(run_multi),
                 "one by one": common.first_call_seconds(run_single)}
    timing = common.time_interleaved({"vmapped": run_multi, "one by one": run_single},
                                     warmup=1, steps=1, repeats=repeats)
    chars = runs * chunk * batch_size * seq_len
    return {name: {**common.summarize(blocks, chars), "compile_s": compile_s[name]}
            for name, blocks in timing.blocks.items()}, timing.steal_pct


def measure_gemm(hidden, gates, runs, batch_size, seq_len, repeats):
    """GFLOP/s of the per-step recurrent GEMM: K separate products vs one batched einsum."""
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((runs, batch_size, hidden)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((runs, hidden, gates * hidden)) / math.sqrt(hidden),
                    jnp.float32)

    def chain(step):
        def body(_, acc):
            return acc + 1e-7 * step(acc, w)[..., :hidden]
        return jax.jit(lambda acc: jax.lax.fori_loop(0, seq_len, body, acc))

    batched = chain(lambda acc, w: jnp.einsum("kbh,khg->kbg", acc, w))
    separate = chain(lambda acc, w: jnp.stack([acc[k] @ w[k] for k in range(runs)]))
    fns = {"batched": lambda: batched(h), "separate": lambda: separate(h)}
    for fn in fns.values():
        jax.block_until_ready(fn())
    timing = common.time_interleaved(fns, warmup=2, steps=20, repeats=repeats)
    flops = 2.0 * runs * batch_size * hidden * gates * hidden * seq_len / 1e9
    return {name: common.summarize(blocks, flops) for name, blocks in timing.blocks.items()}


def main(argv):
    rows, records = [], []
    for arch in FLAGS.archs:
        for hidden in [int(value) for value in FLAGS.hidden_sizes]:
            training, steal = measure_training(arch, hidden, FLAGS.num_runs, FLAGS.batch_size,
                                               FLAGS.seq_len, FLAGS.chunk, FLAGS.repeats)
            gemm = measure_gemm(hidden, get_cell(arch).num_gates, FLAGS.num_runs,
                                FLAGS.batch_size, FLAGS.seq_len, FLAGS.repeats)
            vm, seq = training["vmapped"], training["one by one"]
            flops = common.train_flops(arch, FLAGS.batch_size, FLAGS.seq_len, hidden, 65,
                                       1)["per_char"]
            achieved = {name: side["rate_median"] * flops / 1e9
                        for name, side in training.items()}
            bound = gemm["batched"]["rate_median"] / achieved["one by one"]
            rows.append([arch, hidden, FLAGS.num_runs,
                         common.fmt_spread(vm["rate_median"], vm["rate_min"], vm["rate_max"]),
                         common.fmt_spread(seq["rate_median"], seq["rate_min"], seq["rate_max"]),
                         f"{vm['rate_median'] / seq['rate_median']:.2f}x",
                         f"{gemm['batched']['rate_median']:.0f}",
                         f"{gemm['separate']['rate_median']:.0f}",
                         f"{achieved['vmapped']:.0f} / {achieved['one by one']:.0f}",
                         f"{bound:.2f}x", f"{steal:.1f}"])
            records.append({"arch": arch, "hidden_size": hidden, "num_runs": FLAGS.num_runs,
                            "batch_size": FLAGS.batch_size, "seq_len": FLAGS.seq_len,
                            "training": training, "gemm": gemm,
                            "gemm_flops_per_char": flops, "achieved_gemm_gflops": achieved,
                            "vmap_gain_bound": bound, "steal_pct": steal})
    common.print_table(["arch", "H", "K", "vmapped chars/s (summed)", "one by one chars/s",
                        "ratio", "batched GEMM GFLOP/s", "separate GEMMs GFLOP/s",
                        "achieved GEMM GFLOP/s vmapped / one by one",
                        "bound on the ratio (batched GEMM / one by one achieved)", "steal %"],
                       rows)
    if FLAGS.json:
        sysinfo.write_json(FLAGS.json, benchmark="vmap",
                           config={name: FLAGS[name].value for name in (
                               "archs", "hidden_sizes", "num_runs", "batch_size", "seq_len",
                               "chunk", "repeats")}, results=records)


if __name__ == "__main__":
    app.run(main)
