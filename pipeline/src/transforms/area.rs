//! Area (box-filter) downsampling of whole planes, the fast path behind
//! SRMAE's area clues: every output pixel is the rounded mean of a
//! `factor × factor` block. One pass adds `factor` rows at a time (widened to
//! u16, which the compiler vectorises), then sums groups of `factor` columns.
//! `srmae::area_clue` computes the same numbers one patch at a time and is the
//! reference in the tests.

/// `image` (`[C, side, side]`) -> `out` (`[C, side/factor, side/factor]`).
/// `side` must be a multiple of `factor`; `acc` is scratch (reused, no
/// allocation in steady state).
pub fn area_downsample(image: &[u8], channels: usize, side: usize, factor: usize, acc: &mut Vec<u16>, out: &mut Vec<u8>) {
    assert!(factor > 0 && side.is_multiple_of(factor), "side {side} is not a multiple of factor {factor}");
    assert!(image.len() >= channels * side * side, "image of {} bytes for {channels}x{side}x{side}", image.len());
    assert!(factor <= 16, "factor {factor}: block sums would overflow u16");
    let r = side / factor;
    out.resize(channels * r * r, 0);
    acc.resize(side + side / 2, 0); // row sums, then the halving buffer
    match factor {
        2 => planes::<2>(image, channels, side, acc, out),
        4 => planes::<4>(image, channels, side, acc, out),
        8 => planes::<8>(image, channels, side, acc, out),
        f => planes_any(image, channels, side, f, acc, out),
    }
}

/// Adds the `factor` rows of `rows` (`factor × side`) into `acc`.
fn sum_rows(rows: &[u8], side: usize, acc: &mut [u16]) {
    for (a, &v) in acc[..side].iter_mut().zip(&rows[..side]) {
        *a = v as u16;
    }
    for row in rows[side..].chunks_exact(side) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as u16;
        }
    }
}

/// Power-of-two factors: the column groups are summed by halving the row
/// of sums `log2(F)` times (stride-2 loops the compiler vectorises), then
/// divided with rounding by a shift.
fn planes<const F: usize>(image: &[u8], channels: usize, side: usize, scratch: &mut [u16], out: &mut [u8]) {
    let shift = 2 * F.trailing_zeros(); // divide by F * F
    let r = side / F;
    let (acc, half) = scratch.split_at_mut(side);
    for (plane, out_plane) in image.chunks_exact(side * side).take(channels).zip(out.chunks_exact_mut(r * r)) {
        for (rows, dst) in plane.chunks_exact(F * side).zip(out_plane.chunks_exact_mut(r)) {
            sum_rows(rows, side, acc);
            let mut width = side;
            while width > r {
                // acc[..width] -> half[..width / 2] -> acc[..width / 2], pairs summed
                sum_pairs(&acc[..width], &mut half[..width / 2]);
                width /= 2;
                acc[..width].copy_from_slice(&half[..width]);
            }
            for (d, &s) in dst.iter_mut().zip(&acc[..r]) {
                *d = ((s + (1 << shift >> 1)) >> shift) as u8;
            }
        }
    }
}

/// `dst[i] = src[2i] + src[2i + 1]` (sums below 2^15). SSE2 (part of every
/// x86-64) does eight per step; the compiler left the plain loop scalar.
fn sum_pairs(src: &[u16], dst: &mut [u16]) {
    assert_eq!(src.len(), 2 * dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while done + 8 <= dst.len() {
            // SAFETY: SSE2 is baseline on x86-64; 16 u16 are read from
            // src[2 * done..] and 8 written to dst[done..], both in bounds.
            unsafe {
                let p = src.as_ptr().add(2 * done) as *const __m128i;
                let (a, b) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                let low = _mm_set1_epi32(0xffff);
                let sa = _mm_add_epi32(_mm_and_si128(a, low), _mm_srli_epi32::<16>(a));
                let sb = _mm_add_epi32(_mm_and_si128(b, low), _mm_srli_epi32::<16>(b));
                _mm_storeu_si128(dst.as_mut_ptr().add(done) as *mut __m128i, _mm_packs_epi32(sa, sb));
            }
            done += 8;
        }
    }
    for (d, pair) in dst[done..].iter_mut().zip(src[2 * done..].chunks_exact(2)) {
        *d = pair[0] + pair[1];
    }
}

/// Any other factor: one sum per column group.
fn planes_any(image: &[u8], channels: usize, side: usize, f: usize, acc: &mut [u16], out: &mut [u8]) {
    let n = (f * f) as u32;
    let r = side / f;
    for (plane, out_plane) in image.chunks_exact(side * side).take(channels).zip(out.chunks_exact_mut(r * r)) {
        for (rows, dst) in plane.chunks_exact(f * side).zip(out_plane.chunks_exact_mut(r)) {
            sum_rows(rows, side, acc);
            for (d, block) in dst.iter_mut().zip(acc.chunks_exact(f)) {
                let s: u32 = block.iter().map(|&v| v as u32).sum();
                *d = ((s + n / 2) / n) as u8;
            }
        }
    }
}

/// Copies the clue of patch `id` (`[C, r, r]`, `r = patch / factor`) out of
/// the downsampled planes (`[C, side/factor, side/factor]`).
pub fn gather_clue(small: &[u8], channels: usize, side: usize, patch: usize, factor: usize, id: usize, out: &mut [u8]) {
    let (grid_w, r, small_side) = (side / patch, patch / factor, side / factor);
    let (y0, x0) = (id / grid_w * r, id % grid_w * r);
    for c in 0..channels {
        for y in 0..r {
            let src = (c * small_side + y0 + y) * small_side + x0;
            out[(c * r + y) * r..][..r].copy_from_slice(&small[src..src + r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::srmae::area_clue;

    #[test]
    fn pair_sums_match_for_every_length() {
        for n in 0..40 {
            let src: Vec<u16> = (0..2 * n).map(|i| (i * 1013 % 16321) as u16).collect();
            let mut dst = vec![0; n];
            sum_pairs(&src, &mut dst);
            let want: Vec<u16> = src.chunks_exact(2).map(|p| p[0] + p[1]).collect();
            assert_eq!(dst, want, "n {n}");
        }
    }

    #[test]
    fn equals_the_per_patch_reference_for_every_factor() {
        for (side, patch, channels) in [(32, 16, 3), (28, 4, 1), (48, 8, 3)] {
            let image: Vec<u8> = (0..channels * side * side).map(|i| ((i * 37 + i / 7) % 256) as u8).collect();
            for factor in [1, 2, 4, 8].into_iter().filter(|f| patch % f == 0) {
                let (mut acc, mut small) = (Vec::new(), Vec::new());
                area_downsample(&image, channels, side, factor, &mut acc, &mut small);
                let r = patch / factor;
                for id in 0..(side / patch) * (side / patch) {
                    let (mut got, mut want) = (vec![0; channels * r * r], vec![0; channels * r * r]);
                    gather_clue(&small, channels, side, patch, factor, id, &mut got);
                    area_clue(&image, side, side, patch, factor, id, &mut want);
                    assert_eq!(got, want, "side {side} patch {patch} factor {factor} id {id}");
                }
            }
        }
    }
}
