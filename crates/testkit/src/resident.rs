//! The process's resident memory on Linux, for tests that bound what a call makes resident.
//! The resident set is the whole process's, so the tests of one binary that measure it take
//! turns with [`measuring`].

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Resident bytes of this process (`VmRSS` in `/proc/self/status`).
///
/// # Panics
///
/// If `/proc/self/status` cannot be read or has no `VmRSS` line.
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Waits for, then holds, the turn of this test binary's tests that measure the resident set
/// (one lock per binary; a test that failed while holding it does not stop the others).
pub fn measuring() -> MutexGuard<'static, ()> {
    static MEASURING: Mutex<()> = Mutex::new(());
    MEASURING.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc and needs real page residency")]
    fn rss_bytes_grows_when_pages_are_written() {
        let _turn = measuring();
        let before = rss_bytes();
        let mut pages = vec![0u8; 64 << 20];
        for i in (0..pages.len()).step_by(4096) {
            pages[i] = 1;
        }
        let after = rss_bytes();
        std::hint::black_box(&pages);
        assert!(after >= before + (32 << 20), "{before} -> {after}");
    }
}
