//! Surviving a shard that shrinks while it is mapped.
//!
//! Reading a page of a file mapping past the file's current end raises
//! SIGBUS, which kills the process (an NFS hiccup, a user re-copying a
//! dataset in place, a failing disk). Every shard mapping is registered here;
//! a process-wide SIGBUS handler that finds the faulting address inside a
//! registered mapping maps one anonymous zero page over the faulting page
//! (`MAP_FIXED`), counts the fault against that mapping and returns, so the
//! read completes with zeros. The reader then sees the count, checks the
//! file's new size, and fails the records that no longer fit with an error
//! naming the shard (`Shard::check_intact`); CRCs catch the rest. Faults
//! outside registered mappings go to the handler that was installed before
//! (Rust's own stack-overflow handler, or the default action), so genuine
//! bugs still crash as before.
//!
//! The handler only reads atomics and calls `mmap`, which is a plain system
//! call on Linux (it takes no user-space locks).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings that can be protected at once (shards open in this process).
const SLOTS: usize = 16384;

struct Slot {
    used: AtomicBool,
    /// First byte of the mapping; 0 while the slot is being (un)registered.
    start: AtomicUsize,
    len: AtomicUsize,
    faults: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot { used: AtomicBool::new(false), start: AtomicUsize::new(0), len: AtomicUsize::new(0), faults: AtomicU64::new(0) };
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The SIGBUS action in place before ours, chained for faults not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregisters on drop (drop it before unmapping).
pub struct MapGuard {
    slot: Option<usize>,
}

impl MapGuard {
    /// SIGBUS faults handled inside this mapping so far.
    pub fn faults(&self) -> u64 {
        self.slot.map_or(0, |s| TABLE[s].faults.load(Ordering::Acquire))
    }

    /// Whether the mapping is protected (false only when more than `SLOTS`
    /// mappings are open at once, or the handler could not be installed).
    pub fn is_protected(&self) -> bool {
        self.slot.is_some()
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            TABLE[s].start.store(0, Ordering::Release);
            TABLE[s].len.store(0, Ordering::Release);
            TABLE[s].used.store(false, Ordering::Release);
        }
    }
}

/// Registers `len` mapped bytes at `start` (installing the handler on
/// first use).
pub fn register(start: *const u8, len: usize) -> MapGuard {
    if len == 0 || !install() {
        return MapGuard { slot: None };
    }
    for (i, slot) in TABLE.iter().enumerate() {
        if slot.used.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.faults.store(0, Ordering::Release);
            slot.len.store(len, Ordering::Release);
            slot.start.store(start as usize, Ordering::Release);
            return MapGuard { slot: Some(i) };
        }
    }
    MapGuard { slot: None }
}

/// Installs the handler once; whether it is in place.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Release);
        }
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // has the SA_SIGINFO signature, and `previous` is written by the
        // kernel before it is stored.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
        }
        true
    })
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in TABLE.iter() {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= start + slot.len.load(Ordering::Acquire) {
            continue;
        }
        let page = addr & !(PAGE.load(Ordering::Acquire) - 1);
        // SAFETY: the page lies inside a live read-only shard mapping (it is
        // unregistered before being unmapped); replacing it with a private
        // zero page changes what later reads of it return, nothing else.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE.load(Ordering::Acquire),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            slot.faults.fetch_add(1, Ordering::AcqRel);
            return;
        }
        break;
    }
    // Not a shard page (or no zero page could be mapped): what would have
    // happened without us.
    match PREVIOUS.get() {
        Some(prev) if prev.sa_flags & libc::SA_SIGINFO != 0 && prev.sa_sigaction > 1 => {
            // SAFETY: the previous handler was installed with this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(sig, info, context);
        }
        Some(prev) if prev.sa_sigaction > 1 => {
            // SAFETY: as above, the one-argument form.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev.sa_sigaction) };
            f(sig);
        }
        _ => {
            // SAFETY: restoring the default action; returning re-executes the
            // faulting access, which then terminates the process with SIGBUS.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{Encoding, NO_LABEL};
    use super::super::reader::Shard;
    use super::super::writer::{write_shard, StoredRecord};

    /// 64 records of 64 KiB (4 MiB), record `i` filled with byte `i`.
    fn shard_file(dir: &std::path::Path) -> std::path::PathBuf {
        let records: Vec<StoredRecord> = (0..64u32)
            .map(|i| StoredRecord {
                stored: vec![i as u8 + 1; 256 * 256],
                raw_len: 256 * 256,
                label: NO_LABEL,
                width: 256,
                height: 256,
                channels: 1,
                encoding: Encoding::Raw,
                flags: 0,
            })
            .collect();
        let path = dir.join("s.srs");
        write_shard(&path, 0, &records).unwrap();
        path
    }

    /// Truncated to half while mapped: reading every record (checksums on
    /// and off) neither kills the process nor returns wrong bytes as good.
    #[test]
    fn a_shard_truncated_while_mapped_fails_its_lost_records_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = shard_file(dir.path());
        let shard = Shard::open(&path).unwrap();
        let was = shard.bytes().len() as u64;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(was / 2).unwrap();
        for verify in [true, false] {
            let (mut ok, mut lost) = (0, 0);
            for i in 0..shard.len() {
                let e = shard.entry(i);
                let past_end = e.offset + e.stored_len as u64 > was / 2;
                match shard.record(i, verify).and_then(|r| {
                    let sum: u64 = r.stored.iter().map(|&b| b as u64).sum();
                    shard.check_intact(i)?;
                    Ok(sum)
                }) {
                    Ok(sum) => {
                        assert!(!past_end, "record {i} past the new end read as good (verify {verify})");
                        assert_eq!(sum, (i + 1) * 256 * 256, "record {i}");
                        ok += 1;
                    }
                    Err(err) => {
                        assert!(past_end, "record {i} is inside the file, yet: {err}");
                        let text = err.to_string();
                        assert!(text.contains("s.srs") && text.contains("shrank"), "{text}");
                        lost += 1;
                    }
                }
            }
            assert!(ok > 20 && lost > 20, "{ok} read, {lost} lost (verify {verify})");
        }
        assert!(shard.faults() > 0);
        assert_eq!(shard.current_len(), was / 2);
    }

    /// A fault outside any shard mapping is not swallowed: a child process
    /// that reads past the end of an unregistered mapping still dies of SIGBUS.
    #[test]
    fn faults_elsewhere_still_kill() {
        if std::env::var_os("SRMAE_SIGBUS_CHILD").is_some() {
            let dir = tempfile::tempdir().unwrap();
            let path = shard_file(dir.path());
            let _protected = Shard::open(&path).unwrap(); // handler installed
            let other = dir.path().join("plain");
            std::fs::write(&other, vec![7u8; 1 << 20]).unwrap();
            let f = std::fs::File::open(&other).unwrap();
            // SAFETY: a read-only map of a file this test owns.
            let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
            std::fs::OpenOptions::new().write(true).open(&other).unwrap().set_len(0).unwrap();
            let v = std::hint::black_box(map[1 << 19]);
            println!("read {v}: not killed");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "format::sigbus::tests::faults_elsewhere_still_kill", "--nocapture"])
            .env("SRMAE_SIGBUS_CHILD", "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?}\n{}", out.status, String::from_utf8_lossy(&out.stdout));
    }
}
