#!/usr/bin/env python3
"""PyTorch eager counterparts of `srmae bench ops`'s building blocks: the SR
head, an encoder block and a decoder block of `bench_step.py`'s models, each
timed alone, forward and forward + backward, on the same shapes and thread
count. One JSON line per block, with the same op names as `srmae bench ops`.

    python3 model/reference/bench_blocks.py --model tiny --batch 16 --threads 2
    srmae bench ops --model tiny --batch 16 --precision f32 --only sr_head
"""
import argparse
import json
import statistics
import time

import torch
from bench_step import SrHead, make_block

# (token width, heads, decoder width, decoder heads, SR-head features, tokens), as `srmae bench ops --model`
SIZES = {"tiny": (192, 3, 256, 8, 32, 197), "fmnist": (96, 3, 64, 4, 32, 50), "base": (768, 12, 512, 16, 64, 197)}


def timed(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d, h, dd, dh, feat, n = SIZES[a.model]
    b = a.batch
    head = SrHead(dd, feat)
    clues, has = torch.randn(b, 196, 48), torch.ones(b, 196)
    blocks = [
        ("block", make_block(d, h), (b, n, d)),
        ("decoder block", make_block(dd, dh), (b, n, dd)),
        ("sr_head (-> 16x16x3)", lambda x: head(x, clues, has), (b, 196, dd)),
    ]
    for name, module, shape in blocks:
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn_like(module(x))

        def fwd():
            with torch.no_grad():
                module(x)

        def fwd_bwd():
            torch.autograd.backward(module(x), g)

        print(json.dumps({"op": name, "shape": list(shape), "fwd_ms": timed(fwd, a.reps), "fwd_bwd_ms": timed(fwd_bwd, a.reps), "torch": torch.__version__, "threads": a.threads}))


if __name__ == "__main__":
    main()
