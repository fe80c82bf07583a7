//! The loader's per-sample path on one hostile record: zstd, partial
//! (cropped, DCT-scaled) libjpeg-turbo decoding, RandomResizedCrop or
//! centre crop, resize, flip, channel conversion. The first 40 bytes are the
//! index entry, the next byte picks the augmentation and output channels,
//! the rest are the stored bytes. Never panics; errors are what the loader
//! skips and counts.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use srmae_datasets::format::layout::{IndexEntry, ENTRY_LEN};
use srmae_datasets::format::reader::RecordRef;
use srmae_pipeline::rng::{Purpose, SampleRng};
use srmae_pipeline::sample::{SampleProcessor, StageNanos};
use srmae_pipeline::Augment;

fuzz_target!(|data: &[u8]| {
    if data.len() < ENTRY_LEN + 1 {
        return;
    }
    let (head, rest) = data.split_at(ENTRY_LEN);
    let (knobs, stored) = (rest[0], &rest[1..]);
    let mut entry = IndexEntry::decode(head);
    entry.stored_len = stored.len() as u32;
    entry.checksum = crc32c::crc32c(stored);
    entry.width %= 2048;
    entry.height %= 2048;
    let rec = RecordRef { entry, stored, shard: Path::new("fuzz.bin"), local: 0 };
    let size = [8u32, 16, 32, 64][(knobs & 3) as usize];
    let augment = if knobs & 4 == 0 {
        Augment::RandomResizedCrop { size, scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0), hflip: 0.5 }
    } else {
        Augment::CenterCrop { size, crop_pct: 0.875 }
    };
    let channels = if knobs & 8 == 0 { 3 } else { 1 };
    let mut proc = SampleProcessor::new().expect("decoder");
    proc.set_fast_decode(knobs & 16 != 0);
    let mut rng = SampleRng::new(knobs as u64, 0, 0, Purpose::Augment);
    let mut out = vec![0u8; channels as usize * (size * size) as usize];
    let mut t = StageNanos::default();
    let _ = proc.process(&rec, &augment, &mut rng, channels, &mut out, &mut t);
});
