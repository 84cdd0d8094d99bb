#!/usr/bin/env bash
# Fuzzing of every reader of other people's files, for a fixed time. Two fuzzers:
#
#   launch/fuzz.sh [SECONDS] [SEED]
# Mutation fuzzing (`swift-ff-train fuzz`). Seeds from Tests/FFTrainTests/HostileCorpus. A crash
# (the process dies on a signal) leaves its input as out/current-KIND.bin: it is copied into the
# corpus as KIND-crash-SHA.bin (a regression test from then on) and fuzzing restarts with the next
# seed. New error classes are reported in out/new/ (copy the useful ones into the corpus by hand).
#
#   launch/fuzz.sh libfuzzer [SECONDS] [LIBFUZZER FLAGS...]
# Coverage-guided fuzzing with libFuzzer and AddressSanitizer (Tests/Fuzz/ReadersFuzzer.swift; byte 0 of
# an input picks the reader, see there). FFFuzz and its dependencies are built instrumented into
# .build-fuzz (the normal build is untouched) and the entry point is linked against their objects
# with swiftc. The corpus grows in FUZZ_DIR (default runs/fuzz-readers) from one run to the next;
# it starts from the regression corpus (each file prefixed with its reader's selector byte) and
# HostileInput.seeds. A crash, trap, ASan report, input slower than 10 s or allocation over
# 2 GB stops the run and is kept as FUZZ_DIR/crashes/KIND-{crash,timeout,oom}-SHA1; the summary
# says how to replay it. Run it under `nice -n 19` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=Tests/FFTrainTests/HostileCorpus

