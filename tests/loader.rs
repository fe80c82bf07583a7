//! The streaming loader over real packed shards: determinism across thread
//! counts, resume, rank partitions, corrupt records, shutdown, pixels.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::format::reader::Shard;
use srmae_datasets::sources::{open_source, SourceKind, SourceOptions};
use srmae_datasets::{pack, Encoding, PackOptions, PackedDataset};
use srmae_e2e::*;
use srmae_pipeline::{Augment, Batch, CorruptPolicy, Loader, LoaderConfig, LoaderError, PatchConfig, RankPolicy, Shuffle};

fn pack_folder(tmp: &Path, per_class: u32) -> std::path::PathBuf {
    let src = tmp.join("src");
    make_image_folder(&src, &["a", "b", "c"], per_class);
    // a few larger photos-like images so crops and DCT scaling matter
    for k in 0..4 {
        write_jpeg(&src.join(format!("a/big_{k}.jpg")), &pattern(300 + 40 * k, 220 + 30 * k, k), 90);
    }
    let out = tmp.join("packed");
    let source = open_source(SourceKind::Folder, &src, &SourceOptions::default()).unwrap();
    let info = SourceInfo {
        kind: "folder".into(),
        path: "src".into(),
    };
    pack(source.as_ref(), info, "train", &out, &PackOptions::default(), &|_| {}).unwrap();
    out
}

fn pack_fmnist_test(tmp: &Path) -> std::path::PathBuf {
    let out = tmp.join("fm");
    let sopts = SourceOptions {
        split: "test".into(),
        ..Default::default()
    };
    let source = open_source(SourceKind::Idx, &fashion_mnist(), &sopts).unwrap();
    let info = SourceInfo {
        kind: "idx".into(),
        path: FASHION_MNIST_DIR.into(),
    };
    let o = PackOptions {
        encoding: Encoding::Raw,
        ..PackOptions::default()
    };
    pack(source.as_ref(), info, "test", &out, &o, &|_| {}).unwrap();
    out
}

/// Everything a batch carries, for equality checks.
type Fields = (u64, Vec<u8>, Vec<u32>, Vec<u64>, Vec<u32>, Vec<u32>, Vec<u8>, Vec<u32>, Vec<u8>);

fn fields(b: &Batch) -> Fields {
    (
        b.index,
        b.images().to_vec(),
        b.labels().to_vec(),
        b.sample_ids().to_vec(),
        b.visible().to_vec(),
        b.clue_ids().to_vec(),
        b.clue_pixels().to_vec(),
        b.restore().to_vec(),
        b.mask().to_vec(),
    )
}

fn collect(ds: &Arc<PackedDataset>, cfg: &LoaderConfig) -> Vec<Fields> {
    Loader::new(ds.clone(), cfg.clone()).unwrap().map(|b| fields(&b.unwrap())).collect()
}

fn photo_cfg(threads: usize) -> LoaderConfig {
    LoaderConfig {
        threads,
        seed: 7,
        prefetch: 2,
        ..LoaderConfig::pretrain(64, 16, 5)
    }
}

#[test]
fn batches_are_identical_with_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_folder(tmp.path(), 8)).unwrap());
    let one = collect(&ds, &photo_cfg(1));
    let two = collect(&ds, &photo_cfg(2));
    // Every JPEG went through libjpeg-turbo (no fallback decodes), at every
    // DCT scale including full size.
    let mut l = Loader::new(ds.clone(), photo_cfg(1)).unwrap();
    for b in l.by_ref() {
        b.unwrap();
    }
    assert_eq!(l.metrics().jpeg_fallbacks, 0);
    assert_eq!(one.len(), 28 / 5);
    assert_eq!(one, two);
    // Another epoch or seed gives other batches.
    let other = collect(&ds, &LoaderConfig { epoch: 1, ..photo_cfg(2) });
    assert_ne!(one, other);
    // The SRMAE outputs are filled: 16 patches, 4 visible, 12 clues of 3x4x4.
    let l = Loader::new(ds.clone(), photo_cfg(1)).unwrap();
    let lay = l.layout();
    assert_eq!((lay.num_patches(), lay.n_visible, lay.n_clue, lay.clue_side), (16, 4, 12, 4));
    assert_eq!(one[0].6.len(), 5 * 12 * 3 * 16);
}

