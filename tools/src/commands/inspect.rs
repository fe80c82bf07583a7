//! `srmae inspect`: what a packed dataset holds; dump a record as an image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use srmae_datasets::format::layout::Encoding;
use srmae_datasets::PackedDataset;

use srmae_train::progress::human_bytes;

/// Summarise a packed dataset, or write one record as an image file.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  srmae inspect data/fmnist-train
  srmae inspect data/fmnist-train --dump 0 --out first.png
  srmae inspect data/in1k-val --json > summary.json")]
pub struct InspectArgs {
    /// Packed dataset directory (holds manifest.json).
    dir: PathBuf,
    /// Write record N (global index) as an image file (format from --out's extension).
    #[arg(long, value_name = "N", requires = "out")]
    dump: Option<u64>,
    /// Image file for --dump (e.g. record.png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Longer-side buckets of the size histogram.
const BUCKETS: [u32; 8] = [32, 64, 128, 256, 512, 1024, 2048, u32::MAX];

pub fn run(a: InspectArgs) -> Result<()> {
    let ds = PackedDataset::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    if let Some(n) = a.dump {
        let out = a.out.as_ref().context("--dump needs --out FILE")?;
        let img = ds.decode(n).with_context(|| format!("decoding record {n}"))?;
        let Some(dynimg) = img.to_dynamic() else { bail!("record {n} has {} channels", img.channels) };
        dynimg.save(out).with_context(|| format!("writing {}", out.display()))?;
        let label = ds.record(n)?.entry.label();
        let class = label.and_then(|l| ds.classes().get(l as usize)).map(String::as_str).unwrap_or("-");
        let label = label.map_or("none".to_string(), |l| l.to_string());
        println!("record {n}: {}x{}x{}, label {label} ({class}) -> {}", img.width, img.height, img.channels, out.display());
        return Ok(());
    }
    let m = ds.manifest();
    let mut enc: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sizes: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut hist = [0u64; BUCKETS.len()];
    let mut labels: BTreeMap<Option<u32>, u64> = BTreeMap::new();
    let (mut stored, mut pixels, mut zstd) = (0u64, 0u64, 0u64);
    for shard in ds.shards() {
        for i in 0..shard.len() {
            let e = shard.entry(i);
            let name = Encoding::from_code(e.encoding).map_or("?", Encoding::name);
            *enc.entry(name).or_default() += 1;
            *sizes.entry((e.width, e.height)).or_default() += 1;
            let long = e.width.max(e.height);
            hist[BUCKETS.iter().position(|&b| long <= b).unwrap_or(BUCKETS.len() - 1)] += 1;
            *labels.entry(e.label()).or_default() += 1;
            stored += e.stored_len as u64;
            pixels += e.width as u64 * e.height as u64 * e.channels as u64;
            zstd += e.is_zstd() as u64;
        }
    }
    let files: u64 = m.shards.iter().map(|s| s.bytes).sum();
    let mut common: Vec<_> = sizes.iter().collect();
    common.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    if a.json {
        let v = serde_json::json!({
            "dir": a.dir.display().to_string(),
            "records": m.num_records, "classes": m.classes.len(), "shards": m.shards.len(),
            "source": m.source, "split": m.split, "encodings": enc, "zstd_records": zstd,
            "shard_bytes": files, "stored_bytes": stored, "pixel_bytes": pixels,
            "source_bytes": m.stats.source_bytes, "rejected": m.rejected,
            "longer_side_histogram": BUCKETS.iter().zip(hist).map(|(b, n)| (if *b == u32::MAX { "larger".to_string() } else { format!("<={b}") }, n)).collect::<BTreeMap<_, _>>(),
            "labels": labels.iter().map(|(l, n)| (l.map_or("none".into(), |l| l.to_string()), *n)).collect::<BTreeMap<String, u64>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("dataset     {}", a.dir.display());
    println!("source      {} {} (split {})", m.source.kind, m.source.path, m.split);
    println!("records     {} in {} shards, {} rejected at pack time", m.num_records, m.shards.len(), m.rejected);
    let shown: Vec<&str> = m.classes.iter().take(10).map(String::as_str).collect();
    println!("classes     {}: {}{}", m.classes.len(), shown.join(", "), if m.classes.len() > 10 { ", ..." } else { "" });
    println!("encodings   {}", enc.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    println!("zstd        {zstd} records stored with a zstd frame");
    println!("size        {} in shard files, {} of records", human_bytes(files), human_bytes(stored));
    println!(
        "ratio       shards/source {:.3}, shards/decoded pixels {:.3} ({} source, {} pixels)",
        files as f64 / m.stats.source_bytes.max(1) as f64,
        files as f64 / pixels.max(1) as f64,
        human_bytes(m.stats.source_bytes),
        human_bytes(pixels)
    );
    println!("longer side histogram:");
    for (b, n) in BUCKETS.iter().zip(hist) {
        if n > 0 {
            let label = if *b == u32::MAX { "  > 2048".to_string() } else { format!("<= {b:>5}") };
            println!("  {label}  {n}");
        }
    }
    println!("most common sizes (w x h):");
    for ((w, h), n) in common.iter().take(5) {
        println!("  {w} x {h}  {n}");
    }
    let unlabelled = labels.get(&None).copied().unwrap_or(0);
    let (lo, hi) = labels.iter().filter(|(l, _)| l.is_some()).fold((u64::MAX, 0), |(lo, hi), (_, &n)| (lo.min(n), hi.max(n)));
    if hi > 0 {
        println!("per class   {lo}..{hi} records; {unlabelled} unlabelled");
    }
    Ok(())
}
