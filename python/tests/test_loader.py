"""srmae.Loader: fields, determinism, resume, ranks, corrupt records, memory,
and batch-for-batch equality with the Rust loader (`srmae bench loader`)."""

import json
import os
import subprocess

import numpy as np
import pytest

import srmae

FMNIST = dict(size=28, patch=4, channels=1)


def collect(loader, n=None):
    out = []
    for i, b in enumerate(loader):
        if n is not None and i >= n:
            break
        out.append({k: (v.copy() if hasattr(v, "copy") else v) for k, v in b.items()})
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize(
    "transform, fields",
    [
        ("srmae", {"visible", "clue_ids", "clue_pixels", "restore", "mask"}),
        ("mae", {"visible", "hidden", "restore", "mask"}),
        ("simmim", {"mask"}),
        ("beit", {"mask"}),
        (None, set()),
    ],
)
def test_fields_shapes_and_dtypes(fmnist, transform, fields):
    kw = dict(FMNIST)
    if transform == "simmim":
        kw.update(transform={"kind": "simmim", "mask_patch": 4})
    elif transform == "beit":
        kw.update(transform={"kind": "beit", "min_num_patches": 4})
    else:
        kw.update(transform=transform)
    loader = srmae.Loader(fmnist, 32, threads=2, **kw)
    b = next(loader)
    base = {"images", "labels", "sample_ids", "epoch", "index"}
    assert set(b) == base | fields
    assert b["images"].shape == (32, 1, 28, 28) and b["images"].dtype == np.uint8
    assert b["labels"].dtype == np.int64 and b["labels"].min() >= 0 and b["labels"].max() < 10
    lay = loader.layout
    L = 49
    if transform == "srmae":
        # 75 % of 49 patches selected, all of them 1x1 clues (factor 4).
        assert b["visible"].shape == (32, lay["n_visible"]) and lay["n_visible"] + lay["n_clue"] == L
        assert b["clue_pixels"].shape == (32, lay["n_clue"], 1, 1, 1)
        assert b["visible"].dtype == np.uint32 and b["clue_pixels"].dtype == np.uint8
    if transform == "mae":
        assert b["visible"].shape == (32, 12) and b["hidden"].shape == (32, 37)
        # ids_restore inverts ids_shuffle = concat(visible, hidden).
        shuffle = np.concatenate([b["visible"], b["hidden"]], axis=1)
        np.testing.assert_array_equal(np.take_along_axis(shuffle, b["restore"].astype(np.int64), 1), np.tile(np.arange(L), (32, 1)))
        assert (b["mask"].sum(1) == 37).all()
    if transform in ("simmim", "beit"):
        assert b["mask"].shape == (32, L) and set(np.unique(b["mask"])) <= {0, 1}
        assert b["mask"].sum() > 0


def test_mixup_soft_labels_sum_to_one(fmnist):
    loader = srmae.Loader(fmnist, 32, transform=None, mixup=0.8, cutmix=1.0, smoothing=0.1, **FMNIST)
    for b in collect(loader, 5):
        assert b["soft_labels"].shape == (32, 10) and b["soft_labels"].dtype == np.float32
        np.testing.assert_allclose(b["soft_labels"].sum(1), 1.0, atol=1e-5)


def test_same_batches_as_the_rust_loader(fmnist, srmae_bin, tmp_path):
    for transform in ("srmae", "mae"):
        loader = srmae.Loader(fmnist, 64, transform=transform, aa="rand-m9-mstd0.5-inc1", reprob=0.25, threads=2, seed=7, **FMNIST)
        cfg = tmp_path / f"{transform}.json"
        cfg.write_text(json.dumps(loader.config))
        dump = tmp_path / transform
        subprocess.run(
            [srmae_bin, "bench", "loader", fmnist.path, "--config", cfg, "--batches", "3", "--warmup", "0", "--dump", dump, "--json"],
            check=True, capture_output=True,
        )
        dtypes = {"images": np.uint8, "labels": np.uint32, "sample_ids": np.uint64, "clue_pixels": np.uint8, "mask": np.uint8}
        for b in collect(loader, 3):
            for name, value in b.items():
                if not hasattr(value, "dtype"):
                    continue
                raw = np.fromfile(dump / f"e0-b{b['index']:05}.{name}.bin", dtype=dtypes.get(name, np.uint32))
                ours = value.reshape(-1)
                if name == "labels" or name == "sample_ids":
                    ours = ours.astype(raw.dtype)
                np.testing.assert_array_equal(ours, raw, err_msg=f"{transform} batch {b['index']} {name}")


