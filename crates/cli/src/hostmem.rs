//! This process's and this host's memory use, from `/proc` and `/sys`.

use std::fs;

use serde::Serialize;

/// A sample of memory use. Values the kernel does not report are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MemorySample {
    /// Resident set size of this process (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Resident anonymous memory (`RssAnon`), KiB.
    pub rss_anon_kib: u64,
    /// Resident shared memory: memfds, shared anonymous memory (`RssShmem`), KiB.
    pub rss_shmem_kib: u64,
    /// Explicit huge pages mapped by this process (`HugetlbPages`), KiB.
    pub hugetlb_kib: u64,
    /// Transparent huge pages mapped by this process, KiB: the sum of `AnonHugePages`,
    /// `ShmemPmdMapped` and `FilePmdMapped` in `/proc/self/smaps_rollup`; what the kernel gave,
    /// not what was asked for.
    pub thp_kib: u64,
    /// Address space of this process (`VmSize`), KiB.
    pub vm_size_kib: u64,
    /// The host's commit charge (`Committed_AS` in `/proc/meminfo`), KiB: every process's.
    pub committed_kib: u64,
    /// Free explicit huge pages of the host (all sizes), KiB.
    pub huge_pages_free_kib: u64,
}

/// The value of `key:` in a `/proc` file of `key: value kB` lines.
#[must_use]
pub fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The huge page pools of the host: `(page size in KiB, directory)` of each
/// `/sys/kernel/mm/hugepages/hugepages-<size>kB`, by size; a size that is not decimal digits
/// or whose bytes do not fit in 64 bits is left out (so `size * 1024` cannot overflow).
#[must_use]
pub fn huge_page_dirs() -> Vec<(u64, std::path::PathBuf)> {
    huge_page_dirs_in(std::path::Path::new("/sys/kernel/mm/hugepages"))
}

