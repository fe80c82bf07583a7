#!/usr/bin/env bash
# Clue-factor ablation on the photo corpus at 32 px with 8x8 patches (the
# smallest setting where factor 8 exists: a 1x1 clue per patch), one seed,
# linear probe only (docs/RESULTS.md, "Clue factor 2 / 4 / 8").
#
#   bench/photo_factor_ablation.sh [OUT] [VARIANT...]
#
# Variants: mae (MAE at patch 8, the no-clue reference), factor2 (4x4 clues),
# factor4 (2x2), factor8 (1x1). Default: all four. Each: pretraining with the
# photos32-pretrain recipe (patch 8, PRETRAIN_EPOCHS, default 6), a linear
# probe (photos32-linprobe), evaluation at 32/16/12/8 px on the test crops,
# and for SRMAE the SR head's PSNR on the held-out crops.
# Run bench/photo_results.sh first: it builds and packs the corpus.
#
# Environment (defaults): SRMAE=target/release/srmae SEED=0 PRETRAIN_EPOCHS=6
set -euo pipefail
cd "$(dirname "$0")/.."
SRMAE=${SRMAE:-target/release/srmae}
OUT=${1:-runs/results-photos}
shift || true
VARIANTS=${*:-mae factor2 factor4 factor8}
SEED=${SEED:-0}
PE=${PRETRAIN_EPOCHS:-6}
TRAIN=data/photos-train VAL=data/photos-holdout TEST=data/photos-test
for d in $TRAIN $VAL $TEST; do
  [ -f $d/manifest.json ] || { echo "$d missing: run bench/photo_results.sh first" >&2; exit 2; }
done
patch8=(--set model.encoder.patch=8)
common=(--data $TRAIN --set "data.val=\"$VAL\"" --set run.seed=$SEED "${patch8[@]}")
log() { echo "[$(date +%T)] $*"; }
timed() { local name=$1; shift; local t0=$(date +%s); "$@" > "$OUT/$name.log" 2>&1; echo "{\"run\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/times.jsonl"; }
for v in $VARIANTS; do
  case $v in
    mae) set=(--method mae --set model.mask.patch=8) ;;
    factor2|factor4|factor8) set=(--set model.mask.patch=8 --set model.mask.factor=${v#factor}) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  A=$OUT/ablations/p8-$v
  mkdir -p $A
  if [ ! -f $A/pre/checkpoint.safetensors ]; then
    log "patch 8, $v: pretrain"
    rm -rf $A/pre
    timed ablation-p8-$v-pre $SRMAE pretrain --recipe photos32-pretrain --out $A/pre "${common[@]}" --set optim.epochs=$PE "${set[@]}"
  fi
  if [ ! -f $A/lp/eval.json ]; then
    log "patch 8, $v: linprobe"
    rm -rf $A/lp
    timed ablation-p8-$v-lp $SRMAE linprobe --recipe photos32-linprobe --init $A/pre/checkpoint.safetensors --out $A/lp "${common[@]}"
    timed ablation-p8-$v-lp-eval $SRMAE eval --checkpoint $A/lp/checkpoint.safetensors --data $TEST --test-res 32,16,12,8
  fi
  if [ $v != mae ] && [ ! -f $A/pre/psnr/sr_quality.json ]; then
    log "patch 8, $v: SR quality"
    $SRMAE reconstruct --checkpoint $A/pre/checkpoint.safetensors --data $VAL --psnr 5000 --seed $SEED --out $A/pre/psnr > $OUT/ablation-p8-$v-psnr.log 2>&1
  fi
done
python3 - "$OUT" $VARIANTS <<'PY'
import json, os, sys
out, variants = sys.argv[1], sys.argv[2:]
print("| variant (patch 8) | LP 32 px | LP 16 px | LP 12 px | LP 8 px | SR head dB | bicubic dB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for v in variants:
    d = os.path.join(out, "ablations", f"p8-{v}")
    ev = json.load(open(os.path.join(d, "lp", "eval.json")))
    accs = {str(r["res"]): r["top1"] for r in ev.get("results", [])}
    q = os.path.join(d, "pre", "psnr", "sr_quality.json")
    sr = json.load(open(q)) if os.path.exists(q) else {}
    cell = lambda k: f"{accs[k]:.2f}" if k in accs else "?"
    db = lambda k: f"{sr[k]:.2f}" if k in sr else "—"
    print(f"| {v} | {cell('32')} | {cell('16')} | {cell('12')} | {cell('8')} | {db('psnr_model')} | {db('psnr_bicubic')} |")
PY
