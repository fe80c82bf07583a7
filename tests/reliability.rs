//! Failures a user meets in practice end cleanly: a pack that fails (here a
//! file-size limit, as a full disk) removes what it wrote; two packs into
//! one directory do not interleave; `--resume` on a run killed before its
//! first checkpoint starts it; user errors print no backtrace.

use std::path::Path;
use std::process::Command;

use srmae_e2e::*;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files in `dir` that a pack writes (shards, temporaries, rejects).
fn pack_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-") || n.ends_with(".tmp") || n == "rejects.json" || n == "manifest.json")
        .collect();
    v.sort();
    v
}

#[test]
fn a_pack_that_runs_out_of_space_removes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fm");
    // RLIMIT_FSIZE of 4 MiB (the train split packs to ~29 MiB); SIGXFSZ
    // ignored, so writes past it fail with EFBIG as they would with ENOSPC.
    let script = format!("trap '' XFSZ; ulimit -f 4096; exec {} pack {} {} --split train --shard-size 8MiB", p(&srmae_bin()), p(&fashion_mnist()), p(&out));
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "an error exit, not a signal: {:?}\n{}", o.status, stderr(&o));
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert_eq!(pack_files(&out), Vec::<String>::new(), "the failed pack left files behind");
    // The directory takes a complete pack afterwards.
    let again = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&out), "--split", "test"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn a_second_pack_into_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fm");
    std::fs::create_dir_all(&out).unwrap();
    // Another pack holds the directory's lock (as `srmae pack` does while it runs).
    let lock = std::fs::File::create(out.join(".srmae-pack.lock")).unwrap();
    lock.lock().unwrap();
    let o = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&out), "--split", "test"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("another srmae pack is writing into this directory"), "{}", stderr(&o));
    assert_eq!(pack_files(&out), Vec::<String>::new(), "the refused pack wrote into the directory");
    // Released (the holder ended): the pack goes ahead.
    drop(lock);
    let o = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&out), "--split", "test"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

const TINY: [&str; 10] = [
    "--set",
    "model.encoder={ img_size = 28, patch = 4, in_chans = 1, dim = 32, depth = 1, heads = 2, mlp_ratio = 2.0, drop_path = 0.0 }",
    "--set",
    "model.decoder_dim=32",
    "--set",
    "model.decoder_depth=1",
    "--set",
    "model.head={ kind = \"sr\", features = 8, res_blocks = 1 }",
    "--set",
    "optim.batch_size=32",
];

