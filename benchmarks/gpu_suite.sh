#!/usr/bin/env bash
# The GPU measurements of BUILD_NOTES.md ("On a GPU") in one command, for a machine with a CUDA
# GPU, JAX with CUDA, optax, absl-py and, for the cuDNN peer, PyTorch:
#   bash benchmarks/gpu_suite.sh OUT_DIR
# Writes OUT_DIR/{jax_f32,torch_f32,jax_bf16,torch_bf16,jax_wide}.json and prints the tables.
# Each part runs on its own, so one failing part does not stop the others.
set -u
out=${1:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

nvidia-smi -L
$py -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())"
# What a float32 matmul means on this backend (TF32 shows as ~1e-3, full float32 as ~1e-7).
$py - <<'EOF'
import jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
got = np.asarray(jnp.asarray(a) @ jnp.asarray(b), np.float64)
want = a.astype(np.float64) @ b.astype(np.float64)
print(f"jax float32 matmul, relative error against float64: "
      f"{np.linalg.norm(got - want) / np.linalg.norm(want):.1e}")
EOF
# The gradient checks on this backend (float64 and the bfloat16-matmul option).
timeout 240 $py -m pytest -q -x -p no:cacheprovider tests/test_gradients.py \
    -k "lstm or bfloat16 or bf16" 2>&1 | tail -3

tp() { $py -m benchmarks.throughput --warmup=3 --steps=10 --repeats=5 "$@" 2>&1 | grep -v "^[IW][0-9]"; }
tp --configs=default,big --archs=rnn,lstm,gru --json="$out/jax_f32.json"
$py benchmarks/peers/torch_cuda.py --archs=rnn,lstm,gru --configs=default,big,wide \
    --json="$out/torch_f32.json"
tp --configs=default,big,wide --archs=lstm --bf16_matmuls --json="$out/jax_bf16.json"
$py benchmarks/peers/torch_cuda.py --archs=lstm --configs=default,big,wide --bf16 \
    --json="$out/torch_bf16.json"
tp --configs=wide --archs=lstm,gru --json="$out/jax_wide.json"
