#!/bin/bash
# Gradient flow through time, fresh and trained cells (BUILD_NOTES.md, "Gradient flow: vanishing and exploding
# gradients"). bash experiments/results/2026-11-26-gradient-flow/run.sh   (about 3 minutes on 2
# CPU cores, plus 8 for `make train` when runs/default/checkpoint does not exist yet)
set -e
cd "$(dirname "$0")/../../.."
D=experiments/results/2026-11-26-gradient-flow; py=.venv/bin/python
[ -e runs/default/checkpoint ] || make train
for arch in lstm gru rnn; do
  $py -m experiments.train --preset=quick --arch=$arch --num_steps=2000 --eval_every=1000 \
      --output_dir=runs/flow-$arch | tail -1
done
$py -m experiments.train --preset=quick --arch=rnn --activation=relu --recurrent_init=identity \
    --learning_rate=2e-3 --num_steps=2000 --eval_every=1000 --output_dir=runs/flow-irnn | tail -1
date -u
$py -m experiments.gradient_flow --models=rnn:tanh,rnn:tanh:scaled_normal,rnn:relu:identity,lstm,gru \
    --plot=$D/init.png --json=$D/init.json
$py -m experiments.gradient_flow --models= \
    --checkpoints=runs/flow-rnn/checkpoint,runs/flow-irnn/checkpoint,runs/flow-lstm/checkpoint,runs/flow-gru/checkpoint,runs/default/checkpoint \
    --plot=$D/trained.png --json=$D/trained.json
$py -m experiments.gradient_flow --models=lstm,gru --backward=autodiff --distances=10,100,199
date -u
