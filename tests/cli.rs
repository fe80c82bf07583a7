//! The `srmae` binary end to end: pack Fashion-MNIST, inspect, dump, verify;
//! a damaged shard makes verify fail naming the record; help has examples.

use std::process::Command;

use srmae_e2e::*;

fn srmae(args: &[&str]) -> std::process::Output {
    Command::new(srmae_bin()).args(args).env("RUST_BACKTRACE", "0").output().expect("run srmae")
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn pack_inspect_verify_fashion_mnist() {
    let src = fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fm-test");
    let (src_s, out_s) = (src.to_str().unwrap(), out.to_str().unwrap());
    let o = srmae(&["pack", src_s, out_s, "--split", "test", "--shard-size", "1MiB"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("packed 10000 records"), "{}", text(&o));

    let o = srmae(&["inspect", out_s]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("records     10000") && t.contains("Ankle boot") && t.contains("raw 10000"), "{t}");

    let png = tmp.path().join("r0.png");
    let o = srmae(&["inspect", out_s, "--dump", "0", "--out", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (28, 28));

    let o = srmae(&["verify", out_s, "--decode"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ok: 10000 records"), "{}", text(&o));

    // Damage one record's bytes in the second shard: verify names it, exits 1.
    let shard = out.join("shard-00001.srs");
    let s = srmae_datasets::format::reader::Shard::open(&shard).unwrap();
    let e = s.entry(5);
    drop(s);
    flip_byte(&shard, e.offset as usize + 1);
    let o = srmae(&["verify", out_s]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("FAIL") && t.contains("shard-00001.srs") && t.contains("record 5"), "{t}");
    assert!(t.contains("whole-file crc32c"), "{t}");

    // Re-packing over a complete pack needs --force.
    let o = srmae(&["pack", src_s, out_s, "--split", "test"]);
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));
}

#[test]
fn every_command_has_help_with_examples() {
    let o = srmae(&["--help"]);
    let top = text(&o);
    // The subcommands as `srmae --help` lists them.
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    for want in ["pack", "verify", "pretrain", "finetune", "linprobe", "recipe", "reconstruct"] {
        assert!(commands.iter().any(|c| c == want), "{want} missing from {commands:?}");
    }
    for cmd in &commands {
        let o = srmae(&[cmd, "--help"]);
        assert!(o.status.success());
        assert!(text(&o).contains("Examples:"), "{cmd} --help lacks examples");
    }
}

#[test]
fn recipe_list_and_show() {
    let list = text(&srmae(&["recipe", "list"]));
    for name in ["fmnist-pretrain", "fmnist-simmim-pretrain", "imagenet-vitb16-simmim-pretrain", "photos32-finetune"] {
        assert!(list.lines().any(|l| l.starts_with(name)), "{name} missing from\n{list}");
    }
    // `--method mae` on the SRMAE preset runs MAE's random masking at the selected share.
    let shown = text(&srmae(&["recipe", "show", "fmnist-pretrain", "--set", "model.method=\"mae\""]));
    assert!(shown.contains("kind = \"mae_random\"") && shown.contains("mask_ratio = 0.75"), "{shown}");
    let o = srmae(&["recipe", "show", "fmnist-pretrain", "--set", "model.method=\"byol\""]);
    assert!(!o.status.success() && text(&o).contains("srmae, mae, simmim"), "{}", text(&o));
}

#[test]
fn bad_source_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("nothing-here");
    let out = tmp.path().join("out");
    let o = srmae(&["pack", bogus.to_str().unwrap(), out.to_str().unwrap(), "--kind", "idx"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nothing-here"), "{}", text(&o));
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn selftest_checks_every_fused_op_on_the_cpu() {
    let o = srmae(&["selftest"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let ops: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    for op in ["attention", "linear", "linear_gelu", "layer_norm", "conv3x3_rows", "adamw", "grad_norm"] {
        assert!(ops.contains(op), "{op} missing from {ops:?}");
    }
    assert!(lines.iter().all(|l| l["pass"] == true && l["max_rel_err"].as_f64().unwrap() <= l["tolerance"].as_f64().unwrap()), "{lines:?}");
    // The default (CPU-only) build refuses a GPU by name rather than skipping it.
    let o = srmae(&["selftest", "--device", "cuda"]);
    assert!(!o.status.success() && text(&o).contains("without CUDA support"), "{}", text(&o));
}
