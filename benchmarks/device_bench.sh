#!/usr/bin/env bash
# The device benchmark of issue 33, one run of under eight minutes on one GPU: training
# examples/s at float32 and bfloat16 for mnist_vp and cifar10_vp (their networks at full size,
# sgm.train's jitted step), FLOPs per step from XLA's cost analysis and the achieved fraction
# of the chip's peak, peak device memory, then likelihood examples/s batched against one at a
# time; and the bfloat16 / float32 quality check on the digits at equal steps.
#
#   bash benchmarks/device_bench.sh [OUT_DIR]      # default benchmarks/results
#   SGM_BENCH_SMALL=1 bash benchmarks/device_bench.sh   # CPU-sized check of the script
#
# Every section has its own time limit and writes its JSON as it finishes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/results}
limit=${SGM_BENCH_LIMIT:-200}
small=${SGM_BENCH_SMALL:-}
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
} | tee "$out/device_bench_env.txt"
tag=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
if [ -n "$small" ]; then
  timeout "$limit" python3 "$here/device_bench.py" --small --out "$out/device_bench_${tag}_small.json"
  timeout "$limit" python3 "$here/precision_quality.py" --steps 20 --n-samples 32 --n-times 2 \
    --out "$out/precision_quality_${tag}_small.json"
else
  timeout "$limit" python3 "$here/device_bench.py" --out "$out/device_bench_${tag}.json"
  timeout "$limit" python3 "$here/precision_quality.py" --steps 2000 \
    --out "$out/precision_quality_${tag}.json"
fi
