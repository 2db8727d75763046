#!/usr/bin/env bash
# OmniGen-v1 at its real size on one GPU, end to end (about 10 minutes on an H200):
#   bash benchmarks/gpu_check.sh [SCRATCH_FOLDER] [TABLE_FILE]
# builds the random real-size fp32 folder (benchmarks/make_v1_folder.py, numbers drawn on the GPU), runs
# benchmarks/bench_v1.py at GPU settings (1024x1024, 50 steps, text-to-image and an edit) for bf16, fp16 with
# the fp32-kept parts, model and sequential offload, int8, and diffusers' OmniGenPipeline, writes the table to
# TABLE_FILE, and deletes the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=${1:-/tmp/omnigen-v1-gpu-check}
TABLE=${2:-gpu-check.md}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
trap 'rm -rf "$SCRATCH"' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch, torchao; print('torch', torch.__version__, 'torchao', torchao.__version__)" 2>/dev/null \
  || echo "torchao missing: the int8 row will say so (pip install torchao)"
start=$(date +%s)
"$PYTHON" benchmarks/make_v1_folder.py "$SCRATCH" --dtype fp32 --device cuda
echo "folder built in $(( $(date +%s) - start )) s"
# In order of importance: the budget guard skips the last ones if time runs short.
"$PYTHON" benchmarks/bench_v1.py generate "$SCRATCH" --gpu --budget-s 420 --timeout 300 --out "$TABLE" \
  --configs ours:bf16 ours:bf16:int8 ours:fp16 diffusers:bf16 ours:bf16:model ours:bf16:sequential
echo "table written to $TABLE; total $(( $(date +%s) - start )) s"
