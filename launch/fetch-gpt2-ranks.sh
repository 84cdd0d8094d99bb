#!/usr/bin/env bash
# Fetch the GPT-2 byte-level BPE ranks for `prepare --tokenizer gpt2`, with pip only.
#
#   launch/fetch-gpt2-ranks.sh [DATA_DIR]    (default: data, relative to the repository root)
#
# Produces DATA_DIR/gpt2/gpt2.tiktoken: the first 50,256 lines of p50k_base.tiktoken (base64
# token, space, rank), which are GPT-2's ranks exactly. The file ships inside the PyPI wheel
# litellm==1.110.2 (tokenizer caches are stored there under their cache key); nothing else of the
# wheel is kept. Idempotent: an existing file is left alone. The file must not be committed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-data}"
case "$DATA_DIR" in
  /*) ;;
  *) DATA_DIR="$ROOT/$DATA_DIR" ;;
esac
PYTHON="${PYTHON:-python3}"
OUT="$DATA_DIR/gpt2/gpt2.tiktoken"
MEMBER="litellm/litellm_core_utils/tokenizers/ec7223a39ce59f226a68acc30dc1af2788490e15"

if [[ -s "$OUT" ]]; then
  echo "fetch-gpt2-ranks: $OUT already present, skipping"
  exit 0
fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ff-gpt2.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
echo "fetch-gpt2-ranks: downloading litellm==1.110.2 wheel for its p50k_base ranks file"
if ! "$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$TMP" litellm==1.110.2 >"$TMP/pip.log" 2>&1; then
  cat "$TMP/pip.log" >&2
  echo "fetch-gpt2-ranks: pip download litellm==1.110.2 failed" >&2
  exit 1
fi
wheel=("$TMP"/litellm-1.110.2-*.whl)
[[ -f "${wheel[0]}" ]] || { echo "fetch-gpt2-ranks: litellm wheel not found in $TMP" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
"$PYTHON" - "${wheel[0]}" "$MEMBER" "$OUT" <<'PY'
import base64, os, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    lines = z.read(member).decode("ascii").splitlines()
keep = []
for line in lines[:50256]:
    token, rank = line.split(" ")
    base64.b64decode(token)  # a corrupt line fails here, not later in the tokenizer
    keep.append(line)
ranks = [int(l.split(" ")[1]) for l in keep]
if ranks != list(range(50256)):
    sys.exit(f"{member}: the first 50,256 ranks are not 0..50255")
tmp = out + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(keep) + "\n")
os.replace(tmp, out)
print(f"fetch-gpt2-ranks: wrote {out} ({len(keep)} ranks)")
PY
