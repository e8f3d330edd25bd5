#!/usr/bin/env bash
# CPU time of a default fixture conversion judged on 256-token windows (--context 256, the
# choices as before the serving context) against the default (--context = max_position_embeddings
# 2048 for tiny-llama-gqa), one after the other: issue 14's "a fixture conversion takes at most
# 1.5 x today's time". Prints "<context> user <s> sys <s> wall <s>" per run (GNU time).
#   bash bench/fidelity/context-time.sh [model-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-test/fixtures/tiny-llama-gqa}
cli=$(mktemp --suffix .mts)
echo "import { main } from '$PWD/src/cli/main.ts'; main(process.argv).then((c) => { process.exitCode = c; });" > "$cli"
for c in 256 default; do
  out=$(mktemp -d)/out
  extra=(); [ "$c" != default ] && extra=(--context "$c")
  /usr/bin/time -f "$c user %U sys %S wall %e" npx tsx "$cli" convert "$model" "$out" --calib test/fixtures/pydocs-train-3M.txt \
    --qk-rope-dim 32 --kv-lora-rank 96 --device cpu --quiet "${extra[@]}" 2>&1 | tail -1
  rm -rf "$(dirname "$out")"
done
rm -f "$cli"
