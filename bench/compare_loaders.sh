#!/usr/bin/env bash
# compare_loaders.sh: srmae's loader side by side with FFCV, DALI (CPU) and the
# PyTorch DataLoader running MAE's transforms, on one ImageNet-layout corpus and
# the same number of threads; prints the ratios.
#
#   bench/compare_loaders.sh CORPUS [WORKDIR]
#
# CORPUS   ImageNet-layout folder (train/<class>/*.JPEG), e.g. from
#          make_corpus.py (the peers' scripts: PEERS_DIR below)
# WORKDIR  packed datasets, peer venvs and logs (default: ./bench-work)
#
# srmae packs the corpus three ways (original bytes, --max-side 512, --max-side
# 256: FFCV's .beton files use max_resolution 512 and 256) and times `srmae bench
# loader` in SRMAE mode (RandomResizedCrop 224 + flip + 75% clues at 4x) and in
# crop-only mode, RUNS times before and after the peers. run_peers.sh then
# measures the peers (RUNS rounds, interleaved). Ratios use medians.
#
# Environment (defaults): THREADS=2 BATCH=64 RUNS=2 EPOCHS=2 SRMAE=target/release/srmae
#   SKIP_PEERS=1 re-times srmae only and reuses WORKDIR/peers/aggregate.jsonl
#   ONLY=ffcv (or "ffcv torch", ...) is passed to run_peers.sh: measure only those peers
#   SKIP_APT=1 (run_peers.sh) when FFCV's native build deps are already installed
#   PEERS_DIR=../shared/bench (holds run_peers.sh and peer_torch_loader.py)
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=$(cd "$1" && pwd)
WORK=${2:-$PWD/bench-work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
THREADS=${THREADS:-2}
BATCH=${BATCH:-64}
RUNS=${RUNS:-2}
EPOCHS=${EPOCHS:-2}
SRMAE=${SRMAE:-$HERE/target/release/srmae}
PEERS_DIR=${PEERS_DIR:-$HERE/../shared/bench}
TRAIN=$CORPUS; [ -d "$CORPUS/train" ] && TRAIN=$CORPUS/train
[ -x "$SRMAE" ] || (cd "$HERE" && cargo build --release --bin srmae)

for side in orig 512 256; do
  out=$WORK/srmae_$side
  [ -f "$out/manifest.json" ] && continue
  if [ "$side" = orig ]; then extra=(); else extra=(--max-side "$side"); fi
  "$SRMAE" pack "$TRAIN" "$out" --kind folder --threads "$THREADS" "${extra[@]}" | tee -a "$WORK/srmae_pack.log"
done

ours() {  # one round of srmae measurements
  for side in orig 512 256; do
    for mode in srmae crop; do
      "$SRMAE" bench loader "$WORK/srmae_$side" --threads "$THREADS" --batch "$BATCH" --mode "$mode" \
        --batches 150 --json | sed "s/^{/{\"side\": \"$side\", /" >> "$WORK/srmae.jsonl"
    done
  done
  "$SRMAE" bench loader "$WORK/srmae_512" --threads "$THREADS" --batch "$BATCH" --mode srmae --batches 150 \
    --full-decode --json | sed 's/^{/{"side": "512", /' >> "$WORK/srmae.jsonl"
  for side in 512 256; do  # libjpeg-turbo fast IDCT + upsampling, as FFCV decodes
    "$SRMAE" bench loader "$WORK/srmae_$side" --threads "$THREADS" --batch "$BATCH" --mode srmae --batches 150 \
      --fast-decode --json | sed "s/^{/{\"side\": \"$side\", /" >> "$WORK/srmae.jsonl"
  done
}
: > "$WORK/srmae.jsonl"
for _ in $(seq "$RUNS"); do ours; done
if [ "${SKIP_PEERS:-0}" != 1 ]; then
  RUNS=$RUNS EPOCHS=$EPOCHS WORKERS=$THREADS BATCH=$BATCH QUIET_WAIT=${QUIET_WAIT:-30} \
    PEER_SCRIPT=$PEERS_DIR/peer_torch_loader.py bash "$PEERS_DIR/run_peers.sh" "$CORPUS" "$WORK/peers"
  for _ in $(seq "$RUNS"); do ours; done
fi

python3 - "$WORK/srmae.jsonl" "$WORK/peers/aggregate.jsonl" <<'PY' | tee "$WORK/ratios.txt"
import json, statistics, sys
ours, peers = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["side"], r["mode"], r["partial_decode"], r.get("fast_decode", False))
    ours.setdefault(key, []).append(r["images_per_s"])
for line in open(sys.argv[2]):
    r = json.loads(line)
    peers[(r["loader"], r["mode"])] = r["images_per_s_median"]
med = {k: statistics.median(v) for k, v in ours.items()}
print("srmae (median images/s):")
for k, v in sorted(med.items()):
    print(f"  side {k[0]:>4} mode {k[1]:<6} {'partial' if k[2] else 'full'}{' fast' if k[3] else ''} decode: {v:8.0f}")
print("peers (median images/s):")
for k, v in sorted(peers.items()):
    print(f"  {k[0]:<18} {k[1]:<18} {v:8.0f}")
def ratio(name, a, b):
    if a and b:
        print(f"  {name:<58} {a / b:5.2f}x  ({a:.0f} / {b:.0f})")
print("ratios:")
ratio("srmae SRMAE @512 / FFCV RRC @512 (uint8)", med.get(("512", "srmae", True, False)), peers.get(("ffcv", "train_512_uint8")))
ratio("srmae SRMAE @512 / FFCV RRC @512 (float32)", med.get(("512", "srmae", True, False)), peers.get(("ffcv", "train_512")))
ratio("srmae SRMAE @256 / FFCV RRC @256 (uint8)", med.get(("256", "srmae", True, False)), peers.get(("ffcv", "train_256_uint8")))
ratio("srmae SRMAE @256 / FFCV RRC @256 (float32)", med.get(("256", "srmae", True, False)), peers.get(("ffcv", "train_256")))
ratio("srmae SRMAE orig / PyTorch DataLoader SRMAE", med.get(("orig", "srmae", True, False)), peers.get(("torch-dataloader", "srmae")))
ratio("srmae SRMAE orig / PyTorch DataLoader MAE", med.get(("orig", "srmae", True, False)), peers.get(("torch-dataloader", "mae")))
ratio("srmae SRMAE orig / PIL full decode only", med.get(("orig", "srmae", True, False)), peers.get(("torch-dataloader", "decode")))
ratio("srmae crop orig / PIL full decode only", med.get(("orig", "crop", True, False)), peers.get(("torch-dataloader", "decode")))
ratio("srmae SRMAE orig / DALI CPU RRC (cubic)", med.get(("orig", "srmae", True, False)), peers.get(("dali-cpu", "rrc")))
ratio("srmae SRMAE @512 fast decode / FFCV @512 (uint8)", med.get(("512", "srmae", True, True)), peers.get(("ffcv", "train_512_uint8")))
ratio("srmae SRMAE @256 fast decode / FFCV @256 (uint8)", med.get(("256", "srmae", True, True)), peers.get(("ffcv", "train_256_uint8")))
ratio("srmae SRMAE @512 partial / full decode", med.get(("512", "srmae", True, False)), med.get(("512", "srmae", False, False)))
PY
