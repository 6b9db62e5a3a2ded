//! The concurrency seam: the atomics and cells of the lock-free code in this crate come from
//! here, from `loom` when built with `--cfg loom` (so that its model checker sees every access
//! and explores every interleaving) and from `core` otherwise.
//!
//! Memory that lives inside a [`Reservation`](crate::Reservation) is raw bytes, which loom
//! cannot follow. [`AccessLog`] gives such memory a loom-visible shadow: one loom cell per
//! slot, touched whenever the real slot is read or written, so that loom checks that every read
//! of a slot happens after its write. Outside loom it is empty and costs nothing.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
/// The mutex and condition variable of the call lock's `std` form (`Gate` in
/// `reservation/serial.rs`): `std`'s, under loom too. `tests/loom_serial.rs` builds that file
/// with loom's instead, to model the lock on its own.
#[cfg(feature = "std")]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

/// A shadow of `len` slots for loom's race detector; empty outside loom.
#[derive(Debug)]
pub(crate) struct AccessLog {
    #[cfg(loom)]
    cells: alloc::boxed::Box<[loom::cell::UnsafeCell<()>]>,
}

impl AccessLog {
    /// A log of `len` slots (only allocated under loom, where capacities are tiny).
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn new(len: usize) -> Self {
        Self {
            #[cfg(loom)]
            cells: (0..len).map(|_| loom::cell::UnsafeCell::new(())).collect(),
        }
    }

    /// Records a write of slot `index`; loom fails the model if it races with another access.
    #[inline]
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn write(&self, index: usize) {
        #[cfg(loom)]
        self.cells[index].with_mut(|_| ());
    }

    /// Records a read of slot `index`; loom fails the model if it races with a write.
    #[inline]
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn read(&self, index: usize) {
        #[cfg(loom)]
        self.cells[index].with(|_| ());
    }
}
