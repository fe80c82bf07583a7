//! mimalloc's purge policy during training.
//!
//! A training step frees and re-allocates the same large tensors every step.
//! mimalloc returns freed memory to the kernel a second after it is freed
//! (its `purge_delay`), so each step page-faults its activations back in and the
//! kernel zeroes them: 8-10 % of a CPU fine-tuning step (`perf`, photos32,
//! task-clock 38.5-41.0 s -> 35.8-36.6 s for 16 steps). Training keeps freed
//! memory instead; the process's footprint is then its peak, which a training
//! step reaches every step anyway.

use std::os::raw::{c_int, c_long};

extern "C" {
    // mimalloc.h (v3, built and linked by the `mimalloc` crate); libmimalloc-sys does
    // not name this option.
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (default 1000 ms;
/// -1 never purges).
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Stop returning freed memory to the kernel for the rest of the process.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// The current purge delay in milliseconds (-1: never).
#[cfg(test)]
fn purge_delay_ms() -> i64 {
    // SAFETY: as above.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_is_purge_delay_and_training_disables_purging() {
        // mimalloc v3's default purge delay is 1000 ms: this pins the enum index.
        // (MIMALLOC_PURGE_DELAY in the environment would change the default.)
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
