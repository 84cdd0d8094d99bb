#!/usr/bin/env bash
# Speed against PyTorch, one command (a benchmark, not a test): attention forward+backward and LM
# training steps, ours vs PyTorch on the same shapes, 1 thread each; prints the ratios.
#   launch/bench-speed.sh [quick]     (quick: skip the D = 64 PyTorch attention, ~30 s and 11 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
python3 -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 pyyaml numpy
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$JEMALLOC" ] || { apt-get install -y -qq libjemalloc2 >/dev/null; }
PT() { LD_PRELOAD=$JEMALLOC python3 launch/bench_pytorch.py "$@" 2>/dev/null; }
OUT=$(mktemp)
dims="16 64"; [ "${1:-}" = quick ] && dims="16"
for D in $dims; do
  $BIN bench attention --kind both --batch 8 --heads 8 --seq 256 --dim "$D" --causal --threads 1 | grep '^{' | sed 's/^/ours /' >> "$OUT"
  for k in fourier softmax; do
    echo "torch $(PT attention --kind $k --batch 8 --heads 8 --seq 256 --dim "$D" --causal --threads 1 --repeats $([ $k = fourier ] && echo 1 || echo 3))" >> "$OUT"
  done
done
for k in fourier softmax; do
  echo "ours $($BIN bench step --config configs/lm-debug.yaml --set model.attention.kind=$k --set train.threads=1 --set train.batch_size=8 --steps 6 | tail -1)" >> "$OUT"
  echo "torch $(PT train --config configs/lm-debug.yaml --set model.attention.kind=$k --steps 6 --threads 1 --batch 8)" >> "$OUT"
done
python3 - "$OUT" <<'PY'
import json, sys
ours, torch = {}, {}
for line in open(sys.argv[1]):
    who, _, js = line.partition(" ")
    r = json.loads(js)
    key = (r.get("kind") or r.get("attention"), str(r.get("dim", "lm")))
    (ours if who == "ours" else torch)[key] = r
print(f"{'what':<22} {'ours':>12} {'pytorch':>12} {'speed-up':>9}")
for key in sorted(ours, key=lambda k: (k[1] == "lm", k[1].zfill(4), k[0])):
    o, t = ours[key], torch.get(key)
    if key[1] == "lm":
        a, b = o["tokens_per_s"], t["tokens_per_s"] if t else float("nan")
        print(f"{key[0] + ' LM tokens/s':<22} {a:>12.0f} {b:>12.0f} {a / b:>8.2f}x   MFU {o['mfu']:.0%}")
    else:
        a, b = o["seconds_fwd_bwd"], t["seconds_fwd_bwd"] if t else float("nan")
        print(f"{key[0] + f' attn D={key[1]} s':<22} {a:>12.3f} {b:>12.3f} {b / a:>8.1f}x   torch peak {t.get('peak_rss_mb', float('nan')) if t else float('nan'):.0f} MB")
PY
rm -f "$OUT"
