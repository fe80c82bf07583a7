//! The streaming loader.
//!
//! Threads and queues (all crossbeam channels, bounded where they carry
//! backpressure):
//!
//! ```text
//!   tokens (bounded, prefetch + threads) ──► worker 1..T ──► ready (k, Batch) ──► consumer
//!        ▲   claim batch k = next.fetch_add(1)                   reorder by k        │
//!        └──────────────────── token returned when batch k is yielded ◄──────────────┘
//!   pool (recycled BatchData) ◄── dropped Batch
//! ```
//!
//! Each worker fills whole batches: for every sample it fetches the record
//! (mmap, zero copy, checksum), removes the zstd frame, decodes only the
//! crop's part of a JPEG, crops + resizes in one pass, flips, and runs the
//! patch transform, writing straight into the batch buffers. One worker per
//! batch means no per-sample hand-off between threads; the token channel
//! bounds how far workers run ahead, so memory is bounded by
//! `prefetch + threads` batches plus what the consumer holds.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use srmae_datasets::PackedDataset;

use crate::batch::{Batch, BatchData};
use crate::config::{CorruptPolicy, LoaderConfig, LoaderState};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::order::rank_order;
use crate::rng::{Purpose, SampleRng};
use crate::sample::{SampleError, SampleProcessor, StageNanos};
use crate::transforms::{PatchConfigError, PatchLayout, PatchOut, PatchTransform};

