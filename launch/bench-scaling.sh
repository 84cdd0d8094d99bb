#!/usr/bin/env bash
# Measurements for the scaling model (not a test): allreduce timings at several sizes over shared
# memory (2 and 4 ranks) and over TCP between two network-namespace hosts (root only), `bench
# step` of lm-debug and of the WikiText-103 models (shapes only: a synthetic 267,735-word
# vocabulary and random tokens, since speed does not depend on the text), and lm-debug trained
# with 1-4 ranks at a fixed batch per rank. Then launch/scaling_model.py fits and predicts.
#   launch/bench-scaling.sh [OUT=docs/scaling]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/scaling}; mkdir -p "$OUT"
BIN=.build/release/swift-ff-train
# Blocking MPI calls yield the core while they wait (the non-blocking waits of the trainer do):
# with more ranks than free cores a spinning rank starves the one it waits for.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
SIZES=(64 1024 16384 65536 262144 1048576 4194304)
CFG=configs/lm-debug.yaml
mpirun -n 2 --bind-to core $BIN bench allreduce --config $CFG --rounds 7 --floats "${SIZES[@]}" \
  > "$OUT/allreduce-shm-n2.jsonl"
mpirun -n 4 --oversubscribe --bind-to none $BIN bench allreduce --config $CFG --rounds 5 --floats "${SIZES[@]}" \
  > "$OUT/allreduce-shm-n4.jsonl"
if [ "$(id -u)" -eq 0 ]; then
  SWIFT_FF_TRAIN=$BIN bash launch/multihost.sh -H 2 -n 1 -- bench allreduce --config "$(realpath $CFG)" --rounds 5 \
    --floats "${SIZES[@]}" | grep '^{' > "$OUT/allreduce-tcp-n2.jsonl" || true
fi
WT=$(mktemp -d); trap 'rm -rf "$WT"' EXIT
python3 - "$WT" <<'PY'
import json, random, struct, sys
d, V = sys.argv[1], 267735
json.dump({"tokenizer": "word", "tokens": ["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)],
           "counts": [max(1, 10_000_000 // (i + 1)) for i in range(V)], "minCount": 3, "maxSize": V},
          open(f"{d}/vocab.json", "w"))
random.seed(1)
for name, n in (("train", 400_000), ("valid", 20_000), ("test", 20_000)):
    ids = [min(V - 1, int(random.paretovariate(1.0)) - 1) for _ in range(n)]
    with open(f"{d}/{name}.bin", "wb") as f:
        f.write(struct.pack("<256i", *([20240520, 2, n] + [0] * 253)))
        f.write(struct.pack(f"<{n}I", *ids))
PY
# Per-node batch: each config's own global batch (weak scaling: every node does one recipe batch);
# the step is timed at a smaller batch and scaled linearly by scaling_model.py's input below.
{
  $BIN bench step --config $CFG --set train.threads=1 --set train.batch_size=8 --steps 6
  $BIN bench step --config configs/lm-wt103-small.yaml --set data.dir="$WT" --set train.threads=1 \
    --set train.batch_size=4 --steps 3
  $BIN bench step --config configs/lm-wt103-medium.yaml --set data.dir="$WT" --set train.threads=1 \
    --set train.batch_size=2 --steps 3
} | grep '^{' > "$OUT/steps.jsonl"
common=(--config $CFG --set train.threads=1 --set train.steps=15 --set train.log_every=15 --set train.eval_every=0
        --set train.eval_batches=1 --set data.valid=valid.bin)
for n in 1 2 3 4; do
  if [ $n -eq 1 ]; then $BIN "${common[@]}" --set run.name=scale-$n --set train.batch_size=8 >/dev/null
  else mpirun -n $n --oversubscribe --bind-to none $BIN "${common[@]}" --set run.name=scale-$n \
         --set train.batch_size=$((8 * n)) >/dev/null; fi
  if [ $n -gt 1 ]; then
    mpirun -n $n --oversubscribe --bind-to none $BIN bench allreduce --config $CFG --rounds 5 > "$OUT/sync-n$n.txt"
  fi
done
python3 - "$OUT" <<'PY'
import json, re, sys
out, pts = sys.argv[1], []
for n in (1, 2, 3, 4):
    recs = [json.loads(l) for l in open(f"runs/scale-{n}/metrics.jsonl")]
    r = [x for x in recs if "tokens_per_s" in x][-1]
    sync = 0.0
    if n > 1:
        m = re.search(r"bucketed gradient sync:\s+([0-9.]+) ms", open(f"{out}/sync-n{n}.txt").read())
        sync = float(m.group(1)) / 1e3
    pts.append({"ranks": n, "step_s": r["step_s"], "compute_s": r["compute_s"], "comm_s": r["comm_s"], "sync_s": sync,
                "tokens_per_s": r["tokens_per_s"]})
json.dump({"lm-debug": pts}, open(f"{out}/measured.json", "w"), indent=1)
PY
python3 launch/scaling_model.py "$OUT" --plot docs/scaling.png
