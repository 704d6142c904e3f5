#!/usr/bin/env bash
# Keep a run going through preemptions: rerun until it finishes. A SIGTERM'd run saves a checkpoint and
# exits with 143; a killed one resumes from its last finalized checkpoint.
#   bash launch/resume_loop.sh [CONFIG] [key=value ...]
set -uo pipefail
cd "$(dirname "$0")/.."
for attempt in $(seq 1 ${MAX_ATTEMPTS:-100}); do
  python3 -m zoomjax.train "$@" && exit 0
  echo "zoomjax.train exited with $?; restarting (attempt $attempt)" >&2
  sleep ${RESTART_DELAY:-5}
done
exit 1
