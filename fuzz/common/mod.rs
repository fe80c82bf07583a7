//! Shared by the fuzz targets: a private scratch folder per process, and
//! the consistency checks every reader's output must pass.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use srmae_datasets::format::dataset::PackedDataset;
use srmae_datasets::sources::{Payload, Source};

/// A scratch folder for this fuzzing process (readers take paths).
pub fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("SRMAE_FUZZ_TMP").map(PathBuf::from).unwrap_or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() { shm } else { std::env::temp_dir() }
        });
        let d = base.join(format!("srmae-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("writing a scratch file");
    p
}

/// Every item loads as pixels of the declared size with a label inside
/// the classes, or is refused with a reason.
pub fn check_source(src: &dyn Source) {
    for i in 0..src.len().min(256) {
        let _ = src.name(i);
        if let Ok(item) = src.load(i) {
            if let Payload::Pixels { width, height, channels, data } = item.payload {
                assert_eq!(data.len(), width as usize * height as usize * channels as usize);
            }
            if let Some(l) = item.label {
                assert!((l as usize) < src.classes().len(), "label {l} beyond {} classes", src.classes().len());
            }
        }
    }
}

/// Every record of an opened dataset decodes to pixels of its declared
/// size or is refused; nothing panics.
pub fn check_dataset(ds: &PackedDataset) {
    for i in 0..ds.len().min(256) {
        if let Ok(rec) = ds.record(i) {
            let e = rec.entry;
            if let Ok(img) = srmae_datasets::decode_record(&rec) {
                assert_eq!(img.width, e.width, "record {i}: width differs from the index");
                assert_eq!(img.height, e.height, "record {i}: height differs from the index");
                assert_eq!(img.pixels.len(), img.width as usize * img.height as usize * img.channels as usize);
            }
        }
    }
}
