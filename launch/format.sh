#!/usr/bin/env bash
# Formats every Swift file with swift-format (.swift-format: 120 columns, 4 spaces) and wraps
# what it leaves over 120 columns (comments, string literals), then runs the style gates.
#   launch/format.sh            # rewrite in place
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files 'Sources/*.swift' 'Tests/*.swift' 'Package.swift')
# Wrapping first splits long literals where a member access still follows them on the line.
python3 launch/wrap_long_lines.py "${files[@]}"
swift format --in-place --configuration .swift-format --parallel "${files[@]}"
python3 launch/wrap_long_lines.py "${files[@]}"
python3 launch/check_style.py
python3 launch/check_imports.py
