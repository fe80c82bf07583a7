//! The sample order of an epoch: a deterministic permutation of (seed,
//! epoch), then this rank's part of it.
//!
//! - `Shuffle::Full`: a uniform random permutation (Fisher–Yates).
//! - `Shuffle::Block { records }`: the dataset is cut into blocks of
//!   consecutive records; blocks are visited in random order and records are
//!   shuffled within each block. Reads then stay within a block at a time,
//!   which suits data larger than the page cache.
//! - `Shuffle::Sequential`: records in order (evaluation).
//!
//! Ranks (distributed training) take a strided part of the permutation, as
//! torch's DistributedSampler: rank r gets positions r, r + world, ...
//! `RankPolicy::Drop` trims the permutation to a multiple of `world` (every
//! rank gets floor(n / world)); `RankPolicy::Pad` repeats its first records
//! up to a multiple of `world` (every rank gets ceil(n / world), a few records
//! are seen twice per epoch).

use serde::{Deserialize, Serialize};

use crate::rng::{Purpose, SampleRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Shuffle {
    Full,
    Block { records: u64 },
    Sequential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankPolicy {
    Drop,
    Pad,
}

fn shuffle_in_place(v: &mut [u64], rng: &mut SampleRng) {
    for i in (1..v.len()).rev() {
        let j = rng.int_in(0, i as i64) as usize;
        v.swap(i, j);
    }
}

/// The global permutation of `n` records for (seed, epoch).
pub fn permutation(n: u64, seed: u64, epoch: u64, shuffle: Shuffle) -> Vec<u64> {
    let mut rng = SampleRng::new(seed, epoch, 0, Purpose::Order);
    match shuffle {
        Shuffle::Sequential => (0..n).collect(),
        Shuffle::Full => {
            let mut v: Vec<u64> = (0..n).collect();
            shuffle_in_place(&mut v, &mut rng);
            v
        }
        Shuffle::Block { records } => {
            let b = records.max(1);
            let mut blocks: Vec<u64> = (0..n.div_ceil(b)).collect();
            shuffle_in_place(&mut blocks, &mut rng);
            let mut v = Vec::with_capacity(n as usize);
            for blk in blocks {
                let start = v.len();
                v.extend(blk * b..((blk + 1) * b).min(n));
                shuffle_in_place(&mut v[start..], &mut rng);
            }
            v
        }
    }
}

/// This rank's records of the epoch, in order.
pub fn rank_order(n: u64, seed: u64, epoch: u64, shuffle: Shuffle, rank: u64, world: u64, policy: RankPolicy) -> Vec<u64> {
    assert!(world >= 1 && rank < world, "rank {rank} of world {world}");
    let mut perm = permutation(n, seed, epoch, shuffle);
    let total = match policy {
        RankPolicy::Drop => n / world * world,
        RankPolicy::Pad => n.div_ceil(world) * world,
    } as usize;
    if perm.is_empty() {
        return perm;
    }
    let mut k = 0;
    while perm.len() < total {
        perm.push(perm[k]);
        k += 1;
    }
    perm.truncate(total);
    perm.into_iter().skip(rank as usize).step_by(world as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn permutations_are_permutations_and_deterministic() {
        for shuffle in [Shuffle::Full, Shuffle::Block { records: 7 }, Shuffle::Sequential] {
            let p = permutation(100, 3, 1, shuffle);
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, (0..100).collect::<Vec<_>>());
            assert_eq!(p, permutation(100, 3, 1, shuffle));
        }
        assert_ne!(permutation(100, 3, 1, Shuffle::Full), permutation(100, 3, 2, Shuffle::Full));
    }

    #[test]
    fn block_shuffle_keeps_blocks_together() {
        let p = permutation(40, 0, 0, Shuffle::Block { records: 10 });
        for chunk in p.chunks(10) {
            let blk = chunk[0] / 10;
            assert!(chunk.iter().all(|&i| i / 10 == blk), "{chunk:?}");
        }
    }

    #[test]
    fn ranks_are_disjoint_and_complete() {
        for n in [0u64, 1, 10, 101] {
            for world in [1u64, 2, 3, 8] {
                let parts: Vec<Vec<u64>> =
                    (0..world).map(|r| rank_order(n, 5, 0, Shuffle::Full, r, world, RankPolicy::Drop)).collect();
                let mut all = HashSet::new();
                for p in &parts {
                    assert_eq!(p.len() as u64, n / world);
                    for &i in p {
                        assert!(all.insert(i), "record {i} on two ranks");
                    }
                }
                let padded: Vec<Vec<u64>> =
                    (0..world).map(|r| rank_order(n, 5, 0, Shuffle::Full, r, world, RankPolicy::Pad)).collect();
                let union: HashSet<u64> = padded.iter().flatten().copied().collect();
                assert_eq!(union.len() as u64, n, "pad covers every record");
                for p in &padded {
                    assert_eq!(p.len() as u64, if n == 0 { 0 } else { n.div_ceil(world) });
                }
            }
        }
    }
}
