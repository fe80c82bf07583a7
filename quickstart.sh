#!/usr/bin/env bash
# One command from a fresh Debian machine: installs what is missing, builds
# srmae, packs Fashion-MNIST into shards, pretrains a small SRMAE on CPU,
# fine-tunes it, evaluates it at full and at very low resolution, and writes
# reconstructions and plots. About 7 minutes on 2 cores after the build.
#
# The whole training split (60,000) is used for pretraining (1 epoch) and
# fine-tuning (2 epochs); QUICK_TRAIN=N uses its first N images instead. The
# test split (10,000) is used for evaluation.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
cargo build --release --locked --bin srmae
SRMAE=target/release/srmae
FM=/usr/share/datasets/fashion-mnist
N=${QUICK_TRAIN:-60000}
mkdir -p data runs
for split in train test; do
  [ -f "data/fmnist-$split/manifest.json" ] || $SRMAE pack "$FM" "data/fmnist-$split" --split "$split"
  $SRMAE verify "data/fmnist-$split"
done
TRAIN=data/fmnist-train
if [ "$N" -lt 60000 ]; then
  $SRMAE pack "$FM" data/fmnist-quick --split train --limit "$N" --force
  TRAIN=data/fmnist-quick
fi
start=$(date +%s)
rm -rf runs/quick-srmae runs/quick-srmae-ft
$SRMAE pretrain --out runs/quick-srmae --data "$TRAIN" \
  --set optim.epochs=1 --set optim.warmup_epochs=0.2
$SRMAE finetune --init runs/quick-srmae/checkpoint.safetensors --out runs/quick-srmae-ft \
  --data "$TRAIN" --set optim.epochs=2 --set optim.warmup_epochs=0.2
$SRMAE eval --checkpoint runs/quick-srmae-ft/checkpoint.safetensors --test-res 28,14,10,7
echo
echo "Done in $(( $(date +%s) - start )) s of training and evaluation."
echo "  pretraining run:      runs/quick-srmae (metrics.jsonl, plots/, reconstructions/, checkpoint.safetensors)"
echo "  fine-tuning run:      runs/quick-srmae-ft (metrics.jsonl, plots/, checkpoint.safetensors)"
echo "  low-resolution table: runs/quick-srmae-ft/lowres.md, plot: runs/quick-srmae-ft/lowres.png"
