//! Upsampling a low-resolution clue back to a full patch, as one fixed
//! linear map, so that the encoder's own patch embedding can embed it (the
//! `ClueEmbed::PatchEmbed` variant of SRMAE).
//!
//! Each clue is upsampled *on its own* (`r x r -> p x p`, borders handled as
//! PIL does for an image of that size): a clue carries only its own pixels,
//! never those of its hidden neighbours. The very-low-resolution test instead
//! resizes the whole image; the two agree inside a patch and differ within one
//! low-resolution pixel of its border.
//!
//! Both filters are linear with weights summing to one, so upsampling
//! commutes with the per-channel normalisation and runs on normalised clues.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How a clue is brought back to `p x p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Each clue pixel repeated `p / r` times per side (`upsample_nearest2d`).
    Nearest,
    /// Bicubic (Catmull-Rom, a = -0.5) with PIL's border rule: taps outside
    /// the clue are dropped and the rest renormalised (`Image.resize(BICUBIC)`).
    Bicubic,
}

/// Catmull-Rom cubic, PIL's `bicubic_filter` (a = -0.5, support 2).
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// One axis: weights `[out][in]` of resizing `inp` samples to `out` samples.
fn axis_weights(inp: usize, out: usize, filter: Upsample) -> Vec<Vec<f64>> {
    let scale = inp as f64 / out as f64;
    (0..out)
        .map(|x| {
            let mut w = vec![0.0; inp];
            match filter {
                Upsample::Nearest => w[(x * inp / out).min(inp - 1)] = 1.0,
                Upsample::Bicubic => {
                    // PIL `precompute_coeffs` for upsampling (filter scale 1, support 2).
                    let center = (x as f64 + 0.5) * scale;
                    let lo = ((center - 2.0 + 0.5) as i64).max(0) as usize;
                    let hi = ((center + 2.0 + 0.5) as i64).min(inp as i64) as usize;
                    let mut total = 0.0;
                    for (k, wk) in w.iter_mut().enumerate().take(hi).skip(lo) {
                        *wk = cubic(k as f64 - center + 0.5);
                        total += *wk;
                    }
                    if total != 0.0 {
                        w.iter_mut().for_each(|v| *v /= total);
                    }
                }
            }
            w
        })
        .collect()
}

/// The map from a clue to its upsampled patch, in the layouts the model
/// uses: clue pixels channel-major `(C, r, r)`, patches channel-last
/// `(p, p, C)` (`patchify`). Returns `[C*r*r, p*p*C]` (transposed, for
/// `clues.matmul(&map)`).
pub fn upsample_map(r: usize, p: usize, channels: usize, filter: Upsample, dev: &Device) -> Result<Tensor> {
    if r == 0 || p % r != 0 {
        candle_core::bail!("clue side {r} does not divide the patch {p}");
    }
    let w = axis_weights(r, p, filter);
    let (rows, cols) = (channels * r * r, p * p * channels);
    let mut m = vec![0f32; rows * cols];
    for c in 0..channels {
        for i in 0..r {
            for j in 0..r {
                let row = c * r * r + i * r + j;
                for y in 0..p {
                    for x in 0..p {
                        m[row * cols + (y * p + x) * channels + c] = (w[y][i] * w[x][j]) as f32;
                    }
                }
            }
        }
    }
    Tensor::from_vec(m, (rows, cols), dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIL reference: `model/reference/clue_upsample.py` (Pillow 13.0), the
    /// 2x2 float image [[0, 1], [2, 4]] resized to 8x8 with
    /// `Image.Resampling.BICUBIC`, first two rows:
    /// ```text
    /// [-0.3233, -0.2703, -0.1474, 0.0859, 0.3544, 0.5877, 0.7106, 0.7636]
    /// [-0.2106, -0.1540, -0.0229, 0.2261, 0.5127, 0.7617, 0.8928, 0.9494]
    /// ```
    #[test]
    fn bicubic_matches_pil() {
        let m = upsample_map(2, 8, 1, Upsample::Bicubic, &Device::Cpu).unwrap();
        let clue = Tensor::new(&[[0f32, 1., 2., 4.]], &Device::Cpu).unwrap();
        let up: Vec<f32> = clue.matmul(&m).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let pil = [
            [-0.3233f32, -0.2703, -0.1474, 0.0859, 0.3544, 0.5877, 0.7106, 0.7636],
            [-0.2106, -0.1540, -0.0229, 0.2261, 0.5127, 0.7617, 0.8928, 0.9494],
        ];
        for (y, row) in pil.iter().enumerate() {
            for (x, &want) in row.iter().enumerate() {
                assert!((up[y * 8 + x] - want).abs() < 1e-4, "({y},{x}): {} vs PIL {want}", up[y * 8 + x]);
            }
        }
    }

    #[test]
    fn nearest_repeats_and_channels_land_channel_last() {
        let m = upsample_map(2, 4, 2, Upsample::Nearest, &Device::Cpu).unwrap();
        // channel 0: [[1, 2], [3, 4]], channel 1: ten times that
        let clue = Tensor::new(&[[1f32, 2., 3., 4., 10., 20., 30., 40.]], &Device::Cpu).unwrap();
        let up: Vec<f32> = clue.matmul(&m).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let at = |y: usize, x: usize, c: usize| up[(y * 4 + x) * 2 + c];
        assert_eq!([at(0, 0, 0), at(0, 1, 0), at(0, 2, 0), at(1, 3, 0), at(2, 0, 0), at(3, 3, 0)], [1., 1., 2., 2., 3., 4.]);
        assert_eq!([at(0, 0, 1), at(3, 3, 1)], [10., 40.]);
    }

    /// Constant clues stay constant (weights sum to one), so normalising
    /// before or after upsampling is the same; 1x1 clues become flat patches.
    #[test]
    fn rows_of_weights_sum_to_one() {
        for filter in [Upsample::Nearest, Upsample::Bicubic] {
            for (r, p) in [(1, 4), (2, 8), (4, 16), (8, 16)] {
                let m = upsample_map(r, p, 3, filter, &Device::Cpu).unwrap();
                let sums: Vec<f32> = m.sum(0).unwrap().to_vec1().unwrap();
                assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{filter:?} {r}->{p}: {sums:?}");
            }
        }
        assert!(upsample_map(3, 8, 1, Upsample::Nearest, &Device::Cpu).is_err());
    }
}
