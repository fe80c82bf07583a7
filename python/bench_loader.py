"""Images/s of srmae.Loader from Python, beside the Rust loader on the same
configuration and the PyTorch DataLoader with MAE's transforms (plus SRMAE's
clues), same threads, rounds interleaved, in one run.

    python python/bench_loader.py data/photos-512 --folder corpus/train \\
        --peer ../shared/bench/peer_torch_loader.py --threads 2 --mode srmae

PACKED   a packed dataset (srmae pack --max-side 512 of FOLDER, for the peer
         to decode the same images)
--folder the ImageFolder the PyTorch DataLoader reads (skip the peer without it)
--peer   peer_torch_loader.py (its `--mode srmae` is MAE's pretraining transform
         plus 75 % of patches downsampled 4x, as srmae's `srmae` transform)

Prints one JSON line per measurement, then the medians and the ratios
python/rust and python/torch.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import srmae

try:
    import torch
except ImportError:
    torch = None


def python_round(args):
    loader = srmae.Loader(
        args.packed, args.batch, size=args.size, patch=args.patch, transform=args.mode,
        augment="mae_pretrain", threads=args.threads, seed=0,
    )

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(args.warmup):
        next(it)
    t = time.perf_counter()
    images = 0
    for _ in range(args.batches):
        b = next(it)
        if torch is not None:  # what a PyTorch consumer does: wrap, no copy
            torch.from_numpy(b["images"])
            torch.from_numpy(b["restore"])
        images += b["images"].shape[0]
    secs = time.perf_counter() - t
    return {"loader": "srmae-python", "images": images, "seconds": secs, "images_per_s": images / secs}, loader.config


def rust_round(args, config):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        out = subprocess.run(
            [args.srmae_bin, "bench", "loader", args.packed, "--config", f.name, "--batches", str(args.batches),
             "--warmup", str(args.warmup), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(f.name)
    r = json.loads(out.strip().splitlines()[-1])
    return {"loader": "srmae-rust", "images": r["images"], "seconds": r["seconds"], "images_per_s": r["images_per_s"]}


def torch_round(args):
    out = subprocess.run(
        [args.peer_python, args.peer, args.folder, "--mode", args.mode if args.mode == "srmae" else "mae",
         "--workers", str(args.threads), "--batch", str(args.batch), "--batches", str(args.batches)],
        check=True, capture_output=True, text=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"loader": "torch-dataloader", "images": r["images"], "seconds": r["seconds"], "images_per_s": r["images_per_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("packed")
    ap.add_argument("--folder", help="ImageFolder for the PyTorch DataLoader peer")
    ap.add_argument("--peer", help="path to peer_torch_loader.py")
    ap.add_argument("--peer-python", default=sys.executable, help="Python with torch + torchvision for the peer")
    ap.add_argument("--srmae-bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "srmae"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--mode", default="srmae", choices=("srmae", "mae"))
    ap.add_argument("--batches", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    results = {}
    for r in range(args.rounds):
        py, config = python_round(args)
        rows = [py, rust_round(args, config)]
        if args.folder and args.peer:
            rows.append(torch_round(args))
        for row in rows:
            row.update(round=r, mode=args.mode, threads=args.threads, batch=args.batch)
            print(json.dumps(row), flush=True)
            results.setdefault(row["loader"], []).append(row["images_per_s"])
    med = {k: statistics.median(v) for k, v in results.items()}
    print("medians (images/s): " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()))
    print(f"srmae.Loader (Python) / Rust loader: {med['srmae-python'] / med['srmae-rust']:.3f}")
    if "torch-dataloader" in med:
        print(f"srmae.Loader (Python) / PyTorch DataLoader: {med['srmae-python'] / med['torch-dataloader']:.2f}x")


if __name__ == "__main__":
    main()
