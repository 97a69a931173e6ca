"""The same training step in PyTorch, Flax and plain JAX, timed beside jaxrnn's, chars/second.

Every peer trains the same character language model on the same fixed random tokens
(``common.make_tokens``): an embedding by one-hot input, ``--num_layers`` recurrent layers of
``--hidden_size`` units, a dense output layer, mean cross-entropy over all B*T positions,
backward, global-norm clipping to 5 and Adam(2e-3); one call per step. The peers:

  jaxrnn_manual    jaxrnn's hand-written BPTT (`common.make_bench_train_step`, as
                   ``benchmarks.throughput`` times it)
  jaxrnn_autodiff  jaxrnn's plain scan under ``jax.grad``
  jax              plain JAX, the obvious cell: ``concat([onehot(x_t), h]) @ W`` per step in a
                   ``lax.scan``, ``jax.value_and_grad``, optax (GRU: separate x and h products)
  flax             Flax linen ``nn.RNN(OptimizedLSTMCell | GRUCell | SimpleCell)`` + ``Dense``
  torch            PyTorch ``nn.LSTM | nn.GRU | nn.RNN(tanh)`` + ``nn.Linear``, time-major,
                   ``clip_grad_norm_``, ``torch.optim.Adam``, as many threads as CPUs

Method (as ``benchmarks.throughput``): each peer runs in a fresh Python process (thread pools and
caches do not leak between peers); the first step is timed alone (compile), then ``--warmup``
untimed steps and ``--repeats`` blocks of ``--steps`` steps; a run's figure is the per-step
median over its blocks. With ``--processes=N`` every peer runs N times, the order of the peers
alternating from run to run, and the table gives the median over runs with the min..max. GFLOP/s
counts the same matmul FLOPs for every peer (`common.train_flops`, layer-0 input as a gather),
so it is chars/s times a constant.

torch and flax are optional (``pip install -e '.[peers]'``, best in a virtual environment of its
own): a peer whose package is missing is skipped with a one-line note. The table's header line
names the CPU and torch's backend (oneDNN/mkldnn: PyTorch's CPU LSTM/GRU run oneDNN's fused
kernels when it is available and enabled; ``--notorch_mkldnn`` switches it off).

Usage:
  python -m benchmarks.peers                                   # lstm, gru, rnn at B=64 T=100 H=256
  python -m benchmarks.peers --archs=lstm --processes=3 --json=peers.json
  python -m benchmarks.peers --archs=lstm --hidden_size=512 --num_layers=2 --peers=torch,jax
"""
import importlib.util
import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

from benchmarks import common, sysinfo

FLAGS = flags.FLAGS
PEERS = ("jaxrnn_manual", "jaxrnn_autodiff", "jax", "flax", "torch")
PACKAGE = {"flax": "flax", "torch": "torch"}      # optional peers and the package each needs
RESULT_TAG = "@@peer-result@@ "
LEARNING_RATE, GRAD_CLIP = 2e-3, 5.0


def define_flags():
    common.define_model_flags()
    common.define_timing_flags()
    common.define_json_flag()
    flags.DEFINE_list("peers", list(PEERS), f"Peers to time, out of {', '.join(PEERS)}.")
    flags.DEFINE_integer("processes", 1, "Fresh processes (runs) per peer and arch; the table "
                         "gives the median over runs (min..max).", lower_bound=1)
    flags.DEFINE_bool("torch_mkldnn", True, "torch.backends.mkldnn.enabled for the torch peer "
                      "(PyTorch's oneDNN CPU kernels, its fused LSTM/GRU among them).")
    flags.DEFINE_string("worker", None, "Internal: run one peer in this process and print its "
                        "result.")


# ---------------------------------------------------------------------------------------------
# The peers' training steps: each returns a zero-argument callable running one step, and facts
# about the implementation for the record
# ---------------------------------------------------------------------------------------------
def _jaxrnn_step(arch, cfg, backward):
    return common.train_step_runner(arch, backward, cfg, FLAGS.seed), {}


def _optax_step(loss_fn, params, inputs, targets):
    """``loss_fn(params, inputs, targets)`` trained by clip + Adam in one jitted, donated step."""
    import jax
    import optax

    optimizer = optax.chain(optax.clip_by_global_norm(GRAD_CLIP), optax.adam(LEARNING_RATE))

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1))
    live = {"params": params, "opt": optimizer.init(params)}

    def run():
        live["params"], live["opt"], loss = jitted(live["params"], live["opt"])
        return loss

    return run