#[test]
fn resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_folder(tmp.path(), 8)).unwrap());
    let cfg = LoaderConfig { batch_size: 3, ..photo_cfg(2) };
    let full = collect(&ds, &cfg);
    let mut first = Loader::new(ds.clone(), cfg.clone()).unwrap();
    let head: Vec<Fields> = first.by_ref().take(4).map(|b| fields(&b.unwrap())).collect();
    let state = first.state();
    drop(first);
    let json = serde_json::to_string(&state).unwrap();
    let state = serde_json::from_str(&json).unwrap();
    let tail: Vec<Fields> = Loader::resume(ds.clone(), cfg.clone(), state).unwrap().map(|b| fields(&b.unwrap())).collect();
    assert_eq!(head.len() + tail.len(), full.len());
    assert_eq!([head, tail].concat(), full);
    // A state from another configuration is refused.
    let other = LoaderConfig { seed: 8, ..cfg };
    assert!(matches!(Loader::resume(ds, other, state), Err(LoaderError::Config(_))));
}

#[test]
fn ranks_partition_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let mut seen = std::collections::HashSet::new();
    for rank in 0..3 {
        let cfg = LoaderConfig {
            rank,
            world: 3,
            batch_size: 500,
            drop_last: false,
            rank_policy: RankPolicy::Drop,
            augment: Augment::Resize { size: 28 },
            patch: PatchConfig::None,
            channels: 1,
            ..LoaderConfig::pretrain(28, 4, 500)
        };
        for b in Loader::new(ds.clone(), cfg).unwrap() {
            for &id in b.unwrap().sample_ids() {
                assert!(seen.insert(id), "record {id} on two ranks");
            }
        }
    }
    assert_eq!(seen.len(), 9999, "floor(10000 / 3) * 3 records");
}

#[test]
fn raw_pixels_pass_through_exactly_and_eval_sees_every_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let cfg = LoaderConfig {
        augment: Augment::Resize { size: 28 },
        channels: 1,
        threads: 2,
        ..LoaderConfig::eval(28, 256)
    };
    let mut n = 0;
    for b in Loader::new(ds.clone(), cfg).unwrap() {
        let b = b.unwrap();
        for (i, &id) in b.sample_ids().iter().enumerate() {
            assert_eq!(id, n, "sequential order");
            assert_eq!(b.image(i), &ds.decode(id).unwrap().pixels[..], "record {id}");
            assert_eq!(b.labels()[i], ds.record(id).unwrap().entry.label);
            n += 1;
        }
    }
    assert_eq!(n, 10_000);
}

#[test]
fn partial_decode_matches_full_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_folder(tmp.path(), 4)).unwrap());
    let partial = collect(&ds, &photo_cfg(1));
    let full = collect(&ds, &LoaderConfig { partial_decode: false, ..photo_cfg(1) });
    let (mut diff, mut count) = (0u64, 0u64);
    for (p, f) in partial.iter().zip(&full) {
        assert_eq!(p.3, f.3);
        for (a, b) in p.1.iter().zip(&f.1) {
            diff += (*a as i64 - *b as i64).unsigned_abs();
            count += 1;
        }
    }
    let mean = diff as f64 / count as f64;
    // DCT-domain downscaling differs from a bicubic of the full image by a
    // few grey levels; a misplaced crop would differ by tens.
    assert!(mean < 4.0, "mean abs difference {mean}");
}

#[test]
fn corrupt_records_are_skipped_and_counted_or_fail_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = pack_folder(tmp.path(), 4);
    let shard = dir.join("shard-00000.srs");
    let victim = 5u64;
    let e = Shard::open(&shard).unwrap().entry(victim);
    flip_byte(&shard, e.offset as usize + 7);
    let ds = Arc::new(PackedDataset::open(&dir).unwrap());
    let cfg = LoaderConfig { drop_last: false, ..photo_cfg(2) };
    let mut loader = Loader::new(ds.clone(), cfg.clone()).unwrap();
    let mut ids = Vec::new();
    for b in loader.by_ref() {
        ids.extend_from_slice(b.unwrap().sample_ids());
    }
    assert!(!ids.contains(&victim), "a corrupt record must never be returned");
    assert_eq!(ids.len(), ds.len() as usize, "a substitute keeps batches full");
    assert_eq!(loader.metrics().corrupt_skipped, 1);

    let fail = LoaderConfig { on_corrupt: CorruptPolicy::Fail, ..cfg };
    let errors: Vec<String> =
        Loader::new(ds, fail).unwrap().filter_map(|b| b.err()).map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&format!("record {victim}")) && errors[0].contains("checksum"), "{}", errors[0]);
}

