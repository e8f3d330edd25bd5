#!/bin/bash
# CUDA conversion backend on the GPU machine (device tool), from the repository root, in one call:
#   source .devkit/env.sh && bash bench/device/convert-8b.sh [--quick] [--no-tests] [--no-agree] [--layers N] [--default-method]
# carry: [".devkit", ".devkit-jest"] (.devkit-jest/jest-modules.tar.xz: jest + swc, added to
# the devkit's node_modules). Builds the CUDA addon with cmake-js, runs test/*cuda*.test.ts
# (except the decode tests), times eigh n = 1024/2048/4096 (cuSOLVER vs LAPACK), checks
# CPU-vs-CUDA agreement on both fixtures, writes a synthetic Llama-3-8B-shaped checkpoint and
# converts it (128 x 256 calibration tokens, qkRopeDim 64, kvLoraRank 512). Writes to $OUT
# (8 files at most): smi.txt build.log test.log eigh.json agree.json convert.json run.log
# convert-8b-results.json. --quick: 2 layers, tests without the fixture conversions, no agreement.
# --profile: only the 8B conversion, under node --cpu-prof; host-side summary in $OUT/profile.txt.
# --method transmla|gqa2mla|default: the main conversion's method (default transmla, freqfold 4).
# --no-eigh: skip the eigh benchmark. --backend-tests: of the first test set only test/forward-cuda.test.ts.
# --default-layers N: --default-method on its own N-layer synthetic checkpoint.
# --default-method: a second 8B conversion with the tool's default settings (method gqa2mla),
# its JSON folded into convert-8b-results.json as convertDefaultMethod.
# The CUDA test log ($OUT/test.log: every Jest run of this call, each headed by its files and
# GQA2MLA_TEST_SEED) is named in convert-8b-results.json (testLog: file, every Jest "Tests:"
# line, sha256): commit it beside the results as bench/results/<run>-tests.txt, so that each
# CUDA claim of the README traces to the log of the run it quotes.
set -uo pipefail
OUT=${OUT:-/tmp/convert-8b-out}
mkdir -p "$OUT"
QUICK=0; TESTS=1; AGREE=1; LAYERS=32; PROFILE=0; EIGH=1; DEFAULT=0; METHOD=transmla; DLAYERS=0; TESTSET=all
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; AGREE=0; LAYERS=2 ;;
    --no-tests) TESTS=0 ;;
    --no-agree) AGREE=0 ;;
    --layers) LAYERS=$2; shift ;;
    --profile) PROFILE=1; TESTS=0; AGREE=0; EIGH=0 ;;
    --default-method) DEFAULT=1 ;;
    --method) METHOD=$2; shift ;;
    --no-eigh) EIGH=0 ;;
    --default-layers) DEFAULT=1; DLAYERS=$2; shift ;;
    --backend-tests) TESTSET=backend ;;
  esac
  shift
done
export UV_THREADPOOL_SIZE=16 PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT/run.log"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader > "$OUT/smi.txt" 2>&1
stamp "GPU: $(cat "$OUT/smi.txt"); CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
if [ -f .devkit-jest/jest-modules.tar.xz ]; then xz -dc .devkit-jest/jest-modules.tar.xz | tar -xf - ; fi

