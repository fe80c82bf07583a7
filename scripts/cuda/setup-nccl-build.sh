#!/usr/bin/env bash
# setup-nccl-build.sh [PREFIX] — adds NCCL to the CUDA build prefix made by
# setup-cuda-build.sh, so that `cargo build --release --features nccl` links
# (cudarc links libnccl dynamically). Downloads NVIDIA's nvidia-nccl-cu13 wheel
# (~300 MB) and puts libnccl.so(.2) and nccl.h into PREFIX/cuda.
# At run time the GPU machine's libnccl.so.2 is used (run-with-cuda-libs.sh
# finds the one torch's wheels ship).
set -euo pipefail
PREFIX="${1:-${CUDA_BUILD_PREFIX:-$HOME/.cache/cuda-build}}"
PYTHON="${PYTHON:-python3}"
[[ -d "$PREFIX/cuda/lib" ]] || { echo "run setup-cuda-build.sh $PREFIX first" >&2; exit 1; }
if [[ -e "$PREFIX/cuda/lib/libnccl.so" ]]; then echo "NCCL already in $PREFIX/cuda" >&2; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download --quiet --no-deps -d "$tmp" "nvidia-nccl-cu13${NCCL_VERSION:+==$NCCL_VERSION}" ${PIP_EXTRA_ARGS:-}
"$PYTHON" -m zipfile -e "$tmp"/nvidia_nccl_cu13-*.whl "$tmp/x"
cp "$tmp/x/nvidia/nccl/lib/libnccl.so.2" "$PREFIX/cuda/lib/"
ln -sf libnccl.so.2 "$PREFIX/cuda/lib/libnccl.so"
cp "$tmp/x/nvidia/nccl/include/"*.h "$PREFIX/cuda/include/" 2>/dev/null || true
echo "NCCL $(ls "$tmp"/nvidia_nccl_cu13-*.whl | sed 's/.*cu13-\([0-9.]*\)-.*/\1/') installed in $PREFIX/cuda/lib" >&2
