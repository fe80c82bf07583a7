//! `Batch`: what the loader yields, field by field, and the pool that
//! recycles batch buffers (a dropped batch returns its memory to the loader).

use crossbeam::channel::Sender;

use crate::transforms::PatchLayout;

/// Label value of an unlabelled sample.
pub const NO_LABEL: u32 = u32::MAX;

/// The buffers of one batch. `B` = batch size, `C` channels, `S` image side,
/// `L` patches per image; per-sample counts come from `layout`.
#[derive(Debug, Default)]
pub struct BatchData {
    /// `[B, C, S, S]` u8 pixels, NCHW. Normalisation happens on the device.
    pub images: Vec<u8>,
    /// `[B]` class indices (`NO_LABEL` when unlabelled).
    pub labels: Vec<u32>,
    /// `[B]` global record indices in the packed dataset (after any
    /// substitution of a corrupt record).
    pub sample_ids: Vec<u64>,
    /// `[B, n_visible]` indices of patches seen at full resolution, in MAE's
    /// shuffle order (`ids_shuffle[:n_visible]`).
    pub visible: Vec<u32>,
    /// `[B, n_clue]` indices of low-resolution clue patches.
    pub clue_ids: Vec<u32>,
    /// `[B, n_clue, C, r, r]` u8 clue pixels, `r = patch / factor`.
    pub clue_pixels: Vec<u8>,
    /// `[B, n_hidden]` indices of hidden patches.
    pub hidden: Vec<u32>,
    /// `[B, L]` MAE's `ids_restore` (position of each patch in the shuffle).
    pub restore: Vec<u32>,
    /// `[B, L]` per-patch state: 0 visible, 1 hidden, 2 clue (`mask_value`).
    pub mask: Vec<u8>,
    /// `[B, K]` soft targets after mixup / cutmix (empty without them).
    pub soft_labels: Vec<f32>,
}

impl BatchData {
    /// Allocates buffers for `b` samples (`soft_classes` soft-label columns).
    pub fn new(b: usize, channels: usize, size: usize, layout: &PatchLayout, soft_classes: usize) -> BatchData {
        let l = layout.num_patches();
        BatchData {
            images: vec![0; b * channels * size * size],
            labels: vec![NO_LABEL; b],
            sample_ids: vec![0; b],
            visible: vec![0; b * layout.n_visible],
            clue_ids: vec![0; b * layout.n_clue],
            clue_pixels: vec![0; b * layout.clue_pixels()],
            hidden: vec![0; b * layout.n_hidden],
            restore: vec![0; if layout.restore { b * l } else { 0 }],
            mask: vec![0; b * l],
            soft_labels: vec![0.0; b * soft_classes],
        }
    }
}

/// One batch. Dropping it hands its buffers back to the loader's pool.
#[derive(Debug)]
pub struct Batch {
    /// Epoch of the batch.
    pub epoch: u64,
    /// Position of the batch within this rank's epoch (0-based).
    pub index: u64,
    /// Samples in the batch (`B`; the last batch may be smaller unless
    /// `drop_last`).
    pub len: usize,
    pub channels: usize,
    /// Image side `S`.
    pub size: usize,
    pub layout: PatchLayout,
    /// Columns of `soft_labels` (0: hard labels only).
    pub soft_classes: usize,
    pub data: BatchData,
    pub(crate) recycle: Option<Sender<BatchData>>,
}

impl Batch {
    /// Image `i` as `[C, S, S]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.channels * self.size * self.size;
        &self.data.images[i * n..(i + 1) * n]
    }
    /// The valid part of a per-sample field with `per` entries per sample.
    fn rows<'a, T>(&self, v: &'a [T], per: usize) -> &'a [T] {
        &v[..self.len * per]
    }
    pub fn images(&self) -> &[u8] {
        self.rows(&self.data.images, self.channels * self.size * self.size)
    }
    pub fn labels(&self) -> &[u32] {
        self.rows(&self.data.labels, 1)
    }
    pub fn sample_ids(&self) -> &[u64] {
        self.rows(&self.data.sample_ids, 1)
    }
    pub fn visible(&self) -> &[u32] {
        self.rows(&self.data.visible, self.layout.n_visible)
    }
    pub fn clue_ids(&self) -> &[u32] {
        self.rows(&self.data.clue_ids, self.layout.n_clue)
    }
    pub fn clue_pixels(&self) -> &[u8] {
        self.rows(&self.data.clue_pixels, self.layout.clue_pixels())
    }
    pub fn hidden(&self) -> &[u32] {
        self.rows(&self.data.hidden, self.layout.n_hidden)
    }
    pub fn restore(&self) -> &[u32] {
        self.rows(&self.data.restore, if self.layout.restore { self.layout.num_patches() } else { 0 })
    }
    pub fn mask(&self) -> &[u8] {
        self.rows(&self.data.mask, self.layout.num_patches())
    }
    /// `[B, K]` soft targets (mixup / cutmix, smoothing folded in), or empty.
    pub fn soft_labels(&self) -> &[f32] {
        self.rows(&self.data.soft_labels, self.soft_classes)
    }
    /// Keeps the buffers (they will not return to the pool).
    pub fn into_data(mut self) -> BatchData {
        self.recycle = None;
        std::mem::take(&mut self.data)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(tx) = self.recycle.take() {
            // The loader may be gone; then the buffers are simply freed.
            let _ = tx.try_send(std::mem::take(&mut self.data));
        }
    }
}
