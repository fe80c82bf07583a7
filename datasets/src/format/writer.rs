//! Writes one shard file atomically: header, index table, then the records,
//! to `<name>.tmp`, fsynced and renamed into place. The whole shard is laid
//! out from records already encoded in memory, so the index can precede them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::layout::{self, Header, IndexEntry, ENTRY_LEN, HEADER_LEN, RECORD_ALIGN};
use crate::error::{Error, Result};

/// A record ready to be written: its stored bytes and the index fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub stored: Vec<u8>,
    pub raw_len: u32,
    pub label: u32,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub encoding: layout::Encoding,
    pub flags: u16,
}

/// What was written: the file name, its size and whole-file crc32c.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenShard {
    pub path: PathBuf,
    pub bytes: u64,
    pub crc32c: u32,
}

/// A writer that keeps a running crc32c of everything written.
struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lays out the index entries for `records` starting at the record region.
fn index_for(records: &[StoredRecord]) -> (Vec<IndexEntry>, u64) {
    let mut offset = layout::data_offset_for(records.len() as u64);
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        entries.push(IndexEntry {
            offset,
            stored_len: r.stored.len() as u32,
            raw_len: r.raw_len,
            label: r.label,
            width: r.width,
            height: r.height,
            channels: r.channels,
            encoding: r.encoding.code(),
            flags: r.flags,
            checksum: crc32c::crc32c(&r.stored),
        });
        offset = layout::align_up(offset + r.stored.len() as u64, RECORD_ALIGN);
    }
    (entries, offset)
}

/// Writes `records` as a shard at `path` (via `path.tmp` and a rename).
/// `first_record` is the global index of the first record.
pub fn write_shard(path: &Path, first_record: u64, records: &[StoredRecord]) -> Result<WrittenShard> {
    for (i, r) in records.iter().enumerate() {
        if u32::try_from(r.stored.len()).is_err() {
            return Err(Error::InvalidOption(format!(
                "record {i} of {} is {} bytes, over the 4 GiB record limit",
                path.display(),
                r.stored.len()
            )));
        }
    }
    let (entries, file_len) = index_for(records);
    let mut index = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in &entries {
        index.extend_from_slice(&e.encode());
    }
    let header = Header {
        version: layout::VERSION,
        record_count: records.len() as u64,
        first_record,
        index_offset: HEADER_LEN as u64,
        data_offset: layout::data_offset_for(records.len() as u64),
        file_len,
        index_crc: crc32c::crc32c(&index),
    };
    let tmp = tmp_path(path);
    let io = |e| Error::io(&tmp, e);
    let file = File::create(&tmp).map_err(io)?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
        written: 0,
    };
    w.write_all(&header.encode()).map_err(io)?;
    w.write_all(&index).map_err(io)?;
    pad_to(&mut w, header.data_offset).map_err(io)?;
    for (r, e) in records.iter().zip(&entries) {
        pad_to(&mut w, e.offset).map_err(io)?;
        w.write_all(&r.stored).map_err(io)?;
    }
    pad_to(&mut w, file_len).map_err(io)?;
    let (crc, written) = (w.crc, w.written);
    let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(WrittenShard {
        path: path.to_path_buf(),
        bytes: written,
        crc32c: crc,
    })
}

fn pad_to<W: Write>(w: &mut CrcWriter<W>, target: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while w.written < target {
        let n = ((target - w.written) as usize).min(ZEROS.len());
        w.write_all(&ZEROS[..n])?;
    }
    Ok(())
}

/// The temporary name a file is written under before its atomic rename.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}
