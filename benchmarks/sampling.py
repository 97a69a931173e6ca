"""Sampling throughput: characters/second of `jaxrnn.sample.make_sampler` per arch and batch.

For each arch, one jitted sampler per batch size S (``--num_samples``, default 1 and 64) draws
``--length`` characters per stream after a ``--prime_len``-character prime, from random
(untrained) parameters. chars/s = S * length / call time; the prime is not counted. The first
call of each sampler is reported as compile s; then the batch sizes are timed block by block in
alternating order (`common.time_interleaved`), median (min..max) over ``--repeats`` blocks of
``--steps`` calls.

Usage:
  python -m benchmarks.sampling                                   # lstm/gru/rnn, H=256, S=1,64
  python -m benchmarks.sampling --archs=lstm --num_samples=1,8 --length=100 --json=sample.json
"""
import dataclasses

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common, sysinfo
from jaxrnn.sample import make_sampler

FLAGS = flags.FLAGS


def define_flags():
    common.define_model_flags(training=False)
    common.define_timing_flags(warmup=2, steps=3, repeats=5)
    common.define_json_flag()
    flags.DEFINE_list("num_samples", ["1", "64"], "Batch sizes S: streams sampled in parallel.")
    flags.DEFINE_integer("length", 500, "N: characters sampled per stream in one call.")
    flags.DEFINE_integer("prime_len", 1, "P: characters of the (random) prime fed first.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
    flags.DEFINE_integer("top_k", 0, "Keep only the k most likely characters; 0 disables.")
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass in (0, 1]; 1 disables.")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    hidden_size: int
    vocab_size: int
    num_layers: int
    dtype: str
    length: int
    prime_len: int
    temperature: float
    top_k: int
    top_p: float
    num_samples: tuple

    def __post_init__(self):
        if self.prime_len < 1 or self.length < 1 or min(self.num_samples) < 1:
            raise ValueError("prime_len, length and every num_samples must be >= 1")


def config_from_flags():
    fields = [f.name for f in dataclasses.fields(SamplingConfig) if f.name != "num_samples"]
    return SamplingConfig(**{name: getattr(FLAGS, name) for name in fields},
                          num_samples=tuple(int(s) for s in FLAGS.num_samples))


def sampler_runner(arch, num_samples, cfg, params, seed):
    """Zero-argument callable: one call of the jitted sampler (returns the (S, N) ids)."""
    sample_ids = make_sampler(arch=arch, length=cfg.length, num_samples=num_samples,
                              temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    prime = jax.random.randint(jax.random.key(seed + 1), (cfg.prime_len,), 0, cfg.vocab_size,
                               jnp.int32)
    key = jax.random.key(seed + 2)
    return lambda: sample_ids(params, prime, key)


def run_arch(arch, cfg, *, warmup, steps, repeats, seed):
    """Compile and time every batch size of one arch, interleaved. Returns {"S=..": result}."""
    model = common.ModelConfig(hidden_size=cfg.hidden_size, vocab_size=cfg.vocab_size,
                               num_layers=cfg.num_layers, dtype=cfg.dtype)
    params = common.make_params(arch, model, seed)
    runners = {f"S={s}": sampler_runner(arch, s, cfg, params, seed) for s in cfg.num_samples}
    compile_s = {name: common.first_call_seconds(run) for name, run in runners.items()}
    blocks, steal, _ = common.time_interleaved(runners, warmup=warmup, steps=steps,
                                               repeats=repeats)
    out = {}
    for name, s in zip(runners, cfg.num_samples):
        res = common.summarize(blocks[name], s * cfg.length)
        res.update(num_samples=s, compile_s=compile_s[name], steal_pct=steal)
        out[name] = res
    return out


def main(argv):
    del argv
    cfg = config_from_flags()
    archs = common.checked_archs(FLAGS.archs)
    timing = dict(warmup=FLAGS.warmup, steps=FLAGS.steps, repeats=FLAGS.repeats)
    print(f"config: {cfg}", flush=True)
    results, rows = {}, []
    for arch in archs:
        results[arch] = run_arch(arch, cfg, seed=FLAGS.seed, **timing)
        for name, r in results[arch].items():
            rows.append([arch, r["num_samples"],
                         common.fmt_spread(r["rate_median"], r["rate_min"], r["rate_max"]),
                         f"{r['seconds_median'] * 1e3:.1f}", f"{r['compile_s']:.2f}",
                         f"{r['steal_pct']:.1f}"])
            print(f"  {arch} {name}: {r['rate_median']:,.0f} chars/s", flush=True)
    print(f"\nSampling throughput, {cfg.length} chars per stream; chars/s median (min..max over "
          f"{FLAGS.repeats} blocks of {FLAGS.steps} calls):")
    common.print_table(["arch", "batch S", "chars/s", "ms per call", "compile s", "steal %"], rows)
    if FLAGS.json:
        config = {**dataclasses.asdict(cfg), "archs": archs, **timing, "seed": FLAGS.seed}
        sysinfo.write_json(FLAGS.json, benchmark="sampling", config=config, results=results)


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    app.run(main)
