//! Loom models of `ConcurrentVec`: every interleaving of push against push, push against get,
//! push against iteration, push against the published slice, pushes racing for the last slot,
//! pushes moving to per-thread blocks, and a `Pusher` committing its block as it fills. Every use
//! of a slot is checked to happen after its memory's commit (the crate's `AccessLog`).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-vmem --release --test
//! loom_concurrent_vec`. Elements are page-aligned so that every push past the first needs a
//! commit of its own, which puts the growth path into every model. Readers run on spawned
//! threads, as the writers do: loom explores the main thread's operations before its first
//! blocking join less thoroughly.

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use memvisor_vmem::vec::{Builder, ConcurrentVec, Growth};

/// One element per page (on 4 KiB pages), so that each slot is committed on its own.
#[repr(align(4096))]
#[derive(Debug, PartialEq)]
struct PageSlot(u64);

/// Runs `f` under loom, with at most three preemptions per execution unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise (bugs of this kind show with few preemptions; unbounded runs take hours).
/// Pushes of page-sized elements happen on threads made by [`spawn`].
fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A loom thread with a stack large enough for page-sized elements.
fn spawn<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> thread::JoinHandle<R> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

fn small(capacity: usize) -> ConcurrentVec<PageSlot> {
    Builder::new(capacity)
        .growth(Growth::Fixed(1))
        .build_concurrent()
        .unwrap()
}

fn value(v: &ConcurrentVec<PageSlot>, index: usize) -> Option<u64> {
    v.get(index).map(|x| x.0)
}

#[test]
fn push_against_push_gives_distinct_published_slots() {
    model(|| {
        let v = Arc::new(small(4));
        let pushers: Vec<_> = (1..3)
            .map(|t| {
                let v = Arc::clone(&v);
                spawn(move || (t, v.push(PageSlot(t))))
            })
            .collect();
        let got: Vec<(u64, usize)> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_ne!(got[0].1, got[1].1);
        for (t, index) in got {
            assert_eq!(value(&v, index), Some(t));
        }
        assert_eq!(v.len(), 2);
        assert_eq!(v.iter().count(), 2);
    });
}

#[test]
fn push_against_get_sees_whole_element_or_none() {
    model(|| {
        let v = Arc::new(small(4));
        let pusher = {
            let v = Arc::clone(&v);
            spawn(move || {
                v.push(PageSlot(10));
                v.push(PageSlot(11));
            })
        };
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                assert!(v.len() <= 2);
                // Whatever is seen must be fully written; loom flags a read racing the write.
                for index in (0..2).rev() {
                    if let Some(x) = value(&v, index) {
                        assert_eq!(x, 10 + index as u64);
                    }
                }
            })
        };
        pusher.join().unwrap();
        reader.join().unwrap();
        assert_eq!(value(&v, 1), Some(11));
    });
}

#[test]
fn push_against_iteration_yields_published_in_order() {
    model(|| {
        let v = Arc::new(small(4));
        let pusher = {
            let v = Arc::clone(&v);
            spawn(move || {
                v.push(PageSlot(0));
                v.push(PageSlot(1));
            })
        };
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let seen: Vec<(usize, u64)> = v.entries().map(|(i, x)| (i, x.0)).collect();
                // Only published elements, each whole, in index order.
                assert!(seen.iter().all(|&(i, x)| i as u64 == x));
                assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
            })
        };
        pusher.join().unwrap();
        reader.join().unwrap();
        assert_eq!(v.iter().count(), 2);
    });
}

