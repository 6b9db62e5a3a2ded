//! Loom models of the reservation's call lock in both its forms (`Spin` without `std`, `Gate`
//! with it, in `src/reservation/serial.rs`): a hold excludes every other hold and share, shares
//! overlap, and what one holder wrote is seen by the next, alone or sharing; and for `Gate`,
//! whose waiters sleep, that every waiter is woken (loom fails a model in which every thread
//! left is asleep).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-vmem --release --test loom_serial`.
//! The lock is crate-private, so this file builds `src/reservation/serial.rs` itself, which
//! under `cfg(loom)` takes its atomics from loom and yields to loom where it spins; here its
//! mutex and condition variable come from loom too.

#![cfg(loom)]

/// What `src/reservation/serial.rs` names from its crate: the atomics, and the mutex and
/// condition variable of `Gate`.
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(feature = "std")]
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
}

#[path = "../src/reservation/serial.rs"]
#[allow(
    dead_code,
    reason = "the models use the two forms of the lock, not `Serial`"
)]
mod serial;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
#[cfg(feature = "std")]
use serial::Gate;
use serial::Spin;

/// Runs `f` under loom, with at most three preemptions per execution unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise. Each turn of a spin is a branch, so the bound on
/// branches is raised.
fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.max_branches = 100_000;
    builder.check(f);
}

/// Both forms of the lock.
trait Lock: Default + Send + Sync + 'static {
    fn hold(&self);
    fn share(&self);
    fn release_hold(&self);
    fn release_share(&self);
}

impl Lock for Spin {
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
}

#[cfg(feature = "std")]
impl Lock for Gate {
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
}

/// The lock and the data it orders: loom fails the model on any access to `data` that is
/// not ordered after every conflicting one.
#[derive(Default)]
struct Guarded<L> {
    lock: L,
    data: UnsafeCell<usize>,
}

// SAFETY: `data` is accessed only under `lock`, as the models check.
unsafe impl<L: Sync> Sync for Guarded<L> {}

impl<L: Lock> Guarded<L> {
    fn add_alone(&self) {
        self.lock.hold();
        // SAFETY: held alone.
        self.data.with_mut(|d| unsafe { *d += 1 });
        self.lock.release_hold();
    }

    fn read_shared(&self) -> usize {
        self.lock.share();
        // SAFETY: shared: no holder writes meanwhile.
        let seen = self.data.with(|d| unsafe { *d });
        self.lock.release_share();
        seen
    }
}

fn holds_exclude_each_other_and_publish_their_writes<L: Lock>() {
    model(|| {
        let g = Arc::new(Guarded::<L>::default());
        let other = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.add_alone())
        };
        g.add_alone();
        other.join().unwrap();
        assert_eq!(g.read_shared(), 2);
    });
}

#[test]
fn spin_holds_exclude_each_other_and_publish_their_writes() {
    holds_exclude_each_other_and_publish_their_writes::<Spin>();
}

#[cfg(feature = "std")]
#[test]
fn gate_holds_exclude_each_other_and_publish_their_writes() {
    holds_exclude_each_other_and_publish_their_writes::<Gate>();
}

fn a_hold_excludes_a_share_and_the_share_sees_its_write_or_none<L: Lock>() {
    model(|| {
        let g = Arc::new(Guarded::<L>::default());
        let holder = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.add_alone())
        };
        let seen = g.read_shared();
        assert!(seen <= 1);
        holder.join().unwrap();
        assert_eq!(g.read_shared(), 1);
    });
}

#[test]
fn spin_a_hold_excludes_a_share_and_the_share_sees_its_write_or_none() {
    a_hold_excludes_a_share_and_the_share_sees_its_write_or_none::<Spin>();
}

#[cfg(feature = "std")]
#[test]
fn gate_a_hold_excludes_a_share_and_the_share_sees_its_write_or_none() {
    a_hold_excludes_a_share_and_the_share_sees_its_write_or_none::<Gate>();
}

fn a_hold_after_a_share_is_ordered_after_its_read<L: Lock>() {
    // The sharer reads before the hold's write or after it, never at once (loom would report
    // the race).
    model(|| {
        let g = Arc::new(Guarded::<L>::default());
        let sharer = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.read_shared())
        };
        g.add_alone();
        assert!(sharer.join().unwrap() <= 1);
    });
}

#[test]
fn spin_a_hold_after_a_share_is_ordered_after_its_read() {
    a_hold_after_a_share_is_ordered_after_its_read::<Spin>();
}

#[cfg(feature = "std")]
#[test]
fn gate_a_hold_after_a_share_is_ordered_after_its_read() {
    a_hold_after_a_share_is_ordered_after_its_read::<Gate>();
}

fn shares_overlap<L: Lock>() {
    // Two sharers at once: the second share is taken while the first is held, on one thread
    // and the other, and a hold that comes later still gets in.
    model(|| {
        let g = Arc::new(Guarded::<L>::default());
        g.lock.share();
        let sharer = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.read_shared())
        };
        assert_eq!(sharer.join().unwrap(), 0);
        g.lock.release_share();
        g.add_alone();
    });
}

#[test]
fn spin_shares_overlap() {
    shares_overlap::<Spin>();
}

#[cfg(feature = "std")]
#[test]
fn gate_shares_overlap() {
    shares_overlap::<Gate>();
}

/// A hold and a share wait (in either order) while a share is held; once it is let go, both
/// get in, whatever the interleaving of their checks, sleeps and the release: a release that
/// found no sleeper while one was between its check and its sleep, or woke one waiter and not
/// the other, would leave a thread asleep for ever, which loom reports.
#[cfg(feature = "std")]
#[test]
fn gate_wakes_a_waiting_hold_and_a_waiting_share() {
    model(|| {
        let g = Arc::new(Guarded::<Gate>::default());
        g.lock.share();
        let holder = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.add_alone())
        };
        let sharer = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.read_shared())
        };
        g.lock.release_share();
        holder.join().unwrap();
        assert!(sharer.join().unwrap() <= 1);
        assert_eq!(g.read_shared(), 1);
    });
}

/// Two holds and a share contend with no one holding it first: each hold gets in once, alone,
/// and every thread returns.
#[cfg(feature = "std")]
#[test]
fn gate_two_holds_and_a_share_all_return() {
    model(|| {
        let g = Arc::new(Guarded::<Gate>::default());
        let holders: [_; 2] = core::array::from_fn(|_| {
            let g = Arc::clone(&g);
            thread::spawn(move || g.add_alone())
        });
        let seen = g.read_shared();
        assert!(seen <= 2);
        for holder in holders {
            holder.join().unwrap();
        }
        assert_eq!(g.read_shared(), 2);
    });
}
