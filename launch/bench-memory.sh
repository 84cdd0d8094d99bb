#!/usr/bin/env bash
# Peak memory of one rank's training step, ours against PyTorch's for the same model (a benchmark,
# not a test): launch/bench-memory.sh [BATCH]
# Per model: our process's VmHWM (and the trainer's own count of what it holds) after training
# steps, and PyTorch's peak RSS over its steps (bench_pytorch.py, jemalloc preloaded as in
# bench-speed.sh): the whole process, and the growth over the training region alone. Full softmax
# output on data/wiki's vocabulary; 1 thread each; BATCH sequences per rank [16].
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
BATCH=${1:-16}
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$JEMALLOC" ] || apt-get install -y -qq libjemalloc2 >/dev/null
python3 -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 pyyaml numpy
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() { # NAME CONFIG KIND
  local sets=(--set model.attention.kind="$3" --set model.output=full --set data.dir=data/wiki)
  echo "$1 $3 ours $($BIN bench step --config "$2" "${sets[@]}" --set train.threads=1 \
    --set train.batch_size="$BATCH" --steps 2 2>/dev/null | tail -1)" >> "$OUT"
  echo "$1 $3 torch $(LD_PRELOAD=$JEMALLOC python3 launch/bench_pytorch.py train --config "$2" "${sets[@]}" \
    --steps 2 --threads 1 --batch "$BATCH" 2>/dev/null)" >> "$OUT"
}
run lm-debug configs/lm-debug.yaml fourier
run lm-debug configs/lm-debug.yaml softmax
run lm-wt103-small configs/lm-wt103-small.yaml softmax
python3 - "$OUT" "$BATCH" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, kind, who, js = line.split(" ", 3)
    rows.setdefault((name, kind), {})[who] = json.loads(js)
print(f"| peak memory of one rank, batch {sys.argv[2]}, 1 thread | ours VmHWM | ours counted | "
      "PyTorch process peak | PyTorch growth in training | ours / PyTorch process |")
print("|---|---|---|---|---|---|")
for (name, kind), d in rows.items():
    o, t = d["ours"], d["torch"]
    total = t.get("peak_rss_total_mb") or float("nan")
    print(f"| {name} {kind} | {o['peak_rss_mb']:.0f} MB | {o['estimate_mb']:.0f} MB | {total:.0f} MB | "
          f"{t['peak_rss_mb']:.0f} MB | {o['peak_rss_mb'] / total:.2f} |")
PY
