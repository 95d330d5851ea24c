#!/usr/bin/env bash
# One GPU, about 10 minutes: the benchmark harness's GPU section, then ONE method at the paper's
# scale end to end (55,000 digits, width 1, 80 epochs, batch 256; mixed precision + XLA come on by
# themselves where a GPU is present). Writes everything under $OUT (default /tmp/gpu_check).
#
#   bash benchmarks/gpu_paper_check.sh                      # EnD at rho 0.997
#   METHOD=vanilla RHO=0.99 bash benchmarks/gpu_paper_check.sh
#
# The full paper grid is one command (hours on one GPU):
#   python -m pipelines.sweep --scale=paper --methods=vanilla,end,rubi,learned_mixin,rebias,biased \
#       --rhos=0.99,0.995,0.997,0.999 --seeds=0,1,2 --attacks=linear,mlp --data_dir=DATA/mnist \
#       --output_dir=sweeps/paper
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
DATA=${DATA:-../shared/data}
METHOD=${METHOD:-end}
RHO=${RHO:-0.997}
BUDGET_S=${BUDGET_S:-480}   # the paper-scale run is stopped after this many seconds (it resumes)
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true
python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"

echo "== harness: GPU section (step table with mixed precision + XLA)"
python -m benchmarks.run --quick --sections=gpu --out="$OUT/bench_gpu.json" | tee "$OUT/bench_gpu.log"

echo "== paper scale, one method end to end: --method=$METHOD --rho=$RHO (stopped after ${BUDGET_S}s)"
set +e
timeout --signal=TERM "$BUDGET_S" /usr/bin/time -v python -m pipelines.run --scale=paper \
    --method="$METHOD" --rho="$RHO" --data_dir="$DATA/mnist" --attacks=linear,mlp --verbose=2 \
    --output_dir="$OUT/paper_${METHOD}_rho${RHO}" > "$OUT/paper_run.log" 2> "$OUT/paper_run.time"
rc=$?
set -e
grep -E "plan|data |training |model |device |projected|took|Epoch 80|target_accuracy" \
    "$OUT/paper_run.log" || true
grep -E "Maximum resident|Elapsed" "$OUT/paper_run.time" || true
echo "paper-scale run exit status: $rc (124 = stopped at the budget; rerun the same command to resume)"
