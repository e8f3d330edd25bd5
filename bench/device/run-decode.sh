#!/bin/bash
# Decode-kernel run on the GPU machine (device tool), from the repository root:
#   source .devkit/env.sh && bash bench/device/run-decode.sh [--quick] [--no-torch] [--torch-focus] [--no-tests] [--ncu]
# Builds the CUDA addon with cmake-js, runs the CUDA decode tests, benchmarks our kernels
# (bench/mla-decode/cuda.ts) and the PyTorch references (bench/mla-decode/torch_ref.py),
# and writes everything to $OUT (7 files, the device tool returns at most 8): build.log,
# test.log, bench.log, ours.json, torch.json, mla-decode-results.json, mla-decode.md.
# --torch-focus limits the PyTorch references to batch 64 and 128, s_k 4K-32K (the shapes the
# README quotes; short runs). The CUDA test log ($OUT/test.log, the seed GQA2MLA_TEST_SEED on
# its first line) is named in mla-decode-results.json (file, Jest summary line, sha256):
# commit it beside the results (bench/results/<run>-tests.txt); bench/mla-decode/readme-table.ts
# checks the sha256 when it cites the log.
# --ncu: Nsight Compute sections of one launch per MLA kernel variant (bench/mla-decode/
# profile.ts, batch 128, s_k 8K) into an eighth file, ncu.txt.
# If node_modules lacks jest (a devkit without it), build/devextra/node_modules.tar.xz (the
# packages of this checkout's node_modules that the devkit lacks: jest, @swc/jest and their
# dependencies) is unpacked over it after the build, when present (carry it with the call).
# If the addon does not build as is (the conversion kernels need cuBLAS/cuSOLVER), it is
# built again without linking those, and then from a copy without native/cuda/convert_*.cu
# (the decode exports do not use them).
set -uo pipefail
OUT=${OUT:-/tmp/decode-out}
mkdir -p "$OUT"
QUICK=""
TORCH=1
TFOCUS=""
NCU=0
TESTS=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=--quick ;;
    --no-torch) TORCH=0 ;;
    --torch-focus) TFOCUS=--focus ;;
    --ncu) NCU=1 ;;
    --no-tests) TESTS=0 ;;
  esac
done
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

SMI=/tmp/decode-smi.txt
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader > "$SMI" 2>&1
stamp "GPU: $(cat "$SMI")"

