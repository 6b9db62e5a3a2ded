//! Functions about the library itself: version, status messages, flags, configuration.

use std::ffi::c_char;

use memvisor_arena::Arena;

use crate::status::{self, Status, guard};
use crate::types::{Config, write_plain};

/// The library's version, a static NUL-terminated string such as `"0.1.0"`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn memvisor_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The static, NUL-terminated message of a status code; `"unknown status code"` for a value
/// that is not one. Never null; do not free it.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn memvisor_status_message(status: i32) -> *const c_char {
    status::message_ptr(status)
}

/// The `MEMVISOR_FLAG_*` bits this build supports. A context may still drop some of them
/// (see `memvisor_context_accepted_flags`): `DECOMMIT` and `GUARD` need a reservation-backed
/// context.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn memvisor_supported_flags() -> u32 {
    Arena::supported_flags().bits()
}

/// Fills `*config` with the defaults (1 MiB chunks, 16-byte minimum block, chunks aligned to
/// 4 KiB, no flags) and sets its `size`.
///
/// Errors: `NULL_POINTER` if `config` is null.
///
/// Thread safety: any thread; `*config` is the caller's.
///
/// # Safety
/// `config` is null or points to a writable `memvisor_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_config_init(config: *mut Config) -> Status {
    guard(|| {
        if config.is_null() {
            return Err(Status::NullPointer);
        }
        // SAFETY: the caller's promise: writable and of the structure's size.
        unsafe { write_plain(config, Config::default()) };
        Ok(())
    })
}
