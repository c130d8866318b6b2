#!/usr/bin/env bash
# Training throughput of one process against a 2-process torchrun (gloo) on the CPU.
# Trains configs/mnist.yaml for one epoch in each of three ways, ROUNDS times (interleaved,
# so a busy machine hurts them alike), and prints samples_per_s from each run's metrics.json:
#   1proc-threads  one process, torch's default intra-op threads
#   1proc-omp1     one process, OMP_NUM_THREADS=1
#   2proc          torchrun --nproc-per-node 2 (torchrun sets OMP_NUM_THREADS=1 per process)
# Needs the real MNIST under $MLP_DATA_ROOT (MNIST/raw/).  Usage: scripts/ddp_cpu_throughput.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ROUNDS=${1:-2}
OUT=$(mktemp -d)
train() { "$@" --config configs/mnist.yaml --set train.epochs=1 --set train.device=cpu --no-progress >/dev/null 2>&1; }
for round in $(seq "$ROUNDS"); do
  train "$PYTHON" -m mlp train --run-dir "$OUT/1proc-threads-$round"
  OMP_NUM_THREADS=1 train "$PYTHON" -m mlp train --run-dir "$OUT/1proc-omp1-$round"
  train "$PYTHON" -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 --master-port $((29600 + round)) \
    -m mlp train --run-dir "$OUT/2proc-$round"
done
for run in "$OUT"/*; do
  "$PYTHON" -c "import json, sys; e = json.load(open(sys.argv[1] + '/metrics.json'))['epochs'][0]; \
print(f\"{sys.argv[1].rsplit('/', 1)[1]:<18} {e['samples_per_s']:>9,.0f} samples/s  val acc {e['val_accuracy']:.2%}\")" "$run"
done
rm -rf "$OUT"
