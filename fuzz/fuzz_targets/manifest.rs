//! A dataset's manifest.json of arbitrary bytes (with a valid empty shard
//! list or none): reading never panics; an accepted dataset opens and
//! reads consistently.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::{Manifest, PackedDataset};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("ds");
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("manifest.json"), data).expect("scratch");
    if Manifest::read(&dir).is_ok() {
        if let Ok(ds) = PackedDataset::open(&dir) {
            common::check_dataset(&ds);
        }
    }
});
