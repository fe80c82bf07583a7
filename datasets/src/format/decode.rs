//! Turns a stored record into pixels: removes the zstd frame (bounded by the
//! declared length), decodes JPEG, and checks the result against the index
//! entry so that a damaged record is an error, never wrong pixels.

use super::layout::Encoding;
use super::reader::RecordRef;
use crate::error::Result;

/// Decoded pixels, u8, row-major, channels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    pub pixels: Vec<u8>,
}

impl DecodedImage {
    /// As an `image` crate buffer (for saving or resizing).
    pub fn to_dynamic(&self) -> Option<image::DynamicImage> {
        match self.channels {
            1 => image::GrayImage::from_raw(self.width, self.height, self.pixels.clone()).map(Into::into),
            3 => image::RgbImage::from_raw(self.width, self.height, self.pixels.clone()).map(Into::into),
            _ => None,
        }
    }
}

thread_local! {
    /// One zstd context per thread: creating a context costs more than
    /// decompressing a small record.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// The record's payload: the stored bytes, or the zstd frame decompressed into
/// `buf`. Decompression is bounded by the declared `raw_len`.
pub fn payload<'a>(rec: &RecordRef<'a>, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
    if !rec.entry.is_zstd() {
        return Ok(rec.stored);
    }
    let want = rec.entry.raw_len as usize;
    // Never allocate from a hostile length: the index's limit, and the size
    // the zstd frame itself declares, are checked before the buffer grows.
    if want as u64 > super::reader::MAX_RECORD_BYTES {
        return Err(rec.error(format!("declared payload of {want} bytes exceeds the limit")));
    }
    match zstd::zstd_safe::get_frame_content_size(rec.stored) {
        Ok(Some(n)) if n != want as u64 => {
            return Err(rec.error(format!("zstd frame declares {n} bytes, index says {want}")));
        }
        Err(_) => return Err(rec.error("not a zstd frame")),
        _ => {}
    }
    buf.clear();
    buf.resize(want, 0);
    let n = DECOMPRESSOR
        .with(|d| match &mut *d.borrow_mut() {
            Some(d) => d.decompress_to_buffer(rec.stored, &mut buf[..]),
            None => zstd::bulk::decompress_to_buffer(rec.stored, &mut buf[..]),
        })
        .map_err(|e| rec.error(format!("zstd frame does not decompress to {want} bytes: {e}")))?;
    if n != want {
        return Err(rec.error(format!("zstd frame holds {n} bytes, index says {want}")));
    }
    Ok(&buf[..])
}

/// Decodes a record to pixels, checking geometry against its index entry.
/// JPEGs are converted to grey or RGB as the entry's channel count says.
///
/// The geometry is checked here too, not only by the shard reader's index
/// validation: a `RecordRef` built by hand (its fields are public) must not
/// yield a pixel buffer of another size than its entry declares.
pub fn decode_record(rec: &RecordRef<'_>) -> Result<DecodedImage> {
    let e = rec.entry;
    if let Some(why) = e.geometry_error() {
        return Err(rec.error(why));
    }
    let Some(encoding) = Encoding::from_code(e.encoding) else {
        return Err(rec.error(format!("unknown encoding code {}", e.encoding)));
    };
    let raw_bytes = e.width as u64 * e.height as u64 * e.channels as u64;
    if encoding == Encoding::Raw && e.is_zstd() && e.raw_len as u64 != raw_bytes {
        let (w, h, c, n) = (e.width, e.height, e.channels, e.raw_len);
        return Err(rec.error(format!("raw {w}x{h}x{c} needs {raw_bytes} bytes, entry says {n}")));
    }
    let mut buf = Vec::new();
    let bytes = payload(rec, &mut buf)?;
    match encoding {
        Encoding::Raw if bytes.len() as u64 != raw_bytes => {
            let (w, h, c) = (e.width, e.height, e.channels);
            Err(rec.error(format!("raw {w}x{h}x{c} needs {raw_bytes} bytes, the record holds {}", bytes.len())))
        }
        Encoding::Raw => Ok(DecodedImage {
            width: e.width,
            height: e.height,
            channels: e.channels,
            pixels: bytes.to_vec(),
        }),
        Encoding::Jpeg => {
            let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(e.width);
            limits.max_image_height = Some(e.height);
            reader.limits(limits);
            let img = reader.decode().map_err(|err| rec.error(format!("JPEG does not decode: {err}")))?;
            if img.width() != e.width || img.height() != e.height {
                return Err(rec.error(format!(
                    "JPEG is {}x{}, index says {}x{}",
                    img.width(),
                    img.height(),
                    e.width,
                    e.height
                )));
            }
            let pixels = if e.channels == 1 { img.into_luma8().into_raw() } else { img.into_rgb8().into_raw() };
            Ok(DecodedImage {
                width: e.width,
                height: e.height,
                channels: e.channels,
                pixels,
            })
        }
    }
}
