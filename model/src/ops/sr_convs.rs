//! The SR head's convolution stack as one autograd node on the CPU: the
//! input convolution, the residual blocks without normalisation
//! (conv-ReLU-conv + skip) and the output convolution, plus the head's
//! global residual.
//!
//! Every convolution is given as its dense band matrix over `H × W`
//! channels-last maps (`conv3x3_rows.rs`; the layer `crate::layers::conv3x3`
//! builds it from the kernel). Math, with `u` `[N, HW·C_0]`, layer `l`'s
//! matrix and repeated bias `(A_l, b_l)`, `R` residual blocks and `s` the
//! skip `[N, HW·C_out]`:
//! - forward: `x₀ = u A₀ + b₀`; block `i`: `hᵢ = relu(xᵢ A₂ᵢ₊₁ + b₂ᵢ₊₁)`,
//!   `xᵢ₊₁ = xᵢ + hᵢ A₂ᵢ₊₂ + b₂ᵢ₊₂`; `y = x_R A_L + b_L + s` (L = 2R + 1);
//! - backward from `g = ∂L/∂y`: `ds = g`, `dA_L = x_Rᵀ g`, `dx_R = g A_Lᵀ`;
//!   block `i` in reverse, from `dxᵢ₊₁`: `dA₂ᵢ₊₂ = hᵢᵀ dxᵢ₊₁`,
//!   `dz = (dxᵢ₊₁ A₂ᵢ₊₂ᵀ) ⊙ [hᵢ > 0]`, `dA₂ᵢ₊₁ = xᵢᵀ dz`,
//!   `dxᵢ = dxᵢ₊₁ + dz A₂ᵢ₊₁ᵀ` (accumulated in place); `dA₀ = uᵀ dx₀`,
//!   `du = dx₀ A₀ᵀ`; each bias gradient is the column sum of its layer's
//!   output gradient. All products skip the bands' structural zeros.
//!
//! Why one node: as separate ops the stack is 2R + 2 products, R ReLUs, R + 1
//! adds and their gradient edges, each a pass over an `[N, HW·F]` activation
//! that candle allocates, zero-fills and adds into. Here the gradients pass
//! between the layers as plain buffers, the ReLU mask is applied in the
//! backward's own loop, and the residual gradient is accumulated by the
//! product itself. The pixel shuffle costs nothing: the caller permutes the
//! output layer's columns (`A_L`, `b_L`), a weight-sized copy, instead of
//! the activations. The layers' matrices and biases enter as one flat
//! vector (`Tensor::cat`, as `block.rs`), whose backward hands each its
//! slice of the flat gradient.
//!
//! Kept for the backward: each layer's input after the first (`xᵢ`, `hᵢ`),
//! what the per-op path keeps alive too.

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv3x3_rows::{band_backward, band_forward, MapDims};
use super::cpu::{tensor, CpuF32, zeros};
use super::fused_cpu::slice;
use super::linear::CHUNK;

/// One convolution as its dense band matrix `[HW·C_in, HW·C_out]` and its
/// bias repeated at every position `[HW·C_out]`.
#[derive(Clone, Copy)]
pub struct DenseConv<'a> {
    pub dense: &'a Tensor,
    pub bias: &'a Tensor,
}

/// The stack: input convolution, residual blocks, output convolution.
pub struct SrConvs<'a> {
    pub conv_in: DenseConv<'a>,
    pub res: &'a [(DenseConv<'a>, DenseConv<'a>)],
    pub conv_out: DenseConv<'a>,
}

impl<'a> SrConvs<'a> {
    fn layers(&self) -> Vec<DenseConv<'a>> {
        let mut v = vec![self.conv_in];
        v.extend(self.res.iter().flat_map(|(a, b)| [*a, *b]));
        v.push(self.conv_out);
        v
    }
}

/// What the forward keeps: the inputs of layers 1..=L.
struct Saved {
    inputs: Vec<Vec<f32>>,
}

struct SrConvsOp {
    dims: Vec<MapDims>,
    keep: bool,
    saved: OnceLock<Saved>,
}

