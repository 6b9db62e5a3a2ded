//! Functions about the library itself: version, status messages, flags, configuration.

use std::ffi::c_char;

use memvisor_arena::Arena;

use crate::status::{self, Status, guard};
use crate::types::{Config, FIRST_CONFIG_SIZE, served_len, write_plain};

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

/// Fills the first `size` bytes of `*config` with the defaults (1 MiB chunks, 16-byte minimum
/// block, chunks aligned to 4 KiB, no flags) and sets its `size` to the bytes filled. `size`
/// is the caller's `sizeof(memvisor_config)`, which the header's `memvisor_config_init`
/// macro passes: a structure from an older header (smaller) gets only the fields it has; a
/// newer header's (larger) gets this library's fields and its `size` says so, the bytes past
/// them left alone. Nothing past `size` bytes is ever written.
///
/// Errors: `NULL_POINTER` if `config` is null; `STRUCT_SIZE` if `size` is one no header of
/// the structure has (under the `size` field, or ending inside a field or the padding after
/// it); nothing is written then.
///
/// Thread safety: any thread; `*config` is the caller's.
///
/// # Safety
/// `config` is null or points to `size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_config_init_sized(config: *mut Config, size: usize) -> Status {
    guard(|| {
        if config.is_null() {
            return Err(Status::NullPointer);
        }
        let len = served_len::<Config>(size)?;
        // SAFETY: the caller's promise: `size >= len` writable bytes.
        unsafe { write_plain(config, Config::default(), len) };
        Ok(())
    })
}

/// Fills `*config` with the defaults as `memvisor_config_init_sized` does for the structure
/// of the first header (40 bytes on 64-bit targets, 20 on 32-bit ones), whatever size the
/// structure has now. In C the header's `memvisor_config_init(config)` macro calls
/// `memvisor_config_init_sized(config, sizeof(struct memvisor_config))` instead (`config` may
/// be anything a `memvisor_config *` parameter takes, `NULL` and, in C, a `void *` included;
/// `memvisor_config_init(NULL)` returns `NULL_POINTER`); this function serves programs built
/// before that macro existed.
///
/// Errors: `NULL_POINTER` if `config` is null.
///
/// Thread safety: any thread; `*config` is the caller's.
///
/// # Safety
/// `config` is null or points to a writable `memvisor_config` of the first header (or a
/// larger one).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memvisor_config_init(config: *mut Config) -> Status {
    // SAFETY: the caller's promise.
    unsafe { memvisor_config_init_sized(config, FIRST_CONFIG_SIZE) }
}
