//! `srmae.Loader`: the Rust streaming loader as a Python iterator of
//! batches (dicts of numpy arrays).
//!
//! Zero copy: each batch's buffers stay in a `BatchBuffers` object that
//! is the numpy arrays' base; `torch.from_numpy` wraps them as they are.
//! When the last array of a batch is gone, its buffers return to the
//! loader's pool (the Rust `Batch` drop), so memory is bounded by
//! `prefetch + threads` batches plus the ones Python still holds.
//!
//! The GIL is released while a batch is awaited, in slices of
//! `POLL`, checking for signals (Ctrl-C raises `KeyboardInterrupt`) between them.

use std::sync::Arc;
use std::time::Duration;

use numpy::ndarray::{ArrayViewD, IxDyn};
use numpy::{Element, PyArray1, PyArrayDyn};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use srmae_datasets::PackedDataset;
use srmae_pipeline::metrics::MetricsSnapshot;
use srmae_pipeline::{Batch, CorruptPolicy, LoaderConfig, LoaderState, Mixup, Next, PatchLayout, RandAugment, RandomErasing};

use crate::dataset::{label_value, Dataset};
use crate::errors::{loader_err, option_err};
use crate::options::{self, Preset, IMAGENET_MEAN, IMAGENET_STD};

/// How long the GIL stays released between checks for signals.
const POLL: Duration = Duration::from_millis(50);

/// The buffers of one batch; the base object of its numpy arrays.
#[pyclass(module = "srmae._srmae", frozen)]
pub struct BatchBuffers {
    batch: Batch,
}

/// A zero-copy `shape` array over `data`, owned by `owner`.
fn borrowed<'py, T: Element>(owner: &Bound<'py, BatchBuffers>, data: &[T], shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    let view = ArrayViewD::from_shape(IxDyn(shape), data).map_err(|e| PyRuntimeError::new_err(format!("batch field of shape {shape:?}: {e}")))?;
    // SAFETY: `data` is a buffer of `owner.batch`, which is frozen (never
    // mutated or moved out while the Python object lives), and `owner`
    // becomes the array's base object, so the buffer outlives the array.
    let array = unsafe { PyArrayDyn::borrow_from_array(&view, owner.clone().into_any()) };
    Ok(array.into_any())
}

/// The batch as a dict of arrays (see `Loader` for the fields).
fn batch_dict<'py>(py: Python<'py>, batch: Batch) -> PyResult<Bound<'py, PyDict>> {
    let owner = Bound::new(py, BatchBuffers { batch })?;
    let b = &owner.get().batch;
    let (n, c, s) = (b.len, b.channels, b.size);
    let lay: PatchLayout = b.layout;
    let d = PyDict::new(py);
    d.set_item("images", borrowed(&owner, b.images(), &[n, c, s, s])?)?;
    let labels: Vec<i64> = b.labels().iter().map(|&l| label_value(l)).collect();
    d.set_item("labels", PyArray1::from_vec(py, labels))?;
    let ids: Vec<i64> = b.sample_ids().iter().map(|&i| i as i64).collect();
    d.set_item("sample_ids", PyArray1::from_vec(py, ids))?;
    if lay.n_visible > 0 {
        d.set_item("visible", borrowed(&owner, b.visible(), &[n, lay.n_visible])?)?;
    }
    if lay.n_clue > 0 {
        d.set_item("clue_ids", borrowed(&owner, b.clue_ids(), &[n, lay.n_clue])?)?;
        let r = lay.clue_side;
        d.set_item("clue_pixels", borrowed(&owner, b.clue_pixels(), &[n, lay.n_clue, lay.channels, r, r])?)?;
    }
    if lay.n_hidden > 0 {
        d.set_item("hidden", borrowed(&owner, b.hidden(), &[n, lay.n_hidden])?)?;
    }
    if lay.restore {
        d.set_item("restore", borrowed(&owner, b.restore(), &[n, lay.num_patches()])?)?;
    }
    if lay.num_patches() > 0 {
        d.set_item("mask", borrowed(&owner, b.mask(), &[n, lay.num_patches()])?)?;
    }
    if b.soft_classes > 0 {
        d.set_item("soft_labels", borrowed(&owner, b.soft_labels(), &[n, b.soft_classes])?)?;
    }
    d.set_item("epoch", b.epoch)?;
    d.set_item("index", b.index)?;
    Ok(d)
}

