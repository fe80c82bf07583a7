//! The geometric ops with AVX2, four output pixels at a time.
//!
//! ShearX and TranslateX map every output row to the same input row
//! (`yin = 0 x + 1 y + 0`, so the vertical offset is 0 and the cubic is
//! one row's); ShearY and TranslateY read one column (`dx = 0`); rotations
//! take the whole 4x4 neighbourhood. PIL's
//! per-pixel arithmetic is kept operation for operation: the same f64
//! products and sums in the same order, `floor`, clamped taps, the cubic
//! `p1 + d (p2 + d (p3 + d p4))`, and truncation to u8; a zero offset gives
//! `p1 + 0` = the tap itself, as PIL's shortcut does. So the values are
//! bit-identical to `affine::transform_planes` (tested); only the work is
//! spread over vector lanes, with the taps gathered from an f64 copy.

use std::arch::x86_64::*;

use super::affine::Affine;

/// Which axes the cubic runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Along rows (ShearX, TranslateX): `m = [a, b, c, 0, 1, 0]`.
    X,
    /// Along columns (ShearY, TranslateY): `m = [1, 0, 0, d, e, f]`.
    Y,
    /// Both (rotations, any other matrix): four rows, then across them.
    Both,
}

/// The axes a matrix needs.
pub fn axis_of(m: &Affine) -> Axis {
    if m[3] == 0.0 && m[4] == 1.0 && m[5] == 0.0 {
        Axis::X
    } else if m[0] == 1.0 && m[1] == 0.0 && m[2] == 0.0 {
        Axis::Y
    } else {
        Axis::Both
    }
}

