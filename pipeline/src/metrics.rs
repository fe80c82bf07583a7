//! Loader counters: per-stage busy time, worker idle time, consumer wait,
//! queue depth, corrupt records, peak RSS. Updated with relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::sample::StageNanos;

#[derive(Debug, Default)]
pub struct Metrics {
    pub fetch_ns: AtomicU64,
    pub decompress_ns: AtomicU64,
    pub decode_ns: AtomicU64,
    pub augment_ns: AtomicU64,
    pub patch_ns: AtomicU64,
    /// Workers waiting for the consumer (backpressure) or for work.
    pub worker_idle_ns: AtomicU64,
    /// The consumer waiting for the next batch.
    pub consumer_wait_ns: AtomicU64,
    pub images: AtomicU64,
    pub batches: AtomicU64,
    pub corrupt_skipped: AtomicU64,
    pub jpeg_fallbacks: AtomicU64,
    /// Sum and count of ready-batch queue depths seen by the consumer.
    pub depth_sum: AtomicU64,
    pub depth_samples: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MetricsSnapshot {
    pub fetch_s: f64,
    pub decompress_s: f64,
    pub decode_s: f64,
    pub augment_s: f64,
    pub patch_s: f64,
    pub worker_idle_s: f64,
    pub consumer_wait_s: f64,
    pub images: u64,
    pub batches: u64,
    pub corrupt_skipped: u64,
    pub jpeg_fallbacks: u64,
    pub mean_queue_depth: f64,
    pub peak_rss_mib: f64,
}

impl Metrics {
    pub fn add_stages(&self, t: &StageNanos) {
        self.fetch_ns.fetch_add(t.fetch, Relaxed);
        self.decompress_ns.fetch_add(t.decompress, Relaxed);
        self.decode_ns.fetch_add(t.decode, Relaxed);
        self.augment_ns.fetch_add(t.augment, Relaxed);
        self.patch_ns.fetch_add(t.patch, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let s = |a: &AtomicU64| a.load(Relaxed) as f64 * 1e-9;
        let samples = self.depth_samples.load(Relaxed).max(1);
        MetricsSnapshot {
            fetch_s: s(&self.fetch_ns),
            decompress_s: s(&self.decompress_ns),
            decode_s: s(&self.decode_ns),
            augment_s: s(&self.augment_ns),
            patch_s: s(&self.patch_ns),
            worker_idle_s: s(&self.worker_idle_ns),
            consumer_wait_s: s(&self.consumer_wait_ns),
            images: self.images.load(Relaxed),
            batches: self.batches.load(Relaxed),
            corrupt_skipped: self.corrupt_skipped.load(Relaxed),
            jpeg_fallbacks: self.jpeg_fallbacks.load(Relaxed),
            mean_queue_depth: self.depth_sum.load(Relaxed) as f64 / samples as f64,
            peak_rss_mib: peak_rss_mib(),
        }
    }
}

/// Peak resident set size of this process (VmHWM), in MiB; 0 if unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