def _plain_jax_step(arch, cfg):
    """The obvious cell as a pure function: ``concat([onehot(x_t), h]) @ W + b`` per step."""
    import jax
    import jax.numpy as jnp

    vocab, hidden, gates = cfg.vocab_size, cfg.hidden_size, {"rnn": 1, "gru": 3, "lstm": 4}[arch]
    keys = iter(jax.random.split(jax.random.key(FLAGS.seed), 2 * cfg.num_layers + 1))
    layers = []
    for index in range(cfg.num_layers):
        width = vocab if index == 0 else hidden
        w_x = jax.random.normal(next(keys), (width, gates * hidden)) / jnp.sqrt(width)
        w_h = jax.random.normal(next(keys), (hidden, gates * hidden)) / jnp.sqrt(hidden)
        bias = jnp.zeros((gates * hidden,))
        if arch == "lstm":
            bias = bias.at[hidden:2 * hidden].set(1.0)                 # forget-gate bias 1
        layers.append({"w_x": w_x, "w_h": w_h, "b": bias} if arch == "gru"
                      else {"w": jnp.concatenate([w_x, w_h]), "b": bias})
    params = {"layers": layers, "w_out": jax.random.normal(next(keys), (hidden, vocab))
              / jnp.sqrt(hidden), "b_out": jnp.zeros((vocab,))}

    def cell(p, carry, x_t):                                          # x_t: (B, I)
        if arch == "gru":
            (h,) = carry
            x_r, x_z, x_n = jnp.split(x_t @ p["w_x"] + p["b"], 3, axis=-1)
            h_r, h_z, h_n = jnp.split(h @ p["w_h"], 3, axis=-1)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            h = (1 - z) * jnp.tanh(x_n + r * h_n) + z * h
            return (h,), h
        pre = jnp.concatenate([x_t, carry[0]], axis=-1) @ p["w"] + p["b"]
        if arch == "rnn":
            h = jnp.tanh(pre)
            return (h,), h
        i, f, g, o = jnp.split(pre, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def loss_fn(params, inputs, targets):                             # (T, B) int32 each
        xs = jax.nn.one_hot(inputs, vocab)
        for p in params["layers"]:
            zero = jnp.zeros((xs.shape[1], hidden))
            carry = (zero, zero) if arch == "lstm" else (zero,)
            _, xs = jax.lax.scan(lambda carry, x_t, p=p: cell(p, carry, x_t), carry, xs)
        log_probs = jax.nn.log_softmax(xs @ params["w_out"] + params["b_out"])
        return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1).mean()

    inputs, targets = (tokens.T for tokens in common.make_tokens(cfg, FLAGS.seed))
    return _optax_step(loss_fn, params, inputs, targets), {}


def _flax_step(arch, cfg):
    import flax
    import flax.linen as nn
    import jax
    import optax

    cell_class = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}[arch]

    class CharLM(nn.Module):
        @nn.compact
        def __call__(self, inputs):                                   # (B, T) int32
            xs = jax.nn.one_hot(inputs, cfg.vocab_size)
            for _ in range(cfg.num_layers):
                xs = nn.RNN(cell_class(cfg.hidden_size))(xs)
            return nn.Dense(cfg.vocab_size)(xs)

    model = CharLM()
    inputs, targets = common.make_tokens(cfg, FLAGS.seed)
    params = model.init(jax.random.key(FLAGS.seed), inputs)

    def loss_fn(params, inputs, targets):
        logits = model.apply(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    return (_optax_step(loss_fn, params, inputs, targets),
            {"flax": flax.__version__, "impl": f"nn.RNN({cell_class.__name__}) + Dense"})


def _torch_step(arch, cfg):
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.backends.mkldnn.enabled = FLAGS.torch_mkldnn
    torch.manual_seed(FLAGS.seed)
    layer_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[arch]
    recurrent = layer_class(cfg.vocab_size, cfg.hidden_size, num_layers=cfg.num_layers)
    output = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size)
    parameters = list(recurrent.parameters()) + list(output.parameters())
    optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)
    inputs, targets = (torch.from_numpy(np.ascontiguousarray(tokens.T)).long()
                       for tokens in common.numpy_tokens(cfg, FLAGS.seed))   # (T, B)

    def run():
        optimizer.zero_grad(set_to_none=True)
        hiddens, _ = recurrent(F.one_hot(inputs, cfg.vocab_size).float())
        logits = output(hiddens)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, GRAD_CLIP)
        optimizer.step()
        return None                                   # torch on the CPU runs synchronously

    return run, {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "mkldnn_available": bool(torch.backends.mkldnn.is_available()),
                 "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
                 "impl": f"nn.{layer_class.__name__} + nn.Linear"}


STEPS = {"jaxrnn_manual": lambda arch, cfg: _jaxrnn_step(arch, cfg, "manual"),
         "jaxrnn_autodiff": lambda arch, cfg: _jaxrnn_step(arch, cfg, "autodiff"),
         "jax": _plain_jax_step, "flax": _flax_step, "torch": _torch_step}


