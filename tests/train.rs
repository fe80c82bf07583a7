//! The user's path end to end with the `srmae` binary, on a small slice of
//! Fashion-MNIST and a tiny model: pack -> pretrain (interrupted and resumed,
//! which must equal the uninterrupted run bit for bit) -> reconstruct ->
//! finetune -> linprobe -> eval at low resolutions -> export.

use std::path::Path;
use std::process::{Command, Output};

use srmae_e2e::*;

fn srmae(args: &[&str]) -> Output {
    let out = Command::new(srmae_bin()).args(args).output().expect("running srmae");
    assert!(
        out.status.success(),
        "srmae {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A tiny encoder/decoder, two loader threads, 8 optimiser steps per epoch
/// (batch 16 x 2 accumulated micro-batches over 256 images).
const TINY: [&str; 14] = [
    "--set",
    "model.encoder={ img_size = 28, patch = 4, in_chans = 1, dim = 32, depth = 2, heads = 2, mlp_ratio = 4.0, drop_path = 0.0 }",
    "--set",
    "model.decoder_dim=32",
    "--set",
    "model.decoder_depth=1",
    "--set",
    "model.head={ kind = \"sr\", features = 8, res_blocks = 1 }",
    "--set",
    "optim.batch_size=16",
    "--set",
    "optim.accum_iter=2",
    "--set",
    "optim.epochs=2",
];

#[test]
fn pack_pretrain_resume_finetune_probe_eval_reconstruct_export() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (train, test) = (t.join("train"), t.join("test"));
    let fm = fashion_mnist();
    srmae(&["pack", p(&fm), p(&train), "--split", "train", "--limit", "256"]);
    srmae(&["pack", p(&fm), p(&test), "--split", "test", "--limit", "128"]);
    let data = ["--data", p(&train), "--set"];
    let val = format!("data.val={:?}", p(&test));

    // Uninterrupted, and stopped after 5 steps (mid-epoch) then resumed.
    let (full, parts) = (t.join("full"), t.join("parts"));
    let pre = |out: &Path, extra: &[&str]| {
        let mut a = vec!["pretrain", "--out", p(out), "--threads", "2"];
        a.extend_from_slice(&data);
        a.push(&val);
        a.extend_from_slice(&TINY);
        a.extend_from_slice(extra);
        srmae(&a)
    };
    pre(&full, &[]);
    let stopped = pre(&parts, &["--stop-after", "5"]);
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("stopped at step 5"));
    // A second run into the same directory without --resume is refused.
    let again = Command::new(srmae_bin()).args(["pretrain", "--out", p(&parts), "--data", p(&train)]).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--resume"));
    pre(&parts, &["--resume"]);
    let (ha, da) = safetensors_parts(&full.join("checkpoint.safetensors"));
    let (hb, db) = safetensors_parts(&parts.join("checkpoint.safetensors"));
    assert_eq!(ha, hb, "checkpoint headers (names, shapes, offsets, step, loader state) differ");
    assert!(da == db, "the resumed run's weights or optimiser state differ from the uninterrupted run's");

    // `launch` with one process is the same run, through the data-parallel
    // path (SRMAE_* environment, rank sharding, gradient sync).
    let launched = t.join("launched");
    let mut a = vec!["launch", "--gpus", "1", "--", "pretrain", "--out", p(&launched), "--threads", "2"];
    a.extend_from_slice(&data);
    a.push(&val);
    a.extend_from_slice(&TINY);
    srmae(&a);
    assert!(safetensors_parts(&launched.join("checkpoint.safetensors")).1 == da, "launch --gpus 1 differs from a plain run");
    // Two processes need NCCL (and GPUs): a clear error naming the rank, no hang.
    let two = Command::new(srmae_bin())
        .args(["launch", "--gpus", "2", "--", "pretrain", "--out", p(&t.join("two")), "--data", p(&train), "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&two.stderr);
    assert!(!two.status.success() && err.contains("without NCCL") && err.contains("rank"), "{err}");

    // BF16 autocast trains (on the CPU here; on a GPU it is the fast path).
    let bf16 = t.join("bf16");
    pre(&bf16, &["--stop-after", "4", "--set", "run.precision=\"bf16\"", "--set", "run.log_every=2"]);
    let m = std::fs::read_to_string(bf16.join("metrics.jsonl")).unwrap();
    let losses = logged(&bf16, &["loss"]);
    assert_eq!(losses.len(), 2, "{m}");
    assert!(losses.iter().all(|l| l.is_finite()), "{m}");

    for f in ["recipe.toml", "metrics.jsonl", "reconstructions/sample-000000.png"] {
        assert!(full.join(f).is_file(), "{f} missing from the run directory");
    }
    let metrics = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = steps.iter().rev().find(|m| m.get("step").is_some()).unwrap();
    assert_eq!(last["step"], 16);
    assert!(last["loss"].as_f64().unwrap().is_finite() && last["data_wait_pct"].as_f64().is_some());
    let ckpt = full.join("checkpoint.safetensors");

    // Reconstruction sheets: four panels side by side.
    let rec = t.join("rec");
    srmae(&["reconstruct", "--checkpoint", p(&ckpt), "--count", "3", "--out", p(&rec)]);
    let sheets: Vec<_> = std::fs::read_dir(&rec).unwrap().collect();
    assert_eq!(sheets.len(), 3);
    let img = image::open(rec.join("sample-000000.png")).unwrap();
    assert!(img.width() > 4 * img.height() && img.width() < 5 * img.height());

    // Fine-tune from the pretrained encoder; evaluate at low resolutions.
    let ft = t.join("ft");
    let mut a = vec!["finetune", "--init", p(&ckpt), "--out", p(&ft), "--threads", "2"];
    a.extend_from_slice(&data);
    a.push(&val);
    a.extend_from_slice(&TINY[..2]);
    a.extend_from_slice(&["--set", "optim.epochs=1", "--set", "optim.batch_size=32"]);
    srmae(&a);
    let out = srmae(&["eval", "--checkpoint", p(&ft.join("checkpoint.safetensors")), "--test-res", "28,14,7"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("28 px") && text.contains("7 px"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ft.join("eval.json")).unwrap()).unwrap();
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["n"], 128);
        let (t1, t5) = (r["top1"].as_f64().unwrap(), r["top5"].as_f64().unwrap());
        assert!((0.0..=100.0).contains(&t1) && t5 >= t1);
    }
    assert!(ft.join("lowres.md").is_file());
    // TensorBoard events beside metrics.jsonl (CRCs checked by the reader), wall time on every line.
    let events: Vec<_> = std::fs::read_dir(ft.join("tensorboard")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let scalars = srmae_train::tensorboard::read_events(&events[0]).unwrap();
    for tag in ["train/loss", "train/lr", "train/grad_norm", "perf/images_per_s", "val/top1"] {
        assert!(scalars.iter().any(|s| s.tag == tag && s.value.is_finite()), "{tag} missing from {scalars:?}");
    }
    let ft_metrics = std::fs::read_to_string(ft.join("metrics.jsonl")).unwrap();
    assert!(ft_metrics.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["wall_time"].as_f64().is_some_and(|t| t > 1.6e9)));

    // Linear probe; its folded checkpoint evaluates like the probe itself.
    let lp = t.join("lp");
    let mut a = vec!["linprobe", "--init", p(&ckpt), "--out", p(&lp), "--threads", "2"];
    a.extend_from_slice(&data);
    a.push(&val);
    a.extend_from_slice(&TINY[..2]);
    a.extend_from_slice(&["--set", "optim.epochs=3", "--set", "optim.batch_size=64"]);
    let probe = String::from_utf8_lossy(&srmae(&a).stdout).to_string();
    let probe_top1 = probe.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().trim().to_string();
    let out = String::from_utf8_lossy(&srmae(&["eval", "--checkpoint", p(&lp.join("checkpoint.safetensors"))]).stdout).to_string();
    assert!(out.contains(&format!("top-1 {probe_top1:>6}%")), "probe said {probe_top1}, eval said {out}");

    // Export with timm's names and layouts.
    let exported = t.join("timm.safetensors");
    srmae(&["export", "--checkpoint", p(&ft.join("checkpoint.safetensors")), "--out", p(&exported)]);
    let (header, _) = safetensors_parts(&exported);
    let shape = |k: &str| header[k]["shape"].as_array().unwrap_or_else(|| panic!("{k} missing")).iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(shape("patch_embed.proj.weight"), [32, 1, 4, 4]);
    assert_eq!(shape("pos_embed"), [1, 50, 32]);
    assert_eq!(shape("cls_token"), [1, 1, 32]);
    assert_eq!(shape("blocks.1.attn.qkv.weight"), [96, 32]);
    assert_eq!(shape("blocks.0.mlp.fc2.bias"), [32]);
    assert_eq!(shape("fc_norm.weight"), [32]);
    assert_eq!(shape("head.weight"), [10, 32]);
    let names: Vec<&String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
    assert!(names.iter().all(|k| !k.starts_with("decoder") && !k.starts_with("norm.") && !k.contains("sr_head")), "{names:?}");
    assert_eq!(header["__metadata__"]["global_pool"], "avg");

    // Weights in: the exported timm file initialises a classifier; with the
    // learning rate at zero, it evaluates as the checkpoint it came from.
    let again = t.join("from-timm");
    let mut a = vec!["finetune", "--init", p(&exported), "--out", p(&again), "--threads", "2"];
    a.extend_from_slice(&data);
    a.push(&val);
    a.extend_from_slice(&TINY[..2]);
    a.extend_from_slice(&["--set", "optim.epochs=1", "--set", "optim.batch_size=32", "--set", "optim.blr=0.0", "--set", "optim.weight_decay=0.0"]);
    srmae(&a);
    let top1 = |ckpt: &Path| {
        let out = String::from_utf8_lossy(&srmae(&["eval", "--checkpoint", p(ckpt)]).stdout).to_string();
        out.split("top-1").nth(1).unwrap_or_default().split('%').next().unwrap_or_default().trim().to_string()
    };
    assert_eq!(top1(&again.join("checkpoint.safetensors")), top1(&ft.join("checkpoint.safetensors")), "timm weights in != the checkpoint they were exported from");
}

/// SimMIM through the same commands: pretrain (interrupted and resumed, equal
/// bit for bit to the uninterrupted run) -> reconstruct -> finetune -> eval.
#[test]
fn simmim_pretrain_resume_reconstruct_finetune_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (train, test) = (t.join("train"), t.join("test"));
    let fm = fashion_mnist();
    srmae(&["pack", p(&fm), p(&train), "--split", "train", "--limit", "128"]);
    srmae(&["pack", p(&fm), p(&test), "--split", "test", "--limit", "64"]);
    let val = format!("data.val={:?}", p(&test));
    let pre = |out: &Path, extra: &[&str]| {
        let mut a = vec!["pretrain", "--recipe", "fmnist-simmim-pretrain", "--out", p(out), "--threads", "2", "--data", p(&train), "--set", &val];
        a.extend_from_slice(&TINY[..2]);
        a.extend_from_slice(&TINY[8..]);
        a.extend_from_slice(extra);
        srmae(&a)
    };
    let (full, parts) = (t.join("full"), t.join("parts"));
    pre(&full, &[]);
    pre(&parts, &["--stop-after", "3"]);
    pre(&parts, &["--resume"]);
    let (ha, da) = safetensors_parts(&full.join("checkpoint.safetensors"));
    let (hb, db) = safetensors_parts(&parts.join("checkpoint.safetensors"));
    assert_eq!(ha, hb);
    assert!(da == db, "the resumed SimMIM run differs from the uninterrupted one");
    let names: Vec<&String> = ha.as_object().unwrap().keys().collect();
    assert!(names.iter().any(|k| k.ends_with("mask_token")) && names.iter().any(|k| k.contains("pixel_head")), "{names:?}");
    assert!(!names.iter().any(|k| k.contains("decoder")), "SimMIM has no decoder: {names:?}");
    let recipe = std::fs::read_to_string(full.join("recipe.toml")).unwrap();
    assert!(recipe.contains("method = \"simmim\"") && recipe.contains("simmim_blocks"), "{recipe}");
    let losses = logged(&full, &["loss"]);
    assert!(!losses.is_empty() && losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    assert!(full.join("reconstructions/sample-000000.png").is_file());

    let ckpt = full.join("checkpoint.safetensors");
    let rec = t.join("rec");
    srmae(&["reconstruct", "--checkpoint", p(&ckpt), "--count", "2", "--out", p(&rec)]);
    assert_eq!(std::fs::read_dir(&rec).unwrap().count(), 2);

    let ft = t.join("ft");
    let mut a = vec!["finetune", "--init", p(&ckpt), "--out", p(&ft), "--threads", "2", "--data", p(&train), "--set", &val];
    a.extend_from_slice(&TINY[..2]);
    // With MAE's fine-tuning augmentations: RandAugment, random erasing, mixup and cutmix (soft targets).
    a.extend_from_slice(&["--set", "optim.epochs=1", "--set", "optim.batch_size=32", "--set", "data.reprob=0.25", "--set", "data.mixup=0.8", "--set", "data.cutmix=1.0", "--set", "data.aa=\"rand-m9-mstd0.5-inc1\""]);
    srmae(&a);
    let ft_losses = logged(&ft, &["loss"]);
    assert!(!ft_losses.is_empty() && ft_losses.iter().all(|l| l.is_finite() && *l > 0.0), "{ft_losses:?}");
    let out = srmae(&["eval", "--checkpoint", p(&ft.join("checkpoint.safetensors")), "--test-res", "28,14"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("14 px"));
}

/// Checkpoint history (keep-last-K), `best` by validation top-1, and
/// `--resume-from` an older checkpoint, which recomputes the same final run.
#[test]
fn checkpoint_history_best_and_resume_from() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (train, test) = (t.join("train"), t.join("test"));
    let fm = fashion_mnist();
    srmae(&["pack", p(&fm), p(&train), "--split", "train", "--limit", "128"]);
    srmae(&["pack", p(&fm), p(&test), "--split", "test", "--limit", "64"]);
    let val = format!("data.val={:?}", p(&test));
    let ft = t.join("ft");
    let mut a = vec!["finetune", "--scratch", "--out", p(&ft), "--threads", "2", "--data", p(&train), "--set", &val];
    a.extend_from_slice(&TINY[..2]);
    a.extend_from_slice(&["--set", "optim.epochs=3", "--set", "optim.batch_size=32", "--set", "run.keep_checkpoints=2"]);
    srmae(&a);
    let exists = |f: &str| ft.join(f).is_file();
    assert!(!exists("checkpoint-1.safetensors") && exists("checkpoint-2.safetensors") && exists("checkpoint-3.safetensors"));
    let best: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ft.join("best.json")).unwrap()).unwrap();
    let tops = logged(&ft, &["eval", "top1"]);
    assert_eq!(tops.len(), 3);
    assert_eq!(best["top1"].as_f64().unwrap(), tops.iter().cloned().fold(f64::MIN, f64::max));
    assert!(exists("best.safetensors"));
    let (_, final_weights) = safetensors_parts(&ft.join("checkpoint.safetensors"));
    // Continue from epoch 2: the third epoch is recomputed, to the same weights.
    let mut b = a.clone();
    b[1] = "--resume-from";
    b.insert(2, "");
    let from = ft.join("checkpoint-2.safetensors");
    b[2] = p(&from);
    srmae(&b);
    let (_, again) = safetensors_parts(&ft.join("checkpoint.safetensors"));
    assert!(again == final_weights, "resuming from checkpoint-2 did not reproduce the run");
}