mkdir -p /tmp/nodedir/include/node
cp "${NODE_API_INCLUDE:?source .devkit/env.sh first}"/*.h /tmp/nodedir/include/node/
touch /tmp/nodedir/include/node/node.h
export npm_config_nodedir=/tmp/nodedir
stamp "building the CUDA addon (cmake-js, -DGQA2MLA_CUDA=ON)"
if ! timeout 400 node node_modules/.bin/cmake-js compile --CDGQA2MLA_CUDA=ON -p 16 > "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40
  tail -20 "$OUT/build.log"
  stamp "BUILD FAILED"
  exit 1
fi
node -e "const m=require('./build/Release/gqa2mla.node'); console.log('cuda', m.buildInfo().cuda, 'convertCuda', !!m.convertCuda, JSON.stringify(m.convertCuda && m.convertCuda.deviceInfo()))" 2>&1 | tee -a "$OUT/run.log"
stamp "built"

JEST="node --experimental-vm-modules --no-warnings node_modules/jest/bin/jest.js"
export GQA2MLA_TEST_SEED=${GQA2MLA_TEST_SEED:-20261201}
left() { echo $(( 575 - ($(date +%s) - t0) )); }
run_tests() {  # $1: limit in seconds, rest: test files
  local lim=$1; shift
  stamp "CUDA tests (limit ${lim}s): $*"
  echo "# jest $*, GQA2MLA_TEST_SEED=$GQA2MLA_TEST_SEED, $(date -u +%FT%TZ), $(cat "$OUT/smi.txt")" >> "$OUT/test.log"
  GQA2MLA_TEST_VERBOSE=1 timeout $lim $JEST "$@" >> "$OUT/test.log" 2>&1
  local rc=$?
  grep -E "^\s+(eigh|svd|rms|rope|swiglu|linear|attention|moments|tiny)|✓|✕|Tests:|●" "$OUT/test.log" | grep -v "^\s*at " | cut -c1-230 | tail -60
  stamp "tests exit $rc"
}
# order: what the acceptance needs most first; the slow fixture conversions last
if [ "$TESTS" = 1 ] && [ "$TESTSET" = backend ]; then run_tests 120 test/forward-cuda.test.ts
elif [ "$TESTS" = 1 ]; then run_tests 120 test/linalg-cuda.test.ts test/forward-cuda.test.ts; fi

[ "$EIGH" = 1 ] && stamp "eigh bench" && timeout 150 node node_modules/.bin/tsx bench/convert-8b/eigh.ts --json "$OUT/eigh.json" --reps $([ "$QUICK" = 1 ] && echo 1 || echo 3) 2>&1 | tee -a "$OUT/run.log"

MODEL=/tmp/llama3-8b-synth
stamp "writing the synthetic 8B-shaped checkpoint ($LAYERS layers)"
timeout 200 node node_modules/.bin/tsx bench/convert-8b/synth.ts $MODEL --layers $LAYERS 2>&1 | tail -3 | tee -a "$OUT/run.log"
sync; df -h /tmp | tail -1 | tee -a "$OUT/run.log"

lim=$(left); [ $lim -gt 330 ] && lim=330
stamp "8B-shaped conversion on the GPU (limit ${lim}s)"
PROF=()
[ "$PROFILE" = 1 ] && PROF=(--cpu-prof --cpu-prof-dir=/tmp/convert-prof)
timeout $lim node "${PROF[@]}" --import tsx bench/convert-8b/run.ts --model $MODEL --out /tmp/llama3-8b-mla --json "$OUT/convert.json" --device cuda --method $METHOD \
  2> >(tail -40 >> "$OUT/run.log") | tee -a "$OUT/run.log"
stamp "conversion exit $?"
if [ "$PROFILE" = 1 ]; then python3 bench/convert-8b/profile_summary.py /tmp/convert-prof --top 40 > "$OUT/profile.txt" 2>&1; head -60 "$OUT/profile.txt"; fi
rm -rf /tmp/llama3-8b-mla

if [ "$TESTS" = 1 ] && [ "$QUICK" = 0 ] && [ $(left) -gt 60 ]; then run_tests $(left) test/convert-cuda.test.ts; fi
if [ "$AGREE" = 1 ] && [ $(left) -gt 60 ]; then
  stamp "CPU vs CUDA agreement on the fixtures (limit $(left)s)"
  timeout $(left) node node_modules/.bin/tsx bench/convert-8b/agree.ts --json "$OUT/agree.json" 2>&1 | tail -6 | tee -a "$OUT/run.log"
elif [ "$AGREE" = 1 ]; then
  stamp "agreement bench skipped ($(left)s left)"
fi

if [ "$DEFAULT" = 1 ] && [ "$DLAYERS" -gt 0 ]; then
  rm -rf $MODEL
  stamp "writing a $DLAYERS-layer synthetic checkpoint for the default-method run"
  timeout 100 node node_modules/.bin/tsx bench/convert-8b/synth.ts $MODEL --layers $DLAYERS 2>&1 | tail -1 | tee -a "$OUT/run.log"
fi
if [ "$DEFAULT" = 1 ]; then
  lim=$(( $(left) - 15 ))
  if [ $lim -gt 60 ]; then
    stamp "8B-shaped conversion with the tool's default method (limit ${lim}s)"
    timeout $lim node --import tsx bench/convert-8b/run.ts --model $MODEL --out /tmp/llama3-8b-mla --json /tmp/convert-default.json --device cuda --method default \
      2> >(tail -40 >> "$OUT/run.log") | tee -a "$OUT/run.log"
    stamp "default-method conversion exit $?"
    rm -rf /tmp/llama3-8b-mla
  else
    stamp "default-method conversion skipped ($(left)s left)"
  fi
fi
rm -rf $MODEL

node -e "
const fs=require('fs'); const o=process.env.OUT; const r={bench:'convert-8b', card: fs.readFileSync(o+'/smi.txt','utf8').trim(), cpuCores: require('os').cpus().length, cpuModel: require('os').cpus()[0].model};
for (const k of ['eigh','agree','convert']) { try { r[k]=JSON.parse(fs.readFileSync(o+'/'+k+'.json','utf8')); } catch { r[k]=null; } }
try { r.convertDefaultMethod=JSON.parse(fs.readFileSync('/tmp/convert-default.json','utf8')); } catch { r.convertDefaultMethod=null; }
try { const t=fs.readFileSync(o+'/test.log'); r.testLog={ file:'test.log', seed:Number(process.env.GQA2MLA_TEST_SEED), summaries:(t.toString('utf8').match(/^Tests:.*$/gm)||[]).map((x)=>x.trim()), sha256:require('crypto').createHash('sha256').update(t).digest('hex') }; } catch { r.testLog=null; }
fs.writeFileSync(o+'/convert-8b-results.json', JSON.stringify(r,null,2)+'\n');"
stamp "done"
