#!/usr/bin/env bash
# The test command: installs what it needs, builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
swift build --build-tests
swift test --skip-build 2>&1 | tee /tmp/swift-ff-train-test.log
