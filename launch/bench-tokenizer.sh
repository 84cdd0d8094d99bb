#!/usr/bin/env bash
# GPT-2 BPE encoding speed, ours against tiktoken, one core each, on the fetched corpora.
#
#   launch/bench-tokenizer.sh [BIN]     (default: .build/release/swift-ff-train)
#
# Needs `bash launch/fetch-data.sh data`, `bash launch/fetch-gpt2-ranks.sh data` and
# `pip install tiktoken`. Prints one line per tokenizer and the machine it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-.build/release/swift-ff-train}"
FILES=(data/wiki/raw/wiki.train.tokens data/shakespeare/raw/train.txt)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%Y-%m-%d)"
taskset -c 0 "$BIN" bench tokenizer "${FILES[@]}" --rounds 5
RAYON_NUM_THREADS=1 taskset -c 0 python3 - "${FILES[@]}" <<'PY'
import statistics, sys, time
sys.path.insert(0, "launch")
from gpt2_reference import load_encoding
enc = load_encoding("data/gpt2/gpt2.tiktoken")
texts = [open(f, "rb").read().decode("utf-8", errors="replace") for f in sys.argv[1:]]
size = sum(len(t.encode()) for t in texts)
tokens = sum(len(enc.encode_ordinary(t)) for t in texts)  # warm-up
times = []
for _ in range(5):
    t0 = time.perf_counter()
    for t in texts:
        enc.encode_ordinary(t)
    times.append(time.perf_counter() - t0)
m = statistics.median(times)
print(f"tiktoken gpt2 (encode_ordinary): {size} bytes, {tokens} tokens, median {m:.3f} s over 5 rounds, "
      f"{size / m / 1e6:.2f} MB/s")
PY