if [ "${1:-}" = libfuzzer ]; then
  shift
  SECONDS_TOTAL=${1:-120}; shift || true
  SCRATCH=.build-fuzz
  DIR=${FUZZ_DIR:-runs/fuzz-readers}
  # One comma-separated -sanitize: with two flags swiftc keeps only the last one, and the objects
  # would silently get no coverage counters. Only the library targets are built (nothing links,
  # so there is no second main); the C targets stay uninstrumented.
  echo "fuzz: building FFFuzz instrumented (fuzzer, address) in $SCRATCH ..."
  mkdir -p "$SCRATCH"
  # Others edit this working tree while we build; a source changed mid-build fails the build
  # ("was modified during the build"), and building again picks the change up.
  for attempt in 1 2 3; do
    if swift build -c release --scratch-path "$SCRATCH" --target FFFuzz -Xswiftc -sanitize=fuzzer,address \
         > "$SCRATCH/fuzz-build.log" 2>&1; then break; fi
    if [ "$attempt" -eq 3 ] || ! grep -q 'modified during the build' "$SCRATCH/fuzz-build.log"; then
      tail -30 "$SCRATCH/fuzz-build.log"; exit 1
    fi
  done
  R=$(cd "$SCRATCH/release" && pwd -P)
  # The module maps and include paths FFFuzz was compiled with (C modules its interface imports),
  # read from SwiftPM's build description rather than repeated here.
  mapfile -t IMPORTS < <(python3 - "$R/description.json" <<'PY'
import json, sys
cmds = json.load(open(sys.argv[1]))["swiftCommands"]
args = next(v["otherArguments"] for k, v in cmds.items() if k.startswith("C.FFFuzz-"))
i = 0
while i < len(args):
    if args[i] == "-Xcc" and args[i + 1].startswith("-fmodule-map-file="): print(*args[i:i + 2], sep="\n"); i += 2
    elif args[i] == "-Xcc" and args[i + 1] == "-I": print(*args[i:i + 4], sep="\n"); i += 4
    else:
        if args[i].startswith("-I"): print(args[i])
        i += 1
PY
)
  OBJS=()
  for t in FFFuzz FFFormats FFModel FFData FFKernels FFCore CFastMath; do
    while IFS= read -r o; do OBJS+=("$o"); done < <(find "$R/$t.build" -name '*.o')
  done
  BIN=$R/readers-fuzzer
  # shellcheck disable=SC2046 # pkg-config prints several flags
  swiftc -O -sanitize=fuzzer,address -parse-as-library -swift-version 5 -use-ld=lld -I "$R/Modules" \
    "${IMPORTS[@]}" Tests/Fuzz/ReadersFuzzer.swift "${OBJS[@]}" $(pkg-config --libs openblas zlib) -o "$BIN"

  mkdir -p "$DIR/corpus" "$DIR/crashes"
  SEEDS=$(mktemp -d); LOG=$DIR/last-run.log
  trap 'rm -rf "$SEEDS"' EXIT
  # Selector bytes follow HostileInput.Kind.allCases.
  KINDS=(safetensors trainer_state index vocabulary token_shard idx)
  for f in "$CORPUS"/*.bin; do
    name=$(basename "$f")
    for i in "${!KINDS[@]}"; do
      if [[ $name == "${KINDS[$i]}"-* ]]; then
        { printf "\\x$(printf %02x "$i")"; cat "$f"; } > "$SEEDS/$name"
      fi
    done
  done
  FF_FUZZ_WRITE_SEEDS=$SEEDS ASAN_OPTIONS=detect_leaks=0 "$BIN" -runs=0 "$SEEDS" > /dev/null 2>&1
  before=$(find "$DIR/corpus" -type f | wc -l)
  echo "fuzz: libFuzzer for $SECONDS_TOTAL s, $(find "$SEEDS" -type f | wc -l) seeds, $before corpus inputs kept" \
       "from earlier runs, log in $LOG"
  set +e
  # -max_len 8192: the seeds are at most ~1 KB, and headers, shapes and JSON nesting all fit;
  # longer inputs only slow every execution. Leaks are not checked (also not at exit, hence
  # ASAN_OPTIONS): Foundation on Linux leaks a 4 KB buffer on every read of an empty file (Swift
  # 6.3.1, Data(contentsOf:) and FileManager.contents(atPath:)), which is not ours to fix, and a
  # leak report at exit would be kept as an empty crash input.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$BIN" -max_total_time="$SECONDS_TOTAL" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -detect_leaks=0 -dict=Tests/Fuzz/readers.dict -print_final_stats=1 \
    -artifact_prefix="$DIR/crashes/" "$@" "$DIR/corpus" "$SEEDS" > "$LOG" 2>&1
  rc=$?
  set -e
  last=$(grep -E '^#[0-9]+' "$LOG" | tail -1 || true)
  figure() { grep -E "^stat::$1:" "$LOG" | tail -1 | awk '{print $2}'; }
  echo "fuzz: last status line: $last"
  echo "fuzz: $(figure number_of_executed_units) executions, $(figure average_exec_per_sec) exec/s," \
       "peak RSS $(figure peak_rss_mb) MB, corpus $before -> $(find "$DIR/corpus" -type f | wc -l) inputs"
  found=0
  for f in "$DIR"/crashes/*; do
    [ -e "$f" ] || continue
    # libFuzzer names them crash-SHA1, timeout-SHA1, oom-SHA1; those named KIND-... are old.
    case $(basename "$f") in crash-*|timeout-*|oom-*|leak-*) ;; *) continue ;; esac
    sel=$(od -An -tu1 -N1 "$f" | tr -d ' '); kind=${KINDS[$(( ${sel:-0} % ${#KINDS[@]} ))]}
    kept="$DIR/crashes/$kind-$(basename "$f")"; mv "$f" "$kept"
    echo "fuzz: FINDING in the $kind reader: $kept (replay: $BIN $kept; drop byte 0 for the corpus)"
    found=$((found + 1))
  done
  if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then tail -30 "$LOG"; echo "fuzz: libFuzzer exited with $rc"; fi
  echo "fuzz: $found finding(s)"
  [ "$rc" -eq 0 ] && [ "$found" -eq 0 ]
  exit
fi

SECONDS_TOTAL=${1:-120}; SEED=${2:-1}
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
OUT=$(mktemp -d)
end=$(( $(date +%s) + SECONDS_TOTAL )); crashes=0
while [ "$(date +%s)" -lt "$end" ]; do
  left=$(( end - $(date +%s) ))
  if $BIN fuzz --seconds "$left" --out "$OUT" --corpus "$CORPUS" --seed "$SEED"; then break; fi
  for f in "$OUT"/current-*.bin; do
    [ -e "$f" ] || continue
    kind=$(basename "$f" .bin); kind=${kind#current-}
    sum=$(sha256sum "$f" | cut -c1-16)
    cp "$f" "$CORPUS/$kind-crash-$sum.bin"; rm -f "$f"
    echo "fuzz: CRASH in the $kind reader, input kept as $CORPUS/$kind-crash-$sum.bin"
    crashes=$((crashes + 1))
  done
  SEED=$((SEED + 1))
done
echo "fuzz: $crashes crash(es); new outcome classes in $OUT/new ($(ls "$OUT/new" | wc -l) files)"
[ "$crashes" -eq 0 ]
