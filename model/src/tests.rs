//! Cross-module tests: parity with PyTorch on fixed weights, gradient flow to
//! every trainable variable, overfitting one batch, shapes.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::methods::loss::{norm_pix, weighted_patch_mse};
use crate::methods::mae::{Mae, MaeConfig};
use crate::training::optim::{param_groups, AdamW};
use crate::layers::sr_head::HeadConfig;
use crate::methods::srmae::{inputs_from_host, CluePlacement, Srmae, SrmaeConfig, SrmaeInputs};
use crate::layers::vit::{Block, VitConfig};

/// `w[i] = 0.02 * sin(0.37 i + offset)`, as model/reference/parity.py.
fn det(shape: &[usize], offset: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (0.02 * (0.37 * i as f64 + offset).sin()) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn block_forward_matches_pytorch() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let block = Block::new(8, 2, 4.0, 0.0, vb).unwrap();
    let mut vm = vm;
    let one = |o| (det(&[8], o) + 1.0).unwrap();
    for (name, t) in [
        ("norm1.weight", one(1.0)),
        ("norm1.bias", det(&[8], 2.0)),
        ("attn.qkv.weight", det(&[24, 8], 3.0)),
        ("attn.qkv.bias", det(&[24], 4.0)),
        ("attn.proj.weight", det(&[8, 8], 5.0)),
        ("attn.proj.bias", det(&[8], 6.0)),
        ("norm2.weight", one(7.0)),
        ("norm2.bias", det(&[8], 8.0)),
        ("mlp.fc1.weight", det(&[32, 8], 9.0)),
        ("mlp.fc1.bias", det(&[32], 10.0)),
        ("mlp.fc2.weight", det(&[8, 32], 11.0)),
        ("mlp.fc2.bias", det(&[8], 12.0)),
    ] {
        vm.set_one(name, t).unwrap();
    }
    let x = (det(&[2, 3, 8], 0.5) * 50.0).unwrap();
    let y = block.forward(&x, false).unwrap();
    // parity.py "== block": sum 1.6208810806274414,
    // y[1, 2, :4] = [0.3826734125614166, 0.03728535398840904, -0.31021690368652344, -0.6213740110397339]
    let sum: f32 = y.sum_all().unwrap().to_scalar().unwrap();
    assert!((sum - 1.620_881).abs() < 1e-4, "sum {sum}");
    let row: Vec<f32> = y.get(1).unwrap().get(2).unwrap().narrow(0, 0, 4).unwrap().to_vec1().unwrap();
    for (g, w) in row.iter().zip([0.382_673_4f32, 0.037_285_35, -0.310_216_9, -0.621_374]) {
        assert!((g - w).abs() < 1e-5, "{row:?}");
    }
}

#[test]
fn mae_norm_pix_loss_matches_pytorch() {
    let pred = (det(&[2, 4, 6], 0.1) * 30.0).unwrap();
    let target = (det(&[2, 4, 6], 0.9) * 40.0).unwrap();
    let mask = Tensor::from_vec(vec![1f32, 0., 1., 0., 0., 1., 1., 1.], (2, 4), &Device::Cpu).unwrap();
    let loss: f32 = weighted_patch_mse(&pred, &norm_pix(&target).unwrap().0, &mask, 5.0).unwrap().to_scalar().unwrap();
    // parity.py "== MAE loss": 0.8217717409133911
    assert!((loss - 0.821_771_7).abs() < 1e-5, "{loss}");
}

fn tiny_cfg(placement: CluePlacement, head: HeadConfig) -> SrmaeConfig {
    let mae = MaeConfig {
        encoder: VitConfig { img_size: 16, patch: 4, in_chans: 3, dim: 32, depth: 2, heads: 4, mlp_ratio: 4.0, drop_path: 0.1 },
        decoder_dim: 16,
        decoder_depth: 1,
        decoder_heads: 2,
        norm_pix_loss: true,
    };
    SrmaeConfig { placement, head, ..SrmaeConfig::from_mae(mae, 8) }
}

