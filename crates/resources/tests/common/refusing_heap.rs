//! A global allocator that refuses heap requests on demand, per thread (tests run beside each
//! other), for tests that check a refused allocation is an error that changes nothing. A test
//! file includes it with `#[path = "common/refusing_heap.rs"] mod refusing_heap;` and makes a
//! [`Refusing`] its `#[global_allocator]`.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Refuses every request larger than its limit, as a process under a memory limit would, and
/// on a thread inside [`refusing_after`], every request after the granted ones.
pub struct Refusing {
    max_request: usize,
}

impl Refusing {
    /// Refuses only inside [`refusing_after`] and [`refusing`].
    pub const ON_DEMAND: Self = Self {
        max_request: usize::MAX,
    };

    /// Also refuses, on every thread, any request over `max_request` bytes.
    pub const fn up_to(max_request: usize) -> Self {
        Self { max_request }
    }

    fn refuses(&self, size: usize) -> bool {
        size > self.max_request
            || REFUSE_AFTER
                .try_with(|left| match left.get() {
                    Some(0) => true,
                    Some(n) => {
                        left.set(Some(n - 1));
                        false
                    }
                    None => false,
                })
                .unwrap_or(false)
    }
}

thread_local! {
    static REFUSE_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// `f`'s result with every heap request on this thread after the first `granted` refused.
pub fn refusing_after<T>(granted: usize, f: impl FnOnce() -> T) -> T {
    REFUSE_AFTER.with(|left| left.set(Some(granted)));
    let out = f();
    REFUSE_AFTER.with(|left| left.set(None));
    out
}

/// `f`'s result with every heap request on this thread refused.
pub fn refusing<T>(f: impl FnOnce() -> T) -> T {
    refusing_after(0, f)
}

// SAFETY: requests that are not refused are passed to `System` unchanged; refused ones get
// null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.refuses(layout.size()) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.refuses(new_size) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
