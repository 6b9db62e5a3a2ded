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

/// How many times an unmap is tried before the process is aborted.
const UNMAP_ATTEMPTS: usize = 8;

/// Unmaps a whole reservation, or aborts the process.
///
/// An unmap that fails (Linux refuses with `ENOMEM` to split a mapping at the process's
/// mapping limit, which unmapping a reservation merged with its neighbours needs) is tried
/// up to [`UNMAP_ATTEMPTS`] times in all, yielding in between (spinning without `std`) so
/// another thread may release a mapping. If it still fails the process is aborted with a
/// message on standard error (on Windows only with `std`; without it the process ends
/// silently): the memory may hold guest data and must never stay mapped with nobody owning
/// it, and a panic (which could unwind through a `Drop`) is not an option.
///
/// # Safety
/// `ptr..ptr + len` is a whole reservation made by [`reserve`] with `align`, not used
/// afterwards.
pub(crate) unsafe fn release(ptr: core::ptr::NonNull<u8>, len: usize, align: usize) {
    let mut last = None;
    for attempt in 0..UNMAP_ATTEMPTS {
        // SAFETY: the caller's promise; a failed unmap leaves the mapping as it was.
        match unsafe { unmap(ptr, len, align) } {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        if attempt + 1 < UNMAP_ATTEMPTS {
            #[cfg(feature = "std")]
            std::thread::yield_now();
            #[cfg(not(feature = "std"))]
            core::hint::spin_loop();
        }
    }
    unmap_failed(ptr.as_ptr() as usize, len, last)
}

/// Aborts after an unmap failed for good, naming the range and the error code.
#[cold]
fn unmap_failed(addr: usize, len: usize, error: Option<SysError>) -> ! {
    let mut message = Message::default();
    let code = match error {
        Some(SysError::Os(e)) => e.raw(),
        _ => 0,
    };
    let _ = core::fmt::Write::write_fmt(
        &mut message,
        format_args!(
            "memvisor-vmem: fatal: unmapping reservation {addr:#x} of {len} bytes failed \
             {UNMAP_ATTEMPTS} times (OS error {code}); aborting so that the memory does not stay \
             mapped\n"
        ),
    );
    abort_with(message.as_bytes())
}

/// A message formatted without allocating (the heap may be what is failing).
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Message {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
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
    /// Whether a fill of a hole was refused because part of its range is mapped
    /// (`EEXIST` of `MAP_FIXED_NOREPLACE`).
    pub(crate) fn partly_mapped(self) -> bool {
        #[cfg(unix)]
        {
            matches!(self, SysError::Os(e) if e.raw() == libc::EEXIST)
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// The public error for this failure during `operation`.
    pub(crate) fn during(self, operation: Operation) -> Error {
        match self {
            SysError::Os(source) => Error::Os { operation, source },
            SysError::Unsupported => Error::Unsupported { operation },
        }
    }
}

/// `madvise`-style advice the platform layers know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    any(not(target_os = "linux"), miri),
    allow(dead_code, reason = "only Linux gives every advice")
)]
pub(crate) enum SysAdvice {
    /// Leave the range out of children made by `fork`.
    DontFork,
    /// Undo `DontFork`.
    DoFork,
    /// Leave the range out of core dumps.
    DontDump,
    /// Undo `DontDump`.
    DoDump,
    /// The contents may be freed lazily (`MADV_FREE`): they read back unchanged or as zero.
    Free,
    /// Drop the pages now: private pages read as zero, shared ones from their backing.
    DontNeed,
    /// Drop the pages and their backing (`MADV_REMOVE`): they read as zero.
    Remove,
}

/// What mapping a file needs to know of it, from [`file_facts`].
#[cfg(unix)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FileFacts {
    /// The size of the pages the system maps the file in, where it has one of its own (a
    /// hugetlbfs file's huge page size): a mapping of the file is rounded up to a multiple of
    /// it, so a shorter range would replace memory past its end.
    pub(crate) page_size: Option<usize>,
    /// The file's length, for a regular file (memfds and hugetlbfs files included); devices
    /// and other files have none that bounds a mapping.
    pub(crate) len: Option<u64>,
    /// Whether the system refuses to punch holes in the file through a mapping of this
    /// descriptor (`MADV_REMOVE`): it is not open for writing, or the file is sealed against
    /// writes.
    pub(crate) no_hole_punch: bool,
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
