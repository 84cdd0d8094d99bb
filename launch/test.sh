#!/usr/bin/env bash
# The test command: installs what it needs, builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
# The export test reads our safetensors with Hugging Face's own reader.
python3 -c "import safetensors.numpy" 2>/dev/null || pip install -q numpy safetensors
swift build --build-tests
swift test --skip-build 2>&1 | tee /tmp/swift-ff-train-test.log
