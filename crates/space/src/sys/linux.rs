//! Host facts from Linux: memfd creation, file system checks (hugetlbfs), NUMA nodes, huge page
//! pools and transparent huge page settings in sysfs. Every mapping, advice, NUMA binding and
//! prefault goes through `memvisor-vmem`'s reservations. Linux has every [`Feature`].

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::Feature;
use crate::spec::HugePageSize;

/// Whether this host has `feature`: Linux has them all.
pub(crate) fn has(_: Feature) -> bool {
    true
}

/// `HUGETLBFS_MAGIC` from `include/uapi/linux/magic.h`.
pub(crate) const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `MFD_HUGE_SHIFT`: where the log2 page size goes in the flags.
const HUGE_SHIFT: u32 = 26;
const MFD_CLOEXEC: libc::c_uint = 1;
const MFD_HUGETLB: libc::c_uint = 4;
const MFD_ALLOW_SEALING: libc::c_uint = 2;

/// A new memfd named `name`, with explicit huge pages of `huge` if given, that can be sealed
/// ([`seal_size`]). A kernel that cannot seal memfds of huge pages (before Linux 4.16) refuses
/// the sealing flag for them; the memfd is then made without it.
pub(crate) fn memfd(name: &CStr, huge: Option<HugePageSize>) -> io::Result<File> {
    let mut flags = MFD_CLOEXEC;
    if let Some(size) = huge {
        flags |= MFD_HUGETLB | (size.shift() << HUGE_SHIFT);
    }
    let create = |flags| {
        // SAFETY: `name` is a valid C string; the call has no other preconditions.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    };
    match create(flags | MFD_ALLOW_SEALING) {
        Err(e) if huge.is_some() && e.raw_os_error() == Some(libc::EINVAL) => create(flags),
        other => other,
    }
}

/// Seals a memfd's size and its seals (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so that no
/// process it is handed to can truncate it under the guest (an access past the end of a shared
/// file mapping raises `SIGBUS` in every process that maps it) or seal it against writes
/// (which would make discarding its pages fail). A memfd made without the sealing flag (see
/// [`memfd`]) is left as it is.
pub(crate) fn seal_size(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor; F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    if seals & libc::F_SEAL_SEAL != 0 {
        return Ok(());
    }
    let add = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: `fd` is an open descriptor; F_ADD_SEALS takes an int of seal bits.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, add) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The file system type and block size (the page size on hugetlbfs) of an open file.
pub(crate) fn fs_info(file: &File) -> io::Result<(i64, u64)> {
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `buf` is a writable statfs; the descriptor is open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), buf.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded and filled the structure (it was zeroed before anyway).
    let st = unsafe { buf.assume_init() };
    // `f_type` is an `i64` on some targets and narrower on others.
    #[allow(clippy::useless_conversion)]
    let magic = i64::from(st.f_type);
    Ok((magic, u64::try_from(st.f_bsize).unwrap_or(0)))
}

/// The huge page size of the hugetlbfs mount holding `file`, or `None` when the file is on
/// another file system.
pub(crate) fn hugetlbfs_page(file: &File) -> io::Result<Option<u64>> {
    let (magic, page) = fs_info(file)?;
    Ok((magic == HUGETLBFS_MAGIC).then_some(page))
}

/// Whether NUMA node `node` exists on this host.
pub(crate) fn node_exists(node: u32) -> bool {
    Path::new(&format!("/sys/devices/system/node/node{node}")).exists()
}

