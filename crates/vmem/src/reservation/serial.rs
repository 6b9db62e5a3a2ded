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

#[cfg(any(not(feature = "std"), test))]
use crate::sync::{AtomicUsize, Ordering};

/// A lock without data, held only for the system calls of one operation: a `std` reader-writer
/// lock, or without `std` a `Spin`. [`hold`](Self::hold) holds it alone,
/// [`share`](Self::share) together with other sharers.
///
/// Neither form lets a thread take it again while it holds it (a call that holds it calls no
/// other that takes it): a second `hold` waits for itself, and so may a second `share` while
/// another thread waits to hold it.
#[derive(Debug, Default)]
pub(super) struct Serial {
    #[cfg(feature = "std")]
    held: std::sync::RwLock<()>,
    #[cfg(not(feature = "std"))]
    held: Spin,
}

/// Proof that [`Serial`] is held alone; releases it when dropped (also while unwinding).
#[derive(Debug)]
pub(super) struct SerialGuard<'a> {
    #[cfg(feature = "std")]
    _held: std::sync::RwLockWriteGuard<'a, ()>,
    #[cfg(not(feature = "std"))]
    spin: &'a Spin,
}

/// Proof that [`Serial`] is held shared; releases its share when dropped.
#[derive(Debug)]
pub(super) struct SharedGuard<'a> {
    #[cfg(feature = "std")]
    _held: std::sync::RwLockReadGuard<'a, ()>,
    #[cfg(not(feature = "std"))]
    spin: &'a Spin,
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
            self.held.hold();
            SerialGuard { spin: &self.held }
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
            self.held.share();
            SharedGuard { spin: &self.held }
        }
    }
}

#[cfg(not(feature = "std"))]
impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        self.spin.release_hold();
    }
}

#[cfg(not(feature = "std"))]
impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.spin.release_share();
    }
}

/// The value of `Spin::held` while one call holds it alone.
#[cfg(any(not(feature = "std"), test))]
const EXCLUSIVE: usize = usize::MAX;

/// The reader-writer lock of [`Serial`] without `std`: a count taken by spinning. A waiting
/// hold goes before shares asked for after it began to wait (as the `std` lock does on Linux),
/// so a hold waits at most for the shares already held. Built for the unit tests (and
/// `tests/loom_serial.rs`) whatever the features, so that it is tested too.
#[derive(Debug, Default)]
#[cfg(any(not(feature = "std"), test))]
pub(super) struct Spin {
    /// `EXCLUSIVE` while held alone, else the number of sharers.
    held: AtomicUsize,
    /// The number of holds waiting: while there is one, no new share is taken, so that
    /// shares that overlap one another without end cannot keep a hold waiting for ever.
    holds_waiting: AtomicUsize,
}

#[cfg(any(not(feature = "std"), test))]
impl Spin {
    /// Spins until nothing holds it, then holds it alone until [`release_hold`].
    ///
    /// [`release_hold`]: Self::release_hold
    pub(super) fn hold(&self) {
        // A count of waiting threads, each on its own stack: it cannot overflow. It only
        // holds back new shares; `held` alone decides who holds the lock.
        self.holds_waiting.fetch_add(1, Ordering::Relaxed);
        while self
            .held
            .compare_exchange_weak(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spin();
        }
        self.holds_waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Spins until it is not held alone, then holds a share until [`release_share`].
    ///
    /// [`release_share`]: Self::release_share
    pub(super) fn share(&self) {
        let mut now = self.held.load(Ordering::Relaxed);
        loop {
            // One sharer less than `EXCLUSIVE`: a count that high cannot be reached by
            // threads that each hold a share, but is kept off all the same.
            // A waiting hold goes first.
            if now >= EXCLUSIVE - 1 || self.holds_waiting.load(Ordering::Relaxed) != 0 {
                spin();
                now = self.held.load(Ordering::Relaxed);
                continue;
            }
            match self.held.compare_exchange_weak(
                now,
                now + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => now = seen,
            }
        }
    }

    /// Lets go of a [`hold`](Self::hold).
    pub(super) fn release_hold(&self) {
        self.held.store(0, Ordering::Release);
    }

    /// Lets go of a [`share`](Self::share).
    pub(super) fn release_share(&self) {
        self.held.fetch_sub(1, Ordering::Release);
    }
}

/// One turn of a spin loop (under loom, a turn for the other threads).
#[cfg(any(not(feature = "std"), test))]
fn spin() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

// Threads of `std` over the lock; `tests/loom_serial.rs` models it under loom.
#[cfg(all(test, not(loom)))]
mod tests {
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

