#!/usr/bin/env python3
"""PyTorch eager counterpart of `srmae bench step`: one SRMAE training step
(forward + backward + gradient norm + AdamW) of the same model on the same
synthetic batch shapes, same device, same thread count. Prints one JSON line.

    python3 model/reference/bench_step.py --batch 16 --steps 5 --threads 2
    python3 model/reference/bench_step.py --model base --device cuda --bf16 --batch 256

    python3 model/reference/bench_step.py --model fmnist --batch 128 --threads 2
    python3 model/reference/bench_step.py --model fmnist-finetune --batch 128 --threads 2
    python3 model/reference/bench_step.py --model base --method mae --device cuda --bf16 --batch 256

Models (as srmae-model's SrmaeConfig / `srmae bench step --model`):
- tiny: from_mae(MaeConfig::tiny_16(), 32): ViT-Ti/16 encoder (192 dim, 12
  blocks, 3 heads) over cls + 49 visible + 147 clue tokens, decoder 256 dim x
  4 blocks x 8 heads over 197 tokens, SR head with 32 features.
- base: SrmaeConfig::base_16(): ViT-B/16 (768, 12, 12), decoder 512 x 8 x 16,
  SR head with 64 features.
- fmnist: the `fmnist-pretrain` recipe: ViT 96 dim x 4 blocks x 3 heads,
  patch 4 on 28x28 grey images (49 patches: cls + 12 visible + 37 clue
  tokens of 1x1), decoder 64 x 2 x 4 heads, SR head with 32 features.
- fmnist-finetune: the `fmnist-finetune` recipe's classifier: the same
  encoder over all 49 patches, global average pool + fc_norm, 10 classes,
  drop path 0.1 (linear over blocks), cross-entropy with label smoothing 0.1.
SRMAE models: 2 residual blocks, pixel shuffle x4, global residual over the clue.
`--method mae`: the same encoder and decoder, the same three quarters of the
patches hidden (not kept as clues), MAE's linear head (`srmae bench step
--method mae`).

With timm installed, the transformer blocks are timm's `Block` (which uses
fused scaled-dot-product attention); otherwise the equivalent block below.
`--bf16` is torch.autocast(bfloat16) around forward and loss, as MAE's AMP.
"""
import argparse
import functools
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def make_block(dim, heads, drop_path=0.0):
    try:
        from timm.models.vision_transformer import Block as TimmBlock
        return TimmBlock(dim, heads, mlp_ratio=4.0, qkv_bias=True, drop_path=drop_path,
                         norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
    except ImportError:
        return Block(dim, heads)


MODELS = {
    "tiny": dict(d=192, depth=12, heads=3, dd=256, ddepth=4, dheads=8, feat=32),
    "base": dict(d=768, depth=12, heads=12, dd=512, ddepth=8, dheads=16, feat=64),
    "fmnist": dict(d=96, depth=4, heads=3, dd=64, ddepth=2, dheads=4, feat=32, L=49, p=4, r=1, c=1),
}


def encoder_decoder(m, d, depth, heads, dd, ddepth, dheads, L, p, c):
    """The modules SRMAE and MAE share: patch embedding, cls, encoder, decoder."""
    m.patch_embed = nn.Linear(p * p * c, d)
    m.cls = nn.Parameter(torch.zeros(1, 1, d))
    m.register_buffer("pos", torch.randn(1, L + 1, d) * 0.02)
    m.blocks = nn.ModuleList([make_block(d, heads) for _ in range(depth)])
    m.norm = nn.LayerNorm(d, eps=1e-6)
    m.dec_embed = nn.Linear(d, dd)
    m.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
    m.register_buffer("dpos", torch.randn(1, L + 1, dd) * 0.02)
    m.dblocks = nn.ModuleList([make_block(dd, dheads) for _ in range(ddepth)])
    m.dnorm = nn.LayerNorm(dd, eps=1e-6)


class SrHead(nn.Module):
    """Per patch: proj to a feat x r x r map, cat clue and has-clue flag, conv_in,
    two residual blocks (conv-ReLU-conv + skip), conv_out, pixel shuffle, plus
    the clue upsampled (nearest) as global residual."""

    def __init__(self, dd, feat, p=16, r=4, c=3):
        super().__init__()
        self.proj = nn.Linear(dd, feat * r * r)
        self.conv_in = nn.Conv2d(feat + c + 1, feat, 3, padding=1)
        self.res = nn.ModuleList([nn.Conv2d(feat, feat, 3, padding=1) for _ in range(4)])
        self.conv_out = nn.Conv2d(feat, c * (p // r) ** 2, 3, padding=1)
        self.r, self.s, self.feat, self.c = r, p // r, feat, c

    def forward(self, x, clue_full, has_clue):
        b, L, _ = x.shape
        n, r = b * L, self.r
        f = self.proj(x).reshape(n, self.feat, r, r)
        c = clue_full.reshape(n, self.c, r, r)
        h = self.conv_in(torch.cat([f, c, has_clue.reshape(n, 1, 1, 1).expand(n, 1, r, r)], 1))
        for i in range(0, 4, 2):
            h = h + self.res[i + 1](F.relu(self.res[i](h)))
        y = F.pixel_shuffle(self.conv_out(h), self.s) + F.interpolate(c, scale_factor=self.s, mode="nearest")
        return y.permute(0, 2, 3, 1).reshape(b, L, -1)


class Srmae(nn.Module):
    def __init__(self, d=192, depth=12, heads=3, dd=256, ddepth=4, dheads=8, feat=32, L=196, p=16, r=4, c=3):
        super().__init__()
        encoder_decoder(self, d, depth, heads, dd, ddepth, dheads, L, p, c)
        self.clue_embed = nn.Linear(c * r * r, d)
        self.lowres = nn.Parameter(torch.zeros(1, 1, d))
        self.head = SrHead(dd, feat, p, r, c)
        self.L = L

    def forward(self, patches, visible, clue_ids, clue_px, restore, clue_full, has_clue, weights):
        b = patches.shape[0]
        x = self.patch_embed(patches) + self.pos[:, 1:]
        vis = torch.gather(x, 1, visible.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        pos = self.pos[:, 1:].expand(b, -1, -1)
        clue = self.clue_embed(clue_px) + torch.gather(pos, 1, clue_ids.unsqueeze(-1).expand(-1, -1, pos.shape[-1])) + self.lowres
        x = torch.cat([(self.cls + self.pos[:, :1]).expand(b, -1, -1), vis, clue], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.dec_embed(self.norm(x))
        n_mask = self.L - (x.shape[1] - 1)
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(b, n_mask, -1)], 1)
        x_ = torch.gather(x_, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], 1) + self.dpos
        for blk in self.dblocks:
            x = blk(x)
        pred = self.head(self.dnorm(x)[:, 1:], clue_full, has_clue)
        loss = ((pred - patches) ** 2).mean(-1)
        return (loss * weights).sum() / weights.sum()


class Mae(nn.Module):
    """MAE (facebookresearch/mae's MaskedAutoencoderViT): encoder over cls + visible, linear head."""

    def __init__(self, d=192, depth=12, heads=3, dd=256, ddepth=4, dheads=8, feat=None, L=196, p=16, r=None, c=3):
        super().__init__()
        encoder_decoder(self, d, depth, heads, dd, ddepth, dheads, L, p, c)
        self.pred = nn.Linear(dd, p * p * c)
        self.L = L

    def forward(self, patches, visible, restore, hidden):
        b = patches.shape[0]
        x = self.patch_embed(patches) + self.pos[:, 1:]
        x = torch.gather(x, 1, visible.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([(self.cls + self.pos[:, :1]).expand(b, -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.dec_embed(self.norm(x))
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(b, self.L - (x.shape[1] - 1), -1)], 1)
        x_ = torch.gather(x_, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], 1) + self.dpos
        for blk in self.dblocks:
            x = blk(x)
        pred = self.pred(self.dnorm(x)[:, 1:])
        loss = ((pred - patches) ** 2).mean(-1)
        return (loss * hidden).sum() / hidden.sum()


def mae_inputs(b, m, dev):
    L, c, p = m.get("L", 196), m.get("c", 3), m.get("p", 16)
    kv = L - round(0.75 * L)
    ids = torch.stack([(torch.arange(L) * 7 + i * 13) % L for i in range(b)])
    visible, restore = ids[:, :kv], torch.argsort(ids, 1)
    hidden = torch.ones(b, L).scatter(1, visible, 0.0)
    return [t.to(dev) for t in (torch.randn(b, L, p * p * c), visible, restore, hidden)]


class Classifier(nn.Module):
    """timm's VisionTransformer as MAE fine-tunes it: global pool + fc_norm."""

    def __init__(self, d=96, depth=4, heads=3, L=49, p=4, c=1, classes=10, drop_path=0.1):
        super().__init__()
        self.patch_embed = nn.Linear(p * p * c, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos", torch.randn(1, L + 1, d) * 0.02)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([make_block(d, heads, r) for r in rates])
        self.fc_norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, classes)

    def forward(self, patches, labels):
        b = patches.shape[0]
        x = torch.cat([(self.cls + self.pos[:, :1]).expand(b, -1, -1), self.patch_embed(patches) + self.pos[:, 1:]], 1)
        for blk in self.blocks:
            x = blk(x)
        return F.cross_entropy(self.head(self.fc_norm(x[:, 1:].mean(1))), labels, label_smoothing=0.1)


def srmae_inputs(b, m, dev):
    L, r, c, p = m.get("L", 196), m.get("r", 4), m.get("c", 3), m.get("p", 16)
    kv = L - round(0.75 * L)
    kc = L - kv
    ids = torch.stack([(torch.arange(L) * 7 + i * 13) % L for i in range(b)])
    visible, clue_ids, restore = ids[:, :kv], ids[:, kv:], torch.argsort(ids, 1)
    cd = c * r * r
    patches, clue_px = torch.randn(b, L, p * p * c), torch.randn(b, kc, cd)
    clue_full = torch.zeros(b, L, cd).scatter(1, clue_ids.unsqueeze(-1).expand(-1, -1, cd), clue_px)
    has_clue = torch.zeros(b, L).scatter(1, clue_ids, 1.0)
    return [t.to(dev) for t in (patches, visible, clue_ids, clue_px, restore, clue_full, has_clue, has_clue)]


def peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=sorted(MODELS) + ["fmnist-finetune"], default="tiny")
    ap.add_argument("--method", choices=["srmae", "mae"], default="srmae", help="pretraining models only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(bfloat16)")
    ap.add_argument("--phases", action="store_true", help="also time forward, backward and optimiser separately")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    b = a.batch
    if a.model == "fmnist-finetune":
        model = Classifier().to(dev)
        inputs = [torch.randn(b, 49, 16).to(dev), (torch.arange(b) % 10).to(dev)]
    elif a.method == "mae":
        model = Mae(**MODELS[a.model]).to(dev)
        inputs = mae_inputs(b, MODELS[a.model], dev)
    else:
        model = Srmae(**MODELS[a.model]).to(dev)
        inputs = srmae_inputs(b, MODELS[a.model], dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times, phases = [], {"forward": [], "backward": [], "optimizer": []}
    model.train()
    for s in range(a.steps + 2):
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(*inputs)
        if a.phases:
            sync()
            t_fwd = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.phases:
            sync()
            t_bwd = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        sync()
        if s >= 2:
            end = time.perf_counter()
            times.append(end - t)
            if a.phases:
                phases["forward"].append(t_fwd - t)
                phases["backward"].append(t_bwd - t_fwd)
                phases["optimizer"].append(end - t_bwd)
    times.sort()
    med = times[len(times) // 2]
    phases_s = {k: sorted(v)[len(v) // 2] for k, v in phases.items()} if a.phases else None
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    try:
        import timm  # noqa: F401
        blocks = "timm"
    except ImportError:
        blocks = "local"
    print(json.dumps({"impl": "pytorch-eager", "torch": torch.__version__, "blocks": blocks, "model": a.model, "method": a.method,
                      "device": a.device, "precision": "bf16" if a.bf16 else "f32", "batch": b, "threads": a.threads,
                      "median_step_s": med, "peak_rss_mib": peak_rss_mib(), "images_per_s": b / med, "gpu_mem_gib": mem, "phases_s": phases_s}))


if __name__ == "__main__":
    main()
