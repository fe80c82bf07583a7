#!/usr/bin/env python3
"""MAE's fine-tuning input pipeline in the PyTorch DataLoader, for
`srmae bench loader DIR --mode finetune` to stand beside (docs/LOADER.md):
ImageFolder + timm's create_transform(is_training=True) with MAE's settings
(RandomResizedCrop 224 bicubic, flip, RandAugment rand-m9-mstd0.5-inc1,
ToTensor, Normalize, RandomErasing 0.25 pixel mode), as MAE's
util/datasets.py builds it. Mixup/cutmix run after loading in MAE: left out.

    python3 bench/peer_finetune_loader.py CORPUS --workers 2 --batch 64 --batches 15
"""
import argparse
import time

import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from torchvision import datasets


def posterize(img, bits_to_keep, **_):
    """timm's posterize, for PIL >= 12, which refuses 0 bits (what timm asks
    for at magnitude 10 of the increasing set): 0 bits is black, as older PIL
    and srmae give it."""
    if bits_to_keep >= 8:
        return img
    mask = ~(2 ** (8 - bits_to_keep) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    if name in auto_augment.NAME_TO_OP:
        auto_augment.NAME_TO_OP[name] = posterize


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="folder holding train/ in ImageFolder layout")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tf = create_transform(
        input_size=224, is_training=True, color_jitter=None, auto_augment="rand-m9-mstd0.5-inc1",
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )
    ds = datasets.ImageFolder(f"{args.root}/train", transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=True)
    n, t0 = 0, None
    while True:
        for k, (x, _) in enumerate(dl):
            if k == args.warmup and t0 is None:
                t0, n = time.perf_counter(), 0
            n += x.shape[0]
            if t0 is not None and n >= args.batches * args.batch:
                dt = time.perf_counter() - t0
                print(f'{{"loader": "torch+timm", "mode": "finetune", "workers": {args.workers}, "images": {n}, "seconds": {dt:.2f}, "images_per_s": {n / dt:.1f}}}')
                return


if __name__ == "__main__":
    main()
