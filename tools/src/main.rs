//! `srmae`: pack image datasets into shards, inspect and verify them,
//! pretrain SRMAE/MAE/SimMIM, fine-tune, probe, evaluate, reconstruct, export.

mod commands;

use clap::{Parser, Subcommand};

/// Training allocates and frees large tensors every step; glibc's malloc
/// returns them to the kernel each time (page faults took a third of a CPU
/// step), mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// srmae: packed image datasets and Super-Resolution Masked Autoencoders.
#[derive(Parser)]
#[command(name = "srmae", version, about, long_about = None, after_help = "\
Examples:
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-train --split train
  srmae inspect data/fmnist-train
  srmae verify data/fmnist-train
  srmae pretrain --out runs/fm-srmae
  srmae finetune --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-srmae-ft
  srmae eval --checkpoint runs/fm-srmae-ft/checkpoint.safetensors --test-res 28,14,10,7")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a source dataset (ImageNet, ImageFolder, IDX, CIFAR, FER2013) into shards.
    Pack(commands::pack::PackArgs),
    /// Summarise a packed dataset; dump a record as an image file.
    Inspect(commands::inspect::InspectArgs),
    /// Check every checksum and structural invariant of a packed dataset.
    Verify(commands::verify::VerifyArgs),
    /// Speed measurements: shard reading, the loader, a training step.
    Bench(commands::bench::BenchArgs),
    /// Pretrain SRMAE (or MAE, SimMIM with --method) from a recipe.
    Pretrain(commands::pretrain::PretrainArgs),
    /// Fine-tune a classifier on a pretrained encoder (or from scratch).
    Finetune(commands::finetune::FinetuneArgs),
    /// Linear probe on a frozen pretrained encoder.
    Linprobe(commands::linprobe::LinprobeArgs),
    /// Top-1/top-5 of a classifier, at full and very low test resolutions.
    Eval(commands::eval::EvalArgs),
    /// The recipe presets, and a recipe resolved as a run uses it.
    Recipe(commands::recipe::RecipeArgs),
    /// PNG sheets of masked inputs and their reconstructions.
    Reconstruct(commands::reconstruct::ReconstructArgs),
    /// The encoder as safetensors with timm's ViT names.
    Export(commands::export::ExportArgs),
    /// Accuracy-vs-resolution chart of several eval.json files.
    Plot(commands::plot::PlotArgs),
    /// Data-parallel pretraining or fine-tuning: one process per GPU (NCCL).
    Launch(commands::launch::LaunchArgs),
    /// Check the fused training ops on a device against the CPU reference.
    Selftest(commands::selftest::SelftestArgs),
}

fn main() -> anyhow::Result<()> {
    // candle asks for the thread count on every op and, unless this is set,
    // reads /proc/cpuinfo each time.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Each process of a data-parallel job takes its share of the cores
        // (cores / processes on this machine); RAYON_NUM_THREADS overrides.
        let budget = srmae_model::training::dist::DistEnv::from_env().map_or_else(
            |_| std::thread::available_parallelism().map_or(1, |n| n.get()),
            |d| d.thread_budget(),
        );
        // SAFETY: single-threaded here, before any thread is started.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", budget.to_string()) };
    }
    // candle's elementwise thread pool spins 25,000 times before parking a
    // worker between ops, taking cores from the matmul (rayon) and loader
    // threads: 1,000 cuts a CPU pretraining step's CPU time by 10-20 % with
    // the same or better wall time (photos32, 2 cores, A/B with perf stat).
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000") };
    }
    // User errors print their message chain; a backtrace only on request
    // (SRMAE_BACKTRACE=1), not whenever RUST_BACKTRACE is set in a developer's
    // shell. anyhow captures backtraces by RUST_LIB_BACKTRACE first, panics
    // by RUST_BACKTRACE, so panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        let wanted = std::env::var("SRMAE_BACKTRACE").is_ok_and(|v| v != "0" && !v.is_empty());
        // SAFETY: as above.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", if wanted { "1" } else { "0" }) };
    }
    // Colour and no timestamps on a terminal; plain text with UTC timestamps
    // when the log goes to a file or a scheduler (SLURM, CI).
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    if terminal {
        logs.without_time().init();
    } else {
        logs.init();
    }
    match Cli::parse().command {
        Command::Pack(a) => commands::pack::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Pretrain(a) => commands::pretrain::run(a),
        Command::Finetune(a) => commands::finetune::run(a),
        Command::Linprobe(a) => commands::linprobe::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Recipe(a) => commands::recipe::run(a),
        Command::Reconstruct(a) => commands::reconstruct::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Plot(a) => commands::plot::run(a),
        Command::Launch(a) => commands::launch::run(a),
        Command::Selftest(a) => commands::selftest::run(a),
    }
}
