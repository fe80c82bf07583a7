#!/usr/bin/env python3
"""Reference statistics of RandomResizedCrop's box sampling, for the test
`augment::tests::rrc_boxes_stay_inside_and_follow_the_distribution`.

Uses torchvision's own `RandomResizedCrop.get_params` when torchvision is
installed (`--torchvision`), else a line-by-line transcription of it (same
draws: uniform area fraction, log-uniform aspect, Python round, randint for
the offset, central fallback). Prints the mean accepted area fraction and
the fallback rate on a 500x375 image.

    python3 pipeline/reference/rrc_stats.py [--torchvision] [--n 1000000]
"""
import argparse
import math
import random


def get_params_transcribed(width, height, scale, ratio, rnd):
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rnd.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rnd.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = rnd.randint(0, height - h)
            j = rnd.randint(0, width - w)
            return i, j, h, w, False
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w, True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--torchvision", action="store_true")
    a = ap.parse_args()
    W, H = 500, 375
    total, fallbacks = 0.0, 0
    if a.torchvision:
        import torch
        from torchvision.transforms import RandomResizedCrop
        torch.manual_seed(0)
        img = torch.zeros(3, H, W)
        for _ in range(a.n):
            i, j, h, w = RandomResizedCrop.get_params(img, (0.2, 1.0), (3 / 4, 4 / 3))
            total += h * w / (H * W)
    else:
        rnd = random.Random(0)
        for _ in range(a.n):
            i, j, h, w, fb = get_params_transcribed(W, H, (0.2, 1.0), (3 / 4, 4 / 3), rnd)
            total += h * w / (H * W)
            fallbacks += fb
    print(f"mean area fraction {total / a.n:.4f}; fallback rate {fallbacks / a.n:.5f}")


if __name__ == "__main__":
    main()
