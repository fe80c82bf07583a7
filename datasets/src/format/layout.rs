//! Byte layout of a shard file: the fixed header and the fixed-width index entry,
//! encoded and decoded little-endian. `FORMAT.md` is the normative description;
//! this file is its executable form. Decoding never trusts its input: every
//! field is range-checked against the file it came from by `reader.rs`.

/// First eight bytes of every shard.
pub const MAGIC: [u8; 8] = *b"SRMAESHD";
/// Version of the shard layout this code writes and reads.
pub const VERSION: u16 = 1;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 64;
/// Size of one index entry in bytes.
pub const ENTRY_LEN: usize = 40;
/// The record region starts on a page boundary so that it maps cleanly.
pub const DATA_ALIGN: u64 = 4096;
/// Each record starts on this boundary inside the record region.
pub const RECORD_ALIGN: u64 = 16;
/// Label value of an unlabelled record.
pub const NO_LABEL: u32 = u32::MAX;

/// How a record's payload encodes its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// A baseline or progressive JPEG file.
    Jpeg,
    /// u8 pixels, row-major, channels interleaved (HWC).
    Raw,
}

impl Encoding {
    pub fn code(self) -> u8 {
        match self {
            Encoding::Jpeg => 1,
            Encoding::Raw => 2,
        }
    }
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Encoding::Jpeg),
            2 => Some(Encoding::Raw),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Jpeg => "jpeg",
            Encoding::Raw => "raw",
        }
    }
}

/// Record flag: the stored bytes are a zstd frame around the payload.
pub const FLAG_ZSTD: u16 = 1;
/// Record flag: the JPEG was re-encoded at pack time (resized or converted).
pub const FLAG_REENCODED: u16 = 2;
/// All flags this version defines; any other bit set is an error.
pub const KNOWN_FLAGS: u16 = FLAG_ZSTD | FLAG_REENCODED;

/// The shard header (64 bytes at offset 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub record_count: u64,
    /// Global index of this shard's record 0 within its dataset.
    pub first_record: u64,
    pub index_offset: u64,
    pub data_offset: u64,
    pub file_len: u64,
    /// crc32c of the whole index table.
    pub index_crc: u32,
}

/// One index entry: where a record is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Absolute byte offset of the stored bytes in the shard file.
    pub offset: u64,
    /// Length of the stored bytes.
    pub stored_len: u32,
    /// Length of the payload once the zstd frame (if any) is removed.
    pub raw_len: u32,
    pub label: u32,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub encoding: u8,
    pub flags: u16,
    /// crc32c of the stored bytes.
    pub checksum: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

impl Header {
    /// Encodes the header, computing its own crc32c over bytes 0..60.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[12..14].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
        b[14..16].copy_from_slice(&(RECORD_ALIGN as u16).to_le_bytes());
        b[16..24].copy_from_slice(&self.record_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_record.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.file_len.to_le_bytes());
        b[56..60].copy_from_slice(&self.index_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the self-describing fields (magic, version, sizes,
    /// header checksum). Range checks against the file are the reader's job.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", b.len()));
        }
        if b[0..8] != MAGIC {
            return Err("bad magic: not an srmae shard".into());
        }
        let stored_crc = u32_at(b, 60);
        let crc = crc32c::crc32c(&b[0..60]);
        if stored_crc != crc {
            return Err(format!("header checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"));
        }
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(format!("unsupported shard version {version} (this build reads {VERSION})"));
        }
        let (hl, el, ra) = (u16_at(b, 10), u16_at(b, 12), u16_at(b, 14));
        if hl as usize != HEADER_LEN || el as usize != ENTRY_LEN || ra as u64 != RECORD_ALIGN {
            return Err(format!("unexpected layout sizes (header {hl}, entry {el}, align {ra})"));
        }
        Ok(Header {
            version,
            record_count: u64_at(b, 16),
            first_record: u64_at(b, 24),
            index_offset: u64_at(b, 32),
            data_offset: u64_at(b, 40),
            file_len: u64_at(b, 48),
            index_crc: u32_at(b, 56),
        })
    }
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.label.to_le_bytes());
        b[20..24].copy_from_slice(&self.width.to_le_bytes());
        b[24..28].copy_from_slice(&self.height.to_le_bytes());
        b[28] = self.channels;
        b[29] = self.encoding;
        b[30..32].copy_from_slice(&self.flags.to_le_bytes());
        b[32..36].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decodes an entry from exactly `ENTRY_LEN` bytes (the caller slices).
    pub fn decode(b: &[u8]) -> IndexEntry {
        IndexEntry {
            offset: u64_at(b, 0),
            stored_len: u32_at(b, 8),
            raw_len: u32_at(b, 12),
            label: u32_at(b, 16),
            width: u32_at(b, 20),
            height: u32_at(b, 24),
            channels: b[28],
            encoding: b[29],
            flags: u16_at(b, 30),
            checksum: u32_at(b, 32),
        }
    }

    /// The label, or `None` for an unlabelled record.
    pub fn label(&self) -> Option<u32> {
        (self.label != NO_LABEL).then_some(self.label)
    }
    pub fn is_zstd(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// Why the declared width × height × channels cannot be an image (zero
    /// size, or channels other than 1 and 3); None when it can. Shared by the
    /// reader's index validation and the decoders.
    pub fn geometry_error(&self) -> Option<String> {
        (self.width == 0 || self.height == 0 || !matches!(self.channels, 1 | 3))
            .then(|| format!("bad geometry {}x{}x{}", self.width, self.height, self.channels))
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// Byte offset of the record region for a shard of `record_count` records.
pub fn data_offset_for(record_count: u64) -> u64 {
    align_up(HEADER_LEN as u64 + record_count * ENTRY_LEN as u64, DATA_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_crc() {
        let h = Header {
            version: VERSION,
            record_count: 7,
            first_record: 100,
            index_offset: 64,
            data_offset: 4096,
            file_len: 9000,
            index_crc: 0xdead_beef,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        b[20] ^= 1;
        assert!(Header::decode(&b).unwrap_err().contains("checksum"));
    }

    #[test]
    fn entry_round_trip() {
        let e = IndexEntry {
            offset: 4096,
            stored_len: 10,
            raw_len: 784,
            label: 3,
            width: 28,
            height: 28,
            channels: 1,
            encoding: Encoding::Raw.code(),
            flags: FLAG_ZSTD,
            checksum: 42,
        };
        assert_eq!(IndexEntry::decode(&e.encode()), e);
    }

    #[test]
    fn checksum_is_crc32c_as_documented() {
        // FORMAT.md's check value of CRC-32C (Castagnoli).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn data_region_is_page_aligned() {
        assert_eq!(data_offset_for(0), 4096);
        assert_eq!(data_offset_for(101), 8192);
    }
}
