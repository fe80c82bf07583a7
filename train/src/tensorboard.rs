//! TensorBoard event files: the run's scalars (loss, lr, gradient norm,
//! images/s, data wait, validation top-1) in `DIR/tensorboard/`, readable by
//! `tensorboard --logdir DIR`.
//!
//! Format (tensorflow/core/util/event.proto, TFRecord framing): each record
//! is `u64 length (LE) | u32 masked CRC-32C of the length bytes | data |
//! u32 masked CRC-32C of data`, masked as `((crc >> 15) | (crc << 17)) +
//! 0xa282ead8`. The data is an `Event` protocol buffer: `wall_time` (field 1,
//! double), `step` (2, int64), and either `file_version` (3, string, the first
//! record: "brain.Event:2") or `summary` (5: repeated `value` (1) of `tag`
//! (1, string) and `simple_value` (2, float)). The few fields are encoded by
//! hand; `read_events` parses them back (tests and `srmae` itself).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// CRC-32C, masked as TFRecord stores it.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire as u64, out);
}

fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// One `Event` message.
fn event(wall_time: f64, step: i64, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = Vec::new();
    key(1, 1, &mut e);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(2, 0, &mut e);
    varint(step as u64, &mut e);
    body(&mut e);
    e
}

/// Appends scalar events to one event file.
pub struct EventWriter {
    out: BufWriter<File>,
    pub path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir` (created), named as TensorFlow names them.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = wall_time();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}", now as u64, std::process::id()));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = EventWriter { out: BufWriter::new(file), path };
        let first = event(now, 0, |e| bytes_field(3, b"brain.Event:2", e));
        w.record(&first)?;
        w.flush()?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let io = |e| anyhow::Error::from(e);
        self.out.write_all(&len).map_err(io)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes()).map_err(io)?;
        self.out.write_all(data).map_err(io)?;
        self.out.write_all(&masked_crc(data).to_le_bytes()).map_err(io)?;
        Ok(())
    }

    /// Scalars of one step (one `Event` with a `Summary` of `tag -> value`).
    pub fn scalars(&mut self, step: u64, wall_time: f64, values: &[(&str, f64)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let e = event(wall_time, step as i64, |e| {
            let mut summary = Vec::new();
            for (tag, v) in values {
                let mut value = Vec::new();
                bytes_field(1, tag.as_bytes(), &mut value);
                key(2, 5, &mut value);
                value.extend_from_slice(&(*v as f32).to_le_bytes());
                bytes_field(1, &value, &mut summary);
            }
            bytes_field(5, &summary, e);
        });
        self.record(&e).with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Seconds since the Unix epoch.
pub fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One scalar read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub step: i64,
    pub wall_time: f64,
    pub tag: String,
    pub value: f32,
}

fn read_varint(b: &[u8], i: &mut usize) -> Result<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let Some(&byte) = b.get(*i) else { bail!("truncated varint") };
        *i += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
}

/// Fields of a protocol-buffer message: (field, wire type, bytes for
/// length-delimited / fixed fields, value for varints).
fn fields(b: &[u8]) -> Result<Vec<(u32, u8, &[u8], u64)>> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let k = read_varint(b, &mut i)?;
        let (field, wire) = ((k >> 3) as u32, (k & 7) as u8);
        let take = |i: &mut usize, n: usize| -> Result<&[u8]> {
            let s = b.get(*i..*i + n).context("truncated field")?;
            *i += n;
            Ok(s)
        };
        match wire {
            0 => {
                let v = read_varint(b, &mut i)?;
                out.push((field, wire, &b[0..0], v));
            }
            1 => out.push((field, wire, take(&mut i, 8)?, 0)),
            5 => out.push((field, wire, take(&mut i, 4)?, 0)),
            2 => {
                let n = read_varint(b, &mut i)? as usize;
                out.push((field, wire, take(&mut i, n)?, 0));
            }
            w => bail!("wire type {w}"),
        }
    }
    Ok(out)
}

/// Every scalar of an event file, checking both CRCs of every record.
pub fn read_events(path: &Path) -> Result<Vec<Scalar>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut i = 0;
    let mut out = Vec::new();
    let mut records = 0;
    while i < b.len() {
        let head = b.get(i..i + 12).with_context(|| format!("{}: truncated record header at byte {i}", path.display()))?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if masked_crc(&head[..8]) != u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) {
            bail!("{}: record {records}: length CRC mismatch", path.display());
        }
        let data = b.get(i + 12..i + 12 + len as usize).with_context(|| format!("{}: truncated record {records}", path.display()))?;
        let crc = b.get(i + 12 + len as usize..i + 16 + len as usize).with_context(|| format!("{}: truncated record {records}", path.display()))?;
        if masked_crc(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            bail!("{}: record {records}: data CRC mismatch", path.display());
        }
        let (mut wall, mut step) = (0f64, 0i64);
        let mut values = Vec::new();
        for (field, _, bytes, v) in fields(data)? {
            match field {
                1 => wall = f64::from_le_bytes(bytes.try_into().context("wall_time")?),
                2 => step = v as i64,
                5 => {
                    for (_, _, value, _) in fields(bytes)?.into_iter().filter(|f| f.0 == 1) {
                        let (mut tag, mut x) = (String::new(), 0f32);
                        for (f, _, vb, _) in fields(value)? {
                            match f {
                                1 => tag = String::from_utf8_lossy(vb).into_owned(),
                                2 => x = f32::from_le_bytes(vb.try_into().context("simple_value")?),
                                _ => {}
                            }
                        }
                        values.push((tag, x));
                    }
                }
                _ => {}
            }
        }
        out.extend(values.into_iter().map(|(tag, value)| Scalar { step, wall_time: wall, tag, value }));
        i += 16 + len as usize;
        records += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masked CRC of TFRecord (tensorflow/core/lib/hash/crc32c.h `Mask`)
    /// on the record framing of an 8-byte zero length: a known value.
    #[test]
    fn masked_crc_matches_tensorflow() {
        // crc32c("123456789") = 0xE3069283 (the CRC-32C check value); Mask as TensorFlow.
        let crc = 0xE306_9283u32;
        assert_eq!(masked_crc(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn scalars_read_back_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(20, 1000.5, &[("train/loss", 0.25), ("train/lr", 1e-3)]).unwrap();
        w.scalars(40, 1001.5, &[("train/loss", 0.125)]).unwrap();
        w.flush().unwrap();
        let got = read_events(&w.path).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Scalar { step: 20, wall_time: 1000.5, tag: "train/loss".into(), value: 0.25 });
        assert_eq!((got[1].tag.as_str(), got[1].value), ("train/lr", 1e-3));
        assert_eq!((got[2].step, got[2].value), (40, 0.125));
        let mut bytes = std::fs::read(&w.path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&w.path, &bytes).unwrap();
        assert!(read_events(&w.path).unwrap_err().to_string().contains("CRC"));
    }
}
