#!/bin/bash
# Fault-free allocator round: jaxrnn (1 and 10 steps per call) and PyTorch under the same GLIBC_TUNABLES.
cd /work/main; export JAXRNN_DATA_DIR=/work/shared/data
TUN=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295
py=.venv/bin/python; O=${1:-/tmp/cpu3}; mkdir -p $O
date -u
GLIBC_TUNABLES=$TUN $py -m benchmarks.throughput --configs=default --archs=lstm,gru --repeats=6 --json=$O/tun_call.json 2>&1 | grep "^|"
GLIBC_TUNABLES=$TUN $py -m benchmarks.throughput --configs=default --archs=lstm,gru --steps_per_call=10 --steps=2 --repeats=6 --json=$O/tun_loop.json 2>&1 | grep "^|"
for a in lstm gru; do GLIBC_TUNABLES=$TUN /tmp/peers-venv/bin/python ../shared/bench/peers.py --arch=$a --batch=64 --seq=100 --hidden=256 --peers=torch --runs=1 --repeats=4 --json=$O/tun_torch_$a.json > /dev/null 2>&1; done
for a in lstm gru; do /tmp/peers-venv/bin/python ../shared/bench/peers.py --arch=$a --batch=64 --seq=100 --hidden=256 --peers=torch --runs=1 --repeats=4 --json=$O/torch_$a.json > /dev/null 2>&1; done
date -u
echo DONE
