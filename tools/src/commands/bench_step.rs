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
use srmae_model::training::autocast::{parse_precision, Autocast};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::methods::mae::{Mae, MaeConfig};
use srmae_model::training::optim::{param_groups, AdamW};
use srmae_model::layers::classifier::{cross_entropy, Pool, VitClassifier};
use srmae_model::methods::srmae::{inputs_from_host, Srmae, SrmaeConfig, SrmaeInputs};
use srmae_model::layers::vit::VitConfig;

#[derive(Args, Debug)]
pub struct StepArgs {
    /// Images per step (with --fit: the largest to try).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Model: `tiny` (ViT-Ti/16, decoder 256x4, SR head 32), `base`
    /// (ViT-B/16, decoder 512x8, SR head 64, the imagenet-vitb16-pretrain
    /// model), `fmnist` (the fmnist-pretrain recipe's SRMAE) or
    /// `fmnist-finetune` (the fmnist-finetune recipe's classifier).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// `srmae` or `mae` (the same encoder and decoder with MAE's random
    /// masking and linear head; models tiny, base and fmnist).
    #[arg(long, default_value = "srmae", value_parser = ["srmae", "mae"])]
    pub method: String,
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

/// One step's input for `cfg`: a fixed SRMAE split of its patches (a
/// quarter visible, the rest clues, as the recipes' `select_ratio` 0.75 and
/// `clue_fraction` 1), shifted per sample. ViT-Ti/16: 49 visible, 147
/// clues of 3x4x4; Fashion-MNIST: 12 visible, 37 clues of 1x1x1.
/// Sample `i`'s patch order of the fixed split: the first `kv` are visible.
fn fixed_order(l: usize, i: usize) -> Vec<u32> {
    (0..l as u32).map(|k| (k * 7 + i as u32 * 13) % l as u32).collect()
}

/// Visible patches of the fixed split: a quarter of `l`.
fn visible_count(l: usize) -> usize {
    l - (0.75 * l as f64).round() as usize
}

fn synthetic_batch(cfg: &SrmaeConfig, b: usize, dev: &Device) -> Result<SrmaeInputs> {
    let enc = &cfg.mae.encoder;
    let l = enc.num_patches();
    let kv = visible_count(l);
    let kc = l - kv;
    let clue_dim = enc.in_chans * cfg.clue_side * cfg.clue_side;
    let mut visible = Vec::with_capacity(b * kv);
    let mut clues = Vec::with_capacity(b * kc);
    let mut restore = vec![0u32; b * l];
    let mut mask = vec![0u8; b * l];
    for i in 0..b {
        let ids = fixed_order(l, i);
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
    let pd = enc.patch_dim();
    let patches = Tensor::from_vec(wave(b * l * pd, 1), (b, l, pd), dev)?;
    let clue_px = Tensor::from_vec(wave(b * kc * clue_dim, 2), (b, kc, clue_dim), dev)?;
    Ok(inputs_from_host(patches, &visible, &clues, clue_px, &restore, &mask, b, dev)?)
}

/// One MAE step's input for `cfg`: the same fixed split as
/// `synthetic_batch`, the selected three quarters hidden.
struct MaeBatch {
    patches: Tensor,
    visible: Tensor,
    restore: Tensor,
    hidden: Tensor,
    n_hidden: usize,
}

fn synthetic_mae_batch(cfg: &MaeConfig, b: usize, dev: &Device) -> Result<MaeBatch> {
    let enc = &cfg.encoder;
    let l = enc.num_patches();
    let kv = visible_count(l);
    let mut visible = Vec::with_capacity(b * kv);
    let mut restore = vec![0u32; b * l];
    let mut hidden = vec![0f32; b * l];
    for i in 0..b {
        let ids = fixed_order(l, i);
        for (pos, &id) in ids.iter().enumerate() {
            restore[i * l + id as usize] = pos as u32;
            hidden[i * l + id as usize] = if pos < kv { 0.0 } else { 1.0 };
        }
        visible.extend_from_slice(&ids[..kv]);
    }
    let pd = enc.patch_dim();
    let patches = Tensor::from_vec((0..b * l * pd).map(|i| (i as f32 * 0.013).sin()).collect::<Vec<_>>(), (b, l, pd), dev)?;
    Ok(MaeBatch {
        patches,
        visible: Tensor::from_vec(visible, (b, kv), dev)?,
        restore: Tensor::from_vec(restore, (b, l), dev)?,
        hidden: Tensor::from_vec(hidden, (b, l), dev)?,
        n_hidden: b * (l - kv),
    })
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

/// What a timed step trains.
#[derive(Clone)]
enum Bench {
    Srmae(SrmaeConfig),
    Mae(MaeConfig),
    /// The fine-tuning classifier (global pool + fc_norm, label smoothing 0.1).
    Classifier(VitConfig, usize),
}

/// The model's loss on a fixed synthetic batch, as a closure.
type LossFn = Box<dyn Fn() -> srmae_model::candle::Result<Tensor>>;

fn build(bench: &Bench, vb: candle_nn::VarBuilder, b: usize, dev: &Device) -> Result<LossFn> {
    Ok(match bench {
        Bench::Srmae(cfg) => {
            let model = Srmae::new(cfg, vb)?;
            let x = synthetic_batch(cfg, b, dev)?;
            Box::new(move || Ok(model.forward(&x, true)?.loss))
        }
        Bench::Mae(cfg) => {
            let model = Mae::new(cfg, vb)?;
            let x = synthetic_mae_batch(cfg, b, dev)?;
            Box::new(move || Ok(model.forward(&x.patches, &x.visible, &x.restore, &x.hidden, x.n_hidden, true)?.loss))
        }
        Bench::Classifier(cfg, classes) => {
            let model = VitClassifier::new(cfg, *classes, Pool::Gap, vb)?;
            let (l, pd) = (cfg.num_patches(), cfg.patch_dim());
            let patches = Tensor::from_vec((0..b * l * pd).map(|i| (i as f32 * 0.011).sin()).collect::<Vec<_>>(), (b, l, pd), dev)?;
            let labels = Tensor::from_vec((0..b as u32).map(|i| i % *classes as u32).collect::<Vec<_>>(), b, dev)?;
            Box::new(move || cross_entropy(&model.forward(&patches, true)?, &labels, 0.1))
        }
    })
}

fn time_steps(bench: &Bench, b: usize, steps: usize, dev: &Device, precision: Option<DType>, phases: bool) -> Result<Timing> {
    let vm = candle_nn::VarMap::new();
    let loss_of = build(bench, candle_nn::VarBuilder::from_varmap(&vm, DType::F32, dev), b, dev)?;
    srmae_model::layers::init::seeded_init(&vm, 0)?;
    srmae_model::layers::vit::seed_stochastic_depth(0);
    let mut opt = AdamW::new(param_groups(&vm, 0.05, None), 1e-4)?;
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
        let loss = loss_of()?;
        lap(0, &mut t0)?;
        let grads = loss.backward()?;
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
            first_loss = loss.to_scalar::<f32>()? as f64;
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

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(a: StepArgs) -> Result<()> {
    srmae_train::alloc::keep_freed_memory();
    let dev = srmae_train::device::parse_device(&a.device)?;
    let precision = parse_precision(&a.precision).map_err(anyhow::Error::msg)?;
    // The Fashion-MNIST recipes' encoder (recipes/fmnist-*.toml).
    let fmnist_encoder = VitConfig { img_size: 28, patch: 4, in_chans: 1, dim: 96, depth: 4, heads: 3, mlp_ratio: 4.0, drop_path: 0.0 };
    let (bench, name) = match a.model.as_str() {
        "tiny" => (Bench::Srmae(SrmaeConfig::from_mae(MaeConfig::tiny_16(), 32)), "srmae vit_tiny_16 dec256x4 sr-head32"),
        "base" => (Bench::Srmae(SrmaeConfig::base_16()), "srmae vit_base_16 dec512x8 sr-head64"),
        "fmnist" => {
            let mae = MaeConfig { encoder: fmnist_encoder, decoder_dim: 64, decoder_depth: 2, decoder_heads: 4, norm_pix_loss: false };
            (Bench::Srmae(SrmaeConfig::from_mae(mae, 32)), "srmae fmnist-pretrain vit96x4 dec64x2 sr-head32")
        }
        "fmnist-finetune" => (Bench::Classifier(VitConfig { drop_path: 0.1, ..fmnist_encoder }, 10), "fmnist-finetune classifier vit96x4 gap"),
        other => bail!("--model {other:?}: expected tiny, base, fmnist or fmnist-finetune"),
    };
    let (bench, name) = match (a.method.as_str(), bench) {
        ("srmae", bench) => (bench, name.to_string()),
        ("mae", Bench::Srmae(cfg)) => (Bench::Mae(cfg.mae.clone()), name.replacen("srmae", "mae", 1).split(" sr-head").next().unwrap_or(name).to_string()),
        (m, _) => bail!("--method {m} needs a pretraining model (tiny, base or fmnist), not {}", a.model),
    };
    if a.steps == 0 || a.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let mut b = a.batch;
    let timing = loop {
        match time_steps(&bench, b, a.steps, &dev, precision, a.phases) {
            Ok(t) => break t,
            Err(e) if a.fit && b > 1 && format!("{e:#}").to_ascii_lowercase().contains("out of memory") => {
                tracing::info!("batch {b} does not fit ({e:#}); trying {}", b / 2);
                b /= 2;
            }
            Err(e) => return Err(e).with_context(|| format!("batch {b} on {}", a.device)),
        }
    };
    let mut line = serde_json::json!({"impl": "srmae-candle", "model": name, "method": a.method, "device": a.device,
        "cpu_blas": srmae_model::ops::blas_name(), "cuda_ops": if dev.is_cuda() { if srmae_model::ops::cuda_ops_enabled() { "fused" } else { "composed" } } else { "cpu" }, "precision": a.precision,
        "batch": b, "threads": rayon::current_num_threads(), "median_step_s": timing.median_s,
        "images_per_s": b as f64 / timing.median_s,
        "gpu_mem_gib": timing.mem.map(|m| m as f64 / (1u64 << 30) as f64), "peak_rss_mib": peak_rss_mib()});
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
