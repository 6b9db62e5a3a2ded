//! Host facts on systems other than Linux (macOS, FreeBSD, Windows): memfds, hugetlbfs, NUMA
//! binding, huge pages, `MADV_DONTFORK` and discarding are Linux's, so those features are
//! missing here and their host facts answer "none". Backing code asks [`has`] first and refuses
//! a missing feature with [`Error::Unsupported`](crate::Error::Unsupported) before anything is
//! made; the calls below only answer in case it did not.

use std::ffi::CStr;
use std::fs::File;
use std::io;

use super::Feature;
use crate::spec::HugePageSize;

/// Whether this host has `feature`: none of the Linux-only ones; shared anonymous memory, file
/// mappings and vm-memory mappings over raw pointers on Unix systems.
pub(crate) fn has(feature: Feature) -> bool {
    match feature {
        Feature::SharedAnonymous | Feature::FileMapping | Feature::VmMemoryMapping => cfg!(unix),
        Feature::Memfd
        | Feature::Hugetlbfs
        | Feature::ExplicitHugePages
        | Feature::TransparentHugePages
        | Feature::NumaBinding
        | Feature::DontFork
        | Feature::Discard => false,
    }
}

/// Linux's `HUGETLBFS_MAGIC`, which no file system here has.
pub(crate) const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The error of a Linux-only call.
fn only_on_linux(call: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{call} is only on Linux"),
    )
}

/// Memfds are Linux's: always an error here.
pub(crate) fn memfd(_: &CStr, _: Option<HugePageSize>) -> io::Result<File> {
    Err(only_on_linux("memfd_create"))
}

/// Memfd seals are Linux's: always an error here.
pub(crate) fn seal_size(_: &File) -> io::Result<()> {
    Err(only_on_linux("memfd seals"))
}

/// The file system checks for hugetlbfs are Linux's: always an error here.
pub(crate) fn fs_info(_: &File) -> io::Result<(i64, u64)> {
    Err(only_on_linux("fstatfs for hugetlbfs"))
}

/// Hugetlbfs is Linux's: no file here is on it.
pub(crate) fn hugetlbfs_page(_: &File) -> io::Result<Option<u64>> {
    Ok(None)
}

/// NUMA nodes are read from Linux's sysfs: none here.
pub(crate) fn node_exists(_: u32) -> bool {
    false
}

/// The online NUMA nodes: none known here.
pub(crate) fn online_nodes() -> String {
    "none (NUMA binding is only on Linux)".to_owned()
}

/// Whether this host has a pool of `size` huge pages: explicit huge pages are Linux's, so this
/// cannot be told here ([`has`] refuses them first).
pub(crate) fn huge_pool(_: HugePageSize) -> (Option<bool>, std::path::PathBuf) {
    (None, std::path::PathBuf::new())
}

/// Free explicit huge pages: none here.
pub(crate) fn free_huge_pages(_: HugePageSize) -> u64 {
    0
}

/// Sysfs settings are Linux's: none here.
pub(crate) fn sysfs_choice(_: &str) -> Option<String> {
    None
}
