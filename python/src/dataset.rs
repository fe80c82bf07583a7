//! `srmae.Dataset`: a packed dataset opened for reading (memory-mapped,
//! validated), with its manifest facts and one decoded record at a time.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use srmae_datasets::PackedDataset;

use crate::errors::{dataset_err, DatasetError};

/// A packed dataset (a directory written by `srmae pack` or `srmae.pack`).
///
/// >>> ds = srmae.Dataset("data/fmnist-train")
/// >>> len(ds), ds.classes[:2]
/// (60000, ['T-shirt/top', 'Trouser'])
/// >>> image, label = ds[0]        # HWC uint8 numpy array, class index
#[pyclass(module = "srmae._srmae", frozen)]
pub struct Dataset {
    pub(crate) inner: Arc<PackedDataset>,
}

impl Dataset {
    pub(crate) fn open(path: PathBuf) -> PyResult<Dataset> {
        if path.is_dir() && !path.join(srmae_datasets::format::manifest::MANIFEST_FILE).exists() {
            return Err(DatasetError::new_err(format!(
                "{}: not a packed dataset (no manifest.json; pack one with srmae.pack or `srmae pack`)",
                path.display()
            )));
        }
        let ds = PackedDataset::open(&path).map_err(dataset_err)?;
        Ok(Dataset { inner: Arc::new(ds) })
    }

    fn index(&self, i: i64) -> PyResult<u64> {
        let n = self.inner.len() as i64;
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(PyIndexError::new_err(format!("record {i} out of range: the dataset has {n} records")));
        }
        Ok(j as u64)
    }
}

#[pymethods]
impl Dataset {
    #[new]
    fn new(path: PathBuf) -> PyResult<Dataset> {
        Dataset::open(path)
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    /// `(image, label)`: record `index` decoded to an `[H, W, C]` uint8 array
    /// (C = 1 or 3, as stored) and its class index (-1 when unlabelled).
    fn __getitem__<'py>(&self, py: Python<'py>, index: i64) -> PyResult<(Bound<'py, PyAny>, i64)> {
        let i = self.index(index)?;
        let ds = self.inner.clone();
        let (img, label) = py.detach(move || ds.decode_labelled(i)).map_err(dataset_err)?;
        let shape = [img.height as usize, img.width as usize, img.channels as usize];
        let arr = PyArray1::from_vec(py, img.pixels).reshape(shape)?;
        Ok((arr.into_any(), label_value(label)))
    }

    /// The dataset's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// Class names, by class index.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes().to_vec()
    }

    /// `manifest.json` as a dict (source, split, pack options, shards, statistics).
    #[getter]
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, self.inner.manifest())?)
    }

    /// Where record `index` lives and what its index entry says: `shard`
    /// (path), `local_index`, `offset` and `stored_len` (bytes in the shard
    /// file), `raw_len`, `label`, `width`, `height`, `channels`.
    fn record_info<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyDict>> {
        let i = self.index(index)?;
        let (s, local) = self.inner.locate(i).map_err(dataset_err)?;
        let shard = &self.inner.shards()[s];
        let e = shard.entry(local);
        let d = PyDict::new(py);
        d.set_item("shard", shard.path())?;
        d.set_item("local_index", local)?;
        d.set_item("offset", e.offset)?;
        d.set_item("stored_len", e.stored_len)?;
        d.set_item("raw_len", e.raw_len)?;
        d.set_item("label", label_value(e.label))?;
        d.set_item("width", e.width)?;
        d.set_item("height", e.height)?;
        d.set_item("channels", e.channels)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "srmae.Dataset({:?}: {} records, {} classes, split {:?})",
            self.inner.dir().display().to_string(),
            self.inner.len(),
            self.inner.classes().len(),
            self.inner.manifest().split
        )
    }
}

/// A stored label as Python sees it: the class index, or -1 when unlabelled.
pub(crate) fn label_value(label: u32) -> i64 {
    if label == srmae_pipeline::batch::NO_LABEL {
        -1
    } else {
        label as i64
    }
}
