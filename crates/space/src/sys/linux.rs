//! Linux system calls: mappings, memfds, hugetlbfs checks, NUMA policy, advice and populate.
//!
//! Everything here works on raw ranges; the callers in `memory.rs` own the ranges and say why
//! each call is sound.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::spec::{HugePageSize, NumaPolicy, Protection};

/// `HUGETLBFS_MAGIC` from `include/uapi/linux/magic.h`.
pub(crate) const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `MAP_HUGE_SHIFT` / `MFD_HUGE_SHIFT`: where the log2 page size goes in the flags.
const HUGE_SHIFT: i32 = 26;
const MFD_CLOEXEC: libc::c_uint = 1;
const MFD_HUGETLB: libc::c_uint = 4;
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;
const MPOL_INTERLEAVE: libc::c_int = 3;
const MPOL_MF_STRICT: libc::c_uint = 1;
const MPOL_MF_MOVE: libc::c_uint = 2;
const MADV_POPULATE_READ: libc::c_int = 22;
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// What a mapping maps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// Private anonymous memory.
    PrivateAnon,
    /// Shared anonymous memory.
    SharedAnon,
    /// A file, shared, from this offset.
    File(&'a File, u64),
}

/// The `PROT_*` bits of a protection.
pub(crate) fn prot_bits(p: Protection) -> libc::c_int {
    let mut bits = libc::PROT_NONE;
    if p.readable() {
        bits |= libc::PROT_READ;
    }
    if p.writable() {
        bits |= libc::PROT_WRITE;
    }
    if p.executable() {
        bits |= libc::PROT_EXEC;
    }
    bits
}

/// The protection of `PROT_*` bits (other bits ignored).
pub(crate) fn protection_of(bits: libc::c_int) -> Protection {
    let mut p = Protection::NONE;
    if bits & libc::PROT_READ != 0 {
        p = p | Protection::READ;
    }
    if bits & libc::PROT_WRITE != 0 {
        p = p | Protection::WRITE;
    }
    if bits & libc::PROT_EXEC != 0 {
        p = p | Protection::EXEC;
    }
    p
}

fn huge_flag(size: HugePageSize) -> libc::c_int {
    // The shift is 21 or 30, so the value fits an i32 with room to spare.
    i32::try_from(size.shift()).unwrap_or(0) << HUGE_SHIFT
}

