#!/usr/bin/env bash
# The fidelity grid (bench/fidelity/run.ts) on the GPU machine's 16 CPU cores: conversions and
# evaluations run on the CPU backend there exactly as here, 16 at a time.
# Prepare here (ignored folders, carried): .devkit-min (node + Node-API headers, no modules),
# .fid/dist (tsc output of src/ and bench/fidelity/), .fid/modules.tar (runtime dependencies).
# The command (device tool), with the fixture models moved out of the tree to fit 64 MiB:
#   bash bench/fidelity/device.sh --windows 10 --rows original,transmla-ff2,default [run.ts options]
set -uo pipefail
OUT=${OUT:-/tmp/fid-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
source .devkit-min/env.sh >/dev/null || exit 1
tar -xf .fid/modules.tar
stamp "GPU host: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); CPU: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
cmake -S . -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release > "$OUT/build.log" 2>&1 && cmake --build /tmp/cbuild -j "$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
mkdir -p build/Release && cp /tmp/cbuild/gqa2mla.node build/Release/
ln -sfn ../../test .fid/dist/test; ln -sfn ../../build .fid/dist/build; ln -sfn ../../../bench/zoo .fid/dist/bench/zoo
stamp "addon built"
timeout "${FID_SECONDS:-470}" node .fid/dist/bench/fidelity/run.js --jobs "$(nproc)" --zoo bench/zoo/models --out "$OUT/fidelity-zoo.json" "$@" 2>&1 | tee "$OUT/run.log"
stamp "done (rows are saved as they finish; a timeout leaves the finished ones)"
