//! Network pieces: the ViT encoder and its parts, patchify, position
//! embeddings, the SR prediction head and its convolutions, classifier heads,
//! and the seeded initialisation of a model's variables.

pub mod classifier;
pub mod clue_upsample;
pub mod conv3x3;
pub mod init;
pub mod linear;
pub mod norm;
pub mod patchify;
pub mod pos_embed;
pub mod sr_head;
pub mod vit;
