#!/usr/bin/env bash
# The accelerator part of the benchmarks (issues 15 and 16), as one prepared run of under ten
# minutes on a single GPU: MNIST training quality at mnist_vp's budget for four configurations
# (and at twice the budget for the likelihood-trained one), the likelihood cost of a trained
# MNIST model, and UNet/DiT steps per second alone on the device.
#
#   bash benchmarks/accelerator.sh MNIST_DIR RUN_DIR OUT_DIR
#
# The training-quality runs share the GPU as parallel processes (their compilation is CPU work
# and dominates at this size), so their `train_seconds` are not throughput numbers: the
# steps-per-second section runs alone afterwards. Every section has its own time limit and
# writes its JSON as it finishes; the logs are joined into OUT_DIR/log.txt at the end.
set -u
data=$1 run=$2 out=$3
# smaller settings check the script; a subset of sections fits a shorter lease
steps=${SGM_ACCEL_STEPS:-2000} images=${SGM_ACCEL_IMAGES:-32} limit=${SGM_ACCEL_LIMIT:-360}
configs=${SGM_ACCEL_CONFIGS-default likelihood vdm dit_mnist}
twice=${SGM_ACCEL_TWICE-likelihood} throughput=${SGM_ACCEL_THROUGHPUT-default dit_mnist}
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share one GPU
logs=$(mktemp -d)
mkdir -p "$out"

smoke() {
  python3 -c "import jax, jax.numpy as jnp, sgm; s = sgm.VPSDE(); print(float(s.log_snr(0.5)))"
}
if ! smoke >"$logs/0_smoke.log" 2>&1 && [ -d "$here/../.whl" ]; then
  # the machine's equinox/diffrax/optax do not fit: this project's versions, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    "$here"/../.whl/*.whl >>"$logs/0_smoke.log" 2>&1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
  smoke >>"$logs/0_smoke.log" 2>&1
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import jax, equinox, diffrax, optax; print('jax', jax.__version__, jax.devices(),
'equinox', equinox.__version__, 'diffrax', diffrax.__version__, 'optax', optax.__version__)"
} >"$logs/0_env.log" 2>&1

tq() {  # name, configs, eval steps
  timeout "$limit" python3 "$here/train_quality.py" --targets mnist --configs "$2" \
    --eval-steps "$3" --n-images "$images" --data-dir "$data" --out "$logs/tq_$1.json" \
    >"$logs/tq_$1.log" 2>&1
}
for config in $configs; do tq "$config" "$config" "$steps" & done
for config in $twice; do tq "${config}_2x" "$config" "$steps,$((2 * steps))" & done
timeout "$limit" python3 "$here/likelihood_cost.py" --run-dir "$run" --data-dir "$data" \
  --sections model --n-images "$((images < 4 ? images : 4))" --repeats 2 --exact-images 1 --out "$logs/likelihood_cost.json" \
  >"$logs/likelihood_cost.log" 2>&1 &
wait

for config in $throughput; do
  timeout 80 python3 "$here/train_throughput.py" --config "$config" --no-cache-check \
    --batch-size 64 --steps 50 --out "$logs/throughput_$config.json" \
    >"$logs/throughput_$config.log" 2>&1
done

python3 - "$logs" "$out" <<'EOF'
import json, pathlib, sys
logs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
merged = {p.stem: json.loads(p.read_text()) for p in sorted(logs.glob("*.json"))}
(out / "accelerator.json").write_text(json.dumps(merged, indent=1))
with open(out / "log.txt", "w") as f:
    for p in sorted(logs.glob("*.log")):
        f.write(f"===== {p.name}\n" + p.read_text(errors="replace")[-20000:] + "\n")
print("sections with results:", ", ".join(merged) or "none")
EOF
grep -h '"config"\|bits_per_dim\|Error\|error' "$logs"/tq_*.log | grep -v '^ ' | tail -20
