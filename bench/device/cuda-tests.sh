#!/usr/bin/env bash
# The CUDA tests on the GPU machine, with their log, in one call (device tool):
#   bash bench/device/cuda-tests.sh
# carry: [".devkit-min", ".devkit-jest"]: node + Node-API headers, and node_modules (jest, swc,
# cmake-js, tsx and the runtime dependencies) as .devkit-jest/modules.tar.xz. Builds the CUDA
# addon (cmake-js, sm_90a), runs test/*-cuda.test.ts with a fixed GQA2MLA_TEST_SEED, and
# generates transformers' RoPE reference arrays (test/fixtures/rope/transformers_rope.py).
# Writes to $OUT: smi.txt build.log cuda-tests.txt transformers-rope.json run.log
set -uo pipefail
OUT=${OUT:-/tmp/cuda-tests-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/run.log"; }
source .devkit-min/env.sh > /dev/null || exit 1
xz -dc .devkit-jest/modules.tar.xz | tar -xf -
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/smi.txt" 2>&1
stamp "GPU: $(cat "$OUT/smi.txt"); CPU: $(nproc) cores"
python3 test/fixtures/rope/transformers_rope.py --out "$OUT/transformers-rope.json" > "$OUT/rope.log" 2>&1 && stamp "rope reference written" || { stamp "rope reference FAILED"; tail -5 "$OUT/rope.log"; }
mkdir -p /tmp/nodedir/include/node && cp "$NODE_API_INCLUDE"/*.h /tmp/nodedir/include/node/ && touch /tmp/nodedir/include/node/node.h
export npm_config_nodedir=/tmp/nodedir
if ! timeout 330 node node_modules/cmake-js/bin/cmake-js compile --CDGQA2MLA_CUDA=ON -p "$(nproc)" > "$OUT/build.log" 2>&1; then
  grep -E "error" "$OUT/build.log" | head -30; stamp "BUILD FAILED"; exit 1
fi
node -e "const m=require('./build/Release/gqa2mla.node'); console.log('cuda', m.buildInfo().cuda)" | tee -a "$OUT/run.log"
stamp "built"
export GQA2MLA_TEST_SEED=${GQA2MLA_TEST_SEED:-20261201} UV_THREADPOOL_SIZE=16 GQA2MLA_TEST_VERBOSE=1
left=$(( 560 - ($(date +%s) - t0) ))
echo "# jest test/*-cuda.test.ts, GQA2MLA_TEST_SEED=$GQA2MLA_TEST_SEED, $(date -u +%FT%TZ), $(cat "$OUT/smi.txt"), tree of ${GQA2MLA_COMMIT:-an unnamed commit (set GQA2MLA_COMMIT)}" > "$OUT/cuda-tests.txt"
timeout "$left" node --experimental-vm-modules --no-warnings node_modules/jest/bin/jest.js test/linalg-cuda.test.ts test/forward-cuda.test.ts test/decode-cuda.test.ts test/convert-cuda.test.ts >> "$OUT/cuda-tests.txt" 2>&1
stamp "tests exit $?"
grep -E "✕|Tests:|Test Suites:|●" "$OUT/cuda-tests.txt" | head -40
