//! A global allocator that counts the bytes each thread asks of the heap (tests run beside
//! each other), for tests that bound what a call allocates.
//!
//! ```
//! use memvisor_testkit::counting_heap::{Counting, requested_by};
//!
//! #[global_allocator]
//! static ALLOCATOR: Counting = Counting;
//!
//! let (v, bytes) = requested_by(|| Vec::<u64>::with_capacity(100));
//! assert_eq!((v.capacity(), bytes), (100, 800));
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator over [`System`] that adds the size of every request (and the new size
/// of every reallocation) to its thread's count.
#[derive(Debug)]
pub struct Counting;

thread_local! {
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = REQUESTED.try_with(|n| n.set(n.get().wrapping_add(bytes)));
}

/// `f`'s result and the bytes this thread requested while it ran (0 in a binary whose
/// allocator is not [`Counting`]).
pub fn requested_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = REQUESTED.with(Cell::get);
    let out = f();
    (out, REQUESTED.with(Cell::get).wrapping_sub(before))
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