/// Errors the loader yields.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("loader configuration: {0}")]
    Config(String),
    #[error("loader configuration: {0}")]
    Transform(#[from] PatchConfigError),
    #[error("cannot start the sample decoder: {0}")]
    Decoder(#[source] SampleError),
    #[error("record {record}: {reason}")]
    Corrupt {
        record: u64,
        #[source]
        reason: SampleError,
    },
    #[error("a loader worker panicked: {0}")]
    WorkerPanic(String),
    #[error("loader workers stopped before batch {0}")]
    Stopped(u64),
}

/// What workers share.
struct Shared {
    ds: Arc<PackedDataset>,
    cfg: LoaderConfig,
    order: Vec<u64>,
    transform: Option<Arc<dyn PatchTransform>>,
    /// `cfg.fingerprint_with(custom transform)`.
    fingerprint: u64,
    layout: PatchLayout,
    num_batches: u64,
    next_claim: AtomicU64,
    stop: AtomicBool,
    metrics: Metrics,
    pool_tx: Sender<BatchData>,
    pool_rx: Receiver<BatchData>,
}

type Ready = (u64, Result<Batch, LoaderError>);

/// Yields the batches of one epoch, in order.
pub struct Loader {
    shared: Arc<Shared>,
    ready_rx: Receiver<Ready>,
    token_tx: Option<Sender<()>>,
    pending: BTreeMap<u64, Result<Batch, LoaderError>>,
    next_yield: u64,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Starts a loader at the beginning of `cfg.epoch`.
    pub fn new(ds: Arc<PackedDataset>, cfg: LoaderConfig) -> Result<Loader, LoaderError> {
        Loader::start(ds, cfg, 0, None)
    }

    /// Starts a loader whose patch transform is `transform` instead of the
    /// one `cfg.patch` names: a new masking method plugs in here without a
    /// change to the loader. The transform's `fingerprint` enters the
    /// loader's (set `cfg.patch` to `PatchConfig::None`).
    pub fn with_transform(ds: Arc<PackedDataset>, cfg: LoaderConfig, transform: Arc<dyn PatchTransform>) -> Result<Loader, LoaderError> {
        Loader::start(ds, cfg, 0, Some(transform))
    }

    /// Continues exactly where `state` was taken (same config required).
    pub fn resume(ds: Arc<PackedDataset>, cfg: LoaderConfig, state: LoaderState) -> Result<Loader, LoaderError> {
        Loader::resume_with(ds, cfg, state, None)
    }

    /// `resume` for a loader started `with_transform` (`None`: the
    /// transform `cfg.patch` names). A state taken with another config or
    /// another transform is refused.
    pub fn resume_with(ds: Arc<PackedDataset>, mut cfg: LoaderConfig, state: LoaderState, transform: Option<Arc<dyn PatchTransform>>) -> Result<Loader, LoaderError> {
        if state.fingerprint != cfg.fingerprint_with(transform.as_deref()) {
            return Err(LoaderError::Config("loader state was saved with a different configuration".into()));
        }
        cfg.epoch = state.epoch;
        Loader::start(ds, cfg, state.next_batch, transform)
    }

    fn start(ds: Arc<PackedDataset>, cfg: LoaderConfig, first_batch: u64, custom: Option<Arc<dyn PatchTransform>>) -> Result<Loader, LoaderError> {
        let bad = |s: String| LoaderError::Config(s);
        if cfg.batch_size == 0 {
            return Err(bad("batch size must be at least 1".into()));
        }
        if !matches!(cfg.channels, 1 | 3) {
            return Err(bad(format!("channels must be 1 or 3, not {}", cfg.channels)));
        }
        if cfg.world == 0 || cfg.rank >= cfg.world {
            return Err(bad(format!("rank {} of world size {}", cfg.rank, cfg.world)));
        }
        let size = cfg.augment.size() as usize;
        let fingerprint = cfg.fingerprint_with(custom.as_deref());
        let transform = match custom {
            Some(t) => Some(t),
            None => cfg.patch.build(size, cfg.channels as usize)?.map(Arc::from),
        };
        let layout = transform.as_ref().map(|t| t.layout()).unwrap_or(PatchLayout {
            channels: cfg.channels as usize,
            ..Default::default()
        });
        let order = rank_order(ds.len(), cfg.seed, cfg.epoch, cfg.shuffle, cfg.rank, cfg.world, cfg.rank_policy);
        let n = order.len() as u64;
        let b = cfg.batch_size as u64;
        let num_batches = if cfg.drop_last { n / b } else { n.div_ceil(b) };
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.threads
        };
        let cap = cfg.prefetch.max(1) + threads;
        let (pool_tx, pool_rx) = bounded(cap);
        let (token_tx, token_rx) = bounded(cap);
        for _ in 0..cap {
            token_tx.send(()).expect("fresh channel");
        }
        let (ready_tx, ready_rx) = unbounded();
        // The budget lives with the dataset, so it holds across epochs' loaders.
        ds.mapped().set_budget(cfg.mapped_budget_mib.saturating_mul(1 << 20));
        let shared = Arc::new(Shared {
            ds,
            cfg,
            order,
            transform,
            fingerprint,
            layout,
            num_batches,
            next_claim: AtomicU64::new(first_batch),
            stop: AtomicBool::new(false),
            metrics: Metrics::default(),
            pool_tx,
            pool_rx,
        });
        let mut workers = Vec::with_capacity(threads);
        for w in 0..threads {
            let (shared, token_rx, ready_tx) = (shared.clone(), token_rx.clone(), ready_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("srmae-loader-{w}"))
                .spawn(move || worker(shared, token_rx, ready_tx))
                .map_err(|e| bad(format!("cannot start a worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Loader {
            shared,
            ready_rx,
            token_tx: Some(token_tx),
            pending: BTreeMap::new(),
            next_yield: first_batch,
            workers,
        })
    }

    /// Batches in this epoch (for this rank).
    pub fn num_batches(&self) -> u64 {
        self.shared.num_batches
    }

    /// The per-sample layout of the patch outputs.
    pub fn layout(&self) -> PatchLayout {
        self.shared.layout
    }

    /// The position to resume from: the next batch `next()` would yield.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.shared.cfg.epoch,
            next_batch: self.next_yield,
            fingerprint: self.shared.fingerprint,
        }
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Stops the workers (joining them) and returns the final counters.
    pub fn finish(self) -> MetricsSnapshot {
        let shared = self.shared.clone();
        drop(self);
        shared.metrics.snapshot()
    }
}

/// What `Loader::next_within` saw (a batch is moved out whole, as `next()` does).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    /// The next batch of the epoch (or the error in its place).
    Ready(Result<Batch, LoaderError>),
    /// No batch arrived within the wait; call again.
    Waiting,
    /// The epoch has no more batches.
    End,
}