/// Reserves `len` bytes of address space aligned to `align` (a power of two, at least the
/// page size): inaccessible, uncharged, to be replaced by [`map_fixed`].
pub(crate) fn reserve(len: usize, align: usize) -> io::Result<NonNull<u8>> {
    let total = len
        .checked_add(align)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks touches no existing
    // memory.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(align);
    let head = aligned - start;
    let tail = total - head - len;
    if head > 0 {
        // SAFETY: the head of the fresh mapping above, page aligned, unused.
        unsafe { libc::munmap(raw, head) };
    }
    if tail > 0 {
        // SAFETY: the tail of the fresh mapping above, page aligned (len and align are page
        // multiples), unused.
        unsafe { libc::munmap((aligned + len) as *mut libc::c_void, tail) };
    }
    NonNull::new(aligned as *mut u8).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// Maps `source` over `addr..addr + len` (`MAP_FIXED`), with explicit huge pages of `huge`
/// if given.
///
/// # Safety
/// The range is part of a mapping the caller owns, aligned to the page size in use, and
/// nothing refers to its present contents.
pub(crate) unsafe fn map_fixed(
    addr: NonNull<u8>,
    len: usize,
    prot: Protection,
    source: Source<'_>,
    huge: Option<HugePageSize>,
) -> io::Result<()> {
    let mut flags = libc::MAP_FIXED;
    let (fd, offset) = match source {
        Source::PrivateAnon => {
            flags |= libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            (-1, 0)
        }
        Source::SharedAnon => {
            flags |= libc::MAP_SHARED | libc::MAP_ANONYMOUS;
            (-1, 0)
        }
        Source::File(file, offset) => {
            flags |= libc::MAP_SHARED;
            let offset = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            (file.as_raw_fd(), offset)
        }
    };
    if let Some(size) = huge {
        // For files (memfd or hugetlbfs) the page size comes from the file itself.
        if fd == -1 {
            flags |= libc::MAP_HUGETLB | huge_flag(size);
        }
    }
    // SAFETY: MAP_FIXED replaces exactly the caller's range, which the caller owns and which
    // nothing refers to.
    let raw = unsafe {
        libc::mmap(
            addr.as_ptr().cast(),
            len,
            prot_bits(prot),
            flags,
            fd,
            offset,
        )
    };
    if raw == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Unmaps `addr..addr + len`.
///
/// # Safety
/// The caller owns the range and nothing refers to it any more.
pub(crate) unsafe fn unmap(addr: NonNull<u8>, len: usize) {
    // SAFETY: the caller hands the range over.
    let ret = unsafe { libc::munmap(addr.as_ptr().cast(), len) };
    debug_assert_eq!(ret, 0, "munmap failed");
}

/// A new memfd named `name`, with explicit huge pages of `huge` if given.
pub(crate) fn memfd(name: &CStr, huge: Option<HugePageSize>) -> io::Result<File> {
    let mut flags = MFD_CLOEXEC;
    if let Some(size) = huge {
        flags |= MFD_HUGETLB | (size.shift() << HUGE_SHIFT);
    }
    // SAFETY: `name` is a valid C string; the call has no other preconditions.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
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

/// Applies a NUMA memory policy to `addr..addr + len` (`mbind`). The nodes must exist.
///
/// # Safety
/// The range is a mapping the caller owns. With [`NumaPolicy::Bind`] pages already present
/// are migrated, which keeps their contents.
pub(crate) unsafe fn mbind(
    addr: NonNull<u8>,
    len: usize,
    policy: NumaPolicy,
    nodes: &[u32],
) -> io::Result<()> {
    let bits = usize::BITS as usize;
    let max = nodes.iter().copied().max().unwrap_or(0) as usize;
    let mut mask = vec![0 as libc::c_ulong; max / bits + 1];
    for &node in nodes {
        let node = node as usize;
        mask[node / bits] |= 1 << (node % bits);
    }
    let (mode, flags) = match policy {
        NumaPolicy::Preferred => (MPOL_PREFERRED, 0),
        NumaPolicy::Bind => (MPOL_BIND, MPOL_MF_STRICT | MPOL_MF_MOVE),
        NumaPolicy::Interleave => (MPOL_INTERLEAVE, 0),
    };
    // The kernel reads `maxnode - 1` bits.
    let maxnode = mask.len() * bits + 1;
    // SAFETY: the range is the caller's mapping; `mask` holds `maxnode - 1` readable bits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr.as_ptr(),
            len,
            mode,
            mask.as_ptr(),
            maxnode,
            flags,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Advice for a mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Advice {
    /// `MADV_HUGEPAGE`.
    HugePage,
    /// `MADV_DONTFORK`.
    DontFork,
}

/// Gives `advice` for `addr..addr + len`.
///
/// # Safety
/// The range is a mapping the caller owns; neither advice changes its contents.
pub(crate) unsafe fn advise(addr: NonNull<u8>, len: usize, advice: Advice) -> io::Result<()> {
    let advice = match advice {
        Advice::HugePage => libc::MADV_HUGEPAGE,
        Advice::DontFork => libc::MADV_DONTFORK,
    };
    // SAFETY: the caller's range; the advice keeps contents.
    if unsafe { libc::madvise(addr.as_ptr().cast(), len, advice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How pages are given back to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Discard {
    /// `MADV_DONTNEED`: private memory; later reads see zeros.
    DontNeed,
    /// `MADV_REMOVE`: shared memory (shmem, hugetlb); frees the backing pages.
    Remove,
}

/// Gives the pages of `addr..addr + len` back to the host; later reads see zeros.
///
/// # Safety
/// The range is a mapping the caller owns, aligned to its page size; nothing may rely on its
/// contents (all access to it is volatile, as to guest memory).
pub(crate) unsafe fn discard(addr: NonNull<u8>, len: usize, how: Discard) -> io::Result<()> {
    let advice = match how {
        Discard::DontNeed => libc::MADV_DONTNEED,
        Discard::Remove => libc::MADV_REMOVE,
    };
    // SAFETY: the caller's range, whose contents nothing relies on.
    if unsafe { libc::madvise(addr.as_ptr().cast(), len, advice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Frees the blocks of `file` in `offset..offset + len`, keeping its size
/// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`); mappings of them read zeros.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let overflow = || io::Error::from_raw_os_error(libc::EOVERFLOW);
    let offset = libc::off_t::try_from(offset).map_err(|_| overflow())?;
    let len = libc::off_t::try_from(len).map_err(|_| overflow())?;
    // SAFETY: the descriptor is open; the call touches no memory of ours.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `addr..addr + len` resident (`MADV_POPULATE_WRITE`, or `MADV_POPULATE_READ` when not
/// `write`). Contents are kept.
///
/// # Safety
/// The range is a mapping the caller owns, writable if `write`.
pub(crate) unsafe fn populate(addr: usize, len: usize, write: bool) -> io::Result<()> {
    let advice = if write {
        MADV_POPULATE_WRITE
    } else {
        MADV_POPULATE_READ
    };
    // SAFETY: the caller's range; populating keeps contents.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// Free huge pages of `size` on this host (0 if unknown).
pub(crate) fn free_huge_pages(size: HugePageSize) -> u64 {
    let kib = size.bytes() >> 10;
    std::fs::read_to_string(format!(
        "/sys/kernel/mm/hugepages/hugepages-{kib}kB/free_hugepages"
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// Where the host's transparent huge page setting for private anonymous memory is read.
pub(crate) const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
/// Where the host's transparent huge page setting for shared memory (memfd, shared anonymous
/// memory) is read.
pub(crate) const THP_SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The selected value of a sysfs choice file (`always [madvise] never` gives `madvise`), or
/// `None` if it cannot be read (a kernel without transparent huge pages).
pub(crate) fn sysfs_choice(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    selected_choice(&text).map(str::to_owned)
}

/// The bracketed word of a sysfs choice list.
pub(crate) fn selected_choice(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}
