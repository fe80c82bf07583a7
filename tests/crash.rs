//! Crash safety under `kill -9`: an interrupted pack never leaves output
//! that looks complete, and a training run killed at any moment resumes from
//! its last checkpoint and ends exactly where the uninterrupted run ends.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use srmae_e2e::*;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts `srmae args`, SIGKILLs it after `after`; returns whether it had
/// already finished by then.
fn kill_after(args: &[&str], after: Duration) -> bool {
    let mut child = Command::new(srmae_bin()).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while t.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    false
}

#[test]
fn killed_pack_leaves_nothing_that_looks_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let fm = fashion_mnist();
    let mut killed = 0;
    for (k, ms) in [20u64, 60, 150, 300, 600].into_iter().enumerate() {
        let out = tmp.path().join(format!("out{k}"));
        let done = kill_after(&["pack", p(&fm), p(&out), "--split", "train", "--threads", "2"], Duration::from_millis(ms));
        if done {
            let v = Command::new(srmae_bin()).args(["verify", p(&out)]).output().unwrap();
            assert!(v.status.success(), "a finished pack verifies");
            continue;
        }
        killed += 1;
        assert!(!out.join("manifest.json").exists(), "killed after {ms} ms, yet {} has a manifest", out.display());
        let v = Command::new(srmae_bin()).args(["verify", p(&out)]).output().unwrap();
        assert!(!v.status.success(), "verify must refuse an incomplete pack");
        // The partial output is replaced by a complete pack.
        let again = Command::new(srmae_bin()).args(["pack", p(&fm), p(&out), "--split", "test", "--force"]).output().unwrap();
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        assert!(out.join("manifest.json").exists());
    }
    assert!(killed > 0, "no pack was killed before it finished");
}

const TINY: [&str; 12] = [
    "--set",
    "model.encoder={ img_size = 28, patch = 4, in_chans = 1, dim = 32, depth = 2, heads = 2, mlp_ratio = 4.0, drop_path = 0.0 }",
    "--set",
    "model.decoder_dim=32",
    "--set",
    "model.decoder_depth=1",
    "--set",
    "model.head={ kind = \"sr\", features = 8, res_blocks = 1 }",
    "--set",
    "optim.batch_size=32",
    "--set",
    "optim.epochs=3",
];

fn tensors(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..].to_vec()
}

#[test]
fn training_killed_at_any_moment_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train = t.join("train");
    let fm = fashion_mnist();
    assert!(Command::new(srmae_bin()).args(["pack", p(&fm), p(&train), "--split", "train", "--limit", "96"]).status().unwrap().success());
    let run = |out: &Path, extra: &[&str]| -> Vec<String> {
        let val = format!("data.val={:?}", p(&train));
        let mut a: Vec<String> = ["pretrain", "--out", p(out), "--data", p(&train), "--threads", "1", "--set", &val].iter().map(|s| s.to_string()).collect();
        a.extend(TINY.iter().map(|s| s.to_string()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let full = t.join("full");
    let args = run(&full, &[]);
    let t0 = Instant::now();
    let st = Command::new(srmae_bin()).args(&args).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let total = t0.elapsed();

    // Kill at several moments (checkpoints are written at every epoch end),
    // resuming each time; finally run to the end.
    let killed = t.join("killed");
    let mut kills = 0;
    for frac in [0.3, 0.5, 0.7, 0.85] {
        let ckpt = killed.join("checkpoint.safetensors");
        let args = if ckpt.exists() { run(&killed, &["--resume"]) } else { run(&killed, &[]) };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if !kill_after(&refs, total.mul_f64(frac)) {
            kills += 1;
        }
        if ckpt.exists() {
            // Whatever moment the kill hit, the checkpoint on disk loads.
            let r = Command::new(srmae_bin()).args(["reconstruct", "--checkpoint", p(&ckpt), "--count", "1", "--out", p(&t.join("r"))]).output().unwrap();
            assert!(r.status.success(), "checkpoint unreadable after a kill: {}", String::from_utf8_lossy(&r.stderr));
        }
    }
    assert!(kills > 0, "no run was killed");
    let args = if killed.join("checkpoint.safetensors").exists() { run(&killed, &["--resume"]) } else { run(&killed, &[]) };
    let st = Command::new(srmae_bin()).args(&args).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(
        tensors(&full.join("checkpoint.safetensors")) == tensors(&killed.join("checkpoint.safetensors")),
        "a run killed {kills} times and resumed differs from the uninterrupted run"
    );
}
