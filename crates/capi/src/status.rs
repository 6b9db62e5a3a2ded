//! [`Status`]: the code every function returns, its static message, and the panic guard.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use memvisor_arena::Error;

/// What a call did: `MEMVISOR_STATUS_OK` or why it failed. A failed call changes nothing
/// (except where a function says otherwise) and writes no output.
///
/// In C the codes are constants of `enum memvisor_status` and values of type
/// `memvisor_status` (an `int32_t`), so a code from a newer library is still a valid value.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be null was null.
    NullPointer = 1,
    /// A context or client handle is null, deleted or was never handed out. Judged after
    /// the arguments a function can judge alone (`NULL_POINTER`, `STRUCT_SIZE`,
    /// `UNSUPPORTED_ALIGNMENT`, `TOO_LARGE` for a size no block can have), which answer
    /// first whatever the handle: a null output pointer with a deleted handle is
    /// `NULL_POINTER`.
    InvalidHandle = 2,
    /// The configuration is out of range: chunk size not a power of two in 64 KiB..=64 MiB,
    /// minimum block not a power of two in 16..=256, or alignment not a power of two in
    /// 16..=chunk size.
    InvalidConfig = 3,
    /// The configuration sets flag bits this library does not define.
    UnknownFlags = 4,
    /// A structure's size (its `size` field, or the size given with it) is one no version of
    /// the header has: smaller than the `size` field, or ending inside a field or in the
    /// padding after one, short of this library's whole structure.
    StructSize = 5,
    /// The memory block cannot hold one aligned chunk.
    BlockTooSmall = 6,
    /// The requested block is larger than the largest block of the context (a size larger
    /// than any context's block, 64 TiB less 64 MiB with 64-bit pointers, 2 GiB less 64 KiB
    /// with 32-bit ones, is refused so before the handle is looked up), or the memory
    /// block given to `memvisor_context_create` is longer than `PTRDIFF_MAX` bytes or reaches
    /// the end of the address space (`memory + len` over `UINTPTR_MAX`, a block whose last
    /// byte is at `UINTPTR_MAX` included).
    TooLarge = 7,
    /// The requested alignment is not a power of two or exceeds the context's largest
    /// alignment.
    UnsupportedAlignment = 8,
    /// The allocation would take the client over its quota.
    QuotaExceeded = 9,
    /// No chunk (or, for a block larger than a chunk, no run of contiguous chunks) of the
    /// context is left for the block.
    OutOfMemory = 10,
    /// The address is not inside the context's memory, its chunks: of a caller's block, the
    /// bytes before chunk 0 and a tail shorter than a chunk are not the context's either.
    ForeignPointer = 11,
    /// The address lies in memory this client does not hold.
    NotOwned = 12,
    /// The address is not the start of a live block (interior, already freed, never
    /// handed out).
    NotABlock = 13,
    /// The context still has live clients (or calls in flight on other threads).
    ContextBusy = 14,
    /// A limit of the library is reached: live clients of the context (2^30) or of the
    /// process (2^31), or handles.
    LimitReached = 15,
    /// The operating system refused a memory operation (reserve, commit, protect), or the
    /// memory for a context's side tables (about 2% of its length) was refused.
    Os = 16,
    /// An internal error: a broken invariant was caught (a Rust panic) or an unexpected
    /// failure occurred. A panic during a call on a context or one of its clients poisons
    /// that context: later calls on it and on its clients answer `POISONED`.
    Internal = 17,
    /// The memory block given to `memvisor_context_create` overlaps the memory of a live
    /// context (a caller's block, or the reservation of `memvisor_context_create_reserved`),
    /// a block allocated from one included: contexts do not nest. Nothing is made.
    BlockInUse = 18,
    /// The context (of this client) is poisoned: an earlier call on it or on one of its
    /// clients was cut short by an internal error (`INTERNAL`) and may have left its state
    /// half-changed, so nothing reaches that state again. Only deleting works: delete its
    /// clients, then the context. Its memory is given back when the context is deleted; the
    /// records of its clients are not.
    ///
    /// Exactly what a poisoned context's calls answer: every function given the context or
    /// one of its clients checks its other arguments first, as for a live context
    /// (`NULL_POINTER`, `STRUCT_SIZE`, `UNSUPPORTED_ALIGNMENT`, `TOO_LARGE` for a size no
    /// block can have), then answers `POISONED` and writes nothing;
    /// `memvisor_client_delete` answers `OK`, `memvisor_context_delete` `CONTEXT_BUSY` while
    /// a client of it lives or a call that started before the poison is still running, then
    /// `OK`; once deleted, their handles are `INVALID_HANDLE`. The functions given no handle
    /// (making contexts, `memvisor_config_init`, the version, messages and supported flags)
    /// do not see it. Calls on other threads that had passed their handle's check when the
    /// poison was set run to their end on the context as if it had not been, except
    /// `memvisor_client_create`, which looks again before it makes its client and answers
    /// `POISONED` (no client of a poisoned context escapes the mark).
    Poisoned = 19,
}

