#!/usr/bin/env bash
# Hybrid parallelism on one machine: 1 rank x 2 threads (train.threads: 2) against 2 ranks x 1
# thread: lm-debug (Fourier) in tokens/s, vit-fashion-debug in images/s (Fourier and softmax).
# 1x2 runs twice: with the threads splitting the samples (train.thread_split: samples, what
# `auto` picks here) and splitting every operation (train.thread_split: operations).
# The layouts alternate run by run (the machine's speed moves; a ratio of runs taken apart moves
# with it); each run's rate is the median of its logged windows after the first, and the table
# gives each round's ratios to 2x1; the summary line per model, the medians over rounds.
#   launch/bench-hybrid.sh          ROUNDS=3 STEPS=50 by default (STEPS >= 30: the first 10 are left out)
#   BIN=/path/to/other/swift-ff-train launch/bench-hybrid.sh     (e.g. an older build)
#   LM_DATA=DIR: the language model's data folder (default: the config's, data/wiki)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; STEPS=${STEPS:-50}
if [ -z "${BIN:-}" ]; then swift build -c release >/dev/null; BIN=.build/release/swift-ff-train; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

rate() { # METRICS.jsonl: median tokens/s or images/s of the logged windows after the first
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r = [o.get("tokens_per_s") or o.get("images_per_s") for o in rows if o.get("step", 0) > 10 and "grad_norm" in o]
print(round(statistics.median([x for x in r if x]), 1))
PY
}

run() { # NAME CONFIG LAYOUT ROUND: prints the run's rate
  local name=$1 config=$2 layout=$3 round=$4 run
  run="$name-$(basename "$config" .yaml)-$layout-$round"
  local args=(--config "$config" --set run.dir="$WORK" --set run.name="$run"
              --set train.log_every=10 --set train.eval_every=0 --set checkpoint.every=0
              --debug-stop-at-step "$STEPS")   # stops as on SIGTERM: no final evaluation
  if [ "$name" = lm ] && [ -n "${LM_DATA:-}" ]; then args+=(--set data.dir="$LM_DATA"); fi
  case "$layout" in
    1x2) "$BIN" "${args[@]}" --set train.threads=2 --set train.thread_split=samples >/dev/null ;;
    1x2ops) "$BIN" "${args[@]}" --set train.threads=2 --set train.thread_split=operations >/dev/null ;;
    2x1) mpirun --allow-run-as-root -n 2 --bind-to none -x OPENBLAS_NUM_THREADS=1 \
           "$BIN" "${args[@]}" --set train.threads=1 >/dev/null ;;
  esac
  rate "$WORK/$run/metrics.jsonl"
}

echo "model        attention  round  1x2      1x2ops   2x1      1x2/2x1  1x2ops/2x1"
RATIOS="$WORK/ratios"
for round in $(seq 1 "$ROUNDS"); do
  for spec in lm:configs/lm-debug.yaml:fourier \
              vit:configs/vit-fashion-debug.yaml:fourier vit:configs/vit-fashion-debug-softmax.yaml:softmax; do
    IFS=: read -r model config attention <<< "$spec"
    # The order of the layouts rotates with the round.
    order=(1x2 1x2ops 2x1)
    declare -A r=()
    for k in 0 1 2; do
      layout=${order[$(( (k + round) % 3 ))]}
      r[$layout]=$(run "$model" "$config" "$layout" "$round")
    done
    a=$(echo "${r[1x2]} / ${r[2x1]}" | bc -l); b=$(echo "${r[1x2ops]} / ${r[2x1]}" | bc -l)
    printf '%-12s %-10s %-6s %-8s %-8s %-8s %-8.3f %.3f\n' "$model" "$attention" "$round" \
      "${r[1x2]}" "${r[1x2ops]}" "${r[2x1]}" "$a" "$b"
    echo "$model-$attention $a $b" >> "$RATIOS"
    unset r
  done
done
python3 - "$RATIOS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, a, b = line.split()
    rows.setdefault(name, []).append((float(a), float(b)))
for name, v in rows.items():
    print(f"median over {len(v)} rounds, {name}: 1x2 (samples) / 2x1 {statistics.median(x for x, _ in v):.3f}, "
          f"1x2 (operations) / 2x1 {statistics.median(y for _, y in v):.3f}")
PY
