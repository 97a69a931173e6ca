"""PyTorch (cuDNN) peer on a GPU: the training step of ``benchmarks.peers``'s torch peer.

Standalone: it needs PyTorch with CUDA and is never imported by jaxrnn or its benchmarks (the
project does not depend on torch). The model and step are those of ``benchmarks.peers``: ``nn.LSTM`` / ``nn.GRU`` /
``nn.RNN(tanh)`` (time-major, one-hot input) + ``nn.Linear``, mean cross-entropy over all B*T
positions, ``clip_grad_norm_(5.0)``, ``Adam(2e-3)``; on the GPU, timed with
``torch.cuda.synchronize`` at the end of each block (median over blocks, compile-free, first step
excluded). ``--bf16`` runs the forward under ``torch.autocast(dtype=torch.bfloat16)`` (cuDNN's
bfloat16 RNN), the counterpart of jaxrnn's ``--bf16_matmuls``. TF32 settings are printed: cuDNN
RNNs use TF32 when ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default).

Usage (on a machine with a CUDA GPU and PyTorch):
  python3 benchmarks/torch_cuda.py --archs=rnn,lstm,gru --configs=default,big --json=F
"""
import argparse
import json
import statistics
import time

CONFIGS = {"default": dict(batch=64, seq=100, hidden=256, layers=1),
           "big": dict(batch=64, seq=100, hidden=512, layers=2),
           "wide": dict(batch=256, seq=100, hidden=1024, layers=1)}


def measure(arch, cfg, *, vocab, bf16, warmup, steps, repeats, device="cuda", seed=0):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[arch]
    extra = {"nonlinearity": "tanh"} if arch == "rnn" else {}

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_cls(vocab, cfg["hidden"], num_layers=cfg["layers"], **extra)
            self.out = nn.Linear(cfg["hidden"], vocab)

        def forward(self, x):                    # x: (T, B) int64
            h, _ = self.rnn(F.one_hot(x, vocab).float())
            return self.out(h)

    model = CharLM().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, vocab, size=(cfg["batch"], cfg["seq"] + 1))
    x = torch.from_numpy(np.ascontiguousarray(seq[:, :-1].T)).long().to(device)
    y = torch.from_numpy(np.ascontiguousarray(seq[:, 1:].T)).long().to(device)
    params = list(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return loss

    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        blocks.append((time.perf_counter() - t0) / steps)
    median = statistics.median(blocks)
    chars = cfg["batch"] * cfg["seq"]
    return {"arch": arch, **cfg, "bf16": bf16, "step_s_blocks": blocks, "step_s_median": median,
            "chars_per_s": chars / median, "chars_per_s_min": chars / max(blocks),
            "chars_per_s_max": chars / min(blocks), "first_step_s": first,
            "final_loss": float(loss)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="rnn,lstm,gru")
    parser.add_argument("--configs", default="default,big")
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the script out")
    args = parser.parse_args()
    import torch
    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "device": (torch.cuda.get_device_name(0) if args.device == "cuda" else args.device),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    print(json.dumps(info))
    results = []
    for name in args.configs.split(","):
        for arch in args.archs.split(","):
            result = measure(arch, CONFIGS[name], vocab=args.vocab, bf16=args.bf16,
                             warmup=args.warmup, steps=args.steps, repeats=args.repeats,
                             device=args.device)
            result["config"] = name
            results.append(result)
            print(f"| {name} | {arch} | torch{' bf16' if args.bf16 else ''} | "
                  f"{result['chars_per_s']:,.0f} ({result['chars_per_s_min']:,.0f}.."
                  f"{result['chars_per_s_max']:,.0f}) | {result['step_s_median'] * 1e3:.2f} ms |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "argv": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
