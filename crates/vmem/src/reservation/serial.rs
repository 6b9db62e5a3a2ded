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
//! populating parts of one reservation at once still run at once. `bind_numa` holds it shared
//! too, from its check of the range to the end of its `mbind` (also while the kernel moves the
//! range's pages): the calls that lose pages or map explicit huge pages hold it alone, and
//! what runs beside it (prefaults, other binds) changes no mapping and no record.

#[cfg(any(not(feature = "std"), test))]
use crate::sync::{AtomicUsize, Ordering};
#[cfg(feature = "std")]
use crate::sync::{Condvar, Mutex, MutexGuard};

/// The lock of [`Serial`]: with `std` a `Gate`, which blocks its waiters; without `std` a
/// `Spin`.
#[cfg(feature = "std")]
type Raw = Gate;
#[cfg(not(feature = "std"))]
type Raw = Spin;

/// A lock without data, held only for the system calls of one operation: a `Gate` with
/// `std`, a `Spin` without. [`hold`](Self::hold) holds it alone, [`share`](Self::share)
/// together with other sharers. Both forms let a waiting hold go before every share asked
/// for after it began to wait, so shares that overlap one another without end cannot keep a
/// hold waiting for ever (the `std` reader-writer lock promises no such order, on any
/// system).
///
/// Neither form lets a thread take it again while it holds it (a call that holds it calls no
/// other that takes it): a second `hold` waits for itself, and so may a second `share` while
/// another thread waits to hold it.
#[derive(Debug, Default)]
pub(super) struct Serial {
    held: Raw,
}

/// Proof that [`Serial`] is held alone; releases it when dropped (also while unwinding).
#[derive(Debug)]
pub(super) struct SerialGuard<'a> {
    held: &'a Raw,
}

/// Proof that [`Serial`] is held shared; releases its share when dropped.
#[derive(Debug)]
pub(super) struct SharedGuard<'a> {
    held: &'a Raw,
}

impl Serial {
    /// Waits until no other call holds it, then holds it until the guard is dropped.
    pub(super) fn hold(&self) -> SerialGuard<'_> {
        self.held.hold();
        SerialGuard { held: &self.held }
    }

    /// Waits until no call holds it alone or waits to, then shares it with other sharers
    /// until the guard is dropped.
    pub(super) fn share(&self) -> SharedGuard<'_> {
        self.held.share();
        SharedGuard { held: &self.held }
    }
}

impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        self.held.release_hold();
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.held.release_share();
    }
}

/// The reader-writer lock of [`Serial`] with `std`: its state under a mutex, and a condition
/// variable its waiters sleep on once a few short spins did not see it free, so a call
/// waiting behind a long one (a `lock` of gigabytes) costs no processor time after those
/// spins (a few microseconds), and one waiting behind a short one (a sparse commit) pays no
/// sleep and wake. A waiting hold goes before shares asked for after it began to wait: they
/// wait while `holds_waiting` counts one, so a hold waits at most for the shares already held.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub(super) struct Gate {
    state: Mutex<GateState>,
    turn: Condvar,
}

/// The times a waiter of [`Gate`] looks again, spinning a little longer each time (at most
/// 32 turns), before it sleeps.
#[cfg(feature = "std")]
const SPIN_ROUNDS: u32 = 10;

/// What [`Gate`] keeps under its mutex.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
struct GateState {
    /// Whether a call holds it alone.
    held: bool,
    /// The number of sharers.
    sharers: usize,
    /// The number of holds waiting: while there is one, no new share is taken.
    holds_waiting: usize,
    /// The number of threads asleep on `turn`: a release wakes them only if there is one,
    /// so a call that waited for nobody makes no system call to wake nobody.
    sleepers: usize,
}

