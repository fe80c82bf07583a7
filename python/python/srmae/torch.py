"""Batches of ``srmae.Loader`` as torch tensors.

``to_torch(batch, device)`` wraps each array with ``torch.from_numpy`` (no
copy), moves it to ``device`` (``non_blocking`` from pinned memory when
``pin=True``), and widens the uint32 index arrays to int64, the dtype
``torch.gather`` and ``torch.index_select`` take. Images stay uint8: normalise
on the device, where it is cheapest (``normalize``).
"""

import torch

INDEX_FIELDS = ("visible", "hidden", "clue_ids", "restore")


def to_torch(batch, device="cpu", pin=False):
    """The batch dict with torch tensors in place of numpy arrays."""
    out = {}
    for name, value in batch.items():
        if not hasattr(value, "dtype"):
            out[name] = value
            continue
        t = torch.from_numpy(value)
        if pin and torch.cuda.is_available():
            t = t.pin_memory()
        t = t.to(device, non_blocking=pin)
        if name in INDEX_FIELDS:
            t = t.long()
        out[name] = t
    return out


def normalize(images, mean, std):
    """uint8 ``[B, C, H, W]`` -> float32, ``(x / 255 - mean) / std`` per channel."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std
