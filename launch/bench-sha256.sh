#!/usr/bin/env bash
# SHA-256 of a 1 GB file, the checkpoint checksum: swift-crypto (what checkpoints use, through
# `swift-ff-train bench hash`) against the hand-written implementation it replaced, compiled from
# the commit that last held it. Alternates the two for 3 rounds; the file is in the page cache.
#   launch/bench-sha256.sh [FILE]     (default: a fresh 1 GB file of random bytes under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_COMMIT=f39c9d3   # Sources/FFFormats/SHA256.swift, our own SHA-256, before swift-crypto
swift build -c release >/dev/null
BIN=.build/release/swift-ff-train
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FILE=${1:-}
if [ -z "$FILE" ]; then
  FILE=$WORK/1g.bin
  head -c 1000000000 /dev/urandom > "$FILE"
fi
git show "$OLD_COMMIT:Sources/FFFormats/SHA256.swift" > "$WORK/SHA256.swift"
cat > "$WORK/main.swift" <<'SWIFT'
import Foundation
struct FormatError: Error { init(_ message: String) {} }
let path = CommandLine.arguments[1]
let bytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
var times: [Double] = []
var digest = ""
for _ in 0..<3 {
    let t0 = Date()
    digest = try SHA256.file(path)
    times.append(Date().timeIntervalSince(t0))
}
let s = times.sorted()[1]
print(String(format: "{\"implementation\":\"ours\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f,\"sha256\":\"%@\"}",
             bytes, s, Double(bytes) / s / 1e6, digest))
SWIFT
swiftc -O -o "$WORK/ours" "$WORK/SHA256.swift" "$WORK/main.swift"
cat "$FILE" > /dev/null
for round in 1 2 3; do
  echo "round $round ours  $("$WORK/ours" "$FILE")"
  echo "round $round crypto $("$BIN" bench hash "$FILE" --repeats 3)"
done
sha256sum "$FILE"
