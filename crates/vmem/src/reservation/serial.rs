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
//!
//! The prefaults through `&self` (`prefault_unchecked`, `prefault_read_unchecked`) hold it
//! shared, from their check that the range is committed to the end of their population: a
//! decommit, protect, guard or map between the two would make the touching fallback fault.
//! They change no page's state, so they need not wait for each other, and several threads
//! populating parts of one reservation at once still run at once.

#[cfg(not(feature = "std"))]
use core::sync::atomic::{AtomicUsize, Ordering};

/// A lock without data, held only for the system calls of one operation: a `std` reader-writer
/// lock, or without `std` a count taken by spinning. [`hold`](Self::hold) holds it alone,
/// [`share`](Self::share) together with other sharers.
#[derive(Debug, Default)]
pub(super) struct Serial {
    #[cfg(feature = "std")]
    held: std::sync::RwLock<()>,
    /// `EXCLUSIVE` while held alone, else the number of sharers.
    #[cfg(not(feature = "std"))]
    held: AtomicUsize,
}

/// The value of `Serial::held` without `std` while one call holds it alone.
#[cfg(not(feature = "std"))]
const EXCLUSIVE: usize = usize::MAX;

/// Proof that [`Serial`] is held alone; releases it when dropped (also while unwinding).
#[derive(Debug)]
pub(super) struct SerialGuard<'a> {
    #[cfg(feature = "std")]
    _held: std::sync::RwLockWriteGuard<'a, ()>,
    #[cfg(not(feature = "std"))]
    serial: &'a Serial,
}

/// Proof that [`Serial`] is held shared; releases its share when dropped.
#[derive(Debug)]
pub(super) struct SharedGuard<'a> {
    #[cfg(feature = "std")]
    _held: std::sync::RwLockReadGuard<'a, ()>,
    #[cfg(not(feature = "std"))]
    serial: &'a Serial,
}

impl Serial {
    /// Waits until no other call holds it, then holds it until the guard is dropped.
    pub(super) fn hold(&self) -> SerialGuard<'_> {
        #[cfg(feature = "std")]
        {
            // The lock guards no data: a panic while it was held left nothing half-changed
            // that it protects, so a poisoned lock is taken as it is.
            SerialGuard {
                _held: self
                    .held
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            while self
                .held
                .compare_exchange_weak(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            SerialGuard { serial: self }
        }
    }

    /// Waits until no call holds it alone, then shares it with other sharers until the guard
    /// is dropped.
    pub(super) fn share(&self) -> SharedGuard<'_> {
        #[cfg(feature = "std")]
        {
            // As in `hold`: a poisoned lock is taken as it is.
            SharedGuard {
                _held: self
                    .held
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            let mut now = self.held.load(Ordering::Relaxed);
            loop {
                // One sharer less than `EXCLUSIVE`: a count that high cannot be reached by
                // threads that each hold a share, but is kept off all the same.
                if now >= EXCLUSIVE - 1 {
                    core::hint::spin_loop();
                    now = self.held.load(Ordering::Relaxed);
                    continue;
                }
                match self.held.compare_exchange_weak(
                    now,
                    now + 1,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return SharedGuard { serial: self },
                    Err(seen) => now = seen,
                }
            }
        }
    }
}

#[cfg(not(feature = "std"))]
impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        self.serial.held.store(0, Ordering::Release);
    }
}

#[cfg(not(feature = "std"))]
impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.serial.held.fetch_sub(1, Ordering::Release);
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
        assert!(serial.held.try_read().is_err());
        drop(held);
        assert!(serial.held.try_write().is_ok());
    }

    #[cfg(feature = "std")]
    #[test]
    fn shares_exclude_a_hold_not_each_other() {
        let serial = Serial::default();
        let one = serial.share();
        let two = serial.share();
        assert!(serial.held.try_write().is_err());
        drop(one);
        assert!(serial.held.try_write().is_err());
        drop(two);
        assert!(serial.held.try_write().is_ok());
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
