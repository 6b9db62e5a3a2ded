//! The process's resident memory on Linux, for tests that bound what a call makes resident.

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
