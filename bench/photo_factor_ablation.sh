#!/usr/bin/env bash
# Clue-factor ablation on the photo corpus (docs/RESULTS.md, "Clue factor
# 2 / 4 / 8"), one seed, linear probe only. Default: 32 px with 8x8 patches,
# the smallest setting where factor 8 exists (a 1x1 clue per patch).
#
#   bench/photo_factor_ablation.sh [OUT] [VARIANT...]
#
# Variants: mae (MAE at the same patch, the no-clue reference), factor2,
# factor4, factor8 (clues of PATCH/2, PATCH/4, PATCH/8 pixels a side),
# clue50 (factor 4, half of the selected patches kept as clues, the rest
# hidden: `PATCH=4 ... clue50` is the photo-corpus twin of Fashion-MNIST's
# clue_fraction ablation).
# Default: all four. Each: pretraining with the photos32-pretrain recipe
# (PRETRAIN_EPOCHS), a linear probe (photos32-linprobe), evaluation at
# TEST_RES on the test crops, and for SRMAE the SR head's PSNR on the
# held-out crops. At 32 px, run bench/photo_results.sh first: it builds and
# packs the corpus; at other sizes the corpus is packed here (raw, longer side
# 1.5 x SIZE) into data/photos$SIZE-{train,holdout,test}.
#
# Environment (defaults):
#   SRMAE=target/release/srmae SEED=0 PRETRAIN_EPOCHS=6 DEVICE=cpu
#   SIZE=32 PATCH=8          input side and patch side (the recipes' model is resized to them)
#   TEST_RES=SIZE,SIZE/2,3*SIZE/8,SIZE/4
#   CORPUS=data/photo-corpus the ImageNet-layout corpus (its -holdout twin is the validation split)
#   PACK="--encoding raw"    extra `srmae pack` options at SIZE != 32
#   DATA=data/photos$SIZE    packed prefix at SIZE != 32
#   EXTRA="--set k=v ..."    extra recipe overrides for pretraining and probing
#   PRE_EXTRA="--set k=v ..." extra overrides for pretraining only
#                            (bench/gpu_factor_ablation.sh: ViT-Ti at 224 on a GPU)
# Runs are kept in OUT/ablations/p$PATCH-$VARIANT (32 px) or
# OUT/ablations/s$SIZE-p$PATCH-$VARIANT, and skipped when already complete.
set -euo pipefail
cd "$(dirname "$0")/.."
SRMAE=${SRMAE:-target/release/srmae}
OUT=${1:-runs/results-photos}
shift || true
VARIANTS=${*:-mae factor2 factor4 factor8}
SEED=${SEED:-0}
PE=${PRETRAIN_EPOCHS:-6}
DEVICE=${DEVICE:-cpu}
SIZE=${SIZE:-32}
PATCH=${PATCH:-8}
TEST_RES=${TEST_RES:-$SIZE,$((SIZE / 2)),$((SIZE * 3 / 8)),$((SIZE / 4))}
read -r -a extra <<< "${EXTRA:-}"
read -r -a pre_extra <<< "${PRE_EXTRA:-}"
if [ "$SIZE" = 32 ]; then
  TRAIN=data/photos-train VAL=data/photos-holdout TEST=data/photos-test TAG=p$PATCH
  for d in $TRAIN $VAL $TEST; do
    [ -f $d/manifest.json ] || { echo "$d missing: run bench/photo_results.sh first" >&2; exit 2; }
  done
