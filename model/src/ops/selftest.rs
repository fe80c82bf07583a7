//! `srmae selftest`: every fused op, forward and backward, on a device and
//! precision against the reference on the same inputs (the composed candle
//! path, F32, on the CPU), one report per op and shape.
//!
//! Each case draws its inputs from a fixed seed, runs `loss = Σ op(inputs) ⊙ R`
//! (`R` fixed and random, so every output element carries a distinct
//! gradient), and compares the output and every input's gradient:
//! `max_rel_err = max |got − want| / max |want|` per tensor, the worst one
//! reported. On the CPU the candidate is the fused CPU kernel; on CUDA the
//! fused CUDA kernels (turned on for the run), in F32 and under a BF16
//! autocast scope. The shapes are the ones the models run: N = 197 (ViT at
//! 224 px with the cls token) and 50, head dims 64 and 32, D = 768 / 512 /
//! 192, batch 1, and offset (non-contiguous) views.

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::ops::adamw::{adamw_steps, AdamWItem, AdamWStep};
use crate::training::autocast::Autocast;

/// A deterministic pseudo-random tensor on the CPU, values in `[-scale, scale)`
/// (candle's CPU RNG cannot be seeded).
pub fn pseudo_random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches data")
}

/// One op at one shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub case: String,
    pub device: String,
    pub precision: &'static str,
    /// `fused` (the op's own kernel ran) or `composed` (no kernel for this device).
    pub implementation: &'static str,
    /// The largest `max |got − want|` over the output and the gradients.
    pub max_abs_err: f64,
    /// The largest `max |got − want| / max |want|`, and the tensor it is of.
    pub max_rel_err: f64,
    pub worst: String,
    pub tolerance: f64,
    pub pass: bool,
}

/// Which products the candidate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Relative tolerance: F32 differs by summation order only; BF16
    /// operands round to 8 significant bits, accumulated in F32.
    fn tolerance(self) -> f64 {
        match self {
            Precision::F32 => 1e-4,
            Precision::Bf16 => 3e-2,
        }
    }
}

type OpFn = dyn Fn(&[Tensor]) -> Result<Tensor>;

/// A differentiable op at one shape.
struct Case {
    op: &'static str,
    name: String,
    shapes: Vec<Vec<usize>>,
    /// Inputs handed to the op as a narrowed view of a wider tensor.
    offset: bool,
    run: Box<OpFn>,
}

fn case(op: &'static str, name: String, shapes: &[&[usize]], offset: bool, run: impl Fn(&[Tensor]) -> Result<Tensor> + 'static) -> Case {
    Case { op, name, shapes: shapes.iter().map(|s| s.to_vec()).collect(), offset, run: Box::new(run) }
}

/// The differentiable ops and their shapes.
fn cases() -> Vec<Case> {
    let mut cs = Vec::new();
    for &(b, n, heads, hd, offset) in &[(2usize, 197usize, 12usize, 64usize, false), (1, 50, 16, 32, false), (3, 50, 3, 64, false), (2, 50, 3, 64, true)] {
        let d = heads * hd;
        cs.push(case("attention", format!("b={b} n={n} heads={heads} hd={hd} d={d}{}", if offset { " offset" } else { "" }), &[&[b, n, 3 * d]], offset, move |t| super::attention(&t[0], heads)));
    }
    for &(lead, din, dout, gelu, offset) in &[
        (&[2usize, 197][..], 768usize, 768usize, false, false),
        (&[1, 50], 512, 2048, true, false),
        (&[3, 50], 192, 768, true, true),
        (&[1, 197], 192, 576, false, false),
    ] {
        let mut x = lead.to_vec();
        x.push(din);
        let name = if gelu { "linear_gelu" } else { "linear" };
        let label = format!("x={x:?} out={dout}{}", if offset { " offset" } else { "" });
        cs.push(case(name, label, &[&x, &[dout, din], &[dout]], offset, move |t| if gelu { super::linear_gelu(&t[0], &t[1], Some(&t[2])) } else { super::linear(&t[0], &t[1], Some(&t[2])) }));
    }
    for &(shape, offset) in &[(&[2usize, 197, 768][..], false), (&[1, 50, 512], false), (&[3, 50, 192], true)] {
        let d = shape[shape.len() - 1];
        cs.push(case("layer_norm", format!("x={shape:?}{}", if offset { " offset" } else { "" }), &[shape, &[d], &[d]], offset, |t| super::layer_norm(&t[0], &t[1], &t[2], 1e-6)));
    }
    // The SR head's 3x3 convolution over a 4x4 map, 32 -> 32 channels.
    let (h, w, c) = (4usize, 4usize, 32usize);
    // The dense matrix of a convolution is zero outside the band of
    // neighbouring map rows (the op relies on it): the case masks it so.
    let band: Vec<f32> = (0..h * w * c * h * w * c).map(|i| if ((i / (h * w * c)) / (w * c)).abs_diff((i % (h * w * c)) / (w * c)) <= 1 { 1.0 } else { 0.0 }).collect();
    cs.push(case("conv3x3_rows", format!("n=64 map={h}x{w} c={c}"), &[&[64, h * w * c], &[h * w * c, h * w * c], &[h * w * c]], false, move |t| {
        let mask = Tensor::from_slice(&band, (h * w * c, h * w * c), t[1].device())?;
        super::conv3x3_rows(&t[0], &(&t[1] * mask)?, &t[2], h, w)
    }));
    cs
}

