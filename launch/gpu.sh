#!/usr/bin/env bash
# Train on NVIDIA GPU(s) of one machine (CUDA 12 wheels; the driver must be installed).
#   bash launch/gpu.sh [--dry-run] [CONFIG] [key=value ...]
# e.g. bash launch/gpu.sh lrs_gro_3b_gpu model.hf_dir=checkpoints/Qwen2.5-VL-3B-Instruct
# Several GPUs: the mesh fills `data` with all of them by default (mesh.data=-1); use mesh.fsdp=-1 mesh.data=1
# to shard the weights instead.
set -euo pipefail
source "$(dirname "$0")/_dry_run.sh"
dry_run_flag "$@" && shift
cd "$(dirname "$0")/.."
run python3 -m pip install -q -r requirements.txt "jax[cuda12]==0.10.2"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
[ -n "$DRY_RUN" ] && echo "XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION"
run python3 -m zoomjax.train "${@:-lrs_gro_3b_gpu}"