/// The streaming loader: batches of one rank, one epoch after another.
///
/// Iterating yields the rest of the current epoch, then moves to the next
/// epoch (so `for epoch in range(E): for batch in loader: ...` sees E
/// different orders); `set_epoch(e)` picks an epoch, `state_dict()` /
/// `load_state_dict()` resume mid-epoch exactly.
#[pyclass(module = "srmae._srmae")]
pub struct Loader {
    ds: Arc<PackedDataset>,
    cfg: LoaderConfig,
    /// The running loader of `epoch` (None after an epoch ended).
    live: Option<srmae_pipeline::Loader>,
    epoch: u64,
    next_batch: u64,
    num_batches: u64,
    layout: PatchLayout,
    /// Counters of the loaders of earlier epochs (and earlier positions).
    finished: MetricsSnapshot,
}

/// `a + b` for the counters; the mean queue depth weighted by batches, the peak RSS the larger.
fn add_metrics(a: &MetricsSnapshot, b: &MetricsSnapshot) -> MetricsSnapshot {
    let batches = a.batches + b.batches;
    let weighted = a.mean_queue_depth * a.batches as f64 + b.mean_queue_depth * b.batches as f64;
    MetricsSnapshot {
        fetch_s: a.fetch_s + b.fetch_s,
        decompress_s: a.decompress_s + b.decompress_s,
        decode_s: a.decode_s + b.decode_s,
        augment_s: a.augment_s + b.augment_s,
        patch_s: a.patch_s + b.patch_s,
        worker_idle_s: a.worker_idle_s + b.worker_idle_s,
        consumer_wait_s: a.consumer_wait_s + b.consumer_wait_s,
        images: a.images + b.images,
        batches,
        corrupt_skipped: a.corrupt_skipped + b.corrupt_skipped,
        jpeg_fallbacks: a.jpeg_fallbacks + b.jpeg_fallbacks,
        mean_queue_depth: if batches > 0 { weighted / batches as f64 } else { 0.0 },
        peak_rss_mib: a.peak_rss_mib.max(b.peak_rss_mib),
    }
}

impl Loader {
    /// Stops the running loader (if any), keeping its counters.
    fn stop_live(&mut self) {
        if let Some(l) = self.live.take() {
            let pos = l.state();
            self.epoch = pos.epoch;
            self.next_batch = pos.next_batch;
            // Workers are joined first, so the counters are final.
            let metrics = l.finish();
            self.finished = add_metrics(&self.finished, &metrics);
        }
    }

    fn start(&mut self) -> PyResult<()> {
        let state = LoaderState { epoch: self.epoch, next_batch: self.next_batch, fingerprint: self.cfg.fingerprint() };
        let l = srmae_pipeline::Loader::resume(self.ds.clone(), self.cfg.clone(), state).map_err(loader_err)?;
        self.num_batches = l.num_batches();
        self.layout = l.layout();
        self.live = Some(l);
        Ok(())
    }

    fn position(&self) -> LoaderState {
        match &self.live {
            Some(l) => l.state(),
            None => LoaderState { epoch: self.epoch, next_batch: self.next_batch, fingerprint: self.cfg.fingerprint() },
        }
    }

