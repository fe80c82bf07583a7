//! srmae for Python: packed datasets (`Dataset`), the streaming loader
//! (`Loader`, batches as numpy arrays that `torch.from_numpy` wraps
//! without a copy) and the packer (`pack`), built into the `srmae` wheel
//! (`srmae._srmae`; the pure-Python part is `python/python/srmae/`).
//! No deep-learning framework is linked: PyTorch (or JAX, or NumPy) code
//! takes the arrays.

use pyo3::prelude::*;

mod dataset;
mod errors;
mod loader;
mod options;
mod pack;

/// srmae's packed datasets, streaming loader and packer (Rust extension).
#[pymodule]
fn _srmae(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dataset::Dataset>()?;
    m.add_class::<loader::Loader>()?;
    m.add_class::<loader::BatchBuffers>()?;
    m.add_function(wrap_pyfunction!(pack::pack, m)?)?;
    errors::register(m)?;
    m.add("TRANSFORMS", options::TRANSFORMS.to_vec())?;
    m.add("AUGMENTS", options::AUGMENTS.to_vec())?;
    m.add("IMAGENET_MEAN", options::IMAGENET_MEAN.to_vec())?;
    m.add("IMAGENET_STD", options::IMAGENET_STD.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
