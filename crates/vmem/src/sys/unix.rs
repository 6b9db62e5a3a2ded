//! Unix: Linux fully; macOS and FreeBSD with what they offer.
//!
//! A reservation is one private anonymous mapping.
//! - [`CommitMode::Protected`]: reserved pages are `PROT_NONE`, which the kernel does not charge
//!   against the commit limit; committing is `mprotect(PROT_READ | PROT_WRITE)`, which charges;
//!   decommitting maps fresh `PROT_NONE` pages over the range with `MAP_FIXED`, which frees the
//!   pages and returns the charge in one call.
//! - [`CommitMode::Sparse`]: the whole reservation is mapped read-write with `MAP_NORESERVE` once,
//!   so committing is bookkeeping only and never splits the mapping; decommitting is
//!   `MADV_DONTNEED` on Linux (the pages read as zero afterwards) and a fresh `MAP_FIXED` mapping
//!   elsewhere.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use super::{Populated, SysAdvice, SysError};
use crate::error::OsError;
use crate::reservation::{CommitMode, HugePageAdvice, Protection};

/// `MADV_GUARD_INSTALL` of Linux 6.13 and later (`include/uapi/asm-generic/mman-common.h`).
#[cfg(target_os = "linux")]
const MADV_GUARD_INSTALL: libc::c_int = 102;
/// `MADV_GUARD_REMOVE` of Linux 6.13 and later.
#[cfg(target_os = "linux")]
const MADV_GUARD_REMOVE: libc::c_int = 103;

// Files: glibc gives a 32-bit process a 32-bit `off_t` under the plain names, so `fstat`
// refuses a file of 2 GiB or more (`EOVERFLOW`), `fstatfs` a file system of 2^32 blocks or
// more, and `mmap` cannot take a file offset of 2 GiB or more. Its `*64` calls take 64-bit
// sizes and offsets, and are the plain ones in a 64-bit process. Other C libraries have a
// 64-bit `off_t` on every architecture.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
use libc::{fstat, mmap as mmap_file, off_t, stat};
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use libc::{
    fstat64 as fstat, fstatfs64 as fstatfs, mmap64 as mmap_file, off64_t as off_t, stat64 as stat,
    statfs64 as statfs,
};
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(target_env = "gnu")
))]
use libc::{fstatfs, statfs};

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
const MAP_NORESERVE: libc::c_int = libc::MAP_NORESERVE;
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
const MAP_NORESERVE: libc::c_int = 0;

fn last_error() -> SysError {
    SysError::Os(OsError::from_raw(errno()))
}

fn errno() -> i32 {
    #[cfg(feature = "std")]
    {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
    #[cfg(not(feature = "std"))]
    {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
        unsafe {
            *libc::__errno_location()
        }
        #[cfg(target_vendor = "apple")]
        // SAFETY: `__error` returns a valid pointer to this thread's errno.
        unsafe {
            *libc::__error()
        }
        #[cfg(target_os = "freebsd")]
        // SAFETY: `__error` returns a valid pointer to this thread's errno.
        unsafe {
            *libc::__error()
        }
    }
}

fn check(ret: libc::c_int) -> Result<(), SysError> {
    if ret == 0 { Ok(()) } else { Err(last_error()) }
}

/// The page size, from `sysconf(_SC_PAGESIZE)`.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// The granularity of reservation addresses: the page size on Unix.
pub(crate) fn allocation_granularity() -> usize {
    page_size()
}

fn base_protection(mode: CommitMode) -> libc::c_int {
    match mode {
        CommitMode::Protected => libc::PROT_NONE,
        CommitMode::Sparse => libc::PROT_READ | libc::PROT_WRITE,
    }
}

fn base_flags(mode: CommitMode) -> libc::c_int {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    match mode {
        // PROT_NONE private mappings are not charged; leaving out MAP_NORESERVE makes the
        // later mprotect to read-write charge the committed pages, as a commit should.
        CommitMode::Protected => flags,
        CommitMode::Sparse => flags | MAP_NORESERVE,
    }
}

/// Reserves `len` bytes aligned to `align` (a power of two, at least the page size).
pub(crate) fn reserve(len: usize, align: usize, mode: CommitMode) -> Result<NonNull<u8>, SysError> {
    let page = page_size();
    let extra = align.saturating_sub(page);
    let total = len
        .checked_add(extra)
        .ok_or(SysError::Os(OsError::from_raw(libc::ENOMEM)))?;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice touches no
    // existing memory.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            base_protection(mode),
            base_flags(mode),
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(last_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(align);
    let head = aligned - start;
    let tail = total - head - len;
    let no_memory = SysError::Os(OsError::from_raw(libc::ENOMEM));
    let whole = NonNull::new(raw.cast::<u8>()).ok_or(no_memory)?;
    let base = NonNull::new(aligned as *mut u8).ok_or(no_memory)?;
    if head > 0 {
        // SAFETY: `start..aligned` is the page-aligned head of the mapping just made, which
        // nothing else refers to.
        if let Err(e) = check(unsafe { libc::munmap(raw, head) }) {
            // SAFETY: the whole fresh mapping is handed back; nothing refers to it.
            unsafe { super::release(whole, total, page) };
            return Err(e);
        }
    }
    if tail > 0 {
        // SAFETY: the tail after `aligned + len` is page-aligned and part of the same fresh
        // mapping.
        if let Err(e) = check(unsafe { libc::munmap((aligned + len) as *mut c_void, tail) }) {
            // SAFETY: `aligned..aligned + len + tail` is what is left of the fresh mapping.
            unsafe { super::release(base, len + tail, page) };
            return Err(e);
        }
    }
    Ok(base)
}

/// Unmaps a whole reservation, once; [`super::release`] retries and aborts.
///
/// # Safety
/// `ptr..ptr + len` is a reservation made by [`reserve`], not used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize, _align: usize) -> Result<(), SysError> {
    // SAFETY: the caller hands over the whole mapping.
    check(unsafe { libc::munmap(ptr.as_ptr().cast(), len) })
}

/// Writes `message` to standard error and aborts the process.
pub(crate) fn abort_with(message: &[u8]) -> ! {
    let mut rest = message;
    while !rest.is_empty() {
        // SAFETY: writes bytes of a live slice to file descriptor 2; a failure only ends the
        // message early.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => rest = &rest[n.min(rest.len())..],
            _ => break,
        }
    }
    // SAFETY: `abort` has no preconditions; it does not return.
    unsafe { libc::abort() }
}