#[cfg(feature = "std")]
impl Gate {
    /// The state, locked. Nothing panics while it is locked, but a poisoned mutex is taken
    /// as it is all the same: the counts are whole whenever the mutex is let go.
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sleeps until a release wakes it (or spuriously), counted in `sleepers` meanwhile.
    fn sleep<'a>(&self, mut state: MutexGuard<'a, GateState>) -> MutexGuard<'a, GateState> {
        // Each sleeper is a thread, on its own stack: the count cannot overflow.
        state.sleepers += 1;
        let mut state = self
            .turn
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.sleepers -= 1;
        state
    }

    /// Returns `state` once `busy` no longer holds for it: first by letting the mutex go and
    /// taking it again after a few turns of a spin loop, then asleep. The calls that take the
    /// lock mostly hold it for well under a microsecond (a sparse commit makes no system
    /// call), less than a sleep and a wake cost; sleeping at once made commits from two
    /// threads take twice as long as with the `std` reader-writer lock, which spins too.
    fn wait_until<'a>(
        &'a self,
        mut state: MutexGuard<'a, GateState>,
        busy: fn(&GateState) -> bool,
    ) -> MutexGuard<'a, GateState> {
        for round in 0..SPIN_ROUNDS {
            if !busy(&state) {
                return state;
            }
            drop(state);
            for _ in 0..1u32 << round.min(5) {
                spin();
            }
            state = self.state();
        }
        while busy(&state) {
            state = self.sleep(state);
        }
        state
    }

    /// Wakes every sleeper, if there is one, once `state` is let go; each checks again
    /// whether its turn came.
    fn wake(&self, state: MutexGuard<'_, GateState>) {
        let anyone = state.sleepers != 0;
        drop(state);
        if anyone {
            self.turn.notify_all();
        }
    }

    /// Waits until nothing holds it, then holds it alone until [`release_hold`].
    ///
    /// [`release_hold`]: Self::release_hold
    pub(super) fn hold(&self) {
        let mut state = self.state();
        state.holds_waiting += 1;
        let mut state = self.wait_until(state, |s| s.held || s.sharers != 0);
        state.holds_waiting -= 1;
        state.held = true;
    }

    /// Waits until it is not held alone and no hold waits, then holds a share until
    /// [`release_share`].
    ///
    /// [`release_share`]: Self::release_share
    pub(super) fn share(&self) {
        let state = self.state();
        let mut state = self.wait_until(state, |s| s.held || s.holds_waiting != 0);
        // Each sharer is a thread holding a guard: the count cannot overflow.
        state.sharers += 1;
    }

    /// Lets go of a [`hold`](Self::hold).
    pub(super) fn release_hold(&self) {
        let mut state = self.state();
        state.held = false;
        self.wake(state);
    }

    /// Lets go of a [`share`](Self::share).
    pub(super) fn release_share(&self) {
        let mut state = self.state();
        state.sharers -= 1;
        if state.sharers == 0 {
            self.wake(state);
        }
    }
}

/// The value of `Spin::held` while one call holds it alone.
#[cfg(any(not(feature = "std"), test))]
const EXCLUSIVE: usize = usize::MAX;

/// The reader-writer lock of [`Serial`] without `std`: a count taken by spinning. A waiting
/// hold goes before shares asked for after it began to wait (as with `Gate`), so a hold
/// waits at most for the shares already held. Built for the unit tests (and
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
fn spin() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

