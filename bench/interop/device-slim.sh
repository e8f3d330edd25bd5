#!/usr/bin/env bash
# bench/interop in one device call with a slim kit (the tree must stay under 64 MiB):
#   bash bench/interop/device-slim.sh [--calib-samples N] [--windows N]
# carry: [".devkit-min", ".devkit-tsx"]: node + Node-API headers, and node_modules without the
# test and lint tools (.devkit-tsx/modules.tar.xz). Builds the CPU addon with cmake-js, then
# runs bench/interop/ours.ts (our side) and hf_check.py (stock transformers and the vLLM /
# SGLang emulations) as run.sh does. Writes $OUT/interop.json, manifest.json, build.log, run.log.
set -uo pipefail
OUT=${OUT:-/tmp/interop-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/run.log"; }
CALIB=32; WINDOWS=8
while [ $# -gt 0 ]; do case "$1" in --calib-samples) CALIB=$2; shift ;; --windows) WINDOWS=$2; shift ;; esac; shift; done
source .devkit-min/env.sh > /dev/null || exit 1
xz -dc .devkit-tsx/modules.tar.xz | tar -xf -
stamp "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); CPU: $(nproc) cores"
if [ ! -f build/Release/gqa2mla.node ]; then
  mkdir -p /tmp/nodedir/include/node && cp "$NODE_API_INCLUDE"/*.h /tmp/nodedir/include/node/ && touch /tmp/nodedir/include/node/node.h
  npm_config_nodedir=/tmp/nodedir timeout 200 node node_modules/cmake-js/bin/cmake-js compile -p "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
fi
stamp "addon ready; ours.ts (calib $CALIB x 256, $WINDOWS windows of 512)"
WORK=/tmp/interop-work
timeout 330 node node_modules/tsx/dist/cli.mjs bench/interop/ours.ts --work "$WORK" --calib-samples "$CALIB" --windows "$WINDOWS" 2>&1 | tail -30 | tee -a "$OUT/run.log" || { stamp "ours.ts FAILED"; exit 1; }
cp "$WORK/manifest.json" "$OUT/manifest.json"
stamp "hf_check.py"
timeout 200 python3 bench/interop/hf_check.py --work "$WORK" --out "$OUT/interop.json" 2>&1 | tail -40 | tee -a "$OUT/run.log"
stamp "done"