impl SrConvsOp {
    /// The flat vector's ranges: `(dense, bias)` of each layer in order.
    fn ranges(&self) -> Vec<(Range<usize>, Range<usize>)> {
        let mut start = 0;
        self.dims
            .iter()
            .map(|m| {
                let a = start..start + m.k() * m.p();
                let b = a.end..a.end + m.p();
                start = b.end;
                (a, b)
            })
            .collect()
    }
    fn blocks(&self) -> usize {
        (self.dims.len() - 2) / 2
    }
}

fn relu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
}

/// `acc += x`, elementwise.
fn add_in_place(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, &x)| *a += x));
}

/// `g ← 0` where the ReLU's output `h` is 0.
fn relu_mask(g: &mut [f32], h: &[f32]) {
    g.par_chunks_mut(CHUNK)
        .zip(h.par_chunks(CHUNK))
        .for_each(|(g, h)| {
            g.iter_mut().zip(h).for_each(|(g, &h)| {
                if h <= 0.0 {
                    *g = 0.0
                }
            })
        });
}

impl CustomOp3 for SrConvsOp {
    fn name(&self) -> &'static str {
        "sr-convs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (u, p, skip) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let r = self.ranges();
        let layer = |l: usize, x: &[f32]| {
            band_forward(self.dims[l], x, &p[r[l].0.clone()], &p[r[l].1.clone()])
        };
        let mut inputs = Vec::with_capacity(self.dims.len() - 1);
        let mut x = layer(0, u)?;
        for i in 0..self.blocks() {
            let mut h = layer(1 + 2 * i, &x)?;
            relu_in_place(&mut h);
            let mut next = layer(2 + 2 * i, &h)?;
            add_in_place(&mut next, &x);
            inputs.push(std::mem::replace(&mut x, next));
            inputs.push(h);
        }
        let mut y = layer(self.dims.len() - 1, &x)?;
        add_in_place(&mut y, skip);
        inputs.push(x);
        if self.keep && self.saved.set(Saved { inputs }).is_err() {
            candle_core::bail!("sr-convs: the op ran its forward twice");
        }
        let last = self.dims[self.dims.len() - 1];
        Ok((
            CpuStorage::F32(y),
            Shape::from((u.len() / self.dims[0].k(), last.p())),
        ))
    }

    fn bwd(
        &self,
        u: &Tensor,
        flat: &Tensor,
        skip: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(sv) = self.saved.get() else {
            candle_core::bail!(
                "sr-convs: backward before forward (or of a forward that kept nothing)"
            )
        };
        let grad = grad.contiguous()?;
        let (gv, uv, pv) = (
            CpuF32::new(&grad, self.name())?,
            CpuF32::new(u, self.name())?,
            CpuF32::new(flat, self.name())?,
        );
        let (g, us, p) = (gv.slice()?, uv.slice()?, pv.slice()?);
        let r = self.ranges();
        let a = |l: usize| &p[r[l].0.clone()];
        let column_sums =
            |g: &[f32], l: usize| crate::ops::row_broadcast::column_sums(g, None, self.dims[l].p());
        let mut dp = zeros(p.len());
        let mut put = |l: usize, da: Vec<f32>, db: Vec<f32>| {
            dp[r[l].0.clone()].copy_from_slice(&da);
            dp[r[l].1.clone()].copy_from_slice(&db);
        };

        let last = self.dims.len() - 1;
        let x_last = &sv.inputs[last - 1];
        let mut dx = zeros(x_last.len());
        let da = band_backward(self.dims[last], g, x_last, a(last), Some(&mut dx))?;
        put(last, da, column_sums(g, last));
        for i in (0..self.blocks()).rev() {
            let (c1, c2) = (1 + 2 * i, 2 + 2 * i);
            let (x_in, h) = (&sv.inputs[2 * i], &sv.inputs[2 * i + 1]);
            let mut dz = zeros(h.len());
            let da2 = band_backward(self.dims[c2], &dx, h, a(c2), Some(&mut dz))?;
            put(c2, da2, column_sums(&dx, c2));
            relu_mask(&mut dz, h);
            let da1 = band_backward(self.dims[c1], &dz, x_in, a(c1), Some(&mut dx))?;
            put(c1, da1, column_sums(&dz, c1));
        }
        let mut du = if u.track_op() {
            Some(zeros(us.len()))
        } else {
            None
        };
        let da0 = band_backward(self.dims[0], &dx, us, a(0), du.as_deref_mut())?;
        put(0, da0, column_sums(&dx, 0));

        let du = match du {
            Some(v) => Some(tensor(v, u.shape())?),
            None => None,
        };
        let dskip = if skip.track_op() {
            Some(grad.clone())
        } else {
            None
        };
        Ok((du, Some(tensor(dp, flat.shape())?), dskip))
    }
}

