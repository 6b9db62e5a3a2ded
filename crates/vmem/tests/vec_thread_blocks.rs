//! How `ConcurrentVec::push` moves between single slots and per-thread blocks: exact indices
//! for a thread pushing alone, blocks once threads interleave, the way back, and the cache entry
//! that names each vector.

mod common;

use std::sync::mpsc;
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error};
use proptest::prelude::*;

/// A vector with 512-slot thread blocks (the default from a capacity of 2 Mi slots up).
fn large() -> ConcurrentVec<u64> {
    Builder::new(1 << 13)
        .thread_block(512)
        .build_concurrent()
        .unwrap()
}

/// Pushes `value` from a new thread and returns its index.
fn push_elsewhere(v: &ConcurrentVec<u64>, value: u64) -> usize {
    thread::scope(|s| s.spawn(|| v.push(value)).join().unwrap())
}

/// Puts this thread into block mode on `v`: its claims are interleaved with another thread's.
/// Returns the index of this thread's first block slot; the block runs to 512.
fn enter_blocks(v: &ConcurrentVec<u64>) -> usize {
    assert_eq!(v.push(0), 0);
    assert_eq!(push_elsewhere(v, 1), 1);
    // Slot 1 came between this thread's claims: it claims blocks from now on.
    assert_eq!(v.push(2), 2);
    assert_eq!(v.len(), 3);
    let first = v.push(3);
    assert_eq!(first, 3);
    assert_eq!(v.len(), 512, "the block runs to the next multiple of 512");
    first
}

#[test]
fn thread_block_defaults_follow_the_capacity() {
    let block = |capacity: usize| Builder::new(capacity).thread_block_slots().unwrap();
    assert_eq!(block(0), 1);
    assert_eq!(block(1000), 1);
    assert_eq!(block(1 << 20), 256);
    assert_eq!(block(1 << 22), 512);
    assert_eq!(block(usize::MAX), 512);
    let v = ConcurrentVec::<u8>::with_capacity(1 << 21).unwrap();
    assert_eq!(v.thread_block(), 512);
}

#[test]
fn thread_block_outside_1_to_512_is_refused() {
    for slots in [0, 513, usize::MAX] {
        let builder = Builder::new(100).thread_block(slots);
        assert_eq!(
            builder.thread_block_slots(),
            Err(Error::InvalidThreadBlock { slots })
        );
        assert_eq!(
            builder.build_concurrent::<u8>().unwrap_err(),
            Error::InvalidThreadBlock { slots }
        );
    }
    for slots in [1, 3, 64, 512] {
        let v = Builder::new(100)
            .thread_block(slots)
            .build_concurrent::<u8>()
            .unwrap();
        assert_eq!(v.thread_block(), slots);
    }
}

#[test]
fn a_thread_pushing_alone_gets_consecutive_indices_and_exact_len() {
    let v = large();
    for i in 0..5000 {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
        assert_eq!(v.len(), usize::try_from(i).unwrap() + 1);
    }
    assert_eq!(v.published_prefix(), 4992);
}

#[test]
fn threads_taking_turns_without_overlap_keep_exact_len() {
    let v = large();
    for round in 0..4u64 {
        let start = v.len();
        thread::scope(|s| {
            s.spawn(|| {
                for i in 0..100 {
                    v.push(round * 100 + i);
                }
            });
        });
        assert_eq!(v.len(), start + 100);
    }
    assert!(v.iter().copied().eq(0..400));
}

#[test]
fn interleaved_claims_move_a_thread_to_blocks_and_back() {
    let v = large();
    enter_blocks(&v);
    // Another thread's single claim lands after the block.
    assert_eq!(push_elsewhere(&v, 512), 512);
    for i in 4..512 {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
    }
    // The next block skips slot 512: this thread stays in block mode.
    assert_eq!(v.push(513), 513);
    assert_eq!(v.len(), 1024);
    for i in 514..1024 {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
    }
    // Nobody claims while it fills the next blocks: each follows the previous one directly, and
    // after eight of those in a row the thread goes back to single slots.
    for block in 2..10u64 {
        let start = block * 512;
        assert_eq!(v.push(start), usize::try_from(start).unwrap());
        assert_eq!(v.len(), usize::try_from(start + 512).unwrap());
        for i in start + 1..start + 512 {
            v.push(i);
        }
    }
    assert_eq!(v.push(5120), 5120);
    assert_eq!(v.len(), 5121);
    assert!(v.iter().copied().eq(0..5121));
    assert_eq!(v.published_prefix(), 5120);
}

#[test]
fn clear_forgets_the_blocks_threads_hold() {
    let mut v = large();
    enter_blocks(&v);
    v.clear();
    assert!(v.is_empty());
    // The slots of the old block are not taken again by this thread.
    assert_eq!(v.push(7), 0);
    assert_eq!(push_elsewhere(&v, 8), 1);
    assert_eq!(v.len(), 2);
    assert!(v.iter().copied().eq([7, 8]));
}

#[test]
fn pushes_into_another_vector_keep_the_block_until_they_evict_it() {
    let a = large();
    let b = large();
    enter_blocks(&a);
    // Pushes into `b` between pushes into `a` leave `a`'s block in place.
    for i in 0..10u64 {
        assert_eq!(b.push(i), usize::try_from(i).unwrap());
        assert_eq!(a.push(4 + i), usize::try_from(4 + i).unwrap());
    }
    // 64 pushes in a row into `b` give the entry to `b`: `a`'s rest stays empty.
    for i in 10..74u64 {
        assert_eq!(b.push(i), usize::try_from(i).unwrap());
    }
    assert_eq!(a.push(99), 512);
    assert_eq!(a.len(), 513);
    assert_eq!(a.iter().count(), 15);
    assert_eq!(a.get(14), None);
    assert!(b.iter().copied().eq(0..74));
}

