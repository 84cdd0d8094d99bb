#!/usr/bin/env bash
# Images/s of a ViT config on this machine: 1 rank x all cores' threads, against N ranks x 1
# thread (mpirun), same global batch; each from the median step time of a short run.
#   launch/bench-vit.sh [CONFIG (default configs/vit-fashion.yaml)] [STEPS (default 40)]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/vit-fashion.yaml}
STEPS=${2:-40}
BIN=${SWIFT_FF_TRAIN:-.build/release/swift-ff-train}
[ -x "$BIN" ] || swift build -c release
CORES=$(nproc)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
common=(--config "$CONFIG" --set train.steps="$STEPS" --set train.log_every=1 --set train.eval_every=0
        --set checkpoint.every=0 --set run.dir="$TMP" --set data.valid_holdout=0 --set train.eval_batches=1)
rate() { # median images/s of the logged steps after the first 5
  grep -oE '\| [0-9.]+ img/s' "$1" | awk '{print $2}' | tail -n +6 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
"$BIN" "${common[@]}" --set run.name=one --set train.threads="$CORES" > "$TMP/one.log" 2>&1 || true
SWIFT_FF_TRAIN=$BIN launch/mpirun-local.sh -n "$CORES" -t 1 -- "${common[@]}" --set run.name=many > "$TMP/many.log" 2>&1 || true
one=$(rate "$TMP/one.log"); many=$(rate "$TMP/many.log")
echo "$CONFIG on $CORES cores: 1 rank x $CORES threads $one img/s; $CORES ranks x 1 thread $many img/s"