fn max_abs(t: &Tensor) -> Result<f64> {
    t.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// `(max abs error, relative error)` of `got` against `want`.
fn errors(got: &Tensor, want: &Tensor) -> Result<(f64, f64)> {
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    if got.dims() != want.dims() {
        candle_core::bail!("shape {:?} against {:?}", got.dims(), want.dims());
    }
    let abs = max_abs(&(got - want)?)?;
    Ok((abs, abs / max_abs(want)?.max(1e-12)))
}

/// The output and every input's gradient of `case` on `device`.
fn forward_backward(c: &Case, device: &Device, inputs: &[Tensor], weights_seed: u64) -> Result<Vec<Tensor>> {
    let vars = inputs.iter().map(|t| Var::from_tensor(&t.to_device(device)?)).collect::<Result<Vec<_>>>()?;
    let args = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v.as_tensor();
            // The first input as a view: columns 1.. of a tensor one column wider.
            if c.offset && i == 0 {
                let last = t.rank() - 1;
                t.narrow(last, 1, t.dim(last)? - 1)
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let out = (c.run)(&args)?;
    let weights = pseudo_random(out.dims(), weights_seed, 1.0).to_device(device)?;
    let loss = (out.to_dtype(DType::F32)? * weights)?.sum_all()?;
    let grads = loss.backward()?;
    let mut all = vec![out.to_dtype(DType::F32)?.to_device(&Device::Cpu)?];
    for v in &vars {
        let Some(g) = grads.get(v.as_tensor()) else { candle_core::bail!("{}: an input got no gradient", c.op) };
        all.push(g.to_device(&Device::Cpu)?);
    }
    Ok(all)
}

fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => format!("{:?}", device.location()).to_lowercase().replace(['{', '}', ' '], ""),
        other => format!("{:?}", other.location()),
    }
}

fn report(op: &'static str, name: String, device: &Device, precision: Precision, implementation: &'static str, diffs: Vec<(String, (f64, f64))>) -> OpReport {
    let max_abs_err = diffs.iter().map(|(_, (a, _))| *a).fold(0.0, f64::max);
    let (worst, max_rel_err) = diffs.iter().map(|(n, (_, r))| (n.clone(), *r)).fold((String::new(), -1.0), |acc, x| if x.1 > acc.1 { x } else { acc });
    let tolerance = precision.tolerance();
    OpReport { op, case: name, device: device_name(device), precision: precision.name(), implementation, max_abs_err, max_rel_err, worst, tolerance, pass: max_rel_err.is_finite() && max_rel_err <= tolerance }
}

/// Whether `device` has a fused kernel for the differentiable ops.
fn implementation(op: &str, device: &Device) -> &'static str {
    match device {
        Device::Cpu => "fused",
        Device::Cuda(_) if cfg!(feature = "cuda") && op != "conv3x3_rows" => "fused",
        _ => "composed",
    }
}

/// Runs every case on `device` in `precision` (BF16 only means something on
/// a GPU: on the CPU, autocast takes the composed path).
pub fn run(device: &Device, precision: Precision) -> Result<Vec<OpReport>> {
    let was_on = super::cuda_ops_enabled();
    if device.is_cuda() {
        super::set_cuda_ops_enabled(true);
    }
    let result = run_cases(device, precision);
    super::set_cuda_ops_enabled(was_on);
    result
}

fn run_cases(device: &Device, precision: Precision) -> Result<Vec<OpReport>> {
    let mut reports = Vec::new();
    for (k, c) in cases().into_iter().enumerate() {
        let inputs: Vec<Tensor> = c
            .shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut s = s.clone();
                if c.offset && i == 0 {
                    if let Some(last) = s.last_mut() {
                        *last += 1;
                    }
                }
                pseudo_random(&s, 1000 * k as u64 + i as u64 + 1, 1.0)
            })
            .collect();
        let weights_seed = 7_000 + k as u64;
        let want = {
            let _composed = super::ComposedOnly::enter();
            let _f32 = Autocast::enter(None);
            forward_backward(&c, &Device::Cpu, &inputs, weights_seed)?
        };
        let got = {
            let _autocast = Autocast::enter(if precision == Precision::Bf16 { Some(DType::BF16) } else { None });
            forward_backward(&c, device, &inputs, weights_seed)?
        };
        let names = std::iter::once("out".to_string()).chain((0..c.shapes.len()).map(|i| format!("grad{i}")));
        let diffs = names.zip(got.iter().zip(&want)).map(|(n, (g, w))| Ok((n, errors(g, w)?))).collect::<Result<Vec<_>>>()?;
        reports.push(report(c.op, c.name, device, precision, implementation(c.op, device), diffs));
    }
    reports.push(optimiser_case(device, precision)?);
    reports.push(grad_norm_case(device, precision)?);
    Ok(reports)
}

