//! Windows: `VirtualAlloc` and friends.
//!
//! A reservation is one `MEM_RESERVE` region of `PAGE_NOACCESS` pages, which costs no commit
//! charge. Committing is `VirtualAlloc(MEM_COMMIT, PAGE_READWRITE)`, which charges the pages
//! against the commit limit; decommitting is `VirtualFree(MEM_DECOMMIT)`, which frees the pages
//! and returns the charge, after which they are reserved again and read as zero once committed
//! anew.
//!
//! [`CommitMode::Sparse`] behaves exactly as [`CommitMode::Protected`] here. Sparse mode exists
//! on Unix to keep a reservation one mapping however its commits interleave, because Linux
//! limits the number of mappings of a process (`vm.max_map_count`); Windows has no such limit
//! on the regions of a reservation, so both modes commit and decommit with the calls above.
//!
//! Uncommitted pages fault on any access, so guard pages are decommitted pages and need no
//! call of their own.

use core::ffi::c_void;
use core::mem::size_of_val;
use core::ptr::{self, NonNull};

use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY, GetLastError, WIN32_ERROR,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE,
    PAGE_NOACCESS, PAGE_PROTECTION_FLAGS, PAGE_READONLY, PAGE_READWRITE, VirtualAlloc, VirtualFree,
    VirtualLock, VirtualProtect, VirtualUnlock,
};
use windows_sys::Win32::System::ProcessStatus::{
    K32QueryWorkingSetEx, PSAPI_WORKING_SET_EX_INFORMATION,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::GetCurrentProcess;
use windows_sys::core::BOOL;

use super::{Populated, SysAdvice, SysError};
use crate::error::OsError;
use crate::reservation::{CommitMode, HugePageAdvice, Protection};

/// How often [`reserve`] tries again when another thread takes the aligned address between
/// releasing the over-sized reservation and reserving the aligned one.
const ALIGNED_RESERVE_ATTEMPTS: usize = 8;

/// How many pages one `QueryWorkingSetEx` call asks about; the buffer lives on the stack.
const RESIDENCY_BATCH: usize = 64;

/// The `Valid` bit of `PSAPI_WORKING_SET_EX_BLOCK`: the page is in the working set.
const WORKING_SET_VALID: usize = 1;

fn os_error(code: WIN32_ERROR) -> SysError {
    // Error codes are `DWORD`s; `std::io::Error::from_raw_os_error` and `raw_os_error` carry
    // them as the `i32` of the same bits, so keep the bits rather than clamp large codes.
    SysError::Os(OsError::from_raw(i32::from_ne_bytes(code.to_ne_bytes())))
}

fn last_error() -> SysError {
    // SAFETY: GetLastError only reads this thread's last-error value.
    os_error(unsafe { GetLastError() })
}

fn check(ret: BOOL) -> Result<(), SysError> {
    if ret == 0 { Err(last_error()) } else { Ok(()) }
}

fn system_info() -> SYSTEM_INFO {
    let mut info = SYSTEM_INFO::default();
    // SAFETY: `info` is a writable `SYSTEM_INFO`, which GetSystemInfo fills in; it cannot fail.
    unsafe { GetSystemInfo(&mut info) };
    info
}

/// Turns a size reported by `GetSystemInfo` into a power of two, or `fallback` if it is not
/// one.
fn power_of_two(value: u32, fallback: usize) -> usize {
    usize::try_from(value)
        .ok()
        .filter(|v| v.is_power_of_two())
        .unwrap_or(fallback)
}

/// The page size, from `GetSystemInfo` (`dwPageSize`).
pub(crate) fn page_size() -> usize {
    power_of_two(system_info().dwPageSize, 4096)
}

/// The granularity of reservation addresses, from `GetSystemInfo` (`dwAllocationGranularity`,
/// 64 KiB on every current Windows).
pub(crate) fn allocation_granularity() -> usize {
    let info = system_info();
    let page = power_of_two(info.dwPageSize, 4096);
    power_of_two(info.dwAllocationGranularity, page).max(page)
}

/// Reserves `len` bytes of `PAGE_NOACCESS` address space at an address of the system's choice.
fn reserve_anywhere(len: usize) -> Result<NonNull<u8>, SysError> {
    // SAFETY: reserving fresh address space at an address of the system's choice touches no
    // existing memory.
    let raw = unsafe { VirtualAlloc(ptr::null(), len, MEM_RESERVE, PAGE_NOACCESS) };
    NonNull::new(raw.cast()).ok_or_else(last_error)
}

/// Reserves `len` bytes aligned to `align` (a power of two, at least the page size).
///
/// Addresses the system picks are multiples of the allocation granularity. For a larger
/// alignment this reserves `len + align - granularity` bytes, which must contain an aligned
/// start, releases them and reserves exactly `len` bytes at that start. Another thread may take
/// the address in between; then the whole dance is repeated a few times before giving up with
/// the error of the last attempt.
pub(crate) fn reserve(
    len: usize,
    align: usize,
    _mode: CommitMode,
) -> Result<NonNull<u8>, SysError> {
    let granularity = allocation_granularity();
    if align <= granularity {
        return reserve_anywhere(len);
    }
    let total = len
        .checked_add(align - granularity)
        .ok_or(os_error(ERROR_NOT_ENOUGH_MEMORY))?;
    let mut error = os_error(ERROR_NOT_ENOUGH_MEMORY);
    for _ in 0..ALIGNED_RESERVE_ATTEMPTS {
        let probe = reserve_anywhere(total)?;
        let aligned = probe.as_ptr().addr().next_multiple_of(align);
        // SAFETY: `probe` is the base of the reservation just made, which nothing refers to;
        // MEM_RELEASE with size zero frees exactly that reservation.
        // SAFETY: `probe` is the reservation of `total` bytes just made, which nothing refers
        // to; a failure is retried and then aborts, so the probe never stays reserved.
        unsafe { super::release(probe, total, granularity) };
        // The address is computed from `probe`, so it keeps its provenance; it points into
        // address space that was just free.
        let target = probe
            .as_ptr()
            .with_addr(aligned)
            .cast::<c_void>()
            .cast_const();
        // SAFETY: reserving at a fixed address either takes free address space or fails; it
        // never replaces memory that is in use.
        let raw = unsafe { VirtualAlloc(target, len, MEM_RESERVE, PAGE_NOACCESS) };
        if let Some(base) = NonNull::new(raw.cast::<u8>()) {
            debug_assert_eq!(
                base.as_ptr().addr(),
                aligned,
                "reserved elsewhere than asked"
            );
            return Ok(base);
        }
        error = last_error();
    }
    Err(error)
}

/// Releases a whole reservation, once; [`super::release`] retries and aborts.
///
/// # Safety
/// `ptr..ptr + len` is a reservation made by [`reserve`], not used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, _len: usize, _align: usize) -> Result<(), SysError> {
    // SAFETY: `ptr` is the base of a reservation of ours that the caller hands over; MEM_RELEASE
    // with size zero frees the whole region, committed pages included.
    check(unsafe { VirtualFree(ptr.as_ptr().cast(), 0, MEM_RELEASE) })
}

