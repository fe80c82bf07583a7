//! Seeded initialisation. candle draws initial weights from an unseedable
//! thread RNG, so two runs with the same seed would start apart; this
//! redraws every randomly initialised variable from ChaCha8 keyed by (seed,
//! variable name), with the distributions the layers declare:
//! - linear weights `[out, in]`: xavier-uniform, bound `sqrt(6 / (in + out))`
//!   (MAE's `_init_weights`);
//! - conv weights `[out, in, k, k]`: kaiming-normal, std `sqrt(2 / (in k k))`
//!   (candle's conv default), conv biases uniform `±1 / sqrt(in k k)`;
//! - `cls_token`, `mask_token`, `lowres_type`: normal, std 0.02.
//!
//! Constant initialisations (biases of linear layers, norms) are left as they are.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

const TOKENS: [&str; 3] = ["cls_token", "mask_token", "lowres_type"];

fn key(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn uniform(r: &mut ChaCha8Rng) -> f64 {
    (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn normal(r: &mut ChaCha8Rng) -> f64 {
    let (u1, u2) = (uniform(r).max(1e-300), uniform(r));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Redraws the random variables of `varmap` from `seed`.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter() {
        let dims = var.as_tensor().dims().to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(key(seed, name));
        let n: usize = dims.iter().product();
        let draw: Option<Box<dyn FnMut(&mut ChaCha8Rng) -> f64>> = if TOKENS.iter().any(|t| name.ends_with(t)) {
            Some(Box::new(|r| 0.02 * normal(r)))
        } else if name.ends_with("weight") && dims.len() == 2 {
            let bound = (6.0 / (dims[0] + dims[1]) as f64).sqrt();
            Some(Box::new(move |r| bound * (2.0 * uniform(r) - 1.0)))
        } else if name.ends_with("weight") && dims.len() == 4 {
            let std = (2.0 / (dims[1] * dims[2] * dims[3]) as f64).sqrt();
            Some(Box::new(move |r| std * normal(r)))
        } else if name.ends_with("bias") && dims.len() == 1 {
            let w = name.trim_end_matches("bias").to_string() + "weight";
            match data.get(&w).map(|v| v.as_tensor().dims().to_vec()) {
                Some(wd) if wd.len() == 4 => {
                    let bound = 1.0 / ((wd[1] * wd[2] * wd[3]) as f64).sqrt();
                    Some(Box::new(move |r| bound * (2.0 * uniform(r) - 1.0)))
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(mut f) = draw {
            let values: Vec<f32> = (0..n).map(|_| f(&mut rng) as f32).collect();
            var.set(&Tensor::from_vec(values, dims.as_slice(), var.as_tensor().device())?)?;
        }
    }
    Ok(())
}

/// Redraws variable `name` of `varmap` from a normal of std `std`, keyed by
/// (seed, name) as `seeded_init`. Classification heads use it: MAE starts the
/// fine-tuning head at std 2e-5 (`main_finetune.py`), so the first logits are
/// ~0 and the first steps train the head rather than undo a random one, and
/// the probe's head at std 0.01 (`main_linprobe.py`).
pub fn normal_init(varmap: &VarMap, name: &str, std: f64, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let Some(var) = data.get(name) else {
        candle_core::bail!("normal_init: no variable {name}")
    };
    let dims = var.as_tensor().dims().to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(key(seed, name));
    let values: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| (std * normal(&mut rng)) as f32).collect();
    var.set(&Tensor::from_vec(values, dims.as_slice(), var.as_tensor().device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::srmae::{Srmae, SrmaeConfig};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn flat(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = vm.data().lock().unwrap();
        let mut v: Vec<_> = data.iter().map(|(n, t)| (n.clone(), t.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let build = |seed| {
            let vm = VarMap::new();
            Srmae::new(&SrmaeConfig::fmnist_tiny(), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
            seeded_init(&vm, seed).unwrap();
            flat(&vm)
        };
        let (a, b, c) = (build(1), build(1), build(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // xavier bound of a 128 -> 384 qkv weight
        let qkv = &a.iter().find(|(n, _)| n == "blocks.0.attn.qkv.weight").unwrap().1;
        let bound = (6.0f32 / 512.0).sqrt();
        assert!(qkv.iter().all(|v| v.abs() <= bound) && qkv.iter().any(|v| v.abs() > 0.9 * bound));
        let cls = &a.iter().find(|(n, _)| n == "cls_token").unwrap().1;
        let sd = (cls.iter().map(|v| v * v).sum::<f32>() / cls.len() as f32).sqrt();
        assert!((0.01..0.03).contains(&sd), "cls std {sd}");
    }

    #[test]
    fn normal_init_redraws_one_variable_at_the_given_std() {
        let vm = VarMap::new();
        Srmae::new(&SrmaeConfig::fmnist_tiny(), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        seeded_init(&vm, 0).unwrap();
        let before = flat(&vm);
        normal_init(&vm, "blocks.0.attn.qkv.weight", 2e-5, 0).unwrap();
        let after = flat(&vm);
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            if name == "blocks.0.attn.qkv.weight" {
                let sd = (b.iter().map(|v| v * v).sum::<f32>() / b.len() as f32).sqrt();
                assert!((1.5e-5..2.5e-5).contains(&sd), "std {sd}");
            } else {
                assert_eq!(a, b, "{name} changed");
            }
        }
        assert!(normal_init(&vm, "no.such.weight", 1.0, 0).is_err());
    }
}
