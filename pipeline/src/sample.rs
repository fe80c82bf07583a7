//! One sample's way from a stored record to a `[C, size, size]` u8 slot of
//! the batch: zstd (if any) -> decode (only the crop's region for JPEG) ->
//! crop + bicubic resize in one pass (fast_image_resize, SIMD) -> flip and
//! channel layout. Each worker owns one `SampleProcessor` and reuses its
//! buffers, so the steady state allocates nothing.

use std::time::Instant;

use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use srmae_datasets::format::decode::{decode_record, payload};
use srmae_datasets::format::reader::RecordRef;
use srmae_datasets::jpeg::{JpegDecoder, JpegError};
use srmae_datasets::Encoding;

use crate::augment::{Augment, CropBox, Plan};
use crate::planar::deinterleave_row;
use crate::rng::SampleRng;

/// Nanoseconds spent per stage (accumulated by the worker).
#[derive(Clone, Copy, Debug, Default)]
pub struct StageNanos {
    pub fetch: u64,
    pub decompress: u64,
    pub decode: u64,
    pub augment: u64,
    pub patch: u64,
}

/// A worker's decoder and scratch buffers.
pub struct SampleProcessor {
    jpeg: JpegDecoder,
    zbuf: Vec<u8>,
    pixels: Vec<u8>,
    resized: Vec<u8>,
    degraded: Vec<u8>,
    resizer: Resizer,
    /// Very-low-resolution protocol: after the crop, downsample to
    /// `low_res`×`low_res` and upsample back to the output size (bicubic
    /// both ways, antialiased going down). `None` keeps full resolution.
    pub low_res: Option<u32>,
    /// Decode only what the crop needs (DCT scaling + region); off = full decode.
    pub partial_decode: bool,
    /// JPEGs libjpeg-turbo refused that the fallback decoder read.
    pub fallbacks: u64,
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

impl SampleProcessor {
    pub fn new() -> Result<SampleProcessor, SampleError> {
        let mut jpeg = JpegDecoder::new()?;
        jpeg.set_rgbx(true); // 4-byte pixels resize ~20% faster (same values)
        Ok(SampleProcessor {
            jpeg,
            zbuf: Vec::new(),
            pixels: Vec::new(),
            resized: Vec::new(),
            degraded: Vec::new(),
            low_res: None,
            resizer: Resizer::new(),
            partial_decode: true,
            fallbacks: 0,
        })
    }

    /// Fast IDCT and chroma upsampling (see `JpegDecoder::set_fast`).
    pub fn set_fast_decode(&mut self, on: bool) {
        self.jpeg.set_fast(on);
    }