/// A batch of smooth random images with an SRMAE split of 16 patches:
/// 4 visible, 8 clues (1x1 of 4x4 patches downsampled 4x... r = 1), 4 hidden.
fn batch(b: usize, seed: u64) -> SrmaeInputs {
    let dev = Device::Cpu;
    let l = 16;
    let mut s = seed;
    let mut rnd = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut visible = Vec::new();
    let mut clues = Vec::new();
    let mut restore = vec![0u32; b * l];
    let mut mask = vec![0u8; b * l];
    for i in 0..b {
        let mut ids: Vec<u32> = (0..l as u32).collect();
        for j in (1..l).rev() {
            let k = (rnd() * (j + 1) as f32) as usize % (j + 1);
            ids.swap(j, k);
        }
        for (pos, &id) in ids.iter().enumerate() {
            restore[i * l + id as usize] = pos as u32;
            mask[i * l + id as usize] = if pos < 4 { 0 } else if pos < 12 { 2 } else { 1 };
        }
        visible.extend_from_slice(&ids[..4]);
        clues.extend_from_slice(&ids[4..12]);
    }
    let imgs: Vec<f32> = (0..b * 3 * 16 * 16)
        .map(|i| {
            let (x, y) = ((i % 16) as f32, ((i / 16) % 16) as f32);
            let n = (i / 256) as f32;
            (0.3 * (x * 0.2 + n).sin() + 0.3 * (y * 0.3 + n * 1.7).cos()) + 0.1 * rnd()
        })
        .collect();
    let imgs = Tensor::from_vec(imgs, (b, 3, 16, 16), &dev).unwrap();
    let patches = crate::layers::patchify::patchify(&imgs, 4).unwrap();
    // r = 1: the clue of a patch is its per-channel mean.
    let clue_pixels = crate::layers::vit::gather_tokens(
        &patches.reshape((b, l, 16, 3)).unwrap().mean(2).unwrap(),
        &Tensor::from_slice(&clues, (b, 8), &dev).unwrap(),
    )
    .unwrap();
    inputs_from_host(patches, &visible, &clues, clue_pixels, &restore, &mask, b, &dev).unwrap()
}

#[test]
fn every_trainable_variable_gets_a_gradient() {
    let upsampled = |upsample, type_embed| crate::methods::srmae::ClueEmbed::PatchEmbed { upsample, type_embed };
    for (placement, head, clue_embed) in [
        (CluePlacement::Encoder, HeadConfig::Sr { features: 8, res_blocks: 2 }, crate::methods::srmae::ClueEmbed::Own),
        (CluePlacement::Decoder, HeadConfig::Linear, crate::methods::srmae::ClueEmbed::Own),
        (CluePlacement::Encoder, HeadConfig::Sr { features: 8, res_blocks: 1 }, upsampled(crate::layers::clue_upsample::Upsample::Bicubic, true)),
        (CluePlacement::Encoder, HeadConfig::Linear, upsampled(crate::layers::clue_upsample::Upsample::Nearest, false)),
    ] {
        let vm = VarMap::new();
        let cfg = SrmaeConfig { clue_embed, ..tiny_cfg(placement, head.clone()) };
        let model = Srmae::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let out = model.forward(&batch(4, 1), true).unwrap();
        assert_eq!(out.pred.dims(), &[4, 16, 48]);
        let grads = out.loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        assert!(!data.is_empty());
        for (name, var) in data.iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{placement:?}/{head:?}: no gradient for {name}"));
            let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(s > 0.0, "{placement:?}: zero gradient for {name}");
        }
    }
    // MAE too.
    let vm = VarMap::new();
    let cfg = tiny_cfg(CluePlacement::Encoder, HeadConfig::Linear).mae;
    let mae = Mae::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let x = batch(4, 2);
    let hidden = x.mask.ne(srmae_pipeline::transforms::mask_value::VISIBLE).unwrap().to_dtype(DType::F32).unwrap();
    let out = mae.forward(&x.patches, &x.visible, &x.restore, &hidden, x.n_hidden + x.n_clue, true).unwrap();
    let grads = out.loss.backward().unwrap();
    for (name, var) in vm.data().lock().unwrap().iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("MAE: no gradient for {name}"));
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "MAE: zero gradient for {name}");
    }
}

