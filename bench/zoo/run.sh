#!/usr/bin/env bash
# Trains the zoo models on the GPU machine, all at once on one GPU (they are tiny), and
# packs each into $OUT/<name>.tar with its logs. Needs the training text carried as
# .zoo-data/pydocs-train.txt.xz (copied from ../shared/corpus).
# Device call: bash bench/zoo/run.sh [name ...]   (carry: [".zoo-data"])
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/zoo-out}
work=/tmp/zoo
mkdir -p "$work" "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt"
# Names on the command line train only those (e.g. bash bench/zoo/run.sh zoo-qwen3); none: every model.
names=${*:-$(python3 -c "import json; print(' '.join(json.load(open('bench/zoo/zoo.json'))['models']))")}
pids=()
for n in $names; do
  python3 bench/zoo/train.py --name "$n" --corpus .zoo-data/pydocs-train.txt.xz --out "$work" > "$work/$n.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for n in $names; do
  echo "== $n"; tail -3 "$work/$n.log"
  [ -d "$work/$n" ] && cp "$work/$n.log" "$work/$n/train-stdout.log" && tar -C "$work" -cf "$out/$n.tar" "$n"
done
ls -la "$out"
exit $rc