/// [`huge_page_dirs`] of a directory laid out as `/sys/kernel/mm/hugepages`.
fn huge_page_dirs_in(root: &std::path::Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut out: Vec<(u64, std::path::PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
            // Digits only (`parse` takes a sign), and a size in bytes that fits in 64 bits: no
            // other name is a pool the kernel makes.
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let kib: u64 = digits.parse().ok()?;
            kib.checked_mul(1024)?;
            Some((kib, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// A number read from a one-value file (`/proc/sys/...`, `/sys/...`): `None` if the file
/// is absent, cannot be read or holds no number.
///
/// # Errors
/// [`Error::HostFileTooLarge`](crate::Error::HostFileTooLarge) if the file holds more than
/// [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES).
pub fn read_number(path: impl AsRef<std::path::Path>) -> crate::Result<Option<u64>> {
    Ok(host_text(path.as_ref())?.trim().parse().ok())
}

/// The text of a `/proc` or `/sys` file of at most
/// [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES), empty if it is absent or
/// cannot be read.
pub(crate) fn host_text(path: &std::path::Path) -> crate::Result<String> {
    Ok(crate::input::read_host_file(path, crate::input::MAX_HOST_FILE_BYTES)?.unwrap_or_default())
}

/// This process's resident memory now, explicit huge pages included (`VmRSS` and
/// `HugetlbPages` of `/proc/self/status`), KiB: what [`sample`] says of it, without the page
/// table walk of `/proc/self/smaps_rollup` (about 15 ms a GiB resident in 4 KiB pages), so
/// it costs the same however much is resident and can be read beside a step being timed.
///
/// # Errors
/// [`Error::HostFileTooLarge`](crate::Error::HostFileTooLarge) if `/proc/self/status` holds
/// more than [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES).
pub fn resident_kib() -> crate::Result<u64> {
    Ok(resident_in(&host_text("/proc/self/status".as_ref())?))
}

/// `VmRSS` and `HugetlbPages` of a `/proc/self/status` text added up, KiB (0 for either the
/// text lacks).
fn resident_in(status: &str) -> u64 {
    let get = |key| field_kib(status, key).unwrap_or(0);
    get("VmRSS").saturating_add(get("HugetlbPages"))
}

/// Samples this process's and the host's memory use now.
///
/// # Errors
/// [`Error::HostFileTooLarge`](crate::Error::HostFileTooLarge) if a file read holds more
/// than [`MAX_HOST_FILE_BYTES`](crate::input::MAX_HOST_FILE_BYTES).
pub fn sample() -> crate::Result<MemorySample> {
    let status = host_text("/proc/self/status".as_ref())?;
    let meminfo = host_text("/proc/meminfo".as_ref())?;
    let get = |key| field_kib(&status, key).unwrap_or(0);
    let rollup = host_text("/proc/self/smaps_rollup".as_ref())?;
    let thp_kib = ["AnonHugePages", "ShmemPmdMapped", "FilePmdMapped"]
        .iter()
        .map(|key| field_kib(&rollup, key).unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    let mut huge_pages_free_kib = 0u64;
    for (kib, dir) in huge_page_dirs() {
        let free = read_number(dir.join("free_hugepages"))?.unwrap_or(0);
        huge_pages_free_kib = huge_pages_free_kib.saturating_add(kib.saturating_mul(free));
    }
    Ok(MemorySample {
        rss_kib: get("VmRSS"),
        rss_anon_kib: get("RssAnon"),
        rss_shmem_kib: get("RssShmem"),
        hugetlb_kib: get("HugetlbPages"),
        thp_kib,
        vm_size_kib: get("VmSize"),
        committed_kib: field_kib(&meminfo, "Committed_AS").unwrap_or(0),
        huge_pages_free_kib,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh empty directory for a test, under the system's temporary directory.
    pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memvisor-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn huge_page_dirs_in_odd_sysfs_keeps_pools_that_fit() {
        let root = scratch_dir("hugepages");
        for name in [
            "hugepages-2048kB",
            "hugepages-1048576kB",
            // Past 64 bits in bytes, not a number, not a pool.
            "hugepages-18014398509481984kB",
            "hugepages-kB",
            "hugepages-+64kB",
            "hugepages-64KB",
            "other",
        ] {
            fs::create_dir(root.join(name)).unwrap();
        }
        let sizes: Vec<u64> = huge_page_dirs_in(&root).iter().map(|p| p.0).collect();
        assert_eq!(sizes, [2048, 1_048_576]);
        assert!(huge_page_dirs_in(&root.join("missing")).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn read_number_of_an_oversized_file_is_refused_by_name() {
        let dir = scratch_dir("oversized-number");
        let big = dir.join("nr_hugepages");
        let limit = usize::try_from(crate::input::MAX_HOST_FILE_BYTES).unwrap();
        // A number padded with white space to one byte past the limit.
        fs::write(&big, format!("7{}", " ".repeat(limit))).unwrap();
        let err = read_number(&big).unwrap_err();
        assert!(
            matches!(&err, crate::Error::HostFileTooLarge { path, limit: l }
                if path == &big.to_string_lossy() && *l == crate::input::MAX_HOST_FILE_BYTES),
            "{err:?}"
        );
        assert!(err.to_string().contains("nr_hugepages"), "{err}");
        assert_eq!(err.exit_code(), 1);
        // At the limit it is read; absent or a folder, it has no number, as before.
        fs::write(&big, format!("7{}", " ".repeat(limit - 1))).unwrap();
        assert_eq!(read_number(&big).unwrap(), Some(7));
        assert_eq!(read_number(dir.join("missing")).unwrap(), None);
        assert_eq!(read_number(&dir).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn field_kib_reads_value() {
        let text = "VmSize:\t  1234 kB\nVmRSS:\t 56 kB\n";
        assert_eq!(field_kib(text, "VmRSS"), Some(56));
        assert_eq!(field_kib(text, "VmSwap"), None);
        assert_eq!(field_kib(text, "Vm"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn resident_kib_reads_this_process() {
        // The process's memory moves between two readings (a sample allocates, code pages
        // fault in): only what holds at any instant is checked.
        let resident = resident_kib().unwrap();
        assert!(resident > 0);
        assert!(resident <= sample().unwrap().vm_size_kib, "{resident}");
    }

    #[test]
    fn resident_memory_of_huge_counters_does_not_wrap() {
        // The counters are the host's text: any whole number it writes is read.
        let status = "VmRSS:\t18446744073709551615 kB\nHugetlbPages:\t2 kB\n";
        assert_eq!(resident_in(status), u64::MAX);
        assert_eq!(resident_in("HugetlbPages: 2048 kB\n"), 2048);
    }

    #[test]
    fn sample_reports_own_rss() {
        let s = sample().unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.vm_size_kib >= s.rss_kib);
    }
}
