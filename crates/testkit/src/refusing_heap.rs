//! A global allocator that refuses heap requests on demand, for tests that check that memory
//! the heap refuses is a typed error that changes nothing, never an abort of the process.
//!
//! What is refused is planned per thread (tests run beside each other, and other threads of
//! the test binary must be served): a test runs the call under one of [`refusing_after`],
//! [`refusing`], [`refusing_one_after`], [`refusing_one_of_size`] or [`pausing_then_refusing`],
//! and every request of other threads, and of this thread outside the call, is granted. So is
//! every request of a panicking thread (the panic's message and backtrace are heap requests),
//! and a call that panics leaves its thread granting all again. The
//! allocator can also refuse, on every thread and at all times, any request over a size, as a
//! process under a memory limit would.
//!
//! A test file makes it its own allocator:
//!
//! ```
//! use memvisor_testkit::refusing_heap::{Refusing, refusing};
//!
//! #[global_allocator]
//! static ALLOCATOR: Refusing = Refusing::up_to(64 << 20);
//!
//! let mut v: Vec<u8> = Vec::new();
//! assert!(refusing(|| v.try_reserve(100)).is_err());
//! assert!(v.try_reserve(100).is_ok());
//! ```
//!
//! In a binary whose allocator is another one, the plans refuse nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::time::Duration;

/// A global allocator over [`System`] that refuses (returns null for) every request over its
/// limit, and on a thread inside one of this module's plans, the requests the plan names.
#[derive(Debug)]
pub struct Refusing {
    max_request: usize,
    min_align: usize,
}

impl Refusing {
    /// Refuses only what the thread's plan names.
    pub const ON_DEMAND: Self = Self {
        max_request: usize::MAX,
        min_align: 1,
    };

    /// Also refuses, on every thread, any request over `max_request` bytes.
    pub const fn up_to(max_request: usize) -> Self {
        Self {
            max_request,
            min_align: 1,
        }
    }

    /// Lets the thread's plan see only requests aligned to `min_align` bytes or more: smaller
    /// ones (strings and byte buffers the code under test makes without a fallible call) are
    /// neither counted nor refused by the plan.
    pub const fn aligned_from(self, min_align: usize) -> Self {
        Self {
            max_request: self.max_request,
            min_align,
        }
    }

    fn refuses(&self, layout: Layout) -> bool {
        if layout.size() > self.max_request {
            return true;
        }
        // A panicking thread's requests (its message, payload, backtrace) are granted and not
        // counted: refused, they would abort the process, or hang it, as the failure's hook
        // waits for the backtrace lock the panic holds. `panicking` allocates nothing.
        layout.align() >= self.min_align
            && !std::thread::panicking()
            && PLAN
                .try_with(|plan| plan_refuses(plan, layout.size()))
                .unwrap_or(false)
    }
}

/// What a thread's requests get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Every request is granted.
    GrantAll,
    /// This many are granted, then every later one is refused.
    RefuseAllAfter(usize),
    /// This many are granted, the next one is refused, and later ones are granted.
    RefuseOneAfter(usize),
    /// The first request of exactly this many bytes is refused; every other one is granted.
    RefuseOneOfSize(usize),
    /// The next request waits this long and is granted; every later one is refused.
    PauseThenRefuseAll(Duration),
}

thread_local! {
    static PLAN: Cell<Plan> = const { Cell::new(Plan::GrantAll) };
}

/// Whether the thread's plan refuses a request of `size` bytes; moves the plan on.
fn plan_refuses(plan: &Cell<Plan>, size: usize) -> bool {
    match plan.get() {
        Plan::GrantAll => false,
        Plan::RefuseAllAfter(0) => true,
        Plan::RefuseAllAfter(n) => {
            plan.set(Plan::RefuseAllAfter(n - 1));
            false
        }
        Plan::RefuseOneAfter(0) => {
            plan.set(Plan::GrantAll);
            true
        }
        Plan::RefuseOneAfter(n) => {
            plan.set(Plan::RefuseOneAfter(n - 1));
            false
        }
        Plan::RefuseOneOfSize(refused) => {
            let hit = size == refused;
            if hit {
                plan.set(Plan::GrantAll);
            }
            hit
        }
        Plan::PauseThenRefuseAll(pause) => {
            plan.set(Plan::GrantAll);
            std::thread::sleep(pause);
            plan.set(Plan::RefuseAllAfter(0));
            false
        }
    }
}

/// Puts the thread back on [`Plan::GrantAll`] when dropped, also when the call panics.
struct Planned;

impl Planned {
    fn start(plan: Plan) -> Self {
        PLAN.with(|p| p.set(plan));
        Self
    }

    /// The plan as the call left it; the thread grants all again.
    fn finish(self) -> Plan {
        PLAN.with(|p| p.replace(Plan::GrantAll))
    }
}

impl Drop for Planned {
    fn drop(&mut self) {
        let _ = PLAN.try_with(|p| p.set(Plan::GrantAll));
    }
}

/// `f`'s result with every heap request of this thread after the first `granted` refused.
pub fn refusing_after<T>(granted: usize, f: impl FnOnce() -> T) -> T {
    let planned = Planned::start(Plan::RefuseAllAfter(granted));
    let out = f();
    planned.finish();
    out
}

/// `f`'s result with every heap request of this thread refused.
pub fn refusing<T>(f: impl FnOnce() -> T) -> T {
    refusing_after(0, f)
}

/// `f`'s result with the one heap request of this thread after the first `granted` refused
/// (later ones are granted), and whether that request was made.
pub fn refusing_one_after<T>(granted: usize, f: impl FnOnce() -> T) -> (T, bool) {
    let planned = Planned::start(Plan::RefuseOneAfter(granted));
    let out = f();
    let refused = planned.finish() == Plan::GrantAll;
    (out, refused)
}

/// `f`'s result with the first heap request of this thread of exactly `size` bytes refused,
/// and whether such a request was made.
pub fn refusing_one_of_size<T>(size: usize, f: impl FnOnce() -> T) -> (T, bool) {
    let planned = Planned::start(Plan::RefuseOneOfSize(size));
    let out = f();
    let refused = planned.finish() == Plan::GrantAll;
    (out, refused)
}

/// `f`'s result with the next heap request of this thread granted after waiting `pause` (so
/// that another thread can run in between), and every later one refused.
pub fn pausing_then_refusing<T>(pause: Duration, f: impl FnOnce() -> T) -> T {
    let planned = Planned::start(Plan::PauseThenRefuseAll(pause));
    let out = f();
    planned.finish();
    out
}

// SAFETY: requests that are not refused are passed to `System` unchanged; refused ones get
// null, which `GlobalAlloc` allows. Deciding allocates nothing (a `Cell` in a thread local
// with a `const` initializer).
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.refuses(layout) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.refuses(layout) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The caller promises that `new_size` rounded up to the alignment does not overflow
        // `isize`, so the layout is valid; the fallback is never taken.
        let new = Layout::from_size_align(new_size, layout.align()).unwrap_or(layout);
        if self.refuses(new) {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
