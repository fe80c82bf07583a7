//! RandAugment's geometric ops (Rotate, ShearX/Y, TranslateX/YRel) as PIL's
//! `Image.transform(AFFINE)` with BICUBIC resampling: every output pixel
//! centre `(x + 0.5, y + 0.5)` maps through the inverse matrix to an input
//! position; outside the image it takes the fill colour, inside PIL's cubic
//! convolution (`a = -1`, edge rows and columns clamped) over the 4x4
//! neighbourhood, truncated to u8. Images are `[C, H, W]` u8.

/// `(a, b, c, d, e, f)`: input `(a x + b y + c, d x + e y + f)` for output `(x, y)`.
pub type Affine = [f64; 6];

/// PIL's `BICUBIC` step between four samples.
#[inline(always)]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// Where an output pixel reads: the clamped columns and rows of its 4x4
/// neighbourhood and the fractional offsets (shared by all channels).
struct Taps {
    cols: [usize; 4],
    /// Rows 0-3; a row past the bottom edge repeats the one above (PIL).
    rows: [usize; 4],
    dx: f64,
    dy: f64,
}

/// `v.floor()` for the finite values `taps` sees (|v| < 2^52), without
/// the libm call that a build without SSE4.1's `roundsd` makes: truncate,
/// then step down where truncation went up (negative fractions). Exact.
#[inline(always)]
fn floor(v: f64) -> f64 {
    let t = v as i64 as f64;
    if t > v {
        t - 1.0
    } else {
        t
    }
}

#[inline(always)]
fn taps(h: usize, w: usize, xin: f64, yin: f64) -> Option<Taps> {
    if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
        return None;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (xf, yf) = (floor(xin), floor(yin));
    let (x, y) = (xf as i64 - 1, yf as i64 - 1);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let cols = [clip(x, w), clip(x + 1, w), clip(x + 2, w), clip(x + 3, w)];
    let mut rows = [clip(y, h); 4];
    for k in 1..4 {
        let r = y + k as i64;
        rows[k] = if r >= 0 && r < h as i64 { r as usize } else { rows[k - 1] };
    }
    Some(Taps { cols, rows, dx: xin - xf, dy: yin - yf })
}

/// One channel's value through `t` (PIL's BICUBIC_BODY, truncated to u8).
/// A zero offset makes the cubic return its second sample exactly
/// (`p1 + 0 * (...)`), so shears and translations, whose offsets are zero
/// along one axis, skip the other three rows or columns: same values, a
/// quarter of the work.
fn sample<T: Copy + Into<f64>>(plane: &[T], w: usize, t: &Taps) -> u8 {
    let row = |yy: usize| {
        let r = &plane[yy * w..(yy + 1) * w];
        if t.dx == 0.0 {
            return r[t.cols[1]].into();
        }
        cubic(r[t.cols[0]].into(), r[t.cols[1]].into(), r[t.cols[2]].into(), r[t.cols[3]].into(), t.dx)
    };
    let v = if t.dy == 0.0 { row(t.rows[1]) } else { cubic(row(t.rows[0]), row(t.rows[1]), row(t.rows[2]), row(t.rows[3]), t.dy) };
    if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// Output pixel `(x, y)` over `[C, H, W]` planes of any sample type: each
/// channel's value (`channels` <= 4), or None outside the input.
pub(super) fn sample_pixel<T: Copy + Into<f64>>(planes: &[T], channels: usize, h: usize, w: usize, m: &Affine, x: usize, y: usize) -> [Option<u8>; 4] {
    let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
    let t = taps(h, w, m[0] * xo + m[1] * yo + m[2], m[3] * xo + m[4] * yo + m[5]);
    std::array::from_fn(|c| match (&t, c < channels) {
        (Some(t), true) => Some(sample(&planes[c * h * w..(c + 1) * h * w], w, t)),
        _ => None,
    })
}

/// `cubic` on up to four channels at once (the same operations in the same
/// order per lane, so each lane's value is PIL's; the compiler vectorises it).
#[inline(always)]
fn cubic4(v1: [f64; 4], v2: [f64; 4], v3: [f64; 4], v4: [f64; 4], d: f64) -> [f64; 4] {
    std::array::from_fn(|i| cubic(v1[i], v2[i], v3[i], v4[i], d))
}

/// One row of taps, all lanes (u8 -> f64 is exact, so converting at the
/// load gives the values a f64 source would).
#[inline(always)]
fn lane_row(src: &[[u8; 4]], w: usize, t: &Taps, yy: usize) -> [f64; 4] {
    let r = &src[yy * w..(yy + 1) * w];
    let f = |px: [u8; 4]| px.map(f64::from);
    if t.dx == 0.0 {
        return f(r[t.cols[1]]);
    }
    cubic4(f(r[t.cols[0]]), f(r[t.cols[1]]), f(r[t.cols[2]]), f(r[t.cols[3]]), t.dx)
}

/// `img.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)`.
pub fn transform(img: &mut [u8], channels: usize, h: usize, w: usize, m: &Affine, fill: &[u8]) {
    if channels > 4 {
        return transform_planes(img, channels, h, w, m, fill);
    }
    SCRATCH.with(|cell| {
        let mut src = cell.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { super::affine_simd::transform(img, channels, h, w, m, fill, super::affine_simd::axis_of(m)) };
        }
        transform_lanes(img, channels, h, w, m, fill, &mut src)
    })
}

