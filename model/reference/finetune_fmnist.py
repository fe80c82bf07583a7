"""PyTorch anchor for `srmae finetune --recipe fmnist-finetune` (from scratch).

The same network (timm VisionTransformer: 28 px, patch 4, 1 channel, the
recipe's width/depth/heads, global pool + fc_norm, drop path), the same
augmentation (RandomResizedCrop scale 0.6-1 + horizontal flip), AdamW with
MAE's layer-wise lr decay and no decay on 1-D parameters / tokens, the
per-iteration warmup + cosine schedule, label smoothing, on the Debian
Fashion-MNIST files. Prints the validation top-1 after every epoch, so the
curve can be laid beside ours (`metrics.jsonl` of the srmae run).

    python model/reference/finetune_fmnist.py --epochs 1 --warmup 0.2 --no-augment        # the recipe now
    python model/reference/finetune_fmnist.py --epochs 1 --warmup 0.2 --blr 1e-3 --layer-decay 0.75 --drop-path 0.1   # the old one
    python model/reference/finetune_fmnist.py --epochs 1 --warmup 0.2 --blr 4e-3 --layer-decay 1.0 --drop-path 0 --no-augment
"""
import argparse
import gzip
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import timm

FM = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def param_groups(model, wd, layer_decay, depth):
    groups = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim == 1 or name in ("cls_token", "pos_embed")
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            lid = 0
        elif name.startswith("blocks."):
            lid = int(name.split(".")[1]) + 1
        else:
            lid = depth + 1
        scale = layer_decay ** (depth + 1 - lid)
        key = (no_decay, scale)
        g = groups.setdefault(key, {"params": [], "weight_decay": 0.0 if no_decay else wd, "lr_scale": scale})
        g["params"].append(p)
    return list(groups.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--blr", type=float, default=4e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layer-decay", type=float, default=1.0)
    ap.add_argument("--drop-path", type=float, default=0.0)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=60000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-augment", action="store_true", help="no crop/flip (the fmnist-finetune recipe now)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr = torch.from_numpy(idx(f"{FM}/train-images-idx3-ubyte.gz")[: a.train_limit].copy()).float().div(255).unsqueeze(1)
    ytr = torch.from_numpy(idx(f"{FM}/train-labels-idx1-ubyte.gz")[: a.train_limit].astype(np.int64))
    xte = torch.from_numpy(idx(f"{FM}/t10k-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1)
    yte = torch.from_numpy(idx(f"{FM}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    mean, std = 0.2860, 0.3530
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=a.dim, depth=a.depth,
        num_heads=a.heads, mlp_ratio=4.0, qkv_bias=True, global_pool="avg", fc_norm=True,
        drop_path_rate=a.drop_path, norm_layer=lambda d, **kw: nn.LayerNorm(d, eps=1e-6, **kw))
    groups = param_groups(model, 0.05, a.layer_decay, a.depth)
    lr = a.blr * a.batch / 256
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    steps = len(xtr) // a.batch
    total = steps * a.epochs
    from torchvision.transforms import v2 as T
    aug = T.Compose([T.RandomResizedCrop(28, scale=(0.6, 1.0), antialias=True), T.RandomHorizontalFlip()])
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        run_loss = 0.0
        for i in range(steps):
            ep = epoch + i / steps
            cur = lr * ep / a.warmup if ep < a.warmup else 1e-6 + (lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * (ep - a.warmup) / (a.epochs - a.warmup)))
            for g in opt.param_groups:
                g["lr"] = cur * g["lr_scale"]
            ids = perm[i * a.batch:(i + 1) * a.batch]
            x = xtr[ids] if a.no_augment else torch.stack([aug(img) for img in xtr[ids]])
            x = (x - mean) / std
            loss = F.cross_entropy(model(x), ytr[ids], label_smoothing=a.smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run_loss += loss.item()
            if (i + 1) % 100 == 0:
                print(f"step {epoch * steps + i + 1}/{total} loss {run_loss / 100:.4f} lr {cur:.2e} {time.time() - t0:.0f}s", flush=True)
                run_loss = 0.0
        model.eval()
        correct = 0
        with torch.no_grad():
            for j in range(0, len(xte), 500):
                correct += (model((xte[j:j + 500] - mean) / std).argmax(1) == yte[j:j + 500]).sum().item()
        print(f"epoch {epoch + 1}: val top1 {100 * correct / len(xte):.2f} % ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