/// Makes the range readable and writable, charging it against the commit limit.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn commit(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    match mode {
        CommitMode::Protected => {
            // SAFETY: the range is inside our mapping; raising protection changes no contents.
            check(unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) })
        }
        CommitMode::Sparse => Ok(()),
    }
}

/// Replaces the range with fresh, uncommitted pages.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn decommit(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    #[cfg(target_os = "linux")]
    if mode == CommitMode::Sparse {
        // SAFETY: the range is inside our private anonymous mapping; MADV_DONTNEED drops its
        // pages, after which they read as zero; the caller vouches nothing refers to them.
        return check(unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) });
    }
    // SAFETY: the caller's contract is `replace`'s: a range of a live reservation whose
    // contents nothing refers to.
    unsafe { replace(ptr, len, mode) }
}

/// Changes the protection of committed pages.
///
/// # Safety
/// The range lies inside a live reservation; lowering protection must not break live
/// references.
pub(crate) unsafe fn protect(
    ptr: *mut u8,
    len: usize,
    protection: Protection,
) -> Result<(), SysError> {
    // SAFETY: the range is inside our mapping; the caller handles references.
    check(unsafe { libc::mprotect(ptr.cast(), len, prot_bits(protection)) })
}

/// The `PROT_*` bits of a protection.
fn prot_bits(protection: Protection) -> libc::c_int {
    match protection {
        Protection::None => libc::PROT_NONE,
        Protection::Read => libc::PROT_READ,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Protection::ReadExecute => libc::PROT_READ | libc::PROT_EXEC,
        Protection::ReadWriteExecute => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
    }
}

/// `MAP_HUGE_SHIFT`: where the log2 of an explicit huge page size goes in `mmap` flags.
#[cfg(target_os = "linux")]
const MAP_HUGE_SHIFT: libc::c_int = 26;

