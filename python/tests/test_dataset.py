"""srmae.Dataset and srmae.pack: records, manifest facts, errors."""

import numpy as np
import pytest

import srmae
from conftest import FASHION_MNIST


def test_len_classes_manifest(fmnist):
    assert len(fmnist) == 2000
    assert len(fmnist.classes) == 10 and fmnist.classes[0] == "T-shirt/top"
    m = fmnist.manifest
    assert m["num_records"] == 2000 and m["split"] == "train" and len(m["shards"]) > 1
    assert "2000 records" in repr(fmnist)


def test_records_decode_to_hwc_uint8(fmnist):
    img, label = fmnist[0]
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8
    assert 0 <= label < 10
    last, _ = fmnist[-1]
    np.testing.assert_array_equal(last, fmnist[1999][0])
    info = fmnist.record_info(3)
    assert info["width"] == 28 and info["channels"] == 1 and info["label"] == fmnist[3][1]
    with pytest.raises(IndexError, match="out of range"):
        fmnist[2000]


def test_first_record_is_the_idx_files_first_image(fmnist):
    import gzip

    with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz") as f:
        raw = f.read(16 + 784)
    first = np.frombuffer(raw[16:], dtype=np.uint8).reshape(28, 28, 1)
    np.testing.assert_array_equal(fmnist[0][0], first)


def test_bad_paths_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        srmae.Dataset(tmp_path / "nope")
    with pytest.raises(srmae.DatasetError, match="manifest"):
        srmae.Dataset(tmp_path)


def test_pack_options_and_errors(tmp_path):
    with pytest.raises(ValueError, match="quality"):
        srmae.pack(FASHION_MNIST, tmp_path / "q", quality=0, progress=False)
    with pytest.raises(ValueError, match="kind"):
        srmae.pack(FASHION_MNIST, tmp_path / "k", kind="parquet", progress=False)
    with pytest.raises(srmae.SrmaeError):
        srmae.pack(tmp_path / "missing", tmp_path / "m", kind="idx", progress=False)
    out = tmp_path / "small"
    r = srmae.pack(FASHION_MNIST, out, split="test", skip=10, limit=50, progress=False)
    assert r["records"] == 50 and r["rejected"] == []
    with pytest.raises(ValueError, match="already holds a packed dataset.*force"):
        srmae.pack(FASHION_MNIST, out, split="test", limit=50, progress=False)
    assert srmae.pack(FASHION_MNIST, out, split="test", limit=20, force=True, progress=False)["records"] == 20
    assert len(srmae.Dataset(out)) == 20
