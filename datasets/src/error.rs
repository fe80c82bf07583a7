//! Errors of the datasets crate. Every variant names the file (and record, where
//! there is one) so that a user reading the message knows what to look at.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A shard whose header or index cannot be trusted.
    #[error("shard {path}: {reason}")]
    BadShard { path: PathBuf, reason: String },
    /// One record of a shard is damaged (checksum, bounds, payload).
    #[error("shard {path}, record {record} (local index): {reason}")]
    BadRecord {
        path: PathBuf,
        record: u64,
        reason: String,
    },
    /// The manifest is missing, malformed or disagrees with the shards.
    #[error("manifest {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    /// A source (IDX, CIFAR, FER2013, folders) is malformed as a whole.
    #[error("source {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },
    /// A global record index past the end of the dataset.
    #[error("record {index} out of range: the dataset has {len} records")]
    OutOfRange { index: u64, len: u64 },
    /// Packing stopped because more inputs were rejected than allowed.
    #[error("{rejected} inputs rejected, more than --max-rejects {max}; first: {first}")]
    TooManyRejects {
        rejected: u64,
        max: u64,
        first: String,
    },
    /// Invalid options given by the caller.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Another process is packing into the same directory.
    #[error("{path}: another srmae pack is writing into this directory (lock {lock}); wait for it or choose another output")]
    Busy { path: PathBuf, lock: PathBuf },
    /// Packing was stopped (`pack::request_stop`, e.g. on Ctrl-C).
    #[error("packing into {path} was interrupted; its partial files were removed")]
    Interrupted { path: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn shard(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadShard {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn source(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadSource {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
