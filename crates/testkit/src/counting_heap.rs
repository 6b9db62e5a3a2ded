//! A global allocator that counts the requests each thread makes of the heap and the bytes
//! they ask for (tests run beside each other), for tests and fuzz targets that bound what a
//! call allocates: the requests stand for the work a call does, the bytes for its memory, and
//! neither depends on how busy the machine is.
//!
//! ```
//! use memvisor_testkit::counting_heap::{Counting, Usage, requested_by, used_by};
//!
//! #[global_allocator]
//! static ALLOCATOR: Counting = Counting;
//!
//! let (v, bytes) = requested_by(|| Vec::<u64>::with_capacity(100));
//! assert_eq!((v.capacity(), bytes), (100, 800));
//! let (_, usage) = used_by(|| (Box::new(1u32), Box::new(2u64)));
//! assert_eq!(usage, Usage { requests: 2, bytes: 12 });
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator over [`System`] that counts every request (allocation or
/// reallocation) on its thread and adds its size (a reallocation's new size) to the thread's
/// bytes.
#[derive(Debug)]
pub struct Counting;

thread_local! {
    static REQUESTS: Cell<usize> = const { Cell::new(0) };
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = REQUESTS.try_with(|n| n.set(n.get().wrapping_add(1)));
    let _ = REQUESTED.try_with(|n| n.set(n.get().wrapping_add(bytes)));
}

/// What a call asked of the heap on its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocations and reallocations.
    pub requests: usize,
    /// Bytes they asked for (a reallocation's new size).
    pub bytes: usize,
}

fn usage_now() -> Usage {
    Usage {
        requests: REQUESTS.with(Cell::get),
        bytes: REQUESTED.with(Cell::get),
    }
}

/// `f`'s result and what this thread asked of the heap while it ran (nothing in a binary
/// whose allocator is not [`Counting`]).
pub fn used_by<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let before = usage_now();
    let out = f();
    let after = usage_now();
    let usage = Usage {
        requests: after.requests.wrapping_sub(before.requests),
        bytes: after.bytes.wrapping_sub(before.bytes),
    };
    (out, usage)
}

/// `f`'s result and the bytes this thread requested while it ran (0 in a binary whose
/// allocator is not [`Counting`]).
pub fn requested_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (out, usage) = used_by(f);
    (out, usage.bytes)
}

// SAFETY: every call is passed to `System` unchanged; the count only observes sizes and
// allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
