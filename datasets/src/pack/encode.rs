//! Turns one source item into a stored record: validates it (format,
//! declared size within the pixel limit, full decode), shrinks it to
//! `max_side`, and encodes it as the options say. Errors are reasons for the
//! rejects list; they never abort the pack.

use std::cell::RefCell;
use std::io::Cursor;

use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ColorType, ExtendedColorType, ImageDecoder, ImageFormat};

use super::options::PackOptions;
use crate::format::layout::{Encoding, FLAG_REENCODED, FLAG_ZSTD, NO_LABEL};
use crate::format::writer::StoredRecord;
use crate::jpeg::JpegDecoder;
use crate::sources::{Payload, SourceItem};

/// A packed record and what it cost.
pub struct Encoded {
    pub record: StoredRecord,
    pub source_bytes: u64,
}

/// Decoded u8 pixels (HWC, 1 or 3 channels).
struct Pixels {
    width: u32,
    height: u32,
    channels: u8,
    data: Vec<u8>,
}

/// Encodes `item` as a record, or says why it cannot be packed.
pub fn encode_item(item: SourceItem, opts: &PackOptions) -> Result<Encoded, String> {
    let label = item.label.unwrap_or(NO_LABEL);
    match item.payload {
        Payload::File(bytes) => {
            let source_bytes = bytes.len() as u64;
            let turbo = turbo_jpeg_record(&bytes, label, opts);
            if let TurboOutcome::Done(r) = turbo {
                return r.map(|record| Encoded { record, source_bytes });
            }
            let (pixels, format, plain_colour) = decode_file(&bytes, opts.max_pixels)?;
            // A JPEG libjpeg-turbo refused but the other decoder read is
            // re-encoded, so that the loader's decoder can read what is stored.
            let passthrough = opts.encoding == Encoding::Jpeg
                && format == ImageFormat::Jpeg
                && plain_colour
                && turbo != TurboOutcome::DecodeFailed
                && target_size(pixels.width, pixels.height, opts.max_side).is_none();
            let record = if passthrough {
                jpeg_record(bytes, &pixels, false, label, opts)
            } else {
                pixels_record(shrink(pixels, opts.max_side)?, label, opts)?
            };
            Ok(Encoded { record, source_bytes })
        }
        Payload::Pixels {
            width,
            height,
            channels,
            data,
        } => {
            let source_bytes = data.len() as u64;
            if !matches!(channels, 1 | 3) || width == 0 || height == 0 {
                return Err(format!("unsupported geometry {width}x{height}x{channels}"));
            }
            if data.len() as u64 != width as u64 * height as u64 * channels as u64 {
                return Err(format!("{} pixel bytes for {width}x{height}x{channels}", data.len()));
            }
            let p = Pixels {
                width,
                height,
                channels,
                data,
            };
            Ok(Encoded {
                record: pixels_record(shrink(p, opts.max_side)?, label, opts)?,
                source_bytes,
            })
        }
    }
}

/// What the libjpeg-turbo path made of an input.
#[derive(Debug, PartialEq)]
enum TurboOutcome {
    /// Packed, or rejected with a reason.
    Done(Result<StoredRecord, String>),
    /// Not a JPEG libjpeg-turbo handles (not JPEG, CMYK): use the other decoder.
    NotHandled,
    /// libjpeg-turbo refused the data: the other decoder decides, and a
    /// JPEG it accepts is re-encoded.
    DecodeFailed,
}

thread_local! {
    static TURBO: RefCell<Option<JpegDecoder>> = RefCell::new(JpegDecoder::new().ok().map(|mut d| {
        d.set_stop_on_warning(true);
        d
    }));
    static COMPRESSOR: RefCell<Option<turbojpeg::Compressor>> = RefCell::new(turbojpeg::Compressor::new().ok());
}

