//! How `ConcurrentVec::push` moves between single slots and per-thread blocks: exact indices
//! for a thread pushing alone, blocks once threads interleave, the way back, and the cache entry
//! that names each vector.
// Per-thread blocks need thread-locals, which the crate has only with `std`.
#![cfg(feature = "std")]

mod common;

use std::sync::mpsc;
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error};
use proptest::prelude::*;

/// The longest thread block: eight words of ready bits, 512 slots where `usize` has 64 bits,
/// 256 where it has 32.
const BLOCK: usize = 8 * usize::BITS as usize;

/// A ready-bit word's slots: 64, or 32 where `usize` has 32 bits.
const WORD: usize = usize::BITS as usize;

/// `BLOCK` as an element value.
const BLOCK_VALUE: u64 = BLOCK as u64;

/// A vector with thread blocks of `BLOCK` slots (the default from a capacity of 2 Mi slots up,
/// 1 Mi where `usize` has 32 bits).
fn large() -> ConcurrentVec<u64> {
    Builder::new(1 << 13)
        .thread_block(BLOCK)
        .build_concurrent()
        .unwrap()
}

/// Pushes `value` from a new thread and returns its index.
fn push_elsewhere(v: &ConcurrentVec<u64>, value: u64) -> usize {
    thread::scope(|s| s.spawn(|| v.push(value)).join().unwrap())
}

/// Puts this thread into block mode on `v`: its claims are interleaved with another thread's.
/// Returns the index of this thread's first block slot; the block runs to `BLOCK`.
fn enter_blocks(v: &ConcurrentVec<u64>) -> usize {
    assert_eq!(v.push(0), 0);
    assert_eq!(push_elsewhere(v, 1), 1);
    // Slot 1 came between this thread's claims: it claims blocks from now on.
    assert_eq!(v.push(2), 2);
    assert_eq!(v.len(), 3);
    let first = v.push(3);
    assert_eq!(first, 3);
    assert_eq!(
        v.len(),
        BLOCK,
        "the block runs to the next multiple of BLOCK"
    );
    first
}

#[test]
fn thread_block_defaults_follow_the_capacity() {
    let block = |capacity: usize| Builder::new(capacity).thread_block_slots().unwrap();
    assert_eq!(block(0), 1);
    assert_eq!(block(1000), 1);
    assert_eq!(block(1 << 20), 256);
    assert_eq!(block(1 << 22), BLOCK);
    assert_eq!(block(usize::MAX), BLOCK);
    let v = ConcurrentVec::<u8>::with_capacity(4096 * BLOCK).unwrap();
    assert_eq!(v.thread_block(), BLOCK);
}

