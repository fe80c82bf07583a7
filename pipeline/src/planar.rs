//! Interleaved RGB rows -> three planes (the HWC -> CHW step of every
//! sample), optionally mirrored. On x86-64 with SSSE3 sixteen pixels move per
//! step with byte shuffles; elsewhere, and for the row's tail, a scalar loop.
//! Both paths are checked against each other in the tests.

/// Splits `row` (`r.len()` RGB pixels) into `r`, `g`, `b`; mirrored when `flip`
/// (pixel `x` of the row lands at `len - 1 - x`).
pub fn deinterleave_rgb_row(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) {
    let n = r.len();
    assert!(row.len() >= 3 * n && g.len() == n && b.len() == n, "row of {} bytes for {n} pixels", row.len());
    #[cfg(target_arch = "x86_64")]
    {
        if n >= 16 && std::arch::is_x86_feature_detected!("ssse3") {
            // SAFETY: SSSE3 is present; lengths are checked above.
            let done = unsafe { ssse3::deinterleave(row, r, g, b, flip) };
            scalar(row, r, g, b, flip, done);
            return;
        }
    }
    scalar(row, r, g, b, flip, 0);
}

/// Pixels `from..n` of the row, one at a time.
fn scalar(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool, from: usize) {
    let n = r.len();
    for x in from..n {
        let d = if flip { n - 1 - x } else { x };
        let px = &row[3 * x..3 * x + 3];
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

    unsafe fn load(m: &[i8; 16]) -> __m128i {
        _mm_loadu_si128(m.as_ptr() as *const __m128i)
    }

    /// Converts whole blocks of 16 pixels; returns how many pixels it wrote
    /// (the scalar loop does the rest, also when mirrored: the blocks cover
    /// source pixels `0..done`, i.e. destination `n - done..n`, so the scalar
    /// tail of source pixels `done..n` fills destination `0..n - done`).
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn deinterleave(row: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) -> usize {
        let n = r.len();
        let blocks = n / 16;
        let masks = MASKS.map(|plane| plane.map(|m| load(&m)));
        let reverse = load(&REVERSE);
        let planes = [r.as_mut_ptr(), g.as_mut_ptr(), b.as_mut_ptr()];
        for k in 0..blocks {
            let src = row.as_ptr().add(48 * k) as *const __m128i;
            let v = [_mm_loadu_si128(src), _mm_loadu_si128(src.add(1)), _mm_loadu_si128(src.add(2))];
            for (plane, m) in planes.iter().zip(&masks) {
                let mut out = _mm_or_si128(
                    _mm_or_si128(_mm_shuffle_epi8(v[0], m[0]), _mm_shuffle_epi8(v[1], m[1])),
                    _mm_shuffle_epi8(v[2], m[2]),
                );
                let at = if flip {
                    out = _mm_shuffle_epi8(out, reverse);
                    n - 16 * (k + 1)
                } else {
                    16 * k
                };
                _mm_storeu_si128(plane.add(at) as *mut __m128i, out);
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
        for n in 0..75 {
            let row: Vec<u8> = (0..3 * n).map(|i| (i * 7 + 3) as u8).collect();
            for flip in [false, true] {
                let (mut r, mut g, mut b) = (vec![0; n], vec![0; n], vec![0; n]);
                deinterleave_rgb_row(&row, &mut r, &mut g, &mut b, flip);
                let (mut r2, mut g2, mut b2) = (vec![0; n], vec![0; n], vec![0; n]);
                scalar(&row, &mut r2, &mut g2, &mut b2, flip, 0);
                assert_eq!((&r, &g, &b), (&r2, &g2, &b2), "n {n} flip {flip}");
                for x in 0..n {
                    let d = if flip { n - 1 - x } else { x };
                    assert_eq!([r[d], g[d], b[d]], [row[3 * x], row[3 * x + 1], row[3 * x + 2]]);
                }
            }
        }
    }
}
