#!/usr/bin/env bash
# The interop protocol (issue 15) for zoo models and fixtures on the GPU machine, in one device call:
# our conversions (CPU backend, the host's cores split over the models) and our engine's NLL
# (bench/interop/ours.ts), then stock transformers (float32 on the GPU, TF32 off) and the
# vLLM / SGLang emulations (bench/interop/hf_check.py) on every converted directory.
#   bash bench/interop/device-zoo.sh --models zoo-a,zoo-b [--fixtures tiny-llama-gqa] [--calib-samples 128] [--windows 8]
# Carried (ignored folders): .devkit-min (node + Node-API headers) and .fid (dist: tsc output of
# src/ and bench/; modules.tar: runtime dependencies), as for bench/fidelity/device.sh. The tree
# must stay under 64 MiB: move the models that are not named out of it for the call.
# Writes $OUT/interop-<name>.json (hf_check per model), manifest-<name>.json, ours-<name>.log, run.log.
set -uo pipefail
OUT=${OUT:-/tmp/interop-zoo-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/run.log"; }
MODELS=""; FIXTURES=""; CALIB=128; WINDOWS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift ;;
    --fixtures) FIXTURES=$2; shift ;;
    --calib-samples) CALIB=$2; shift ;;
    --windows) WINDOWS=$2; shift ;;
  esac
  shift
done
source .devkit-min/env.sh > /dev/null || exit 1
tar -xf .fid/modules.tar
stamp "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); CPU: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
cmake -S . -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release > "$OUT/build.log" 2>&1 && cmake --build /tmp/cbuild -j "$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
mkdir -p build/Release && cp /tmp/cbuild/gqa2mla.node build/Release/
export GQA2MLA_ADDON=$PWD/build/Release/gqa2mla.node
ln -sfn ../../test .fid/dist/test; ln -sfn ../../build .fid/dist/build; ln -sfn ../../../bench/zoo .fid/dist/bench/zoo
stamp "addon built; commit $(cat .fid/COMMIT 2>/dev/null || echo unknown)"

# one job per zoo model and per fixture, the cores split evenly between them
jobs=()
for m in ${MODELS//,/ }; do jobs+=("zoo:$m"); done
for f in ${FIXTURES//,/ }; do jobs+=("fixture:$f"); done
threads=$(( $(nproc) / ${#jobs[@]} )); [ "$threads" -lt 1 ] && threads=1
stamp "${#jobs[@]} jobs (${jobs[*]}), $threads threads each; calibration $CALIB x 256, $WINDOWS windows of 512"
pids=()
for j in "${jobs[@]}"; do
  name=${j#*:}
  if [ "${j%%:*}" = zoo ]; then sel=(--fixtures none --zoo --zoo-models "$name"); else sel=(--fixtures "$name"); fi
  GQA2MLA_THREADS=$threads OPENBLAS_NUM_THREADS=$threads timeout 420 node .fid/dist/bench/interop/ours.js \
    --work "/tmp/iz/$name" "${sel[@]}" --calib-samples "$CALIB" --windows "$WINDOWS" > "$OUT/ours-$name.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; rc=$?
  stamp "ours ${jobs[$i]}: rc $rc; $(tail -1 "$OUT/ours-${jobs[$i]#*:}.log")"
done
for j in "${jobs[@]}"; do
  name=${j#*:}
  [ -f "/tmp/iz/$name/manifest.json" ] || { stamp "no manifest for $name"; continue; }
  cp "/tmp/iz/$name/manifest.json" "$OUT/manifest-$name.json"
  timeout 200 python3 bench/interop/hf_check.py --work "/tmp/iz/$name" --out "$OUT/interop-$name.json" > "$OUT/hf-$name.log" 2>&1
  stamp "hf_check $name: rc $?"; tail -25 "$OUT/hf-$name.log" | tee -a "$OUT/run.log"
done
stamp "done"
# the device returns a few files only: everything in one archive
tar -C "$OUT" -czf /tmp/interop-zoo.tgz --exclude=interop-zoo.tgz . && mv /tmp/interop-zoo.tgz "$OUT/" && find "$OUT" -type f ! -name interop-zoo.tgz ! -name run.log -delete
