#!/usr/bin/env bash
# Rehearse a multi-host launch on one CPU machine: N processes on loopback, D simulated devices each.
#   bash launch/multihost_cpu.sh [N=2] [D=4] [CONFIG=synthetic_tiny] [key=value ...]
# Every process runs the same command with its own distributed.process_id; process 0 is the coordinator
# and writes the logs. The loss curve equals a one-process run on N*D devices (tests/test_train_distributed.py).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}; D=${2:-4}; CONFIG=${3:-synthetic_tiny}; shift $(( $# < 3 ? $# : 3 ))
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu python3 -m zoomjax.train "$CONFIG" distributed.enabled=true \
    distributed.coordinator=127.0.0.1:$PORT distributed.num_processes=$N distributed.process_id=$i \
    distributed.local_device_count=$D "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