#[test]
fn thread_block_outside_1_to_block_is_refused() {
    for slots in [0, BLOCK + 1, 513, usize::MAX] {
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
    for slots in [1, 3, 64, BLOCK] {
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
    // Past several thread blocks; fewer under Miri, which interprets each push.
    let pushes: u64 = if cfg!(miri) { 1200 } else { 5000 };
    for i in 0..pushes {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
        assert_eq!(v.len(), usize::try_from(i).unwrap() + 1);
    }
    let pushes = usize::try_from(pushes).unwrap();
    assert_eq!(v.published_prefix(), pushes / WORD * WORD);
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
    assert_eq!(push_elsewhere(&v, BLOCK_VALUE), BLOCK);
    for i in 4..BLOCK_VALUE {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
    }
    // The next block skips slot `BLOCK`: this thread stays in block mode.
    assert_eq!(v.push(BLOCK_VALUE + 1), BLOCK + 1);
    assert_eq!(v.len(), 2 * BLOCK);
    for i in BLOCK_VALUE + 2..2 * BLOCK_VALUE {
        assert_eq!(v.push(i), usize::try_from(i).unwrap());
    }
    // Nobody claims while it fills the next blocks: each follows the previous one directly, and
    // after eight of those in a row the thread goes back to single slots.
    for block in 2..10u64 {
        let start = block * BLOCK_VALUE;
        assert_eq!(v.push(start), usize::try_from(start).unwrap());
        assert_eq!(v.len(), usize::try_from(start + BLOCK_VALUE).unwrap());
        for i in start + 1..start + BLOCK_VALUE {
            v.push(i);
        }
    }
    assert_eq!(v.push(10 * BLOCK_VALUE), 10 * BLOCK);
    assert_eq!(v.len(), 10 * BLOCK + 1);
    assert!(v.iter().copied().eq(0..=10 * BLOCK_VALUE));
    assert_eq!(v.published_prefix(), 10 * BLOCK);
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
    assert_eq!(a.push(99), BLOCK);
    assert_eq!(a.len(), BLOCK + 1);
    assert_eq!(a.iter().count(), 15);
    assert_eq!(a.get(14), None);
    assert!(b.iter().copied().eq(0..74));
}

/// Only pushes elsewhere in a row count towards the eviction: a push into the block's vector
/// starts the count over, so a thread that alternates between two vectors keeps its block
/// however many pushes it makes.
#[test]
fn alternating_pushes_keep_the_block_and_only_64_in_a_row_evict_it() {
    let a = large();
    let b = large();
    enter_blocks(&a);
    let mut next_a = 4;
    for round in 0..3u64 {
        // 63 pushes into `b` in a row, then one into `a`: 189 pushes elsewhere in all.
        for i in 0..63 {
            b.push(round * 63 + i);
        }
        assert_eq!(a.push(next_a), usize::try_from(next_a).unwrap());
        next_a += 1;
    }
    assert_eq!(a.len(), BLOCK, "the block is still held");
    for i in 0..64 {
        b.push(189 + i);
    }
    assert_eq!(
        a.push(99),
        BLOCK,
        "64 pushes in a row elsewhere gave the block up"
    );
    assert_eq!(a.len(), BLOCK + 1);
    assert!(a.iter().copied().eq((0..next_a).chain([99])));
    assert!(b.iter().copied().eq(0..253));
}

/// The most slots that blocks given up can leave empty among `len` slots of a vector with
/// blocks of `block` slots (the bound `ConcurrentVec` documents): each such block leaves at
/// most `block - 1` slots empty, and its thread filled at least three others first.
fn most_left_empty(len: usize, block: usize) -> usize {
    (block - 1) * len / (block + 2)
}

/// The slots of `v` below its `len` that hold no element.
fn empty_slots(v: &ConcurrentVec<u64>) -> usize {
    v.len() - v.iter().count()
}

/// Every block a thread gives up unfilled leaves its rest empty for good, so a thread that
/// keeps moving between vectors can leave most of one empty: here 4 elements per `BLOCK` slots,
/// with one other thread pushing single slots.
#[test]
fn each_evicted_block_leaves_its_rest_empty() {
    let a = large();
    let b = large();
    let cycles = 8;
    for cycle in 0..cycles {
        let base = cycle * BLOCK;
        assert_eq!(a.push(0), base);
        assert_eq!(push_elsewhere(&a, 1), base + 1);
        assert_eq!(a.push(2), base + 2);
        assert_eq!(a.push(3), base + 3);
        assert_eq!(
            a.len(),
            base + BLOCK,
            "a block to the next multiple of BLOCK"
        );
        for i in 0..64 {
            b.push(i);
        }
    }
    assert_eq!(a.len(), cycles * BLOCK);
    assert_eq!(empty_slots(&a), cycles * (BLOCK - 4));
    assert!(empty_slots(&a) <= most_left_empty(a.len(), BLOCK));
}

/// A thread that runs the closures it is sent, one at a time, so that a test decides how its
/// pushes interleave with other threads'. It exits when dropped.
struct Runner<'env> {
    jobs: mpsc::Sender<Box<dyn FnOnce() -> usize + Send + 'env>>,
    done: mpsc::Receiver<usize>,
}

impl<'env> Runner<'env> {
    fn new<'scope>(s: &'scope thread::Scope<'scope, 'env>) -> Self {
        let (jobs, inbox) = mpsc::channel::<Box<dyn FnOnce() -> usize + Send + 'env>>();
        let (outbox, done) = mpsc::channel();
        s.spawn(move || {
            for job in inbox {
                outbox.send(job()).unwrap();
            }
        });
        Self { jobs, done }
    }

    /// Runs `job` on the thread and returns its result.
    fn run(&self, job: impl FnOnce() -> usize + Send + 'env) -> usize {
        self.jobs.send(Box::new(job)).unwrap();
        self.done.recv().unwrap()
    }
}

