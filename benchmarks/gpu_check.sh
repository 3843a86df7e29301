#!/usr/bin/env bash
# The U-Net's GPU path, checked on a machine with CUDA (benchmarks/README.md records what it returned).
# Run from the repository root with cropseg (and the 'deep' extra) importable; writes at most 8 files,
# flat, under "$OUT/" (default ./gpu-check): env.txt, bench_unet_cuda.{md,json,log}, run.log,
# run_result.json, test_cuda.txt. Everything is local (sqlite MLflow store, in-process Dask cluster);
# each step has its own time limit (170 + 120 + 45 s) so the whole script ends within 6 minutes.
set -u
OUT="${OUT:-$PWD/gpu-check}"
PY="${PYTHON:-python3}"
# DEVICE / SIZE / BENCH_ARGS / RUN_OVERRIDES only to rehearse the script on a CPU machine (DEVICE=cpu SIZE=300 ...)
DEVICE="${DEVICE:-cuda}"
SIZE="${SIZE:-2000}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cropseg-gpu-XXXXXX")"
export MPLBACKEND=Agg
start=$(date +%s)

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'EOF' 2>&1
import os, platform, sys
import torch
print("python", sys.version.split()[0], platform.platform(), os.cpu_count(), "cores")
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
import segmentation_models_pytorch as smp, cropseg
print("smp", smp.__version__, "cropseg", cropseg.__version__, cropseg.__file__)
EOF
} > "$OUT/env.txt" 2>&1

# 1. the benchmark: bare forward / training loop on the GPU vs cropseg's prediction and epoch (AMP on CUDA)
timeout 170 "$PY" benchmarks/bench_unet.py --size "$SIZE" --device "$DEVICE" --repeats 3 --workdir "$WORK/bench" \
  --json "$OUT/bench_unet_cuda.json" --out "$OUT/bench_unet_cuda.md" ${BENCH_ARGS:-} > "$OUT/bench_unet_cuda.log" 2>&1
echo "bench_unet exit $? after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"

# 2. one full run on the default sample with the U-Net's defaults; device=auto must pick CUDA (AMP on there)
timeout 120 "$PY" - "$WORK" "$OUT/run_result.json" ${RUN_OVERRIDES:-} > "$OUT/run.log" 2>&1 <<'EOF'
import json, logging, sys, time
from pathlib import Path
import cropseg

work, dest = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
res = cropseg.run(
    ["classifier=unet", "classifier.device=auto", f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
     f"cache_dir={work / 'cache'}", *sys.argv[3:]],
    output_dir=work / "run",
)
wall = time.perf_counter() - t
from mlflow import MlflowClient
run = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").get_run(res.run_id)
dest.write_text(json.dumps({"wall_seconds": wall, "metrics": res.metrics, "params": run.data.params,
                            "tags": {k: v for k, v in run.data.tags.items() if k.startswith("cropseg.")}},
                           indent=2, default=str))
print(res.summary())
EOF
echo "full run exit $? after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"

# 3. the tests that need CUDA (they skip elsewhere), if pytest is there
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 45 "$PY" -m pytest -q -p no:cacheprovider -n 0 tests/test_unet.py -k cuda > "$OUT/test_cuda.txt" 2>&1 \
    || timeout 45 "$PY" -m pytest -q -p no:cacheprovider tests/test_unet.py -k cuda > "$OUT/test_cuda.txt" 2>&1
  echo "cuda tests exit $? after $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
else
  echo "pytest not installed: CUDA tests not run" >> "$OUT/env.txt"
fi
rm -rf "$WORK"
echo "total $(( $(date +%s) - start )) s" >> "$OUT/env.txt"
