//! Packing real and generated sources end to end through the library:
//! round trips, determinism across thread counts, bad inputs, corruption.

use std::path::Path;

use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::sources::{open_source, Source, SourceKind, SourceOptions};
use srmae_datasets::{pack, Encoding, PackOptions, PackedDataset};
use srmae_e2e::*;

fn opts(encoding: Encoding) -> PackOptions {
    PackOptions {
        encoding,
        ..PackOptions::default()
    }
}

fn pack_dir(kind: SourceKind, src: &Path, split: &str, out: &Path, o: &PackOptions) -> srmae_datasets::PackReport {
    let sopts = SourceOptions {
        split: split.into(),
        ..Default::default()
    };
    let source = open_source(kind, src, &sopts).expect("open source");
    let info = SourceInfo {
        kind: source.kind().into(),
        path: src.display().to_string(),
    };
    pack(source.as_ref(), info, split, out, o, &|_| {}).expect("pack")
}

#[test]
fn fashion_mnist_idx_round_trip() {
    let src = fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fm");
    let report = pack_dir(SourceKind::Idx, &src, "test", &out, &opts(Encoding::Raw));
    assert_eq!(report.manifest.num_records, 10_000);
    assert_eq!(report.manifest.classes[9], "Ankle boot");
    let ds = PackedDataset::open(&out).unwrap();
    // Every record equals the IDX pixels; every class has 1000 images.
    let idx = srmae_datasets::sources::idx::IdxSource::open(&src, "test").unwrap();
    let mut per_class = [0u32; 10];
    for i in 0..ds.len() {
        let img = ds.decode(i).unwrap();
        let item = idx.load(i as usize).unwrap();
        let srmae_datasets::sources::Payload::Pixels { data, .. } = item.payload else { panic!("pixels") };
        assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
        assert_eq!(img.pixels, data, "record {i}");
        let label = ds.record(i).unwrap().entry.label().unwrap();
        assert_eq!(Some(label), item.label);
        per_class[label as usize] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
    let stored: u64 = report.manifest.stats.stored_bytes;
    assert!(stored < 10_000 * 784 * 8 / 10, "raw zstd should compress Fashion-MNIST, got {stored} bytes");
}

#[test]
fn image_folder_jpeg_passthrough_and_png_reencode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let n = make_image_folder(&src, &["cat", "dog"], 6);
    let out = tmp.path().join("packed");
    let report = pack_dir(SourceKind::Folder, &src, "train", &out, &opts(Encoding::Jpeg));
    assert_eq!(report.manifest.num_records as usize, n);
    assert_eq!(report.manifest.classes, vec!["cat", "dog"]);
    assert!(report.rejects.is_empty(), "{:?}", report.rejects);
    let ds = PackedDataset::open(&out).unwrap();
    let source = srmae_datasets::sources::folder::ImageFolder::open(&src).unwrap();
    for i in 0..ds.len() {
        let rec = ds.record(i).unwrap();
        let name = source.name(i as usize);
        let original = std::fs::read(&name).unwrap();
        let mut buf = Vec::new();
        let payload = srmae_datasets::format::decode::payload(&rec, &mut buf).unwrap();
        if name.ends_with(".jpg") {
            assert_eq!(payload, &original[..], "JPEG {name} must be stored byte for byte");
            assert_eq!(rec.entry.flags & srmae_datasets::format::layout::FLAG_REENCODED, 0);
        } else {
            assert_ne!(rec.entry.flags & srmae_datasets::format::layout::FLAG_REENCODED, 0, "{name}");
        }
        let img = ds.decode(i).unwrap();
        let reference = image::open(&name).unwrap().into_rgb8();
        assert_eq!((img.width, img.height), reference.dimensions());
        assert_eq!(rec.entry.label(), Some(if name.contains("/cat/") { 0 } else { 1 }));
    }
}

#[test]
fn raw_encoding_is_lossless_and_max_side_shrinks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_image_folder(&src, &["a"], 3);
    let big = pattern(400, 100, 7);
    big.save(src.join("a/big.png")).unwrap();
    let out = tmp.path().join("raw");
    pack_dir(SourceKind::Folder, &src, "train", &out, &opts(Encoding::Raw));
    let ds = PackedDataset::open(&out).unwrap();
    // Sorted listing: big.png first.
    let img = ds.decode(0).unwrap();
    assert_eq!(img.pixels, big.as_raw().clone(), "raw must be lossless");

    let out2 = tmp.path().join("small");
    let o = PackOptions {
        max_side: Some(64),
        ..opts(Encoding::Jpeg)
    };
    let report = pack_dir(SourceKind::Folder, &src, "train", &out2, &o);
    let ds2 = PackedDataset::open(&out2).unwrap();
    let e = ds2.record(0).unwrap().entry;
    assert_eq!((e.width, e.height), (64, 16));
    assert!(report.manifest.stats.reencoded >= 1);
    for i in 0..ds2.len() {
        let e = ds2.record(i).unwrap().entry;
        assert!(e.width.max(e.height) <= 64);
        ds2.decode(i).unwrap();
    }
}

