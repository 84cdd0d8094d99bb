#!/usr/bin/env bash
# The FourierFormer-vs-softmax study (issue 7): trains the twins of a config for equal steps over
# several seeds, plus a Fourier variant with a smaller R init, evaluates each on valid and test
# (independent segments), runs the attention analysis, and writes a markdown report with plots.
#   launch/study.sh [CONFIG (default configs/lm-debug.yaml)] [SEEDS (default "1111 1112")] [OUT (default docs/study)]
# Runs go to runs/study/; the report is OUT/<config name>.md with its pictures beside it.
# lm-debug: about 6 + 4 + 6 minutes per seed on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/lm-debug.yaml}
SEEDS=${2:-"1111 1112"}
OUT=${3:-docs/study}
BIN=${SWIFT_FF_TRAIN:-.build/release/swift-ff-train}
[ -x "$BIN" ] || swift build -c release
if grep -q "data/wiki" "$CONFIG" && [ ! -f data/wiki/vocab.json ]; then
  bash launch/fetch-data.sh data
  $BIN prepare --input data/wiki/raw --output data/wiki --min-count 3
fi
NAME=$(basename "$CONFIG" .yaml)
mkdir -p "$OUT" runs/study
# variant: label | overrides (STUDY_VARIANTS=2 keeps only the twins)
VARIANTS=("fourier|model.attention.kind=fourier" "softmax|model.attention.kind=softmax"
          "fourier-r0.5|model.attention.kind=fourier model.attention.r_init=0.5")
VARIANTS=("${VARIANTS[@]:0:${STUDY_VARIANTS:-3}}")
for seed in $SEEDS; do
  for v in "${VARIANTS[@]}"; do
    label=${v%%|*}; sets=${v#*|}
    run="$NAME-$label-s$seed"
    args=(--config "$CONFIG" --set run.dir=runs/study --set run.name="$run" --set run.seed="$seed")
    for s in $sets; do args+=(--set "$s"); done
    if [ -f "runs/study/$run/summary.json" ]; then echo "=== $run: done already"; else
      echo "=== training $run"; $BIN "${args[@]}"
    fi
    [ -f "runs/study/$run/analysis/analysis.json" ] || $BIN analyze "${args[@]}" --sequences 8 >/dev/null
  done
done
python3 launch/study_report.py "$CONFIG" "$OUT" $SEEDS