def run_worker(peer, arch):
    """Time one peer on one arch in this process; print its result as one tagged JSON line."""
    cfg = common.config_from_flags()
    run, facts = STEPS[peer](arch, cfg)
    compile_s = common.first_call_seconds(run)
    seconds = common.time_blocks(run, warmup=FLAGS.warmup, steps=FLAGS.steps,
                                 repeats=FLAGS.repeats)
    result = common.summarize(seconds, cfg.chars_per_step)
    result.update(facts, compile_s=compile_s, chars_per_s=result["rate_median"])
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# The parent: one fresh process per (arch, run, peer), then the table
# ---------------------------------------------------------------------------------------------
def _worker_argv(peer, arch):
    names = ("batch_size", "seq_len", "hidden_size", "vocab_size", "num_layers", "seed",
             "warmup", "steps", "repeats")
    return ([sys.executable, "-m", "benchmarks.peers", f"--worker={peer}", f"--archs={arch}",
             f"--{'' if FLAGS.torch_mkldnn else 'no'}torch_mkldnn"]
            + [f"--{name}={getattr(FLAGS, name)}" for name in names])


def _run_peer(peer, arch):
    done = subprocess.run(_worker_argv(peer, arch), capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"peer {peer} ({arch}) failed: {tail}")


def missing_package(peer):
    """The optional package ``peer`` needs and this environment lacks, or None."""
    package = PACKAGE.get(peer)
    return package if package and importlib.util.find_spec(package) is None else None


def main(argv):
    del argv
    if FLAGS.worker:
        run_worker(FLAGS.worker, FLAGS.archs[0])
        return
    archs = common.checked_archs(FLAGS.archs)
    unknown = [peer for peer in FLAGS.peers if peer not in PEERS]
    if unknown:
        raise app.UsageError(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    if FLAGS.dtype != "float32":
        raise app.UsageError("the peers train in float32; drop --dtype")
    skipped = {peer: missing_package(peer) for peer in FLAGS.peers if missing_package(peer)}
    for peer, package in skipped.items():
        print(f"note: peer {peer} skipped: no module {package} here (pip install -e '.[peers]')")
    peers = [peer for peer in FLAGS.peers if peer not in skipped]
    cfg = common.config_from_flags()
    results = {}
    for arch in archs:
        runs = {peer: [] for peer in peers}
        for index in range(FLAGS.processes):
            for peer in (peers if index % 2 == 0 else peers[::-1]):
                runs[peer].append(_run_peer(peer, arch))
                print(f"  {arch} {peer} run {index + 1}: "
                      f"{runs[peer][-1]['chars_per_s']:,.0f} chars/s", flush=True)
        results[arch] = {peer: {"runs": runs[peer],
                                "chars_per_s": statistics.median(r["chars_per_s"]
                                                                 for r in runs[peer])}
                         for peer in peers}
    environment = sysinfo.environment_info()
    torch_facts = next((r for arch in results.values() for peer, entry in arch.items()
                        if peer == "torch" for r in entry["runs"]), None)
    backend = ("" if torch_facts is None else
               f"; torch {torch_facts['torch']}, {torch_facts['torch_threads']} threads, oneDNN "
               f"(mkldnn) {'available' if torch_facts['mkldnn_available'] else 'unavailable'}"
               f" and {'enabled' if torch_facts['mkldnn_enabled'] else 'disabled'}")
    print(f"\nTraining chars/s, B={cfg.batch_size} T={cfg.seq_len} H={cfg.hidden_size} "
          f"V={cfg.vocab_size} L={cfg.num_layers}; median over {FLAGS.processes} run(s) "
          f"(min..max) of the per-step median of {FLAGS.repeats} blocks of {FLAGS.steps} steps; "
          f"CPU {environment.get('cpu', 'unknown')}, {environment['nproc']} cores{backend}:")
    rows = []
    for arch, entries in results.items():
        flops = common.cfg_flops(arch, cfg)["train"]
        reference = entries.get("jaxrnn_manual", {}).get("chars_per_s")
        for peer, entry in entries.items():
            rates = [r["chars_per_s"] for r in entry["runs"]]
            rate = entry["chars_per_s"]
            rows.append([arch, peer, common.fmt_spread(rate, min(rates), max(rates)),
                         f"{cfg.chars_per_step / rate * 1e3:.2f}",
                         f"{flops * rate / cfg.chars_per_step / 1e9:.1f}",
                         f"{reference / rate:.2f}x" if reference else "-"])
    common.print_table(["arch", "peer", "chars/s", "step ms", "GFLOP/s",
                        "jaxrnn manual / peer"], rows)
    if FLAGS.json:
        config = {"archs": archs, "peers": peers, "skipped": skipped,
                  "processes": FLAGS.processes,
                  "warmup": FLAGS.warmup, "steps": FLAGS.steps, "repeats": FLAGS.repeats,
                  "torch_mkldnn": FLAGS.torch_mkldnn, "seed": FLAGS.seed,
                  "model": {name: getattr(cfg, name) for name in (
                      "batch_size", "seq_len", "hidden_size", "vocab_size", "num_layers")},
                  "flops_per_step": {arch: common.cfg_flops(arch, cfg)["train"]
                                     for arch in archs},
                  "train_step": f"clip_by_global_norm({GRAD_CLIP}) + adam({LEARNING_RATE})"}
        sysinfo.write_json(FLAGS.json, benchmark="peers", config=config, results=results,
                           environment=environment)


if __name__ == "__main__":
    define_flags()
    flags.adopt_module_key_flags(common)
    app.run(main)