/// The online NUMA nodes as the kernel lists them (`0`, `0-3`, ...).
pub(crate) fn online_nodes() -> String {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Where sysfs lists the kernel's memory management settings; its `hugepages` directory holds
/// one `hugepages-<N>kB` directory per huge page size the host has a pool for.
const SYSFS_MM: &str = "/sys/kernel/mm";

#[cfg(test)]
thread_local! {
    /// A directory that stands for [`SYSFS_MM`] in this thread's unit tests.
    pub(crate) static FAKE_SYSFS_MM: std::cell::RefCell<Option<std::path::PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

fn sysfs_mm() -> std::path::PathBuf {
    #[cfg(test)]
    if let Some(fake) = FAKE_SYSFS_MM.with(|f| f.borrow().clone()) {
        return fake;
    }
    std::path::PathBuf::from(SYSFS_MM)
}

/// Whether this host has a pool of `size` huge pages: `Some(false)` with the pool's sysfs
/// directory when the kernel lists its pools (`/sys/kernel/mm/hugepages`, absent altogether on
/// a kernel without hugetlb) and this size is not among them, `Some(true)` when it is, `None`
/// when sysfs cannot tell (not mounted). Without a pool the kernel refuses `MAP_HUGETLB` and
/// `MFD_HUGETLB` of that size with `EINVAL`, which says nothing of the cause; this is asked
/// first instead.
pub(crate) fn huge_pool(size: HugePageSize) -> (Option<bool>, std::path::PathBuf) {
    huge_pool_in(&sysfs_mm(), size)
}

/// The sysfs directory of the pool of `size` huge pages, with `mm` standing for
/// `/sys/kernel/mm`.
fn pool_dir(mm: &Path, size: HugePageSize) -> std::path::PathBuf {
    mm.join("hugepages")
        .join(format!("hugepages-{}kB", size.bytes() >> 10))
}

/// [`huge_pool`] with `mm` standing for `/sys/kernel/mm`.
fn huge_pool_in(mm: &Path, size: HugePageSize) -> (Option<bool>, std::path::PathBuf) {
    let pool = pool_dir(mm, size);
    if !mm.is_dir() {
        return (None, pool);
    }
    (Some(pool.is_dir()), pool)
}

/// Free huge pages of `size` on this host (0 if unknown).
pub(crate) fn free_huge_pages(size: HugePageSize) -> u64 {
    std::fs::read_to_string(pool_dir(&sysfs_mm(), size).join("free_hugepages"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The selected value of a sysfs choice file (`always [madvise] never` gives `madvise`), or
/// `None` if it cannot be read (a kernel without transparent huge pages).
pub(crate) fn sysfs_choice(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    selected_choice(&text).map(str::to_owned)
}

/// The bracketed word of a sysfs choice list.
fn selected_choice(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_choice_reads_bracketed_word() {
        assert_eq!(
            selected_choice("always within_size advise [never] deny force\n"),
            Some("never")
        );
        assert_eq!(selected_choice("always [madvise] never"), Some("madvise"));
        assert_eq!(selected_choice("always madvise never"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads directories standing for sysfs")]
    fn huge_pool_is_missing_only_when_sysfs_lists_pools_without_it() {
        let root = std::env::temp_dir().join(format!("memvisor-space-mm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mm = root.join("mm");
        // No sysfs at all: nothing can be said.
        let (known, path) = huge_pool_in(&mm, HugePageSize::Size1G);
        assert_eq!(known, None);
        assert_eq!(path, mm.join("hugepages/hugepages-1048576kB"));
        // A kernel without hugetlb: no pool of any size.
        std::fs::create_dir_all(&mm).unwrap();
        for size in [HugePageSize::Size2M, HugePageSize::Size1G] {
            assert_eq!(huge_pool_in(&mm, size).0, Some(false), "{size}");
        }
        // A host with 2 MiB pages only.
        std::fs::create_dir_all(mm.join("hugepages/hugepages-2048kB")).unwrap();
        assert_eq!(huge_pool_in(&mm, HugePageSize::Size2M).0, Some(true));
        assert_eq!(huge_pool_in(&mm, HugePageSize::Size1G).0, Some(false));
        std::fs::remove_dir_all(&root).unwrap();
        // This host's own answer agrees with its sysfs.
        for size in [HugePageSize::Size2M, HugePageSize::Size1G] {
            let (known, path) = huge_pool(size);
            if Path::new(SYSFS_MM).is_dir() {
                assert_eq!(known, Some(path.is_dir()), "{size}");
            }
        }
    }
}
