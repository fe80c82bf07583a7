//! Property tests of the binary and text source readers (IDX, CIFAR,
//! FER2013): starting from valid files, random truncation, byte damage and
//! header values never make a reader panic, and whatever it accepts is
//! self-consistent (every item loads as pixels of the declared size, or is
//! refused with a reason).

use std::path::Path;

use proptest::prelude::*;

use super::{cifar::CifarSource, fer2013::Fer2013Source, idx::IdxSource, Payload, Source};

/// A mutation of a valid file.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        (0usize..4096).prop_map(Damage::Truncate),
        prop::collection::vec((0usize..4096, any::<u8>()), 1..8).prop_map(Damage::Flip),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
    ]
}

fn apply(mut b: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Truncate(n) => b.truncate(*n % (b.len() + 1)),
        Damage::Flip(f) => {
            for &(at, v) in f {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] = v;
                }
            }
        }
        Damage::Append(x) => b.extend_from_slice(x),
    }
    b
}

/// Every item loads as consistent pixels or is refused; nothing panics.
fn check_items(src: &dyn Source) {
    for i in 0..src.len().min(64) {
        let _ = src.name(i);
        if let Ok(item) = src.load(i) {
            if let Payload::Pixels { width, height, channels, data } = item.payload {
                assert_eq!(data.len(), width as usize * height as usize * channels as usize);
            }
            if let Some(l) = item.label {
                assert!((l as usize) < src.classes().len(), "label {l} beyond the classes");
            }
        }
    }
}

fn idx_file(magic: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, magic];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn idx_reader_survives_damage(n in 0u32..6, h in 0u32..6, w in 0u32..6, seed in any::<u8>(),
                                  di in damage(), dl in damage(), big in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..n * h * w).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_add(seed) % 12).collect();
        let dims = if big { vec![n, 0x7fff_ffff, 0x7fff_ffff] } else { vec![n, h, w] };
        write(tmp.path(), "train-images-idx3-ubyte", &apply(idx_file(3, &dims, &pixels), &di));
        write(tmp.path(), "train-labels-idx1-ubyte", &apply(idx_file(1, &[n], &labels), &dl));
        if let Ok(src) = IdxSource::open(tmp.path(), "train") {
            check_items(&src);
        }
    }

    #[test]
    fn cifar_reader_survives_damage(records in 0usize..3, hundred in any::<bool>(), d in damage()) {
        let tmp = tempfile::tempdir().unwrap();
        let rec = 3072 + if hundred { 2 } else { 1 };
        let bytes: Vec<u8> = (0..records * rec).map(|i| (i % 251) as u8).collect();
        write(tmp.path(), if hundred { "test.bin" } else { "test_batch.bin" }, &apply(bytes, &d));
        if let Ok(src) = CifarSource::open(tmp.path(), hundred, "test") {
            check_items(&src);
        }
    }

    #[test]
    fn fer2013_reader_survives_damage(rows in prop::collection::vec((0u8..9, 0usize..2400, 0u8..4), 0..4), d in damage()) {
        let tmp = tempfile::tempdir().unwrap();
        let mut csv = String::from("emotion,pixels,Usage\n");
        for (label, npx, usage) in rows {
            let px: Vec<String> = (0..npx).map(|i| (i % 256).to_string()).collect();
            let usage = ["Training", "PublicTest", "PrivateTest", "Other"][usage as usize];
            csv.push_str(&format!("{label},{},{usage}\n", px.join(" ")));
        }
        let path = tmp.path().join("fer2013.csv");
        std::fs::write(&path, apply(csv.into_bytes(), &d)).unwrap();
        if let Ok(src) = Fer2013Source::open(&path, "train") {
            check_items(&src);
        }
    }
}