else
  CORPUS=${CORPUS:-data/photo-corpus}
  DATA=${DATA:-data/photos$SIZE}
  TRAIN=$DATA-train VAL=$DATA-holdout TEST=$DATA-test TAG=s$SIZE-p$PATCH
  for d in $CORPUS/train $CORPUS/val $CORPUS-holdout/val; do
    [ -d $d ] || { echo "$d missing: build the corpus with bench/make_corpus.py (see bench/mim_results.sh)" >&2; exit 2; }
  done
  read -r -a pack <<< "${PACK:---encoding raw}"
  pack=(--kind imagenet --max-side $((SIZE * 3 / 2)) "${pack[@]}")
  [ -f $TRAIN/manifest.json ] || $SRMAE pack $CORPUS $TRAIN --split train "${pack[@]}"
  [ -f $TEST/manifest.json ] || $SRMAE pack $CORPUS $TEST --split val "${pack[@]}"
  [ -f $VAL/manifest.json ] || $SRMAE pack $CORPUS-holdout $VAL --split val "${pack[@]}"
  extra=(--set data.size=$SIZE --set data.augment.size=$SIZE --set data.eval_augment.size=$SIZE
         --set model.encoder.img_size=$SIZE "${extra[@]}")
fi
mkdir -p "$OUT"
common=(--data $TRAIN --set "data.val=\"$VAL\"" --set run.seed=$SEED --set model.encoder.patch=$PATCH "${extra[@]}")
log() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s); "$@" > "$OUT/$name.log" 2>&1; echo "{\"run\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/times.jsonl"; }
for v in $VARIANTS; do
  case $v in
    mae) set=(--method mae --set model.mask.patch=$PATCH) ;;
    factor2|factor4|factor8) set=(--set model.mask.patch=$PATCH --set model.mask.factor=${v#factor}) ;;
    clue50) set=(--set model.mask.patch=$PATCH --set model.mask.clue_fraction=0.5) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  A=$OUT/ablations/$TAG-$v
  mkdir -p $A
  if [ ! -f $A/pre/checkpoint.safetensors ]; then
    log "$TAG, $v: pretrain"
    rm -rf $A/pre
    timed ablation-$TAG-$v-pre $SRMAE pretrain --device $DEVICE --recipe photos32-pretrain --out $A/pre "${common[@]}" --set optim.epochs=$PE "${pre_extra[@]}" "${set[@]}"
  fi
  if [ ! -f $A/lp/eval.json ]; then
    log "$TAG, $v: linprobe"
    rm -rf $A/lp
    timed ablation-$TAG-$v-lp $SRMAE linprobe --device $DEVICE --recipe photos32-linprobe --init $A/pre/checkpoint.safetensors --out $A/lp "${common[@]}"
    timed ablation-$TAG-$v-lp-eval $SRMAE eval --device $DEVICE --checkpoint $A/lp/checkpoint.safetensors --data $TEST --test-res $TEST_RES
  fi
  if [ $v != mae ] && [ ! -f $A/pre/psnr/sr_quality.json ]; then
    log "$TAG, $v: SR quality"
    $SRMAE reconstruct --device $DEVICE --checkpoint $A/pre/checkpoint.safetensors --data $VAL --psnr 5000 --seed $SEED --out $A/pre/psnr > $OUT/ablation-$TAG-$v-psnr.log 2>&1
  fi
done
python3 - "$OUT" "$TAG" "$TEST_RES" $VARIANTS <<'PY'
import json, os, sys
out, tag, res, variants = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
print(f"| variant ({tag}) | " + " | ".join(f"LP {r} px" for r in res) + " | SR head dB | bicubic dB |")
print("|---|" + "---:|" * (len(res) + 2))
for v in variants:
    d = os.path.join(out, "ablations", f"{tag}-{v}")
    ev = json.load(open(os.path.join(d, "lp", "eval.json")))
    accs = {str(r["res"]): r["top1"] for r in ev.get("results", [])}
    q = os.path.join(d, "pre", "psnr", "sr_quality.json")
    sr = json.load(open(q)) if os.path.exists(q) else {}
    cell = lambda k: f"{accs[k]:.2f}" if k in accs else "?"
    db = lambda k: f"{sr[k]:.2f}" if k in sr else "—"
    print(f"| {v} | " + " | ".join(cell(r) for r in res) + f" | {db('psnr_model')} | {db('psnr_bicubic')} |")
PY