#[test]
fn pushes_racing_for_last_slot_one_wins() {
    model(|| {
        let v = Arc::new(small(1));
        let wins = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..2)
            .map(|t| {
                let v = Arc::clone(&v);
                let wins = Arc::clone(&wins);
                spawn(move || {
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
        assert_eq!(v.len(), 1);
        assert!(v.get(0).is_some());
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
    model(|| {
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

#[test]
fn pusher_against_get_sees_whole_element_or_none() {
    model(|| {
        let v: Arc<ConcurrentVec<u64>> = Arc::new(Builder::new(128).build_concurrent().unwrap());
        let pusher = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let mut p = v.pusher();
                p.push(10);
                p.push(11);
            })
        };
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                for index in (0..2).rev() {
                    if let Some(&x) = v.get(index) {
                        assert_eq!(x, 10 + index as u64);
                    }
                }
            })
        };
        pusher.join().unwrap();
        reader.join().unwrap();
        assert_eq!(v.iter().count(), 2);
    });
}

/// A `Pusher` of page-sized elements commits its block a page at a time as it fills, while a
/// `reserve` on another thread may commit the rest of the block first and a reader reads the
/// slots: every slot the pusher writes was committed before (by the pusher, or by the reserve
/// and learnt through the committed count), and the reader sees whole elements or none.
#[test]
fn pusher_committing_as_its_block_fills_against_reserve_and_get() {
    model(|| {
        spawn(|| {
            let v = Arc::new(small(3));
            let reserver = {
                let v = Arc::clone(&v);
                // Commits the pusher's whole block if the pusher claimed it already, else
                // nothing (a reserve counts from the claimed slots).
                spawn(move || v.reserve_exact(0).unwrap())
            };
            let reader = {
                let v = Arc::clone(&v);
                spawn(move || {
                    if let Some(x) = value(&v, 1) {
                        assert_eq!(x, 11);
                    }
                })
            };
            let mut p = v.pusher();
            for i in 0..2 {
                assert_eq!(p.push(PageSlot(10 + i)), i as usize);
            }
            reserver.join().unwrap();
            reader.join().unwrap();
            let all: Vec<u64> = v.iter().map(|x| x.0).collect();
            assert_eq!(all, [10, 11]);
        })
        .join()
        .unwrap();
    });
}

#[test]
fn pushers_against_each_other_take_distinct_blocks() {
    model(|| {
        let v: Arc<ConcurrentVec<u64>> = Arc::new(Builder::new(1024).build_concurrent().unwrap());
        let pushers: Vec<_> = (0..2u64)
            .map(|t| {
                let v = Arc::clone(&v);
                thread::spawn(move || {
                    let mut p = v.pusher();
                    let a = p.push(t * 10);
                    let b = p.push(t * 10 + 1);
                    assert_eq!(b, a + 1);
                    a
                })
            })
            .collect();
        let starts: Vec<usize> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_ne!(starts[0], starts[1]);
        assert!(starts.iter().all(|s| s % 512 == 0));
        let values: Vec<(usize, u64)> = v.entries().map(|(i, &x)| (i, x)).collect();
        assert_eq!(values.len(), 4);
        assert!(values.iter().all(|&(i, x)| (i % 512) as u64 == x % 10));
    });
}

#[test]
fn plain_pushes_moving_to_thread_blocks_take_distinct_slots() {
    model(|| {
        // Blocks of 2: a thread whose claims interleave with the other's claims pairs of slots.
        let v: Arc<ConcurrentVec<u64>> =
            Arc::new(Builder::new(8).thread_block(2).build_concurrent().unwrap());
        let pushers: Vec<_> = (0..2u64)
            .map(|t| {
                let v = Arc::clone(&v);
                thread::spawn(move || {
                    let indices: Vec<usize> = (0..3).map(|i| v.push(t * 10 + i)).collect();
                    assert!(indices.windows(2).all(|w| w[0] < w[1]));
                    for (i, &index) in (0..3).zip(&indices) {
                        assert_eq!(v.get(index), Some(&(t * 10 + i)));
                    }
                    indices
                })
            })
            .collect();
        let mut all: Vec<usize> = pushers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6);
        assert!(v.len() >= 6 && v.len() <= 8);
        assert_eq!(v.iter().count(), 6);
    });
}

#[test]
fn pushes_completing_a_word_publish_the_prefix_to_readers() {
    model(|| {
        // Capacity 2: the first ready word is complete after two pushes.
        let v = Arc::new(small(2));
        let pushers: Vec<_> = (0..2)
            .map(|t| {
                let v = Arc::clone(&v);
                spawn(move || v.push(PageSlot(t)))
            })
            .collect();
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let prefix = v.published_prefix();
                for index in 0..2 {
                    let got = v.get(index).map(|x| x.0);
                    if index < prefix {
                        assert!(got.is_some());
                    }
                    if let Some(x) = got {
                        assert!(x < 2);
                    }
                }
            })
        };
        for h in pushers {
            h.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(v.published_prefix(), 2);
    });
}