/// Writes `message` to standard error (with `std`) and ends the process at once.
pub(crate) fn abort_with(message: &[u8]) -> ! {
    #[cfg(feature = "std")]
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(message);
        std::process::abort()
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = message;
        // SAFETY: terminating the current process (a pseudo handle that needs no closing) has
        // no preconditions; the call does not return for the current process.
        unsafe {
            windows_sys::Win32::System::Threading::TerminateProcess(
                windows_sys::Win32::System::Threading::GetCurrentProcess(),
                3,
            );
        }
        loop {
            core::hint::spin_loop();
        }
    }
}

/// Commits the range read-write, charging it against the commit limit. Pages committed already
/// keep their contents and become read-write.
///
/// Both modes commit alike: see the module documentation.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn commit(ptr: *mut u8, len: usize, _mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the range is inside our reservation; committing changes no contents of pages
    // committed already and gives fresh pages that read as zero.
    let raw = unsafe { VirtualAlloc(ptr.cast_const().cast(), len, MEM_COMMIT, PAGE_READWRITE) };
    if raw.is_null() {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// Decommits the range: its pages are freed, the commit charge returned, and any access faults
/// until the range is committed again, when it reads as zero.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn decommit(ptr: *mut u8, len: usize, _mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the range is inside our reservation (decommitting pages that are not committed is
    // allowed); the caller vouches nothing refers to its contents.
    check(unsafe { VirtualFree(ptr.cast(), len, MEM_DECOMMIT) })
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
    let new: PAGE_PROTECTION_FLAGS = match protection {
        Protection::None => PAGE_NOACCESS,
        Protection::Read => PAGE_READONLY,
        Protection::ReadWrite => PAGE_READWRITE,
        Protection::ReadExecute => PAGE_EXECUTE_READ,
        Protection::ReadWriteExecute => PAGE_EXECUTE_READWRITE,
    };
    let mut old: PAGE_PROTECTION_FLAGS = 0;
    // SAFETY: the range is inside our reservation, all in one region of it; `old` is writable
    // as VirtualProtect requires; the caller handles references.
    check(unsafe { VirtualProtect(ptr.cast_const().cast(), len, new, &mut old) })
}

