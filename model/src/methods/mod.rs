//! Masked-image-modelling networks, each with its forward and loss:
//! MAE (encoder over the visible patches, light decoder), SRMAE (MAE with
//! low-resolution clue tokens and the SR head) and SimMIM (encoder over all
//! patches with a mask token, one-layer pixel head, L1 loss).

pub mod loss;
pub mod mae;
pub mod simmim;
pub mod srmae;
