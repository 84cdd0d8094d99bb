#!/usr/bin/env bash
# The FourierFormer-vs-softmax study: for each config, trains three variants over several seeds
# for the config's steps — Fourier with R set from the data (the default, `r_init: auto`),
# Fourier with the paper's R init (2.0 for language models, 1.0 for ViTs), and the softmax twin —
# evaluates each on valid and test, runs the attention analysis, and writes one report per config
# (docs/study/NAME.md) with mean ± sd over seeds and the health of every layer.
#   launch/study.sh [CONFIG ...]    (default: lm-debug, lm-shakespeare-bytes, vit-fashion-debug)
# Environment: SEEDS (default "1111 1112 1113"), JOBS runs at once with one thread each
# (default: the number of cores), OUT (default docs/study), TARGETS (extra Fourier variants with
# R from the data at these model.attention.r_target values, e.g. "0.9"). Runs go to runs/study/; a run whose
# summary exists is not trained again, so an interrupted study continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1111 1112 1113"}
JOBS=${JOBS:-$(nproc)}
OUT=${OUT:-docs/study}
BIN=${SWIFT_FF_TRAIN:-.build/release/swift-ff-train}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(configs/lm-debug.yaml configs/lm-shakespeare-bytes.yaml configs/vit-fashion-debug.yaml)
[ -x "$BIN" ] || swift build -c release
for cfg in "${CONFIGS[@]}"; do
  if grep -q "data/wiki" "$cfg" && [ ! -f data/wiki/vocab.json ]; then
    bash launch/fetch-data.sh data
    $BIN prepare --input data/wiki/raw --output data/wiki --min-count 3
  fi
  if grep -q "data/shakespeare" "$cfg" && [ ! -f data/shakespeare/vocab.json ]; then
    bash launch/fetch-data.sh data
    $BIN prepare --input data/shakespeare/raw --output data/shakespeare --tokenizer byte
  fi
done
mkdir -p "$OUT" runs/study

# One line per run: config, variant, seed.
jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
for cfg in "${CONFIGS[@]}"; do
  for seed in $SEEDS; do
    for variant in fourier fourier-paper softmax; do echo "$cfg $variant $seed" >> "$jobs_file"; done
    for t in ${TARGETS:-}; do echo "$cfg fourier-t$t $seed" >> "$jobs_file"; done
  done
done

train_one() {  # CONFIG VARIANT SEED
  local cfg=$1 variant=$2 seed=$3 name paper
  name=$(basename "$cfg" .yaml)
  paper=2.0; grep -q "kind: vit" "$cfg" && paper=1.0
  local run="$name-$variant-s$seed"
  local args=(--config "$cfg" --set run.dir=runs/study --set run.name="$run" --set run.seed="$seed" --set train.threads=1)
  case $variant in
    fourier) args+=(--set model.attention.kind=fourier --set model.attention.r_init=auto) ;;
    fourier-paper) args+=(--set model.attention.kind=fourier --set model.attention.r_init=$paper) ;;
    softmax) args+=(--set model.attention.kind=softmax) ;;
    fourier-t*) args+=(--set model.attention.kind=fourier --set model.attention.r_init=auto
                       --set model.attention.r_target="${variant#fourier-t}") ;;
  esac
  if [ ! -f "runs/study/$run/summary.json" ]; then
    echo "=== training $run"
    "$BIN" "${args[@]}" > "runs/study/$run.log" 2>&1 || { echo "=== $run failed: see runs/study/$run.log"; return 1; }
  fi
  [ -f "runs/study/$run/analysis/analysis.json" ] || "$BIN" analyze "${args[@]}" --sequences 8 > /dev/null
  echo "=== $run done"
}
export -f train_one
export BIN
xargs -P "$JOBS" -L 1 bash -c 'train_one "$0" "$1" "$2"' < "$jobs_file"

python3 -c "import matplotlib" 2>/dev/null || pip install -q matplotlib
for cfg in "${CONFIGS[@]}"; do
  python3 launch/study_report.py "$cfg" "$OUT" $SEEDS
done
