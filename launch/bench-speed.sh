#!/usr/bin/env bash
# Speed against PyTorch, one command (a benchmark, not a test): attention forward+backward and LM
# training steps, ours vs PyTorch on the same shapes, 1 thread each; prints the ratios.
#   launch/bench-speed.sh [quick|blas]
# quick: attention at D = 16 and the lm-debug steps only (~4 min); the full run adds D = 64
# (PyTorch: ~11 GB and ~1 min per call), our kernel at N = 1024 and 4096 (memory linear in N),
# and the wt103-small and wt103-medium shapes (softmax: PyTorch's Fourier LM at context >= 256
# keeps B x H x N x N x D tensors for every layer, > 24 GB). Needs data/wiki (launch/demo.sh or
# launch/fetch-data.sh); both LMs use its 13k vocabulary and a full softmax output.
# Also: our Fourier kernel against a plain C kernel built here (launch/bench/fourier_compare.c),
# the core's FMA peak, and MFU against it and against sgemm for every LM row.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
python3 -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 pyyaml numpy
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$JEMALLOC" ] || { apt-get install -y -qq libjemalloc2 >/dev/null; }
PT() { LD_PRELOAD=$JEMALLOC python3 launch/bench_pytorch.py "$@" 2>/dev/null; }
QUICK=${1:-}

# ---- BLAS block: OpenBLAS kernel sets and providers (kept apart from the attention benchmarks) ----
# sgemm GFLOP/s of every kernel family this CPU supports, for Debian's OpenBLAS and, when the
# wheel scipy-openblas32 is installed, the current OpenBLAS (built into .build-scipy), and the
# softmax LM at d_model 256 (wt103-medium shape, 4 layers) per provider: MFU against the core's FMA
# peak, which a probe here measures (independent AVX FMA chains, one thread, best of short rounds).
#   launch/bench-speed.sh blas    runs this block alone
bench_blas() {
  local bins=("debian=$BIN") dir fma
  if python3 -c "import scipy_openblas32" 2>/dev/null; then
    FF_BLAS=scipy-openblas swift build -c release --scratch-path .build-scipy >/dev/null
    bins+=("scipy-openblas=.build-scipy/release/swift-ff-train")
  fi
  dir=$(mktemp -d)
  cat > "$dir/fma.c" <<'C'
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
/* Peak FMA throughput of one core: 12 independent chains hide the FMA latency; many short
   rounds, best kept, so that a busy neighbour (a time slice lost) does not lower the figure. */
#if defined(__AVX512F__)
typedef __m512 V; enum { LANES = 16 };
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define SUM(v) _mm512_reduce_add_ps(v)
#else
typedef __m256 V; enum { LANES = 8 };
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
static float SUM(V v) { float f[8]; _mm256_storeu_ps(f, v); return f[0] + f[7]; }
#endif
int main(void) {
    V a = SET1(0.999999f), b = SET1(1e-7f);
    V c0 = SET1(0), c1 = SET1(1), c2 = SET1(2), c3 = SET1(3), c4 = SET1(4), c5 = SET1(5);
    V c6 = SET1(6), c7 = SET1(7), c8 = SET1(8), c9 = SET1(9), c10 = SET1(10), c11 = SET1(11);
    const long iters = 500000L;
    double best = 0;
    for (int r = 0; r < 400; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long n = 0; n < iters; n++) {
            c0 = FMA(c0, a, b); c1 = FMA(c1, a, b); c2 = FMA(c2, a, b); c3 = FMA(c3, a, b);
            c4 = FMA(c4, a, b); c5 = FMA(c5, a, b); c6 = FMA(c6, a, b); c7 = FMA(c7, a, b);
            c8 = FMA(c8, a, b); c9 = FMA(c9, a, b); c10 = FMA(c10, a, b); c11 = FMA(c11, a, b);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        double g = 2.0 * LANES * 12 * iters / s / 1e9;
        if (g > best) best = g;
    }
    float sink = SUM(c0) + SUM(c1) + SUM(c2) + SUM(c3) + SUM(c4) + SUM(c5) + SUM(c6) + SUM(c7)
               + SUM(c8) + SUM(c9) + SUM(c10) + SUM(c11);
    printf("{\"fma_peak_gflops\":%.2f,\"lanes\":%d,\"sink\":%g}\n", best, LANES, sink);
    return 0;
}
C
  cc -O2 -march=native -o "$dir/fma" "$dir/fma.c"
  fma=$("$dir/fma" | python3 -c "import json,sys; print(json.load(sys.stdin)['fma_peak_gflops'])")
  echo "FMA peak of one core (probe in this script, AVX FMA chains): $fma GFLOP/s"
  echo
  echo "| provider | kernels | sgemm GFLOP/s, 1 thread | self-test | % of FMA peak |"
  echo "|---|---|---|---|---|"
  cat > "$dir/table.py" <<'PY'
import json, sys
kind, provider, fma = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "sgemm":
    for line in sys.stdin:
        r = json.loads(line)
        version = r["provider"].split()[1]
        print(f"| {provider} {version} | {r['kernels']} | {r['gflops']:.1f} | {r['status']} "
              f"({r['self_test_error']:.1e}) | {100 * r['gflops'] / fma:.0f} % |")
else:
    # One JSON line per round: medians, and the range of the CPU-time MFU.
    rs = [json.loads(l) for l in sys.stdin if l.startswith("{")]
    med = lambda k: sorted(r[k] for r in rs)[len(rs) // 2]
    cpu = sorted(100 * r["model_gflops_cpu"] / fma for r in rs)
    print(f"| {provider} | {rs[0]['blas_core']} | {len(rs)} | {med('tokens_per_s'):.0f} | {med('model_gflops'):.1f} | "
          f"{100 * med('model_gflops') / fma:.0f} % | {med('model_gflops_cpu'):.1f} | "
          f"{cpu[len(cpu) // 2]:.0f} % ({cpu[0]:.0f}–{cpu[-1]:.0f}) | {100 * med('mfu'):.0f} % | "
          f"{med('peak_rss_mb'):.0f} MB |")
PY
  for pb in "${bins[@]}"; do
    # Each probe runs in a child with its own OPENBLAS_CORETYPE; a user's setting stays theirs.
    "${pb#*=}" bench blas | python3 "$dir/table.py" sgemm "${pb%%=*}" "$fma"
  done
  echo
  # Wall-clock figures count the time slices a busy neighbour took; per CPU second they do not.
  # Three rounds, the providers alternating within each, so that both see the same spells of load.
  echo "| softmax LM, d_model 256, 4 layers, context 384, batch 8, 1 thread | kernels | rounds | tokens/s |" \
       "model GFLOP/s | MFU of FMA peak | model GFLOP per CPU s | MFU of FMA peak, CPU time (range) |" \
       "MFU of sgemm | peak RSS |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for round in 1 2 3; do
    for pb in "${bins[@]}"; do
      "${pb#*=}" bench step --config configs/lm-wt103-medium.yaml --set model.attention.kind=softmax \
        --set model.output=full --set data.dir=data/wiki --set model.layers=4 --set train.threads=1 \
        --set train.batch_size=8 --steps 6 2>/dev/null | tail -1 >> "$dir/steps-${pb%%=*}"
    done
  done
  for pb in "${bins[@]}"; do python3 "$dir/table.py" step "${pb%%=*}" "$fma" < "$dir/steps-${pb%%=*}"; done
  rm -rf "$dir"
}
if [ "${1:-}" = blas ]; then bench_blas; exit 0; fi
# ---- end of the BLAS block's definition (it runs again after the LM table below) ----
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
attn=(--batch 8 --heads 8 --seq 256 --causal --threads 1)

# PyTorch's Fourier attention two ways (torch.special.sinc, sin(u)/u); its faster one is used
# from here on, for attention and the LM.
for f in special sin; do
  echo "formula $(PT attention --kind fourier "${attn[@]}" --dim 16 --repeats 1 --formula $f)" >> "$OUT"
done
FORMULA=$(python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("formula ")]
print(min(rows, key=lambda r: r["seconds_fwd_bwd"])["formula"])
PY
)

