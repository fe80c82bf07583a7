//! Mixed precision in the manner of `torch.autocast`: inside an autocast
//! scope on the current thread, matrix products (every linear layer, the
//! attention scores and the attention-weighted values) take BF16 (or F16)
//! inputs, while everything else stays F32: the master weights, the
//! optimiser moments, LayerNorm, softmax, GELU, the losses.
//!
//! The casts are ordinary graph ops, so the backward pass casts each
//! gradient back and the F32 weights receive F32 gradients. Unlike torch,
//! a product's result is cast back to F32 at once: one more cast per
//! matmul, but no op downstream ever sees a half-precision tensor, so there
//! is no list of "autocast-safe" ops to keep.
//!
//! The scope is thread-local (as torch's): the loader's upload thread is
//! unaffected, and a test or an evaluation without a scope runs in F32.
//!
//! ```
//! use srmae_model::training::autocast::{self, Autocast};
//! use srmae_model::candle::{DType, Device, Tensor};
//! let a = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
//! let b = Tensor::ones((3, 4), DType::F32, &Device::Cpu)?;
//! let _bf16 = Autocast::enter(Some(DType::BF16));
//! let c = autocast::matmul(&a, &b)?; // BF16 product, F32 result
//! assert_eq!(c.dtype(), DType::F32);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::cell::Cell;

use candle_core::{DType, Result, Tensor};

thread_local! {
    static MATMUL_DTYPE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The dtype matrix products use on this thread, if autocast is on.
pub fn matmul_dtype() -> Option<DType> {
    MATMUL_DTYPE.with(|c| c.get())
}

/// An autocast scope: on while the value lives, then the previous setting
/// comes back (scopes nest).
#[must_use = "autocast is only on while the guard lives"]
pub struct Autocast {
    previous: Option<DType>,
}

impl Autocast {
    /// `Some(BF16)` / `Some(F16)` turns autocast on, `None` off (F32).
    pub fn enter(dtype: Option<DType>) -> Autocast {
        let previous = MATMUL_DTYPE.with(|c| c.replace(dtype.filter(|d| *d != DType::F32)));
        Autocast { previous }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        MATMUL_DTYPE.with(|c| c.set(self.previous));
    }
}

/// `a.matmul(b)`, in the autocast dtype when a scope is on; the result has
/// `a`'s dtype.
///
/// # Shapes
/// - as `Tensor::matmul`: `[..., M, K] x [..., K, N] -> [..., M, N]`
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match matmul_dtype() {
        Some(low) if a.dtype() != low => a.to_dtype(low)?.matmul(&b.to_dtype(low)?)?.to_dtype(a.dtype()),
        _ => a.matmul(b),
    }
}

/// `conv.forward(x)`, with the convolution in the autocast dtype when a
/// scope is on and `x` lives on a GPU; the bias is added in `x`'s dtype.
/// (The SR head uses `conv3x3::Conv3x3`, a matrix product, instead.)
/// On the CPU it stays F32: candle 0.11's CPU convolution backward has no
/// BF16 matmul ("unsupported dtype BF16 for op matmul").
///
/// # Shapes
/// - `x`: `[B, C_in, H, W]` -> `[B, C_out, H', W']`
pub fn conv2d(conv: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    match matmul_dtype() {
        Some(low) if x.dtype() != low && !x.device().is_cpu() => {
            let cfg = conv.config();
            let w = conv.weight().to_dtype(low)?;
            let y = x.to_dtype(low)?.conv2d(&w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)?.to_dtype(x.dtype())?;
            match conv.bias() {
                Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
                None => Ok(y),
            }
        }
        _ => candle_core::Module::forward(conv, x),
    }
}

/// Parses a precision name as used by `--precision`.
pub fn parse_precision(name: &str) -> std::result::Result<Option<DType>, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(None),
        "bf16" | "bfloat16" => Ok(Some(DType::BF16)),
        "f16" | "fp16" | "float16" => Ok(Some(DType::F16)),
        other => Err(format!("precision {other:?}: expected f32, bf16 or f16")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(matmul_dtype(), None);
        {
            let _a = Autocast::enter(Some(DType::BF16));
            assert_eq!(matmul_dtype(), Some(DType::BF16));
            {
                let _b = Autocast::enter(None);
                assert_eq!(matmul_dtype(), None);
            }
            assert_eq!(matmul_dtype(), Some(DType::BF16));
        }
        assert_eq!(matmul_dtype(), None);
        // Another thread starts without autocast.
        let _a = Autocast::enter(Some(DType::BF16));
        assert_eq!(std::thread::spawn(matmul_dtype).join().unwrap(), None);
    }

    #[test]
    fn bf16_product_is_close_and_gradients_stay_f32() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (64, 32), &dev).unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1., (8, 64), &dev).unwrap();
        let exact = x.matmul(w.as_tensor()).unwrap();
        let _bf16 = Autocast::enter(Some(DType::BF16));
        let low = matmul(&x, w.as_tensor()).unwrap();
        assert_eq!(low.dtype(), DType::F32);
        // BF16 has an 8-bit mantissa: relative error ~ 2^-8 per input, sqrt(64) terms.
        let err = (&low - &exact).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = exact.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err > 0.0, "the product did not run in BF16");
        assert!(err < 0.03 * scale, "BF16 error {err} vs scale {scale}");
        let grads = low.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(w.as_tensor()).expect("the F32 weight gets a gradient");
        assert_eq!(g.dtype(), DType::F32);
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }

    /// On the CPU the convolution keeps F32 (see `conv2d`); on a GPU this
    /// compares BF16 against F32.
    #[test]
    fn bf16_conv_matches_f32() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = candle_nn::Conv2dConfig { padding: 1, ..Default::default() };
        let conv = candle_nn::conv2d(4, 6, 3, cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 4, 5, 5), &dev).unwrap();
        let exact = candle_core::Module::forward(&conv, &x).unwrap();
        let _bf16 = Autocast::enter(Some(DType::BF16));
        let low = conv2d(&conv, &x).unwrap();
        assert_eq!(low.dims(), exact.dims());
        let err = (&low - &exact).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(err < 0.05, "BF16 conv error {err}");
        let grads = low.sum_all().unwrap().backward().unwrap();
        for v in vm.all_vars() {
            assert_eq!(grads.get(v.as_tensor()).expect("gradient").dtype(), DType::F32);
        }
    }

    #[test]
    fn precision_names() {
        assert_eq!(parse_precision("BF16").unwrap(), Some(DType::BF16));
        assert_eq!(parse_precision("f32").unwrap(), None);
        assert!(parse_precision("int8").unwrap_err().contains("expected"));
    }
}
