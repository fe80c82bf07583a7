//! A whole pre-norm ViT block as one autograd node on the CPU: LayerNorm,
//! qkv linear, attention, projection, residual (with stochastic depth),
//! LayerNorm, linear + GELU, linear, residual.
//!
//! Math (`x` `[B, N, D]` folded to `[R, D]`; `k₁, k₂` per-sample
//! stochastic-depth scales, 0 or 1/(1−p), absent without drop path):
//! - forward: `h₁ = LN₁(x)`, `qkv = h₁ Wqkvᵀ + bqkv`, `a = attn(qkv)`,
//!   `o = a Wpᵀ + bp`, `x₁ = x + k₁ ⊙ o`, `h₂ = LN₂(x₁)`, `z = h₂ W₁ᵀ + b₁`,
//!   `u = gelu(z)`, `m = u W₂ᵀ + b₂`, `y = x₁ + k₂ ⊙ m`;
//! - backward from `g = ∂L/∂y`: the steps in reverse through each op's own
//!   CPU backward (`linear.rs`, `attention.rs`, `layer_norm.rs`): `dm = k₂ ⊙ g`,
//!   `du`, `dz = du ⊙ gelu'(z)`, `dh₂`, `dx₁ = g + LN₂ᵀ(dh₂)`, `do = k₁ ⊙ dx₁`,
//!   `da`, `dqkv`, `dh₁`, `dx = dx₁ + LN₁ᵀ(dh₁)`; the residual stream's
//!   gradient is accumulated in place, in one buffer.
//!
//! Why one node: as nine nodes (`vit::Block` on other devices), candle's
//! autograd allocates, zero-fills and adds one activation-sized gradient per
//! edge (about a dozen per block) and runs the residual adds and drop-path
//! products as separate passes with their own thread-pool rounds; here the
//! gradients pass between the steps as plain buffers. The twelve parameters
//! enter as one flat vector (`Tensor::cat` of them, whose backward hands each
//! variable its slice of the flat gradient), so this is an ordinary
//! `CustomOp2` and every variable gets its gradient through candle's
//! autograd.
//!
//! Kept for the backward: what the steps' backward passes read (`h₁`, `qkv`,
//! the attention probabilities, `a`, `x₁`, `h₂`, `z`, `u`, and `μ`, `r` per
//! row of each LayerNorm): the tensors the per-op path keeps alive too.
//!
//! Dispatch (`fused`): F32 tensors on the CPU outside autocast and
//! `ComposedOnly`, as the other CPU kernels. Elsewhere `vit::Block` runs the
//! per-op path, whose ops have CUDA kernels and composed fallbacks.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{self, Dims};
use super::cpu::{tensor, CpuF32, zeros};
use super::fused_cpu::slice;
use super::linear::CHUNK;
use super::{layer_norm, linear};

/// A block's parameters as `(weight, bias)` pairs; the flat vector holds
/// them in this order, each weight row-major (`[out, in]` for the linears).
#[derive(Clone, Copy)]
pub struct BlockParams<'a> {
    pub norm1: (&'a Tensor, &'a Tensor),
    pub qkv: (&'a Tensor, &'a Tensor),
    pub proj: (&'a Tensor, &'a Tensor),
    pub norm2: (&'a Tensor, &'a Tensor),
    pub fc1: (&'a Tensor, &'a Tensor),
    pub fc2: (&'a Tensor, &'a Tensor),
}

impl<'a> BlockParams<'a> {
    fn all(&self) -> [&'a Tensor; 12] {
        [self.norm1.0, self.norm1.1, self.qkv.0, self.qkv.1, self.proj.0, self.proj.1, self.norm2.0, self.norm2.1, self.fc1.0, self.fc1.1, self.fc2.0, self.fc2.1]
    }
}

/// Per-sample stochastic-depth scales of the two residual branches
/// (`B` values each: 0 for a dropped sample, 1/(1−p) for a kept one).
#[derive(Clone, Debug)]
pub struct DropPathScales {
    pub attn: Vec<f32>,
    pub mlp: Vec<f32>,
}

/// Indices into `BlockParams::all` / the flat vector.
const NORM1: usize = 0;
const QKV: usize = 2;
const PROJ: usize = 4;
const NORM2: usize = 6;
const FC1: usize = 8;
const FC2: usize = 10;

