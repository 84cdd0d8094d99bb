#!/usr/bin/env bash
# Installs what swift-ff-train needs on a Debian/Ubuntu machine (idempotent): OpenBLAS, Open MPI,
# zlib, and the Fashion-MNIST package. FF_BLAS=scipy-openblas also installs the current OpenBLAS
# from PyPI (scipy-openblas32) for `FF_BLAS=scipy-openblas swift build`.
# The Swift toolchain (6.0 or newer) must already be on PATH: it is not an apt package.
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: no 'swift' on PATH. Install a Swift 6 toolchain (https://swift.org/install) first." >&2
  exit 1
fi

need=()
# zlib reads gzipped IDX images; dataset-fashion-mnist is the default image dataset (and the
# image tests' data).
for pkg in libopenblas-dev libopenmpi-dev openmpi-bin pkg-config python3 zlib1g-dev dataset-fashion-mnist; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
pkg-config --exists openblas || { echo "setup: pkg-config cannot find openblas" >&2; exit 1; }
pkg-config --exists ompi-c || { echo "setup: pkg-config cannot find ompi-c (Open MPI)" >&2; exit 1; }
pkg-config --exists zlib || { echo "setup: pkg-config cannot find zlib" >&2; exit 1; }

if [ "${FF_BLAS:-}" = scipy-openblas ]; then
  python3 -c "import scipy_openblas32" 2>/dev/null || python3 -m pip install -q scipy-openblas32
  lib=$(python3 -c "import scipy_openblas32; print(scipy_openblas32.get_lib_dir())")
  echo "setup: scipy-openblas32 in $lib; build with FF_BLAS=scipy-openblas swift build -c release" \
       "--scratch-path .build-scipy"
elif [ -n "${FF_BLAS:-}" ]; then
  echo "setup: FF_BLAS=$FF_BLAS is not a provider (scipy-openblas, or unset for Debian's OpenBLAS)" >&2
  exit 1
fi