/// Runs `cycles` rounds in which this thread and one other take turns on `a`: each pushes a
/// single slot twice (the other thread's claim between its two moves it to blocks), then each
/// claims a block and fills its first slot, then both give their blocks up with 64 pushes in a
/// row into `b`. Returns the index of the other thread's block in each round.
fn take_turns(a: &ConcurrentVec<u64>, b: &ConcurrentVec<u64>, cycles: usize) -> Vec<usize> {
    thread::scope(|s| {
        let other = Runner::new(s);
        (0..cycles)
            .map(|_| {
                let base = a.len();
                assert_eq!(a.push(0), base);
                assert_eq!(other.run(move || a.push(1)), base + 1);
                assert_eq!(a.push(2), base + 2);
                assert_eq!(other.run(move || a.push(3)), base + 3);
                assert_eq!(a.push(4), base + 4, "this thread's block");
                let other_block = other.run(move || a.push(5));
                let evict = move || {
                    for i in 0..64 {
                        b.push(i);
                    }
                    0
                };
                evict();
                other.run(evict);
                other_block
            })
            .collect()
    })
}

/// Two threads that take turns reach the bound: with blocks of 7 (not a multiple of 64, so not
/// aligned) each round fills 6 slots and leaves 12 empty, 6 of every 9.
#[test]
fn blocks_given_up_leave_at_most_block_minus_one_of_every_block_plus_two_slots_empty() {
    let a = Builder::new(1 << 12)
        .thread_block(7)
        .build_concurrent::<u64>()
        .unwrap();
    let b = large();
    let cycles = 6;
    let blocks = take_turns(&a, &b, cycles);
    assert!(blocks.iter().copied().eq((0..cycles).map(|c| c * 18 + 11)));
    assert_eq!(a.len(), cycles * 18);
    assert_eq!(empty_slots(&a), cycles * 12);
    assert_eq!(empty_slots(&a), most_left_empty(a.len(), 7));
}

/// The same with aligned blocks of `BLOCK` slots (512; 256 where `usize` has 32 bits): this
/// thread's block runs to the end of the `BLOCK` slots its single slots began, the other
/// thread's fills the next `BLOCK` alone, so each round leaves `2 * BLOCK - 6` of `2 * BLOCK`
/// slots empty (509 of every 512, within the bound of 511 of every 514).
#[test]
fn two_threads_taking_turns_with_aligned_blocks_leave_all_but_3_of_every_block_empty() {
    let a = large();
    let b = large();
    let cycles = 4;
    let blocks = take_turns(&a, &b, cycles);
    assert!(
        blocks
            .iter()
            .copied()
            .eq((0..cycles).map(|c| c * 2 * BLOCK + BLOCK))
    );
    assert_eq!(a.len(), cycles * 2 * BLOCK);
    assert_eq!(empty_slots(&a), cycles * (2 * BLOCK - 6));
    assert!(empty_slots(&a) <= most_left_empty(a.len(), BLOCK));
}