#[test]
fn dropping_a_busy_loader_returns_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = LoaderConfig {
            threads: 2,
            prefetch: 8,
            channels: 1,
            augment: Augment::mae_pretrain(28),
            patch: PatchConfig::srmae(4),
            shuffle: Shuffle::Full,
            ..LoaderConfig::pretrain(28, 4, 64)
        };
        let mut l = Loader::new(ds, cfg).unwrap();
        let first = l.next().unwrap().unwrap();
        drop(l);
        drop(first);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("loader drop hung");
}

/// A custom transform: marks every patch visible, or panics when told to.
struct MarkAllVisible {
    layout: srmae_pipeline::PatchLayout,
    panic_on_dark: bool,
}

impl srmae_pipeline::PatchTransform for MarkAllVisible {
    fn name(&self) -> &'static str {
        "mark-all-visible"
    }
    fn layout(&self) -> srmae_pipeline::PatchLayout {
        self.layout
    }
    fn apply(&self, image: &[u8], _rng: &mut srmae_pipeline::rng::SampleRng, out: srmae_pipeline::transforms::PatchOut<'_>) {
        // Fashion-MNIST corners are background (0): every image qualifies.
        if self.panic_on_dark && image[0] == 0 {
            panic!("transform refused a dark-cornered image");
        }
        out.mask.fill(7);
    }
}

#[test]
fn custom_transforms_plug_in_and_a_worker_panic_reaches_the_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let cfg = LoaderConfig {
        threads: 2,
        channels: 1,
        shuffle: Shuffle::Sequential,
        augment: Augment::Resize { size: 28 },
        patch: PatchConfig::None,
        ..LoaderConfig::pretrain(28, 4, 100)
    };
    let layout = srmae_pipeline::PatchLayout {
        patch: 4,
        grid_h: 7,
        grid_w: 7,
        channels: 1,
        ..Default::default()
    };
    let ok = MarkAllVisible { layout, panic_on_dark: false };
    let masks: Vec<u8> = Loader::with_transform(ds.clone(), cfg.clone(), std::sync::Arc::new(ok)).unwrap().flat_map(|b| b.unwrap().mask().to_vec()).collect();
    assert_eq!(masks.len(), 10_000 * 49);
    assert!(masks.iter().all(|&m| m == 7), "the custom transform filled every mask");

    let bad = MarkAllVisible { layout, panic_on_dark: true };
    let mut loader = Loader::with_transform(ds, cfg, std::sync::Arc::new(bad)).unwrap();
    let first = loader.next().expect("a result, not the end of the epoch");
    let err = first.expect_err("a worker panic must surface as an error").to_string();
    assert!(err.contains("transform refused"), "{err}");
    drop(loader); // and the loader still shuts down
}

#[test]
fn low_res_stage_keeps_size_and_removes_detail() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let cfg = LoaderConfig {
        threads: 1,
        channels: 1,
        shuffle: Shuffle::Sequential,
        augment: Augment::Resize { size: 28 },
        patch: PatchConfig::None,
        ..LoaderConfig::pretrain(28, 4, 16)
    };
    let full = Loader::new(ds.clone(), cfg.clone()).unwrap().next().unwrap().unwrap().images().to_vec();
    let low = Loader::new(ds, LoaderConfig { low_res: Some(7), ..cfg }).unwrap().next().unwrap().unwrap().images().to_vec();
    assert_eq!(full.len(), low.len());
    // Total variation (sum of |horizontal differences|) drops when detail goes.
    let tv = |v: &[u8]| v.chunks(28).map(|r| r.windows(2).map(|w| (w[0] as i32 - w[1] as i32).unsigned_abs() as u64).sum::<u64>()).sum::<u64>();
    assert!(tv(&low) * 10 < tv(&full) * 8, "low-res tv {} vs full {}", tv(&low), tv(&full));
    let mean = |v: &[u8]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!((mean(&low) - mean(&full)).abs() < 8.0, "brightness is kept");
}