/// `conv_out(blocks(conv_in(u))) + skip` for the SR head's stack of 3×3
/// convolutions over `h × w` maps, each given as its dense band matrix (see
/// the module doc); elsewhere than the CPU kernel, the composed path of
/// `conv3x3_rows`, ReLU and adds.
/// # Shapes
/// - `u`: `[N, H·W·C_0]`; layer `l`: `dense` `[H·W·C_l, H·W·C_{l+1}]`, `bias` `[H·W·C_{l+1}]`;
///   residual blocks map `C_F -> C_F`; `skip`: `[N, H·W·C_out]` -> `[N, H·W·C_out]`
pub fn sr_convs(u: &Tensor, convs: &SrConvs, skip: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let layers = convs.layers();
    let hw = h * w;
    let (n, mut width) = u.dims2()?;
    let mut dims = Vec::with_capacity(layers.len());
    for (l, c) in layers.iter().enumerate() {
        let (k, p) = c.dense.dims2()?;
        let in_block = l >= 1 && l + 1 < layers.len();
        if hw == 0
            || k != width
            || k % hw != 0
            || p % hw != 0
            || c.bias.dims() != [p]
            || (in_block && p != k)
        {
            candle_core::bail!("sr-convs: layer {l} has dense {:?} and bias {:?} after width {width} on {h}x{w} maps", c.dense.dims(), c.bias.dims());
        }
        dims.push(MapDims {
            h,
            w,
            c_in: k / hw,
            c_out: p / hw,
        });
        width = p;
    }
    if skip.dims() != [n, width] {
        candle_core::bail!("sr-convs: skip {:?} for output [{n}, {width}]", skip.dims());
    }
    let mut all: Vec<&Tensor> = vec![u, skip];
    all.extend(layers.iter().flat_map(|c| [c.dense, c.bias]));
    if !super::use_cpu_kernel(&all) {
        return composed(u, convs, skip, h, w);
    }
    let keep = all.iter().any(|t| t.track_op());
    let flat = Tensor::cat(
        &layers
            .iter()
            .flat_map(|c| [c.dense.flatten_all(), Ok(c.bias.clone())])
            .collect::<Result<Vec<_>>>()?,
        0,
    )?;
    let op = SrConvsOp {
        dims,
        keep,
        saved: OnceLock::new(),
    };
    u.contiguous()?.apply_op3(&flat, &skip.contiguous()?, op)
}

