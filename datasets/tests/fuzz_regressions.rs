//! Inputs that once crashed a fuzz target (`fuzz/`), replayed exactly as the
//! target does: each must now be refused with an error, not panic or yield
//! pixels of the wrong size.

use std::path::Path;

use srmae_datasets::format::layout::{IndexEntry, ENTRY_LEN};
use srmae_datasets::format::reader::RecordRef;

fn input(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(name)).unwrap()
}

/// The `record_decode` target's setup: entry from the first 40 bytes,
/// stored bytes from the rest, checksum made to match.
fn record_decode(data: &[u8]) -> Result<srmae_datasets::DecodedImage, srmae_datasets::Error> {
    let (head, stored) = data.split_at(ENTRY_LEN);
    let mut entry = IndexEntry::decode(head);
    entry.stored_len = stored.len() as u32;
    entry.checksum = crc32c::crc32c(stored);
    entry.width %= 4096;
    entry.height %= 4096;
    let rec = RecordRef { entry, stored, shard: Path::new("fuzz.bin"), local: 0 };
    rec.verify_checksum()?;
    srmae_datasets::decode_record(&rec)
}

/// A raw record of 8x16x1 declared pixels holding 460 bytes: decoding used to
/// return all 460 bytes as the image.
#[test]
fn raw_record_whose_length_differs_from_its_geometry_is_refused() {
    let err = record_decode(&input("record_decode-raw-length-mismatch")).unwrap_err().to_string();
    assert!(err.contains("needs 128 bytes"), "{err}");
}

/// Unknown encodings and impossible channel counts are refused by the
/// decoder itself, not only by the shard reader's index checks.
#[test]
fn unknown_encoding_and_bad_channels_are_refused() {
    let mut data = input("record_decode-raw-length-mismatch");
    data[29] = 7; // encoding code
    assert!(record_decode(&data).unwrap_err().to_string().contains("unknown encoding"));
    let mut data = input("record_decode-raw-length-mismatch");
    data[28] = 2; // channels
    assert!(record_decode(&data).unwrap_err().to_string().contains("bad geometry"));
}

/// A zstd record declaring a 2.4 GB payload: decoding used to allocate it
/// before decompressing. Now refused from the entry and the frame header.
#[test]
fn zstd_record_with_a_huge_declared_length_is_refused_without_allocating() {
    let err = record_decode(&input("record_decode-zstd-huge-declared-length")).unwrap_err().to_string();
    assert!(err.contains("exceeds the limit"), "{err}");
}