#[test]
fn prefix_moved_by_a_pusher_hands_elements_to_get() {
    model(|| {
        // Capacity 2: whichever push publishes slot 1 (the last) moves the prefix if slot 0 is
        // published by then; the reader only uses `get`, whose fast path trusts the prefix.
        let v = Arc::new(small(2));
        let pushers: Vec<_> = (0..2)
            .map(|t| {
                let v = Arc::clone(&v);
                spawn(move || v.push(PageSlot(10 + t)))
            })
            .collect();
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let seen: Vec<Option<u64>> = (0..2).map(|i| v.get(i).map(|x| x.0)).collect();
                for x in seen.into_iter().flatten() {
                    assert!(x == 10 || x == 11);
                }
            })
        };
        let mut indices: Vec<usize> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
        reader.join().unwrap();
        indices.sort_unstable();
        assert_eq!(indices, [0, 1]);
        assert_eq!(v.published_prefix(), 2);
        assert!((0..2).all(|i| v.get(i).is_some()));
    });
}

#[test]
fn published_slice_hands_out_only_whole_elements_to_readers() {
    model(|| {
        // Capacity 2: the slice is empty until both pushes are published, then holds both; its
        // elements are read on the reader's thread while the pushes may still be running.
        let v = Arc::new(small(2));
        let pushers: Vec<_> = (0..2)
            .map(|t| {
                let v = Arc::clone(&v);
                spawn(move || v.push(PageSlot(20 + t)))
            })
            .collect();
        let reader = {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let slice = v.published_slice();
                assert!(slice.is_empty() || slice.len() == 2);
                let mut seen: Vec<u64> = slice.iter().map(|x| x.0).collect();
                seen.sort_unstable();
                assert!(seen.is_empty() || seen == [20, 21]);
            })
        };
        for h in pushers {
            h.join().unwrap();
        }
        reader.join().unwrap();
        let mut all: Vec<u64> = v.published_slice().iter().map(|x| x.0).collect();
        all.sort_unstable();
        assert_eq!(all, [20, 21]);
    });
}

/// A vector of page-sized slots handing out blocks of 2 to threads that see other claims.
fn small_blocks(capacity: usize) -> ConcurrentVec<PageSlot> {
    Builder::new(capacity)
        .growth(Growth::Fixed(1))
        .thread_block(2)
        .build_concurrent()
        .unwrap()
}

#[test]
fn block_whose_commit_was_refused_is_committed_at_the_next_push_and_shared_with_no_one() {
    model(|| {
        spawn(|| {
            let v = Arc::new(small_blocks(8));
            // Into block mode: another thread's claim between two of this thread's.
            assert_eq!(v.push(PageSlot(10)), 0);
            {
                let v = Arc::clone(&v);
                assert_eq!(spawn(move || v.push(PageSlot(20))).join().unwrap(), 1);
            }
            assert_eq!(v.push(PageSlot(11)), 2);
            // The block 3..5 is claimed and its commit refused: it stays this thread's.
            memvisor_vmem::vec::refuse_commits(1);
            let refused = v.try_push(PageSlot(12)).unwrap_err().into_parts();
            memvisor_vmem::vec::refuse_commits(0);
            assert_eq!(refused.0, PageSlot(12));
            assert!(matches!(
                refused.1,
                memvisor_vmem::vec::Error::Commit { .. }
            ));
            assert_eq!(v.len(), 5);
            // Another thread pushes and reads while this one commits the block and fills it.
            let other = {
                let v = Arc::clone(&v);
                spawn(move || {
                    let index = v.push(PageSlot(21));
                    assert!(
                        index >= 5,
                        "slot {index} of the refused block handed out again"
                    );
                    for i in 3..5 {
                        if let Some(x) = value(&v, i) {
                            assert_eq!(x, 10 + i as u64);
                        }
                    }
                    let seen = v.iter().count();
                    assert!((4..=6).contains(&seen), "{seen} elements");
                    index
                })
            };
            assert_eq!(v.push(PageSlot(13)), 3);
            assert_eq!(v.push(PageSlot(14)), 4);
            let index = other.join().unwrap();
            assert_eq!(value(&v, index), Some(21));
            assert_eq!(v.len(), 6);
            let all: Vec<(usize, u64)> = v.entries().map(|(i, x)| (i, x.0)).collect();
            assert_eq!(all, [(0, 10), (1, 20), (2, 11), (3, 13), (4, 14), (5, 21)]);
        })
        .join()
        .unwrap();
    });
}

