//! Training on top of srmae's loader and models: recipes, the device stage
//! (loader `Batch` -> device tensors), the training loop, the masked-image-
//! modelling methods behind one `Method` trait, classifiers (fine-tuning,
//! linear probing, evaluation), plots and reconstructions. The `srmae`
//! binary is a thin command line over this crate.

// mimalloc's C library provides the `mi_option_*` symbols `alloc` calls.
extern crate mimalloc;

pub mod alloc;
pub mod classify;
pub mod device;
pub mod device_stage;
pub mod finetune;
pub mod linprobe;
pub mod methods;
pub mod plot;
pub mod pretrain;
pub mod progress;
pub mod recipe;
pub mod reconstruct;
pub mod run_dir;
pub mod sr_quality;
pub mod tensorboard;
pub mod timm;
pub mod trainer;
