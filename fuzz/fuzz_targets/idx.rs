//! IDX (MNIST / Fashion-MNIST) images and labels files: the input is split
//! in two at a position given by its first byte. Opening never panics; an
//! accepted source yields consistent items.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::sources::idx::{parse_idx, IdxSource};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = 1 + (data[0] as usize * data.len()) / 256;
    let (images, labels) = data[1..].split_at((cut - 1).min(data.len() - 1));
    let _ = parse_idx(std::path::Path::new("fuzz"), images);
    common::file("train-images-idx3-ubyte", images);
    common::file("train-labels-idx1-ubyte", labels);
    if let Ok(src) = IdxSource::open(common::scratch(), "train") {
        common::check_source(&src);
    }
});
