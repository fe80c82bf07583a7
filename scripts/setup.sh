#!/usr/bin/env bash
# Installs what srmae's build and tests need on a fresh Debian machine:
# the Fashion-MNIST IDX files (the default dataset), build tools, oneMKL's
# static libraries (scripts/mkl.sh), and the font the PNG plots use.
set -euo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v nasm >/dev/null || need+=(nasm)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# The Python wheel's build and tests need python3 with venv (scripts/python.sh).
command -v python3 >/dev/null || need+=(python3)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
# oneMKL's static libraries: the binary's CPU products (feature `mkl`, on by
# default; `--no-default-features --features openblas` links Debian's
# libopenblas-pthread-dev instead, which is then needed: apt-get install libopenblas-pthread-dev).
"$(dirname "$0")/mkl.sh"