#[test]
fn resume_before_the_first_checkpoint_starts_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train = t.join("train");
    let packed = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&train), "--split", "train", "--limit", "64"]).output().unwrap();
    assert!(packed.status.success(), "{}", stderr(&packed));
    let run = |out: &Path, extra: &[&str]| {
        let mut a = vec!["pretrain", "--out", p(out), "--data", p(&train), "--threads", "1", "--resume"];
        a.extend(TINY);
        a.extend(extra);
        Command::new(srmae_bin()).args(&a).output().unwrap()
    };
    // A directory that does not exist yet, and one a killed job left with
    // its recipe but no checkpoint: the same command line starts both.
    let fresh = t.join("fresh");
    let o = run(&fresh, &["--stop-after", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no checkpoint yet; starting the run from the beginning"), "{}", stderr(&o));
    assert!(fresh.join("checkpoint.safetensors").exists());
    let killed = t.join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::copy(fresh.join("recipe.toml"), killed.join("recipe.toml")).unwrap();
    let o = run(&killed, &["--stop-after", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // With a checkpoint, the same command resumes it.
    let o = run(&fresh, &["--stop-after", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    // A directory holding another recipe is refused, checkpoint or not.
    let other = t.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(fresh.join("recipe.toml"), other.join("recipe.toml")).unwrap();
    let o = run(&other, &["--stop-after", "1", "--set", "optim.blr=3e-3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("recipe.toml differs"), "{}", stderr(&o));
    assert!(!other.join("checkpoint.safetensors").exists());
}

#[test]
fn user_errors_print_no_backtrace_unless_asked() {
    let missing = ["pretrain", "--out", "/nonexistent-run", "--data", "/nonexistent-data"];
    let o = Command::new(srmae_bin()).args(missing).env("RUST_BACKTRACE", "1").env_remove("RUST_LIB_BACKTRACE").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = stderr(&o);
    assert!(text.contains("/nonexistent-data"), "{text}");
    assert!(!text.to_lowercase().contains("backtrace"), "a user error printed a backtrace:\n{text}");
    let o = Command::new(srmae_bin()).args(missing).env("SRMAE_BACKTRACE", "1").env_remove("RUST_LIB_BACKTRACE").output().unwrap();
    assert!(stderr(&o).to_lowercase().contains("backtrace"), "SRMAE_BACKTRACE=1 asks for one:\n{}", stderr(&o));
}

/// Copies packed dataset `src` to `dst` (manifest and shards).
fn copy_pack(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Truncates `path` to half its size.
fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len / 2).unwrap();
}

#[test]
fn a_shard_truncated_under_a_running_loader_is_not_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("fm");
    let o = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&packed), "--split", "test"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Several epochs of the 10,000 test images; the shard loses its second half a moment in.
    let child = Command::new(srmae_bin())
        .args(["bench", "loader", p(&packed), "--size", "28", "--patch", "4", "--channels", "1", "--mode", "mae", "--batches", "600", "--json", "--threads", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    truncate_half(&packed.join("shard-00000.srs"));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.signal(), None, "the loader died of a signal: {:?}\n{}", o.status, stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    if o.status.success() {
        // Skip policy (the default): the lost records were skipped and counted.
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(v["corrupt_skipped"].as_u64().unwrap() > 0, "the truncation went unnoticed: {out}");
    } else {
        assert!(stderr(&o).contains("shrank"), "{}", stderr(&o));
    }
}

#[test]
fn a_shard_truncated_during_verify_is_reported_not_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("fm");
    let o = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&packed), "--split", "train"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut seen_while_mapped = 0;
    for (k, ms) in [5u64, 20, 50, 100, 150, 250, 400].into_iter().enumerate() {
        let copy = tmp.path().join(format!("copy{k}"));
        copy_pack(&packed, &copy);
        let child = Command::new(srmae_bin())
            .args(["verify", p(&copy), "--decode", "--threads", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        truncate_half(&copy.join("shard-00000.srs"));
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.signal(), None, "verify died of a signal after {ms} ms: {:?}\n{}", o.status, stderr(&o));
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        if text.contains("changed size while being verified") {
            assert_eq!(o.status.code(), Some(1), "{text}");
            seen_while_mapped += 1;
        }
    }
    assert!(seen_while_mapped > 0, "no truncation landed while verify had the shard mapped");
}

#[test]
fn training_on_a_shard_that_shrinks_stops_with_a_checkpoint() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let train = t.join("train");
    let o = Command::new(srmae_bin()).args(["pack", p(&fashion_mnist()), p(&train), "--split", "train", "--limit", "3000"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.join("run");
    let mut a = vec!["pretrain", "--out", p(&out), "--data", p(&train), "--threads", "1", "--set", "optim.epochs=500", "--set", "data.on_corrupt=\"fail\""];
    a.extend(TINY);
    let mut child = Command::new(srmae_bin()).args(&a).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // After the first epoch's checkpoint, the shard loses its second half.
    let ckpt = out.join("checkpoint.safetensors");
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(300) && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ckpt.exists(), "no first checkpoint");
    let first = std::fs::metadata(&ckpt).unwrap().modified().unwrap();
    truncate_half(&train.join("shard-00000.srs"));
    let t1 = Instant::now();
    while child.try_wait().unwrap().is_none() && t1.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let text = stderr(&o);
    assert_eq!(o.status.signal(), None, "training died of a signal: {:?}\n{text}", o.status);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("shrank") && text.contains("written") && text.contains("--resume"), "{text}");
    assert!(std::fs::metadata(&ckpt).unwrap().modified().unwrap() >= first, "the stop wrote a checkpoint");
}
