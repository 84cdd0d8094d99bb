#!/usr/bin/env bash
# Mutation fuzzing of every reader of other people's files, for a fixed time:
#   launch/fuzz.sh [SECONDS] [SEED]
# Seeds from Tests/FFTrainTests/HostileCorpus. A crash (the process dies on a signal) leaves its
# input as out/current-KIND.bin: it is copied into the corpus as KIND-crash-SHA.bin (a regression
# test from then on) and fuzzing restarts with the next seed. New error classes are reported in
# out/new/ (copy the useful ones into the corpus by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-120}; SEED=${2:-1}
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
OUT=$(mktemp -d); CORPUS=Tests/FFTrainTests/HostileCorpus
end=$(( $(date +%s) + SECONDS_TOTAL )); crashes=0
while [ "$(date +%s)" -lt "$end" ]; do
  left=$(( end - $(date +%s) ))
  if $BIN fuzz --seconds "$left" --out "$OUT" --corpus "$CORPUS" --seed "$SEED"; then break; fi
  for f in "$OUT"/current-*.bin; do
    [ -e "$f" ] || continue
    kind=$(basename "$f" .bin); kind=${kind#current-}
    sum=$(sha256sum "$f" | cut -c1-16)
    cp "$f" "$CORPUS/$kind-crash-$sum.bin"; rm -f "$f"
    echo "fuzz: CRASH in the $kind reader, input kept as $CORPUS/$kind-crash-$sum.bin"
    crashes=$((crashes + 1))
  done
  SEED=$((SEED + 1))
done
echo "fuzz: $crashes crash(es); new outcome classes in $OUT/new ($(ls "$OUT/new" | wc -l) files)"
[ "$crashes" -eq 0 ]
