#!/usr/bin/env bash
# Data-parallel training on this machine:
#   launch/mpirun-local.sh [-n RANKS] [-t THREADS_PER_RANK] [-b core|socket|none] [-H HOSTFILE] -- TRAINER_ARGS...
# e.g. launch/mpirun-local.sh -n 8 -t 1 -- --config configs/lm-debug.yaml
# Each rank gets THREADS_PER_RANK cores (train.threads is set to match) and is bound to them
# (-b core, the default); ranks x threads above the core count turns on oversubscription (and
# binding off). As root, the flags Open MPI requires are added. With -H, ranks go to the hosts of
# the hostfile (see launch/hostfile.example) and traffic uses TCP.
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=2; THREADS=1; BIND=core; HOSTFILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) RANKS=$2; shift 2;;
    -t) THREADS=$2; shift 2;;
    -b) BIND=$2; shift 2;;
    -H) HOSTFILE=$2; shift 2;;
    --) shift; break;;
    *) echo "usage: $0 [-n RANKS] [-t THREADS] [-b core|socket|none] [-H HOSTFILE] -- TRAINER_ARGS" >&2; exit 2;;
  esac
done
BIN=${SWIFT_FF_TRAIN:-.build/release/swift-ff-train}
[ -x "$BIN" ] || swift build -c release
args=(-n "$RANKS")
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
if [ -n "$HOSTFILE" ]; then
  args+=(--hostfile "$HOSTFILE" --mca btl self,tcp)
elif [ $((RANKS * THREADS)) -gt "$(nproc)" ]; then
  args+=(--oversubscribe --bind-to none)
  BIND=none
fi
case "$BIND" in
  core) args+=(--map-by "slot:PE=$THREADS" --bind-to core);;
  socket) args+=(--map-by socket --bind-to socket);;
  none) args+=(--bind-to none);;
esac
# Each rank's BLAS and kernels use THREADS threads; OpenMP/OpenBLAS must not add their own.
exec mpirun "${args[@]}" -x OPENBLAS_NUM_THREADS="$THREADS" -x OMP_NUM_THREADS=1 \
  "$BIN" "$@" --set train.threads="$THREADS"