/// Mapping another source into part of a reservation needs placeholder reservations
/// (`VirtualAlloc2`, `MapViewOfFile3`), which this backend does not use: [`map`] can map
/// nothing, with or without huge pages, and says so before anything is made for it.
pub(crate) fn can_map(_huge_shift: Option<u32>) -> Result<(), SysError> {
    Err(SysError::Unsupported)
}

/// Mapping another source into part of a reservation needs placeholder reservations
/// (`VirtualAlloc2`, `MapViewOfFile3`), which this backend does not use (see [`can_map`]).
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn map(
    _ptr: *mut u8,
    _len: usize,
    _source: crate::MapSource<'_>,
    _protection: Protection,
    _huge_shift: Option<u32>,
) -> Result<(), SysError> {
    Err(SysError::Unsupported)
}

/// Every page of a reservation stays mapped here.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn is_mapped(_ptr: *mut u8, _len: usize) -> bool {
    true
}

/// Decommits the range (nothing is ever mapped over a reservation here).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn replace(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the caller's promise.
    unsafe { decommit(ptr, len, mode) }
}

/// Fresh pages after a refused mapping: as [`replace`] (nothing is ever mapped over a
/// reservation here).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn refill(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the caller's promise.
    unsafe { replace(ptr, len, mode) }
}

/// `madvise`-style advice has no Windows counterpart in this backend.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn advise(
    _ptr: *mut u8,
    _len: usize,
    _advice: SysAdvice,
) -> Result<(), SysError> {
    Err(SysError::Unsupported)
}

/// As [`populate`]: the caller reads the pages.
///
/// # Safety
/// The range lies inside a live reservation and is committed and readable.
pub(crate) unsafe fn populate_read(_ptr: *mut u8, _len: usize) -> Result<Populated, SysError> {
    Ok(Populated::NeedsTouch)
}

/// NUMA policies of ranges are not supported by this backend.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn bind_numa(
    _ptr: *mut u8,
    _len: usize,
    _mode: i32,
    _mask: &[u64],
    _flags: u32,
) -> Result<(), SysError> {
    Err(SysError::Unsupported)
}

/// Windows cannot fault in committed anonymous pages ahead of use: `PrefetchVirtualMemory`
/// reads pages back from files and the page file, and leaves demand-zero pages alone. The
/// caller touches the pages.
///
/// # Safety
/// The range lies inside a live reservation and is committed read-write.
pub(crate) unsafe fn populate(_ptr: *mut u8, _len: usize) -> Result<Populated, SysError> {
    Ok(Populated::NeedsTouch)
}

/// Locks pages in the working set with `VirtualLock`. The process's minimum working set
/// bounds how much it can lock.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn lock(ptr: *mut u8, len: usize) -> Result<(), SysError> {
    // SAFETY: the range is inside our reservation; locking changes no contents.
    check(unsafe { VirtualLock(ptr.cast_const().cast(), len) })
}

