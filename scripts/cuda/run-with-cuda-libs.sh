#!/usr/bin/env bash
# run-with-cuda-libs.sh BINARY [ARGS...]
#
# Starts a Rust binary built with candle/cudarc `--features cuda` (dynamic linking,
# CUDA 13) on the GPU machine, where
#   - libcuda.so.1 comes from the NVIDIA driver (found by the system loader), and
#   - cuBLAS/cuBLASLt/cuRAND/NVRTC/cudart come from pip wheels
#     (<site-packages>/nvidia/cu13/lib, e.g. installed with torch 2.11+cu130).
# It locates that lib folder, prepends it to LD_LIBRARY_PATH and execs the binary.
# Override the search with CUDA_LIB_DIR=/path/to/nvidia/cu13/lib or PYTHON=/path/to/python.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 BINARY [ARGS...]" >&2; exit 64; }
bin="$1"; shift

need=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13)
# has_all DIRS: every needed library is in one of the colon-separated DIRS
has_all() {
  local f d ok; IFS=: read -ra ds <<< "$1"
  for f in "${need[@]}"; do
    ok=0; for d in "${ds[@]}"; do [[ -e "$d/$f" ]] && ok=1; done
    [[ $ok == 1 ]] || return 1
  done
}

libdir="${CUDA_LIB_DIR:-}"
if [[ -z "$libdir" ]]; then
  # CUDA 13 wheels keep everything in nvidia/cu13/lib; older layouts use one
  # folder per library (nvidia/cublas/lib, nvidia/cuda_runtime/lib, ...).
  for py in ${PYTHON:-} python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    d="$("$py" - "${need[@]}" <<'PY' 2>/dev/null || true
import os, sys, importlib.util
need = sys.argv[1:]
s = importlib.util.find_spec("nvidia")
roots = list(s.submodule_search_locations) if s else []
for r in roots:
    d = os.path.join(r, "cu13", "lib")
    if all(os.path.exists(os.path.join(d, f)) for f in need):
        print(d); sys.exit()
found = {}
for r in roots:
    for dirpath, _, files in os.walk(r):
        for f in need:
            if f in files and f not in found:
                found[f] = dirpath
if len(found) == len(need):
    print(":".join(dict.fromkeys(found.values())))
PY
)"
    [[ -n "$d" ]] && { libdir="$d"; break; }
  done
fi
if [[ -z "$libdir" ]]; then                      # fall back to a system toolkit
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    has_all "$d" && { libdir="$d"; break; }
  done
fi
if [[ -z "$libdir" ]] || ! has_all "$libdir"; then
  echo "error: CUDA 13 libraries (${need[*]}) not found${libdir:+ in $libdir}." >&2
  echo "       pip install 'cuda-toolkit[cudart,cublas,curand,nvrtc]==13.0.2' (or torch 2.11+cu130)," >&2
  echo "       or set CUDA_LIB_DIR=<dir containing them>." >&2
  exit 2
fi

# the driver library must come from the NVIDIA driver, never from a stub
drvdir=""
if ! { /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep -q 'libcuda\.so\.1 '; then
  found=""
  IFS=: read -ra dirs <<< "${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}" /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [[ -n "$d" && -e "$d/libcuda.so.1" ]] && { found="$d"; break; }
  done
  if [[ -n "$found" ]]; then drvdir="$found"
  else echo "warning: libcuda.so.1 is not in the loader's cache nor in LD_LIBRARY_PATH: is the NVIDIA driver (>= 580) installed?" >&2
  fi
fi

# NCCL (builds with --features nccl): torch's wheels ship it in nvidia/nccl/lib.
nccldir="${NCCL_LIB_DIR:-}"
if [[ -z "$nccldir" ]]; then
  for py in ${PYTHON:-} python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    nccldir="$("$py" -c '
import os, importlib.util
s = importlib.util.find_spec("nvidia")
for p in (list(s.submodule_search_locations) if s else []):
    d = os.path.join(p, "nccl", "lib")
    if os.path.exists(os.path.join(d, "libnccl.so.2")):
        print(d); break' 2>/dev/null || true)"
    [[ -n "$nccldir" ]] && break
  done
fi

export LD_LIBRARY_PATH="$libdir${nccldir:+:$nccldir}${drvdir:+:$drvdir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$bin" "$@"