    /// Runs `body` on `threads` threads of which each takes `Spin` `rounds` times, alone or
    /// shared as `alone(thread, round)` says, and checks that no hold overlaps another hold
    /// or a share, and that shares overlap (the count of sharers inside reaches two).
    fn spin_race(threads: usize, rounds: usize, alone: fn(usize, usize) -> bool) {
        let spin = Spin::default();
        // Holders inside count `HOLDER`, sharers one each.
        const HOLDER: usize = 1 << 20;
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (spin, inside) = (&spin, &inside);
                s.spawn(move || {
                    for round in 0..rounds {
                        if alone(t, round) {
                            spin.hold();
                            assert_eq!(inside.fetch_add(HOLDER, Ordering::Relaxed), 0);
                            inside.fetch_sub(HOLDER, Ordering::Relaxed);
                            spin.release_hold();
                        } else {
                            spin.share();
                            let before = inside.fetch_add(1, Ordering::Relaxed);
                            assert!(before < HOLDER, "a share inside a hold");
                            inside.fetch_sub(1, Ordering::Relaxed);
                            spin.release_share();
                        }
                    }
                });
            }
        });
        assert_eq!(inside.load(Ordering::Relaxed), 0);
        assert_eq!(spin.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn spin_hold_from_threads_never_overlaps() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        spin_race(3, rounds, |_, _| true);
    }

    #[test]
    fn spin_hold_and_share_from_threads_never_overlap() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        spin_race(4, rounds, |t, round| (t + round) % 3 == 0);
    }

    #[test]
    fn spin_shares_do_not_wait_for_each_other() {
        let spin = Spin::default();
        spin.share();
        // Taken on this very thread while the first share is held: no wait.
        spin.share();
        assert_eq!(spin.held.load(Ordering::Relaxed), 2);
        spin.release_share();
        spin.release_share();
        spin.hold();
        assert_eq!(spin.held.load(Ordering::Relaxed), EXCLUSIVE);
        spin.release_hold();
        assert_eq!(spin.held.load(Ordering::Relaxed), 0);
    }

    /// A share count one below `EXCLUSIVE` is never taken: a share waits there instead of
    /// making the count read as held alone.
    #[test]
    fn spin_share_count_never_reaches_exclusive() {
        let spin = Spin::default();
        spin.held.store(EXCLUSIVE - 2, Ordering::Relaxed);
        spin.share();
        assert_eq!(spin.held.load(Ordering::Relaxed), EXCLUSIVE - 1);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                spin.share();
                spin.held.load(Ordering::Relaxed)
            });
            // Whenever the waiting share gets in, it is after this one left.
            std::thread::sleep(std::time::Duration::from_millis(20));
            spin.release_share();
            assert_eq!(waiting.join().unwrap(), EXCLUSIVE - 1);
        });
    }

    /// A hold waiting for shares to end is not passed by shares taken after it began to wait:
    /// prefaults that overlap one another without end would otherwise keep every commit,
    /// decommit and map of the reservation waiting for ever.
    #[test]
    fn spin_hold_is_not_starved_by_later_shares() {
        use std::sync::Mutex;

        let spin = Spin::default();
        let order = Mutex::new(std::vec::Vec::new());
        spin.share();
        std::thread::scope(|s| {
            s.spawn(|| {
                spin.hold();
                order.lock().unwrap().push("hold");
                spin.release_hold();
            });
            while spin.holds_waiting.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            s.spawn(|| {
                spin.share();
                order.lock().unwrap().push("share");
                spin.release_share();
            });
            // Time for the later share to get in, were it let in.
            std::thread::sleep(std::time::Duration::from_millis(100));
            spin.release_share();
        });
        assert_eq!(*order.lock().unwrap(), ["hold", "share"]);
    }
}
