//! Memory-mapped, validating shard reader. A shard is untrusted input: `open`
//! checks the header and every index entry against the real file size before
//! any record is touched, so later accesses are plain bounds-checked slices of
//! the map (zero copy) and can never read out of bounds or allocate from a
//! corrupt length.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use super::layout::{self, Encoding, Header, IndexEntry, ENTRY_LEN, HEADER_LEN, KNOWN_FLAGS};
use super::sigbus::{self, MapGuard};
use crate::error::{Error, Result};

/// Largest payload one record may declare (decompressed). A larger value in an
/// index entry is treated as corruption rather than an allocation request.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// The kernel maps up to this much around a faulting page of a file mapping
/// (fault-around; with large page-cache folios up to 2 MiB), so releasing a
/// record's pages means releasing the aligned windows of this size it touches.
pub const WINDOW_BYTES: usize = 2 << 20;

/// An open, validated shard.
pub struct Shard {
    path: PathBuf,
    /// SIGBUS protection of `map` (declared first: unregistered before unmapping).
    guard: MapGuard,
    map: Mmap,
    header: Header,
    /// The open file, for its current size after a fault.
    file: File,
    /// `guard.faults()` when `current_len` was last read, and that length.
    seen_faults: AtomicU64,
    current_len: AtomicU64,
}

/// A borrowed view of one record: its index entry and its stored bytes.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub entry: IndexEntry,
    /// The stored bytes (possibly a zstd frame), a slice of the mapped file.
    pub stored: &'a [u8],
    /// The shard the record lives in, for error messages.
    pub shard: &'a Path,
    /// Index of the record within its shard.
    pub local: u64,
}

impl RecordRef<'_> {
    pub fn encoding(&self) -> Encoding {
        // Validated at open.
        Encoding::from_code(self.entry.encoding).unwrap_or(Encoding::Raw)
    }

    /// Checks the stored bytes against the crc32c in the index.
    pub fn verify_checksum(&self) -> Result<()> {
        let crc = crc32c::crc32c(self.stored);
        if crc != self.entry.checksum {
            return Err(self.error(format!(
                "checksum mismatch (index {:08x}, data {crc:08x})",
                self.entry.checksum
            )));
        }
        Ok(())
    }

    /// An error naming this record's shard and local index.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::BadRecord {
            path: self.shard.to_path_buf(),
            record: self.local,
            reason: reason.into(),
        }
    }
}

