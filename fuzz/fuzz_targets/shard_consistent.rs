//! Structure-aware shard fuzzing: the input's header and index are patched
//! to be self-consistent (file length, index checksum, header checksum,
//! record checksums), so the fuzzer explores what lies past the checksums:
//! the index validation (offsets, lengths, overlaps, encodings, flags) and
//! the record decoders (raw, zstd, JPEG) on hostile but "valid-looking"
//! shards.
#![no_main]
#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::format::layout::{Header, IndexEntry, ENTRY_LEN, HEADER_LEN, MAGIC};
use srmae_datasets::format::reader::Shard;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN {
        return;
    }
    let mut b = data.to_vec();
    b[0..8].copy_from_slice(&MAGIC);
    // Header fields from the input, sizes and checksums made consistent.
    let count = (u16::from_le_bytes([b[16], b[17]]) as usize).min((b.len() - HEADER_LEN) / ENTRY_LEN);
    let index_end = HEADER_LEN + count * ENTRY_LEN;
    // Record checksums over whatever the entries point at.
    for i in 0..count {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let mut e = IndexEntry::decode(&b[at..at + ENTRY_LEN]);
        let (start, len) = (e.offset as usize, e.stored_len as usize);
        if let Some(stored) = start.checked_add(len).and_then(|end| b.get(start..end)) {
            e.checksum = crc32c::crc32c(stored);
            b[at..at + ENTRY_LEN].copy_from_slice(&e.encode());
        }
    }
    let header = Header {
        version: u16::from_le_bytes([b[8], b[9]]),
        record_count: count as u64,
        first_record: 0,
        index_offset: HEADER_LEN as u64,
        data_offset: srmae_datasets::format::layout::data_offset_for(count as u64),
        file_len: b.len() as u64,
        index_crc: crc32c::crc32c(&b[HEADER_LEN..index_end]),
    };
    b[..HEADER_LEN].copy_from_slice(&header.encode());
    let path = common::file("shard-00000.bin", &b);
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
