"""Fixtures: small packed datasets made with srmae.pack from Debian's
dataset-fashion-mnist (installed by scripts/setup.sh), and the srmae binary
(built by ./test.sh) for comparisons with the Rust loader."""

import os
import pathlib
import shutil

import pytest

import srmae

FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fmnist(tmp_path_factory):
    """2,000 Fashion-MNIST training images, raw records, several shards."""
    out = tmp_path_factory.mktemp("data") / "fmnist-2000"
    report = srmae.pack(FASHION_MNIST, out, split="train", limit=2000, shard_size="256KiB", progress=False)
    assert report["records"] == 2000 and report["shards"] > 1
    return srmae.Dataset(out)


@pytest.fixture()
def fmnist_copy(fmnist, tmp_path):
    """A private copy (for tests that damage it)."""
    dst = tmp_path / "fmnist-copy"
    shutil.copytree(fmnist.path, dst)
    return dst


@pytest.fixture(scope="session")
def srmae_bin():
    """The srmae binary: $SRMAE_BIN, else target/debug or target/release."""
    if os.environ.get("SRMAE_BIN"):
        return pathlib.Path(os.environ["SRMAE_BIN"])
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "srmae"
        if p.exists():
            return p
    pytest.skip("the srmae binary is not built (cargo build --bins)")
