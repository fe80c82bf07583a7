//! `srmae bench step`: SRMAE training steps (forward + backward + gradient
//! norm + AdamW) on synthetic batches of fixed shapes, on the CPU or a GPU,
//! in F32 or with BF16 autocast. The PyTorch eager counterpart, same model
//! and shapes, is `model/reference/bench_step.py`; `bench/gpu.sh` runs both.
//!
//! With `--fit`, the batch is the largest power-of-two fraction of `--batch`
//! whose step runs (a failed allocation halves it), as for "the largest
//! batch that fits up to 256".

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use srmae_model::autocast::{parse_precision, Autocast};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::mae::MaeConfig;
use srmae_model::optim::{param_groups, AdamW};
use srmae_model::srmae::{inputs_from_host, Srmae, SrmaeConfig, SrmaeInputs};

#[derive(Args, Debug)]
pub struct StepArgs {
    /// Images per step (with --fit: the largest to try).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Model: `tiny` (ViT-Ti/16, decoder 256x4, SR head 32) or `base`
    /// (ViT-B/16, decoder 512x8, SR head 64, the imagenet-vitb16-pretrain model).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, or bf16 / f16 autocast (F32 master weights).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Halve the batch until a step fits in device memory.
    #[arg(long)]
    pub fit: bool,
    /// Seeded weights and the first step's loss and gradient norm in the
    /// output, to compare devices (`bench/gpu.sh` compares cpu and cuda).
    #[arg(long)]
    pub check: bool,
    /// Also time forward, backward, gradient norm and optimiser step
    /// separately (synchronising between them).
    #[arg(long)]
    pub phases: bool,
}

/// One step's input: a fixed SRMAE split of 196 patches (49 visible, 147
/// clues of 3x4x4), shifted per sample.
fn synthetic_batch(b: usize, dev: &Device) -> Result<SrmaeInputs> {
    let (l, kv, kc) = (196usize, 49usize, 147usize);
    let mut visible = Vec::with_capacity(b * kv);
    let mut clues = Vec::with_capacity(b * kc);
    let mut restore = vec![0u32; b * l];
    let mut mask = vec![0u8; b * l];
    for i in 0..b {
        let ids: Vec<u32> = (0..l as u32).map(|k| (k * 7 + i as u32 * 13) % l as u32).collect();
        for (pos, &id) in ids.iter().enumerate() {
            restore[i * l + id as usize] = pos as u32;
            mask[i * l + id as usize] = if pos < kv { 0 } else { 2 };
        }
        visible.extend_from_slice(&ids[..kv]);
        clues.extend_from_slice(&ids[kv..]);
    }
    // Host-generated (the same on every device), smooth plus a hash.
    let wave = |n: usize, salt: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ salt).wrapping_mul(0x9E37_79B9).rotate_left(13).wrapping_mul(0x85EB_CA6B);
                (i as f32 * 0.013).sin() + (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let patches = Tensor::from_vec(wave(b * l * 768, 1), (b, l, 768), dev)?;
    let clue_px = Tensor::from_vec(wave(b * kc * 48, 2), (b, kc, 48), dev)?;
    Ok(inputs_from_host(patches, &visible, &clues, clue_px, &restore, &mask, b, dev)?)
}

/// Device memory in use (total - free), in bytes, on CUDA builds.
fn device_memory_used(dev: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(_) = dev {
        let (free, total) = srmae_model::candle::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = dev;
    None
}

struct Timing {
    median_s: f64,
    mem: Option<u64>,
    first_loss: f64,
    first_grad_norm: f64,
    /// Median seconds of [forward, backward, grad norm, optimiser step].
    phases: Option<[f64; 4]>,
}

fn time_steps(cfg: &SrmaeConfig, b: usize, steps: usize, dev: &Device, precision: Option<DType>, phases: bool) -> Result<Timing> {
    let vm = candle_nn::VarMap::new();
    let model = Srmae::new(cfg, candle_nn::VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    srmae_model::init::seeded_init(&vm, 0)?;
    srmae_model::vit::seed_stochastic_depth(0);
    let mut opt = AdamW::new(param_groups(&vm, 0.05, None), 1e-4)?;
    let x = synthetic_batch(b, dev)?;
    let _autocast = Autocast::enter(precision);
    let mut times = Vec::with_capacity(steps);
    let mut mem = None;
    let (mut first_loss, mut first_grad_norm) = (f64::NAN, f64::NAN);
    let mut phase_times: [Vec<f64>; 4] = Default::default();
    for s in 0..steps + 2 {
        let t = Instant::now();
        let mut lap = |i: usize, t0: &mut Instant| -> Result<()> {
            if phases {
                dev.synchronize()?;
                if s >= 2 {
                    phase_times[i].push(t0.elapsed().as_secs_f64());
                }
                *t0 = Instant::now();
            }
            Ok(())
        };
        let mut t0 = Instant::now();
        let out = model.forward(&x, true)?;
        lap(0, &mut t0)?;
        let grads = out.loss.backward()?;
        lap(1, &mut t0)?;
        let norm = opt.grad_norm(&grads)?;
        lap(2, &mut t0)?;
        opt.step(&grads, 1.0)?;
        lap(3, &mut t0)?;
        dev.synchronize()?;
        if !norm.is_finite() {
            bail!("gradient norm {norm} at step {s}");
        }
        if s == 0 {
            first_loss = out.loss.to_scalar::<f32>()? as f64;
            first_grad_norm = norm;
        }
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
        mem = mem.max(device_memory_used(dev));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let phases = phases.then(|| phase_times.each_mut().map(|v| med(v)));
    Ok(Timing { median_s: med(&mut times), mem, first_loss, first_grad_norm, phases })
}

pub fn run(a: StepArgs) -> Result<()> {
    crate::alloc::keep_freed_memory();
    let dev = crate::device::parse_device(&a.device)?;
    let precision = parse_precision(&a.precision).map_err(anyhow::Error::msg)?;
    let (cfg, name) = match a.model.as_str() {
        "tiny" => (SrmaeConfig::from_mae(MaeConfig::tiny_16(), 32), "srmae vit_tiny_16 dec256x4 sr-head32"),
        "base" => (SrmaeConfig::base_16(), "srmae vit_base_16 dec512x8 sr-head64"),
        other => bail!("--model {other:?}: expected tiny or base"),
    };
    if a.steps == 0 || a.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let mut b = a.batch;
    let timing = loop {
        match time_steps(&cfg, b, a.steps, &dev, precision, a.phases) {
            Ok(t) => break t,
            Err(e) if a.fit && b > 1 && format!("{e:#}").to_ascii_lowercase().contains("out of memory") => {
                tracing::info!("batch {b} does not fit ({e:#}); trying {}", b / 2);
                b /= 2;
            }
            Err(e) => return Err(e).with_context(|| format!("batch {b} on {}", a.device)),
        }
    };
    let mut line = serde_json::json!({"impl": "srmae-candle", "model": name, "device": a.device, "precision": a.precision,
        "batch": b, "threads": rayon::current_num_threads(), "median_step_s": timing.median_s,
        "images_per_s": b as f64 / timing.median_s,
        "gpu_mem_gib": timing.mem.map(|m| m as f64 / (1u64 << 30) as f64)});
    if let Some(p) = timing.phases {
        line["phases_s"] = serde_json::json!({"forward": p[0], "backward": p[1], "grad_norm": p[2], "optimizer": p[3]});
    }
    if a.check {
        line["first_loss"] = timing.first_loss.into();
        line["first_grad_norm"] = timing.first_grad_norm.into();
    }
    println!("{line}");
    Ok(())
}