/// The flat vector's ranges of the twelve parameters for width `d` and MLP width `hidden`.
fn param_ranges(d: usize, hidden: usize) -> [Range<usize>; 12] {
    let sizes = [d, d, 3 * d * d, 3 * d, d * d, d, d, d, hidden * d, hidden, d * hidden, d];
    let mut start = 0;
    sizes.map(|len| {
        let r = start..start + len;
        start += len;
        r
    })
}

/// `branch ← x + k ⊙ branch`, one scale per sample of `per_sample` elements
/// (`x + branch` without scales), in place.
fn add_residual(x: &[f32], branch: &mut [f32], scales: Option<&[f32]>, per_sample: usize) {
    match scales {
        None => branch.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o += x)),
        Some(k) => branch
            .par_chunks_mut(per_sample)
            .zip(x.par_chunks(per_sample))
            .zip(k.par_iter())
            .for_each(|((o, x), &k)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = x + *o * k)),
    }
}

/// `k ⊙ g` per sample (`g` itself without scales).
fn scaled<'a>(g: &'a [f32], scales: Option<&[f32]>, per_sample: usize) -> Cow<'a, [f32]> {
    match scales {
        None => Cow::Borrowed(g),
        Some(k) => {
            let mut out = zeros(g.len());
            out.par_chunks_mut(per_sample).zip(g.par_chunks(per_sample)).zip(k.par_iter()).for_each(|((o, g), &k)| o.iter_mut().zip(g).for_each(|(o, &g)| *o = g * k));
            Cow::Owned(out)
        }
    }
}

/// What the forward keeps for the backward.
struct Saved {
    h1: Vec<f32>,
    stats1: Vec<(f32, f32)>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    a: Vec<f32>,
    x1: Vec<f32>,
    h2: Vec<f32>,
    stats2: Vec<(f32, f32)>,
    z: Vec<f32>,
    u: Vec<f32>,
}

struct BlockOp {
    heads: usize,
    hidden: usize,
    eps: [f32; 2],
    scales: Option<DropPathScales>,
    /// Whether anything upstream needs a gradient (else nothing is kept).
    keep: bool,
    saved: OnceLock<Saved>,
}