impl Loader {
    /// The next batch, waiting at most `wait` for it: a caller that must
    /// stay responsive while workers fill a batch (a Python binding checking
    /// for Ctrl-C, a UI) polls this instead of blocking in `next()`.
    pub fn next_within(&mut self, wait: Duration) -> Next {
        let k = self.next_yield;
        if k >= self.shared.num_batches {
            return Next::End;
        }
        let m = &self.shared.metrics;
        let t = Instant::now();
        let deadline = t + wait;
        let out = loop {
            if let Some(b) = self.pending.remove(&k) {
                break b;
            }
            match self.ready_rx.recv_deadline(deadline) {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(RecvTimeoutError::Timeout) => {
                    m.consumer_wait_ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
                    return Next::Waiting;
                }
                Err(RecvTimeoutError::Disconnected) => break Err(LoaderError::Stopped(k)),
            }
        };
        m.consumer_wait_ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        m.depth_sum.fetch_add((self.pending.len() + self.ready_rx.len()) as u64, Relaxed);
        m.depth_samples.fetch_add(1, Relaxed);
        self.next_yield += 1;
        if let Some(tx) = &self.token_tx {
            let _ = tx.send(());
        }
        Next::Ready(out)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_within(Duration::from_secs(3600)) {
                Next::Ready(b) => return Some(b),
                Next::End => return None,
                Next::Waiting => continue,
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        // Workers blocked on a token see the channel close and exit.
        self.token_tx = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(shared: Arc<Shared>, tokens: Receiver<()>, ready: Sender<Ready>) {
    let mut proc = match SampleProcessor::new() {
        Ok(p) => p,
        Err(e) => {
            let k = shared.next_claim.load(Relaxed);
            let _ = ready.send((k, Err(LoaderError::Decoder(e))));
            return;
        }
    };
    proc.partial_decode = shared.cfg.partial_decode;
    proc.low_res = shared.cfg.low_res;
    proc.set_fast_decode(shared.cfg.fast_decode);
    loop {
        let idle = Instant::now();
        if tokens.recv().is_err() || shared.stop.load(Relaxed) {
            return;
        }
        shared.metrics.worker_idle_ns.fetch_add(idle.elapsed().as_nanos() as u64, Relaxed);
        let k = shared.next_claim.fetch_add(1, Relaxed);
        if k >= shared.num_batches {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| fill_batch(&shared, &mut proc, k)))
            .unwrap_or_else(|p| Err(LoaderError::WorkerPanic(panic_message(&p))));
        if ready.send((k, result)).is_err() {
            return;
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Attempts at a substitute before a skipped record becomes an error.
const MAX_SUBSTITUTES: u64 = 64;

fn fill_batch(s: &Shared, proc: &mut SampleProcessor, k: u64) -> Result<Batch, LoaderError> {
    let cfg = &s.cfg;
    let b = cfg.batch_size;
    let start = k as usize * b;
    let len = b.min(s.order.len() - start);
    let size = cfg.augment.size() as usize;
    let ch = cfg.channels as usize;
    let lay = s.layout;
    let soft_classes = cfg.mixup.as_ref().map_or(0, |m| m.classes);
    let mut data = s.pool_rx.try_recv().unwrap_or_else(|_| BatchData::new(b, ch, size, &lay, soft_classes));
    let mut t = StageNanos::default();
    let img_len = ch * size * size;
    for i in 0..len {
        if s.stop.load(Relaxed) {
            return Err(LoaderError::Stopped(k));
        }
        let pos = start + i;
        let original = s.order[pos];
        let mut id = original;
        let mut attempt = 0u64;
        loop {
            let rng_index = id ^ (attempt << 48);
            let mut rng = SampleRng::new(cfg.seed, cfg.epoch, rng_index, Purpose::Augment);
            let tf = Instant::now();
            let out = &mut data.images[i * img_len..(i + 1) * img_len];
            let mut attempt_sample = || -> Result<(u32, usize, u64), SampleError> {
                let (shard, local) = s.ds.locate(id)?;
                let r = s.ds.shards()[shard].record(local, cfg.verify_checksums)?;
                t.fetch += tf.elapsed().as_nanos() as u64;
                proc.process(&r, &cfg.augment, &mut rng, cfg.channels, out, &mut t)?;
                // The shard may have shrunk under the read (zero pages, see `sigbus`).
                s.ds.shards()[shard].check_intact(local)?;
                Ok((r.entry.label, shard, local))
            };
            let done = attempt_sample();
            match done {
                Ok((label, shard, local)) => {
                    if cfg.release_pages {
                        s.ds.mapped().note_read(s.ds.shards(), shard, local);
                    }
                    if let Some(ra) = &cfg.randaugment {
                        let mut rng = SampleRng::new(cfg.seed, cfg.epoch, id, Purpose::RandAugment);
                        ra.apply(&mut data.images[i * img_len..(i + 1) * img_len], ch, size, &mut rng);
                    }
                    if let Some(erasing) = &cfg.erasing {
                        let mut rng = SampleRng::new(cfg.seed, cfg.epoch, id, Purpose::Erase);
                        erasing.apply(&mut data.images[i * img_len..(i + 1) * img_len], ch, size, &mut rng);
                    }
                    data.labels[i] = label;
                    data.sample_ids[i] = id;
                    break;
                }
                Err(reason) => match cfg.on_corrupt {
                    CorruptPolicy::Fail => return Err(LoaderError::Corrupt { record: id, reason }),
                    CorruptPolicy::Skip => {
                        s.metrics.corrupt_skipped.fetch_add(1, Relaxed);
                        attempt += 1;
                        if attempt > MAX_SUBSTITUTES {
                            return Err(LoaderError::Corrupt {
                                record: original,
                                reason: SampleError::Substitutes { last: Box::new(reason), substitutes: MAX_SUBSTITUTES },
                            });
                        }
                        id = s.order[(pos + attempt as usize) % s.order.len()];
                    }
                },
            }
        }
        if let Some(tr) = &s.transform {
            let tp = Instant::now();
            let mut rng = SampleRng::new(cfg.seed, cfg.epoch, id, Purpose::Mask);
            let l = lay.num_patches();
            let (nv, nc, nh) = (lay.n_visible, lay.n_clue, lay.n_hidden);
            let cp = lay.clue_pixels();
            let rl = if lay.restore { l } else { 0 };
            tr.apply(
                &data.images[i * img_len..(i + 1) * img_len],
                &mut rng,
                PatchOut {
                    visible: &mut data.visible[i * nv..(i + 1) * nv],
                    clue_ids: &mut data.clue_ids[i * nc..(i + 1) * nc],
                    clue_pixels: &mut data.clue_pixels[i * cp..(i + 1) * cp],
                    hidden: &mut data.hidden[i * nh..(i + 1) * nh],
                    restore: &mut data.restore[i * rl..(i + 1) * rl],
                    mask: &mut data.mask[i * l..(i + 1) * l],
                },
            );
            t.patch += tp.elapsed().as_nanos() as u64;
        }
    }
    if let Some(mixup) = &cfg.mixup {
        // Keyed by the batch's place in the global order, so any thread count gives the same batch.
        let mut rng = SampleRng::new(cfg.seed, cfg.epoch, k * cfg.world + cfg.rank, Purpose::Mix);
        mixup.apply(&mut data.images, &data.labels, &mut data.soft_labels, len, ch, size, &mut rng);
    }
    s.metrics.add_stages(&t);
    s.metrics.images.fetch_add(len as u64, Relaxed);
    s.metrics.batches.fetch_add(1, Relaxed);
    s.metrics.jpeg_fallbacks.fetch_add(std::mem::take(&mut proc.fallbacks), Relaxed);
    Ok(Batch {
        epoch: cfg.epoch,
        index: k,
        len,
        channels: ch,
        size,
        layout: lay,
        soft_classes,
        data,
        recycle: Some(s.pool_tx.clone()),
    })
}
