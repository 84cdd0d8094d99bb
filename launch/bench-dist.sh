#!/usr/bin/env bash
# Data-parallel benchmark (not a test), one run: compute vs exposed communication per step,
# the gradient sync's bandwidth next to a raw MPI_Allreduce of the same bytes, and tokens/s for
# 1 and 2 ranks at 1 thread each (weak scaling: the per-rank batch is kept).
#   launch/bench-dist.sh [CONFIG] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/lm-debug.yaml}; STEPS=${2:-30}; PER_RANK=8
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
common=(--config "$CONFIG" --set train.threads=1 --set train.steps="$STEPS" --set train.log_every="$STEPS"
        --set train.eval_every=0 --set train.grad_accum=1 --set data.valid=valid.bin)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "config: $CONFIG, $STEPS steps, $PER_RANK sequences per rank per step, 1 thread per rank"
$BIN "${common[@]}" --set run.name=bench-1rank --set train.batch_size=$PER_RANK >/dev/null
mpirun -n 2 --bind-to core $BIN "${common[@]}" --set run.name=bench-2rank --set train.batch_size=$((2 * PER_RANK)) >/dev/null
mpirun -n 2 --bind-to core $BIN bench allreduce --config "$CONFIG"
python3 - "$CONFIG" <<'PY'
import json, sys, re
def last_step(run):
    recs = [json.loads(l) for l in open(f"runs/{run}/metrics.jsonl")]
    return [r for r in recs if "tokens_per_s" in r][-1]
one, two = last_step("bench-1rank"), last_step("bench-2rank")
print(f"{'ranks':>5} {'tokens/s':>10} {'step ms':>9} {'compute ms':>11} {'exposed comm ms':>16}")
for n, r in ((1, one), (2, two)):
    print(f"{n:>5} {r['tokens_per_s']:>10.0f} {1e3*r['step_s']:>9.1f} {1e3*r['compute_s']:>11.1f} {1e3*r['comm_s']:>16.1f}")
print(f"weak-scaling efficiency (2 ranks): {two['tokens_per_s'] / (2 * one['tokens_per_s']):.1%}")
PY
