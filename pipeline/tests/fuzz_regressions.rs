//! Inputs that once crashed the `loader_sample` fuzz target (`fuzz/`),
//! replayed exactly as the target does: the sample is refused with an error
//! (which the loader skips and counts), never a panic.

use std::path::Path;

use srmae_datasets::format::layout::{IndexEntry, ENTRY_LEN};
use srmae_datasets::format::reader::RecordRef;
use srmae_pipeline::rng::{Purpose, SampleRng};
use srmae_pipeline::sample::{SampleProcessor, StageNanos};
use srmae_pipeline::Augment;

fn loader_sample(data: &[u8]) -> Result<(), srmae_pipeline::SampleError> {
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
    let mut proc = SampleProcessor::new()?;
    proc.set_fast_decode(knobs & 16 != 0);
    let mut rng = SampleRng::new(knobs as u64, 0, 0, Purpose::Augment);
    let mut out = vec![0u8; channels as usize * (size * size) as usize];
    proc.process(&rec, &augment, &mut rng, channels, &mut out, &mut StageNanos::default())
}

/// A raw record declaring 8x16x1 pixels whose stored bytes are fewer: the
/// resize sliced past the payload's end.
#[test]
fn raw_record_shorter_than_its_geometry_is_an_error() {
    let data = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/loader_sample-raw-short-payload")).unwrap();
    let err = loader_sample(&data).unwrap_err();
    assert!(matches!(err, srmae_pipeline::SampleError::ShortPixels { needed: 128, .. }), "{err}");
}

/// A raw record declaring 2 channels: the colour conversion indexed past
/// the output row. Channel counts other than 1 and 3 are now refused.
#[test]
fn record_with_two_channels_is_an_error() {
    let data = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/loader_sample-two-channels")).unwrap();
    let err = loader_sample(&data).unwrap_err();
    assert!(matches!(err, srmae_pipeline::SampleError::Geometry(_)) && err.to_string().contains("bad geometry"), "{err}");
}