/// JPEG inputs through libjpeg-turbo: the header is checked against the
/// pixel limit before any decoding; a passthrough JPEG is validated by a
/// 1/8-scale decode (the whole entropy-coded stream is still parsed, the IDCT
/// is cheap); a shrunk one is decoded at the smallest DCT scale at least as
/// large as its target, then resized.
fn turbo_jpeg_record(bytes: &[u8], label: u32, opts: &PackOptions) -> TurboOutcome {
    if image::guess_format(bytes).ok() != Some(ImageFormat::Jpeg) {
        return TurboOutcome::NotHandled;
    }
    TURBO.with(|cell| {
        let mut cell = cell.borrow_mut();
        let Some(d) = cell.as_mut() else { return TurboOutcome::NotHandled };
        let Ok(hdr) = d.header(bytes) else { return TurboOutcome::DecodeFailed };
        if hdr.cmyk {
            return TurboOutcome::NotHandled;
        }
        let (w, h) = (hdr.width, hdr.height);
        if w as u64 * h as u64 > opts.max_pixels {
            let n = w as u64 * h as u64;
            return TurboOutcome::Done(Err(format!("{w}x{h} = {n} pixels exceeds the {}-pixel limit", opts.max_pixels)));
        }
        let mut buf = Vec::new();
        let target = target_size(w, h, opts.max_side);
        if opts.encoding == Encoding::Jpeg && target.is_none() {
            return match d.decode_scaled(bytes, &hdr, 1, &mut buf) {
                Ok(_) => {
                    let p = Pixels { width: w, height: h, channels: if hdr.grey { 1 } else { 3 }, data: Vec::new() };
                    TurboOutcome::Done(Ok(jpeg_record(bytes.to_vec(), &p, false, label, opts)))
                }
                Err(_) => TurboOutcome::DecodeFailed,
            };
        }
        let (tw, th) = target.unwrap_or((w, h));
        let scaled = |dim: u32, k: u32| (dim * k).div_ceil(8);
        let k = crate::jpeg::FAST_SCALES.into_iter().find(|&k| scaled(w, k) >= tw && scaled(h, k) >= th).unwrap_or(8);
        match d.decode_scaled(bytes, &hdr, k, &mut buf) {
            Ok((sw, sh, c)) => {
                let p = Pixels { width: sw, height: sh, channels: c, data: buf };
                TurboOutcome::Done(resize_to(p, tw, th).and_then(|p| pixels_record(p, label, opts)))
            }
            Err(_) => TurboOutcome::DecodeFailed,
        }
    })
}

/// Decodes an image file; returns its pixels (grey or RGB), its format, and
/// whether its colour model passes through as is (1 or 3 channel JPEG).
fn decode_file(bytes: &[u8], max_pixels: u64) -> Result<(Pixels, ImageFormat, bool), String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let format = image::guess_format(bytes).map_err(|_| "not a recognised image format".to_string())?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 26));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| format!("{format:?} header does not decode: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("zero-sized image {w}x{h}"));
    }
    if w as u64 * h as u64 > max_pixels {
        return Err(format!("{w}x{h} = {} pixels exceeds the {max_pixels}-pixel limit", w as u64 * h as u64));
    }
    let original = decoder.original_color_type();
    let plain_colour = matches!(original, ExtendedColorType::L8 | ExtendedColorType::Rgb8);
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| format!("{format:?} does not decode: {e}"))?;
    let grey = matches!(img.color(), ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16);
    let (channels, data) = if grey { (1, img.into_luma8().into_raw()) } else { (3, img.into_rgb8().into_raw()) };
    Ok((
        Pixels {
            width: w,
            height: h,
            channels,
            data,
        },
        format,
        plain_colour,
    ))
}

/// The size an image of `w`×`h` shrinks to under `max_side`, if it shrinks.
pub fn target_size(w: u32, h: u32, max_side: Option<u32>) -> Option<(u32, u32)> {
    let m = max_side?;
    let long = w.max(h);
    if long <= m {
        return None;
    }
    let scale = m as f64 / long as f64;
    let side = |x: u32| ((x as f64 * scale).round() as u32).clamp(1, m);
    Some((side(w), side(h)))
}

fn shrink(p: Pixels, max_side: Option<u32>) -> Result<Pixels, String> {
    match target_size(p.width, p.height, max_side) {
        Some((nw, nh)) => resize_to(p, nw, nh),
        None => Ok(p),
    }
}

