#!/usr/bin/env bash
# The GPU measurements of BUILD_NOTES.md ("GPU throughput") in one command, for a machine with a CUDA
# GPU, JAX with CUDA, optax, absl-py, pytest and, for the cuDNN peer, PyTorch:
#   bash benchmarks/gpu_suite.sh OUT_DIR                 # every part
#   PARTS="tests loop" bash benchmarks/gpu_suite.sh OUT_DIR
# Parts: env tests f32 torch bf16 wide loop precision (the default set), and train (the main job
# three ways: manual, autodiff, bf16 matmuls; set JAXRNN_DATA_DIR to a folder holding
# tinyshakespeare.txt). Each writes into OUT_DIR and prints its table; one failing part does not
# stop the others.
set -u
out=${1:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
parts=${PARTS:-env tests f32 torch bf16 wide loop precision}

tp() { $py -m benchmarks.throughput --warmup=3 --steps=10 --repeats=5 "$@" 2>&1 | grep -v "^[IW][0-9]"; }
peer() { $py benchmarks/torch_cuda.py "$@" 2>&1 | grep -v "Warning\|detach\|final_loss"; }

for part in $parts; do
  echo "=== $part"
  case $part in
    env)
      nvidia-smi -L
      $py -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())"
      # What a float32 matmul means on this backend (TF32 shows as ~1e-3, float32 as ~1e-7).
      $py - <<'EOF'
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
want = a.astype(np.float64) @ b.astype(np.float64)
for precision in ("default", "highest"):
    with jax.default_matmul_precision(precision):
        got = np.asarray(jnp.asarray(a) @ jnp.asarray(b), np.float64)
    print(f"jax float32 matmul, precision {precision}: relative error against float64 "
          f"{np.linalg.norm(got - want) / np.linalg.norm(want):.1e}")
EOF
      ;;
    tests)   # the gradient and cell checks on this backend
      timeout 300 $py -m pytest -q -p no:cacheprovider tests/test_gradients.py tests/test_cells.py \
          2>&1 | tail -4 ;;
    f32) tp --configs=default,big --archs=rnn,lstm,gru --json="$out/jax_f32.json" ;;
    torch)
      peer --archs=rnn,lstm,gru --configs=default,big,wide --json="$out/torch_f32.json"
      peer --archs=lstm --configs=default,big,wide --bf16 --json="$out/torch_bf16.json" ;;
    bf16) tp --configs=default,big,wide --archs=lstm --bf16_matmuls --json="$out/jax_bf16.json" ;;
    wide) tp --configs=wide --archs=lstm,gru --json="$out/jax_wide.json" ;;
    loop) tp --configs=default --archs=rnn,lstm,gru --steps_per_call=10 --json="$out/jax_loop.json" ;;
    precision)   # true float32 matmuls instead of JAX's TF32 default
      JAX_DEFAULT_MATMUL_PRECISION=highest tp --configs=default,wide --archs=lstm \
          --json="$out/jax_highest.json" ;;
    train)   # the main job (make train's defaults), three ways; needs JAXRNN_DATA_DIR
      for variant in manual autodiff bf16; do
        case $variant in manual) extra="" ;; autodiff) extra="--backward=autodiff" ;;
                         bf16) extra="--bf16_matmuls" ;; esac
        echo "--- python -m experiments.train --output_dir=/tmp/run_$variant $extra"
        start=$(date +%s.%N)
        $py -m experiments.train --output_dir="/tmp/run_$variant" $extra 2>&1 \
            | grep -v "^[IW][0-9]" > "$out/train_$variant.txt"
        end=$(date +%s.%N)
        tail -3 "$out/train_$variant.txt"
        echo "wall $($py -c "print(round($end - $start, 1))") s"
      done
      $py -m experiments.sample --checkpoint=/tmp/run_manual/checkpoint --prime="ROMEO:" \
          --temperature=0.8 --top_p=0.9 --length=300 --seed=0 2>&1 | grep -v "^[IW][0-9]" ;;
    *) echo "unknown part $part" ;;
  esac
done