dims="16 64"; [ "$QUICK" = quick ] && dims="16"
# Ours: Fourier and softmax alternate call by call for 21 rounds, and the Fourier / softmax ratio
# is taken per round: the machine's speed moves (a busy neighbour slows our FP-bound Fourier
# kernel up to ~2x and the softmax GEMMs less), and a ratio of timings taken apart moves with it.
for D in $dims; do
  $BIN bench attention --kind both "${attn[@]}" --dim "$D" --rounds 21 | grep '^{' | sed 's/^/ours /' >> "$OUT"
  echo "torch $(PT attention --kind fourier "${attn[@]}" --dim "$D" --repeats 1 --formula "$FORMULA")" >> "$OUT"
  echo "torch $(PT attention --kind softmax "${attn[@]}" --dim "$D" --repeats 3)" >> "$OUT"
done
if [ "$QUICK" != quick ]; then
  for N in 1024 4096; do
    $BIN bench attention --kind fourier --batch 8 --heads 8 --seq "$N" --causal --threads 1 --dim 16 --repeats 1 \
      | grep '^{' | sed 's/^/scale /' >> "$OUT"
  done
fi

# ---- Fourier kernel against a plain C kernel (block: Fourier kernel speed) ----
# The C kernel is built here with the same accuracy rules as ours (no -ffast-math; it prints its
# fp64 error), in two forms: sin/cos per pair and dimension, and from per-token tables. Ours and
# both C forms alternate within each of 3 rounds; the ratios are taken per round, in CPU time
# (pair-dims per CPU-second: the wall clock also counts waits for a core on a shared machine).
CMP=.build/fourier_compare
cc -O3 -march=native -fno-trapping-math -fopenmp-simd launch/bench/fourier_compare.c -lm -o "$CMP"
for round in 1 2 3; do
  for D in 16 64; do
    shape=(--batch 8 --heads 8 --seq 256 --dim "$D")
    echo "kernel $round $($BIN bench attention --kind fourier "${shape[@]}" --causal --threads 1 --repeats 3 \
      | grep '^{')" >> "$OUT"
    echo "kernel $round $("$CMP" "${shape[@]}" --repeats 3)" >> "$OUT"
    echo "kernel $round $("$CMP" "${shape[@]}" --repeats 3 --tables)" >> "$OUT"
  done
