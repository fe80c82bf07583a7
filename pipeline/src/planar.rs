//! Interleaved RGB or RGBX rows -> three planes (the HWC -> CHW step of
//! every sample), optionally mirrored. On x86-64 with SSSE3 sixteen pixels
//! move per step with byte shuffles; elsewhere, and for the row's tail, a
//! scalar loop. Both paths are checked against each other in the tests.

/// Splits `row` (`r.len()` pixels of `bpp` = 3 (RGB) or 4 (RGBX) bytes) into
/// `r`, `g`, `b`; mirrored when `flip` (pixel `x` of the row lands at
/// `len - 1 - x`).
pub fn deinterleave_row(row: &[u8], bpp: usize, r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) {
    let n = r.len();
    assert!(matches!(bpp, 3 | 4), "{bpp} bytes per pixel");
    assert!(row.len() >= bpp * n && g.len() == n && b.len() == n, "row of {} bytes for {n} pixels", row.len());
    #[cfg(target_arch = "x86_64")]
    {
        if n >= 16 && std::arch::is_x86_feature_detected!("ssse3") {
            // SAFETY: SSSE3 is present; lengths are checked above.
            let done = unsafe {
                if bpp == 3 {
                    ssse3::deinterleave_rgb(row, r, g, b, flip)
                } else {
                    ssse3::deinterleave_rgbx(row, r, g, b, flip)
                }
            };
            scalar(row, bpp, r, g, b, flip, done);
            return;
        }
    }
    scalar(row, bpp, r, g, b, flip, 0);
}

/// Pixels `from..n` of the row, one at a time.
fn scalar(row: &[u8], bpp: usize, r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool, from: usize) {
    let n = r.len();
    for x in from..n {
        let d = if flip { n - 1 - x } else { x };
        let px = &row[bpp * x..bpp * x + 3];
        (r[d], g[d], b[d]) = (px[0], px[1], px[2]);
    }
}

#[cfg(target_arch = "x86_64")]
mod ssse3 {
    use std::arch::x86_64::*;

    const Z: i8 = -1; // pshufb: a negative index writes 0

    /// For each output plane, the shuffles of the three 16-byte source
    /// vectors (bytes 0-15, 16-31, 32-47 of 16 RGB pixels) whose OR is the plane.
    const MASKS: [[[i8; 16]; 3]; 3] = [
        [
            [0, 3, 6, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, Z, 2, 5, 8, 11, 14, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 1, 4, 7, 10, 13],
        ],
        [
            [1, 4, 7, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, 0, 3, 6, 9, 12, 15, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 2, 5, 8, 11, 14],
        ],
        [
            [2, 5, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, 1, 4, 7, 10, 13, Z, Z, Z, Z, Z, Z],
            [Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 0, 3, 6, 9, 12, 15],
        ],
    ];
    const REVERSE: [i8; 16] = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
    /// Four RGBX pixels -> their R, G, B and X bytes as four 32-bit lanes.
    const GROUP: [i8; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

    unsafe fn load(m: &[i8; 16]) -> __m128i {
        _mm_loadu_si128(m.as_ptr() as *const __m128i)
    }

    /// Stores block `k` (16 bytes of one plane of an `n`-pixel row): at
    /// `16k`, or reversed at `n - 16(k + 1)` when mirrored.
    #[inline]
    #[target_feature(enable = "ssse3")]
    unsafe fn store_block(plane: *mut u8, out: __m128i, k: usize, n: usize, flip: bool, reverse: __m128i) {
        if flip {
            _mm_storeu_si128(plane.add(n - 16 * (k + 1)) as *mut __m128i, _mm_shuffle_epi8(out, reverse));
        } else {
            _mm_storeu_si128(plane.add(16 * k) as *mut __m128i, out);
        }
    }

    /// Converts whole blocks of 16 pixels; returns how many pixels it wrote
    /// (the scalar loop does the rest, also when mirrored: the blocks cover
    /// source pixels `0..done`, i.e. destination `n - done..n`, so the scalar
    /// tail of source pixels `done..n` fills destination `0..n - done`).
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn deinterleave_rgb(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) -> usize {
        let n = r.len();
        let blocks = n / 16;
        let masks = MASKS.map(|plane| plane.map(|m| load(&m)));
        let reverse = load(&REVERSE);
        let planes = [r.as_mut_ptr(), g.as_mut_ptr(), b.as_mut_ptr()];
        for k in 0..blocks {
            let src = row.as_ptr().add(48 * k) as *const __m128i;
            let v = [_mm_loadu_si128(src), _mm_loadu_si128(src.add(1)), _mm_loadu_si128(src.add(2))];
            for (plane, m) in planes.iter().zip(&masks) {
                let out = _mm_or_si128(
                    _mm_or_si128(_mm_shuffle_epi8(v[0], m[0]), _mm_shuffle_epi8(v[1], m[1])),
                    _mm_shuffle_epi8(v[2], m[2]),
                );
                store_block(*plane, out, k, n, flip, reverse);
            }
        }
        16 * blocks
    }

    /// As `deinterleave_rgb` for RGBX rows: each 16-byte load holds four
    /// pixels, grouped by channel with one shuffle; a 4×4 transpose of
    /// 32-bit lanes then yields 16 R, 16 G and 16 B bytes.
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn deinterleave_rgbx(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) -> usize {
        let n = r.len();
        let blocks = n / 16;
        let group = load(&GROUP);
        let reverse = load(&REVERSE);
        for k in 0..blocks {
            let src = row.as_ptr().add(64 * k) as *const __m128i;
            let t = [0, 1, 2, 3].map(|i| _mm_shuffle_epi8(_mm_loadu_si128(src.add(i)), group));
            let rg01 = _mm_unpacklo_epi32(t[0], t[1]);
            let rg23 = _mm_unpacklo_epi32(t[2], t[3]);
            let bx01 = _mm_unpackhi_epi32(t[0], t[1]);
            let bx23 = _mm_unpackhi_epi32(t[2], t[3]);
            let planes = [
                (r.as_mut_ptr(), _mm_unpacklo_epi64(rg01, rg23)),
                (g.as_mut_ptr(), _mm_unpackhi_epi64(rg01, rg23)),
                (b.as_mut_ptr(), _mm_unpacklo_epi64(bx01, bx23)),
            ];
            for (plane, out) in planes {
                store_block(plane, out, k, n, flip, reverse);
            }
        }
        16 * blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_agree_for_every_length_and_flip() {
        for bpp in [3, 4] {
            for n in 0..75 {
                let row: Vec<u8> = (0..bpp * n).map(|i| (i * 7 + 3) as u8).collect();
                for flip in [false, true] {
                    let (mut r, mut g, mut b) = (vec![0; n], vec![0; n], vec![0; n]);
                    deinterleave_row(&row, bpp, &mut r, &mut g, &mut b, flip);
                    let (mut r2, mut g2, mut b2) = (vec![0; n], vec![0; n], vec![0; n]);
                    scalar(&row, bpp, &mut r2, &mut g2, &mut b2, flip, 0);
                    assert_eq!((&r, &g, &b), (&r2, &g2, &b2), "bpp {bpp} n {n} flip {flip}");
                    for x in 0..n {
                        let d = if flip { n - 1 - x } else { x };
                        assert_eq!([r[d], g[d], b[d]], [row[bpp * x], row[bpp * x + 1], row[bpp * x + 2]]);
                    }
                }
            }
        }
    }
}
