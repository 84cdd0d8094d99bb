#!/usr/bin/env bash
# The main job: on a fresh machine, install, build, fetch the Wikipedia corpus, and train the
# lm-debug FourierFormer and its softmax twin; print their valid/test perplexity next to the
# unigram baseline. About 10-15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
swift build -c release
BIN=.build/release/swift-ff-train
bash launch/fetch-data.sh data
if [ ! -f data/wiki/vocab.json ]; then
  $BIN prepare --input data/wiki/raw --output data/wiki --min-count 3
fi
for cfg in lm-debug lm-debug-softmax; do
  echo "=== training configs/$cfg.yaml"
  $BIN --config configs/$cfg.yaml "$@"
done
python3 - <<'PY'
import json
rows = []
for name in ["lm-debug", "lm-debug-softmax"]:
    s = json.load(open(f"runs/{name}/summary.json"))
    steps = [json.loads(l) for l in open(f"runs/{name}/metrics.jsonl") if '"attn_row_sum"' in l]
    health = "/".join(f"{x:.2f}" for x in steps[-1]["attn_row_sum"]) if s["attention"] == "fourier" else "-"
    rows.append((s["attention"], s["valid"]["perplexity"], s["test"]["perplexity"],
                 s["valid"]["unigram_perplexity"], s["test"]["unigram_perplexity"], s["tokens_per_s"], s["wall_s"], health))
print()
print("Wikipedia (gensim test articles, WikiText layout), word level, lm-debug: 4 layers, d_model 128")
print("row-sum: the mean sum of each attention row per layer at the last step (1 = healthy, 0 = collapsed)")
print(f"{'attention':<10} {'valid ppl':>10} {'test ppl':>10} {'unigram valid':>14} {'unigram test':>13} {'tokens/s':>9} {'wall':>7}  row-sum")
for a, v, t, uv, ut, tps, w, h in rows:
    print(f"{a:<10} {v:>10.2f} {t:>10.2f} {uv:>14.2f} {ut:>13.2f} {tps:>9.0f} {w/60:>6.1f}m  {h}")
PY
