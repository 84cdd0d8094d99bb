#!/usr/bin/env bash
# Several "hosts" on one machine, for testing what crosses a network: each host is a network
# namespace with its own hostname and address, joined by a bridge in a switch namespace on a
# private subnet that exists only inside these namespaces. mpirun starts in host 0 and reaches
# the others through an rsh agent that enters their namespace instead of ssh; ranks talk TCP
# (btl self,tcp), so the job takes the same path as on a real cluster.
#
#   launch/multihost.sh [-H HOSTS] [-n RANKS_PER_HOST] [-p PREFIX] [-P DIR] -- TRAINER_ARGS...
#   launch/multihost.sh -H 2 -n 2 -- --config configs/lm-debug.yaml
#
# -P DIR: every host but host 0 mounts an empty tmpfs of its own over DIR (in a mount namespace
# of its own), as if DIR were on each node's local disk instead of a shared file system.
#
# Needs root, `ip` (iproute2) and `unshare` (util-linux). The namespaces, the bridge and the
# hosts files are removed on exit, whatever the job's outcome; the job's exit code is returned.
# Host i is named PREFIX-hI (PREFIX defaults to ff<pid>) with address 10.251.X.(i+1), X from the
# pid; hostnames resolve through /etc/netns/<ns>/hosts, which `ip netns exec` mounts.
# Environment: SWIFT_FF_TRAIN (the trainer binary), MULTIHOST_MPIRUN_ARGS (extra mpirun flags).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=2; PER_HOST=1; PREFIX="ff$$"; PRIVATE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -H) HOSTS=$2; shift 2;;
    -n) PER_HOST=$2; shift 2;;
    -p) PREFIX=$2; shift 2;;
    -P) PRIVATE=$(realpath -m "$2"); mkdir -p "$PRIVATE"; shift 2;;
    --) shift; break;;
    *) echo "usage: $0 [-H HOSTS] [-n RANKS_PER_HOST] [-p PREFIX] [-P DIR] -- TRAINER_ARGS" >&2; exit 2;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then echo "multihost: needs root (network namespaces)" >&2; exit 77; fi
for tool in ip unshare mpirun; do
  command -v "$tool" >/dev/null || { echo "multihost: '$tool' not found" >&2; exit 77; }
done
BIN=$(realpath "${SWIFT_FF_TRAIN:-.build/release/swift-ff-train}")
[ -x "$BIN" ] || { echo "multihost: no trainer at $BIN (swift build -c release)" >&2; exit 2; }

NET="10.251.$(( $$ % 250 ))"
SWITCH="$PREFIX-sw"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/multihost.XXXXXX")
host() { echo "$PREFIX-h$1"; }

cleanup() {
  local i
  for ((i = 0; i < HOSTS; i++)); do
    ip netns pids "$(host $i)" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$(host $i)" 2>/dev/null || true
    rm -rf "/etc/netns/$(host $i)"
  done
  ip netns del "$SWITCH" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$SWITCH"
ip -n "$SWITCH" link add br0 type bridge
ip -n "$SWITCH" link set br0 up
hosts_file="$WORK/hosts"
printf '127.0.0.1 localhost\n' > "$hosts_file"
for ((i = 0; i < HOSTS; i++)); do printf '%s.%d %s\n' "$NET" $((i + 1)) "$(host $i)" >> "$hosts_file"; done
for ((i = 0; i < HOSTS; i++)); do
  ns=$(host $i)
  ip netns add "$ns"
  # The veth is created inside the host, its peer moved to the switch: no interface ever
  # appears in the machine's own namespace.
  ip -n "$ns" link add eth0 type veth peer name "p$i"
  ip -n "$ns" link set "p$i" netns "$SWITCH"
  ip -n "$SWITCH" link set "p$i" master br0 up
  ip -n "$ns" addr add "$NET.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  mkdir -p "/etc/netns/$ns"
  cp "$hosts_file" "/etc/netns/$ns/hosts"
  echo "$ns slots=$PER_HOST" >> "$WORK/hostfile"
done

# Open MPI calls the agent as: AGENT [ssh-like options] HOST COMMAND...
{
  echo '#!/usr/bin/env bash'
  printf 'private=%q\n' "$PRIVATE"
  cat <<'AGENT'
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
ns=$1; shift
if [ -n "$private" ]; then
  exec ip netns exec "$ns" unshare --uts --mount sh -c \
    "mount -t tmpfs multihost-private '$private' && hostname $ns && exec $*"
fi
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; exec $*"
AGENT
} > "$WORK/agent"
chmod +x "$WORK/agent"

set +e
ip netns exec "$(host 0)" unshare --uts sh -c 'hostname "$0"; exec "$@"' "$(host 0)" \
  mpirun --allow-run-as-root -n $((HOSTS * PER_HOST)) --hostfile "$WORK/hostfile" --oversubscribe \
  --bind-to none --mca plm_rsh_agent "$WORK/agent" --mca btl self,tcp \
  --mca btl_tcp_if_include "$NET.0/24" --mca oob_tcp_if_include "$NET.0/24" \
  -x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1 ${MULTIHOST_MPIRUN_ARGS:-} \
  "$BIN" "$@"
status=$?
set -e
exit $status
