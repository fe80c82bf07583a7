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