/// Unlocks pages with `VirtualUnlock`.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn unlock(ptr: *mut u8, len: usize) -> Result<(), SysError> {
    // SAFETY: the range is inside our reservation; unlocking changes no contents.
    check(unsafe { VirtualUnlock(ptr.cast_const().cast(), len) })
}

/// Windows has no advice for large pages: they are only had by allocating with
/// `MEM_LARGE_PAGES` up front, which needs a privilege and commits everything at once.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn advise_huge(
    _ptr: *mut u8,
    _len: usize,
    _advice: HugePageAdvice,
) -> Result<(), SysError> {
    Err(SysError::Unsupported)
}

/// Writes one byte per page into `out`: 1 where the page is in the process's working set (the
/// `Valid` bit of `QueryWorkingSetEx`), 0 elsewhere.
///
/// Unlike `mincore` on Unix, this reports a page whose protection is `PAGE_NOACCESS` as not
/// resident even while its contents stay in memory: such a page has no valid translation, so
/// it is not a valid working-set page.
///
/// # Safety
/// The range lies inside a live reservation; `out` holds `len / page_size()` bytes.
pub(crate) unsafe fn residency(ptr: *mut u8, len: usize, out: &mut [u8]) -> Result<(), SysError> {
    let page = page_size();
    let pages = (len / page).min(out.len());
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    let process = unsafe { GetCurrentProcess() };
    let mut batch = [PSAPI_WORKING_SET_EX_INFORMATION::default(); RESIDENCY_BATCH];
    for (index, bytes) in out[..pages].chunks_mut(RESIDENCY_BATCH).enumerate() {
        let entries = &mut batch[..bytes.len()];
        let first = index * RESIDENCY_BATCH;
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.VirtualAddress = ptr.wrapping_add((first + i) * page).cast();
            entry.VirtualAttributes.Flags = 0;
        }
        let size =
            u32::try_from(size_of_val(entries)).map_err(|_| os_error(ERROR_INVALID_PARAMETER))?;
        // SAFETY: `entries` is a writable array of `size` bytes of working-set entries, each
        // naming a page of our reservation; the call only fills in their attributes.
        check(unsafe { K32QueryWorkingSetEx(process, entries.as_mut_ptr().cast(), size) })?;
        for (byte, entry) in bytes.iter_mut().zip(entries.iter()) {
            // SAFETY: every field of the union is a `usize` of bit fields; any bits are valid.
            let flags = unsafe { entry.VirtualAttributes.Flags };
            *byte = u8::from(flags & WORKING_SET_VALID != 0);
        }
    }
    Ok(())
}

/// Nothing to add: the caller decommitted the range, and uncommitted pages fault on any access.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn guard(_ptr: *mut u8, _len: usize, _mode: CommitMode) -> Result<(), SysError> {
    Ok(())
}

