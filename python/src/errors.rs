//! Rust errors as Python exceptions, each with the Rust message (which
//! names the file, the record and the reason).
//!
//! ```text
//!   SrmaeError (Exception)
//!   ├── DatasetError          not a dataset, a bad manifest or shard, a failed pack
//!   │   └── CorruptRecordError    a record failed its checksum or did not decode (on_corrupt="fail")
//!   └── LoaderError           a worker stopped or panicked
//!   ValueError                an invalid option (also raised for a resume state of another config)
//!   FileNotFoundError         a path that does not exist
//! ```

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use srmae_datasets::Error as DatasetErr;
use srmae_pipeline::LoaderError;

create_exception!(srmae, SrmaeError, PyException, "Base class of srmae's errors.");
create_exception!(srmae, DatasetError, SrmaeError, "A packed dataset or a pack that cannot be used (the message names the file).");
create_exception!(srmae, CorruptRecordError, DatasetError, "A record failed its checksum or did not decode (with on_corrupt=\"fail\").");
create_exception!(srmae, LoaderError_, SrmaeError, "The loader's workers stopped or panicked.");

/// Adds the exception types to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SrmaeError", py.get_type::<SrmaeError>())?;
    m.add("DatasetError", py.get_type::<DatasetError>())?;
    m.add("CorruptRecordError", py.get_type::<CorruptRecordError>())?;
    m.add("LoaderError", py.get_type::<LoaderError_>())?;
    Ok(())
}

/// The full message: the error and each of its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// A datasets-crate error as the Python exception a user expects.
pub fn dataset_err(e: DatasetErr) -> PyErr {
    let msg = chain(&e);
    match &e {
        DatasetErr::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        DatasetErr::InvalidOption(_) => PyValueError::new_err(msg),
        DatasetErr::BadRecord { .. } => CorruptRecordError::new_err(msg),
        DatasetErr::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
        _ => DatasetError::new_err(msg),
    }
}

/// A loader error as a Python exception.
pub fn loader_err(e: LoaderError) -> PyErr {
    let msg = chain(&e);
    match e {
        LoaderError::Config(_) | LoaderError::Transform(_) => PyValueError::new_err(msg),
        LoaderError::Corrupt { .. } => CorruptRecordError::new_err(msg),
        LoaderError::Decoder(_) | LoaderError::WorkerPanic(_) | LoaderError::Stopped(_) => LoaderError_::new_err(msg),
    }
}

/// An invalid option (`what`: the option's name).
pub fn option_err(what: &str, msg: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{what}: {msg}"))
}
