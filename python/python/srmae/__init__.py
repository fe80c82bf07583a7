"""srmae from Python: packed datasets, the streaming loader and the packer.

A drop-in data source for PyTorch masked-image-modelling code: the loader
decodes, crops, flips and masks in Rust worker threads, deterministically per
(seed, epoch, record), and yields batches as dicts of numpy arrays that
``torch.from_numpy`` wraps without a copy::

    import srmae, torch
    ds = srmae.Dataset("data/fmnist-train")
    loader = srmae.Loader(ds, 256, size=28, patch=4, channels=1, transform="mae")
    for epoch in range(epochs):
        for batch in loader:                      # one epoch, then the next
            x = torch.from_numpy(batch["images"])  # [B, C, H, W] uint8, no copy
            ids_restore = torch.from_numpy(batch["restore"]).long()

Batch fields (``B`` samples, ``L`` patches): ``images`` uint8 ``[B, C, S, S]``;
``labels`` int64 ``[B]`` (-1: unlabelled); ``sample_ids`` int64 ``[B]``; per
transform, uint32 index arrays ``visible [B, n_visible]`` (MAE's
``ids_shuffle[:, :n_visible]``), ``hidden``, ``clue_ids``, ``restore [B, L]``
(MAE's ``ids_restore``), uint8 ``clue_pixels [B, n_clue, C, r, r]`` and
``mask [B, L]`` (0 visible, 1 hidden, 2 clue); float32 ``soft_labels [B, K]``
with mixup/cutmix; and the ints ``epoch`` and ``index``.
"""

from ._srmae import (  # noqa: F401
    AUGMENTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRANSFORMS,
    BatchBuffers,
    CorruptRecordError,
    Dataset,
    DatasetError,
    Loader,
    LoaderError,
    SrmaeError,
    __version__,
    pack,
)

__all__ = [
    "AUGMENTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRANSFORMS",
    "CorruptRecordError",
    "Dataset",
    "DatasetError",
    "Loader",
    "LoaderError",
    "SrmaeError",
    "__version__",
    "pack",
]
