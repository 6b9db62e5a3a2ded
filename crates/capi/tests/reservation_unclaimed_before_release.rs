//! A reservation-backed context that is not made gives its address space back only once it
//! no longer claims it: a reservation made at that moment (the system hands the same
//! addresses out again at once) is never refused with `BLOCK_IN_USE`, whichever request of
//! the failed call the host's allocator refused.
//!
//! The global allocator here refuses, on a thread whose `REFUSE_AFTER` is set, every request
//! after that many more; once it has refused one, every memory block given back on that
//! thread first makes a reservation of the same length (and deletes it if made): at the
//! moment the failed context's reservation has just been released, that is the reservation
//! another thread could make there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::ptr;

use memvisor::status::Status;
use memvisor::types::Context;
use memvisor::*;

struct Refusing;

thread_local! {
    /// Requests left before every later one is refused, if set.
    static REFUSE_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether a request has been refused since the probes were armed.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
    /// Whether memory given back makes a probing reservation.
    static PROBING: Cell<bool> = const { Cell::new(false) };
    /// Whether a probe is running (its own memory is not probed).
    static IN_PROBE: Cell<bool> = const { Cell::new(false) };
    /// The statuses of the probes.
    static PROBES: RefCell<Vec<Status>> = const { RefCell::new(Vec::new()) };
}

/// The length of every reservation of the test.
const LEN: usize = 8 << 20;

fn refused() -> bool {
    let refuse = REFUSE_AFTER
        .try_with(|left| match left.get() {
            Some(0) => true,
            Some(n) => {
                left.set(Some(n - 1));
                false
            }
            None => false,
        })
        .unwrap_or(false);
    if refuse {
        let _ = REFUSED.try_with(|r| r.set(true));
    }
    refuse
}

/// Makes a reservation of `LEN` bytes and deletes it, recording the status, if this thread
/// probes, a request was refused, and no probe runs already.
fn probe() {
    let armed = PROBING.try_with(Cell::get).unwrap_or(false)
        && REFUSED.try_with(Cell::get).unwrap_or(false)
        && !IN_PROBE.try_with(|p| p.replace(true)).unwrap_or(true);
    if !armed {
        return;
    }
    let refuse = REFUSE_AFTER.replace(None);
    let mut ctx = Context { id: 0 };
    // SAFETY: null config (the defaults), `out` writable.
    let status = unsafe { memvisor_context_create_reserved(LEN, ptr::null(), &raw mut ctx) };
    if status == Status::Ok {
        assert_eq!(memvisor_context_delete(ctx), Status::Ok);
    }
    PROBES.with_borrow_mut(|p| p.push(status));
    REFUSE_AFTER.set(refuse);
    IN_PROBE.set(false);
}

// SAFETY: requests that are not refused are passed to `System` unchanged; refused ones get
// null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused() {
            return ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused() {
            return ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        probe();
        // SAFETY: `ptr` was returned by `System` for this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing;

#[test]
#[cfg_attr(miri, ignore = "reserves address space many times")]
fn failed_reserved_create_releases_its_reservation_unclaimed() {
    PROBES.with_borrow_mut(|p| p.reserve(4096));
    for n in 0..1000 {
        let mut ctx = Context { id: 0 };
        REFUSED.set(false);
        PROBING.set(true);
        REFUSE_AFTER.set(Some(n));
        // SAFETY: null config (the defaults), `out` writable.
        let status = unsafe { memvisor_context_create_reserved(LEN, ptr::null(), &raw mut ctx) };
        REFUSE_AFTER.set(None);
        PROBING.set(false);
        let probes = PROBES.with_borrow_mut(std::mem::take);
        assert!(
            !probes.contains(&Status::BlockInUse),
            "refused after {n} requests: a reservation made while the failed call gave its \
             own back got {probes:?}"
        );
        PROBES.with_borrow_mut(|p| p.reserve(4096));
        if status == Status::Ok {
            assert!(n > 0, "a context needs memory of the host");
            assert_eq!(memvisor_context_delete(ctx), Status::Ok);
            return;
        }
        assert_eq!(status, Status::Os, "refused after {n} requests");
        assert_eq!(ctx.id, 0, "no output on error");
    }
    panic!("never succeeded");
}
