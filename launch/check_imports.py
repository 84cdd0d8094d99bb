#!/usr/bin/env python3
"""Every module a target's sources import is declared as that target's dependency in
Package.swift (system modules aside), and no target imports itself.
    python3 launch/check_imports.py      # prints each offence; exits 1 if there is any
"""
import json
import pathlib
import re
import subprocess
import sys

SYSTEM = {"Foundation", "Dispatch", "Synchronization", "XCTest", "Glibc", "Darwin", "Testing", "PackageDescription", "_Concurrency"}
PRODUCTS = {"ArgumentParser": "ArgumentParser", "Yams": "Yams"}

pkg = json.loads(subprocess.run(["swift", "package", "dump-package"], capture_output=True, text=True,
                                check=True).stdout)
bad = 0
for t in pkg["targets"]:
    if t["type"] == "system":
        continue
    name = t["name"]
    declared = set()
    for d in t.get("dependencies", []):
        for kind in ("byName", "target", "product"):
            if kind in d:
                declared.add(d[kind][0])
    default = "Tests" if t["type"] == "test" else "Sources"
    root = pathlib.Path(t.get("path") or f"{default}/{name}")
    for f in sorted(root.rglob("*.swift")):
        if any(part in (t.get("exclude") or []) for part in f.relative_to(root).parts):
            continue
        for m in re.finditer(r"^(?:@testable\s+)?import\s+(\w+)", f.read_text(), re.M):
            mod = m.group(1)
            if mod == name:
                print(f"{f}: imports its own module {mod}")
                bad += 1
            elif mod not in SYSTEM and mod not in declared:
                print(f"{f}: imports {mod}, which target {name} does not declare in Package.swift")
                bad += 1
# Every OpenBLAS/CBLAS function the Swift sources call must also be wrapped by the shim of the
# optional provider (FF_BLAS=scipy-openblas), or that build breaks while the default one passes.
repo = pathlib.Path(__file__).resolve().parent.parent
used = set()
for f in sorted(repo.glob("Sources/**/*.swift")):
    used |= set(re.findall(r"\b((?:openblas|cblas)_[a-z_]+)\(", f.read_text()))
shim = (repo / "Sources/COpenBLAS/scipy-openblas/shim.h").read_text()
wrapped = set(re.findall(r"static inline [^(]*?\b((?:openblas|cblas)_[a-z_]+)\(", shim))
for fn in sorted(used - wrapped):
    print(f"Sources/COpenBLAS/scipy-openblas/shim.h: no wrapper for {fn}, which the sources call")
    bad += 1
print(f"{bad} undeclared imports or unwrapped BLAS functions", file=sys.stderr)
sys.exit(1 if bad else 0)