done
# ---- end of block: Fourier kernel speed ----

lm() { # NAME CONFIG KIND [overrides...]: our and PyTorch's training steps of one LM
  local name=$1 config=$2 kind=$3; shift 3
  local sets=(--set model.attention.kind="$kind" --set model.output=full --set data.dir=data/wiki "$@")
  echo "lm $name ours $($BIN bench step --config "$config" "${sets[@]}" --set train.threads=1 \
    --set train.batch_size=8 --steps 6 | tail -1)" >> "$OUT"
  echo "lm $name torch $(PT train --config "$config" "${sets[@]}" --steps 6 --threads 1 --batch 8 \
    --formula "$FORMULA")" >> "$OUT"
}
# Three rounds, ours and PyTorch back to back in each: the table gives the median of the per-round
# ratios (a run minutes after the other can land in a different speed of the machine).
for round in 1 2 3; do
  lm lm-debug configs/lm-debug.yaml fourier
  lm lm-debug configs/lm-debug.yaml softmax
  if [ "$QUICK" != quick ]; then
    lm wt103-small configs/lm-wt103-small.yaml softmax
    lm wt103-medium configs/lm-wt103-medium.yaml softmax --set model.layers=4
  fi
done

python3 - "$OUT" "$FORMULA" <<'PY'
import json, sys
lines = [l.rstrip("\n") for l in open(sys.argv[1])]
formula = sys.argv[2]
ours, torch, scale, lms, rounds = {}, {}, [], {}, {}
for line in lines:
    tag, _, rest = line.partition(" ")
    if tag == "lm":
        name, who, js = rest.split(" ", 2)
        try:
            r = json.loads(js)
        except ValueError:   # a run that failed printed no result: say so, keep the others
            print(f"no result from: lm {name} {who}", file=sys.stderr)
            continue
        lms.setdefault((name, r["attention"]), {}).setdefault(who, []).append(r)
        continue
    if tag == "kernel": continue   # the Fourier kernel block, summarised at the end
    r = json.loads(rest)
    if tag == "ours" and "ratio" in r: rounds[r["dim"]] = r
    elif tag == "ours": ours[(r["kind"], r["dim"])] = r
    elif tag == "torch": torch[(r["kind"], r["dim"])] = r
    elif tag == "scale": scale.append(r)
    elif tag == "formula": print(f"PyTorch Fourier D=16 with sinc as {r['formula']}: {r['seconds_fwd_bwd']:.3f} s")
print(f"PyTorch's faster formula, used below: {formula}\n")
print("| attention fwd+bwd, B 8, H 8, N 256, causal | ours | PyTorch | speed-up | PyTorch peak | ours workspace |")
print("|---|---|---|---|---|---|")
for (kind, D) in sorted(ours, key=lambda k: (k[1], k[0])):
    o, t = ours[(kind, D)], torch.get((kind, D))
    tt = t["seconds_fwd_bwd"] if t else float("nan")
    peak = f"{t['peak_rss_mb']:.0f} MB" if t else "-"
    print(f"| {kind}, D = {D} | {o['seconds_fwd_bwd']:.3f} s | {tt:.3f} s | {tt / o['seconds_fwd_bwd']:.1f}x "
          f"| {peak} | {o['workspace_mb']:.2f} MB |")
print()
if rounds:
    print("| ours, Fourier / softmax fwd+bwd, per alternating round | median | min | max | rounds <= 3x |")
    print("|---|---|---|---|---|")
    for D, r in sorted(rounds.items()):
        print(f"| D = {D} | {r['median']:.2f}x | {r['min']:.2f}x | {r['max']:.2f}x "
              f"| {r['rounds_at_most_3']} of {r['rounds']} |")
    print()