/// Whether [`map`] can map a source, with explicit huge pages of `1 << huge_shift` bytes if
/// given (for anonymous sources), before anything is made for it: `MAP_HUGETLB` is Linux's,
/// elsewhere they are [`SysError::Unsupported`].
pub(crate) fn can_map(huge_shift: Option<u32>) -> Result<(), SysError> {
    #[cfg(target_os = "linux")]
    {
        let _ = huge_shift;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    match huge_shift {
        Some(_) => Err(SysError::Unsupported),
        None => Ok(()),
    }
}

/// Maps `source` over the range (`MAP_FIXED`), with explicit huge pages of `1 << huge_shift`
/// bytes for anonymous sources if given (see [`can_map`]).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn map(
    ptr: *mut u8,
    len: usize,
    source: crate::MapSource<'_>,
    protection: Protection,
    huge_shift: Option<u32>,
) -> Result<(), SysError> {
    use crate::MapSource;
    can_map(huge_shift)?;
    let mut flags = libc::MAP_FIXED;
    let (fd, offset) = match source {
        MapSource::AnonymousPrivate => {
            flags |= libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            (-1, 0)
        }
        MapSource::AnonymousShared => {
            flags |= libc::MAP_SHARED | libc::MAP_ANONYMOUS;
            (-1, 0)
        }
        MapSource::File(file) => {
            flags |= libc::MAP_SHARED;
            let (fd, offset) = (file.raw_fd(), file.offset());
            let offset = off_t::try_from(offset)
                .map_err(|_| SysError::Os(OsError::from_raw(libc::EOVERFLOW)))?;
            (fd, offset)
        }
    };
    #[cfg(target_os = "linux")]
    if let Some(shift) = huge_shift
        && fd == -1
    {
        // The shift is at most 63, so the value fits.
        flags |= libc::MAP_HUGETLB | (shift.cast_signed() << MAP_HUGE_SHIFT);
    }
    // SAFETY: MAP_FIXED replaces exactly the range, which is ours and unreferenced (the
    // caller's promise); a bad descriptor or offset only makes the call fail.
    let raw = unsafe { mmap_file(ptr.cast(), len, prot_bits(protection), flags, fd, offset) };
    if raw == libc::MAP_FAILED {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// The page size and length of the file open as `fd`, and whether holes can be punched in it
/// through a mapping of `fd` (see [`super::FileFacts`]): `fstat`, `fcntl` for the access mode,
/// and on Linux `fcntl` for the seals and `fstatfs`, which tells a hugetlbfs file and its huge
/// page size.
pub(crate) fn file_facts(fd: i32) -> Result<super::FileFacts, SysError> {
    let mut facts = super::FileFacts::default();
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a writable `stat`; a bad descriptor only makes the call fail.
    check(unsafe { fstat(fd, &raw mut st) })?;
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        facts.len = u64::try_from(st.st_size).ok();
    }
    // SAFETY: `F_GETFL` only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(last_error());
    }
    facts.no_hole_punch = flags & libc::O_ACCMODE == libc::O_RDONLY;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // `HUGETLBFS_MAGIC` of `include/uapi/linux/magic.h`; the field's type differs between
        // C libraries and architectures, its low 32 bits do not.
        const HUGETLBFS_MAGIC: i128 = 0x9584_58f6;
        // SAFETY: `F_GET_SEALS` only reads the file's seals; files that cannot be sealed
        // answer `EINVAL`, and have none.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        if seals > 0 && seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
            facts.no_hole_punch = true;
        }
        // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
        let mut fs: statfs = unsafe { core::mem::zeroed() };
        // SAFETY: `fs` is a writable `statfs`; the descriptor was just accepted by `fstat`.
        check(unsafe { fstatfs(fd, &raw mut fs) })?;
        #[allow(
            clippy::useless_conversion,
            reason = "the fields are `i64` on some targets, narrower or unsigned on others"
        )]
        if i128::from(fs.f_type) & 0xffff_ffff == HUGETLBFS_MAGIC {
            // hugetlbfs reports its huge page size as the block size.
            facts.page_size = usize::try_from(i128::from(fs.f_bsize))
                .ok()
                .filter(|size| size.is_power_of_two());
        }
    }
    Ok(facts)
}

/// Whether every page of the range is mapped: `msync` refuses a range with a hole in it
/// (`ENOMEM`), and with `MS_ASYNC` does nothing else worth waiting for.
///
/// # Safety
/// The range lies inside a live reservation (page-aligned, non-empty).
pub(crate) unsafe fn is_mapped(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: `msync` only reads the mappings of the range.
    let r = unsafe { libc::msync(ptr.cast(), len, libc::MS_ASYNC) };
    !(r == -1 && errno() == libc::ENOMEM)
}

