//! `srmae bench ops`: forward and forward+backward time of each building
//! block of a training step at ViT shapes, with the device synchronised
//! around every measurement, to find which op a slow step spends its time
//! in (no profiler needed). One JSON line per op:
//! `{"op", "shape", "fwd_ms", "fwd_bwd_ms"}` (medians over `--reps`).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use srmae_model::training::autocast::{matmul, parse_precision, Autocast};
use srmae_model::candle::{DType, Device, Module, Tensor, Var};
use srmae_model::layers::vit::{gather_tokens, Attention, Block, Mlp};
use srmae_model::layers::{norm::LayerNorm, sr_head::SrHead};

#[derive(Args, Debug)]
pub struct OpsArgs {
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Token width and heads: `base` (768, 12, 197 tokens), `tiny` (192, 3,
    /// 197 tokens) or `fmnist` (96, 3, 50 tokens: the fmnist recipes' encoder).
    #[arg(long, default_value = "base")]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, or bf16 / f16 autocast.
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Timed repetitions per op (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Only the ops whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// Median seconds of `f` over `reps` runs after one warm-up, synchronised.
fn median(dev: &Device, reps: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

type OpFn<'a> = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a>;

pub fn run(a: OpsArgs) -> Result<()> {
    let dev = srmae_train::device::parse_device(&a.device)?;
    let precision = parse_precision(&a.precision).map_err(anyhow::Error::msg)?;
    // As in training (`bench step`, `srmae pretrain`): freed memory is kept,
    // so repetitions do not page-fault their buffers back in.
    srmae_train::alloc::keep_freed_memory();
    // (token width, heads, decoder width, SR-head features) of `bench step`'s models
    let (d, h, dd, dh, feats, n) = match a.model.as_str() {
        "tiny" => (192, 3, 256, 8, 32, 197),
        "fmnist" => (96, 3, 64, 4, 32, 50),
        "base" => (768, 12, 512, 16, 64, 197),
        other => anyhow::bail!("--model {other}: expected base, tiny or fmnist"),
    };
    let b = a.batch;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let ln = LayerNorm::new(d, 1e-6, vb.pp("ln"))?;
    let attn = Attention::new(d, h, vb.pp("attn"))?;
    let mlp = Mlp::new(d, 4 * d, vb.pp("mlp"))?;
    let block = Block::new(d, h, 4.0, 0.0, vb.pp("block"))?;
    let decoder_block = Block::new(dd, dh, 4.0, 0.0, vb.pp("decoder_block"))?;
    let head = SrHead::new(dd, feats, 2, 16, 4, 3, vb.pp("head"))?;
    let wqkv = vb.get((d, 3 * d), "wqkv")?;
    let conv = srmae_model::layers::conv3x3::Conv3x3::new(feats + 4, feats, 4, 4, vb.pp("conv"))?;
    let taps = Tensor::from_vec((0..144u32).map(|i| (i * 5) % 17).collect::<Vec<_>>(), 144, &dev)?;
    let ids = Tensor::from_vec((0..b * 147).map(|i| ((i * 7) % 196) as u32).collect::<Vec<_>>(), (b, 147), &dev)?;
    let clues = Tensor::randn(0f32, 1.0, (b, 196, 48), &dev)?;
    let has = Tensor::ones((b, 196), DType::F32, &dev)?;
    let _autocast = Autocast::enter(precision);

    let ops: Vec<(&str, Vec<usize>, OpFn)> = vec![
        ("matmul [BN,D]x[D,3D]", vec![b * n, d], Box::new(|x| matmul(x, &wqkv))),
        ("layernorm", vec![b, n, d], Box::new(|x| ln.forward(x))),
        ("gelu_erf", vec![b, n, 4 * d], Box::new(|x| srmae_model::ops::fused_cpu::gelu_erf(x))),
        ("softmax [B,H,N,N]", vec![b, h, n, n], Box::new(|x| srmae_model::ops::fused_cpu::softmax_last_dim(x))),
        ("scores q@k^T", vec![b, h, n, d / h], Box::new(|x| matmul(x, &x.t()?))),
        ("attention core qkv->out", vec![b, n, 3 * d], Box::new(|x| srmae_model::ops::attention(x, h))),
        ("attention", vec![b, n, d], Box::new(|x| attn.forward(x))),
        ("mlp", vec![b, n, d], Box::new(|x| mlp.forward(x))),
        ("block", vec![b, n, d], Box::new(|x| block.forward(x, true))),
        ("decoder block", vec![b, n, dd], Box::new(|x| decoder_block.forward(x, true))),
        ("gather_tokens 147 of 196", vec![b, 196, d], Box::new(|x| gather_tokens(x, &ids))),
        ("sr_head (-> 16x16x3)", vec![b, 196, dd], Box::new(|x| head.forward(x, &clues, &has))),
        ("conv3x3 on 4x4 (per patch)", vec![b * 196, 4, 4, feats + 4], Box::new(|x| conv.forward(x))),
        ("index_select 144 of 17 rows", vec![b * 196, 17, feats + 4], Box::new(|x| x.index_select(&taps, 1))),
        ("pixel-shuffle permute", vec![b * 196, 4, 4, 3, 4, 4], Box::new(|x| x.permute((0, 1, 4, 2, 5, 3))?.contiguous())),
        ("bias-grad sum over rows", vec![b * n, d], Box::new(|x| x.sum_keepdim(0))),
    ];
    if dev.is_cpu() && a.only.as_deref().is_none_or(|o| "gemm".contains(o)) {
        // The fused ops' products at this model's shapes: rows B*N, weight [out, in].
        // forward x Wᵀ: [B*N, in] x [in, out]; weight gradient dzᵀ x: [out, B*N] x [B*N, in]
        let mut shapes: Vec<(&str, [usize; 3])> = Vec::new();
        for (k, nn) in [(d, 3 * d), (d, 4 * d), (4 * d, d), (dd, 4 * dd), (16 * (feats + 4), 16 * feats)] {
            shapes.push(("x*W^T", [b * n, k, nn]));
            shapes.push(("dz^T*x", [nn, b * n, k]));
        }
        for (kind, [m, k, nn]) in shapes {
            for (backend, name) in [(srmae_model::ops::Backend::Blas, srmae_model::ops::blas_name()), (srmae_model::ops::Backend::GemmCrate, "gemm-crate")] {
                let gflops = srmae_model::ops::gemm_gflops(m, k, nn, a.reps, backend, kind == "dz^T*x")?;
                println!("{}", serde_json::json!({"op": format!("gemm {kind} {name}"), "shape": [m, k, nn], "device": a.device, "precision": "f32", "gflops": gflops}));
            }
        }
    }
    for (name, shape, op) in &ops {
        if a.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?)?;
        let fwd = median(&dev, a.reps, || op(x.as_tensor()).map(|_| ()))?;
        let g = Tensor::randn(0f32, 1.0, op(x.as_tensor())?.shape(), &dev)?;
        let both = median(&dev, a.reps, || {
            let y = op(x.as_tensor())?;
            (y * &g)?.sum_all()?.backward().map(|_| ())
        })?;
        let line = serde_json::json!({"op": name, "shape": shape, "device": a.device, "precision": a.precision,
            "fwd_ms": fwd * 1e3, "fwd_bwd_ms": both * 1e3});
        println!("{line}");
    }
    Ok(())
}
