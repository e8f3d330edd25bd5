#!/bin/bash
# Interop round trip on the GPU machine (device tool), in ONE call, from the repository root:
#   bash bench/interop/run.sh [--calib-samples N] [--windows N] [--zoo]
# (here first: bash ../shared/tools/devkit.sh pack --modules; carry [".devkit"])
#
# 1. source .devkit/env.sh (node on PATH, node_modules restored);
# 2. build the CPU addon with node-gyp (falls back to cmake-js when node-gyp fails);
# 3. bench/interop/ours.ts: convert both fixtures (conversion-core budgets, --target portable,
#    plus tiny-qwen2-gqa --target transformers and its lossless setting; --zoo: every model under
#    bench/zoo/models/), score the eval windows with our engine, save ids + NLL as safetensors;
# 4. bench/interop/hf_check.py: stock transformers (float32, eager, TF32 off; and in the config's
#    dtype) and the PyTorch emulations of vLLM / SGLang (engine_emul.py) on the same directories
#    and windows, compared with ours; lossless logits vs the original Qwen2.
# Writes to $OUT: interop.json (the result), manifest.json (our side), build.log. Device call:
#   set -o pipefail; bash bench/interop/run.sh 2>&1 | tee $OUT/run.log
# or, when one call would pass the 10-minute limit, two calls on the same warm machine:
#   set -o pipefail; bash bench/interop/run.sh --stage convert 2>&1 | tee $OUT/run-convert.log
#   set -o pipefail; bash bench/interop/run.sh --stage compare 2>&1 | tee $OUT/run-compare.log
set -uo pipefail
OUT=${OUT:-/tmp/interop-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CALIB=128
WINDOWS=8
ZOO=
STAGE=all  # all | convert (build + ours.ts, keeps /tmp/interop-work) | compare (hf_check.py on it)
while [ $# -gt 0 ]; do
  case "$1" in
    --calib-samples) CALIB=$2; shift ;;
    --windows) WINDOWS=$2; shift ;;
    --zoo) ZOO=--zoo ;;
    --stage) STAGE=$2; shift ;;
  esac
  shift
done
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
JOBS=$(nproc)

# shellcheck disable=SC1091
source .devkit/env.sh || { stamp "cannot source .devkit/env.sh"; exit 1; }
stamp "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
stamp "CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

WORK=/tmp/interop-work
if [ "$STAGE" != "compare" ]; then
# ---- headers and libraries the addon needs
CBLAS_DIR=""
for d in /usr/include/openblas /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/x86_64-linux-gnu /usr/include; do
  [ -f "$d/cblas.h" ] && { CBLAS_DIR=$d; break; }
done
LAPACKE_H=$(ls /usr/include/lapacke.h /usr/include/*/lapacke.h /usr/include/openblas/lapacke.h 2>/dev/null | head -1)
stamp "cblas.h in: ${CBLAS_DIR:-MISSING}; lapacke.h: ${LAPACKE_H:-MISSING}"
stamp "libs: $(ldconfig -p | grep -E 'libopenblas\.so|liblapacke\.so' | awk '{print $1}' | tr '\n' ' ')"
if [ -z "$CBLAS_DIR" ] || [ -z "$LAPACKE_H" ]; then
  stamp "BLAS/LAPACKE headers missing on this machine: cannot build the CPU addon"
  exit 1
fi
export CPATH="$CBLAS_DIR:$(dirname "$LAPACKE_H")${CPATH:+:$CPATH}"
# link names without the -dev symlinks: make them in a scratch dir
mkdir -p /tmp/interop-libs
for l in openblas lapacke; do
  if ! ldconfig -p | grep -q "lib$l\.so "; then
    so=$(ldconfig -p | grep -m1 "lib$l\.so\." | awk '{print $NF}')
    [ -n "$so" ] && ln -sf "$so" "/tmp/interop-libs/lib$l.so" && stamp "linked lib$l.so -> $so"
  fi
done
export LIBRARY_PATH="/tmp/interop-libs${LIBRARY_PATH:+:$LIBRARY_PATH}"

# ---- build the CPU addon
stamp "node-gyp rebuild (-j $JOBS, nodedir $npm_config_nodedir)"
if ! timeout 120 node node_modules/.bin/node-gyp rebuild -j "$JOBS" --nodedir="$npm_config_nodedir" > "$OUT/build.log" 2>&1; then
  tail -25 "$OUT/build.log"
  stamp "node-gyp failed; trying cmake-js (CPU)"
  mkdir -p /tmp/nodedir/include/node
  cp "$NODE_API_INCLUDE"/*.h /tmp/nodedir/include/node/ && touch /tmp/nodedir/include/node/node.h
  if ! npm_config_nodedir=/tmp/nodedir timeout 100 node node_modules/.bin/cmake-js compile -p "$JOBS" >> "$OUT/build.log" 2>&1; then
    tail -25 "$OUT/build.log"
    stamp "BUILD FAILED"
    exit 1
  fi
fi
node -e "const m=require('./build/Release/gqa2mla.node'); console.log('addon:', JSON.stringify(m.buildInfo()))"

# ---- our side
stamp "ours.ts: convert + score (calib $CALIB x 256, $WINDOWS windows of 512)"
if ! timeout 480 node node_modules/.bin/tsx bench/interop/ours.ts --work "$WORK" --calib-samples "$CALIB" --windows "$WINDOWS" $ZOO; then
  stamp "ours.ts FAILED"
  exit 1
fi
cp "$WORK/manifest.json" "$OUT/manifest.json"
fi
[ "$STAGE" = "convert" ] && { stamp "done (stage convert; $WORK kept for --stage compare)"; exit 0; }

# ---- transformers' side
stamp "hf_check.py"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout 400 python3 bench/interop/hf_check.py --work "$WORK" --out "$OUT/interop.json"
rc=$?
stamp "done (hf_check exit $rc)"
exit $rc
