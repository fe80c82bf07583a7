//! CIFAR-10 / CIFAR-100 binary batches (the first byte picks which).
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::sources::cifar::CifarSource;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let hundred = which & 1 == 1;
    let dir = common::scratch().join(if hundred { "c100" } else { "c10" });
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join(if hundred { "test.bin" } else { "test_batch.bin" }), body).expect("scratch");
    if let Ok(src) = CifarSource::open(&dir, hundred, "test") {
        common::check_source(&src);
    }
});
