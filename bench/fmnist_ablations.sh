#!/usr/bin/env bash
# SRMAE ablations on Fashion-MNIST, one seed, same protocol and budget as
# bench/fmnist_results.sh (run that first: it packs the data).
#
#   bench/fmnist_ablations.sh [OUT] [VARIANT...]
#
# Variants: clue50 (clue_fraction 0.5), decoder (clue tokens into the
# decoder only), linear (linear head instead of the SR head), factor2 (2x2
# clues instead of 1x1). Default: all four, in that order.
set -euo pipefail
cd "$(dirname "$0")/.."
SRMAE=${SRMAE:-target/release/srmae}
OUT=${1:-runs/results}
shift || true
VARIANTS=${*:-clue50 decoder linear factor2}
SEED=${SEED:-0}
N=${TRAIN_IMAGES:-10000}
PE=${PRETRAIN_EPOCHS:-3}
FE=${FINETUNE_EPOCHS:-2}
TRAIN=data/fmnist-first$N VAL=data/fmnist-holdout TEST=data/fmnist-test
common=(--data $TRAIN --set "data.val=\"$VAL\"" --set run.seed=$SEED)
log() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s); "$@" > "$OUT/$name.log" 2>&1; echo "{\"run\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/times.jsonl"; }
for v in $VARIANTS; do
  case $v in
    clue50) set=(--set model.mask.clue_fraction=0.5) ;;
    decoder) set=(--set 'model.placement="decoder"') ;;
    linear) set=(--set 'model.head={kind="linear"}') ;;
    factor2) set=(--set model.mask.factor=2) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  A=$OUT/ablations/$v
  mkdir -p $A
  if [ ! -f $A/pre/checkpoint.safetensors ]; then
    log "ablation $v: pretrain"
    rm -rf $A/pre
    timed ablation-$v-pre $SRMAE pretrain --out $A/pre "${common[@]}" --set optim.epochs=$PE "${set[@]}"
  fi
  if [ ! -f $A/ft/eval.json ]; then
    log "ablation $v: finetune"
    rm -rf $A/ft
    timed ablation-$v-ft $SRMAE finetune --init $A/pre/checkpoint.safetensors --out $A/ft "${common[@]}" --set optim.epochs=$FE
    $SRMAE eval --checkpoint $A/ft/checkpoint.safetensors --data $TEST --test-res 28,14,10,7 > $OUT/ablation-$v-ft-eval.log 2>&1
  fi
  if [ ! -f $A/lp/eval.json ]; then
    log "ablation $v: linprobe"
    rm -rf $A/lp
    timed ablation-$v-lp $SRMAE linprobe --init $A/pre/checkpoint.safetensors --out $A/lp "${common[@]}"
    $SRMAE eval --checkpoint $A/lp/checkpoint.safetensors --data $TEST --test-res 28,14,10,7 > $OUT/ablation-$v-lp-eval.log 2>&1
  fi
done
python3 bench/summarize_results.py "$OUT"