/// Elastic resume: two ranks at half the batch read, step by step, exactly
/// the samples one rank reads (same images), and share its fingerprint.
#[test]
fn two_ranks_at_half_the_batch_read_what_one_rank_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_folder(tmp.path(), 8)).unwrap());
    let one = LoaderConfig { batch_size: 4, drop_last: true, ..photo_cfg(2) };
    let half = |rank| LoaderConfig { batch_size: 2, rank, world: 2, ..one.clone() };
    assert_eq!(one.fingerprint(), half(0).fingerprint());
    assert_eq!(half(0).fingerprint(), half(1).fingerprint());
    assert_ne!(one.fingerprint(), LoaderConfig { batch_size: 2, ..one.clone() }.fingerprint(), "another global batch is another run");
    let by_id = |cfg: &LoaderConfig| -> Vec<std::collections::BTreeMap<u64, Vec<u8>>> {
        Loader::new(ds.clone(), cfg.clone())
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                (0..b.len).map(|i| (b.sample_ids()[i], b.image(i).to_vec())).collect()
            })
            .collect()
    };
    let single = by_id(&one);
    let (r0, r1) = (by_id(&half(0)), by_id(&half(1)));
    assert!(!single.is_empty());
    assert_eq!(single.len(), r0.len());
    for (k, step) in single.iter().enumerate() {
        let mut union = r0[k].clone();
        union.extend(r1[k].clone());
        assert_eq!(&union, step, "step {k}");
    }
    // A state taken on one rank resumes on two.
    let mut l = Loader::new(ds.clone(), one.clone()).unwrap();
    l.next();
    assert!(Loader::resume(ds.clone(), half(1), l.state()).is_ok());
}

/// MAE's fine-tuning augmentations in the workers: RandAugment, random
/// erasing and mixup / cutmix give the same batches (images and soft labels) with 1 and
/// 2 threads and after a resume, and soft labels sum to 1.
#[test]
fn erasing_and_mixup_are_deterministic_and_resume_exactly() {
    use srmae_pipeline::{Mixup, RandomErasing};
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_folder(tmp.path(), 8)).unwrap());
    let classes = ds.classes().len();
    let cfg = |threads| LoaderConfig {
        batch_size: 4,
        patch: srmae_pipeline::PatchConfig::None,
        randaugment: Some(srmae_pipeline::RandAugment::parse("rand-m9-mstd0.5-inc1", &[0.485, 0.456, 0.406]).unwrap()),
        erasing: Some(RandomErasing::new(0.5, &[0.5, 0.5, 0.5], &[0.25, 0.25, 0.25])),
        mixup: Some(Mixup::mae(classes)),
        ..photo_cfg(threads)
    };
    let run = |c: &LoaderConfig, skip: usize| -> Vec<(Vec<u8>, Vec<f32>)> {
        let mut l = Loader::new(ds.clone(), c.clone()).unwrap();
        let head: Vec<_> = l.by_ref().take(skip).map(|b| b.unwrap()).map(|b| (b.images().to_vec(), b.soft_labels().to_vec())).collect();
        let state = l.state();
        drop(l);
        let tail: Vec<_> = Loader::resume(ds.clone(), c.clone(), state).unwrap().map(|b| b.unwrap()).map(|b| (b.images().to_vec(), b.soft_labels().to_vec())).collect();
        [head, tail].concat()
    };
    let one = run(&cfg(1), 100);
    assert!(one.len() >= 2);
    assert_eq!(run(&cfg(2), 100), one, "thread count changed the batches");
    assert_eq!(run(&cfg(2), 1), one, "resume changed the batches");
    for (_, soft) in &one {
        assert_eq!(soft.len() % classes, 0);
        for row in soft.chunks(classes) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
    }
    // Without them the batch has no soft labels, and the fingerprint is the old one.
    let plain = LoaderConfig { randaugment: None, erasing: None, mixup: None, ..cfg(1) };
    assert!(Loader::new(ds.clone(), plain.clone()).unwrap().next().unwrap().unwrap().soft_labels().is_empty());
    assert_ne!(plain.fingerprint(), cfg(1).fingerprint());
}

#[test]
fn next_within_polls_and_yields_the_batches_next_does() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = Arc::new(PackedDataset::open(&pack_fmnist_test(tmp.path())).unwrap());
    let cfg = LoaderConfig { threads: 2, channels: 1, patch: PatchConfig::srmae(4), ..LoaderConfig::pretrain(28, 4, 500) };
    let expected: Vec<Vec<u64>> = Loader::new(ds.clone(), cfg.clone()).unwrap().map(|b| b.unwrap().sample_ids().to_vec()).collect();
    let mut loader = Loader::new(ds, cfg).unwrap();
    let (mut got, mut waits) = (Vec::new(), 0);
    loop {
        match loader.next_within(Duration::ZERO) {
            srmae_pipeline::Next::Ready(b) => got.push(b.unwrap().sample_ids().to_vec()),
            srmae_pipeline::Next::Waiting => waits += 1,
            srmae_pipeline::Next::End => break,
        }
    }
    // Polling with no wait returns `Waiting` until each batch is ready
    // (how often depends on the machine), and never changes the batches.
    assert_eq!(got, expected, "after {waits} empty polls");
    assert!(matches!(loader.next_within(Duration::ZERO), srmae_pipeline::Next::End));
}
