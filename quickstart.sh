#!/usr/bin/env bash
# One command from a fresh Debian machine: installs what is missing, builds
# srmae, packs Fashion-MNIST (train and test) into shards, and verifies them.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --release --locked --bin srmae
SRMAE=target/release/srmae
FM=/usr/share/datasets/fashion-mnist
mkdir -p data
for split in train test; do
  $SRMAE pack "$FM" "data/fmnist-$split" --split "$split" --force
  $SRMAE verify "data/fmnist-$split" --decode
done
$SRMAE inspect data/fmnist-train
echo
echo "Packed datasets: data/fmnist-train data/fmnist-test (see 'srmae inspect --help')."
