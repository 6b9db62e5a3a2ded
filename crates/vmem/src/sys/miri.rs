//! Miri: a reservation is a zeroed allocation of the Rust allocator. Protection, locking and
//! advice are bookkeeping only (Miri cannot change page protection), decommit zeroes the range,
//! and every page reports itself resident. What Miri checks is the pointer and offset logic
//! above this file.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;

use super::{Populated, SysAdvice, SysError};
use crate::error::OsError;
use crate::reservation::{CommitMode, HugePageAdvice, Protection};

/// `ENOMEM`, reported when the allocator refuses.
const ENOMEM: i32 = 12;

/// A fixed 4 KiB page under Miri.
pub(crate) fn page_size() -> usize {
    4096
}

/// The page size under Miri.
pub(crate) fn allocation_granularity() -> usize {
    page_size()
}

/// The largest alignment Miri can allocate with (rustc's limit, 2^29); the Rust allocator's
/// own limit is higher, and Miri stops with "unsupported operation" past this one.
const MAX_ALIGN: usize = 1 << 29;

/// The layout of a reservation, or `ENOMEM` where the allocator (or Miri) cannot make one, as
/// a system without room for such an alignment refuses it.
fn layout(len: usize, align: usize) -> Result<Layout, SysError> {
    if align > MAX_ALIGN {
        return Err(SysError::Os(OsError::from_raw(ENOMEM)));
    }
    Layout::from_size_align(len, align).map_err(|_| SysError::Os(OsError::from_raw(ENOMEM)))
}

/// Allocates `len` zeroed bytes aligned to `align`.
pub(crate) fn reserve(
    len: usize,
    align: usize,
    _mode: CommitMode,
) -> Result<NonNull<u8>, SysError> {
    let layout = layout(len, align)?;
    // SAFETY: `len` is at least one page, so the layout is not zero-sized.
    NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(SysError::Os(OsError::from_raw(ENOMEM)))
}

/// Frees a reservation; freeing memory of the Rust allocator cannot fail.
///
/// # Safety
/// `ptr` came from [`reserve`] with the same `len` and `align` and is not used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize, align: usize) -> Result<(), SysError> {
    if let Ok(layout) = layout(len, align) {
        // SAFETY: allocated by `reserve` with this layout.
        unsafe { dealloc(ptr.as_ptr(), layout) };
    }
    Ok(())
}

/// Under Miri an abort is a panic that cannot be caught: report and stop.
pub(crate) fn abort_with(message: &[u8]) -> ! {
    panic!(
        "{}",
        core::str::from_utf8(message).unwrap_or("unmap failed")
    )
}

/// Nothing to do: the memory is always accessible.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn commit(_ptr: *mut u8, _len: usize, _mode: CommitMode) -> Result<(), SysError> {
    Ok(())
}

/// Zeroes the range, as the OS backends' fresh pages read.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn decommit(ptr: *mut u8, len: usize, _mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the range is inside the allocation and unreferenced (caller's contract).
    unsafe { ptr.write_bytes(0, len) };
    Ok(())
}

/// Bookkeeping only under Miri.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn protect(
    _ptr: *mut u8,
    _len: usize,
    _protection: Protection,
) -> Result<(), SysError> {
    Ok(())
}

/// Asks the caller to touch the pages, which exercises that path under Miri.
///
/// # Safety
/// The range lies inside a live reservation and is committed read-write.
pub(crate) unsafe fn populate(_ptr: *mut u8, _len: usize) -> Result<Populated, SysError> {
    Ok(Populated::NeedsTouch)
}

/// Every source maps under Miri, explicit huge pages too (see [`map`]).
pub(crate) fn can_map(_huge_shift: Option<u32>) -> Result<(), SysError> {
    Ok(())
}

/// A mapped source reads as zero under Miri (no file is read).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn map(
    ptr: *mut u8,
    len: usize,
    _source: crate::MapSource<'_>,
    _protection: Protection,
    _huge_shift: Option<u32>,
) -> Result<(), SysError> {
    // SAFETY: the range is inside the allocation and unreferenced (caller's contract).
    unsafe { ptr.write_bytes(0, len) };
    Ok(())
}

/// No file is read under Miri: nothing is known of it.
#[cfg(unix)]
pub(crate) fn file_facts(_fd: i32) -> Result<super::FileFacts, SysError> {
    Ok(super::FileFacts::default())
}

/// Every page of a reservation stays mapped here.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn is_mapped(_ptr: *mut u8, _len: usize) -> bool {
    true
}

/// Fresh pages: zeroes the range.
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn replace(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the caller's promise.
    unsafe { decommit(ptr, len, mode) }
}

/// Fresh pages after a refused mapping: as [`replace`] (nothing is ever unmapped here).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn refill(ptr: *mut u8, len: usize, mode: CommitMode) -> Result<(), SysError> {
    // SAFETY: the caller's promise.
    unsafe { replace(ptr, len, mode) }
}

/// Advice that may discard contents zeroes the range (one of the outcomes the OS allows);
/// the rest is bookkeeping.
///
/// # Safety
/// The range lies inside a live reservation; for discarding advice nothing refers to it.
pub(crate) unsafe fn advise(ptr: *mut u8, len: usize, advice: SysAdvice) -> Result<(), SysError> {
    if matches!(
        advice,
        SysAdvice::Free | SysAdvice::DontNeed | SysAdvice::Remove
    ) {
        // SAFETY: the range is inside the allocation and unreferenced (caller's contract).
        unsafe { ptr.write_bytes(0, len) };
    }
    Ok(())
}

/// Asks the caller to read the pages, which exercises that path under Miri.
///
/// # Safety
/// The range lies inside a live reservation and is committed and readable.
pub(crate) unsafe fn populate_read(_ptr: *mut u8, _len: usize) -> Result<Populated, SysError> {
    Ok(Populated::NeedsTouch)
}

/// Bookkeeping only under Miri.
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
    Ok(())
}

/// Bookkeeping only under Miri.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn lock(_ptr: *mut u8, _len: usize) -> Result<(), SysError> {
    Ok(())
}

/// Bookkeeping only under Miri.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn unlock(_ptr: *mut u8, _len: usize) -> Result<(), SysError> {
    Ok(())
}

/// Bookkeeping only under Miri.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn advise_huge(
    _ptr: *mut u8,
    _len: usize,
    _advice: HugePageAdvice,
) -> Result<(), SysError> {
    Ok(())
}

/// Every page of the allocation is resident.
///
/// # Safety
/// The range lies inside a live reservation; `out` holds one byte per page.
pub(crate) unsafe fn residency(_ptr: *mut u8, _len: usize, out: &mut [u8]) -> Result<(), SysError> {
    out.fill(1);
    Ok(())
}

/// Bookkeeping only under Miri (the range was zeroed by decommit).
///
/// # Safety
/// The range lies inside a live reservation and nothing refers to its contents.
pub(crate) unsafe fn guard(_ptr: *mut u8, _len: usize, _mode: CommitMode) -> Result<(), SysError> {
    Ok(())
}

/// Bookkeeping only under Miri.
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
