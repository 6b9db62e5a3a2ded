//! One call at a time: the calls that change which pages the system keeps locked in memory,
//! and every other `&self` call that changes pages' mapping, protection or advice.
//!
//! The system keeps one lock bit per page, not a count: `mlock` of a locked page changes
//! nothing and one `munlock` undoes any number of locks. A lock that fails half-way unlocks the
//! pages it locked that were not locked before it (the `locked` bitmap tells which), and two
//! such calls over the same pages at once would each take the other's pages for their own: a
//! failed lock could unlock pages that another thread's lock had just locked and was about to
//! record. So every call that changes kernel lock state or the `locked` bitmap (lock, unlock,
//! decommit, guard, map, and the content advice that refuses locked pages) runs under
//! [`Serial`], and the bitmap always tells what the system has locked.
//!
//! The advice calls (`advise`, `advise_huge_pages`) take turns with them too: a decommit that
//! maps fresh pages gives them the advice its bitmaps record, and an advice whose system call
//! came before the fresh mapping and whose record came after the decommit read the bitmaps
//! would leave a record the pages do not have.
//!
//! Commit and protect take turns with them as well, from their checks to their records: a
//! commit's `mprotect` followed by a decommit's fresh `PROT_NONE` mapping and only then the
//! commit's record left pages counted committed and read-write that faulted; a protect
//! between a sparse decommit's restored access and its `MADV_DONTNEED` left an uncommitted
//! page inaccessible, which the next sparse commit (no system call) did not make
//! accessible. `tests/concurrent_ops.rs` races them on one reservation and compares the
//! bitmaps with `/proc/self/smaps`.

#[cfg(not(feature = "std"))]
use core::sync::atomic::{AtomicBool, Ordering};

/// A lock without data, held only for the system calls of one operation: a `std` mutex, or
/// without `std` a flag taken by spinning.
#[derive(Debug, Default)]
pub(super) struct Serial {
    #[cfg(feature = "std")]
    held: std::sync::Mutex<()>,
    #[cfg(not(feature = "std"))]
    held: AtomicBool,
}

/// Proof that [`Serial`] is held; releases it when dropped (also while unwinding).
#[derive(Debug)]
pub(super) struct SerialGuard<'a> {
    #[cfg(feature = "std")]
    _held: std::sync::MutexGuard<'a, ()>,
    #[cfg(not(feature = "std"))]
    serial: &'a Serial,
}

impl Serial {
    /// Waits until no other call holds it, then holds it until the guard is dropped.
    pub(super) fn hold(&self) -> SerialGuard<'_> {
        #[cfg(feature = "std")]
        {
            // The mutex guards no data: a panic while it was held left nothing half-changed
            // that it protects, so a poisoned mutex is taken as it is.
            SerialGuard {
                _held: self
                    .held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            while self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            SerialGuard { serial: self }
        }
    }
}

#[cfg(not(feature = "std"))]
impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        self.serial.held.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "std")]
    use super::*;

    #[cfg(feature = "std")]
    #[test]
    fn hold_until_guard_dropped_excludes_others() {
        let serial = Serial::default();
        let held = serial.hold();
        assert!(serial.held.try_lock().is_err());
        drop(held);
        assert!(serial.held.try_lock().is_ok());
    }

    #[cfg(feature = "std")]
    #[test]
    fn hold_from_threads_never_overlaps() {
        use core::sync::atomic::{AtomicUsize, Ordering};

        let serial = Serial::default();
        let inside = AtomicUsize::new(0);
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..rounds {
                        let _held = serial.hold();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                        inside.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(inside.load(Ordering::Relaxed), 0);
    }
}