impl Shard {
    /// Maps and validates the shard at `path`.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; shards are immutable once renamed into
        // place, and every access is bounds-checked against the map's length.
        // A shard that shrinks later (truncated in place while mapped) makes
        // reads past its new end fault; `sigbus` turns those into zero pages
        // and `check_intact` into errors naming the shard.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let guard = sigbus::register(map.as_ptr(), map.len());
        let header = Header::decode(&map).map_err(|r| Error::shard(path, r))?;
        let len = map.len() as u64;
        let shard = Shard {
            path: path.to_path_buf(),
            guard,
            map,
            header,
            file,
            seen_faults: AtomicU64::new(0),
            current_len: AtomicU64::new(len),
        };
        shard.validate()?;
        Ok(shard)
    }

    fn validate(&self) -> Result<()> {
        let bad = |r: String| Error::shard(&self.path, r);
        let h = &self.header;
        let len = self.map.len() as u64;
        if h.file_len != len {
            return Err(bad(format!(
                "file is {len} bytes but its header says {} (truncated or extended)",
                h.file_len
            )));
        }
        if h.index_offset != HEADER_LEN as u64 {
            return Err(bad(format!("index offset {} is not {HEADER_LEN}", h.index_offset)));
        }
        let max_records = (len - HEADER_LEN as u64) / ENTRY_LEN as u64;
        if h.record_count > max_records {
            return Err(bad(format!(
                "header claims {} records; a {len}-byte file holds at most {max_records}",
                h.record_count
            )));
        }
        if h.data_offset != layout::data_offset_for(h.record_count) || h.data_offset > len {
            return Err(bad(format!("record region offset {} is inconsistent", h.data_offset)));
        }
        let index = self.index_bytes();
        let crc = crc32c::crc32c(index);
        if crc != h.index_crc {
            return Err(bad(format!(
                "index checksum mismatch (header {:08x}, index {crc:08x})",
                h.index_crc
            )));
        }
        let mut prev_end = h.data_offset;
        for i in 0..h.record_count {
            let e = self.entry(i);
            let why = check_entry(&e, prev_end, len);
            if let Some(reason) = why {
                return Err(Error::BadRecord {
                    path: self.path.clone(),
                    record: i,
                    reason: format!("bad index entry: {reason}"),
                });
            }
            prev_end = e.offset + e.stored_len as u64;
        }
        Ok(())
    }

    fn index_bytes(&self) -> &[u8] {
        let start = HEADER_LEN;
        let end = start + self.header.record_count as usize * ENTRY_LEN;
        &self.map[start..end]
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn len(&self) -> u64 {
        self.header.record_count
    }
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }
    /// The whole mapped file (for whole-file checksums).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The index entry of local record `i` (`i < len()`, else panics).
    pub fn entry(&self, i: u64) -> IndexEntry {
        assert!(i < self.header.record_count, "record {i} out of range");
        let at = HEADER_LEN + i as usize * ENTRY_LEN;
        IndexEntry::decode(&self.map[at..at + ENTRY_LEN])
    }

    /// Reads past the end of the file that faulted in this mapping (the
    /// file shrank while mapped); 0 for an intact shard.
    pub fn faults(&self) -> u64 {
        self.guard.faults()
    }

    /// The file's size now: its size at open until a fault says otherwise,
    /// then what `fstat` says (read again after each new fault).
    pub fn current_len(&self) -> u64 {
        let faults = self.guard.faults();
        if faults != self.seen_faults.load(Ordering::Acquire) {
            if let Ok(m) = self.file.metadata() {
                self.current_len.store(m.len(), Ordering::Release);
            }
            self.seen_faults.store(faults, Ordering::Release);
        }
        self.current_len.load(Ordering::Acquire)
    }

    /// Whether local record `i` can still be read: after the file shrank
    /// under its mapping, records past the new end (or all of them, once the
    /// index is gone) fail with an error naming the shard and saying so.
    /// Call it after reading a record too: the read itself may have faulted.
    pub fn check_intact(&self, i: u64) -> Result<()> {
        if self.guard.faults() == 0 {
            return Ok(());
        }
        self.check_len(i, self.current_len())
    }

    /// The file's size as `fstat` gives it now (its size at open on error).
    pub fn file_size_now(&self) -> u64 {
        self.file.metadata().map_or(self.header.file_len, |m| m.len())
    }

    /// `check_intact` against the size `fstat` gives now, fault or not (a
    /// record that ends in the file's last page reads zeros past the new end
    /// without a fault). For records that failed their checksum.
    fn check_len_now(&self, i: u64) -> Result<()> {
        self.check_len(i, self.file_size_now())
    }

    fn check_len(&self, i: u64, now: u64) -> Result<()> {
        let was = self.header.file_len;
        if now >= was {
            return Ok(());
        }
        let shrank = |what: &str| Error::BadRecord {
            path: self.path.clone(),
            record: i,
            reason: format!("the shard shrank from {was} to {now} bytes while mapped (truncated or being re-copied?): {what}"),
        };
        if now < self.header.data_offset {
            return Err(shrank("its index is gone"));
        }
        let e = self.entry(i);
        if e.offset + e.stored_len as u64 > now {
            return Err(shrank("this record lies past the new end"));
        }
        Ok(())
    }

    /// Local record `i`, its checksum verified when `verify` is set.
    pub fn record(&self, i: u64, verify: bool) -> Result<RecordRef<'_>> {
        if i >= self.header.record_count {
            return Err(Error::OutOfRange {
                index: i,
                len: self.header.record_count,
            });
        }
        self.check_intact(i)?;
        let entry = self.entry(i);
        let start = entry.offset as usize;
        let r = RecordRef {
            entry,
            stored: &self.map[start..start + entry.stored_len as usize],
            shard: &self.path,
            local: i,
        };
        if verify {
            if let Err(e) = r.verify_checksum() {
                // A shard that shrank says why the bytes are wrong.
                self.check_len_now(i)?;
                return Err(e);
            }
        }
        Ok(r)
    }

    /// Drops this process's mapping of the pages holding local record `i`
    /// (`madvise(MADV_DONTNEED)`): the data stays in the page cache, but no
    /// longer counts in this process's resident set, so streaming a dataset
    /// larger than memory keeps RSS flat. A later read faults the pages back
    /// in from the page cache. `residency::MappedBudget` batches this.
    pub fn release(&self, i: u64) {
        if let Some((first, end)) = self.windows_of(i) {
            self.release_windows(first, end - first);
        }
    }

    /// The fault-around windows (`WINDOW_BYTES` each, aligned) that reading
    /// local record `i` maps: `first..end`; `None` if there is no such record.
    pub fn windows_of(&self, i: u64) -> Option<(usize, usize)> {
        if i >= self.header.record_count {
            return None;
        }
        let e = self.entry(i);
        let first = e.offset as usize / WINDOW_BYTES;
        let end = (e.offset as usize + e.stored_len as usize).div_ceil(WINDOW_BYTES).max(first + 1);
        Some((first, end.min(self.num_windows())))
    }

    /// Fault-around windows in the mapping.
    pub fn num_windows(&self) -> usize {
        self.map.len().div_ceil(WINDOW_BYTES)
    }

    /// Drops this process's mapping of windows `first..first + count`.
    pub fn release_windows(&self, first: usize, count: usize) {
        let start = (first * WINDOW_BYTES).min(self.map.len());
        let end = ((first + count) * WINDOW_BYTES).min(self.map.len());
        if end > start {
            // SAFETY: a read-only, file-backed, shared mapping: dropped pages are
            // re-read from the file on the next access, so no data is lost and
            // slices handed out earlier stay valid.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Every padding byte (between and after records, after the index) is zero.
    pub fn check_padding(&self) -> Result<()> {
        let mut pos = HEADER_LEN + self.header.record_count as usize * ENTRY_LEN;
        let mut gaps = Vec::new();
        for i in 0..self.header.record_count {
            let e = self.entry(i);
            gaps.push((pos, e.offset as usize));
            pos = e.offset as usize + e.stored_len as usize;
        }
        gaps.push((pos, self.map.len()));
        for (a, b) in gaps {
            if let Some(k) = self.map[a..b].iter().position(|&x| x != 0) {
                return Err(Error::shard(&self.path, format!("non-zero padding byte at offset {}", a + k)));
            }
        }
        Ok(())
    }
}

/// Why an index entry cannot be trusted, if it cannot.
fn check_entry(e: &IndexEntry, prev_end: u64, file_len: u64) -> Option<String> {
    let Some(enc) = Encoding::from_code(e.encoding) else {
        return Some(format!("unknown encoding code {}", e.encoding));
    };
    if e.flags & !KNOWN_FLAGS != 0 {
        return Some(format!("unknown flags {:#06x}", e.flags));
    }
    if e.offset < prev_end || e.offset % layout::RECORD_ALIGN != 0 {
        return Some(format!("offset {} overlaps or is misaligned", e.offset));
    }
    let end = e.offset.checked_add(e.stored_len as u64);
    if end.is_none_or(|end| end > file_len) {
        return Some(format!(
            "{} bytes at offset {} run past the end of the {file_len}-byte file",
            e.stored_len, e.offset
        ));
    }
    if e.raw_len as u64 > MAX_RECORD_BYTES {
        return Some(format!("declared payload of {} bytes exceeds the limit", e.raw_len));
    }
    if !e.is_zstd() && e.raw_len != e.stored_len {
        return Some("uncompressed record whose raw and stored lengths differ".into());
    }
    if let Some(why) = e.geometry_error() {
        return Some(why);
    }
    if enc == Encoding::Raw {
        let want = e.width as u64 * e.height as u64 * e.channels as u64;
        if want != e.raw_len as u64 {
            return Some(format!(
                "raw {}x{}x{} needs {want} bytes, entry says {}",
                e.width, e.height, e.channels, e.raw_len
            ));
        }
    }
    None
}
