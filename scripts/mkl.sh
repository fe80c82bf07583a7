#!/usr/bin/env bash
# Installs Intel oneMKL's static libraries (LP64 interface, sequential
# threading layer, core), the `srmae` binary's CPU matrix products (feature
# `mkl`, on by default; model/build.rs links them), from the `mkl-static`
# wheel on PyPI, into the folder model/build.rs reads by default:
#   ${SRMAE_MKL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/srmae/mkl-$VERSION}
# Only the three libraries the binary links and the licence are kept
# (~650 MB; the wheel is 250 MB). Idempotent: does nothing when they are there.
# oneMKL is under the Intel Simplified Software License (LICENSE.txt, kept
# beside the libraries); binaries linked with it carry that licence's terms.
#
#   scripts/mkl.sh                         # install (scripts/setup.sh calls it)
#   SRMAE_MKL_DIR=/opt/mkl scripts/mkl.sh  # somewhere else (then build with the same variable)
set -euo pipefail
VERSION=2026.2.0
LIBS=(libmkl_intel_lp64.a libmkl_sequential.a libmkl_core.a)
dir=${SRMAE_MKL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/srmae/mkl-$VERSION}
have=1
for lib in "${LIBS[@]}"; do [ -f "$dir/$lib" ] || have=0; done
[ "$have" = 1 ] && exit 0
echo "mkl: downloading mkl-static==$VERSION from PyPI into $dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "mkl-static==$VERSION"
wheel=$(ls "$tmp"/mkl_static-*.whl)
members=()
for lib in "${LIBS[@]}"; do members+=("mkl_static-$VERSION.data/data/lib/$lib"); done
python3 - "$wheel" "$tmp/x" "${members[@]}" "mkl_static-$VERSION.dist-info/LICENSE.txt" <<'PY'
import sys, zipfile
wheel, dest, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        z.extract(name, dest)
PY
mkdir -p "$dir"
for lib in "${LIBS[@]}"; do mv "$tmp/x/mkl_static-$VERSION.data/data/lib/$lib" "$dir/$lib.part"; done
mv "$tmp/x/mkl_static-$VERSION.dist-info/LICENSE.txt" "$dir/LICENSE.txt"
# Renamed last, so an interrupted install is never taken for a complete one.
for lib in "${LIBS[@]}"; do mv "$dir/$lib.part" "$dir/$lib"; done
echo "mkl: installed ${LIBS[*]} in $dir"
