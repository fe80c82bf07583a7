//! Property tests of the shard format: any set of records round-trips
//! exactly, and no damage to a shard makes the reader panic or read out of
//! bounds (every access returns data or an error).

use proptest::prelude::*;

use super::decode::decode_record;
use super::layout::{Encoding, FLAG_ZSTD, NO_LABEL};
use super::reader::Shard;
use super::writer::{write_shard, StoredRecord};

fn raw_record() -> impl Strategy<Value = StoredRecord> {
    (1u32..12, 1u32..12, prop_oneof![Just(1u8), Just(3u8)], any::<u32>(), any::<bool>(), any::<u64>()).prop_map(
        |(w, h, c, label, compress, seed)| {
            let n = (w * h * c as u32) as usize;
            // Low-entropy pixels so zstd has something to do.
            let pixels: Vec<u8> = (0..n).map(|i| ((seed >> (i % 7)) as u8) & 0x0f).collect();
            let (stored, flags) =
                if compress { (zstd::bulk::compress(&pixels, 3).unwrap(), FLAG_ZSTD) } else { (pixels.clone(), 0) };
            StoredRecord {
                stored,
                raw_len: n as u32,
                label: if label % 5 == 0 { NO_LABEL } else { label % 1000 },
                width: w,
                height: h,
                channels: c,
                encoding: Encoding::Raw,
                flags,
            }
        },
    )
}

fn write_tmp(records: &[StoredRecord], first: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.srs");
    write_shard(&path, first, records).unwrap();
    (dir, path)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_round_trip(records in prop::collection::vec(raw_record(), 0..40), first in 0u64..1_000_000) {
        let (_dir, path) = write_tmp(&records, first);
        let shard = Shard::open(&path).unwrap();
        prop_assert_eq!(shard.len(), records.len() as u64);
        prop_assert_eq!(shard.header().first_record, first);
        shard.check_padding().unwrap();
        for (i, want) in records.iter().enumerate() {
            let rec = shard.record(i as u64, true).unwrap();
            prop_assert_eq!(rec.stored, &want.stored[..]);
            prop_assert_eq!(rec.entry.label, want.label);
            prop_assert_eq!((rec.entry.width, rec.entry.height, rec.entry.channels), (want.width, want.height, want.channels));
            let img = decode_record(&rec).unwrap();
            let pixels = if want.flags & FLAG_ZSTD != 0 { zstd::bulk::decompress(&want.stored, 1 << 20).unwrap() } else { want.stored.clone() };
            prop_assert_eq!(img.pixels, pixels);
        }
    }

    #[test]
    fn damage_never_panics(
        records in prop::collection::vec(raw_record(), 1..12),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (_dir, path) = write_tmp(&records, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let pristine = bytes.clone();
        for (at, mask) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Some(t) = truncate {
            bytes.truncate(t.index(bytes.len()));
        }
        std::fs::write(&path, &bytes).unwrap();
        // Open may fail; if it succeeds, every record is either returned
        // intact or reported as damaged, never returned with wrong pixels.
        if let Ok(shard) = Shard::open(&path) {
            let clean = Shard::open(&{
                let p = path.with_extension("clean");
                std::fs::write(&p, &pristine).unwrap();
                p
            }).unwrap();
            for i in 0..shard.len() {
                match shard.record(i, true).and_then(|r| decode_record(&r)) {
                    Ok(img) => {
                        let want = decode_record(&clean.record(i, true).unwrap()).unwrap();
                        prop_assert_eq!(img, want, "record {} returned wrong pixels", i);
                    }
                    Err(e) => prop_assert!(e.to_string().contains("record")),
                }
            }
        }
    }
}