/// BF16 autocast (what CUDA training uses): the loss stays within BF16
/// rounding of the F32 loss, and every F32 master weight still receives a
/// non-zero F32 gradient through the casts.
#[test]
fn bf16_autocast_keeps_loss_and_gradients() {
    let vm = VarMap::new();
    let mut cfg = tiny_cfg(CluePlacement::Encoder, HeadConfig::Sr { features: 8, res_blocks: 2 });
    cfg.mae.encoder.drop_path = 0.0;
    let model = Srmae::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let x = batch(4, 5);
    let f32_loss: f32 = model.forward(&x, true).unwrap().loss.to_scalar().unwrap();
    let _bf16 = crate::training::autocast::Autocast::enter(Some(DType::BF16));
    let out = model.forward(&x, true).unwrap();
    let bf16_loss: f32 = out.loss.to_scalar().unwrap();
    assert_ne!(f32_loss, bf16_loss, "autocast did not change the products");
    assert!((f32_loss - bf16_loss).abs() < 0.02 * f32_loss.abs(), "F32 {f32_loss} vs BF16 {bf16_loss}");
    let grads = out.loss.backward().unwrap();
    for (name, var) in vm.data().lock().unwrap().iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("BF16: no gradient for {name}"));
        assert_eq!(g.dtype(), DType::F32, "{name}");
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "BF16: zero gradient for {name}");
    }
}

#[test]
fn srmae_overfits_one_batch() {
    let vm = VarMap::new();
    let mut cfg = tiny_cfg(CluePlacement::Encoder, HeadConfig::Sr { features: 8, res_blocks: 2 });
    cfg.mae.norm_pix_loss = false;
    cfg.mae.encoder.drop_path = 0.0;
    let model = Srmae::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut opt = AdamW::new(param_groups(&vm, 0.0, None), 3e-3).unwrap();
    let x = batch(4, 3);
    let first: f32 = model.forward(&x, true).unwrap().loss.to_scalar().unwrap();
    let mut last = first;
    for _ in 0..300 {
        let out = model.forward(&x, true).unwrap();
        last = out.loss.to_scalar().unwrap();
        let grads = out.loss.backward().unwrap();
        opt.step(&grads, 1.0).unwrap();
    }
    assert!(last < 0.1 * first, "loss {first} -> {last}: did not fall by 90%");
}

