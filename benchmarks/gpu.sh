#!/usr/bin/env bash
# The prepared GPU check (issue 9): under 8 minutes on one H200-class GPU, no network.
#
#   bash benchmarks/gpu.sh                 # on the GPU machine; writes $OUT/gpu.json (or runs/bench)
#   bash benchmarks/gpu.sh --dry-run       # tiny sizes on any CPU
#
# Packages the GPU machine lacks travel as wheels in .whl/ (see the device tool's README):
# grain, array-record, ml-collections, tensorboardX, uproot/awkward; they are installed into
# /tmp/site and put on PYTHONPATH. JAX with CUDA must already be on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" = "--dry-run" ] && PYTHON=.venv/bin/python
out="${OUT:-runs/bench}/gpu.json"
mkdir -p "$(dirname "$out")"
timeout 480 "$PYTHON" benchmarks/gpu.py --json "$out" "$@"