/// The parameter shapes of the optimiser and gradient-norm cases (a ViT-B
/// block's, a bias, an odd size).
const PARAM_SHAPES: [&[usize]; 4] = [&[768, 3072], &[768], &[197, 5], &[3]];

/// Three AdamW steps on several variables at once against `adamw_step` on
/// the CPU's composed path.
fn optimiser_case(device: &Device, precision: Precision) -> Result<OpReport> {
    let step = |t: i32, i: usize| AdamWStep {
        lr: 1e-3 * (1.0 + i as f64),
        weight_decay: if i.is_multiple_of(2) { 0.05 } else { 0.0 },
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        bias_correction1: 1.0 - 0.9f64.powi(t),
        bias_correction2: 1.0 - 0.95f64.powi(t),
        grad_scale: 0.5,
    };
    let run = |dev: &Device, composed: bool| -> Result<Vec<Tensor>> {
        let _composed = composed.then(super::ComposedOnly::enter);
        let vars = PARAM_SHAPES.iter().enumerate().map(|(i, s)| Var::from_tensor(&pseudo_random(s, 50 + i as u64, 1.0).to_device(dev)?)).collect::<Result<Vec<_>>>()?;
        let mut moments = vars.iter().map(|v| Ok((v.zeros_like()?, v.zeros_like()?))).collect::<Result<Vec<_>>>()?;
        for t in 1..=3 {
            let grads = PARAM_SHAPES.iter().enumerate().map(|(i, s)| pseudo_random(s, 100 * t as u64 + i as u64, 1.0).to_device(dev)).collect::<Result<Vec<_>>>()?;
            let mut items: Vec<AdamWItem<'_>> = vars.iter().zip(moments.iter_mut()).zip(&grads).enumerate().map(|(i, ((var, (m, v)), grad))| AdamWItem { var, grad, m, v, step: step(t, i) }).collect();
            adamw_steps(&mut items)?;
        }
        let mut out = Vec::new();
        for (v, (m, s)) in vars.iter().zip(&moments) {
            out.extend([v.as_tensor().to_device(&Device::Cpu)?, m.to_device(&Device::Cpu)?, s.to_device(&Device::Cpu)?]);
        }
        Ok(out)
    };
    let want = run(&Device::Cpu, true)?;
    let got = run(device, false)?;
    let diffs = got.iter().zip(&want).enumerate().map(|(i, (g, w))| Ok((format!("{}{}", ["value", "m", "v"][i % 3], i / 3), errors(g, w)?))).collect::<Result<Vec<_>>>()?;
    let shapes = PARAM_SHAPES.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    // The update is F32 whatever the products' precision.
    Ok(report("adamw", format!("3 steps, {shapes}"), device, Precision::F32, implementation("adamw", device), diffs).with_precision(precision))
}

/// The global gradient norm of the same shapes against F64 sums on the CPU.
fn grad_norm_case(device: &Device, precision: Precision) -> Result<OpReport> {
    let grads = PARAM_SHAPES.iter().enumerate().map(|(i, s)| pseudo_random(s, 300 + i as u64, 1.0)).collect::<Vec<_>>();
    let want = grads.iter().map(|g| g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()).sum::<Result<f64>>()?.sqrt();
    let on_device = grads.iter().map(|g| g.to_device(device)).collect::<Result<Vec<_>>>()?;
    let got = {
        let _autocast = Autocast::enter(if precision == Precision::Bf16 { Some(DType::BF16) } else { None });
        super::grad_norm::global_norm(on_device.iter())?
    };
    let abs = (got - want).abs();
    let shapes = PARAM_SHAPES.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    Ok(report("grad_norm", shapes, device, Precision::F32, implementation("grad_norm", device), vec![("norm".to_string(), (abs, abs / want))]).with_precision(precision))
}

impl OpReport {
    /// The run's precision label, keeping the F32 tolerance of an op that is
    /// F32 in every precision (AdamW, the gradient norm).
    fn with_precision(mut self, precision: Precision) -> OpReport {
        self.precision = precision.name();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU side of `srmae selftest`: every fused CPU kernel against the
    /// composed path at the models' shapes.
    #[test]
    fn every_op_passes_on_the_cpu() {
        let reports = run(&Device::Cpu, Precision::F32).unwrap();
        assert!(reports.len() >= 14, "{} reports", reports.len());
        for r in &reports {
            assert!(r.pass, "{r:?}");
            assert_eq!(r.implementation, "fused", "{r:?}");
        }
        // The check can fail: a perturbed result is caught.
        let bad = report("x", String::new(), &Device::Cpu, Precision::F32, "fused", vec![("out".into(), (1.0, 2e-4))]);
        assert!(!bad.pass);
    }
}
