#!/usr/bin/env bash
# Full fine-tuning of OmniGen-v1 at its real size under FSDP with gradient checkpointing, on every GPU here:
#   bash benchmarks/gpu_fsdp.sh [SCRATCH_FOLDER] [STEPS] [RESOLUTION]
# builds the random real-size folder (benchmarks/make_v1_folder.py; stored in bf16, loaded as fp32 master weights),
# a dataset of 8 pictures, trains STEPS (default 4) steps with FULL_SHARD, bf16 autocast, and prints each
# process's peak GPU memory and seconds per step; then deletes the folder. The same command on 1, 2 or 8 GPUs
# (one process each). Disk: about 55 GB (the 7.75 GB folder, the final checkpoint's 15.5 GB weights and 30 GB
# AdamW state); one GPU needs about 65 GB (weights, gradients and AdamW states are not split there).
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=${1:-/tmp/omnigen-v1-fsdp}
STEPS=${2:-4}
RESOLUTION=${3:-512}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || true)
if [ "${GPUS:-0}" -lt 1 ]; then
  echo "no GPU here (nvidia-smi lists none): this script measures FSDP on GPUs; the CPU test of the same code"
  echo "path is tests/test_fsdp_training.py"
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
trap 'rm -rf "$SCRATCH"' EXIT
start=$(date +%s)
"$PYTHON" benchmarks/make_v1_folder.py "$SCRATCH/model" --dtype bf16 --device cuda
"$PYTHON" - "$SCRATCH/data" <<'PY'
import json, sys
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1]); root.mkdir(parents=True, exist_ok=True)
colours = [(230, 30, 30), (20, 40, 200), (60, 190, 70), (240, 220, 30)] * 2
lines = []
for i, rgb in enumerate(colours):
    picture = Image.new("RGB", (1024, 1024), (255, 255, 255)); picture.paste(rgb, (256, 256, 768, 768))
    picture.save(root / f"{i}.png"); lines.append(json.dumps({"instruction": f"a square, colour {i}", "output_image": f"{i}.png"}))
(root / "data.jsonl").write_text("\n".join(lines) + "\n")
PY
echo "folder and data built in $(( $(date +%s) - start )) s; training on $GPUS GPU(s)"
"$PYTHON" -m accelerate.commands.launch --use_fsdp --num_processes "$GPUS" --num_machines 1 --mixed_precision bf16 \
  --dynamo_backend no --fsdp_sharding_strategy FULL_SHARD --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP \
  --fsdp_transformer_layer_cls_to_wrap DecoderLayer --fsdp_state_dict_type FULL_STATE_DICT \
  --fsdp_use_orig_params true --fsdp_sync_module_states true --fsdp_cpu_ram_efficient_loading true \
  benchmarks/bench_fsdp.py train "$SCRATCH/model" "$SCRATCH/data/data.jsonl" "$SCRATCH/run" \
  --steps "$STEPS" --resolution "$RESOLUTION" --precision bf16
echo "total $(( $(date +%s) - start )) s"
