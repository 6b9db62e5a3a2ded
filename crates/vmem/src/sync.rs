//! The concurrency seam: the atomics and cells of the lock-free code in this crate come from
//! here, from `loom` when built with `--cfg loom` (so that its model checker sees every access
//! and explores every interleaving) and from `core` otherwise.
//!
//! Memory that lives inside a [`Reservation`](crate::Reservation) is raw bytes, which loom
//! cannot follow. [`AccessLog`] gives such memory a loom-visible shadow: one loom cell per
//! slot, touched whenever the real slot is read or written, so that loom checks that every read
//! of a slot happens after its write; and one more per slot for its memory's commit, written
//! when the slot's pages are committed and read at every access of the slot, so that loom
//! checks that no slot is used before its commit happened. Outside loom it is empty and costs
//! nothing.

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
    /// The commit of each slot's memory.
    #[cfg(loom)]
    commits: alloc::boxed::Box<[loom::cell::UnsafeCell<()>]>,
    /// Which slots' commits are recorded, taken while a commit is recorded. Committers of
    /// overlapping ranges run at once and commit the same pages again, which changes nothing
    /// (committing is idempotent) and so is no write: only a slot's first commit is recorded,
    /// and in turn. A slot's user that did not commit it first learns of the commit through
    /// the vector's atomics (or this lock, if it committed the slot again), which is what loom
    /// checks.
    #[cfg(loom)]
    committing: loom::sync::Mutex<alloc::vec::Vec<bool>>,
}

impl AccessLog {
    /// A log of `len` slots (only allocated under loom, where capacities are tiny).
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn new(len: usize) -> Self {
        Self {
            #[cfg(loom)]
            cells: (0..len).map(|_| loom::cell::UnsafeCell::new(())).collect(),
            #[cfg(loom)]
            commits: (0..len).map(|_| loom::cell::UnsafeCell::new(())).collect(),
            #[cfg(loom)]
            committing: loom::sync::Mutex::new(alloc::vec![false; len]),
        }
    }

    /// Records that the memory of slots `from..to` was committed.
    #[inline]
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn commit(&self, from: usize, to: usize) {
        #[cfg(loom)]
        {
            let mut recorded = self.committing.lock().unwrap();
            for (cell, recorded) in self.commits[from..to].iter().zip(&mut recorded[from..to]) {
                if !core::mem::replace(recorded, true) {
                    cell.with_mut(|_| ());
                }
            }
        }
    }

    /// Records a write of slot `index`; loom fails the model if it races with another access.
    #[inline]
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn write(&self, index: usize) {
        #[cfg(loom)]
        {
            self.commits[index].with(|_| ());
            self.cells[index].with_mut(|_| ());
        }
    }

    /// Records a read of slot `index`; loom fails the model if it races with a write.
    #[inline]
    #[cfg_attr(not(loom), allow(unused_variables, reason = "used only under loom"))]
    pub(crate) fn read(&self, index: usize) {
        #[cfg(loom)]
        {
            self.commits[index].with(|_| ());
            self.cells[index].with(|_| ());
        }
    }
}
