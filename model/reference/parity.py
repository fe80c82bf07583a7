#!/usr/bin/env python3
"""Reference values for srmae-model's parity tests, computed with PyTorch
(and numpy for MAE's position embedding). Run:

    python3 model/reference/parity.py      # needs torch and numpy

and compare with the constants pasted in the Rust tests (each test names the
section it checks). Weights are deterministic functions of their index so
that Rust and Python build the same model without sharing files:
    w[i] = 0.02 * sin(0.37 * i + offset)
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def pos_embed_1d(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def pos_embed_2d(embed_dim, grid_size, cls_token=False):
    gh = np.arange(grid_size, dtype=np.float32)
    gw = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([pos_embed_1d(embed_dim // 2, grid[0]), pos_embed_1d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def det(shape, offset):
    n = int(np.prod(shape))
    return torch.tensor([0.02 * math.sin(0.37 * i + offset) for i in range(n)], dtype=torch.float32).reshape(shape)


def block(x, dim, heads):
    """timm Block (pre-norm, qkv bias, exact GELU, LayerNorm eps 1e-6) with det() weights."""
    hidden = 4 * dim
    p = {
        "norm1.w": 1.0 + det((dim,), 1.0), "norm1.b": det((dim,), 2.0),
        "qkv.w": det((3 * dim, dim), 3.0), "qkv.b": det((3 * dim,), 4.0),
        "proj.w": det((dim, dim), 5.0), "proj.b": det((dim,), 6.0),
        "norm2.w": 1.0 + det((dim,), 7.0), "norm2.b": det((dim,), 8.0),
        "fc1.w": det((hidden, dim), 9.0), "fc1.b": det((hidden,), 10.0),
        "fc2.w": det((dim, hidden), 11.0), "fc2.b": det((dim,), 12.0),
    }
    b, n, _ = x.shape
    h = F.layer_norm(x, (dim,), p["norm1.w"], p["norm1.b"], eps=1e-6)
    qkv = F.linear(h, p["qkv.w"], p["qkv.b"]).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
    a = attn.softmax(dim=-1) @ v
    x = x + F.linear(a.transpose(1, 2).reshape(b, n, dim), p["proj.w"], p["proj.b"])
    h = F.layer_norm(x, (dim,), p["norm2.w"], p["norm2.b"], eps=1e-6)
    return x + F.linear(F.gelu(F.linear(h, p["fc1.w"], p["fc1.b"])), p["fc2.w"], p["fc2.b"])


def main():
    np.set_printoptions(precision=9)
    print("== pos_embed: get_2d_sincos_pos_embed(8, 3, cls_token=True)[:3]")
    print(pos_embed_2d(8, 3, True)[:3])
    print("== pixel_shuffle(arange(16).reshape(1, 4, 2, 2), 2)[0, 0]")
    print(F.pixel_shuffle(torch.arange(16.0).reshape(1, 4, 2, 2), 2)[0, 0])
    print("== block: dim 8, heads 2, x = det((2, 3, 8), 0.5) * 50")
    x = det((2, 3, 8), 0.5) * 50
    y = block(x, 8, 2)
    print("sum", float(y.sum()), "y[1, 2, :4]", y[1, 2, :4].tolist())
    print("== MAE loss, norm_pix_loss: pred = det((2, 4, 6), 0.1) * 30, target = det((2, 4, 6), 0.9) * 40, mask [[1,0,1,0],[0,1,1,1]]")
    pred, target = det((2, 4, 6), 0.1) * 30, det((2, 4, 6), 0.9) * 40
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    t = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (((pred - t) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    print("loss", float(loss))
    print("== patchify: MAE's einsum, imgs = arange(2*3*4*4).reshape(2, 3, 4, 4), p = 2; x[1, 2]")
    imgs = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    h = w = 2
    xp = imgs.reshape(2, 3, h, 2, w, 2)
    xp = torch.einsum("nchpwq->nhwpqc", xp).reshape(2, h * w, 2 * 2 * 3)
    print(xp[1, 2].tolist())
    print("== masking: MAE's random_masking + decoder unshuffle; x = arange(2*6*2).reshape(2, 6, 2), keep 2")
    x = torch.arange(2 * 6 * 2.0).reshape(2, 6, 2)
    noise = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7, 0.2], [0.05, 0.6, 0.4, 0.8, 0.3, 0.95]])
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :2]
    x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, 2))
    mask_tokens = torch.full((2, 4, 2), -1.0)
    x_ = torch.cat([x_masked, mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, 2))
    print("ids_keep", ids_keep.tolist(), "ids_restore", ids_restore.tolist())
    print("x_masked", x_masked.tolist())
    print("unshuffled", x_.tolist())


if __name__ == "__main__":
    main()
