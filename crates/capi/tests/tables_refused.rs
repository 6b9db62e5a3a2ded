//! A context whose side tables the host's allocator refuses is the status `OS`, not an abort
//! of the caller's process. The global allocator here refuses any request over 64 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

use memvisor::status::Status;
use memvisor::types::{Client, Context, MEMVISOR_UNLIMITED};
use memvisor::*;

struct Refusing;

const MAX_REQUEST: usize = 64 << 20;

// SAFETY: requests up to `MAX_REQUEST` are passed to `System` unchanged; larger ones get null,
// which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_REQUEST {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_REQUEST {
            return ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing;

#[test]
#[cfg_attr(miri, ignore = "reserves 8 GiB of address space")]
fn context_whose_tables_are_refused_is_os_status() {
    let mut ctx = Context { id: 0 };
    // SAFETY: null config (the defaults), `out` writable.
    let status = unsafe { memvisor_context_create_reserved(8 << 30, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Os);
    assert_eq!(ctx.id, 0, "no output on error");

    // A context whose tables fit works as usual.
    // SAFETY: as above.
    let status = unsafe { memvisor_context_create_reserved(1 << 30, ptr::null(), &raw mut ctx) };
    assert_eq!(status, Status::Ok);
    let mut client = Client { id: 0 };
    // SAFETY: `out` writable.
    let status = unsafe { memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &raw mut client) };
    assert_eq!(status, Status::Ok);
    assert_eq!(memvisor_client_delete(client), Status::Ok);
    assert_eq!(memvisor_context_delete(ctx), Status::Ok);
}