// Threads of `std` over the lock; `tests/loom_serial.rs` models `Spin` under loom.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Both forms of the lock, for tests that run on each.
    trait Form: Default + Sync {
        fn hold(&self);
        fn share(&self);
        fn release_hold(&self);
        fn release_share(&self);
        /// The number of holds waiting.
        fn holds_waiting(&self) -> usize;
    }

    impl Form for Spin {
        fn hold(&self) {
            Spin::hold(self);
        }
        fn share(&self) {
            Spin::share(self);
        }
        fn release_hold(&self) {
            Spin::release_hold(self);
        }
        fn release_share(&self) {
            Spin::release_share(self);
        }
        fn holds_waiting(&self) -> usize {
            self.holds_waiting.load(Ordering::Relaxed)
        }
    }

    #[cfg(feature = "std")]
    impl Form for Gate {
        fn hold(&self) {
            Gate::hold(self);
        }
        fn share(&self) {
            Gate::share(self);
        }
        fn release_hold(&self) {
            Gate::release_hold(self);
        }
        fn release_share(&self) {
            Gate::release_share(self);
        }
        fn holds_waiting(&self) -> usize {
            self.state().holds_waiting
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn hold_until_guard_dropped_excludes_others() {
        let serial = Serial::default();
        let held = serial.hold();
        assert!(serial.held.state().held);
        drop(held);
        let state = serial.held.state();
        assert!(!state.held && state.sharers == 0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn shares_exclude_a_hold_not_each_other() {
        let serial = Serial::default();
        let one = serial.share();
        // Taken on this very thread while the first share is held: no wait.
        let two = serial.share();
        assert_eq!(serial.held.state().sharers, 2);
        drop(one);
        assert_eq!(serial.held.state().sharers, 1);
        drop(two);
        let state = serial.held.state();
        assert!(!state.held && state.sharers == 0 && state.sleepers == 0);
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

    /// Runs `body` on `threads` threads of which each takes the lock `rounds` times, alone or
    /// shared as `alone(thread, round)` says, and checks that no hold overlaps another hold
    /// or a share.
    fn race<L: Form>(threads: usize, rounds: usize, alone: fn(usize, usize) -> bool) -> L {
        let lock = L::default();
        // Holders inside count `HOLDER`, sharers one each.
        const HOLDER: usize = 1 << 20;
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (lock, inside) = (&lock, &inside);
                s.spawn(move || {
                    for round in 0..rounds {
                        if alone(t, round) {
                            lock.hold();
                            assert_eq!(inside.fetch_add(HOLDER, Ordering::Relaxed), 0);
                            inside.fetch_sub(HOLDER, Ordering::Relaxed);
                            lock.release_hold();
                        } else {
                            lock.share();
                            let before = inside.fetch_add(1, Ordering::Relaxed);
                            assert!(before < HOLDER, "a share inside a hold");
                            inside.fetch_sub(1, Ordering::Relaxed);
                            lock.release_share();
                        }
                    }
                });
            }
        });
        assert_eq!(inside.load(Ordering::Relaxed), 0);
        assert_eq!(lock.holds_waiting(), 0);
        lock
    }

    #[test]
    fn spin_hold_from_threads_never_overlaps() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        let spin: Spin = race(3, rounds, |_, _| true);
        assert_eq!(spin.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn spin_hold_and_share_from_threads_never_overlap() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        let spin: Spin = race(4, rounds, |t, round| (t + round) % 3 == 0);
        assert_eq!(spin.held.load(Ordering::Relaxed), 0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn gate_hold_and_share_from_threads_never_overlap() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        let gate: Gate = race(4, rounds, |t, round| (t + round) % 3 == 0);
        let state = gate.state();
        assert!(!state.held && state.sharers == 0 && state.sleepers == 0);
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
    fn hold_is_not_starved_by_later_shares<L: Form>() {
        use std::sync::Mutex;

        let lock = L::default();
        let order = Mutex::new(std::vec::Vec::new());
        lock.share();
        std::thread::scope(|s| {
            s.spawn(|| {
                lock.hold();
                order.lock().unwrap().push("hold");
                lock.release_hold();
            });
            while lock.holds_waiting() == 0 {
                std::thread::yield_now();
            }
            s.spawn(|| {
                lock.share();
                order.lock().unwrap().push("share");
                lock.release_share();
            });
            // Time for the later share to get in, were it let in.
            std::thread::sleep(std::time::Duration::from_millis(100));
            lock.release_share();
        });
        assert_eq!(*order.lock().unwrap(), ["hold", "share"]);
    }

    #[test]
    fn spin_hold_is_not_starved_by_later_shares() {
        hold_is_not_starved_by_later_shares::<Spin>();
    }

    #[cfg(feature = "std")]
    #[test]
    fn gate_hold_is_not_starved_by_later_shares() {
        hold_is_not_starved_by_later_shares::<Gate>();
    }

    /// A share that waits for a hold sleeps until the hold is let go, then gets in; and so
    /// does a hold that waits for shares.
    #[cfg(feature = "std")]
    #[test]
    fn gate_waiters_are_woken_by_releases() {
        let serial = Serial::default();
        std::thread::scope(|s| {
            let held = serial.hold();
            let sharer = s.spawn(|| drop(serial.share()));
            while serial.held.state().sleepers == 0 {
                std::thread::yield_now();
            }
            drop(held);
            sharer.join().unwrap();
            let shared = serial.share();
            let holder = s.spawn(|| drop(serial.hold()));
            while serial.held.state().sleepers == 0 {
                std::thread::yield_now();
            }
            drop(shared);
            holder.join().unwrap();
        });
        let state = serial.held.state();
        assert!(!state.held && state.sharers == 0 && state.holds_waiting == 0);
        assert_eq!(state.sleepers, 0);
    }

    /// Runs `f` on a thread of its own and returns what it returns, or fails the test if it has
    /// not returned within a minute: a lock that leaves a waiter asleep for ever fails the test
    /// instead of hanging it (the thread is left behind).
    #[cfg(feature = "std")]
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        memvisor_testkit::watchdog::within(what, std::time::Duration::from_secs(60), f)
    }

    /// Waits until `gate` counts `sleepers` threads asleep.
    #[cfg(feature = "std")]
    fn until_asleep(gate: &Gate, sleepers: usize) {
        while gate.state().sleepers < sleepers {
            std::thread::yield_now();
        }
    }

    /// Two holds wait behind a share, and shares asked for after them sleep too: once the
    /// first share goes, both holds get in, one at a time, before any later share, and every
    /// sleeper is woken in the end (a release that woke only one thread, or only the threads
    /// of one kind, would leave some asleep for ever). Then the same behind a hold, with the
    /// shares asleep first: a release that woke only the first sleeper would wake a share,
    /// which goes back to sleep behind the waiting holds, and nothing would wake anyone.
    #[cfg(feature = "std")]
    #[test]
    fn gate_wakes_two_waiting_holds_then_every_later_share() {
        use std::sync::{Arc, Mutex};

        let sharers = if cfg!(miri) { 2 } else { 6 };
        for first_alone in [false, true] {
            let order = within("two holds and later shares", move || {
                let gate = Arc::new(Gate::default());
                let order = Arc::new(Mutex::new(std::vec::Vec::new()));
                let inside = Arc::new(AtomicUsize::new(0));
                let mut threads = std::vec::Vec::new();
                let share = |threads: &mut std::vec::Vec<_>| {
                    for _ in 0..sharers {
                        let (gate, order, inside) = (gate.clone(), order.clone(), inside.clone());
                        threads.push(std::thread::spawn(move || {
                            gate.share();
                            assert_eq!(inside.load(Ordering::Relaxed), 0, "a share inside a hold");
                            order.lock().unwrap().push("share");
                            gate.release_share();
                        }));
                    }
                };
                if first_alone {
                    gate.hold();
                    share(&mut threads);
                    until_asleep(&gate, sharers);
                } else {
                    gate.share();
                }
                for _ in 0..2 {
                    let (gate, order, inside) = (gate.clone(), order.clone(), inside.clone());
                    threads.push(std::thread::spawn(move || {
                        gate.hold();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                        order.lock().unwrap().push("hold");
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::Relaxed);
                        gate.release_hold();
                    }));
                }
                until_asleep(&gate, 2 + if first_alone { sharers } else { 0 });
                assert_eq!(gate.state().holds_waiting, 2);
                if first_alone {
                    gate.release_hold();
                } else {
                    share(&mut threads);
                    until_asleep(&gate, 2 + sharers);
                    gate.release_share();
                }
                for thread in threads {
                    thread.join().unwrap();
                }
                let state = gate.state();
                assert!(!state.held && state.sharers == 0 && state.holds_waiting == 0);
                assert_eq!(state.sleepers, 0);
                drop(state);
                order.lock().unwrap().clone()
            });
            assert_eq!(order.len(), 2 + sharers);
            assert_eq!(order[..2], ["hold", "hold"]);
            assert!(order[2..].iter().all(|&o| o == "share"), "{order:?}");
        }
    }

    /// A call that panics while it holds the lock, alone or shared, lets it go as it unwinds
    /// (its guard's `Drop`): a hold and a share asked for afterwards, and one already waiting,
    /// get in.
    #[cfg(feature = "std")]
    #[test]
    fn gate_is_let_go_by_a_call_that_panics_holding_it() {
        use std::sync::Arc;

        within("calls after a panic", || {
            let serial = Arc::new(Serial::default());
            for alone in [true, false] {
                let (entered, go) = std::sync::mpsc::channel();
                let panicking = {
                    let serial = serial.clone();
                    std::thread::spawn(move || {
                        let _guard = if alone {
                            (Some(serial.hold()), None)
                        } else {
                            (None, Some(serial.share()))
                        };
                        entered.send(()).unwrap();
                        // Let a hold start waiting behind this call.
                        while serial.held.state().holds_waiting == 0 {
                            std::thread::yield_now();
                        }
                        panic!("a call panicking with the lock held");
                    })
                };
                go.recv().unwrap();
                // Waits behind the panicking call, and gets in once it unwound.
                drop(serial.hold());
                assert!(panicking.join().is_err());
                drop(serial.share());
                let state = serial.held.state();
                assert!(!state.held && state.sharers == 0 && state.holds_waiting == 0);
            }
        });
    }

    /// The mutex of the counts poisoned (a panic while it was locked, which nothing in the
    /// crate does, but a thread may die anywhere) changes nothing: holds and shares still
    /// exclude each other and wake each other.
    #[cfg(feature = "std")]
    #[test]
    fn gate_still_works_once_its_mutex_is_poisoned() {
        let gate: Gate = within("a gate with a poisoned mutex", || {
            let gate = std::sync::Arc::new(Gate::default());
            let poisoner = gate.clone();
            let died = std::thread::spawn(move || {
                let _state = poisoner.state.lock().unwrap();
                panic!("a thread dying with the counts locked");
            })
            .join();
            assert!(died.is_err() && gate.state.is_poisoned());
            std::sync::Arc::into_inner(gate).unwrap()
        });
        let rounds = if cfg!(miri) { 10 } else { 500 };
        let gate: Gate = within("holds and shares", move || {
            // The same lock, poisoned, raced as `race` races a fresh one.
            let lock = gate;
            let inside = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for t in 0..3 {
                    let (lock, inside) = (&lock, &inside);
                    s.spawn(move || {
                        for round in 0..rounds {
                            if (t + round) % 2 == 0 {
                                lock.hold();
                                assert_eq!(inside.fetch_add(1 << 20, Ordering::Relaxed), 0);
                                inside.fetch_sub(1 << 20, Ordering::Relaxed);
                                lock.release_hold();
                            } else {
                                lock.share();
                                assert!(inside.fetch_add(1, Ordering::Relaxed) < 1 << 20);
                                inside.fetch_sub(1, Ordering::Relaxed);
                                lock.release_share();
                            }
                        }
                    });
                }
            });
            lock
        });
        let state = gate.state();
        assert!(!state.held && state.sharers == 0 && state.holds_waiting == 0);
        assert_eq!(state.sleepers, 0);
    }

    /// Many threads, most sharing and a few holding, some of them at once: no hold overlaps
    /// another call, every call returns, and the counts end at zero.
    #[cfg(feature = "std")]
    #[test]
    fn gate_many_sharers_and_holders_never_overlap() {
        let rounds = if cfg!(miri) { 10 } else { 3_000 };
        let threads = if cfg!(miri) { 4 } else { 8 };
        let gate: Gate = within("many threads", move || {
            race(threads, rounds, |t, round| t < 2 && round % 4 == 0)
        });
        let state = gate.state();
        assert!(!state.held && state.sharers == 0 && state.sleepers == 0);
        let gate: Gate = within("holds only", move || race(threads, rounds / 4, |_, _| true));
        assert!(!gate.state().held);
    }
}