if scale:
    print("| our Fourier, D 16, causal | seconds | pair-dims/s | workspace | process peak |")
    print("|---|---|---|---|---|")
    base = ours.get(("fourier", 16))
    for r in ([base] if base else []) + scale:
        print(f"| N = {r['seq']} | {r['seconds_fwd_bwd']:.3f} | {r['pair_dims_per_s']:.3g} "
              f"| {r['workspace_mb']:.2f} MB | {r['peak_rss_mb']:.0f} MB |")
    print()
def med(x): return sorted(x)[len(x) // 2]
print("| LM step, batch 8, 1 thread, 3 rounds | ours tokens/s | PyTorch tokens/s | ratio (median; per round) "
      "| our MFU (median; sgemm) |")
print("|---|---|---|---|---|")
for (name, kind), d in lms.items():
    o, t = d.get("ours", []), d.get("torch", [])
    ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(o, t)]
    rs = ", ".join(f"{x:.2f}" for x in ratios)
    a = med([x["tokens_per_s"] for x in o]) if o else float("nan")
    b = med([x["tokens_per_s"] for x in t]) if t else float("nan")
    mfu = f"{med([x['mfu'] for x in o]):.0%} ({med([x['sgemm_gflops'] for x in o]):.0f} GFLOP/s)" if o else "-"
    print(f"| {name} {kind} | {a:.0f} | {b:.0f} | {med(ratios) if ratios else float('nan'):.2f}x ({rs}) | {mfu} |")
PY

# ---- Fourier kernel against the plain C kernel and the FMA peak; MFU of every LM row ----
python3 - "$OUT" <<'PY'
import json, sys
def med(x): return sorted(x)[len(x) // 2]
rounds = {}
lms = {}
for line in open(sys.argv[1]):
    tag, _, rest = line.rstrip("\n").partition(" ")
    if tag == "kernel":
        n, js = rest.split(" ", 1)
        r = json.loads(js)
        rounds.setdefault((r["dim"], n), {})[r.get("kernel", "fused")] = r
    elif tag == "lm":
        name, who, js = rest.split(" ", 2)
        try:
            r = json.loads(js)
        except ValueError:
            continue
        if who == "ours": lms.setdefault((name, r["attention"]), []).append(r)
ZEN5 = 3.3e9   # the figure a plain fused C kernel reached on a Zen 5 AVX-512 core: another machine class
print("\n| Fourier fwd+bwd, B 8, H 8, N 256, causal, 1 thread | ours pair-dims/CPU-s | C plain"
      " | C plain, tables | ours / C plain | ours / C tables"
      " | ours / 3.3e9 (Zen 5 AVX-512 figure, another machine class) | FMA probe"
      " | ours: MFU vs hardware / vs sgemm | C error vs fp64 (plain, tables) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for D in sorted({d for d, _ in rounds}):
    rs = [v for (d, _), v in sorted(rounds.items())
          if d == D and {"fused", "c-plain", "c-plain-tables"} <= v.keys()]
    if not rs: continue
    ours = [r["fused"]["pair_dims_per_cpu_s"] for r in rs]
    plain = [r["c-plain"]["pair_dims_per_cpu_s"] for r in rs]
    tables = [r["c-plain-tables"]["pair_dims_per_cpu_s"] for r in rs]
    vs_plain = [a / b for a, b in zip(ours, plain)]
    vs_tables = [a / b for a, b in zip(ours, tables)]
    probe = med([r["fused"]["fma_probe_gflops"] for r in rs])
    mfu = f"{med([r['fused']['mfu_hw'] for r in rs]):.1%} / {med([r['fused']['mfu_sgemm'] for r in rs]):.1%}"
    err = ", ".join(f"{max(r[k]['max_rel_err_vs_fp64'] for r in rs):.1g}" for k in ["c-plain", "c-plain-tables"])
    print(f"| D = {D} ({len(rs)} rounds) | {med(ours):.3g} | {med(plain):.3g} | {med(tables):.3g} "
          f"| {med(vs_plain):.2f}x | {med(vs_tables):.2f}x | {med(ours) / ZEN5:.2f} | {probe:.1f} GFLOP/s "
          f"| {mfu} | {err} |")
if lms:
    print("\n| LM step, ours, 1 thread | model GFLOP/s | sgemm GFLOP/s | FMA probe GFLOP/s | MFU vs sgemm "
          "| MFU vs hardware |")
    print("|---|---|---|---|---|---|")
    for (name, kind), rs in lms.items():
        def m(key): return med([r[key] for r in rs])
        print(f"| {name} {kind} | {m('model_gflops'):.2f} | {m('sgemm_gflops'):.1f} | {m('fma_probe_gflops'):.1f} "
              f"| {m('mfu'):.1%} | {m('mfu_hw'):.1%} |")
PY
# ---- end of block: Fourier kernel speed ----

# ---- BLAS block (defined above) ----
echo
bench_blas
