#!/usr/bin/env bash
# SRMAE vs MAE vs no pretraining at CPU scale (docs/RESULTS.md), on one task:
#
#   TASK=fmnist   bench/mim_results.sh [OUT]   Fashion-MNIST 28x28 grey (default OUT=runs/results)
#   TASK=photos32 bench/mim_results.sh [OUT]   the photo corpus at 32x32 RGB (default OUT=runs/results-photos)
#
# (bench/fmnist_results.sh and bench/photo_results.sh set TASK.)
# Environment: SEEDS ("0 1 2"), PRETRAIN_EPOCHS, FINETUNE_EPOCHS,
# PRETRAIN_WARMUP / FINETUNE_WARMUP (warm-up epochs; the recipes' when unset),
# VLR (the fine-tune-at-low-resolution side), MODES ("full vlr": which
# fine-tunings), LINPROBE (1; 0 skips the linear probes), SRMAE
# (target/release/srmae), ARMS ("srmae mae scratch"; also
# srmae-pe: clues upsampled bicubic in place, embedded by the encoder's patch
# embedding, with the low-resolution type embedding; srmae-pe-notype: without it;
# srmae-pe-nearest: nearest upsampling, with it; simmim: SimMIM with its mask
# ratio 0.6 in blocks of one model patch, same recipe otherwise). Pretraining checkpoints already in
# OUT/seedN/{srmae,mae}-pre are reused (a longer fine-tuning of the same
# encoders: link them into a new OUT and set FINETUNE_EPOCHS).
#
# fmnist: TRAIN_IMAGES (55000: the first N training images are used for
#   pretraining and fine-tuning), 1 pretraining / 2 fine-tuning epochs with
#   0.2 warm-up epochs each, VLR 7, test resolutions 28,14,10,7. (Before the
#   fine-tuning recipe was fixed: TRAIN_IMAGES=10000 PRETRAIN_EPOCHS=3, the
#   recipes' warm-ups.) Held out: training images 55,000-59,999 are the
#   validation split (the fine-tuning runs report on it); the 10,000 test images
#   are used only by the final `srmae eval` calls.
# photos32: bench/make_corpus.py from Debian's wallpapers (81 classes, each the
#   crops of one photograph): 60 training and 25 test crops per class (seed 0),
#   10 held-out crops per class from another seed (the validation split), packed
#   raw at a longer side of 48 px; 6 pretraining / 10 fine-tuning epochs (3 with the
#   recipe before its fix, then 6), VLR 8,
#   test resolutions 32,16,12,8. CORPUS (data/photo-corpus) is built when absent.
# Nothing is tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
SRMAE=${SRMAE:-target/release/srmae}
TASK=${TASK:-fmnist}
SEEDS=${SEEDS:-0 1 2}
mkdir -p data
case $TASK in
  fmnist)
    OUT=${1:-runs/results}
    N=${TRAIN_IMAGES:-55000}
    PE=${PRETRAIN_EPOCHS:-1} FE=${FINETUNE_EPOCHS:-2} VLR=${VLR:-7} RES=28,14,10,7
    PRETRAIN_WARMUP=${PRETRAIN_WARMUP:-0.2} FINETUNE_WARMUP=${FINETUNE_WARMUP:-0.2}
    FM=/usr/share/datasets/fashion-mnist
    TRAIN=data/fmnist-first$N VAL=data/fmnist-holdout TEST=data/fmnist-test
    [ -f $TRAIN/manifest.json ] || $SRMAE pack $FM $TRAIN --split train --limit "$N"
    [ -f $VAL/manifest.json ] || $SRMAE pack $FM $VAL --split train --skip 55000
    [ -f $TEST/manifest.json ] || $SRMAE pack $FM $TEST --split test
    recipe() { echo "fmnist-$1"; }
    ;;
  photos32)
    OUT=${1:-runs/results-photos}
    PE=${PRETRAIN_EPOCHS:-6} FE=${FINETUNE_EPOCHS:-10} VLR=${VLR:-8} RES=32,16,12,8
    CORPUS=${CORPUS:-data/photo-corpus}
    TRAIN=data/photos-train VAL=data/photos-holdout TEST=data/photos-test
    [ -d $CORPUS/train ] || python3 bench/make_corpus.py $CORPUS --train-per-class 60 --val-per-class 25 --seed 0
    [ -d $CORPUS-holdout/val ] || python3 bench/make_corpus.py $CORPUS-holdout --train-per-class 0 --val-per-class 10 --seed 1
    pack=(--kind imagenet --max-side 48 --encoding raw)
    [ -f $TRAIN/manifest.json ] || $SRMAE pack $CORPUS $TRAIN --split train "${pack[@]}"
    [ -f $TEST/manifest.json ] || $SRMAE pack $CORPUS $TEST --split val "${pack[@]}"
    [ -f $VAL/manifest.json ] || $SRMAE pack $CORPUS-holdout $VAL --split val "${pack[@]}"
    recipe() { echo "photos32-$1"; }
    ;;
  *) echo "TASK=$TASK: expected fmnist or photos32" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
