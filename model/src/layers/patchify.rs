//! MAE's patchify / unpatchify: `[B, C, H, W]` <-> `[B, L, p*p*C]` with the
//! per-patch order (row in patch, column in patch, channel), patches in
//! row-major grid order (`einsum('nchpwq->nhwpqc')`).

use candle_core::{Result, Tensor};

/// # Shapes
/// - `imgs`: `[B, C, H, W]` (H = W = G·p)
/// - returns `[B, G*G, p*p*C]`
pub fn patchify(imgs: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = imgs.dims4()?;
    let (gh, gw) = (h / p, w / p);
    imgs.reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 3, 5, 1))?
        .reshape((b, gh * gw, p * p * c))
}

/// Inverse of `patchify`.
/// # Shapes
/// - `x`: `[B, G*G, p*p*C]` -> `[B, C, G*p, G*p]`
pub fn unpatchify(x: &Tensor, p: usize, c: usize) -> Result<Tensor> {
    let (b, l, _) = x.dims3()?;
    let g = (l as f64).sqrt() as usize;
    x.reshape((b, g, g, p, p, c))?.permute((0, 5, 1, 3, 2, 4))?.reshape((b, c, g * p, g * p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn patch_order_matches_mae_and_round_trips() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 4.0 * 4.0, &dev).unwrap().reshape((1, 2, 4, 4)).unwrap();
        let p = patchify(&x, 2).unwrap();
        assert_eq!(p.dims(), &[1, 4, 8]);
        // patch 1 = rows 0-1, cols 2-3; per-patch order (row, col, channel):
        // (0,2,c0)=2 (0,2,c1)=18 (0,3,c0)=3 (0,3,c1)=19 (1,2,c0)=6 ...
        let v: Vec<f32> = p.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![2.0, 18.0, 3.0, 19.0, 6.0, 22.0, 7.0, 23.0]);
        let back = unpatchify(&p, 2, 2).unwrap();
        let diff: f32 = (back - &x).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(diff, 0.0);
    }
}