impl BlockOp {
    fn sizes(&self, shape: &Shape) -> Result<(usize, usize, usize, Dims)> {
        let (b, n, d) = shape.dims3()?;
        Ok((b, n, d, Dims::of(&Shape::from((b, n, 3 * d)), self.heads)?))
    }
    fn scales(&self) -> (Option<&[f32]>, Option<&[f32]>) {
        match &self.scales {
            Some(s) => (Some(&s.attn[..]), Some(&s.mlp[..])),
            None => (None, None),
        }
    }
}

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "vit-block"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, p) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let (_, n, d, dims) = self.sizes(l1.shape())?;
        let r = param_ranges(d, self.hidden);
        let w = |i: usize| &p[r[i].clone()];
        let (k_attn, k_mlp) = self.scales();
        let (h1, stats1) = layer_norm::forward_cpu(x, w(NORM1), w(NORM1 + 1), self.eps[0]);
        let qkv = linear::forward_cpu(&h1, w(QKV), w(QKV + 1), d, 3 * d)?;
        let (a, probs) = attention::forward_cpu(&qkv, dims)?;
        let mut x1 = linear::forward_cpu(&a, w(PROJ), w(PROJ + 1), d, d)?;
        add_residual(x, &mut x1, k_attn, n * d);
        let (h2, stats2) = layer_norm::forward_cpu(&x1, w(NORM2), w(NORM2 + 1), self.eps[1]);
        let z = linear::forward_cpu(&h2, w(FC1), w(FC1 + 1), d, self.hidden)?;
        let u = linear::gelu_cpu(&z);
        let mut y = linear::forward_cpu(&u, w(FC2), w(FC2 + 1), self.hidden, d)?;
        add_residual(&x1, &mut y, k_mlp, n * d);
        if self.keep && self.saved.set(Saved { h1, stats1, qkv, probs, a, x1, h2, stats2, z, u }).is_err() {
            candle_core::bail!("vit-block: the op ran its forward twice");
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, flat: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(sv) = self.saved.get() else {
            candle_core::bail!("vit-block: backward before forward (or of a forward that kept nothing)")
        };
        let grad = grad.contiguous()?;
        let (gv, xv, pv) = (CpuF32::new(&grad, self.name())?, CpuF32::new(x, self.name())?, CpuF32::new(flat, self.name())?);
        let (g, xs, p) = (gv.slice()?, xv.slice()?, pv.slice()?);
        let (_, n, d, dims) = self.sizes(x.shape())?;
        let hidden = self.hidden;
        let r = param_ranges(d, hidden);
        let w = |i: usize| &p[r[i].clone()];
        let (k_attn, k_mlp) = self.scales();
        let missing = || candle_core::Error::Msg("vit-block: a linear backward returned no input gradient".into());

        // y = x₁ + k₂ ⊙ m, m = u W₂ᵀ + b₂, u = gelu(z), z = h₂ W₁ᵀ + b₁
        let (du, dw2, db2) = linear::backward_cpu(&scaled(g, k_mlp, n * d), &sv.u, w(FC2), hidden, d, true)?;
        let mut dz = du.ok_or_else(missing)?;
        linear::gelu_backward_in_place(&mut dz, &sv.z);
        let (dh2, dw1, db1) = linear::backward_cpu(&dz, &sv.h2, w(FC1), d, hidden, true)?;
        drop(dz);
        // dx₁ = g + LN₂ᵀ(dh₂)
        let mut dx = g.to_vec();
        let (dn2w, dn2b) = layer_norm::backward_cpu(&sv.x1, w(NORM2), &dh2.ok_or_else(missing)?, &sv.stats2, Some(&mut dx), true);
        // x₁ = x + k₁ ⊙ o, o = a Wpᵀ + bp, a = attn(qkv), qkv = h₁ Wqkvᵀ + bqkv
        let (da, dwp, dbp) = linear::backward_cpu(&scaled(&dx, k_attn, n * d), &sv.a, w(PROJ), d, d, true)?;
        let dqkv = attention::backward_cpu(&sv.qkv, &da.ok_or_else(missing)?, &sv.probs, dims)?;
        let (dh1, dwqkv, dbqkv) = linear::backward_cpu(&dqkv, &sv.h1, w(QKV), d, 3 * d, true)?;
        drop(dqkv);
        // dx = dx₁ + LN₁ᵀ(dh₁)
        let want_dx = x.track_op();
        let (dn1w, dn1b) = layer_norm::backward_cpu(xs, w(NORM1), &dh1.ok_or_else(missing)?, &sv.stats1, want_dx.then_some(&mut dx[..]), true);

        // The parts in `param_ranges` order, which is consecutive and covers `p`.
        let dp = [dn1w, dn1b, dwqkv, dbqkv, dwp, dbp, dn2w, dn2b, dw1, db1, dw2, db2].concat();
        let dx = if want_dx { Some(tensor(dx, x.shape())?) } else { None };
        Ok((dx, Some(tensor(dp, flat.shape())?)))
    }
}

/// Whether the one-node block runs for these tensors (F32 on the CPU, no
/// autocast, no `ComposedOnly`); `vit::Block` runs its per-op path otherwise.
pub fn fused(x: &Tensor, params: &BlockParams) -> bool {
    let mut ts = vec![x];
    ts.extend(params.all());
    super::use_cpu_kernel(&ts)
}

fn check_shapes(x: &Tensor, p: &BlockParams, heads: usize) -> Result<usize> {
    let (_, _, d) = x.dims3()?;
    let hidden = p.fc1.0.dim(0)?;
    let want: [&[usize]; 12] = [&[d], &[d], &[3 * d, d], &[3 * d], &[d, d], &[d], &[d], &[d], &[hidden, d], &[hidden], &[d, hidden], &[d]];
    for (t, want) in p.all().iter().zip(want) {
        if t.dims() != want {
            candle_core::bail!("vit-block: x {:?} needs parameters of shapes {want:?}, got {:?}", x.dims(), t.dims());
        }
    }
    if heads == 0 || d % heads != 0 {
        candle_core::bail!("vit-block: width {d} does not split into {heads} heads");
    }
    Ok(hidden)
}

