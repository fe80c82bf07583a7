//! JPEG decoding with libjpeg-turbo 3 (TurboJPEG 3 API, built from source by
//! the `turbojpeg` crate), shared by the packer and the loader: DCT-domain
//! downscaling (k/8) and decoding only a region (`tj3SetCroppingRegion`).
//! `decode_for_crop` picks the smallest scale that still leaves a crop at
//! least as large as the output and decodes only the crop's region: a crop of
//! a third of the image costs about a third of a full decode.

use std::ffi::CStr;

use turbojpeg::raw;

/// A rectangle in pixels (fractional where a resize maps it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// A TurboJPEG decompressor (one per worker thread).
pub struct JpegDecoder {
    handle: raw::tjhandle,
    /// Colour JPEGs decode to 4 bytes per pixel (RGB + one padding byte).
    rgbx: bool,
}

// SAFETY: a TurboJPEG handle has no thread affinity; it is used by one thread at a time
// (every method takes `&mut self` or reads only), so moving it between threads is sound.
unsafe impl Send for JpegDecoder {}

/// What the JPEG header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// TurboJPEG subsampling code (TJSAMP_*), -1 if unusual.
    pub subsamp: i32,
    pub grey: bool,
    /// CMYK or YCCK: libjpeg-turbo cannot convert these to RGB.
    pub cmyk: bool,
}

/// Pixels decoded for a crop: `width × height × channels` in the buffer, and
/// where the requested crop lies within them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodedRegion {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub crop: CropBox,
    /// The DCT scale used, as eighths (8 = full size).
    pub scale_eighths: u32,
}

/// iMCU width per TJSAMP code (444, 422, 420, GRAY, 440, 411, 441), as
/// turbojpeg.h's `tjMCUWidth` (a header-only table, not an exported symbol).
const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

/// DCT scales (in eighths) with SIMD or reduced-size IDCTs in libjpeg-turbo.
/// The other eighths (3/8, 5/8, 3/4, 7/8) use plain-C IDCTs that are slower
/// than a full-size SIMD decode, so they are never chosen.
pub const FAST_SCALES: [u32; 4] = [1, 2, 4, 8];

/// Why libjpeg-turbo did not decode a JPEG (its own message where it gives one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("cannot initialise libjpeg-turbo")]
    Init,
    #[error("JPEG header: {0}")]
    Header(String),
    #[error("JPEG header: bad size {width}x{height}")]
    BadSize { width: i32, height: i32 },
    #[error("CMYK/YCCK JPEG: libjpeg-turbo cannot convert it to RGB")]
    Cmyk,
    #[error("JPEG scaling {num}/8: {reason}")]
    Scaling { num: u32, reason: String },
    #[error("JPEG crop region: {0}")]
    Crop(String),
    #[error("JPEG decode: {0}")]
    Decode(String),
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn scaled(dim: u32, num: u32) -> u32 {
    // TJSCALED: ceil(dim * num / 8)
    (dim * num).div_ceil(8)
}

