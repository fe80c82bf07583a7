//! Fixed 2D sin-cos position embeddings, as facebookresearch/mae
//! `util/pos_embed.py`: for patch (row r, column c) of a G×G grid, the first
//! half of the D dims encodes c and the second half r (MAE's meshgrid puts the
//! w coordinate first), each half as [sin(pos·ω), cos(pos·ω)] with
//! ω_k = 1 / 10000^(k / (D/4)), k < D/4.

use candle_core::{Device, Result, Tensor};

/// 1D embedding of positions `pos` into `dim` values each (`dim` even).
fn sincos_1d(dim: usize, pos: &[f64]) -> Vec<Vec<f64>> {
    let half = dim / 2;
    pos.iter()
        .map(|&p| {
            let mut v = Vec::with_capacity(dim);
            let omega = |k: usize| 1.0 / 10000f64.powf(k as f64 / half as f64);
            v.extend((0..half).map(|k| (p * omega(k)).sin()));
            v.extend((0..half).map(|k| (p * omega(k)).cos()));
            v
        })
        .collect()
}

/// `[(cls + G*G) * D]` row-major values; the cls row (if any) is zeros.
pub fn sincos_2d(dim: usize, grid: usize, cls_token: bool) -> Vec<f32> {
    assert!(dim % 4 == 0, "embedding dim {dim} must be a multiple of 4");
    let n = grid * grid;
    let cols: Vec<f64> = (0..n).map(|i| (i % grid) as f64).collect();
    let rows: Vec<f64> = (0..n).map(|i| (i / grid) as f64).collect();
    let (ec, er) = (sincos_1d(dim / 2, &cols), sincos_1d(dim / 2, &rows));
    let mut out = Vec::with_capacity((n + cls_token as usize) * dim);
    if cls_token {
        out.extend(std::iter::repeat_n(0.0f32, dim));
    }
    for i in 0..n {
        out.extend(ec[i].iter().chain(&er[i]).map(|&v| v as f32));
    }
    out
}

/// As a `[1, cls + G*G, D]` tensor.
pub fn sincos_2d_tensor(dim: usize, grid: usize, cls_token: bool, dev: &Device) -> Result<Tensor> {
    let n = grid * grid + cls_token as usize;
    Tensor::from_vec(sincos_2d(dim, grid, cls_token), (1, n, dim), dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mae_reference() {
        // Values printed by model/reference/parity.py (numpy, MAE's
        // util/pos_embed.py verbatim): get_2d_sincos_pos_embed(8, 3, cls_token=True)
        let want: [[f32; 8]; 3] = [
            [0.0; 8],
            // patch 0 (row 0, col 0)
            [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
            // patch 1 (row 0, col 1)
            [0.841_470_96, 0.009_999_833, 0.540_302_3, 0.999_95, 0.0, 0.0, 1.0, 1.0],
        ];
        let got = sincos_2d(8, 3, true);
        for (r, row) in want.iter().enumerate() {
            for (k, &v) in row.iter().enumerate() {
                assert!((got[r * 8 + k] - v).abs() < 1e-6, "row {r} dim {k}: {} vs {v}", got[r * 8 + k]);
            }
        }
        // patch 3 = (row 1, col 0): the second half encodes the row.
        let p3 = &got[4 * 8..5 * 8];
        assert!((p3[4] - 0.841_470_96).abs() < 1e-6 && p3[0].abs() < 1e-9);
    }
}
