//! Packing a source into shards.

pub mod encode;
pub mod options;
pub mod packer;