def test_config_round_trip_rebuilds_the_same_loader(fmnist):
    a = srmae.Loader(fmnist, 16, transform={"kind": "srmae", "clue_fraction": 0.5, "factor": 2}, seed=3, **FMNIST)
    b = srmae.Loader(fmnist, 16, config=a.config)
    assert a.config == b.config and a.config["patch"]["factor"] == 2
    assert_same(collect(a, 4), collect(b, 4))


def test_same_batches_whatever_the_thread_count(fmnist):
    kw = dict(transform="srmae", aa="rand-m9-mstd0.5-inc1", seed=11, **FMNIST)
    one = collect(srmae.Loader(fmnist, 50, threads=1, **kw))
    three = collect(srmae.Loader(fmnist, 50, threads=3, prefetch=1, **kw))
    assert len(one) == 40
    assert_same(one, three)


def test_state_dict_resume_equals_the_uninterrupted_epoch(fmnist):
    kw = dict(transform="mae", seed=5, **FMNIST)
    full = collect(srmae.Loader(fmnist, 64, **kw))
    first = srmae.Loader(fmnist, 64, **kw)
    head = collect(first, 7)
    # collect() pulled an 8th batch before stopping: resume from a state taken after exactly 7.
    first.set_epoch(0)
    for _ in range(7):
        next(first)
    state = first.state_dict()
    assert state["epoch"] == 0 and state["next_batch"] == 7
    resumed = srmae.Loader(fmnist, 64, **kw)
    resumed.load_state_dict(state)
    assert_same(head + collect(resumed), full)
    other = srmae.Loader(fmnist, 64, **dict(kw, seed=6))
    with pytest.raises(ValueError, match="different options"):
        other.load_state_dict(state)


def test_epochs_advance_and_set_epoch_repeats_one(fmnist):
    loader = srmae.Loader(fmnist, 100, transform=None, **FMNIST)
    e0 = collect(loader)
    assert loader.epoch == 1 and len(e0) == len(loader) == 20
    e1 = collect(loader)
    assert e1[0]["epoch"] == 1 and not np.array_equal(e0[0]["sample_ids"], e1[0]["sample_ids"])
    loader.set_epoch(0)
    assert_same(collect(loader), e0)


def test_ranks_are_disjoint_and_cover_the_epoch(fmnist):
    for world in (2, 3):
        seen = []
        for rank in range(world):
            loader = srmae.Loader(fmnist, 64, transform=None, rank=rank, world_size=world, rank_policy="pad", drop_last=False, **FMNIST)
            seen.append(np.concatenate([b["sample_ids"] for b in collect(loader)]))
        union = np.concatenate(seen)
        assert set(union.tolist()) == set(range(2000))
        if 2000 % world == 0:
            for i in range(world):
                for j in range(i + 1, world):
                    assert not set(seen[i].tolist()) & set(seen[j].tolist())
        else:
            # Padding repeats (world - 2000 % world) records to even the ranks.
            assert len(union) - 2000 == world - 2000 % world


def corrupt(dataset_dir, record):
    ds = srmae.Dataset(dataset_dir)
    info = ds.record_info(record)
    with open(info["shard"], "r+b") as f:
        f.seek(info["offset"] + 7)
        byte = f.read(1)
        f.seek(info["offset"] + 7)
        f.write(bytes([byte[0] ^ 0x40]))
    return srmae.Dataset(dataset_dir)


def test_a_corrupt_record_is_skipped_and_counted_or_raises(fmnist_copy):
    ds = corrupt(fmnist_copy, 123)
    loader = srmae.Loader(ds, 100, transform=None, drop_last=False, **FMNIST)
    ids = np.concatenate([b["sample_ids"] for b in collect(loader)])
    assert 123 not in ids and len(ids) == 2000
    assert loader.metrics()["corrupt_skipped"] == 1
    failing = srmae.Loader(ds, 100, transform=None, on_corrupt="fail", shuffle="sequential", **FMNIST)
    next(failing)
    with pytest.raises(srmae.CorruptRecordError, match="record 123.*checksum"):
        next(failing)
    # The loader goes on after the failed batch.
    assert next(failing)["index"] == 2