fn composed(u: &Tensor, convs: &SrConvs, skip: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let conv = |x: &Tensor, c: &DenseConv| super::conv3x3_rows(x, c.dense, c.bias, h, w);
    let mut x = conv(u, &convs.conv_in)?;
    for (c1, c2) in convs.res {
        x = (&x + conv(&conv(&x, c1)?.relu()?, c2)?)?;
    }
    conv(&x, &convs.conv_out)? + skip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, Case};
    use candle_core::DType;

    /// 1 inside each output position's 3×3 neighbourhood of `[HW·C_in, HW·C_out]`.
    fn band_mask(h: usize, w: usize, c_in: usize, c_out: usize) -> Tensor {
        let (k, p) = (h * w * c_in, h * w * c_out);
        let v: Vec<f32> = (0..k * p)
            .map(|i| {
                let (q, o) = ((i / p) / c_in, (i % p) / c_out);
                let (dy, dx) = (
                    (q / w) as isize - (o / w) as isize,
                    (q % w) as isize - (o % w) as isize,
                );
                if dy.abs() <= 1 && dx.abs() <= 1 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_vec(v, (k, p), &candle_core::Device::Cpu).unwrap()
    }

    /// Forward and every input gradient (u, each matrix and bias, skip)
    /// against the composed path, and finite differences.
    #[test]
    fn matches_the_composed_stack_and_finite_differences() {
        // (N, H, W, C_0, F, C_out, residual blocks): the 4×4 / 2×2 / 1×1 clue maps, odd widths, batch 1
        for &(n, h, w, c0, f, c_out, blocks) in &[
            (5usize, 4usize, 4usize, 7usize, 5usize, 6usize, 2usize),
            (1, 2, 2, 3, 4, 5, 1),
            (4, 1, 1, 5, 3, 16, 2),
            (3, 3, 5, 2, 3, 2, 0),
        ] {
            let hw = h * w;
            let mut shapes: Vec<Vec<usize>> =
                vec![vec![n, hw * c0], vec![hw * c0, hw * f], vec![hw * f]];
            for _ in 0..2 * blocks {
                shapes.push(vec![hw * f, hw * f]);
                shapes.push(vec![hw * f]);
            }
            shapes.push(vec![hw * f, hw * c_out]);
            shapes.push(vec![hw * c_out]);
            shapes.push(vec![n, hw * c_out]);
            let case = Case::new(&shapes.iter().map(|s| &s[..]).collect::<Vec<_>>());
            let masks = [
                band_mask(h, w, c0, f),
                band_mask(h, w, f, f),
                band_mask(h, w, f, c_out),
            ];
            let run = |t: &[Tensor], fused: bool| -> Result<Tensor> {
                // masked (banded) matrices, scaled so activations stay O(1) through the stack
                let dense = |i: usize, m: &Tensor| (&t[i] * m)? * 0.3;
                let conv_in_a = dense(1, &masks[0])?;
                let res_a: Vec<Tensor> = (0..2 * blocks)
                    .map(|j| dense(3 + 2 * j, &masks[1]))
                    .collect::<Result<_>>()?;
                let out_a = dense(3 + 4 * blocks, &masks[2])?;
                let res: Vec<(DenseConv, DenseConv)> = (0..blocks)
                    .map(|b| {
                        (
                            DenseConv {
                                dense: &res_a[2 * b],
                                bias: &t[4 + 4 * b],
                            },
                            DenseConv {
                                dense: &res_a[2 * b + 1],
                                bias: &t[6 + 4 * b],
                            },
                        )
                    })
                    .collect();
                let convs = SrConvs {
                    conv_in: DenseConv {
                        dense: &conv_in_a,
                        bias: &t[2],
                    },
                    res: &res,
                    conv_out: DenseConv {
                        dense: &out_a,
                        bias: &t[4 + 4 * blocks],
                    },
                };
                let skip = &t[5 + 4 * blocks];
                if fused {
                    sr_convs(&t[0], &convs, skip, h, w)
                } else {
                    composed(&t[0], &convs, skip, h, w)
                }
            };
            check_op(
                &format!("sr-convs n={n} {h}x{w} {c0}->{f}x{blocks}->{c_out}"),
                &case,
                |t| run(t, true),
                |t| run(t, false),
            );
        }
    }

    #[test]
    fn mismatched_layers_are_an_error() {
        let dev = candle_core::Device::Cpu;
        let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
        let (u, a0, b0, a1, b1) = (
            z(&[2, 16 * 3]),
            z(&[16 * 3, 16 * 4]),
            z(&[16 * 4]),
            z(&[16 * 5, 16 * 2]),
            z(&[16 * 2]),
        );
        let convs = SrConvs {
            conv_in: DenseConv {
                dense: &a0,
                bias: &b0,
            },
            res: &[],
            conv_out: DenseConv {
                dense: &a1,
                bias: &b1,
            },
        };
        let err = sr_convs(&u, &convs, &z(&[2, 32]), 4, 4).unwrap_err();
        assert!(err.to_string().contains("layer 1"), "{err}");
    }
}
