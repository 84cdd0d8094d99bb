#!/usr/bin/env python3
"""Style gate for Sources/: no line over 120 columns, no function body over 80 lines.

A function may run longer only when the line above its declaration (or its doc comment) carries
`style: long-kernel` with the reason. Prints each offence; exits 1 if there is any.
    python3 launch/check_style.py [--max-line 120] [--max-function 80] [PATH...]
"""
import argparse
import pathlib
import re
import sys

DECL = re.compile(r"^\s*(?:@[\w()]+\s+)*(?:(?:public|private|fileprivate|internal|static|override|"
                  r"mutating|final|convenience|required|nonisolated)\s+)*(?:func\s+\w+|init\??|"
                  r"subscript)\s*[(<]")


def strip_strings(line):
    """Drops string literals and // comments so their braces do not count."""
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    return line.split("//", 1)[0]


def functions(lines):
    """Yields (first line index, body length in lines) of each declaration with a body."""
    for i, line in enumerate(lines):
        if not DECL.match(line):
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = strip_strings(lines[j])
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                yield i, j - i + 1
                break
            if not opened and j > i + 12:
                break  # a protocol requirement: no body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-line", type=int, default=120)
    ap.add_argument("--max-function", type=int, default=80)
    ap.add_argument("paths", nargs="*", default=["Sources"])
    args = ap.parse_args()
    bad = 0
    files = []
    for p in args.paths:
        path = pathlib.Path(p)
        files += sorted(path.rglob("*.swift")) if path.is_dir() else [path]
    for f in files:
        lines = f.read_text().split("\n")
        for i, line in enumerate(lines):
            if len(line) > args.max_line:
                print(f"{f}:{i + 1}: line of {len(line)} columns (max {args.max_line})")
                bad += 1
        for i, n in functions(lines):
            if n <= args.max_function:
                continue
            above = "\n".join(lines[max(0, i - 6):i])
            if "style: long-kernel" in above:
                continue
            print(f"{f}:{i + 1}: function of {n} lines (max {args.max_function}): {lines[i].strip()[:70]}")
            bad += 1
    print(f"{bad} offences in {len(files)} files", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
