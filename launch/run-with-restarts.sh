#!/usr/bin/env bash
# Runs the trainer under mpirun and, when the job fails (a rank died, the watchdog fired, a host
# went away), relaunches it with --resume auto from the newest verified checkpoint, up to
# --max-restarts times (like torchrun --max-restarts):
#
#   launch/run-with-restarts.sh [-n RANKS] [--max-restarts K] [--hostfile FILE] [--probe CMD]
#                               [--log-dir DIR] [--bin PATH] -- TRAINER ARGS...
#
# Every restart is logged (to stderr and DIR/restarts.log) with the attempt, the job's exit status
# and its cause: the last line of the attempt's output that names an error, a watchdog or a rank
# that mpirun saw die. Each attempt's output is kept as DIR/attempt-N.log.
# Fewer ranks: with --hostfile, each host is probed before a restart (CMD with {} replaced by the
# host; default: ssh -o BatchMode=yes -o ConnectTimeout=5 {} true; localhost is never probed) and
# the job restarts on the live hosts, with at most their slots. The trainer refuses a rank count
# that does not divide train.batch_size / train.grad_accum; the launcher then tries one rank fewer
# (not counted as a restart), so the count it settles on is the largest that divides the batch.
# A restart always resumes; a run that finished exits 0 at once ("run ... is complete").
# An attempt that fails before training starts (a bad config, missing data) is not restarted:
# it would fail the same way again.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RANKS=2; MAX_RESTARTS=3; HOSTFILE=""; PROBE='ssh -o BatchMode=yes -o ConnectTimeout=5 {} true'
LOG_DIR=""; BIN=${FF_BIN:-$ROOT/.build/release/swift-ff-train}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) RANKS=$2; shift 2 ;;
    --max-restarts) MAX_RESTARTS=$2; shift 2 ;;
    --hostfile) HOSTFILE=$2; shift 2 ;;
    --probe) PROBE=$2; shift 2 ;;
    --log-dir) LOG_DIR=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "run-with-restarts: unknown option $1 (trainer arguments go after --)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "run-with-restarts: no trainer arguments (after --)" >&2; exit 2; }
LOG_DIR=${LOG_DIR:-$(mktemp -d)}; mkdir -p "$LOG_DIR"

# The trainer's arguments without any --resume (a restart always resumes with auto).
first=("$@"); rest=()
while [ $# -gt 0 ]; do
  case "$1" in --resume) shift 2 ;; --resume=*) shift ;; *) rest+=("$1"); shift ;; esac
done

log() { echo "run-with-restarts: $*" | tee -a "$LOG_DIR/restarts.log" >&2; }

# Slots on the hosts that answer the probe (the whole hostfile's when none is given).
live_hostfile() {
  local out="$LOG_DIR/hostfile.live"; : > "$out"
  while read -r host extra; do
    case "$host" in ''|\#*) continue ;; esac
    if [ "$host" = localhost ] || bash -c "${PROBE//\{\}/$host}" >/dev/null 2>&1; then
      echo "$host $extra" >> "$out"
    else
      log "host $host does not answer; leaving it out"
    fi
  done < "$HOSTFILE"
  echo "$out"
}

slots_of() { awk '{ s = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) s = substr($i, 7); n += s } END { print n + 0 }' "$1"; }

attempt=0; restarts=0; n=$RANKS
while true; do
  hostargs=()
  if [ -n "$HOSTFILE" ]; then
    hf=$(live_hostfile); slots=$(slots_of "$hf")
    [ "$slots" -lt "$n" ] && { log "only $slots slot(s) left on live hosts: $n -> $slots ranks"; n=$slots; }
    [ "$n" -ge 1 ] || { log "no live host left"; exit 1; }
    hostargs=(--hostfile "$hf")
  fi
  if [ $attempt -eq 0 ]; then args=("${first[@]}"); else args=("${rest[@]}" --resume auto); fi
  out="$LOG_DIR/attempt-$attempt.log"
  mpirun -n "$n" --oversubscribe --bind-to none "${hostargs[@]}" "$BIN" "${args[@]}" 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] && { log "finished after $restarts restart(s) on $n rank(s)"; exit 0; }
  if grep -q "must be divisible by ranks x grad_accum" "$out" && [ "$n" -gt 1 ]; then
    log "$n ranks do not divide the global batch: trying $((n - 1))"
    n=$((n - 1)); attempt=$((attempt + 1)); continue
  fi
  cause=$(grep -E "error:|watchdog:|exited on signal|noticed that process|Killed" "$out" | tail -1)
  if ! grep -q "^swift-ff-train: " "$out"; then
    log "attempt $attempt failed before training started (exit status $status: ${cause:-no message}); not restarting"
    exit "$status"
  fi
  if [ "$restarts" -ge "$MAX_RESTARTS" ]; then
    log "attempt $attempt failed (exit status $status: ${cause:-no message}); no restarts left ($MAX_RESTARTS)"
    exit "$status"
  fi
  restarts=$((restarts + 1)); attempt=$((attempt + 1))
  log "restart $restarts of $MAX_RESTARTS after exit status $status (cause: ${cause:-no message}); resuming with --resume auto"
done
