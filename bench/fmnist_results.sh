#!/usr/bin/env bash
# SRMAE vs MAE vs no pretraining on Fashion-MNIST at CPU scale (docs/RESULTS.md).
#
#   bench/fmnist_results.sh [OUT]        (default OUT=runs/results)
#
# Environment: SEEDS ("0 1 2"), TRAIN_IMAGES (10000: the first N training
# images are used for pretraining and fine-tuning), PRETRAIN_EPOCHS (3),
# FINETUNE_EPOCHS (2), VLR (7: the fine-tune-at-low-resolution side),
# SRMAE (target/release/srmae).
# Held out: training images 55,000-59,999 are the validation split (the
# fine-tuning runs report on it); the 10,000 test images are used only by the
# final `srmae eval` calls. Nothing is tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
SRMAE=${SRMAE:-target/release/srmae}
OUT=${1:-runs/results}
SEEDS=${SEEDS:-0 1 2}
N=${TRAIN_IMAGES:-10000}
PE=${PRETRAIN_EPOCHS:-3}
FE=${FINETUNE_EPOCHS:-2}
VLR=${VLR:-7}
RES=28,14,10,7
FM=/usr/share/datasets/fashion-mnist
mkdir -p data "$OUT"
TRAIN=data/fmnist-first$N VAL=data/fmnist-holdout TEST=data/fmnist-test
[ -f $TRAIN/manifest.json ] || $SRMAE pack $FM $TRAIN --split train --limit "$N"
[ -f $VAL/manifest.json ] || $SRMAE pack $FM $VAL --split train --skip 55000
[ -f $TEST/manifest.json ] || $SRMAE pack $FM $TEST --split test
common=(--data $TRAIN --set "data.val=\"$VAL\"")
log() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s); "$@" > "$OUT/$name.log" 2>&1; echo "{\"run\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/times.jsonl"; }
for seed in $SEEDS; do
  S=$OUT/seed$seed
  mkdir -p $S
  for m in srmae mae; do
    [ -f $S/$m-pre/checkpoint.safetensors ] && continue
    log "seed $seed: pretrain $m"
    timed seed$seed-$m-pre $SRMAE pretrain --out $S/$m-pre --method $m "${common[@]}" \
      --set optim.epochs=$PE --set run.seed=$seed
  done
  for arm in srmae mae scratch; do
    if [ $arm = scratch ]; then init=(--scratch); else init=(--init $S/$arm-pre/checkpoint.safetensors); fi
    for mode in full vlr; do
      d=$S/$arm-ft-$mode
      [ -f $d/eval.json ] && continue
      extra=(); evalres=(--test-res $RES)
      if [ $mode = vlr ]; then extra=(--set data.low_res=$VLR); evalres=(); fi
      log "seed $seed: finetune $arm ($mode)"
      rm -rf $d
      timed seed$seed-$arm-ft-$mode $SRMAE finetune "${init[@]}" --out $d "${common[@]}" \
        --set optim.epochs=$FE --set run.seed=$seed "${extra[@]}"
      timed seed$seed-$arm-ft-$mode-eval $SRMAE eval --checkpoint $d/checkpoint.safetensors --data $TEST "${evalres[@]}"
    done
    if [ $arm != scratch ] && [ ! -f $S/$arm-lp/eval.json ]; then
      log "seed $seed: linprobe $arm"
      rm -rf $S/$arm-lp
      timed seed$seed-$arm-lp $SRMAE linprobe --init $S/$arm-pre/checkpoint.safetensors --out $S/$arm-lp "${common[@]}" --set run.seed=$seed
      timed seed$seed-$arm-lp-eval $SRMAE eval --checkpoint $S/$arm-lp/checkpoint.safetensors --data $TEST --test-res $RES
    fi
  done
  if [ ! -f $S/srmae-pre/psnr/sr_quality.json ]; then
    log "seed $seed: SR quality"
    $SRMAE reconstruct --checkpoint $S/srmae-pre/checkpoint.safetensors --data $VAL --psnr 5000 --seed $seed --out $S/srmae-pre/psnr > $OUT/seed$seed-psnr.log 2>&1
  fi
  $SRMAE plot --out $S/lowres.png $S/srmae-ft-full/eval.json=SRMAE $S/mae-ft-full/eval.json=MAE $S/scratch-ft-full/eval.json=scratch
done
python3 bench/summarize_results.py "$OUT"