    fn move_to(&mut self, epoch: u64, next_batch: u64) -> PyResult<()> {
        // Stop the old workers first (their batches are not wanted).
        self.stop_live();
        self.epoch = epoch;
        self.next_batch = next_batch;
        self.start()
    }
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (
        dataset, batch_size, *, size = 224, transform = None, patch = 16, augment = None,
        seed = 0, epoch = 0, rank = 0, world_size = 1, rank_policy = "drop", shuffle = None,
        threads = 0, prefetch = 4, drop_last = true, channels = 3, low_res = None,
        on_corrupt = "skip", partial_decode = true, fast_decode = false, verify_checksums = true,
        release_pages = true, aa = None, reprob = 0.0, mixup = 0.0, cutmix = 0.0, mixup_prob = 1.0,
        mixup_switch_prob = 0.5, smoothing = 0.1, mean = None, std = None, config = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dataset: &Bound<'_, PyAny>,
        batch_size: usize,
        size: u32,
        transform: Option<&Bound<'_, PyAny>>,
        patch: usize,
        augment: Option<&Bound<'_, PyAny>>,
        seed: u64,
        epoch: u64,
        rank: u64,
        world_size: u64,
        rank_policy: &str,
        shuffle: Option<&Bound<'_, PyAny>>,
        threads: usize,
        prefetch: usize,
        drop_last: bool,
        channels: u8,
        low_res: Option<u32>,
        on_corrupt: &str,
        partial_decode: bool,
        fast_decode: bool,
        verify_checksums: bool,
        release_pages: bool,
        aa: Option<String>,
        reprob: f64,
        mixup: f64,
        cutmix: f64,
        mixup_prob: f64,
        mixup_switch_prob: f64,
        smoothing: f64,
        mean: Option<Vec<f32>>,
        std: Option<Vec<f32>>,
        config: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Loader> {
        let ds = match dataset.cast::<Dataset>() {
            Ok(d) => d.get().inner.clone(),
            Err(_) => Dataset::open(dataset.extract().map_err(|_| option_err("dataset", "expected a srmae.Dataset or a path"))?)?.inner,
        };
        let cfg = match config {
            Some(c) if !c.is_none() => {
                let mut cfg: LoaderConfig = pythonize::depythonize(c).map_err(|e| option_err("config", e))?;
                cfg.batch_size = batch_size;
                cfg
            }
            _ => {
                let mean = mean.unwrap_or_else(|| IMAGENET_MEAN.to_vec());
                let std = std.unwrap_or_else(|| IMAGENET_STD.to_vec());
                if mean.len() != std.len() || !matches!(mean.len(), 1 | 3) {
                    return Err(option_err("mean/std", format!("{} and {} values; give 1 or 3 of each", mean.len(), std.len())));
                }
                let shuffle = match shuffle {
                    Some(s) if !s.is_none() => options::shuffle(s)?,
                    _ => srmae_pipeline::Shuffle::Full,
                };
                let on_corrupt = match on_corrupt {
                    "skip" => CorruptPolicy::Skip,
                    "fail" => CorruptPolicy::Fail,
                    other => return Err(option_err("on_corrupt", format!("{other:?} is not one of skip, fail"))),
                };
                let classes = ds.classes().len();
                let mixup = if mixup > 0.0 || cutmix > 0.0 {
                    if classes < 2 {
                        return Err(option_err("mixup/cutmix", format!("{} has {classes} classes; soft labels need at least 2", ds.dir().display())));
                    }
                    Some(Mixup { mixup_alpha: mixup, cutmix_alpha: cutmix, prob: mixup_prob, switch_prob: mixup_switch_prob, smoothing, classes })
                } else {
                    None
                };
                LoaderConfig {
                    threads,
                    seed,
                    epoch,
                    rank,
                    world: world_size,
                    shuffle,
                    rank_policy: options::rank_policy(rank_policy)?,
                    drop_last,
                    augment: options::augment(&Preset::extract("augment", augment, "mae_pretrain")?, size)?,
                    patch: options::patch_config(&Preset::extract("transform", transform, "none")?, patch, size)?,
                    channels,
                    prefetch,
                    on_corrupt,
                    partial_decode,
                    fast_decode,
                    verify_checksums,
                    release_pages,
                    low_res,
                    randaugment: aa.map(|a| RandAugment::parse(&a, &mean)).transpose().map_err(|e| option_err("aa", e))?,
                    erasing: (reprob > 0.0).then(|| RandomErasing::new(reprob, &mean, &std)),
                    mixup,
                    ..LoaderConfig::pretrain(size, patch.max(1), batch_size)
                }
            }
        };
        let epoch = cfg.epoch;
        let mut l = Loader { ds, cfg, live: None, epoch, next_batch: 0, num_batches: 0, layout: PatchLayout::default(), finished: MetricsSnapshot::default() };
        py.detach(|| l.start())?;
        Ok(l)
    }

    /// Batches per epoch for this rank.
    fn __len__(&self) -> usize {
        self.num_batches as usize
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.live.is_none() {
            py.detach(|| self.start())?;
        }
        loop {
            let live = self.live.as_mut().expect("started above");
            match py.detach(|| live.next_within(POLL)) {
                Next::Ready(Ok(batch)) => return batch_dict(py, batch),
                Next::Ready(Err(e)) => return Err(loader_err(e)),
                Next::Waiting => py.check_signals()?,
                Next::End => {
                    // Workers are done; the next iteration starts the next epoch.
                    py.detach(|| self.stop_live());
                    self.epoch += 1;
                    self.next_batch = 0;
                    return Err(PyStopIteration::new_err(()));
                }
            }
        }
    }

    /// Starts epoch `epoch` from its first batch (as `DistributedSampler.set_epoch`).
    fn set_epoch(&mut self, py: Python<'_>, epoch: u64) -> PyResult<()> {
        py.detach(|| self.move_to(epoch, 0))
    }

    /// The current epoch (the one the next batch belongs to).
    #[getter]
    fn epoch(&self) -> u64 {
        self.position().epoch
    }

    /// Where the loader stands: `{"epoch", "next_batch", "fingerprint"}`; a
    /// loader with the same options continues exactly from it.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.position())?)
    }

