//! FER2013 CSV: every line through the row parser, and the file through the
//! source (any bytes, including invalid UTF-8).
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::sources::fer2013::{parse_row, Fer2013Source};

fuzz_target!(|data: &[u8]| {
    for line in String::from_utf8_lossy(data).lines() {
        if let Ok((_, px)) = parse_row(line) {
            assert_eq!(px.len(), 48 * 48);
        }
    }
    let path = common::file("fer2013.csv", data);
    for split in ["train", "test"] {
        if let Ok(src) = Fer2013Source::open(&path, split) {
            common::check_source(&src);
        }
    }
});