/// Puts fresh pages of the reservation's own kind over the range, whatever is mapped there
/// now (a decommit of pages that [`map`] replaced).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn replace(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: MAP_FIXED over a range of our own mapping replaces exactly that range; the
    // caller vouches nothing refers to its contents.
    let raw = unsafe {
        libc::mmap(
            ptr.cast(),
            len,
            base_protection(mode),
            base_flags(mode) | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// Puts fresh pages of the reservation's own kind into the range after the system unmapped
/// it (a `MAP_FIXED` mapping refused after the old pages went). On Linux the mapping is
/// `MAP_FIXED_NOREPLACE` (4.17 and later): if another mapping was placed in the hole
/// meanwhile, it is refused (`EEXIST`) rather than replaced; a kernel that does not know the
/// flag takes the address as a hint, and a mapping placed elsewhere is unmapped again and
/// refused too. Elsewhere it is a plain `MAP_FIXED` mapping.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn refill(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it maps only into the hole,
        // which is the reservation's own range.
        let raw = unsafe {
            libc::mmap(
                ptr.cast(),
                len,
                base_protection(mode),
                base_flags(mode) | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(last_error());
        }
        if raw.cast::<u8>() != ptr {
            // SAFETY: the mapping just made elsewhere, which nothing refers to.
            let _ = unsafe { libc::munmap(raw, len) };
            return Err(SysError::Os(OsError::from_raw(libc::EEXIST)));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: the caller's promise.
        unsafe { replace(ptr, len, mode) }
    }
}

/// Gives `advice` (a `MADV_*` value) for the range.
///
/// # Safety
/// The range lies inside a live reservation; if the advice changes contents, nothing refers
/// to them.
pub(crate) unsafe fn advise(ptr: *mut u8, len: usize, advice: SysAdvice) -> Result<(), SysError> {
    let advice = match advice {
        #[cfg(target_os = "linux")]
        SysAdvice::DontFork => libc::MADV_DONTFORK,
        #[cfg(target_os = "linux")]
        SysAdvice::DoFork => libc::MADV_DOFORK,
        #[cfg(target_os = "linux")]
        SysAdvice::DontDump => libc::MADV_DONTDUMP,
        #[cfg(target_os = "linux")]
        SysAdvice::DoDump => libc::MADV_DODUMP,
        SysAdvice::Free => libc::MADV_FREE,
        #[cfg(target_os = "linux")]
        SysAdvice::DontNeed => libc::MADV_DONTNEED,
        #[cfg(target_os = "linux")]
        SysAdvice::Remove => libc::MADV_REMOVE,
        #[cfg(not(target_os = "linux"))]
        _ => return Err(SysError::Unsupported),
    };
    // SAFETY: the range is ours; the caller handles references for advice that changes
    // contents.
    check(unsafe { libc::madvise(ptr.cast(), len, advice) })
}

/// Asks the kernel to populate readable pages for reading (`MADV_POPULATE_READ`, Linux 5.14).
///
/// # Safety
/// The range lies inside a live reservation and is committed and readable.
pub(crate) unsafe fn populate_read(ptr: *mut u8, len: usize) -> Result<Populated, SysError> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the caller's contract; populating readable pages for reading changes no
        // contents.
        unsafe { populate_with(ptr, len, libc::MADV_POPULATE_READ) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len);
        Ok(Populated::NeedsTouch)
    }
}

/// Sets the NUMA policy of the range (`mbind`): `mode` is an `MPOL_*` value, `mask` the node
/// bits, `flags` `MPOL_MF_*` flags.
///
/// # Safety
/// The range lies inside a live reservation. Moving pages keeps their contents.
pub(crate) unsafe fn bind_numa(
    ptr: *mut u8,
    len: usize,
    mode: i32,
    mask: &[u64],
    flags: u32,
) -> Result<(), SysError> {
    #[cfg(target_os = "linux")]
    {
        // The kernel reads `maxnode - 1` bits.
        let maxnode = mask.len() * 64 + 1;
        // SAFETY: the range is ours; `mask` holds `maxnode - 1` readable bits.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                ptr,
                len,
                mode,
                mask.as_ptr(),
                maxnode,
                flags,
            )
        };
        if ret == 0 { Ok(()) } else { Err(last_error()) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len, mode, mask, flags);
        Err(SysError::Unsupported)
    }
}

/// Asks the kernel to populate writable pages (`MADV_POPULATE_WRITE`, Linux 5.14).
///
/// # Safety
/// The range lies inside a live reservation and is committed read-write.
pub(crate) unsafe fn populate(ptr: *mut u8, len: usize) -> Result<Populated, SysError> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the caller's contract; populating committed writable pages changes no
        // contents.
        unsafe { populate_with(ptr, len, libc::MADV_POPULATE_WRITE) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len);
        Ok(Populated::NeedsTouch)
    }
}

