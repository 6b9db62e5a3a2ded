//! The one door to the operating system: every `mmap`, `mprotect`, `madvise` or `VirtualAlloc`
//! of this crate is in one of the files below, one per platform family. Under Miri a backend
//! over the Rust allocator stands in, so that Miri can check the logic above it.
//!
//! Every function takes page-aligned, in-bounds, non-empty ranges of a live reservation; the
//! callers in `reservation.rs` check that before calling.

use crate::error::{Error, Operation, OsError};

#[cfg(miri)]
mod miri;
#[cfg(miri)]
pub(crate) use miri::*;

#[cfg(all(unix, not(miri)))]
mod unix;
#[cfg(all(unix, not(miri)))]
pub(crate) use unix::*;

#[cfg(all(windows, not(miri)))]
mod windows;
#[cfg(all(windows, not(miri)))]
pub(crate) use windows::*;

/// Gives committed pages of a [`CommitMode::Sparse`](crate::CommitMode::Sparse) reservation
/// whose protection was lowered read-write access again. On Unix a sparse commit is
/// bookkeeping only, so this is an `mprotect`; on Windows committing sets the protection
/// itself, and under Miri protection is bookkeeping.
///
/// # Safety
/// The range lies inside a live reservation.
pub(crate) unsafe fn restore_sparse_access(ptr: *mut u8, len: usize) -> Result<(), SysError> {
    #[cfg(all(unix, not(miri)))]
    {
        // SAFETY: raising protection on a range of the reservation changes no contents; the
        // mapping is MAP_NORESERVE, so it stays uncharged.
        unsafe { protect(ptr, len, crate::Protection::ReadWrite) }
    }
    #[cfg(any(not(unix), miri))]
    {
        let _ = (ptr, len);
        Ok(())
    }
}

/// A failure of a platform call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysError {
    /// The OS refused, with this code.
    Os(OsError),
    /// The platform has no such operation.
    #[allow(dead_code, reason = "only some platforms lack an operation")]
    Unsupported,
}

impl SysError {
    /// The public error for this failure during `operation`.
    pub(crate) fn during(self, operation: Operation) -> Error {
        match self {
            SysError::Os(source) => Error::Os { operation, source },
            SysError::Unsupported => Error::Unsupported { operation },
        }
    }
}

/// What a populate call achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Populated {
    /// The kernel populated the range.
    #[cfg_attr(
        any(not(target_os = "linux"), miri),
        allow(dead_code, reason = "only Linux populates in the kernel")
    )]
    Done,
    /// The kernel cannot populate ranges; the caller must touch the pages.
    NeedsTouch,
}
