//! A masking strategy that is not one of the loader's `PatchConfig`s, defined
//! here, trains MAE through the library's public API (`PretrainJob` with a
//! custom `PatchTransform`), and resumes exactly; a resume with a different
//! transform is refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use srmae_e2e::*;
use srmae_pipeline::rng::SampleRng;
use srmae_pipeline::transforms::{mask_value, PatchLayout, PatchOut, PatchTransform};
use srmae_train::pretrain::PretrainJob;
use srmae_train::recipe::Recipe;
use srmae_train::trainer::Ended;

/// Hides `rows` whole random rows of the patch grid (a band-masking
/// experiment): the visible patches in grid order, then the hidden ones.
struct HideRows {
    grid: usize,
    rows: usize,
}

impl PatchTransform for HideRows {
    fn name(&self) -> &'static str {
        "hide_rows"
    }
    fn layout(&self) -> PatchLayout {
        let l = self.grid * self.grid;
        PatchLayout { patch: 4, grid_h: self.grid, grid_w: self.grid, n_visible: l - self.rows * self.grid, n_hidden: self.rows * self.grid, restore: true, channels: 1, ..Default::default() }
    }
    fn apply(&self, _image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>) {
        let g = self.grid;
        let mut rows: Vec<usize> = (0..g).collect();
        for i in (1..g).rev() {
            rows.swap(i, rng.int_in(0, i as i64) as usize);
        }
        let hidden_rows = &rows[..self.rows];
        let mut order: Vec<u32> = Vec::with_capacity(g * g);
        for pass_hidden in [false, true] {
            for id in 0..g * g {
                if hidden_rows.contains(&(id / g)) == pass_hidden {
                    order.push(id as u32);
                }
            }
        }
        let nv = self.layout().n_visible;
        out.visible.copy_from_slice(&order[..nv]);
        out.hidden.copy_from_slice(&order[nv..]);
        for (pos, &id) in order.iter().enumerate() {
            out.restore[id as usize] = pos as u32;
            out.mask[id as usize] = if pos < nv { mask_value::VISIBLE } else { mask_value::HIDDEN };
        }
    }
    fn fingerprint(&self) -> u64 {
        (self.grid as u64) << 32 | self.rows as u64
    }
}

fn pack(dir: &Path) {
    let fm = fashion_mnist();
    let out = Command::new(srmae_bin())
        .args(["pack", fm.to_str().unwrap(), dir.to_str().unwrap(), "--split", "train", "--limit", "96"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn recipe(train: &Path) -> Recipe {
    let sets = [
        format!("data.train={:?}", train.to_str().unwrap()),
        "data.threads=2".into(),
        "model.method=\"mae\"".into(),
        "model.encoder={ img_size = 28, patch = 4, in_chans = 1, dim = 32, depth = 1, heads = 2, mlp_ratio = 2.0, drop_path = 0.0 }".into(),
        "model.decoder_dim=16".into(),
        "model.decoder_depth=1".into(),
        "model.decoder_heads=2".into(),
        "optim.batch_size=16".into(),
        "optim.epochs=2".into(),
        "run.log_every=1".into(),
    ];
    Recipe::load("fmnist-pretrain", &sets).unwrap()
}

fn job(train: &Path, out: &Path, rows: usize) -> PretrainJob {
    PretrainJob { transform: Some(Arc::new(HideRows { grid: 7, rows })), reconstructions: 0, ..PretrainJob::new(recipe(train), out) }
}

#[test]
fn a_custom_patch_transform_trains_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train = t.join("train");
    pack(&train);
    let (full, parts) = (t.join("full"), t.join("parts"));
    assert_eq!(job(&train, &full, 3).run().unwrap(), Ended::Finished);
    assert_eq!(job(&train, &parts, 3).with_stop_after(4).run().unwrap(), Ended::Interrupted { step: 4 });
    // Another transform cannot continue this run.
    let err = job(&train, &parts, 2).with_resume().run().err().expect("a different transform is refused");
    assert!(format!("{err:#}").contains("loader configuration differs"), "{err:#}");
    assert_eq!(job(&train, &parts, 3).with_resume().run().unwrap(), Ended::Finished);
    let (ha, da) = safetensors_parts(&full.join("checkpoint.safetensors"));
    let (hb, db) = safetensors_parts(&parts.join("checkpoint.safetensors"));
    assert_eq!(ha, hb);
    assert!(da == db, "the resumed run differs from the uninterrupted one");
    let metrics = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let losses = logged(&full, &["loss"]);
    assert_eq!(losses.len(), 12, "{metrics}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
}

#[test]
fn a_transform_without_what_the_method_needs_is_refused() {
    struct NoRestore;
    impl PatchTransform for NoRestore {
        fn name(&self) -> &'static str {
            "no_restore"
        }
        fn layout(&self) -> PatchLayout {
            PatchLayout { patch: 4, grid_h: 7, grid_w: 7, channels: 1, ..Default::default() }
        }
        fn apply(&self, _image: &[u8], _rng: &mut SampleRng, out: PatchOut<'_>) {
            out.mask.fill(mask_value::HIDDEN);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train");
    pack(&train);
    let job = PretrainJob { transform: Some(Arc::new(NoRestore)), ..PretrainJob::new(recipe(&train), tmp.path().join("run")) };
    let err = job.run().err().expect("refused");
    assert!(format!("{err:#}").contains("restore order"), "{err:#}");
}
