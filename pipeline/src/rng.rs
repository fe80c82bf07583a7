//! Counter-based randomness: every random choice of a sample derives from
//! (seed, epoch, sample index, purpose), never from a thread's stream, so
//! batches are identical whatever the thread count and after a resume.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; each purpose gets independent numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The epoch's sample order.
    Order = 1,
    /// Crop and flip of one sample.
    Augment = 2,
    /// Patch selection of one sample.
    Mask = 3,
    /// Choice of a substitute for a corrupt record.
    Substitute = 4,
    /// Random erasing of one sample.
    Erase = 5,
    /// Mixup / cutmix of one batch (index: the batch's global position).
    Mix = 6,
    /// RandAugment of one sample.
    RandAugment = 7,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small random stream for one (seed, epoch, index, purpose).
pub struct SampleRng(ChaCha8Rng);

impl SampleRng {
    pub fn new(seed: u64, epoch: u64, index: u64, purpose: Purpose) -> SampleRng {
        let mut key = [0u8; 32];
        let words = [
            splitmix64(seed),
            splitmix64(seed ^ splitmix64(epoch)),
            splitmix64(purpose as u64 ^ 0x5352_4d41_45),
            splitmix64(epoch.wrapping_add(purpose as u64)),
        ];
        for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(index);
        SampleRng(rng)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [lo, hi] (inclusive), without modulo bias.
    pub fn int_in(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        let span = (hi - lo) as u64 + 1;
        // Lemire's multiply-shift with rejection.
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (span as u128);
            let low = m as u64;
            if low >= span.wrapping_neg() % span {
                return lo + (m >> 64) as i64;
            }
        }
    }

    /// True with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// `n` uniform f32 values in [0, 1) (MAE's `torch.rand(L)` noise).
    pub fn fill_uniform_f32(&mut self, out: &mut [f32]) {
        for v in out {
            *v = (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
        }
    }
}

/// So that `rand_distr`'s distributions (Beta, normal) draw from the same stream.
impl rand_core::RngCore for SampleRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| 0).scan(SampleRng::new(1, 2, 3, Purpose::Mask), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).map(|_| 0).scan(SampleRng::new(1, 2, 3, Purpose::Mask), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        let mut others = [
            SampleRng::new(1, 2, 4, Purpose::Mask),
            SampleRng::new(1, 3, 3, Purpose::Mask),
            SampleRng::new(2, 2, 3, Purpose::Mask),
            SampleRng::new(1, 2, 3, Purpose::Augment),
        ];
        for o in &mut others {
            assert_ne!(o.next_u64(), a[0]);
        }
    }

    #[test]
    fn int_in_covers_range_uniformly() {
        let mut r = SampleRng::new(0, 0, 0, Purpose::Augment);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[(r.int_in(10, 14) - 10) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