/// Nothing to undo: guard pages are plain uncommitted pages.
///
/// # Safety
/// The range lies inside a live reservation and consists of guard pages.
pub(crate) unsafe fn unguard(
    _ptr: *mut u8,
    _len: usize,
    _mode: CommitMode,
) -> Result<(), SysError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// Reserves `pages` pages aligned to `align`, runs `f` on the base, then releases them.
    fn with_reservation(pages: usize, align: usize, f: impl FnOnce(*mut u8)) {
        let len = pages * page_size();
        let base = reserve(len, align, CommitMode::Protected).expect("reserve");
        f(base.as_ptr());
        // SAFETY: `base` is the reservation made above and is not used afterwards.
        unsafe { crate::sys::release(base, len, align) };
    }

    #[test]
    fn os_error_large_code_keeps_its_bits() {
        let code: WIN32_ERROR = 0x8007_000E;
        let SysError::Os(error) = os_error(code) else {
            panic!("not an OS error");
        };
        assert!(error.raw() < 0);
        assert_eq!(u32::from_ne_bytes(error.raw().to_ne_bytes()), code);
        assert_eq!(
            os_error(ERROR_NOT_ENOUGH_MEMORY),
            SysError::Os(OsError::from_raw(8))
        );
    }

    #[test]
    fn allocation_granularity_is_a_page_multiple_power_of_two() {
        let granularity = allocation_granularity();
        assert!(granularity.is_power_of_two());
        assert_eq!(granularity % page_size(), 0);
    }

    #[test]
    fn reserve_alignment_above_granularity_is_aligned() {
        let granularity = allocation_granularity();
        for align in [granularity, 2 * granularity, 1 << 21, 1 << 30] {
            with_reservation(3, align, |base| {
                assert_eq!(base.addr() % align, 0, "alignment {align:#x}");
            });
        }
    }

    #[test]
    fn reserve_overflowing_length_is_not_enough_memory() {
        let error = reserve(usize::MAX - page_size() + 1, 1 << 21, CommitMode::Protected);
        assert_eq!(error, Err(os_error(ERROR_NOT_ENOUGH_MEMORY)));
    }

    #[test]
    fn residency_touched_page_is_resident_until_no_access() {
        let page = page_size();
        with_reservation(4, page, |base| {
            let mut out = [9; 4];
            // SAFETY: the four pages belong to the reservation; `out` has a byte per page.
            unsafe { residency(base, 4 * page, &mut out) }.unwrap();
            assert_eq!(out, [0; 4]);
            // SAFETY: committing and then writing page 1 of our own reservation.
            unsafe {
                commit(base, 4 * page, CommitMode::Protected).unwrap();
                base.add(page).write(7);
                residency(base, 4 * page, &mut out).unwrap();
            }
            assert_eq!(out, [0, 1, 0, 0]);
            // SAFETY: nothing refers to page 1; afterwards its contents are read back.
            unsafe {
                protect(base.add(page), page, Protection::None).unwrap();
                residency(base, 4 * page, &mut out).unwrap();
                assert_eq!(out, [0, 0, 0, 0]);
                protect(base.add(page), page, Protection::Read).unwrap();
                assert_eq!(base.add(page).read(), 7);
            }
        });
    }

    #[test]
    fn residency_more_pages_than_a_batch_reports_each_page() {
        let page = page_size();
        let pages = 2 * RESIDENCY_BATCH + 3;
        with_reservation(pages, page, |base| {
            let mut out = vec![9; pages];
            // SAFETY: committing our own reservation, then writing every third page of it.
            unsafe {
                commit(base, pages * page, CommitMode::Sparse).unwrap();
                for p in (0..pages).step_by(3) {
                    base.add(p * page).write(1);
                }
                residency(base, pages * page, &mut out).unwrap();
            }
            let expected: Vec<u8> = (0..pages).map(|p| u8::from(p % 3 == 0)).collect();
            assert_eq!(out, expected);
        });
    }

    #[test]
    fn decommit_then_commit_reads_zero() {
        let page = page_size();
        with_reservation(2, page, |base| {
            // SAFETY: our own reservation; nothing refers to the page when it is decommitted.
            unsafe {
                commit(base, 2 * page, CommitMode::Sparse).unwrap();
                base.write(5);
                decommit(base, 2 * page, CommitMode::Sparse).unwrap();
                commit(base, page, CommitMode::Sparse).unwrap();
                assert_eq!(base.read(), 0);
            }
        });
    }

    #[test]
    fn protect_uncommitted_page_is_os_error() {
        let page = page_size();
        with_reservation(1, page, |base| {
            // SAFETY: the page belongs to our reservation.
            let result = unsafe { protect(base, page, Protection::Read) };
            assert!(matches!(result, Err(SysError::Os(_))), "{result:?}");
        });
    }

    #[test]
    fn advise_huge_is_unsupported() {
        let page = page_size();
        with_reservation(1, page, |base| {
            // SAFETY: the page belongs to our reservation.
            let result = unsafe { advise_huge(base, page, HugePageAdvice::Huge) };
            assert_eq!(result, Err(SysError::Unsupported));
        });
    }

    #[test]
    fn lock_committed_page_then_unlock_succeeds() {
        let page = page_size();
        with_reservation(1, page, |base| {
            // SAFETY: the page belongs to our reservation and is committed first.
            unsafe {
                commit(base, page, CommitMode::Protected).unwrap();
                lock(base, page).unwrap();
                unlock(base, page).unwrap();
            }
        });
    }
}