thread_local! {
    /// The f64 planes the taps are gathered from (reused: 1.2 MB at 224 px, RGB).
    static PLANES: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `affine::transform` of `m` along `axis` (`axis_of(m)`, or `Both` for
/// any matrix; `channels` <= 4).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn transform(img: &mut [u8], channels: usize, h: usize, w: usize, m: &Affine, fill: &[u8], axis: Axis) {
    assert!(img.len() == channels * h * w && channels <= 4 && h * w <= i32::MAX as usize);
    PLANES.with(|cell| {
        let mut planes = cell.borrow_mut();
        planes.clear();
        planes.extend(img.iter().map(|&v| f64::from(v)));
        let plane = h * w;
        let full = w / 4 * 4;
        for y in 0..h {
            let mut x = 0;
            while x < full {
                // SAFETY: AVX2 is enabled on this function; `x + 3 < w`, and
                // `quad` gathers only clamped (in-bounds) indices.
                unsafe { quad(img, &planes, channels, h, w, y, x, m, fill, axis) };
                x += 4;
            }
            for xx in x..w {
                let one = super::affine::sample_pixel(&planes, channels, h, w, m, xx, y);
                for c in 0..channels {
                    img[c * plane + y * w + xx] = one[c].unwrap_or(fill.get(c).copied().unwrap_or(128));
                }
            }
        }
    })
}

/// Output pixels `x..x + 4` of row `y`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn quad(img: &mut [u8], planes: &[f64], channels: usize, h: usize, w: usize, y: usize, x: usize, m: &Affine, fill: &[u8], axis: Axis) {
    let half = _mm256_set1_pd(0.5);
    let xo = _mm256_add_pd(_mm256_set_pd(3.0, 2.0, 1.0, 0.0), _mm256_set1_pd(x as f64 + 0.5));
    let yo = _mm256_set1_pd(y as f64 + 0.5);
    // Input position: (m0 xo + m1 yo) + m2, as PIL evaluates it.
    let lin = |a: f64, b: f64, c: f64| _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(a), xo), _mm256_mul_pd(_mm256_set1_pd(b), yo)), _mm256_set1_pd(c));
    let xin = lin(m[0], m[1], m[2]);
    let yin = lin(m[3], m[4], m[5]);
    let zero = _mm256_setzero_pd();
    let inside = _mm256_and_pd(
        _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(xin, zero), _mm256_cmp_pd::<_CMP_LT_OQ>(xin, _mm256_set1_pd(w as f64))),
        _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(yin, zero), _mm256_cmp_pd::<_CMP_LT_OQ>(yin, _mm256_set1_pd(h as f64))),
    );
    let (xs, ys) = (_mm256_sub_pd(xin, half), _mm256_sub_pd(yin, half));
    let (xf, yf) = (_mm256_floor_pd(xs), _mm256_floor_pd(ys));
    // Outside pixels may sit far away: clamp before the integer conversion
    // (their taps are read but not used).
    let big = _mm256_set1_pd(1.0e9);
    let to_i32 = |v: __m256d| _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(v, _mm256_sub_pd(zero, big)), big));
    let (xi, yi) = (to_i32(xf), to_i32(yf));
    let clamp = |v: __m128i, n: usize| _mm_min_epi32(_mm_max_epi32(v, _mm_setzero_si128()), _mm_set1_epi32(n as i32 - 1));
    let wv = _mm_set1_epi32(w as i32);
    let (dx, dy) = (_mm256_sub_pd(xs, xf), _mm256_sub_pd(ys, yf));
    // Tap k of four along an axis: offset k - 1 from the floor, clamped
    // (PIL clamps columns; its rows past an edge repeat the last one, the same).
    let col = |k: i32| clamp(_mm_add_epi32(xi, _mm_set1_epi32(k - 1)), w);
    let row = |k: i32| _mm_mullo_epi32(clamp(_mm_add_epi32(yi, _mm_set1_epi32(k - 1)), h), wv);
    let plane = h * w;
    let two = _mm256_set1_pd(2.0);
    let lo = _mm256_setzero_pd();
    let hi = _mm256_set1_pd(255.0);
    let neg = _mm256_set1_pd(-0.0);
    // PIL's cubic step, operation for operation (`-v1` is an exact negation).
    let cubic = |v1: __m256d, v2: __m256d, v3: __m256d, v4: __m256d, d: __m256d| {
        let neg_v1 = _mm256_xor_pd(v1, neg);
        let p1 = v2;
        let p2 = _mm256_add_pd(neg_v1, v3);
        let p3 = _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(two, _mm256_sub_pd(v1, v2)), v3), v4);
        let p4 = _mm256_add_pd(_mm256_sub_pd(_mm256_add_pd(neg_v1, v2), v3), v4);
        _mm256_add_pd(p1, _mm256_mul_pd(d, _mm256_add_pd(p2, _mm256_mul_pd(d, _mm256_add_pd(p3, _mm256_mul_pd(d, p4))))))
    };
    let (cols, rows) = ([col(0), col(1), col(2), col(3)], [row(0), row(1), row(2), row(3)]);
    // The common case of the separable ops: the four lanes' taps are four
    // runs of consecutive samples (X: floors x0..x0+3 on one row; Y: one
    // floor row over columns x..x+3), away from the edges, so plain loads
    // replace the gathers (same samples, so the same values).
    let lane0 = |v: __m128i| _mm_cvtsi128_si32(v);
    let steps = _mm_set_epi32(3, 2, 1, 0);
    let all_eq = |a: __m128i, b: __m128i| _mm_movemask_epi8(_mm_cmpeq_epi32(a, b)) == 0xFFFF;
    let run_start: Option<usize> = match axis {
        Axis::X => {
            let (x0, y0) = (lane0(xi), lane0(yi));
            (all_eq(xi, _mm_add_epi32(_mm_set1_epi32(x0), steps)) && x0 >= 1 && (x0 as usize) + 5 < w && (0..h as i32).contains(&y0))
                .then(|| y0 as usize * w + x0 as usize - 1)
        }
        Axis::Y => {
            let (x0, y0) = (lane0(xi), lane0(yi));
            (all_eq(yi, _mm_set1_epi32(y0)) && all_eq(xi, _mm_add_epi32(_mm_set1_epi32(x0), steps)) && x0 >= 0 && (x0 as usize) + 3 < w && y0 >= 1 && (y0 as usize) + 2 < h)
                .then(|| (y0 as usize - 1) * w + x0 as usize)
        }
        Axis::Both => None,
    };
    for c in 0..channels {
        let base = planes[c * plane..].as_ptr();
        // SAFETY: every index is a clamped row * w + clamped column < plane.
        let g = |r: __m128i, c: __m128i| unsafe { _mm256_i32gather_pd::<8>(base, _mm_add_epi32(r, c)) };
        let along_row = |r: __m128i| cubic(g(r, cols[0]), g(r, cols[1]), g(r, cols[2]), g(r, cols[3]), dx);
        // SAFETY: `run_start` was checked to keep all 16 samples read inside the plane.
        let run = |at: usize| unsafe { _mm256_loadu_pd(base.add(at)) };
        let v = match (axis, run_start) {
            (Axis::X, Some(at)) => cubic(run(at), run(at + 1), run(at + 2), run(at + 3), dx),
            (Axis::Y, Some(at)) => cubic(run(at), run(at + w), run(at + 2 * w), run(at + 3 * w), dy),
            (Axis::X, None) => along_row(rows[1]),
            (Axis::Y, None) => cubic(g(rows[0], cols[1]), g(rows[1], cols[1]), g(rows[2], cols[1]), g(rows[3], cols[1]), dy),
            (Axis::Both, _) => cubic(along_row(rows[0]), along_row(rows[1]), along_row(rows[2]), along_row(rows[3]), dy),
        };
        // PIL's truncation to u8: <= 0 -> 0, >= 255 -> 255, else toward zero.
        let clamped = _mm256_min_pd(_mm256_max_pd(v, lo), hi);
        let filled = _mm256_blendv_pd(_mm256_set1_pd(f64::from(fill.get(c).copied().unwrap_or(128))), clamped, inside);
        let ints = _mm256_cvttpd_epi32(filled);
        let mut out = [0i32; 4];
        // SAFETY: `out` holds four i32.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), ints) };
        let at = c * plane + y * w + x;
        for (k, &o) in out.iter().enumerate() {
            img[at + k] = o as u8;
        }
    }
}
