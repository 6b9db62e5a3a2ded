//! Loom models of the reservation's call lock without `std` (`Spin` in
//! `src/reservation/serial.rs`): a hold excludes every other hold and share, shares overlap,
//! and what one holder wrote is seen by the next, alone or sharing.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-vmem --release --test loom_serial`.
//! The lock is crate-private, so this file builds `src/reservation/serial.rs` itself, which
//! under `cfg(loom)` takes its atomics from loom and yields to loom where it spins.

#![cfg(loom)]
#![allow(dead_code, reason = "the models use the lock without `std` only")]

/// What `src/reservation/serial.rs` names from its crate: the atomics.
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
}

#[path = "../src/reservation/serial.rs"]
mod serial;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
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

/// The lock and the data it orders: loom fails the model on any access to `data` that is
/// not ordered after every conflicting one.
#[derive(Default)]
struct Guarded {
    spin: Spin,
    data: UnsafeCell<usize>,
}

// SAFETY: `data` is accessed only under `spin`, as the models check.
unsafe impl Sync for Guarded {}

impl Guarded {
    fn add_alone(&self) {
        self.spin.hold();
        // SAFETY: held alone.
        self.data.with_mut(|d| unsafe { *d += 1 });
        self.spin.release_hold();
    }

    fn read_shared(&self) -> usize {
        self.spin.share();
        // SAFETY: shared: no holder writes meanwhile.
        let seen = self.data.with(|d| unsafe { *d });
        self.spin.release_share();
        seen
    }
}

#[test]
fn holds_exclude_each_other_and_publish_their_writes() {
    model(|| {
        let g = Arc::new(Guarded::default());
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
fn a_hold_excludes_a_share_and_the_share_sees_its_write_or_none() {
    model(|| {
        let g = Arc::new(Guarded::default());
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
fn a_hold_after_a_share_is_ordered_after_its_read() {
    // The sharer reads before the hold's write or after it, never at once (loom would report
    // the race).
    model(|| {
        let g = Arc::new(Guarded::default());
        let sharer = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.read_shared())
        };
        g.add_alone();
        assert!(sharer.join().unwrap() <= 1);
    });
}

#[test]
fn shares_overlap() {
    // Two sharers at once: the second share is taken while the first is held, on one thread
    // and the other, and a hold that comes later still gets in.
    model(|| {
        let g = Arc::new(Guarded::default());
        g.spin.share();
        let sharer = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.read_shared())
        };
        assert_eq!(sharer.join().unwrap(), 0);
        g.spin.release_share();
        g.add_alone();
    });
}
