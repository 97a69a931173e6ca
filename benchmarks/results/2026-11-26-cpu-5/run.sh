#!/bin/bash
# Fifth session (2026-11-26), CPU VM: page faults and the manual/autodiff ratio.
# bash benchmarks/results/2026-11-26-cpu-5/run.sh OUT_DIR   (about 40 min; nothing else running)
cd "$(dirname "$0")/../../.."; export JAXRNN_DATA_DIR=${JAXRNN_DATA_DIR:-/work/shared/data}
py=.venv/bin/python; D=benchmarks/results/2026-11-26-cpu-5; O=${1:-/tmp/cpu5}; mkdir -p $O
PEER="/tmp/peers-venv/bin/python ../shared/bench/peers.py --batch=64 --seq=100 --hidden=256 --peers=torch --runs=1 --repeats=4"
HUGE=glibc.malloc.hugetlb=1
cat /sys/kernel/mm/transparent_hugepage/enabled; ldd --version | head -1
for round in 1 2; do
  for env in "" $HUGE; do
    date -u; echo "== round $round, GLIBC_TUNABLES=$env, one step per call"
    GLIBC_TUNABLES=$env $py -m benchmarks.throughput --configs=default --repeats=6 --json=$O/tp_call_${round}_${env:+huge}.json 2>&1 | grep "^| default"
    for a in lstm gru rnn; do GLIBC_TUNABLES=$env $PEER --arch=$a --json=$O/torch_${a}_${round}_${env:+huge}.json > /dev/null 2>&1; done
  done
done
for env in "" $HUGE; do
  date -u; echo "== GLIBC_TUNABLES=$env, ten steps per call"
  GLIBC_TUNABLES=$env $py -m benchmarks.throughput --configs=default --steps_per_call=10 --steps=2 --repeats=6 --json=$O/tp_loop_${env:+huge}.json 2>&1 | grep "^| default"
done
date -u; echo "== XLA multiheap compile option (per-heap bytes), one process per size"
for heap in 16777216 31457280; do PYTHONPATH=$PWD $py $D/ab_heap.py lstm $heap 2>&1 | grep "^lstm"; done
date -u; echo "== sum_outer as 2-D dot_general, one-hot dW_x GEMM: full train step, one step per call"
for a in lstm gru rnn; do PYTHONPATH=$PWD $py $D/ab_sumouter.py $a head,rows,rows+onehot 1 8 manual 2>&1 | grep "^$a"; done
date -u; echo "== the same, gradient only, 20 interleaved rounds"
PYTHONPATH=$PWD $py $D/ab_grad.py lstm,gru,rnn head,rows,rows+onehot 20 2>&1 | grep "^[lgr]"
date -u; echo DONE