common=(--data $TRAIN --set "data.val=\"$VAL\"")
ARMS=${ARMS:-srmae mae scratch}
pre_warm=(); ft_warm=()
[ -n "${PRETRAIN_WARMUP:-}" ] && pre_warm=(--set optim.warmup_epochs=$PRETRAIN_WARMUP)
[ -n "${FINETUNE_WARMUP:-}" ] && ft_warm=(--set optim.warmup_epochs=$FINETUNE_WARMUP)
# The pretraining of an arm: method and recipe overrides.
arm_pretrain() {
  case $1 in
    srmae) echo "--method srmae" ;;
    mae) echo "--method mae" ;;
    simmim) echo "--method simmim --set model.mask.select_ratio=0.6" ;;
    srmae-pe) echo '--method srmae --set model.clue_embed={kind="patch_embed",upsample="bicubic",type_embed=true}' ;;
    srmae-pe-notype) echo '--method srmae --set model.clue_embed={kind="patch_embed",upsample="bicubic",type_embed=false}' ;;
    srmae-pe-nearest) echo '--method srmae --set model.clue_embed={kind="patch_embed",upsample="nearest",type_embed=true}' ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}
log() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s); "$@" > "$OUT/$name.log" 2>&1; echo "{\"run\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/times.jsonl"; }
for seed in $SEEDS; do
  S=$OUT/seed$seed
  mkdir -p $S
  for m in $ARMS; do
    [ $m = scratch ] && continue
    [ -f $S/$m-pre/checkpoint.safetensors ] && continue
    log "seed $seed: pretrain $m"
    read -r -a how <<< "$(arm_pretrain $m)"
    timed seed$seed-$m-pre $SRMAE pretrain --recipe "$(recipe pretrain)" --out $S/$m-pre "${how[@]}" "${common[@]}" \
      --set optim.epochs=$PE --set run.seed=$seed "${pre_warm[@]}"
  done
  for arm in $ARMS; do
    if [ $arm = scratch ]; then init=(--scratch); else init=(--init $S/$arm-pre/checkpoint.safetensors); fi
    for mode in ${MODES:-full vlr}; do
      d=$S/$arm-ft-$mode
      [ -f $d/eval.json ] && continue
      extra=(); evalres=(--test-res $RES)
      if [ $mode = vlr ]; then extra=(--set data.low_res=$VLR); evalres=(); fi
      log "seed $seed: finetune $arm ($mode)"
      rm -rf $d
      timed seed$seed-$arm-ft-$mode $SRMAE finetune --recipe "$(recipe finetune)" "${init[@]}" --out $d "${common[@]}" \
        --set optim.epochs=$FE --set run.seed=$seed "${ft_warm[@]}" "${extra[@]}"
      timed seed$seed-$arm-ft-$mode-eval $SRMAE eval --checkpoint $d/checkpoint.safetensors --data $TEST "${evalres[@]}"
    done
    if [ $arm != scratch ] && [ "${LINPROBE:-1}" = 1 ] && [ ! -f $S/$arm-lp/eval.json ]; then
      log "seed $seed: linprobe $arm"
      rm -rf $S/$arm-lp
      timed seed$seed-$arm-lp $SRMAE linprobe --recipe "$(recipe linprobe)" --init $S/$arm-pre/checkpoint.safetensors --out $S/$arm-lp "${common[@]}" --set run.seed=$seed
      timed seed$seed-$arm-lp-eval $SRMAE eval --checkpoint $S/$arm-lp/checkpoint.safetensors --data $TEST --test-res $RES
    fi
  done
  if [ -f $S/srmae-pre/checkpoint.safetensors ] && [ ! -f $S/srmae-pre/psnr/sr_quality.json ]; then
    log "seed $seed: SR quality"
    $SRMAE reconstruct --checkpoint $S/srmae-pre/checkpoint.safetensors --data $VAL --psnr 5000 --seed $seed --out $S/srmae-pre/psnr > $OUT/seed$seed-psnr.log 2>&1
  fi
  curves=()
  for arm in $ARMS; do [ -f $S/$arm-ft-full/eval.json ] && curves+=($S/$arm-ft-full/eval.json=$arm); done
  [ ${#curves[@]} -gt 0 ] && $SRMAE plot --out $S/lowres.png "${curves[@]}"
done
if [ $TASK = photos32 ]; then python3 bench/summarize_results.py "$OUT" "the 2,025 photo-corpus test crops"; else python3 bench/summarize_results.py "$OUT"; fi
M=$OUT/mean
curves=()
for arm in $ARMS; do
  [ -f $M/$arm-ft.json ] && curves+=("$M/$arm-ft.json=$arm fine-tuned")
  [ -f $M/$arm-lp.json ] && curves+=("$M/$arm-lp.json=$arm linear probe")
done
if [ ${#curves[@]} -gt 0 ]; then
  $SRMAE plot --out $OUT/lowres-mean.png --title "top-1 vs test resolution (mean over seeds)" "${curves[@]}"
fi
