//! Training and evaluation on top of the loader and the models: recipes,
//! the device stage, the training loop, classifiers, plots and
//! reconstructions.

pub mod classify;
pub mod device;
pub mod mim;
pub mod plot;
pub mod recipe;
pub mod reconstruct;
pub mod run_dir;
pub mod sr_quality;
pub mod trainer;
