//! The on-disk shard format (see `datasets/FORMAT.md`).

pub mod dataset;
pub mod decode;
pub mod layout;
pub mod manifest;
pub mod reader;
pub mod residency;
pub mod sigbus;
pub mod writer;

#[cfg(test)]
mod proptests;