    /// Decodes, augments and writes `rec` into `out` (`[channels, size, size]`).
    pub fn process(
        &mut self,
        rec: &RecordRef<'_>,
        augment: &Augment,
        rng: &mut SampleRng,
        channels: u8,
        out: &mut [u8],
        t: &mut StageNanos,
    ) -> Result<(), SampleError> {
        let mut zbuf = std::mem::take(&mut self.zbuf);
        let res = self.process_with(rec, augment, rng, channels, out, t, &mut zbuf);
        self.zbuf = zbuf;
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn process_with(
        &mut self,
        rec: &RecordRef<'_>,
        augment: &Augment,
        rng: &mut SampleRng,
        channels: u8,
        out: &mut [u8],
        t: &mut StageNanos,
        zbuf: &mut Vec<u8>,
    ) -> Result<(), SampleError> {
        let e = rec.entry;
        // The shard reader validated this, but a hand-made RecordRef may not be.
        if let Some(why) = e.geometry_error() {
            return Err(SampleError::Geometry(why));
        }
        if !matches!(channels, 1 | 3) {
            return Err(SampleError::OutputChannels(channels));
        }
        let plan = augment.plan(e.width, e.height, rng);
        let t0 = Instant::now();
        let data = payload(rec, zbuf)?;
        t.decompress += ns(t0);
        let t1 = Instant::now();
        // Raw pixels are resized straight from the payload (no copy); JPEGs
        // are decoded into the worker's pixel buffer first.
        let raw = rec.encoding() == Encoding::Raw;
        let (src_w, src_h, src_c, crop) = if raw {
            (e.width, e.height, e.channels, plan.crop)
        } else {
            self.decode_jpeg(rec, data, &plan)?
        };
        t.decode += ns(t1);
        let t2 = Instant::now();
        let pixels = std::mem::take(&mut self.pixels);
        let src = if raw { data } else { &pixels[..] };
        let resized = self.resize(src, src_w, src_h, src_c, crop, plan.size);
        self.pixels = pixels;
        resized?;
        if let Some(r) = self.low_res.filter(|&r| r < plan.size) {
            self.degrade(src_c, plan.size, r)?;
        }
        write_chw(&self.resized, src_c, plan.size as usize, plan.flip, channels, out);
        t.augment += ns(t2);
        Ok(())
    }

    fn decode_jpeg(&mut self, rec: &RecordRef<'_>, data: &[u8], plan: &Plan) -> Result<(u32, u32, u8, CropBox), SampleError> {
        let e = rec.entry;
        let attempt = self.jpeg.header(data).map_err(SampleError::from).and_then(|hdr| {
            if (hdr.width, hdr.height) != (e.width, e.height) {
                return Err(SampleError::SizeMismatch { jpeg: (hdr.width, hdr.height), index: (e.width, e.height) });
            }
            Ok(self.jpeg.decode_for_crop(data, &hdr, plan.crop, plan.size, self.partial_decode, &mut self.pixels)?)
        });
        match attempt {
            Ok(r) => Ok((r.width, r.height, r.channels, r.crop)),
            Err(first) => {
                // libjpeg-turbo refuses a few files other decoders accept;
                // the pack-time decoder decides, and checks geometry.
                let img = decode_record(rec).map_err(|fallback| SampleError::Undecodable { first: Box::new(first), fallback })?;
                self.fallbacks += 1;
                self.pixels = img.pixels;
                Ok((img.width, img.height, img.channels, plan.crop))
            }
        }
    }

    /// Crops and resizes `pixels` (`w`×`h`×`c`) into `self.resized`.
    fn resize(&mut self, pixels: &[u8], w: u32, h: u32, c: u8, crop: CropBox, size: u32) -> Result<(), SampleError> {
        let pt = pixel_type(c)?;
        let n = w as usize * h as usize * c as usize;
        let px = pixels.get(..n).ok_or(SampleError::ShortPixels { geometry: (w, h, c), needed: n, held: pixels.len() })?;
        let src = ImageRef::new(w, h, px, pt).map_err(|err| resize_error("resize source", err))?;
        let out_len = size as usize * size as usize * c as usize;
        self.resized.resize(out_len, 0);
        let mut dst = Image::from_slice_u8(size, size, &mut self.resized[..], pt).map_err(|err| resize_error("resize target", err))?;
        let opts = bicubic().crop(crop.left, crop.top, crop.width, crop.height);
        self.resizer.resize(&src, &mut dst, &opts).map_err(|err| resize_error("resize", err))
    }
}

impl SampleProcessor {
    /// `self.resized` (`size`×`size`×`c`) -> `r`×`r` -> `size`×`size`, in place.
    fn degrade(&mut self, c: u8, size: u32, r: u32) -> Result<(), SampleError> {
        let pt = pixel_type(c)?;
        let opts = bicubic();
        self.degraded.resize(r as usize * r as usize * c as usize, 0);
        {
            let src = ImageRef::new(size, size, &self.resized, pt).map_err(|err| resize_error("low-res source", err))?;
            let mut small = Image::from_slice_u8(r, r, &mut self.degraded[..], pt).map_err(|err| resize_error("low-res target", err))?;
            self.resizer.resize(&src, &mut small, &opts).map_err(|err| resize_error("low-res", err))?;
        }
        let small = ImageRef::new(r, r, &self.degraded, pt).map_err(|err| resize_error("low-res source", err))?;
        let mut dst = Image::from_slice_u8(size, size, &mut self.resized[..], pt).map_err(|err| resize_error("low-res target", err))?;
        self.resizer.resize(&small, &mut dst, &opts).map_err(|err| resize_error("low-res upsample", err))
    }
}

/// Interleaved pixels of `c` bytes: grey, RGB or RGBX (the fourth byte is
/// padding, never alpha).
fn pixel_type(c: u8) -> Result<PixelType, SampleError> {
    match c {
        1 => Ok(PixelType::U8),
        3 => Ok(PixelType::U8x3),
        4 => Ok(PixelType::U8x4),
        _ => Err(SampleError::PixelBytes(c)),
    }
}

fn resize_error(stage: &'static str, err: impl std::fmt::Display) -> SampleError {
    SampleError::Resize { stage, reason: err.to_string() }
}

/// Why one record did not become a sample.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The index entry's geometry is impossible.
    #[error("{0}")]
    Geometry(String),
    #[error("output channels {0}: expected 1 or 3")]
    OutputChannels(u8),
    /// Reading, decompressing or checking the record.
    #[error(transparent)]
    Record(#[from] srmae_datasets::Error),
    #[error(transparent)]
    Jpeg(#[from] JpegError),
    #[error("JPEG is {}x{}, index says {}x{}", jpeg.0, jpeg.1, index.0, index.1)]
    SizeMismatch { jpeg: (u32, u32), index: (u32, u32) },
    /// libjpeg-turbo and the fallback decoder both refused it.
    #[error("{first}; fallback decoder: {fallback}")]
    Undecodable { first: Box<SampleError>, fallback: srmae_datasets::Error },
    #[error("{}x{}x{} needs {needed} bytes, the record holds {held}", geometry.0, geometry.1, geometry.2)]
    ShortPixels { geometry: (u32, u32, u8), needed: usize, held: usize },
    #[error("{0} bytes per pixel: expected 1, 3 or 4")]
    PixelBytes(u8),
    /// The resizer refused a buffer (`stage`: resize source/target, low-res ...).
    #[error("{stage}: {reason}")]
    Resize { stage: &'static str, reason: String },
    /// More records failed in a row than the loader substitutes.
    #[error("{last} (and {substitutes} substitutes failed too)")]
    Substitutes { last: Box<SampleError>, substitutes: u64 },
}

/// PIL's bicubic (Catmull-Rom, antialiased when shrinking); a 4th byte is
/// resized like the others, not treated as alpha.
fn bicubic() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom)).use_alpha(false)
}

/// HWC (`src_c` channels; 4 = RGBX) -> CHW (`out_c` channels), mirrored when `flip`.
/// Grey is replicated to RGB; RGB becomes grey with ITU-R 601 luma (PIL's "L").
/// Other channel counts (source 1, 3 or 4; output 1 or 3) write nothing
/// (callers check them).
pub fn write_chw(src: &[u8], src_c: u8, size: usize, flip: bool, out_c: u8, out: &mut [u8]) {
    let plane = size * size;
    let sc = src_c as usize;
    for y in 0..size {
        let row = &src[y * size * sc..(y + 1) * size * sc];
        let o = y * size;
        match (src_c, out_c) {
            (3 | 4, 3) => {
                let (r, rest) = out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                let (r, g, b) = (&mut r[o..o + size], &mut g[o..o + size], &mut b[o..o + size]);
                deinterleave_row(row, sc, r, g, b, flip);
            }
            (1, _) => {
                for c in 0..out_c as usize {
                    let dst = &mut out[c * plane + o..c * plane + o + size];
                    if flip {
                        for (d, s) in dst.iter_mut().zip(row.iter().rev()) {
                            *d = *s;
                        }
                    } else {
                        dst.copy_from_slice(row);
                    }
                }
            }
            (3 | 4, 1) => {
                let dst = &mut out[o..o + size];
                for (x, px) in row.chunks_exact(sc).enumerate() {
                    let x = if flip { size - 1 - x } else { x };
                    let (r, g, b) = (px[0] as u32, px[1] as u32, px[2] as u32);
                    dst[x] = ((r * 299 + g * 587 + b * 114 + 500) / 1000) as u8;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::Resizer;

    use super::{bicubic, pixel_type, write_chw};

    #[test]
    fn rgbx_resizes_exactly_like_rgb() {
        // The loader decodes JPEGs as RGBX for speed; the pixels must not change.
        let (w, h) = (97u32, 61u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i.wrapping_mul(7919) % 251) as u8).collect();
        let rgbx: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 0]).collect();
        let mut resizer = Resizer::new();
        for (crop, out) in [((3.0, 2.5, 80.0, 50.0), 224u32), ((0.0, 0.0, 97.0, 61.0), 40), ((10.0, 7.0, 33.3, 41.2), 64)] {
            let opts = bicubic().crop(crop.0, crop.1, crop.2, crop.3);
            let mut a = Image::new(out, out, pixel_type(3).unwrap());
            resizer.resize(&ImageRef::new(w, h, &rgb, pixel_type(3).unwrap()).unwrap(), &mut a, &opts).unwrap();
            let mut b = Image::new(out, out, pixel_type(4).unwrap());
            resizer.resize(&ImageRef::new(w, h, &rgbx, pixel_type(4).unwrap()).unwrap(), &mut b, &opts).unwrap();
            let b3: Vec<u8> = b.buffer().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            assert_eq!(a.buffer(), &b3[..], "crop {crop:?} -> {out}");
        }
    }

    #[test]
    fn chw_layout_flip_and_channel_conversion() {
        // 2x2 RGB: pixel (y, x) = (10y + x, 100 + 10y + x, 200 + x)
        let src: Vec<u8> = (0..2).flat_map(|y| (0..2).flat_map(move |x| [10 * y + x, 100 + 10 * y + x, 200 + x])).collect();
        let mut out = vec![0u8; 12];
        write_chw(&src, 3, 2, false, 3, &mut out);
        assert_eq!(out, [0, 1, 10, 11, 100, 101, 110, 111, 200, 201, 200, 201]);
        write_chw(&src, 3, 2, true, 3, &mut out);
        assert_eq!(out, [1, 0, 11, 10, 101, 100, 111, 110, 201, 200, 201, 200]);
        let grey = [5u8, 6, 7, 8];
        write_chw(&grey, 1, 2, true, 3, &mut out);
        assert_eq!(out, [6, 5, 8, 7, 6, 5, 8, 7, 6, 5, 8, 7]);
        let rgbx: Vec<u8> = src.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 99]).collect();
        for flip in [false, true] {
            let (mut a, mut b) = (vec![0u8; 12], vec![0u8; 12]);
            write_chw(&src, 3, 2, flip, 3, &mut a);
            write_chw(&rgbx, 4, 2, flip, 3, &mut b);
            assert_eq!(a, b, "RGBX as RGB, flip {flip}");
        }
        let mut one = vec![0u8; 4];
        write_chw(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255], 3, 2, false, 1, &mut one);
        assert_eq!(one, [76, 150, 29, 255]);
    }
}
