//! One module per subcommand.

pub mod bench;
pub mod bench_ops;
pub mod bench_step;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod inspect;
pub mod launch;
pub mod linprobe;
pub mod pack;
pub mod plot;
pub mod pretrain;
pub mod recipe;
pub mod reconstruct;
pub mod run_args;
pub mod selftest;
pub mod verify;
