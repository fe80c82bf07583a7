//! `srmae selftest`: every fused op forward and backward on a device against
//! the CPU reference on the same inputs; one JSON line per op and shape.

use anyhow::{bail, Context, Result};
use clap::Args;
use srmae_model::ops::selftest::{self, Precision};

/// Check the fused training ops (attention, linear, linear + GELU, LayerNorm,
/// the SR head's convolution, AdamW, the gradient norm) on a device: each op's
/// output and every input's gradient against the composed F32 path on the
/// CPU, at the models' shapes (N = 197 and 50, head dims 64 and 32, D =
/// 768 / 512 / 192, batch 1, offset views). Prints one JSON line per op and
/// shape: the largest absolute and relative errors, the tensor they are of,
/// the tolerance and a pass flag.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  srmae selftest                          # the fused CPU kernels
  srmae selftest --device cuda            # the CUDA kernels, F32 and BF16 products
  srmae selftest --device cuda --precision bf16 > selftest.jsonl

Exit status: 0 when every check passes, 1 when any fails (each failing line has \"pass\": false).")]
pub struct SelftestArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Products in f32, bf16, or both (the default on a GPU; f32 on the CPU,
    /// where BF16 takes the composed path).
    #[arg(long, value_parser = ["f32", "bf16", "both"])]
    precision: Option<String>,
}

pub fn run(a: SelftestArgs) -> Result<()> {
    let dev = srmae_train::device::parse_device(&a.device)?;
    let precisions = match a.precision.as_deref().unwrap_or(if dev.is_cpu() { "f32" } else { "both" }) {
        "f32" => vec![Precision::F32],
        "bf16" => vec![Precision::Bf16],
        _ => vec![Precision::F32, Precision::Bf16],
    };
    let mut failed = 0usize;
    let mut total = 0usize;
    for p in precisions {
        let reports = selftest::run(&dev, p).with_context(|| format!("selftest on {} ({p:?})", a.device))?;
        for r in reports {
            total += 1;
            failed += usize::from(!r.pass);
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    if failed > 0 {
        bail!("{failed} of {total} checks failed on {}", a.device);
    }
    eprintln!("selftest: {total} checks passed on {}", a.device);
    Ok(())
}
