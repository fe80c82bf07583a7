#!/usr/bin/env bash
# The clue-factor ablation at the paper's scale: 224 px, 16x16 patches, clues of
# 8x8 / 4x4 / 2x2 pixels (factor 2 / 4 / 8) against MAE, ViT-Ti/16, on one GPU
# (docs/RESULTS.md, "Clue factor 2 / 4 / 8"). The CPU runs of the same ablation
# are at 32 px / patch 8 and 64 px / patch 16; this one checks that their
# reading holds at 224.
#
#   bench/gpu_factor_ablation.sh BIN [WORKDIR]
#     BIN      srmae built with --features cuda (docs/GPU.md)
#     WORKDIR  scratch folder (default /tmp/srmae-factor224)
#
# Data: bench/make_corpus.py from CORPUS_SRC (default: scikit-image's data
# folder, else Debian's wallpapers): TRAIN_PER_CLASS training and 25 test crops
# per photograph (seed 0), 10 held-out crops per photograph (seed 1, the
# validation split), packed raw at a longer side of 336 px.
# Model: the photos32 recipes resized to 224 / patch 16 with a ViT-Ti encoder
# (192 wide, 12 deep, 3 heads), decoder 128 x 2, SR head 64 features, BF16.
# Each variant: PRETRAIN_EPOCHS epochs of pretraining, a 30-epoch linear probe,
# evaluation at 224/112/56/32 px, and the SR head's PSNR against bicubic.
# On an H100 (ViT-Ti at ~320 images/s, docs/GPU.md) the defaults take about
# 10 minutes for the four variants.
#
# Environment: PYTHON (python3, needs Pillow), CORPUS_SRC, TRAIN_PER_CLASS (100),
#   PRETRAIN_EPOCHS (8), BATCH (128, pretraining), PRECISION (bf16), DEVICE (cuda;
#   `DEVICE=cpu PRECISION=f32 TRAIN_PER_CLASS=2 PRETRAIN_EPOCHS=1` is a smoke test),
#   VARIANTS ("mae factor2 factor4 factor8").
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(realpath "${1:?usage: bench/gpu_factor_ablation.sh BIN [WORKDIR]}")"
WORK="$(mkdir -p "${2:-/tmp/srmae-factor224}" && realpath "${2:-/tmp/srmae-factor224}")"
PY="${PYTHON:-python3}"
BATCH="${BATCH:-128}"
SRC="${CORPUS_SRC:-$("$PY" -c 'import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), "data"))' 2>/dev/null || true)}"
CORPUS="$WORK/corpus"
if [[ ! -d "$CORPUS/val" ]]; then
  "$PY" "$HERE/bench/make_corpus.py" "$CORPUS" ${SRC:+--src "$SRC"} --train-per-class "${TRAIN_PER_CLASS:-100}" --val-per-class 25 --seed 0 2> "$WORK/corpus.log"
  "$PY" "$HERE/bench/make_corpus.py" "$CORPUS-holdout" ${SRC:+--src "$SRC"} --train-per-class 0 --val-per-class 10 --seed 1 2>> "$WORK/corpus.log"
fi
DEVICE="${DEVICE:-cuda}"
if [[ $DEVICE == cpu ]]; then ln -sf "$BIN" "$WORK/srmae"; else
  # The binary through the wrapper that finds the CUDA libraries of PyTorch's wheels.
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$HERE/scripts/cuda/run-with-cuda-libs.sh" "$BIN" > "$WORK/srmae"
  chmod +x "$WORK/srmae"
fi
vit_ti=(--set model.encoder.dim=192 --set model.encoder.depth=12 --set model.encoder.heads=3)
SRMAE="$WORK/srmae" DEVICE="$DEVICE" SIZE=224 PATCH=16 TEST_RES=224,112,56,32 \
  CORPUS="$CORPUS" DATA="$WORK/photos224" PACK="--encoding raw" PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-8}" \
  EXTRA="${vit_ti[*]} --set run.precision=\"${PRECISION:-bf16}\"" \
  PRE_EXTRA="--set optim.batch_size=$BATCH --set model.decoder_dim=128 --set model.decoder_heads=4 --set model.head.features=64" \
  exec "$HERE/bench/photo_factor_ablation.sh" "$WORK/runs" ${VARIANTS:-mae factor2 factor4 factor8}