#[test]
fn output_is_byte_identical_across_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_image_folder(&src, &["a", "b", "c"], 20);
    let mut dirs = Vec::new();
    for threads in [1, 3] {
        let out = tmp.path().join(format!("t{threads}"));
        let o = PackOptions {
            threads,
            shard_bytes: 16 << 10, // several shards
            ..opts(Encoding::Jpeg)
        };
        let r = pack_dir(SourceKind::Folder, &src, "train", &out, &o);
        assert!(r.manifest.shards.len() >= 3, "want several shards, got {}", r.manifest.shards.len());
        dirs.push(out);
    }
    let names = |d: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&dirs[0]), names(&dirs[1]));
    for name in names(&dirs[0]) {
        assert_eq!(
            std::fs::read(dirs[0].join(&name)).unwrap(),
            std::fs::read(dirs[1].join(&name)).unwrap(),
            "{name} differs between 1 and 3 threads"
        );
    }
}

#[test]
fn cifar10_and_fer2013_sources() {
    let tmp = tempfile::tempdir().unwrap();
    // CIFAR-10 test batch with 3 records: label k, planar pixels R=k, G=100+k, B=200+k.
    let cifar = tmp.path().join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    let mut b = Vec::new();
    for k in 0u8..3 {
        b.push(k);
        for v in [k, 100 + k, 200 + k] {
            b.extend(std::iter::repeat_n(v, 1024));
        }
    }
    std::fs::write(cifar.join("test_batch.bin"), &b).unwrap();
    assert_eq!(SourceKind::detect(&cifar).unwrap(), SourceKind::Cifar10);
    let out = tmp.path().join("c");
    pack_dir(SourceKind::Cifar10, &cifar, "test", &out, &opts(Encoding::Raw));
    let ds = PackedDataset::open(&out).unwrap();
    assert_eq!(ds.len(), 3);
    let img = ds.decode(2).unwrap();
    assert_eq!(&img.pixels[..6], &[2, 102, 202, 2, 102, 202], "planar -> HWC");
    assert_eq!(ds.record(2).unwrap().entry.label(), Some(2));
    assert_eq!(ds.classes()[0], "airplane");

    // FER2013: two training rows, one test row, one malformed training row.
    let px = |v: u8| vec![v.to_string(); 2304].join(" ");
    let csv = format!(
        "emotion,pixels,Usage\n3,{},Training\n0,{},PrivateTest\n5,{},Training\n9,{},Training\n",
        px(10),
        px(20),
        px(30),
        px(40)
    );
    let fer = tmp.path().join("fer2013.csv");
    std::fs::write(&fer, csv).unwrap();
    let out = tmp.path().join("f");
    let r = pack_dir(SourceKind::Fer2013, &fer, "train", &out, &opts(Encoding::Raw));
    assert_eq!(r.manifest.num_records, 2);
    assert_eq!(r.rejects.len(), 1);
    assert!(r.rejects[0].input.ends_with(":5"), "names the line: {:?}", r.rejects[0]);
    assert!(r.rejects[0].reason.contains("emotion 9"));
    let ds = PackedDataset::open(&out).unwrap();
    assert_eq!(ds.decode(1).unwrap().pixels, vec![30; 2304]);
}

#[test]
fn imagenet_layout_train_and_flat_val() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imagenet");
    let wnids = ["n01440764", "n01443537"];
    make_image_folder(&root.join("train"), &wnids, 2);
    let val = root.join("val");
    std::fs::create_dir_all(&val).unwrap();
    let mut csv = String::from("ImageId,PredictionString\n");
    for k in 1..=4u32 {
        let id = format!("ILSVRC2012_val_{k:08}");
        write_jpeg(&val.join(format!("{id}.JPEG")), &pattern(50, 40, k), 90);
        // k odd -> second class, even -> first class
        csv += &format!("{id},{} 1 2 3 4\n", wnids[(k % 2) as usize]);
    }
    std::fs::write(root.join("LOC_val_solution.csv"), csv).unwrap();
    assert_eq!(SourceKind::detect(&root).unwrap(), SourceKind::ImageNet);
    let out = tmp.path().join("val");
    let r = pack_dir(SourceKind::ImageNet, &root, "val", &out, &opts(Encoding::Jpeg));
    assert_eq!(r.manifest.classes, wnids);
    let ds = PackedDataset::open(&out).unwrap();
    let labels: Vec<_> = (0..4).map(|i| ds.record(i).unwrap().entry.label().unwrap()).collect();
    assert_eq!(labels, vec![1, 0, 1, 0]);

    // The ground-truth + synset-order variant gives the same labels.
    std::fs::remove_file(root.join("LOC_val_solution.csv")).unwrap();
    // devkit order lists the second wnid first: id 1 = n01443537, id 2 = n01440764
    std::fs::write(root.join("synsets.txt"), "n01443537 x\nn01440764 y\n").unwrap();
    std::fs::write(root.join("ILSVRC2012_validation_ground_truth.txt"), "1\n2\n1\n2\n").unwrap();
    let sopts = SourceOptions {
        split: "val".into(),
        synsets: Some(root.join("synsets.txt")),
        ..Default::default()
    };
    let s = open_source(SourceKind::ImageNet, &root, &sopts).unwrap();
    let got: Vec<_> = (0..4).map(|i| s.load(i).unwrap().label.unwrap()).collect();
    assert_eq!(got, vec![1, 0, 1, 0]);
}