#[test]
fn block_whose_commit_was_refused_is_left_empty_when_the_thread_exits() {
    model(|| {
        spawn(|| {
            let v = Arc::new(small_blocks(8));
            assert_eq!(v.push(PageSlot(10)), 0);
            let holder = {
                let v = Arc::clone(&v);
                spawn(move || {
                    let first = v.push(PageSlot(20));
                    let second = v.push(PageSlot(21));
                    // Blocks only once another claim came between this thread's two.
                    memvisor_vmem::vec::refuse_commits(1);
                    let third = v.try_push(PageSlot(22)).map_err(|e| e.into_parts().0);
                    memvisor_vmem::vec::refuse_commits(0);
                    (first, second, third)
                })
            };
            let mine = v.push(PageSlot(11));
            let (first, second, third) = holder.join().unwrap();
            let mut indices = vec![0, first, second, mine];
            match third {
                Ok(index) => indices.push(index),
                Err(value) => assert_eq!(value, PageSlot(22)),
            }
            indices.sort_unstable();
            indices.dedup();
            let published = indices.len();
            // The thread's exit gave up its block: pushes go on past it, and its slots stay
            // empty.
            let claimed = v.len();
            let next = v.push(PageSlot(12));
            assert_eq!(next, claimed);
            assert_eq!(v.iter().count(), published + 1);
            assert!(v.len() <= 8);
            for i in 0..v.len() {
                if let Some(x) = value(&v, i) {
                    assert!([10, 11, 12, 20, 21, 22].contains(&x), "slot {i}: {x}");
                }
            }
        })
        .join()
        .unwrap();
    });
}

#[test]
fn pusher_whose_block_commit_was_refused_commits_it_at_the_next_push() {
    model(|| {
        let v: Arc<ConcurrentVec<u64>> = Arc::new(Builder::new(1024).build_concurrent().unwrap());
        let pushers: Vec<_> = (0..2u64)
            .map(|t| {
                let v = Arc::clone(&v);
                thread::spawn(move || {
                    let mut p = v.pusher();
                    let mut pushed = Vec::new();
                    if t == 0 {
                        // Refused if the block's memory is not committed yet (the other
                        // pusher may have committed it already).
                        memvisor_vmem::vec::refuse_commits(1);
                        let first = p.try_push(100);
                        memvisor_vmem::vec::refuse_commits(0);
                        match first {
                            Ok(index) => pushed.push((index, 100)),
                            Err(e) => assert_eq!(e.into_parts().0, 100),
                        }
                    }
                    for i in 0..2 {
                        pushed.push((p.push(t * 10 + i), t * 10 + i));
                    }
                    assert!(pushed.windows(2).all(|w| w[1].0 == w[0].0 + 1));
                    pushed
                })
            })
            .collect();
        let mut pushed: Vec<(usize, u64)> = pushers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        pushed.sort_unstable();
        assert_ne!(pushed[0].0 / 512, pushed[pushed.len() - 1].0 / 512);
        assert!(pushed.iter().all(|&(i, _)| i % 512 < 3));
        assert_eq!(v.len(), 1024);
        let values: Vec<(usize, u64)> = v.entries().map(|(i, &x)| (i, x)).collect();
        assert_eq!(values, pushed);
    });
}
