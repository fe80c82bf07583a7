//! srmae's models on candle (CPU, or CUDA with `--features cuda`), in four
//! folders by kind:
//!
//! - `layers`: the network pieces (ViT encoder, linear, LayerNorm, patchify,
//!   position embeddings, the SR prediction head, the classifier heads,
//!   initialisation);
//! - `methods`: the masked-image-modelling networks and their losses (MAE,
//!   SRMAE, SimMIM);
//! - `ops`: the fused differentiable ops with hand-written backward passes;
//! - `training`: AdamW with parameter groups, the warmup + cosine schedule,
//!   gradient accumulation, autocast, checkpoints, data parallelism.
//!
//! The transformer's training path runs through `ops`: coarse candle
//! `CustomOp`s (linear, linear + GELU, attention, LayerNorm) with
//! hand-written backward passes, and AdamW in place. candle's own fused
//! `LayerNorm` and `softmax_last_dim` have no backward pass and are not
//! used; a test checks that every trainable variable receives a non-zero
//! gradient.

pub mod layers;
pub mod methods;
pub mod ops;
pub mod training;

#[cfg(test)]
mod tests;

pub use candle_core as candle;
