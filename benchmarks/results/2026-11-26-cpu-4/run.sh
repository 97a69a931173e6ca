#!/bin/bash
cd /work/main; export JAXRNN_DATA_DIR=/work/shared/data
py=.venv/bin/python; O=${1:-/tmp/cpu}; mkdir -p $O
date -u
$py -m benchmarks.throughput --configs=default --measure_roofline --repeats=6 --json=$O/tp_call.json 2>&1 | grep "^|"
date -u
$py -m benchmarks.throughput --configs=default --steps_per_call=10 --steps=2 --repeats=6 --json=$O/tp_loop.json 2>&1 | grep "^|"
date -u
for a in lstm gru rnn; do /tmp/peers-venv/bin/python ../shared/bench/peers.py --arch=$a --batch=64 --seq=100 --hidden=256 --peers=torch,flax,jax --runs=1 --repeats=4 --json=$O/peers_$a.json > /dev/null 2>&1; done
date -u
$py -m benchmarks.throughput --configs=default --archs=lstm,gru --repeats=6 --json=$O/tp_call2.json 2>&1 | grep "^|"
for a in lstm gru; do /tmp/peers-venv/bin/python ../shared/bench/peers.py --arch=$a --batch=64 --seq=100 --hidden=256 --peers=torch --runs=1 --repeats=4 --json=$O/peers2_$a.json > /dev/null 2>&1; done
date -u
$py -m benchmarks.throughput --configs=big --archs=lstm --measure_roofline --repeats=4 --json=$O/tp_big.json 2>&1 | grep "^|"
/tmp/peers-venv/bin/python ../shared/bench/peers.py --arch=lstm --batch=64 --seq=100 --hidden=512 --layers=2 --peers=torch,jax --runs=1 --repeats=3 --json=$O/peers_big.json > /dev/null 2>&1
date -u
$py -m benchmarks.memory --json=$O/memory.json 2>&1 | grep "^|"
date -u
echo DONE
