//! srmae's models on candle (CPU now, CUDA with `--features cuda` later):
//! a ViT encoder, MAE, SRMAE (low-resolution clue tokens and a
//! super-resolution prediction head), their losses, AdamW with parameter
//! groups and the warmup + cosine schedule.
//!
//! The transformer's training path runs through `ops`: coarse candle
//! `CustomOp`s (linear, linear + GELU, attention, LayerNorm) with
//! hand-written backward passes, and AdamW in place. candle's own fused
//! `LayerNorm` and `softmax_last_dim` have no backward pass and are not
//! used; a test checks that every trainable variable receives a non-zero
//! gradient.

pub mod autocast;
pub mod checkpoint;
pub mod clue_upsample;
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
pub mod ops;
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