thread_local! {
    /// The pixel-major source of `transform`, reused (four u8 lanes per
    /// pixel, 200 KB at 224 px: it stays in L2 while rotated rows walk it).
    static SCRATCH: std::cell::RefCell<Vec<[u8; 4]>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[inline(always)]
fn transform_lanes(img: &mut [u8], channels: usize, h: usize, w: usize, m: &Affine, fill: &[u8], src: &mut Vec<[u8; 4]>) {
    // The source pixel-major, four lanes per pixel: one load per tap for all channels.
    let plane = h * w;
    src.clear();
    src.resize(plane, [0u8; 4]);
    for (i, px) in src.iter_mut().enumerate() {
        for (c, lane) in px.iter_mut().enumerate().take(channels) {
            *lane = img[c * plane + i];
        }
    }
    let to_u8 = |v: f64| if v <= 0.0 { 0 } else if v >= 255.0 { 255 } else { v as u8 };
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let Some(t) = taps(h, w, m[0] * xo + m[1] * yo + m[2], m[3] * xo + m[4] * yo + m[5]) else {
                for c in 0..channels {
                    img[c * plane + y * w + x] = fill.get(c).copied().unwrap_or(128);
                }
                continue;
            };
            let v = if t.dy == 0.0 {
                lane_row(src, w, &t, t.rows[1])
            } else {
                cubic4(lane_row(src, w, &t, t.rows[0]), lane_row(src, w, &t, t.rows[1]), lane_row(src, w, &t, t.rows[2]), lane_row(src, w, &t, t.rows[3]), t.dy)
            };
            for c in 0..channels {
                img[c * plane + y * w + x] = to_u8(v[c]);
            }
        }
    }
}

