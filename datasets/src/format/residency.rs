//! A budget for the shard pages this process keeps mapped while streaming.
//!
//! Reading a record maps its pages (and, through the kernel's fault-around,
//! the aligned window around them). Dropping each record's window right after
//! use keeps RSS minimal, but costs a `madvise` with a TLB shootdown per
//! record and re-faults the neighbours that share the window. Instead, the
//! windows are marked as records are read, and when the marked windows exceed
//! the budget they are all dropped at once. RSS stays below the budget (plus
//! the windows read since the last release) whatever the dataset's size, and a
//! dataset smaller than the budget is never dropped at all.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};

use super::reader::{Shard, WINDOW_BYTES};

/// Marks of the windows read since the last release, for a set of shards.
pub struct MappedBudget {
    /// One bit per window, per shard.
    marks: Vec<Vec<AtomicU64>>,
    /// Windows marked since the last release (approximate under races).
    marked: AtomicU64,
    budget_windows: AtomicU64,
    releases: AtomicU64,
}

impl MappedBudget {
    /// A budget of `budget_bytes` (at least one window) for `shards`.
    pub fn new(shards: &[Shard], budget_bytes: u64) -> MappedBudget {
        MappedBudget {
            marks: shards.iter().map(|s| (0..s.num_windows().div_ceil(64)).map(|_| AtomicU64::new(0)).collect()).collect(),
            marked: AtomicU64::new(0),
            budget_windows: AtomicU64::new(windows(budget_bytes)),
            releases: AtomicU64::new(0),
        }
    }

    /// Changes the budget (bytes, at least one window); takes effect at the
    /// next read.
    pub fn set_budget(&self, budget_bytes: u64) {
        self.budget_windows.store(windows(budget_bytes), Relaxed);
    }

    /// Notes that local record `local` of `shards[shard]` was read; drops the
    /// mappings of all marked windows when they exceed the budget. Safe to
    /// call from several threads: a dropped page is re-read from the page
    /// cache on its next access, and slices handed out stay valid.
    pub fn note_read(&self, shards: &[Shard], shard: usize, local: u64) {
        let (Some(marks), Some(s)) = (self.marks.get(shard), shards.get(shard)) else { return };
        let Some((first, end)) = s.windows_of(local) else { return };
        let mut new = 0;
        for w in first..end {
            let bit = 1u64 << (w % 64);
            if marks[w / 64].fetch_or(bit, Relaxed) & bit == 0 {
                new += 1;
            }
        }
        let budget = self.budget_windows.load(Relaxed);
        if new > 0 && self.marked.fetch_add(new, Relaxed) + new > budget {
            // Only the thread that takes the count past the budget releases.
            if self.marked.swap(0, AcqRel) > budget {
                self.release_marked(shards);
            }
        }
    }

    /// Drops every marked window, one `madvise` per run of adjacent windows.
    pub fn release_marked(&self, shards: &[Shard]) {
        self.marked.store(0, Relaxed);
        for (marks, s) in self.marks.iter().zip(shards) {
            let mut run: Option<(usize, usize)> = None; // (first, count)
            for (k, word) in marks.iter().enumerate() {
                let bits = word.swap(0, AcqRel);
                for b in 0..64 {
                    let w = k * 64 + b;
                    match (bits >> b & 1 == 1, run) {
                        (true, Some((first, count))) if first + count == w => run = Some((first, count + 1)),
                        (true, _) => {
                            if let Some((first, count)) = run {
                                s.release_windows(first, count);
                            }
                            run = Some((w, 1));
                        }
                        (false, _) => {}
                    }
                }
            }
            if let Some((first, count)) = run {
                s.release_windows(first, count);
            }
        }
        self.releases.fetch_add(1, Relaxed);
    }

    /// How many times the marked windows were dropped.
    pub fn releases(&self) -> u64 {
        self.releases.load(Relaxed)
    }

    /// Windows marked since the last release.
    pub fn marked_windows(&self) -> u64 {
        self.marks.iter().flatten().map(|w| w.load(Relaxed).count_ones() as u64).sum()
    }
}

fn windows(budget_bytes: u64) -> u64 {
    (budget_bytes / WINDOW_BYTES as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::{Encoding, NO_LABEL};
    use crate::format::writer::{write_shard, StoredRecord};

    /// A shard of `n` raw 1 MiB records.
    fn big_shard(n: usize) -> (tempfile::TempDir, Shard) {
        let side = 1024u32;
        let records: Vec<StoredRecord> = (0..n)
            .map(|i| StoredRecord {
                stored: vec![i as u8; (side * side) as usize],
                raw_len: side * side,
                label: NO_LABEL,
                width: side,
                height: side,
                channels: 1,
                encoding: Encoding::Raw,
                flags: 0,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.srs");
        write_shard(&path, 0, &records).unwrap();
        let shard = Shard::open(&path).unwrap();
        (dir, shard)
    }

    #[test]
    fn releases_when_the_marked_windows_exceed_the_budget_and_data_stays_readable() {
        let (_dir, shard) = big_shard(12); // ~12 MiB: 6-7 windows
        let shards = std::slice::from_ref(&shard);
        let budget = MappedBudget::new(shards, 3 * WINDOW_BYTES as u64);
        for i in [0u64, 1, 2, 3] {
            budget.note_read(shards, 0, i); // records 0-3 touch windows 0-2 (record 0 follows the index)
        }
        assert_eq!(budget.releases(), 0, "3 windows fit the budget");
        assert_eq!(budget.marked_windows(), 3);
        for i in 4..12 {
            budget.note_read(shards, 0, i);
        }
        assert!(budget.releases() >= 1, "passing the budget releases");
        assert!(budget.marked_windows() < shard.num_windows() as u64);
        for i in 0..12u64 {
            let r = shard.record(i, true).unwrap();
            assert!(r.stored.iter().all(|&v| v == i as u8), "record {i} reads back after release");
        }
    }

    #[test]
    fn a_dataset_inside_the_budget_is_never_released() {
        let (_dir, shard) = big_shard(6);
        let shards = std::slice::from_ref(&shard);
        let budget = MappedBudget::new(shards, 64 << 20);
        for _ in 0..3 {
            for i in 0..6 {
                budget.note_read(shards, 0, i);
            }
        }
        assert_eq!(budget.releases(), 0);
        assert_eq!(budget.marked_windows(), shard.num_windows() as u64);
        budget.release_marked(shards);
        assert_eq!((budget.releases(), budget.marked_windows()), (1, 0));
        budget.set_budget(0); // one window
        budget.note_read(shards, 0, 0);
        assert_eq!(budget.releases(), 1, "one window fits");
        budget.note_read(shards, 0, 5);
        assert_eq!(budget.releases(), 2, "a smaller budget applies at the next read");
        budget.note_read(shards, 1, 0); // no such shard: ignored
        budget.note_read(shards, 0, 99); // no such record: ignored
    }
}
