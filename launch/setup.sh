#!/usr/bin/env bash
# One-shot set-up on a fresh Debian/Ubuntu machine (CPU). Idempotent.
#   bash launch/setup.sh          # runtime deps
#   bash launch/setup.sh --test   # + test deps (torch CPU, pytest, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
req=requirements.txt
[ "${1:-}" = "--test" ] && req=requirements-test.txt
"$PY" -m pip install -q --disable-pip-version-check -r "$req"
# WordNet for the answer judge, offline: Debian's packages; zoomjax builds the NLTK corpus dir from them
# on first use (see zoomjax/rl/wordnet.py). Skipped when NLTK_DATA already holds wordnet.
if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
fi