#[test]
fn param_groups_skip_decay_on_1d_and_tokens() {
    let vm = VarMap::new();
    let _model = Srmae::new(&tiny_cfg(CluePlacement::Encoder, HeadConfig::Linear), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let groups = param_groups(&vm, 0.05, None);
    for g in &groups {
        for (name, v) in g.names.iter().zip(&g.vars) {
            let token = ["cls_token", "mask_token", "lowres_type"].iter().any(|t| name.ends_with(t));
            let want = if v.as_tensor().rank() <= 1 || token { 0.0 } else { 0.05 };
            assert_eq!(g.weight_decay, want, "{name}");
        }
    }
    let _: Vec<&Var> = groups.iter().flat_map(|g| &g.vars).collect();
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let dev = Device::Cpu;
    let cfg = tiny_cfg(CluePlacement::Encoder, HeadConfig::Sr { features: 8, res_blocks: 1 });
    let vm = VarMap::new();
    let model = Srmae::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    let mut opt = AdamW::new(param_groups(&vm, 0.05, None), 1e-3).unwrap();
    for _ in 0..2 {
        let grads = model.forward(&batch(2, 5), true).unwrap().loss.backward().unwrap();
        opt.step(&grads, 1.0).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let meta = crate::training::checkpoint::CheckpointMeta { step: 2, config: "{\"x\":1}".into(), loader_state: "{\"next_batch\":2}".into() };
    crate::training::checkpoint::save(&path, &vm, Some(&opt), &meta).unwrap();
    // A fresh model and optimiser, loaded from the file.
    let vm2 = VarMap::new();
    let _m2 = Srmae::new(&cfg, VarBuilder::from_varmap(&vm2, DType::F32, &dev)).unwrap();
    let mut opt2 = AdamW::new(param_groups(&vm2, 0.05, None), 1e-3).unwrap();
    let got = crate::training::checkpoint::load(&path, &vm2, Some(&mut opt2), &dev).unwrap();
    assert_eq!(got, meta);
    assert_eq!(opt2.step, 2);
    let same = |a: &Tensor, b: &Tensor| {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len()
    };
    let (d1, d2) = (vm.data().lock().unwrap(), vm2.data().lock().unwrap());
    for (name, v) in d1.iter() {
        assert!(same(v.as_tensor(), d2[name].as_tensor()), "{name} differs");
    }
    for ((g1, m1), m2) in opt.groups.iter().zip(&opt.moments).zip(&opt2.moments) {
        for ((name, a), b) in g1.names.iter().zip(m1).zip(m2) {
            assert!(same(&a.0, &b.0) && same(&a.1, &b.1), "moments of {name} differ");
        }
    }
    // A damaged file is an error naming it, not a panic.
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = crate::training::checkpoint::load(&path, &vm2, None, &dev).unwrap_err().to_string();
    assert!(err.contains("ckpt.safetensors"), "{err}");
}

#[test]
fn classifiers_get_gradients_and_learn() {
    use crate::layers::classifier::{cross_entropy, LinearProbe, Pool, VitClassifier};
    let dev = Device::Cpu;
    let enc = tiny_cfg(CluePlacement::Encoder, HeadConfig::Linear).mae.encoder;
    let x = batch(4, 7).patches;
    let labels = Tensor::from_vec(vec![0u32, 1, 2, 1], 4, &dev).unwrap();
    for pool in [Pool::Gap, Pool::Cls] {
        let vm = VarMap::new();
        let clf = VitClassifier::new(&VitConfig { drop_path: 0.0, ..enc.clone() }, 3, pool, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let logits = clf.forward(&x, true).unwrap();
        assert_eq!(logits.dims(), &[4, 3]);
        let grads = cross_entropy(&logits, &labels, 0.1).unwrap().backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            // With global pooling the encoder's final norm is unused (MAE
            // deletes it and normalises the pooled features with fc_norm).
            if pool == Pool::Gap && name.starts_with("norm.") {
                assert!(grads.get(var.as_tensor()).is_none());
                continue;
            }
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{pool:?}: no gradient for {name}"));
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{pool:?}: zero gradient for {name}");
        }
    }
    // Label smoothing: uniform logits give ln(K) whatever eps.
    let uniform = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    let l: f32 = cross_entropy(&uniform, &Tensor::from_vec(vec![0u32, 3], 2, &dev).unwrap(), 0.1).unwrap().to_scalar().unwrap();
    assert!((l - 4f32.ln()).abs() < 1e-6);
    // The linear probe learns a separable problem on fixed features.
    let vm = VarMap::new();
    let probe = LinearProbe::new(6, 2, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    let feats = Tensor::from_vec((0..48).map(|i| if (i / 6) % 2 == 0 { (i % 6) as f32 } else { -((i % 6) as f32) - 1.0 }).collect::<Vec<_>>(), (8, 6), &dev).unwrap();
    let y = Tensor::from_vec((0..8u32).map(|i| i % 2).collect::<Vec<_>>(), 8, &dev).unwrap();
    let mut opt = AdamW::new(param_groups(&vm, 0.0, None), 1e-1).unwrap();
    for _ in 0..50 {
        let grads = cross_entropy(&probe.forward(&feats, true).unwrap(), &y, 0.0).unwrap().backward().unwrap();
        opt.step(&grads, 1.0).unwrap();
    }
    let pred = probe.forward(&feats, false).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
    assert_eq!(pred, (0..8u32).map(|i| i % 2).collect::<Vec<_>>());
}

#[test]
fn patchify_matches_mae_einsum() {
    let imgs = Tensor::arange(0f32, 2.0 * 3.0 * 16.0, &Device::Cpu).unwrap().reshape((2, 3, 4, 4)).unwrap();
    let x = crate::layers::patchify::patchify(&imgs, 2).unwrap();
    let got: Vec<f32> = x.get(1).unwrap().get(2).unwrap().to_vec1().unwrap();
    // parity.py "== patchify"
    assert_eq!(got, vec![56., 72., 88., 57., 73., 89., 60., 76., 92., 61., 77., 93.]);
}

/// The gather of kept tokens and the decoder's unshuffle (mask tokens
/// appended, gathered by ids_restore) reproduce MAE's `random_masking` and
/// `forward_decoder` for the same indices.
#[test]
fn masking_gather_and_unshuffle_match_mae() {
    let dev = Device::Cpu;
    let x = Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((2, 6, 2)).unwrap();
    // parity.py "== masking": torch.argsort of the fixed noise.
    let keep = Tensor::new(&[[1u32, 5], [0, 4]], &dev).unwrap();
    let restore = Tensor::new(&[[3u32, 0, 5, 2, 4, 1], [0, 3, 2, 4, 1, 5]], &dev).unwrap();
    let kept = crate::layers::vit::gather_tokens(&x, &keep).unwrap();
    assert_eq!(kept.to_vec3::<f32>().unwrap(), vec![vec![vec![2., 3.], vec![10., 11.]], vec![vec![12., 13.], vec![20., 21.]]]);
    let mask = Tensor::full(-1f32, (2, 4, 2), &dev).unwrap();
    let full = crate::layers::vit::gather_tokens(&Tensor::cat(&[&kept, &mask], 1).unwrap(), &restore).unwrap();
    let m = vec![-1f32, -1.];
    assert_eq!(
        full.to_vec3::<f32>().unwrap(),
        vec![
            vec![m.clone(), vec![2., 3.], m.clone(), m.clone(), m.clone(), vec![10., 11.]],
            vec![vec![12., 13.], m.clone(), m.clone(), m.clone(), vec![20., 21.], m.clone()],
        ]
    );
}

/// Loss and every variable's gradient of `run` with the fused ops against
/// the composed candle path (`ops::ComposedOnly`), within `1e-4` of each
/// gradient's largest magnitude; and every variable gets a gradient.
fn fused_matches_composed(name: &str, vm: &VarMap, run: impl Fn() -> Tensor) {
    let fused_loss = run();
    let fused = fused_loss.backward().unwrap();
    let (composed_loss, composed) = {
        let _composed = crate::ops::ComposedOnly::enter();
        let loss = run();
        let grads = loss.backward().unwrap();
        (loss, grads)
    };
    let (a, b) = (fused_loss.to_scalar::<f32>().unwrap(), composed_loss.to_scalar::<f32>().unwrap());
    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{name}: loss {a} fused vs {b} composed");
    for (var_name, var) in vm.data().lock().unwrap().iter() {
        let (Some(ga), Some(gb)) = (fused.get(var.as_tensor()), composed.get(var.as_tensor())) else {
            assert!(fused.get(var.as_tensor()).is_none() && composed.get(var.as_tensor()).is_none(), "{name}: {var_name} has a gradient on one path only");
            continue;
        };
        let scale: f32 = gb.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        let err = crate::ops::fused_cpu::tests::max_diff(ga, gb);
        assert!(err <= 1e-4 * scale + 1e-7, "{name}: gradient of {var_name} differs by {err} (largest {scale})");
    }
}

#[test]
fn fused_ops_match_the_composed_path_on_whole_models() {
    let dev = Device::Cpu;
    for placement in [CluePlacement::Encoder, CluePlacement::Decoder] {
        for head in [HeadConfig::Sr { features: 8, res_blocks: 2 }, HeadConfig::Linear] {
            let vm = VarMap::new();
            let model = Srmae::new(&tiny_cfg(placement, head.clone()), VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let x = batch(3, 11);
            fused_matches_composed(&format!("SRMAE {placement:?}/{head:?}"), &vm, || {
                crate::layers::vit::seed_stochastic_depth(5);
                model.forward(&x, true).unwrap().loss
            });
        }
    }
    let vm = VarMap::new();
    let mae = Mae::new(&tiny_cfg(CluePlacement::Encoder, HeadConfig::Linear).mae, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    let x = batch(3, 12);
    let hidden = x.mask.ne(srmae_pipeline::transforms::mask_value::VISIBLE).unwrap().to_dtype(DType::F32).unwrap();
    fused_matches_composed("MAE", &vm, || {
        crate::layers::vit::seed_stochastic_depth(6);
        mae.forward(&x.patches, &x.visible, &x.restore, &hidden, x.n_hidden + x.n_clue, true).unwrap().loss
    });
    use crate::layers::classifier::{cross_entropy, Pool, VitClassifier};
    let enc = tiny_cfg(CluePlacement::Encoder, HeadConfig::Linear).mae.encoder;
    let labels = Tensor::from_vec(vec![0u32, 2, 1], 3, &dev).unwrap();
    for pool in [Pool::Gap, Pool::Cls] {
        let vm = VarMap::new();
        let clf = VitClassifier::new(&enc, 3, pool, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        fused_matches_composed(&format!("classifier {pool:?}"), &vm, || {
            crate::layers::vit::seed_stochastic_depth(7);
            cross_entropy(&clf.forward(&x.patches, true).unwrap(), &labels, 0.1).unwrap()
        });
    }
}