/// With blocks of a multiple of 64, a block runs to the next multiple of its length; the bound
/// is reached when the threads' single slots fill whole stretches of their own: here 32 threads
/// fill slots 0..64 with two single pushes each, then each claims a block of 64 of its own,
/// fills its first slot and exits.
#[test]
fn aligned_blocks_given_up_at_thread_exit_reach_the_bound() {
    let a = Builder::new(1 << 12)
        .thread_block(64)
        .build_concurrent::<u64>()
        .unwrap();
    thread::scope(|s| {
        let threads: Vec<Runner<'_>> = (0..32).map(|_| Runner::new(s)).collect();
        let a = &a;
        for round in 0..2 {
            for (t, runner) in threads.iter().enumerate() {
                assert_eq!(runner.run(move || a.push(0)), round * 32 + t);
            }
        }
        for (t, runner) in threads.iter().enumerate() {
            assert_eq!(runner.run(move || a.push(1)), 64 * (t + 1));
        }
        assert_eq!(a.len(), 64 * 33);
        // The threads exit here and give their blocks up.
    });
    assert_eq!(a.len(), 64 * 33);
    assert_eq!(empty_slots(&a), 32 * 63);
    assert_eq!(empty_slots(&a), most_left_empty(a.len(), 64));
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
    orders: mpsc::Sender<(u64, u64, bool)>,
    results: mpsc::Receiver<Vec<Result<usize, Error>>>,
}

/// One phase of the model: thread `thread` pushes `count` values, then, if `away`, 64 values
/// into another vector, which gives up the block it holds.
#[derive(Clone, Debug)]
struct Phase {
    thread: usize,
    count: u64,
    away: bool,
}

/// Pushes per phase, and the largest capacity tried (smaller under Miri).
const MAX_COUNT: u64 = if cfg!(miri) { 40 } else { 700 };
const MAX_CAPACITY: usize = if cfg!(miri) { 360 } else { 6300 };

fn phase() -> impl Strategy<Value = Phase> {
    (0..3usize, 1..MAX_COUNT, any::<bool>()).prop_map(|(thread, count, away)| Phase {
        thread,
        count,
        away,
    })
}

/// Runs `phases` one after another on three persistent threads and checks, after each, the
/// vector against the pushes made so far.
fn run_phases(capacity: usize, block: usize, phases: &[Phase]) -> Result<(), TestCaseError> {
    let v = Builder::new(capacity)
        .thread_block(block)
        .build_concurrent::<u64>()
        .unwrap();
    let elsewhere = Builder::new(64 * 12)
        .thread_block(block)
        .build_concurrent::<u64>()
        .unwrap();
    thread::scope(|s| {
        let workers: Vec<Worker> = (0..3)
            .map(|_| {
                let (orders, inbox) = mpsc::channel::<(u64, u64, bool)>();
                let (outbox, results) = mpsc::channel();
                let (v, elsewhere) = (&v, &elsewhere);
                s.spawn(move || {
                    for (first, count, away) in inbox {
                        let pushed = (first..first + count)
                            .map(|value| v.try_push(value).map_err(|e| e.error().clone()))
                            .collect();
                        if away {
                            for value in 0..64 {
                                elsewhere.push(value);
                            }
                        }
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
        // Whether a thread has given up a block yet.
        let mut gave_up = false;
        for p in phases {
            let worker = &workers[p.thread];
            worker.orders.send((next_value, p.count, p.away)).unwrap();
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
            // Slots held by the threads, and those their given-up blocks left empty.
            let empty = v.len() - pushed.len();
            prop_assert!(
                empty <= most_left_empty(v.len(), block),
                "{empty} of {} slots empty",
                v.len()
            );
            if !gave_up {
                prop_assert!(empty <= 3 * (block - 1), "{empty} slots held");
            }
            gave_up |= p.away;
            if block == 1 {
                prop_assert!(pushed.iter().map(|&(index, _)| index).eq(0..pushed.len()));
            }
        }
        drop(workers);
        Ok(())
    })
}

proptest! {
    #![proptest_config(common::proptest_config(256, 3))]

    #[test]
    fn phased_pushes_from_three_threads_match_the_model(
        // Up to the longest thread block: 512 slots, 256 where `usize` has 32 bits.
        block in prop::sample::select(vec![1usize, 2, 7, 64, 100, BLOCK]),
        capacity in 1..MAX_CAPACITY,
        phases in prop::collection::vec(phase(), 1..12),
    ) {
        run_phases(capacity, block, &phases)?;
    }
}
