//! `srmae`: pack image datasets into shards, inspect and verify them.

mod commands;
mod progress;

use clap::{Parser, Subcommand};

/// srmae: packed image datasets and Super-Resolution Masked Autoencoders.
#[derive(Parser)]
#[command(name = "srmae", version, about, long_about = None, after_help = "\
Examples:
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-train --split train
  srmae inspect data/fmnist-train
  srmae verify data/fmnist-train")]
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
    /// Speed measurements: reading shards (more targets as components land).
    Bench(commands::bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match Cli::parse().command {
        Command::Pack(a) => commands::pack::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Bench(a) => commands::bench::run(a),
    }
}