/// The channel-by-channel form (any channel count; the reference for `transform`).
fn transform_planes(img: &mut [u8], channels: usize, h: usize, w: usize, m: &Affine, fill: &[u8]) {
    let src = img.to_vec();
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let t = taps(h, w, m[0] * xo + m[1] * yo + m[2], m[3] * xo + m[4] * yo + m[5]);
            for c in 0..channels {
                img[(c * h + y) * w + x] = match &t {
                    Some(t) => sample(&src[c * h * w..(c + 1) * h * w], w, t),
                    None => fill.get(c).copied().unwrap_or(128),
                };
            }
        }
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    /// The four-lane form (the build without AVX2) gives the channel-by-channel values, on a larger image
    /// and every kind of matrix.
    #[test]
    fn floor_is_exact() {
        for v in [-0.5, -0.25, -0.0, 0.0, 0.25, 0.999_999_999_999, 1.0, 17.5, 223.999, -1e-300, 1e-300, 4.0e15 + 0.5] {
            assert_eq!(floor(v), v.floor(), "{v}");
        }
    }

    /// The AVX2 path gives the channel-by-channel values for every kind of
    /// matrix, on widths that leave a tail and offsets that push pixels
    /// outside, along the matrix's own axis and along both.
    #[test]
    fn simd_matches_planes() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            use super::super::affine_simd::{axis_of, transform as simd, Axis};
            for (h, w) in [(53, 47), (224, 224), (9, 5), (3, 4)] {
                let img: Vec<u8> = (0..3 * h * w).map(|i| ((i * 97 + i / 5 * 13) % 256) as u8).collect();
                let ms = [
                    shear_x(-0.3), shear_x(0.17), shear_y(0.3), shear_y(-0.21), translate_x(5.5), translate_x(-13.37),
                    translate_y(-9.25), translate_y(2.0), translate_x(0.0), translate_x(1e6),
                    rotation(29.3, h, w), rotation(-4.1, h, w), rotation(90.0, h, w), rotation(0.0, h, w),
                ];
                for m in ms {
                    let axis = axis_of(&m);
                    for along in [axis, Axis::Both] {
                        for channels in [1, 3] {
                            let (mut a, mut b) = (img[..channels * h * w].to_vec(), img[..channels * h * w].to_vec());
                            // SAFETY: AVX2 is available (checked above).
                            unsafe { simd(&mut a, channels, h, w, &m, &[7, 8, 9], along) };
                            transform_planes(&mut b, channels, h, w, &m, &[7, 8, 9]);
                            assert_eq!(a, b, "{m:?} {h}x{w} c{channels} {along:?}");
                        }
                    }
                }
            }
            assert_eq!(axis_of(&rotation(10.0, 20, 20)), Axis::Both);
            assert_eq!(axis_of(&shear_y(0.1)), Axis::Y);
        }
    }

    #[test]
    fn lanes_match_planes() {
        let (h, w) = (37, 41);
        let img: Vec<u8> = (0..3 * h * w).map(|i| ((i * 73 + i / 7 * 11) % 256) as u8).collect();
        for m in [rotation(-23.7, h, w), rotation(11.0, h, w), shear_x(0.21), shear_y(-0.17), translate_x(-7.3), translate_y(4.6)] {
            let (mut a, mut b) = (img.clone(), img.clone());
            transform_lanes(&mut a, 3, h, w, &m, &[1, 2, 3], &mut Vec::new());
            transform_planes(&mut b, 3, h, w, &m, &[1, 2, 3]);
            assert_eq!(a, b, "{m:?}");
            let (mut g, mut gp) = (img[..h * w].to_vec(), img[..h * w].to_vec());
            transform_lanes(&mut g, 1, h, w, &m, &[9], &mut Vec::new());
            transform_planes(&mut gp, 1, h, w, &m, &[9]);
            assert_eq!(g, gp);
        }
    }
}

/// `img.rotate(degrees)` about the centre (PIL's matrix, rounded to 15 digits).
pub fn rotation(degrees: f64, h: usize, w: usize) -> Affine {
    let a = -degrees.to_radians();
    let r = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (r(a.cos()), r(a.sin()));
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut m = [cos, sin, 0.0, -sin, cos, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    m
}

pub fn shear_x(factor: f64) -> Affine {
    [1.0, factor, 0.0, 0.0, 1.0, 0.0]
}

pub fn shear_y(factor: f64) -> Affine {
    [1.0, 0.0, 0.0, factor, 1.0, 0.0]
}

/// Translation by `pixels` (timm's `translate_x_rel`: `pct * width`).
pub fn translate_x(pixels: f64) -> Affine {
    [1.0, 0.0, pixels, 0.0, 1.0, 0.0]
}

pub fn translate_y(pixels: f64) -> Affine {
    [1.0, 0.0, 0.0, 0.0, 1.0, pixels]
}