/// Resizes to exactly `nw`×`nh` (bicubic, antialiased); no-op at that size.
fn resize_to(p: Pixels, nw: u32, nh: u32) -> Result<Pixels, String> {
    if (p.width, p.height) == (nw, nh) {
        return Ok(p);
    }
    let pt = if p.channels == 1 { PixelType::U8 } else { PixelType::U8x3 };
    let src = Image::from_vec_u8(p.width, p.height, p.data, pt).map_err(|e| format!("resize input: {e}"))?;
    let mut dst = Image::new(nw, nh, pt);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(&src, &mut dst, &opts).map_err(|e| format!("resize failed: {e}"))?;
    Ok(Pixels {
        width: nw,
        height: nh,
        channels: p.channels,
        data: dst.into_vec(),
    })
}

/// Stores decoded pixels in the configured encoding.
fn pixels_record(p: Pixels, label: u32, opts: &PackOptions) -> Result<StoredRecord, String> {
    match opts.encoding {
        Encoding::Raw => {
            let z = zstd::bulk::compress(&p.data, opts.zstd_level).map_err(|e| format!("zstd failed: {e}"))?;
            let raw_len = p.data.len() as u32;
            let (stored, flags) = if z.len() < p.data.len() { (z, FLAG_ZSTD) } else { (p.data, 0) };
            Ok(StoredRecord {
                stored,
                raw_len,
                label,
                width: p.width,
                height: p.height,
                channels: p.channels,
                encoding: Encoding::Raw,
                flags,
            })
        }
        Encoding::Jpeg => {
            let out = encode_jpeg(&p, opts.jpeg_quality)?;
            Ok(jpeg_record(out, &p, true, label, opts))
        }
    }
}

/// JPEG-encodes pixels with libjpeg-turbo: 4:2:0 chroma for RGB (what
/// ImageNet's and most cameras' JPEGs use, and the cheapest to decode).
fn encode_jpeg(p: &Pixels, quality: u8) -> Result<Vec<u8>, String> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c = cell.as_mut().ok_or("libjpeg-turbo compressor unavailable")?;
        let (format, subsamp) = if p.channels == 1 {
            (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray)
        } else {
            (turbojpeg::PixelFormat::RGB, turbojpeg::Subsamp::Sub2x2)
        };
        c.set_quality(quality as i32).map_err(|e| format!("JPEG quality: {e}"))?;
        c.set_subsamp(subsamp).map_err(|e| format!("JPEG subsampling: {e}"))?;
        let img = turbojpeg::Image {
            pixels: &p.data[..],
            width: p.width as usize,
            pitch: p.width as usize * p.channels as usize,
            height: p.height as usize,
            format,
        };
        c.compress_to_vec(img).map_err(|e| format!("JPEG encode failed: {e}"))
    })
}

/// A JPEG record, with a zstd frame only where it saves enough space.
fn jpeg_record(jpeg: Vec<u8>, p: &Pixels, reencoded: bool, label: u32, opts: &PackOptions) -> StoredRecord {
    let raw_len = jpeg.len() as u32;
    let mut flags = if reencoded { FLAG_REENCODED } else { 0 };
    let mut stored = jpeg;
    if let Ok(z) = zstd::bulk::compress(&stored, opts.zstd_level) {
        if (z.len() as f64) < stored.len() as f64 * (1.0 - opts.jpeg_zstd_min_saving) {
            stored = z;
            flags |= FLAG_ZSTD;
        }
    }
    StoredRecord {
        stored,
        raw_len,
        label,
        width: p.width,
        height: p.height,
        channels: p.channels,
        encoding: Encoding::Jpeg,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_keeps_aspect() {
        assert_eq!(target_size(640, 480, Some(320)), Some((320, 240)));
        assert_eq!(target_size(100, 80, Some(320)), None);
        assert_eq!(target_size(1000, 1, Some(10)), Some((10, 1)));
        assert_eq!(target_size(100, 80, None), None);
    }
}