def test_invalid_options_raise(fmnist):
    with pytest.raises(ValueError, match="not a multiple of patch"):
        srmae.Loader(fmnist, 8, size=28, patch=5, transform="mae")
    with pytest.raises(ValueError, match="transform.*\"jigsaw\""):
        srmae.Loader(fmnist, 8, transform="jigsaw", **FMNIST)
    with pytest.raises(ValueError, match="mask_ratoi.*fields"):
        srmae.Loader(fmnist, 8, transform={"kind": "mae", "mask_ratoi": 0.5}, **FMNIST)
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        srmae.Loader(fmnist, 8, rank=2, world_size=2, **FMNIST)
    with pytest.raises(ValueError, match="batch size"):
        srmae.Loader(fmnist, 0, **FMNIST)
    with pytest.raises(ValueError, match="aa"):
        srmae.Loader(fmnist, 8, aa="autoaugment", **FMNIST)
    with pytest.raises(ValueError, match="on_corrupt"):
        srmae.Loader(fmnist, 8, on_corrupt="ignore", **FMNIST)
    with pytest.raises(FileNotFoundError):
        srmae.Loader("/nonexistent/dataset", 8)


def test_batches_are_zero_copy_and_their_buffers_are_recycled(fmnist):
    loader = srmae.Loader(fmnist, 32, transform="srmae", threads=1, prefetch=1, **FMNIST)
    b = next(loader)
    images = b["images"]
    assert not images.flags["OWNDATA"] and isinstance(images.base, srmae.BatchBuffers)
    assert images.base is b["visible"].base
    addresses = set()
    for _ in range(30):
        b = next(loader)
        addresses.add(b["images"].__array_interface__["data"][0])
        del b
    # Dropped batches go back to the pool: a handful of buffers serve every batch.
    assert len(addresses) <= 4, addresses
    # A batch kept alive keeps its buffers (the loader allocates others).
    kept = next(loader)
    snapshot = kept["images"].copy()
    for _ in range(10):
        next(loader)
    np.testing.assert_array_equal(kept["images"], snapshot)
    try:
        import torch
    except ImportError:
        return
    t = torch.from_numpy(kept["images"])
    assert t.data_ptr() == kept["images"].__array_interface__["data"][0]


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_rss_stays_flat_over_2000_batches(fmnist):
    loader = srmae.Loader(fmnist, 64, transform="srmae", threads=2, **FMNIST)
    n, samples = 0, []
    while n < 2000:
        for b in loader:
            n += 1
            if n in (200, 2000):
                samples.append(rss_mib())
            if n >= 2000:
                break
    grown = samples[1] - samples[0]
    assert grown < 16, f"RSS grew by {grown:.1f} MiB between batch 200 and 2000"


INTERRUPT_SCRIPT = r"""
import os, signal, sys, threading, time
import srmae
# Python leaves SIGINT alone when it starts with SIGINT ignored (as a
# background job of a non-interactive shell does): install Ctrl-C's handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
ds = srmae.Dataset(sys.argv[1])
# Slow batches: 448 px, RandAugment, one worker, nothing prefetched ahead.
loader = srmae.Loader(ds, 64, size=448, patch=16, augment="resize", transform=None,
                      aa="rand-m9-mstd0.5-inc1", threads=1, prefetch=1)
consumed = 0
def wait_for_batch():
    global consumed
    t = time.monotonic()
    next(loader)
    consumed += 1
    return time.monotonic() - t
wait_for_batch()  # start-up
per_batch = sorted(wait_for_batch() for _ in range(3))[1]
delay = min(0.05, per_batch / 10)
# A try only tests something if the batch is not ready before the signal
# lands; when it was (a batch prepared ahead), the late signal is absorbed
# and the loader tried again.
for attempt in range(3):
    # Drain what was prepared ahead until a call had to wait for most of a
    # batch: then the worker has just started the next one.
    for _ in range(4):
        if wait_for_batch() > per_batch / 2:
            break
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.monotonic()
    try:
        next(loader)
        consumed += 1
    except KeyboardInterrupt:
        late = time.monotonic() - t - delay
        # The loader is still usable: the batch that was awaited comes next.
        print("interrupted", per_batch, late, next(loader)["index"], consumed, attempt, flush=True)
        break
    try:
        timer.join()
        time.sleep(0.2)
    except KeyboardInterrupt:
        pass
else:
    print("not interrupted", per_batch, flush=True)
"""


def test_ctrl_c_interrupts_a_wait_for_a_batch(fmnist, tmp_path):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT)
    out = subprocess.run([os.sys.executable, script, fmnist.path], capture_output=True, text=True, timeout=300)
    words = out.stdout.split()
    assert words and words[0] == "interrupted", out.stdout + out.stderr
    per_batch, late, resumed_at, consumed = float(words[1]), float(words[2]), int(words[3]), int(words[4])
    assert resumed_at == consumed
    # Signals are checked every 50 ms while the GIL is released: the
    # interrupt lands long before the batch would have.
    assert late < per_batch / 2, f"interrupt took {late:.3f}s; a batch takes {per_batch:.3f}s"
