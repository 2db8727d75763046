#!/usr/bin/env bash
# The embedded model's continuation on a GPU machine, as one prepared script: the same command as on a CPU
# (omnigen.mini.continuation picks the GPU through accelerate, bf16 where the GPU has it), with longer segments
# because a step takes milliseconds there. The shipped folder, the run's progress and decisions, and its newest
# checkpoint are copied to $OUT (default ./gpu-out) so that another machine can resume or ship from them.
#   bash scripts/gpu_continuation.sh [MINUTES] [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-8}"
WORK="${2:-runs/continuation}"
OUT="${OUT:-gpu-out}"
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "no GPU here: run the CPU command in docs/omnigen-mini.md" >&2; exit 2; }
mkdir -p "$WORK"
# One segment of MINUTES, then the probe and, when it promises, the 50-per-row judgement; FINISH ends the loop there.
touch "$WORK/FINISH"
"$PY" -m omnigen.mini.continuation --work "$WORK" --init-from assets/omnigen-mini --steps 16000 \
  --learning-rate 1e-4 --segment-minutes "$MINUTES" --precision auto --threads 8
mkdir -p "$OUT"
cp -r assets/omnigen-mini "$OUT/omnigen-mini"
cp "$WORK"/progress.jsonl "$WORK"/decisions.jsonl "$OUT/" 2>/dev/null || true
latest=$(ls -d "$WORK"/transformer/step-* 2>/dev/null | tail -1)
[ -n "$latest" ] && cp -r "$latest" "$OUT/"
echo "done: $(cat "$WORK"/progress.jsonl | tail -1)"