impl Status {
    /// Every code, in order.
    pub(crate) const ALL: [Self; 20] = [
        Self::Ok,
        Self::NullPointer,
        Self::InvalidHandle,
        Self::InvalidConfig,
        Self::UnknownFlags,
        Self::StructSize,
        Self::BlockTooSmall,
        Self::TooLarge,
        Self::UnsupportedAlignment,
        Self::QuotaExceeded,
        Self::OutOfMemory,
        Self::ForeignPointer,
        Self::NotOwned,
        Self::NotABlock,
        Self::ContextBusy,
        Self::LimitReached,
        Self::Os,
        Self::Internal,
        Self::BlockInUse,
        Self::Poisoned,
    ];

    /// The code as C sees it.
    #[must_use]
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The status with this code, if there is one.
    #[must_use]
    pub fn from_code(code: i32) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// A one-line description, NUL-terminated.
    #[must_use]
    pub const fn message_with_nul(self) -> &'static str {
        match self {
            Self::Ok => "success\0",
            Self::NullPointer => "a required pointer argument is null\0",
            Self::InvalidHandle => "the handle is null, deleted or was never handed out\0",
            Self::InvalidConfig => "the configuration is out of range\0",
            Self::UnknownFlags => "the configuration sets undefined flag bits\0",
            Self::StructSize => "the structure's size matches no version of the structure\0",
            Self::BlockTooSmall => "the memory block cannot hold one aligned chunk\0",
            Self::TooLarge => "the block is larger than the context's largest block\0",
            Self::UnsupportedAlignment => {
                "the alignment is not a power of two or exceeds the context's largest alignment\0"
            }
            Self::QuotaExceeded => "the allocation would exceed the client's quota\0",
            Self::OutOfMemory => "out of memory: no chunk (or run of chunks) left in the context\0",
            Self::ForeignPointer => "the address is not inside the context\0",
            Self::NotOwned => "the address lies in memory the client does not hold\0",
            Self::NotABlock => "the address is not the start of a live block\0",
            Self::ContextBusy => "the context still has live clients or calls in flight\0",
            Self::LimitReached => {
                "a limit of the library is reached (live clients of a context or of the process, or handles)\0"
            }
            Self::Os => "the operating system refused a memory operation\0",
            Self::Internal => "internal error (a broken invariant was caught)\0",
            Self::BlockInUse => "the memory block overlaps the memory of a live context\0",
            Self::Poisoned => {
                "the context is poisoned by an earlier internal error; only deleting works\0"
            }
        }
    }

    /// A one-line description.
    #[must_use]
    pub fn message(self) -> &'static str {
        let m = self.message_with_nul();
        &m[..m.len() - 1]
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidChunkSize { .. }
            | Error::InvalidMinBlock { .. }
            | Error::InvalidAlignment { .. }
            | Error::InvalidBackingAlignment { .. } => Self::InvalidConfig,
            Error::BackingTooSmall { .. } | Error::EmptyBacking => Self::BlockTooSmall,
            Error::TooLarge { .. } | Error::BackingTooLarge { .. } => Self::TooLarge,
            Error::UnsupportedAlignment { .. } => Self::UnsupportedAlignment,
            Error::QuotaExceeded { .. } => Self::QuotaExceeded,
            Error::OutOfMemory { .. } => Self::OutOfMemory,
            Error::Foreign { .. } => Self::ForeignPointer,
            Error::NotOwned { .. } => Self::NotOwned,
            Error::NotABlock { .. } => Self::NotABlock,
            Error::ClientIdsExhausted { .. } => Self::LimitReached,
            Error::Vmem(_) | Error::TablesUnavailable { .. } => Self::Os,
            _ => Self::Internal,
        }
    }
}

