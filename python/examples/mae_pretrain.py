"""A minimal MAE pretraining loop in PyTorch, fed by srmae.Loader.

The loader does the data work in Rust worker threads: decode, random resized
crop, flip and MAE's random masking (``transform="mae"``), so the model
receives ``visible`` (MAE's ``ids_shuffle[:, :len_keep]``) and ``restore``
(``ids_restore``) and only gathers; there is no ``random_masking`` in the
model. Blocks are timm's when timm is installed, otherwise a small
pre-norm block of the same shape.

    python python/examples/mae_pretrain.py --data data/fmnist-train --size 28 --patch 4 --channels 1
    python python/examples/mae_pretrain.py --data data/photos --size 224 --patch 16 --device cuda --epochs 5

Resuming: ``--resume ckpt.pt`` continues model, optimiser and loader (mid-epoch
exactly, from the loader's ``state_dict``).
"""

import argparse
import time

import torch
import torch.nn as nn

import srmae
from srmae.torch import normalize, to_torch

try:
    from timm.models.vision_transformer import Block
except ImportError:  # timm is optional

    class Block(nn.Module):
        """Pre-norm transformer block (timm's layout: attention, MLP with GELU)."""

        def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = nn.MultiheadAttention(dim, num_heads, bias=qkv_bias, batch_first=True)
            self.norm2 = norm_layer(dim)
            hidden = int(dim * mlp_ratio)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.norm2(x))


class MAE(nn.Module):
    """MAE (He et al. 2022) with the masking done by the loader.

    # Shapes
    images [B, C, H, W] float; visible [B, n_vis] and restore [B, L] int64
    -> loss (scalar), pred [B, L, p*p*C]
    """

    def __init__(self, size, patch, channels, dim=192, depth=6, heads=3, dec_dim=128, dec_depth=2, dec_heads=4):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.num_patches = (size // patch) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, 4.0, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dec_dim) * 0.02)
        self.decoder_blocks = nn.ModuleList(Block(dec_dim, dec_heads, 4.0, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(dec_depth))
        self.decoder_norm = nn.LayerNorm(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch * patch * channels)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs):
        # [B, C, H, W] -> [B, L, p*p*C], MAE's order (p, q, c).
        b, c, h, w = imgs.shape
        p = self.patch
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, imgs, visible, restore):
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        dim = x.shape[-1]
        x = torch.gather(x, 1, visible.unsqueeze(-1).expand(-1, -1, dim))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        n_mask = self.num_patches - visible.shape[1]
        x_ = torch.cat([x[:, 1:], self.mask_token.expand(x.shape[0], n_mask, -1)], 1)
        x_ = torch.gather(x_, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        target = self.patchify(imgs)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5  # norm_pix_loss
        # mask: 1 on patches the encoder did not see (from ids_restore).
        mask = (restore >= visible.shape[1]).float()
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="packed dataset directory (srmae pack / srmae.pack)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    ap.add_argument("--lr", type=float, default=1.5e-4 * 128 / 256 * 4)
    ap.add_argument("--threads", type=int, default=0, help="loader worker threads (0: all cores)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write a checkpoint (model, optimiser, loader state) here at the end")
    ap.add_argument("--resume", help="continue from a checkpoint written by --save")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    ds = srmae.Dataset(args.data)
    loader = srmae.Loader(
        ds, args.batch, size=args.size, patch=args.patch, channels=args.channels,
        transform="mae", augment="mae_pretrain", seed=args.seed, threads=args.threads,
    )
    mean = srmae.IMAGENET_MEAN[: args.channels] if args.channels == 3 else [0.5]
    std = srmae.IMAGENET_STD[: args.channels] if args.channels == 3 else [0.5]
    model = MAE(args.size, args.patch, args.channels).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    step = 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=args.device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])
        step = ckpt["step"]
    print(f"MAE on {ds} ({sum(p.numel() for p in model.parameters()):,} parameters), {len(loader)} batches per epoch, {args.device}")
    pin = args.device.startswith("cuda")
    t0, images = time.time(), 0
    while loader.epoch < args.epochs:
        for batch in loader:
            b = to_torch(batch, args.device, pin=pin)
            x = normalize(b["images"], mean, std)
            loss, _ = model(x, b["visible"], b["restore"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            images += x.shape[0]
            if step % 20 == 0:
                rate = images / (time.time() - t0)
                print(f"epoch {batch['epoch']} step {step} loss {loss.item():.4f} {rate:.0f} images/s", flush=True)
            if args.steps and step >= args.steps:
                break
        if args.steps and step >= args.steps:
            break
    print(f"done: {step} steps, final loss {loss.item():.4f}, loader {loader.metrics()['consumer_wait_s']:.2f}s waited")
    if args.save:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "loader": loader.state_dict(), "step": step}, args.save)


if __name__ == "__main__":
    main()
