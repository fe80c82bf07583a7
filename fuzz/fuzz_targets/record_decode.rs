//! One record, any encoding: the first 40 bytes are its index entry, the
//! rest its stored bytes (checksum made to match). Decoding never panics,
//! never allocates from a hostile length, and a decoded image has the
//! declared geometry.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::format::layout::{IndexEntry, ENTRY_LEN};
use srmae_datasets::format::reader::RecordRef;

fuzz_target!(|data: &[u8]| {
    if data.len() < ENTRY_LEN {
        return;
    }
    let (head, stored) = data.split_at(ENTRY_LEN);
    let mut entry = IndexEntry::decode(head);
    entry.stored_len = stored.len() as u32;
    entry.checksum = crc32c::crc32c(stored);
    // Keep declared sizes plausible so the test is about parsing, not about
    // refusing absurd numbers (the reader's index checks cover those).
    entry.width %= 4096;
    entry.height %= 4096;
    let rec = RecordRef { entry, stored, shard: Path::new("fuzz.bin"), local: 0 };
    if rec.verify_checksum().is_err() {
        return;
    }
    if let Ok(img) = srmae_datasets::decode_record(&rec) {
        assert_eq!((img.width, img.height), (entry.width, entry.height));
        assert_eq!(img.pixels.len(), img.width as usize * img.height as usize * img.channels as usize);
    }
});
