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
# WordNet for the answer judge, offline (SPEC §4): Debian's wordnet-base + wordnet-sense-index; zoomjax
# copies them into an NLTK corpus dir (with the regenerated `lexnames`) on first use, here prebuilt
# (zoomjax/rl/wordnet.py). Skipped when NLTK_DATA already holds wordnet. A failure only warns: the judge
# then raises an error naming the fix.
wn_nltk=""
nltk_data="${NLTK_DATA:-}"
for d in ${nltk_data//:/ }; do
  if [ -e "$d/corpora/wordnet" ] || [ -e "$d/corpora/wordnet.zip" ]; then wn_nltk=1; fi
done
if [ -z "$wn_nltk" ] && { [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; } \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      wordnet-base wordnet-sense-index >/dev/null \
    || echo "setup.sh: warning: could not install wordnet-base wordnet-sense-index" >&2
fi
"$PY" -c "from zoomjax.rl.wordnet import ensure_wordnet; ensure_wordnet(allow_download=False)" \
  || echo "setup.sh: warning: WordNet is not available yet (the answer judge will say how to fix it)" >&2
# Test set-up only: libtpu (jax's pin for its `tpu` extra) into ~/.cache/zoomjax, kept out of the CPU
# environment, for the ahead-of-time compile of the 3B step for a TPU topology (tests/test_train_aot.py).
# Fetched here so that the tests themselves never touch the network.
if [ "${1:-}" = "--test" ]; then
  "$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); from aot_compile_3b import ensure_libtpu; ensure_libtpu()" \
    || echo "setup.sh: warning: could not fetch libtpu (the TPU AOT-compile test will fail)" >&2
fi