/// One pre-norm ViT block (`vit::Block`: qkv bias, exact GELU, LayerNorm
/// with `eps`) as one autograd node; `scales`: stochastic depth drawn by the
/// caller (training), `None` for none.
/// # Shapes
/// - `x`: `[B, N, D]` -> `[B, N, D]`; `params` as `vit::Block`'s
///   (`qkv` `[3D, D]`, `proj` `[D, D]`, `fc1` `[H, D]`, `fc2` `[D, H]`, norms `[D]`),
///   `scales`: `B` values per branch.
pub fn transformer_block(x: &Tensor, params: &BlockParams, heads: usize, eps: [f64; 2], scales: Option<DropPathScales>) -> Result<Tensor> {
    let hidden = check_shapes(x, params, heads)?;
    let b = x.dim(0)?;
    if let Some(s) = &scales {
        if s.attn.len() != b || s.mlp.len() != b {
            candle_core::bail!("vit-block: {} and {} drop-path scales for a batch of {b}", s.attn.len(), s.mlp.len());
        }
    }
    let all = params.all();
    let keep = x.track_op() || all.iter().any(|t| t.track_op());
    let flat = Tensor::cat(&all.iter().map(|t| t.flatten_all()).collect::<Result<Vec<_>>>()?, 0)?;
    let op = BlockOp { heads, hidden, eps: eps.map(|e| e as f32), scales, keep, saved: OnceLock::new() };
    x.contiguous()?.apply_op2(&flat, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, pseudo_random, Case};
    use candle_core::Var;

    /// `x` and the twelve parameters (weights small enough that the softmax is not saturated).
    fn case(b: usize, n: usize, d: usize, hidden: usize) -> Case {
        let shapes: [Vec<usize>; 13] = [
            vec![b, n, d],
            vec![d],
            vec![d],
            vec![3 * d, d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![hidden, d],
            vec![hidden],
            vec![d, hidden],
            vec![d],
        ];
        let vars = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let scale = match i {
                    0 => 2.0,
                    1 | 7 => 0.5, // LayerNorm weights around 1 below
                    _ => 0.3,
                };
                let t = pseudo_random(s, 31 + i as u64, scale);
                let t = if i == 1 || i == 7 { (t + 1.0).expect("shift") } else { t };
                Var::from_tensor(&t).expect("var")
            })
            .collect();
        Case { vars }
    }

    fn params(t: &[Tensor]) -> BlockParams<'_> {
        BlockParams { norm1: (&t[1], &t[2]), qkv: (&t[3], &t[4]), proj: (&t[5], &t[6]), norm2: (&t[7], &t[8]), fc1: (&t[9], &t[10]), fc2: (&t[11], &t[12]) }
    }

    /// The per-op path `vit::Block` runs elsewhere, with the same drop-path scales.
    fn per_op(t: &[Tensor], heads: usize, scales: &Option<DropPathScales>) -> Result<Tensor> {
        let p = params(t);
        let branch = |y: Tensor, k: Option<&Vec<f32>>| -> Result<Tensor> {
            match k {
                Some(k) => y.broadcast_mul(&Tensor::from_vec(k.clone(), (k.len(), 1, 1), y.device())?),
                None => Ok(y),
            }
        };
        let x = &t[0];
        let h = crate::ops::layer_norm(x, p.norm1.0, p.norm1.1, 1e-6)?;
        let o = crate::ops::linear(&crate::ops::attention(&crate::ops::linear(&h, p.qkv.0, Some(p.qkv.1))?, heads)?, p.proj.0, Some(p.proj.1))?;
        let x1 = (x + branch(o, scales.as_ref().map(|s| &s.attn))?)?;
        let h = crate::ops::layer_norm(&x1, p.norm2.0, p.norm2.1, 1e-6)?;
        let m = crate::ops::linear(&crate::ops::linear_gelu(&h, p.fc1.0, Some(p.fc1.1))?, p.fc2.0, Some(p.fc2.1))?;
        &x1 + branch(m, scales.as_ref().map(|s| &s.mlp))?
    }

    #[test]
    fn matches_the_per_op_path_and_finite_differences() {
        // (batch, tokens, width, heads, MLP width): odd tokens and widths, batch 1 (products split across threads).
        for &(b, n, d, heads, hidden, drop) in &[(2usize, 50usize, 36usize, 3usize, 60usize, true), (1, 7, 12, 2, 48, false), (3, 197, 20, 4, 80, false)] {
            let c = case(b, n, d, hidden);
            let scales = drop.then(|| DropPathScales { attn: vec![2.0, 0.0], mlp: vec![0.0, 1.25] });
            let name = format!("vit-block b{b} n{n} d{d} heads {heads} drop {drop}");
            check_op(
                &name,
                &c,
                |t| {
                    let p = params(t);
                    assert!(fused(&t[0], &p), "{name}: the one-node block runs");
                    transformer_block(&t[0], &p, heads, [1e-6, 1e-6], scales.clone())
                },
                |t| per_op(t, heads, &scales),
            );
        }
    }

    #[test]
    fn offset_views_give_the_same_block() {
        let c = case(3, 9, 12, 48);
        let t: Vec<Tensor> = c.vars.iter().map(|v| v.as_tensor().clone()).collect();
        let p = params(&t);
        let whole = transformer_block(&t[0], &p, 2, [1e-6, 1e-6], None).expect("block");
        // Samples 1..3 as a view at an offset, and a strided view of the same values.
        let view = t[0].narrow(0, 1, 2).expect("narrow");
        let part = transformer_block(&view, &p, 2, [1e-6, 1e-6], None).expect("block of a view");
        // (A smaller batch may round differently in the products: same values to float precision.)
        assert!(crate::ops::fused_cpu::tests::max_diff(&part, &whole.narrow(0, 1, 2).expect("narrow")) < 1e-5);
        let strided = t[0].transpose(1, 2).and_then(|x| x.contiguous()).and_then(|x| x.transpose(1, 2)).expect("strided");
        let again = transformer_block(&strided, &p, 2, [1e-6, 1e-6], None).expect("block of a strided view");
        assert_eq!(crate::ops::fused_cpu::tests::max_diff(&again, &whole), 0.0);
    }

    #[test]
    fn wrong_shapes_and_scales_are_refused() {
        let c = case(2, 5, 12, 48);
        let t: Vec<Tensor> = c.vars.iter().map(|v| v.as_tensor().clone()).collect();
        let p = params(&t);
        let err = transformer_block(&t[0], &p, 5, [1e-6; 2], None).expect_err("12 does not split into 5 heads");
        assert!(err.to_string().contains("heads"), "{err}");
        let short = DropPathScales { attn: vec![1.0], mlp: vec![1.0, 1.0] };
        assert!(transformer_block(&t[0], &p, 2, [1e-6; 2], Some(short)).is_err());
        let mut bad = p;
        bad.proj = (p.fc1.0, p.proj.1);
        let err = transformer_block(&t[0], &bad, 2, [1e-6; 2], None).expect_err("fc1's weight as proj");
        assert!(err.to_string().contains("vit-block"), "{err}");
    }

    #[test]
    fn vit_block_draws_the_same_stochastic_depth_on_both_paths() {
        use crate::layers::vit::{seed_stochastic_depth, Block};
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu);
        let block = Block::new(24, 3, 4.0, 0.5, vb).expect("block");
        let x = Var::from_tensor(&pseudo_random(&[16, 10, 24], 5, 1.0)).expect("x");
        let run = |composed: bool| {
            let _guard = composed.then(crate::ops::ComposedOnly::enter);
            seed_stochastic_depth(7);
            let y = block.forward(x.as_tensor(), true).expect("forward");
            let g = (&y * pseudo_random(&[16, 10, 24], 6, 1.0)).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            (y, g)
        };
        let ((y, g), (y_ref, g_ref)) = (run(false), run(true));
        assert!(crate::ops::fused_cpu::tests::max_diff(&y, &y_ref) < 1e-4);
        for v in vm.all_vars().iter().chain([&x]) {
            let (a, r) = (g.get(v.as_tensor()).expect("gradient"), g_ref.get(v.as_tensor()).expect("reference gradient"));
            let scale = 1.0 + r.abs().and_then(|t| t.max_all()).and_then(|t| t.to_scalar::<f32>()).expect("max");
            assert!(crate::ops::fused_cpu::tests::max_diff(a, r) < 1e-4 * scale, "{:?}", v.shape());
        }
        // With p = 0.5 over 16 samples, some branches were dropped: the draws matter.
        seed_stochastic_depth(7);
        assert!(drop_path_dropped_some(16, 0.5));
    }

    fn drop_path_dropped_some(b: usize, p: f64) -> bool {
        crate::layers::vit::drop_path_scales(b, p).contains(&0.0)
    }
}