impl JpegDecoder {
    pub fn new() -> Result<JpegDecoder, JpegError> {
        // SAFETY: tj3Init takes a plain integer and returns a new handle or null (checked below).
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as i32) };
        if handle.is_null() {
            return Err(JpegError::Init);
        }
        let d = JpegDecoder { handle, rgbx: false };
        // Refuse absurd sizes (records are validated at pack time already).
        // SAFETY: `d.handle` is the live, non-null handle just created; tj3Set takes integers.
        unsafe { raw::tj3Set(d.handle, raw::TJPARAM_TJPARAM_MAXPIXELS as i32, 1 << 28) };
        Ok(d)
    }

    fn error(&self) -> String {
        // SAFETY: the handle lives as long as `self`; tj3GetErrorStr returns a NUL-terminated
        // string owned by the handle (or a static one), copied here before any other call.
        unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.handle)) }.to_string_lossy().into_owned()
    }

    pub fn header(&mut self, data: &[u8]) -> Result<JpegHeader, JpegError> {
        // SAFETY: `data` is a live slice whose pointer and length are passed together; the
        // handle lives as long as `self`, and `&mut self` keeps other calls out.
        let res = unsafe { raw::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as raw::size_t) };
        if res != 0 {
            return Err(JpegError::Header(self.error()));
        }
        // SAFETY: tj3Get reads an integer parameter of the live handle.
        let get = |p: raw::TJPARAM| unsafe { raw::tj3Get(self.handle, p as i32) };
        let (w, h) = (get(raw::TJPARAM_TJPARAM_JPEGWIDTH), get(raw::TJPARAM_TJPARAM_JPEGHEIGHT));
        if w <= 0 || h <= 0 {
            return Err(JpegError::BadSize { width: w, height: h });
        }
        let subsamp = get(raw::TJPARAM_TJPARAM_SUBSAMP);
        let cs = get(raw::TJPARAM_TJPARAM_COLORSPACE);
        Ok(JpegHeader {
            width: w as u32,
            height: h as u32,
            subsamp,
            grey: cs == raw::TJCS_TJCS_GRAY as i32,
            cmyk: cs == raw::TJCS_TJCS_CMYK as i32 || cs == raw::TJCS_TJCS_YCCK as i32,
        })
    }

    /// Faster, slightly less exact decoding: integer fast IDCT (used only at
    /// full scale) and nearest-neighbour chroma upsampling.
    pub fn set_fast(&mut self, on: bool) {
        // SAFETY: tj3Set on the live handle with integer arguments.
        unsafe {
            raw::tj3Set(self.handle, raw::TJPARAM_TJPARAM_FASTDCT as i32, on as i32);
            raw::tj3Set(self.handle, raw::TJPARAM_TJPARAM_FASTUPSAMPLE as i32, on as i32);
        }
    }

    /// Decode colour JPEGs as RGBX (4 bytes per pixel, the fourth unspecified;
    /// `DecodedRegion::channels` is then 4) instead of RGB. Free in
    /// libjpeg-turbo, and 4-byte pixels resize faster than 3-byte ones.
    pub fn set_rgbx(&mut self, on: bool) {
        self.rgbx = on;
    }

    /// Treat libjpeg warnings (e.g. a truncated stream, which it would fill
    /// with grey) as errors. The packer validates with this on.
    pub fn set_stop_on_warning(&mut self, on: bool) {
        // SAFETY: tj3Set on the live handle with integer arguments.
        unsafe { raw::tj3Set(self.handle, raw::TJPARAM_TJPARAM_STOPONWARNING as i32, on as i32) };
    }

    /// Decodes the whole image at scale `num`/8 into `buf` (grey or RGB as the
    /// JPEG is, RGBX with `set_rgbx`); returns (width, height, channels).
    pub fn decode_scaled(&mut self, data: &[u8], hdr: &JpegHeader, num: u32, buf: &mut Vec<u8>) -> Result<(u32, u32, u8), JpegError> {
        let full = CropBox {
            left: 0.0,
            top: 0.0,
            width: hdr.width as f64,
            height: hdr.height as f64,
        };
        let r = self.decode_region(data, hdr, num, full, false, buf)?;
        Ok((r.width, r.height, r.channels))
    }

    /// Decodes the part of `data` that `crop` (source pixels) needs to be
    /// resized to `out_size`, into `buf`. `hdr` is this JPEG's header (read by
    /// `header`, which must be the last call on this decoder).
    pub fn decode_for_crop(
        &mut self,
        data: &[u8],
        hdr: &JpegHeader,
        crop: CropBox,
        out_size: u32,
        partial: bool,
        buf: &mut Vec<u8>,
    ) -> Result<DecodedRegion, JpegError> {
        // Smallest fast DCT scale k/8 keeping the crop >= out_size on both sides.
        let need = out_size as f64;
        let num = if partial {
            FAST_SCALES
                .into_iter()
                .find(|&k| crop.width * k as f64 / 8.0 >= need && crop.height * k as f64 / 8.0 >= need)
                .unwrap_or(8)
        } else {
            8
        };
        self.decode_region(data, hdr, num, crop, partial, buf)
    }

    /// Decodes at scale `num`/8 the region covering `crop` (source pixels;
    /// the whole image unless `partial`), into `buf`.
    pub fn decode_region(
        &mut self,
        data: &[u8],
        hdr: &JpegHeader,
        num: u32,
        crop: CropBox,
        partial: bool,
        buf: &mut Vec<u8>,
    ) -> Result<DecodedRegion, JpegError> {
        if hdr.cmyk {
            return Err(JpegError::Cmyk);
        }
        let s = num as f64 / 8.0;
        let (sw, sh) = (scaled(hdr.width, num), scaled(hdr.height, num));
        let mcu_w = usize::try_from(hdr.subsamp)
            .ok()
            .and_then(|i| MCU_WIDTH.get(i))
            .map_or(0, |&w| scaled(w, num).max(1));
        // Region in scaled pixels: left aligned down to the iMCU, one pixel
        // of margin for the resampling filter's edge.
        let (x0, x1, y0, y1) = if partial && mcu_w > 0 {
            let x0 = ((crop.left * s).floor() as u32).min(sw - 1) / mcu_w * mcu_w;
            let x1 = (((crop.left + crop.width) * s).ceil() as u32 + 1).min(sw);
            let y0 = ((crop.top * s).floor() as u32).min(sh - 1);
            let y1 = (((crop.top + crop.height) * s).ceil() as u32 + 1).min(sh);
            (x0, x1.max(x0 + 1), y0, y1.max(y0 + 1))
        } else {
            (0, sw, 0, sh)
        };
        let (rw, rh) = (x1 - x0, y1 - y0);
        let (channels, pf): (u8, _) = match (hdr.grey, self.rgbx) {
            (true, _) => (1, raw::TJPF_TJPF_GRAY),
            (false, false) => (3, raw::TJPF_TJPF_RGB),
            (false, true) => (4, raw::TJPF_TJPF_RGBX),
        };
        // SAFETY: plain-value calls on the live handle (scaling factor, cropping region);
        // libjpeg-turbo validates both and reports errors through the return value.
        unsafe {
            // libjpeg-turbo lists its factors in lowest terms (1/1, 3/4, 1/2, ...).
            let g = gcd(num, 8);
            let factor = raw::tjscalingfactor { num: (num / g) as i32, denom: (8 / g) as i32 };
            if raw::tj3SetScalingFactor(self.handle, factor) != 0 {
                return Err(JpegError::Scaling { num, reason: self.error() });
            }
            let region = if (x0, y0, rw, rh) == (0, 0, sw, sh) {
                raw::tjregion { x: 0, y: 0, w: 0, h: 0 }
            } else {
                raw::tjregion { x: x0 as i32, y: y0 as i32, w: rw as i32, h: rh as i32 }
            };
            if raw::tj3SetCroppingRegion(self.handle, region) != 0 {
                return Err(JpegError::Crop(self.error()));
            }
        }
        let pitch = rw as usize * channels as usize;
        buf.resize(pitch * rh as usize, 0);
        // SAFETY: `data` is passed with its length; `buf` holds `pitch * rh` bytes, exactly the
        // output of the scaled, cropped region (`rw` x `rh`, `channels` bytes per pixel) that the
        // scaling factor and cropping region set above make tj3Decompress8 write.
        let res = unsafe {
            raw::tj3Decompress8(
                self.handle,
                data.as_ptr(),
                data.len() as raw::size_t,
                buf.as_mut_ptr(),
                pitch as i32,
                pf as i32,
            )
        };
        if res != 0 {
            return Err(JpegError::Decode(self.error()));
        }
        let crop_in = CropBox {
            left: (crop.left * s - x0 as f64).max(0.0),
            top: (crop.top * s - y0 as f64).max(0.0),
            width: (crop.width * s).min(rw as f64),
            height: (crop.height * s).min(rh as f64),
        };
        let crop_in = CropBox {
            width: crop_in.width.min(rw as f64 - crop_in.left),
            height: crop_in.height.min(rh as f64 - crop_in.top),
            ..crop_in
        };
        Ok(DecodedRegion {
            width: rw,
            height: rh,
            channels,
            crop: crop_in,
            scale_eighths: num,
        })
    }
}

impl Drop for JpegDecoder {
    fn drop(&mut self) {
        // SAFETY: the handle was created by tj3Init, is not null, and is destroyed once, here.
        unsafe { raw::tj3Destroy(self.handle) };
    }
}
