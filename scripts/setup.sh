#!/usr/bin/env bash
# Installs what srmae's build and tests need on a fresh Debian machine:
# the Fashion-MNIST IDX files (the default dataset), build tools, OpenBLAS's
# static library, and the font the PNG plots use.
set -euo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v nasm >/dev/null || need+=(nasm)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# OpenBLAS's static library: the binary's CPU products (feature `openblas`, on by default).
[ -f /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a ] || need+=(libopenblas-pthread-dev)
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
