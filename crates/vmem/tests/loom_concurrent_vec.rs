//! Loom models of `ConcurrentVec`: every interleaving of push against push, push against get,
//! push against iteration, and pushes racing for the last slot.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-vmem --release --test
//! loom_concurrent_vec`. Elements are page-aligned so that every push past the first needs a
//! commit of its own, which puts the growth path into every model.

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use memvisor_vmem::vec::{Builder, ConcurrentVec, Growth};

/// One element per page (on 4 KiB pages), so that each slot is committed on its own.
#[repr(align(4096))]
#[derive(Debug, PartialEq)]
struct PageSlot(u64);

fn small(capacity: usize) -> ConcurrentVec<PageSlot> {
    Builder::new(capacity)
        .growth(Growth::Fixed(1))
        .build_concurrent()
        .unwrap()
}

#[test]
fn push_against_push_gives_distinct_published_slots() {
    loom::model(|| {
        let v = Arc::new(small(4));
        let other = {
            let v = Arc::clone(&v);
            thread::spawn(move || v.push(PageSlot(1)))
        };
        let mine = v.push(PageSlot(2));
        let theirs = other.join().unwrap();
        assert_ne!(mine, theirs);
        assert_eq!(v.get(mine), Some(&PageSlot(2)));
        assert_eq!(v.get(theirs), Some(&PageSlot(1)));
        assert_eq!(v.len(), 2);
        assert_eq!(v.iter().count(), 2);
    });
}

#[test]
fn push_against_get_sees_whole_element_or_none() {
    loom::model(|| {
        let v = Arc::new(small(4));
        let pusher = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                v.push(PageSlot(10));
                v.push(PageSlot(11));
            })
        };
        // Whatever is seen must be fully written; loom flags a read racing the write.
        for index in 0..2 {
            if let Some(x) = v.get(index) {
                assert_eq!(x.0, 10 + index as u64);
            }
        }
        pusher.join().unwrap();
        assert_eq!(v.get(1), Some(&PageSlot(11)));
    });
}

#[test]
fn push_against_iteration_yields_published_in_order() {
    loom::model(|| {
        let v = Arc::new(small(4));
        v.push(PageSlot(0));
        let pushers: Vec<_> = (1..3)
            .map(|t| {
                let v = Arc::clone(&v);
                thread::spawn(move || v.push(PageSlot(t)))
            })
            .collect();
        let seen: Vec<(usize, u64)> = v.entries().map(|(i, x)| (i, x.0)).collect();
        assert_eq!(seen.first(), Some(&(0, 0)));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        for h in pushers {
            h.join().unwrap();
        }
        assert_eq!(v.iter().count(), 3);
    });
}

#[test]
fn pushes_racing_for_last_slot_one_wins() {
    loom::model(|| {
        let v = Arc::new(small(2));
        v.push(PageSlot(0));
        let wins = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..2)
            .map(|t| {
                let v = Arc::clone(&v);
                let wins = Arc::clone(&wins);
                thread::spawn(move || {
                    if v.try_push(PageSlot(t)).is_ok() {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in racers {
            h.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::Relaxed), 1);
        assert_eq!(v.len(), 2);
        assert!(v.get(1).is_some());
    });
}

#[test]
fn drop_after_concurrent_pushes_drops_each_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let v: Arc<ConcurrentVec<Counted>> = Arc::new(
            Builder::new(4)
                .growth(Growth::Fixed(1))
                .build_concurrent()
                .unwrap(),
        );
        let other = {
            let v = Arc::clone(&v);
            let drops = Arc::clone(&drops);
            thread::spawn(move || {
                v.push(Counted(drops));
            })
        };
        v.push(Counted(Arc::clone(&drops)));
        other.join().unwrap();
        drop(v);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}
