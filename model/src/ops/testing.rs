//! The check every fused op passes: forward values and every input's
//! gradient against the composed candle path it replaces, and the gradients
//! against central finite differences of the fused op itself.

use candle_core::{Device, Result, Tensor, Var};

/// Deterministic inputs of given shapes (values in about [-2, 2]).
pub(crate) struct Case {
    pub vars: Vec<Var>,
}

pub(crate) use super::selftest::pseudo_random;

impl Case {
    pub(crate) fn new(shapes: &[&[usize]]) -> Case {
        let vars = shapes.iter().enumerate().map(|(i, s)| Var::from_tensor(&pseudo_random(s, 17 + i as u64, 2.0)).expect("var")).collect();
        Case { vars }
    }
    fn tensors(&self) -> Vec<Tensor> {
        self.vars.iter().map(|v| v.as_tensor().clone()).collect()
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().and_then(|t| t.flatten_all()?.max(0)?.to_scalar::<f32>()).expect("max")
}

fn weighted_sum(out: &Tensor, g: &[f32]) -> f64 {
    let o = out.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
    o.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Checks `ours` against `reference` on `case` (see the module doc).
pub(crate) fn check_op(name: &str, case: &Case, ours: impl Fn(&[Tensor]) -> Result<Tensor>, reference: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let inputs = case.tensors();
    let a = ours(&inputs).expect("fused forward");
    let r = reference(&inputs).expect("composed forward");
    assert_eq!(a.dims(), r.dims(), "{name}: output shape");
    let scale = 1.0 + max_abs(&r);
    let fwd_err = crate::ops::fused_cpu::tests::max_diff(&a, &r);
    assert!(fwd_err < 1e-5 * scale * 4.0, "{name}: forward differs by {fwd_err} (scale {scale})");
    let g = pseudo_random(a.dims(), 99, 1.0);
    let gv = g.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("g");
    let ga = (&a * &g).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("fused backward");
    let gr = (&r * &g).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("composed backward");
    for (i, v) in case.vars.iter().enumerate() {
        let da = ga.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: input {i} got no gradient"));
        let dr = gr.get(v.as_tensor()).expect("reference gradient");
        let scale = 1.0 + max_abs(dr);
        let err = crate::ops::fused_cpu::tests::max_diff(da, dr);
        assert!(err < 1e-4 * scale, "{name}: input {i} gradient differs by {err} (scale {scale})");
        // Central differences of the fused op at a few elements.
        let base: Vec<f32> = v.as_tensor().flatten_all().and_then(|t| t.to_vec1()).expect("values");
        let grad: Vec<f32> = da.flatten_all().and_then(|t| t.to_vec1()).expect("grad");
        let n = base.len();
        for k in [0, n / 3, n / 2 + 1, n - 1] {
            let k = k.min(n - 1);
            let eps = 1e-2f32;
            let at = |delta: f32| {
                let mut vals = base.clone();
                vals[k] += delta;
                let mut xs = inputs.clone();
                xs[i] = Tensor::from_vec(vals, v.as_tensor().dims(), &Device::Cpu).expect("input");
                weighted_sum(&ours(&xs).expect("perturbed forward"), &gv)
            };
            let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
            let tol = 2e-2 * (1.0 + fd.abs().max(grad[k].abs()));
            assert!((fd - grad[k]).abs() < tol, "{name}: input {i} element {k}: gradient {} vs finite difference {fd}", grad[k]);
        }
    }
}
