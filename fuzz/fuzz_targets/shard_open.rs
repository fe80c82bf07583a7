//! A shard file of arbitrary bytes: opening it, reading and decoding every
//! record never panics, never reads out of bounds, and whatever decodes
//! has the geometry its index declares. (Random bytes mostly fail the
//! header checks; `shard_consistent` goes deeper.)
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::format::reader::Shard;

fuzz_target!(|data: &[u8]| {
    let path = common::file("shard-00000.bin", data);
    if let Ok(shard) = Shard::open(&path) {
        for i in 0..shard.len().min(256) {
            if let Ok(rec) = shard.record(i, true) {
                if let Ok(img) = srmae_datasets::decode_record(&rec) {
                    assert_eq!((img.width, img.height), (rec.entry.width, rec.entry.height));
                    assert_eq!(img.pixels.len(), img.width as usize * img.height as usize * img.channels as usize);
                }
            }
        }
    }
});