/// `madvise(advice)` for one of the populate advices; a kernel before 5.14 that does not know
/// it answers `EINVAL` even over no pages, which asks the caller to touch the pages instead.
/// Any other error (`EINVAL` for pages the advice does not fit included) is returned.
///
/// # Safety
/// The range lies inside a live reservation, committed with the access `advice` populates for.
#[cfg(target_os = "linux")]
unsafe fn populate_with(
    ptr: *mut u8,
    len: usize,
    advice: libc::c_int,
) -> Result<Populated, SysError> {
    // SAFETY: the caller's contract; populating changes no contents.
    if unsafe { libc::madvise(ptr.cast(), len, advice) } == 0 {
        return Ok(Populated::Done);
    }
    match errno() {
        // `EINVAL` is also the answer for pages the advice does not fit (not writable, for
        // `MADV_POPULATE_WRITE`): a kernel that knows the advice accepts it over no pages, and
        // then the error is the range's, never a reason to touch pages that may fault.
        // SAFETY: advice over no pages reads and changes nothing.
        libc::EINVAL if unsafe { libc::madvise(ptr.cast(), 0, advice) } != 0 => {
            Ok(Populated::NeedsTouch)
        }
        err => Err(SysError::Os(OsError::from_raw(err))),
    }
}

/// Locks pages in memory.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn lock(ptr: *mut u8, len: usize) -> Result<(), SysError> {
    // SAFETY: mlock changes no contents.
    check(unsafe { libc::mlock(ptr.cast_const().cast(), len) })
}

/// Unlocks pages.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn unlock(ptr: *mut u8, len: usize) -> Result<(), SysError> {
    // SAFETY: munlock changes no contents.
    check(unsafe { libc::munlock(ptr.cast_const().cast(), len) })
}

/// Transparent-huge-page advice (Linux only).
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn advise_huge(
    ptr: *mut u8,
    len: usize,
    advice: HugePageAdvice,
) -> Result<(), SysError> {
    #[cfg(target_os = "linux")]
    {
        let advice = match advice {
            HugePageAdvice::Huge => libc::MADV_HUGEPAGE,
            HugePageAdvice::NoHuge => libc::MADV_NOHUGEPAGE,
        };
        // SAFETY: huge-page advice changes no contents.
        check(unsafe { libc::madvise(ptr.cast(), len, advice) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ptr, len, advice);
        Err(SysError::Unsupported)
    }
}

/// Writes one byte per page into `out`: bit 0 set where the page is resident.
///
/// # Safety
/// The range lies inside a live reservation; `out` holds `len / page_size()` bytes.
pub(crate) unsafe fn residency(ptr: *mut u8, len: usize, out: &mut [u8]) -> Result<(), SysError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: the range is mapped; `out` has one byte per page as mincore requires.
    let ret = unsafe { libc::mincore(ptr.cast(), len, out.as_mut_ptr()) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: as above.
    let ret = unsafe { libc::mincore(ptr.cast_const().cast(), len, out.as_mut_ptr().cast()) };
    check(ret)
}

/// Turns the range into guard pages: any access faults. The caller decommitted it first.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn guard(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    match mode {
        // Uncommitted pages of a protected reservation already fault.
        CommitMode::Protected => Ok(()),
        CommitMode::Sparse => {
            #[cfg(target_os = "linux")]
            {
                // SAFETY: guard markers on our own decommitted range; nothing refers to it.
                // Markers do not split the mapping.
                if unsafe { libc::madvise(ptr.cast(), len, MADV_GUARD_INSTALL) } == 0 {
                    return Ok(());
                }
                let err = errno();
                if err != libc::EINVAL {
                    return Err(SysError::Os(OsError::from_raw(err)));
                }
            }
            // SAFETY: as for `protect`; the range is decommitted and unreferenced.
            unsafe { protect(ptr, len, Protection::None) }
        }
    }
}

/// Turns guard pages back into uncommitted pages.
///
/// # Safety
/// The range lies inside a live reservation and consists of guard pages.
pub(crate) unsafe fn unguard(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    match mode {
        // Guard pages of a protected reservation are plain uncommitted pages.
        CommitMode::Protected => Ok(()),
        CommitMode::Sparse => {
            #[cfg(target_os = "linux")]
            {
                // SAFETY: removing guard markers from our own range; where there are none
                // (the mprotect fallback was used) this does nothing.
                let ret = unsafe { libc::madvise(ptr.cast(), len, MADV_GUARD_REMOVE) };
                if ret != 0 && errno() != libc::EINVAL {
                    return Err(last_error());
                }
            }
            // Undo the fallback's PROT_NONE; on pages that are read-write already this changes
            // nothing and does not split the mapping. MAP_NORESERVE keeps it uncharged.
            // SAFETY: the range holds guard pages, which nothing refers to.
            unsafe { protect(ptr, len, Protection::ReadWrite) }
        }
    }
}
