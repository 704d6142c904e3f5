#!/usr/bin/env bash
# Train on a multi-host Cloud TPU VM slice (v5e-16, v4-32, ...): the same command on every worker.
#   bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE [CONFIG] [key=value ...]
# e.g. bash launch/tpu_pod.sh my-v5e16 us-west4-a lrs_gro_3b_v5e16 model.hf_dir=/data/Qwen2.5-VL-3B-Instruct
# Prerequisites: the repo at ~/zoomjax on every worker (or pass a git URL via ZOOMJAX_GIT), the data and
# HF checkpoint on each worker (or a shared mount), and a gs:// checkpoint dir in the config (all workers
# write their shards of the same orbax checkpoint). Each process discovers the slice through libtpu;
# `distributed.enabled=true` makes zoomjax call jax.distributed.initialize().
set -euo pipefail
source "$(dirname "$0")/_dry_run.sh"
dry_run_flag "$@" && shift
TPU=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:-lrs_gro_3b_v5e16}; shift $(( $# < 3 ? $# : 3 ))
REPO=${ZOOMJAX_DIR:-~/zoomjax}
OVR=$(printf ' %q' "$@")
CMD="set -e; if [ -n '${ZOOMJAX_GIT:-}' ] && [ ! -d $REPO ]; then git clone ${ZOOMJAX_GIT:-} $REPO; fi; cd $REPO; \
pip install -q -r requirements.txt 'jax[tpu]==0.10.2'; \
python3 -m zoomjax.train $CONFIG distributed.enabled=true$OVR"
run gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$CMD"