# cmake-js wants a Node "dist" folder with include/node/node.h; the devkit carries only
# the Node-API headers, which are all the addon includes.
mkdir -p /tmp/nodedir/include/node
cp "${NODE_API_INCLUDE:?source .devkit/env.sh first}"/*.h /tmp/nodedir/include/node/
touch /tmp/nodedir/include/node/node.h
export npm_config_nodedir=/tmp/nodedir
stamp "building the CUDA addon (cmake-js, -DGQA2MLA_CUDA=ON)"
if ! timeout 300 node node_modules/.bin/cmake-js compile --CDGQA2MLA_CUDA=ON -p 16 > "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -8
  stamp "build failed; again without cuBLAS/cuSOLVER"
  if ! timeout 300 node node_modules/.bin/cmake-js compile --CDGQA2MLA_CUDA=ON --CDGQA2MLA_CUDA_NO_MATH_LIBS=ON -p 16 \
      >> "$OUT/build.log" 2>&1; then
    stamp "failed again; building a copy without native/cuda/convert_*.cu"
    rm -rf /tmp/g2m-dec && mkdir -p /tmp/g2m-dec
    tar --exclude=./node_modules --exclude=./build --exclude=./.devkit --exclude=./.git -cf - . | tar -C /tmp/g2m-dec -xf -
    ln -s "$PWD/node_modules" /tmp/g2m-dec/node_modules
    rm -f /tmp/g2m-dec/native/cuda/convert_*.cu
    if ! (cd /tmp/g2m-dec && timeout 300 node node_modules/.bin/cmake-js compile --CDGQA2MLA_CUDA=ON \
          --CDGQA2MLA_CUDA_NO_MATH_LIBS=ON -p 16) >> "$OUT/build.log" 2>&1; then
      tail -40 "$OUT/build.log"
      stamp "BUILD FAILED"
      exit 1
    fi
    mkdir -p build/Release && cp /tmp/g2m-dec/build/Release/gqa2mla.node build/Release/
    echo "built without native/cuda/convert_*.cu (decode exports only)" >> "$OUT/build.log"
  fi
fi
cat "$SMI" >> "$OUT/build.log"
node -e "const m=require('./build/Release/gqa2mla.node'); console.log('buildInfo.cuda =', m.buildInfo().cuda, JSON.stringify(m.decodeCuda.deviceInfo()))" | tee -a "$OUT/build.log"

if [ "$TESTS" = 1 ] && [ ! -f node_modules/jest/bin/jest.js ] && [ -f build/devextra/node_modules.tar.xz ]; then
  stamp "node_modules has no jest: unpacking build/devextra/node_modules.tar.xz"
  xz -dc build/devextra/node_modules.tar.xz | tar -xf -
fi
if [ "$TESTS" = 1 ]; then
  stamp "CUDA decode tests"
  export GQA2MLA_TEST_SEED=${GQA2MLA_TEST_SEED:-20261201}
  echo "# test/decode-cuda.test.ts, GQA2MLA_TEST_SEED=$GQA2MLA_TEST_SEED, $(date -u +%FT%TZ), $(cat "$SMI")" > "$OUT/test.log"
  GQA2MLA_TEST_VERBOSE=1 timeout 240 node --experimental-vm-modules --no-warnings node_modules/jest/bin/jest.js \
    test/decode-cuda.test.ts >> "$OUT/test.log" 2>&1
  rc=$?
  grep -E "rel |✓|✕|Tests:" "$OUT/test.log" | cut -c1-160
  stamp "tests exit $rc"
fi

stamp "bench: our kernels"
timeout 300 node node_modules/.bin/tsx bench/mla-decode/cuda.ts --out "$OUT/ours.json" $QUICK > "$OUT/bench.log" 2>&1
stamp "ours exit $?"
if [ "$TORCH" = 1 ]; then
  stamp "bench: torch references"
  timeout 300 python3 bench/mla-decode/torch_ref.py --out "$OUT/torch.json" $QUICK $TFOCUS >> "$OUT/bench.log" 2>&1
  stamp "torch exit $?"
fi
tail -5 "$OUT/bench.log"
if [ -f "$OUT/ours.json" ]; then
  node node_modules/.bin/tsx bench/mla-decode/report.ts --ours "$OUT/ours.json" --torch "$OUT/torch.json" \
    --smi "$SMI" --test-log "$OUT/test.log" --out "$OUT/mla-decode-results.json" --md "$OUT/mla-decode.md"
fi
if [ "$NCU" = 1 ]; then
  NCUBIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ -n "$NCUBIN" ]; then
    stamp "ncu: $NCUBIN"
    timeout 240 "$NCUBIN" --clock-control none --kernel-name regex:DecodeKernel --section SpeedOfLight \
      --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
      --section SchedulerStats --section WarpStateStats --section Occupancy --section LaunchStats \
      node node_modules/.bin/tsx bench/mla-decode/profile.ts 16:1:mla576x512.m16 16:1:mla576x512.m16.tma 32:1:mla576x512.m32.w8 \
      32:1:mla576x512.m32.tma 32:1:mla576x512.m32.tma.p 32:1:mla576x512.m32.tma.p5 32:1:mla576x512.m32.w16.tma 128:1:mla576x512.m64.w8 128:1:mla576x512.m64.tma \
      > "$OUT/ncu.txt" 2>&1
    stamp "ncu exit $?"
    grep -E "profile:|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Registers Per" "$OUT/ncu.txt" | head -60
  else
    stamp "no ncu on this machine"
  fi
fi
stamp "done"