/// Message for an unknown code.
const UNKNOWN: &str = "unknown status code\0";

/// The static, NUL-terminated message of `code` (C: `memvisor_status_message`).
#[must_use]
pub(crate) fn message_ptr(code: i32) -> *const c_char {
    Status::from_code(code)
        .map_or(UNKNOWN, Status::message_with_nul)
        .as_ptr()
        .cast()
}

/// Runs one entry point: a panic inside becomes [`Status::Internal`] and never unwinds into
/// the caller.
#[inline(always)]
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Status>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(status)) => status,
        Err(payload) => {
            // Dropping a payload may itself panic: catch that too, and keep the second payload
            // rather than risk a third.
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            Status::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    #[test]
    fn from_code_every_code_round_trips() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(usize::try_from(s.code()).unwrap(), i);
            assert_eq!(Status::from_code(s.code()), Some(*s));
        }
        assert_eq!(Status::from_code(-1), None);
        assert_eq!(Status::from_code(20), None);
    }

    #[test]
    fn message_every_code_is_one_nul_terminated_line() {
        for s in Status::ALL {
            let m = s.message_with_nul();
            assert!(m.ends_with('\0'));
            assert!(!s.message().contains('\0'));
            assert!(!s.message().is_empty());
            // SAFETY: a static NUL-terminated string.
            let c = unsafe { CStr::from_ptr(message_ptr(s.code())) };
            assert_eq!(c.to_str().unwrap(), s.message());
        }
        assert_eq!(
            Status::TooLarge.message(),
            "the block is larger than the context's largest block"
        );
        // SAFETY: as above.
        let c = unsafe { CStr::from_ptr(message_ptr(99)) };
        assert_eq!(c.to_str().unwrap(), "unknown status code");
    }

    #[test]
    fn from_error_maps_each_kind() {
        assert_eq!(
            Status::from(Error::OutOfMemory {
                size: 1,
                requested: 1,
                exhausted: memvisor_arena::Exhausted::HostMemory
            }),
            Status::OutOfMemory
        );
        assert_eq!(
            Status::from(Error::NotABlock { addr: 1 }),
            Status::NotABlock
        );
        assert_eq!(
            Status::from(Error::InvalidMinBlock {
                size: 3,
                min: 16,
                max: 256
            }),
            Status::InvalidConfig
        );
        assert_eq!(
            Status::from(Error::ClientIdsExhausted { max: 1 }),
            Status::LimitReached
        );
        assert_eq!(Status::from(Error::EmptyBacking), Status::BlockTooSmall);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "the second payload is kept on purpose, which Miri reports as a leak"
    )]
    fn guard_panic_whose_payload_panics_on_drop_becomes_internal() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("payload drop");
            }
        }
        let s = guard(|| std::panic::panic_any(Bomb));
        assert_eq!(s, Status::Internal);
    }

    #[test]
    fn guard_panic_becomes_internal() {
        let s = guard(|| panic!("broken invariant"));
        assert_eq!(s, Status::Internal);
        assert_eq!(guard(|| Ok(())), Status::Ok);
        assert_eq!(guard(|| Err(Status::NotOwned)), Status::NotOwned);
    }
}
