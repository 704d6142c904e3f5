#!/usr/bin/env bash
# Train on a single-host TPU VM (v5e-8, v4-8, v6e-8, or Colab's TPU runtime): run on the VM itself.
#   bash launch/tpu_vm.sh [--dry-run] [CONFIG] [key=value ...]
# e.g. bash launch/tpu_vm.sh toy_earth_sft mesh.fsdp=-1 mesh.data=1
set -euo pipefail
source "$(dirname "$0")/_dry_run.sh"
dry_run_flag "$@" && shift
cd "$(dirname "$0")/.."
run python3 -m pip install -q -r requirements.txt "jax[tpu]==0.10.2"
run python3 -m zoomjax.train "${@:-toy_earth_sft}"