/// Every block a thread gives up unfilled leaves its rest empty for good, so a thread that
/// keeps moving between vectors can leave most of one empty: here 4 elements per 512 slots.
/// The documented bound is `thread_block - 1` empty slots per block given up.
#[test]
fn each_evicted_block_leaves_its_rest_empty() {
    let a = large();
    let b = large();
    let cycles = 8;
    for cycle in 0..cycles {
        let base = cycle * 512;
        assert_eq!(a.push(0), base);
        assert_eq!(push_elsewhere(&a, 1), base + 1);
        assert_eq!(a.push(2), base + 2);
        assert_eq!(a.push(3), base + 3);
        assert_eq!(a.len(), base + 512, "a block to the next multiple of 512");
        for i in 0..64 {
            b.push(i);
        }
    }
    let empty = a.len() - a.iter().count();
    assert_eq!(a.len(), cycles * 512);
    assert_eq!(empty, cycles * 508);
    assert!(empty <= cycles * (a.thread_block() - 1));
}

#[test]
fn single_slot_vectors_never_hold_slots() {
    let v = Builder::new(1 << 13)
        .thread_block(1)
        .build_concurrent::<u64>()
        .unwrap();
    assert_eq!(v.push(0), 0);
    assert_eq!(push_elsewhere(&v, 1), 1);
    for i in 2..100 {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
    }
    assert_eq!(v.len(), 100);
}

/// A worker thread that pushes on request, so that a test decides the order of its pushes.
struct Worker {
    orders: mpsc::Sender<(u64, u64)>,
    results: mpsc::Receiver<Vec<Result<usize, Error>>>,
}

/// One phase of the model: thread `thread` pushes `count` values.
#[derive(Clone, Debug)]
struct Phase {
    thread: usize,
    count: u64,
}

/// Pushes per phase, and the largest capacity tried (smaller under Miri).
const MAX_COUNT: u64 = if cfg!(miri) { 40 } else { 700 };
const MAX_CAPACITY: usize = if cfg!(miri) { 360 } else { 6300 };

fn phase() -> impl Strategy<Value = Phase> {
    (0..3usize, 1..MAX_COUNT).prop_map(|(thread, count)| Phase { thread, count })
}

/// Runs `phases` one after another on three persistent threads and checks, after each, the
/// vector against the pushes made so far.
fn run_phases(capacity: usize, block: usize, phases: &[Phase]) -> Result<(), TestCaseError> {
    let v = Builder::new(capacity)
        .thread_block(block)
        .build_concurrent::<u64>()
        .unwrap();
    thread::scope(|s| {
        let workers: Vec<Worker> = (0..3)
            .map(|_| {
                let (orders, inbox) = mpsc::channel::<(u64, u64)>();
                let (outbox, results) = mpsc::channel();
                let v = &v;
                s.spawn(move || {
                    for (first, count) in inbox {
                        let pushed = (first..first + count)
                            .map(|value| v.try_push(value).map_err(|e| e.error().clone()))
                            .collect();
                        outbox.send(pushed).unwrap();
                    }
                });
                Worker { orders, results }
            })
            .collect();
        // (index, value) of every successful push, and the last index per thread.
        let mut pushed: Vec<(usize, u64)> = Vec::new();
        let mut last: [Option<usize>; 3] = [None; 3];
        let mut next_value = 0;
        for p in phases {
            let worker = &workers[p.thread];
            worker.orders.send((next_value, p.count)).unwrap();
            let results = worker.results.recv().unwrap();
            for (value, result) in (next_value..).zip(results) {
                match result {
                    Ok(index) => {
                        // A thread's indices increase.
                        prop_assert!(last[p.thread].is_none_or(|l| l < index));
                        last[p.thread] = Some(index);
                        pushed.push((index, value));
                    }
                    Err(e) => {
                        prop_assert!(matches!(e, Error::CapacityExceeded { .. }), "{e}");
                        prop_assert_eq!(v.len(), capacity);
                    }
                }
            }
            next_value += p.count;
            pushed.sort_unstable();
            prop_assert!(pushed.windows(2).all(|w| w[0].0 < w[1].0));
            for &(index, value) in &pushed {
                prop_assert_eq!(v.get(index), Some(&value));
            }
            prop_assert!(v.iter().copied().eq(pushed.iter().map(|&(_, value)| value)));
            let held = v.len() - pushed.len();
            prop_assert!(held <= 3 * (block - 1), "{held} slots held");
            if block == 1 {
                prop_assert!(pushed.iter().map(|&(index, _)| index).eq(0..pushed.len()));
            }
        }
        drop(workers);
        Ok(())
    })
}

proptest! {
    #![proptest_config(common::proptest_config(256, 8))]

    #[test]
    fn phased_pushes_from_three_threads_match_the_model(
        block in prop::sample::select(vec![1usize, 2, 7, 64, 100, 512]),
        capacity in 1..MAX_CAPACITY,
        phases in prop::collection::vec(phase(), 1..12),
    ) {
        run_phases(capacity, block, &phases)?;
    }
}
