#!/usr/bin/env bash
# fuzz/make_seeds.sh — (re)builds the seed corpora in fuzz/corpus/<target>/
# from small valid inputs: shards packed by `srmae pack` (raw, zstd-raw, JPEG),
# single records cut from them, IDX/CIFAR/FER2013 files, a manifest.
# Needs a built srmae (target/release/srmae) and Python 3 with Pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SRMAE:-target/release/srmae}
C=fuzz/corpus
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$C"/{shard_open,shard_consistent,record_decode,loader_sample,idx,cifar,fer2013,manifest} "$tmp/src/a" "$tmp/src/b"

python3 - "$tmp" <<'PY'
import os, struct, sys, random
from PIL import Image
t = sys.argv[1]; r = random.Random(0)
for k, cls in enumerate("ab"):
    for i in range(2):
        w, h = r.randint(5, 24), r.randint(5, 24)
        img = Image.frombytes("RGB", (w, h), bytes(r.randrange(256) for _ in range(w * h * 3)))
        img.save(f"{t}/src/{cls}/{i}.jpg", quality=80)
        img.convert("L").save(f"{t}/src/{cls}/{i}.png")
# IDX: 3 images of 4x5 and their labels, concatenated with a cut byte.
imgs = bytes([0, 0, 8, 3]) + struct.pack(">III", 3, 4, 5) + bytes(range(60))
labs = bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([1, 2, 9])
open(f"{t}/idx", "wb").write(bytes([int(256 * len(imgs) / (len(imgs) + len(labs) + 1))]) + imgs + labs)
# CIFAR-10 and -100 batches of 2 records.
open(f"{t}/c10", "wb").write(b"\x00" + b"".join(bytes([i]) + bytes(3072) for i in range(2)))
open(f"{t}/c100", "wb").write(b"\x01" + b"".join(bytes([1, i]) + bytes(3072) for i in range(2)))
# FER2013: header, a training row, a test row.
px = " ".join(str(i % 256) for i in range(2304))
open(f"{t}/fer", "w").write(f"emotion,pixels,Usage\n3,{px},Training\n6,{px},PublicTest\n")
PY
for enc in raw jpeg; do
  "$BIN" pack "$tmp/src" "$tmp/ds-$enc" --kind folder --encoding "$enc" --threads 1 >/dev/null 2>&1
done
"$BIN" pack "$tmp/src" "$tmp/ds-zstd" --kind folder --encoding raw --zstd-level 3 --threads 1 >/dev/null 2>&1
for d in raw jpeg zstd; do
  for f in "$tmp/ds-$d"/shard-*; do
    cp "$f" "$C/shard_open/$d-$(basename "$f")"
    cp "$f" "$C/shard_consistent/$d-$(basename "$f")"
  done
  cp "$tmp/ds-$d/manifest.json" "$C/manifest/$d.json"
done
# Single records: index entry (40 bytes) + stored bytes, cut from the shards.
python3 - "$tmp" "$C/record_decode" "$C/loader_sample" <<'PY'
import glob, struct, sys
t, out, loader = sys.argv[1], sys.argv[2], sys.argv[3]
for path in sorted(glob.glob(f"{t}/ds-*/shard-*")):
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b, 16)[0]
    for i in range(n):
        e = b[64 + 40 * i: 64 + 40 * (i + 1)]
        off, ln = struct.unpack_from("<QI", e, 0)
        name = path.split("/")[-2] + f"-{i}"
        open(f"{out}/{name}", "wb").write(e + b[off:off + ln])
        # loader_sample: one more byte (augmentation, size, channels, fast IDCT)
        open(f"{loader}/{name}", "wb").write(e + bytes([(7 * i) % 32]) + b[off:off + ln])
PY
cp "$tmp/idx" "$C/idx/fashion-like"
cp "$tmp/c10" "$C/cifar/cifar10"; cp "$tmp/c100" "$C/cifar/cifar100"
cp "$tmp/fer" "$C/fer2013/two-rows.csv"
du -sh "$C"
