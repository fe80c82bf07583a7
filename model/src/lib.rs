//! srmae's models on candle (CPU now, CUDA with `--features cuda` later):
//! a ViT encoder, MAE, SRMAE (low-resolution clue tokens and a
//! super-resolution prediction head), their losses, AdamW with parameter
//! groups and the warmup + cosine schedule.
//!
//! candle's fused `LayerNorm` and `softmax_last_dim` have no backward pass;
//! this crate builds both from differentiable ops, and a test checks that
//! every trainable variable receives a non-zero gradient.

pub mod autocast;
pub mod checkpoint;
pub mod classifier;
pub mod conv3x3;
pub mod cuda_setup;
pub mod dist;
pub mod engine;
pub mod fused_cpu;
pub mod init;
pub mod linear;
pub mod loss;
pub mod mae;
pub mod norm;
pub mod optim;
pub mod patchify;
pub mod pos_embed;
pub mod row_broadcast;
pub mod schedule;
pub mod sr_head;
pub mod srmae;
pub mod vit;

#[cfg(test)]
mod tests;

pub use candle_core as candle;
