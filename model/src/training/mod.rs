//! Training infrastructure: AdamW with parameter groups, the warmup + cosine
//! schedule, gradient accumulation, autocast, checkpoints, data parallelism
//! and CUDA device settings.

pub mod autocast;
pub mod checkpoint;
pub mod cuda_setup;
pub mod dist;
pub mod engine;
pub mod optim;
pub mod rendezvous;
pub mod schedule;