    /// Continues from a `state_dict()`; refuses one taken with other options.
    fn load_state_dict(&mut self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let s: LoaderState = pythonize::depythonize(state).map_err(|e| option_err("state", e))?;
        if s.fingerprint != self.cfg.fingerprint() {
            return Err(option_err("state", "it was saved by a loader with different options (its fingerprint differs)"));
        }
        py.detach(|| self.move_to(s.epoch, s.next_batch))
    }

    /// Counters of the loader's work since it was made (all epochs):
    /// seconds per stage (summed over workers), images, batches,
    /// `corrupt_skipped`, `jpeg_fallbacks`, `consumer_wait_s`,
    /// `mean_queue_depth`, `peak_rss_mib`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let live = self.live.as_ref().map(|l| l.metrics()).unwrap_or_default();
        Ok(pythonize::pythonize(py, &add_metrics(&self.finished, &live))?)
    }

    /// The resolved configuration (the Rust `LoaderConfig`, as a dict);
    /// `Loader(ds, batch_size, config=loader.config)` builds the same loader.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.cfg)?)
    }

    /// Per-sample sizes of the patch outputs: `patch`, `grid_h`, `grid_w`,
    /// `n_visible`, `n_clue`, `clue_side`, `n_hidden`, `restore`, `channels`.
    #[getter]
    fn layout<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.layout)?)
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.cfg.batch_size
    }

    /// Stops the workers now (iterating again restarts them).
    fn close(&mut self, py: Python<'_>) {
        py.detach(|| self.stop_live());
    }

    fn __repr__(&self) -> String {
        let p = self.position();
        format!(
            "srmae.Loader({}: batch {}, {} batches per epoch, epoch {}, next batch {}, rank {} of {})",
            self.ds.dir().display(),
            self.cfg.batch_size,
            self.num_batches,
            p.epoch,
            p.next_batch,
            self.cfg.rank,
            self.cfg.world
        )
    }
}
