//! A push in thread-block mode whose block the system refuses to commit, tried again: the
//! thread keeps the block it claimed and tries its commit again, instead of claiming a fresh
//! block (which would leave the whole refused one empty) on every try.
//!
//! The refusal is real and passing: the process's mapping limit is filled while the commit
//! needs a new kernel mapping, and given back before the next try. Alone in its file (its own
//! process), as it fills the mapping limit for a moment (and, named `map_limit*`, is left out of
//! the sanitizer runs, whose allocators need mappings too).
#![cfg(all(target_os = "linux", feature = "std", not(miri)))]

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error};
use memvisor_vmem::{Advice, CommitMode, page_size};

#[path = "support/map_limit.rs"]
mod map_limit;
use map_limit::at_mapping_limit;

/// The longest thread block, and a `Pusher`'s: eight words of ready bits, 512 slots where
/// `usize` has 64 bits, 256 where it has 32.
const BLOCK: usize = 8 * usize::BITS as usize;

/// One page per element, so that every block of `BLOCK` slots commits `BLOCK` pages.
type Element = [u8; 4096];

/// Held by each test for its whole run: while one test fills the mapping limit, any mapping
/// another test needs would be refused.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn push_whose_block_commit_is_refused_keeps_the_block_for_the_next_try() {
    let _alone = alone();
    assert_eq!(page_size(), 4096, "the element is one page");
    let v: ConcurrentVec<Element> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .mode(CommitMode::Protected)
        .build_concurrent()
        .unwrap();
    // Into block mode: another thread's claim between two of this thread's.
    assert_eq!(v.push([0; 4096]), 0);
    assert_eq!(
        thread::scope(|s| s.spawn(|| v.push([1; 4096])).join().unwrap()),
        1
    );
    assert_eq!(v.push([2; 4096]), 2);
    // The first block, 3..BLOCK, committed at once.
    assert_eq!(v.push([3; 4096]), 3);
    assert_eq!(v.len(), BLOCK);
    for i in 4..BLOCK {
        assert_eq!(v.push([4; 4096]), i);
    }
    let committed = v.committed_bytes();
    // Pages of other advice next to the block: committing it splits a kernel mapping, which
    // needs a mapping to spare.
    v.reservation()
        .advise(0, BLOCK * 4096, Advice::DontFork)
        .unwrap();
    for attempt in 0..3 {
        let refused =
            at_mapping_limit(|| v.try_push([5; 4096]).map_err(|e| Box::new(e.into_parts())));
        let Err((value, error)) = refused.map_err(|e| *e) else {
            panic!("attempt {attempt}: the kernel had a mapping to spare");
        };
        assert!(
            matches!(error, Error::Commit { .. }),
            "attempt {attempt}: {error}"
        );
        assert_eq!(value, [5; 4096]);
        // One block claimed, however many tries.
        assert_eq!(v.len(), 2 * BLOCK, "attempt {attempt}");
        assert_eq!(v.committed_bytes(), committed, "attempt {attempt}");
    }
    // With room again, the push takes the first slot of the block it claimed before.
    assert_eq!(v.push([6; 4096]), BLOCK);
    assert_eq!(v.len(), 2 * BLOCK);
    assert_eq!(v.get(BLOCK), Some(&[6; 4096]));
    for i in BLOCK + 1..2 * BLOCK {
        assert_eq!(v.push([7; 4096]), i);
    }
    assert_eq!(v.len(), 2 * BLOCK);
    assert_eq!(v.count(), 2 * BLOCK);
}

#[test]
fn pusher_whose_block_commit_is_refused_keeps_the_block_for_the_next_try() {
    let _alone = alone();
    let v: ConcurrentVec<Element> = Builder::new(1 << 12)
        .mode(CommitMode::Protected)
        .build_concurrent()
        .unwrap();
    let mut pusher = v.pusher();
    for i in 0..BLOCK {
        assert_eq!(pusher.push([1; 4096]), i);
    }
    let committed = v.committed_bytes();
    v.reservation()
        .advise(0, BLOCK * 4096, Advice::DontFork)
        .unwrap();
    for attempt in 0..3 {
        let refused = at_mapping_limit(|| {
            pusher
                .try_push([2; 4096])
                .map_err(|e| Box::new(e.into_parts()))
        });
        let Err((value, error)) = refused.map_err(|e| *e) else {
            panic!("attempt {attempt}: the kernel had a mapping to spare");
        };
        assert!(
            matches!(error, Error::Commit { .. }),
            "attempt {attempt}: {error}"
        );
        assert_eq!(value, [2; 4096]);
        assert_eq!(v.len(), 2 * BLOCK, "attempt {attempt}");
        assert_eq!(v.committed_bytes(), committed, "attempt {attempt}");
    }
    assert_eq!(pusher.push([3; 4096]), BLOCK);
    assert_eq!(pusher.remaining(), BLOCK - 1);
    assert_eq!(v.get(BLOCK), Some(&[3; 4096]));
    assert_eq!(v.len(), 2 * BLOCK);
}

#[test]
fn clear_forgets_a_block_whose_commit_was_refused() {
    let _alone = alone();
    let mut v: ConcurrentVec<Element> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .mode(CommitMode::Protected)
        .build_concurrent()
        .unwrap();
    assert_eq!(v.push([0; 4096]), 0);
    assert_eq!(
        thread::scope(|s| s.spawn(|| v.push([1; 4096])).join().unwrap()),
        1
    );
    for i in 2..BLOCK {
        assert_eq!(v.push([2; 4096]), i);
    }
    v.reservation()
        .advise(0, BLOCK * 4096, Advice::DontFork)
        .unwrap();
    let refused = at_mapping_limit(|| v.try_push([3; 4096]).map(|_| ()).map_err(|_| ()));
    assert_eq!(refused, Err(()), "the kernel had a mapping to spare");
    assert_eq!(v.len(), 2 * BLOCK);
    v.clear();
    // The block claimed before the clear is not this thread's any more: indices start over.
    assert_eq!(v.push([4; 4096]), 0);
    assert_eq!(v.len(), 1);
    assert_eq!(v.get(0), Some(&[4; 4096]));
}

#[test]
fn pushes_into_another_vector_keep_a_block_whose_commit_was_refused() {
    let _alone = alone();
    let v: ConcurrentVec<Element> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .mode(CommitMode::Protected)
        .build_concurrent()
        .unwrap();
    let other: ConcurrentVec<u64> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .build_concurrent()
        .unwrap();
    assert_eq!(v.push([0; 4096]), 0);
    assert_eq!(
        thread::scope(|s| s.spawn(|| v.push([1; 4096])).join().unwrap()),
        1
    );
    for i in 2..BLOCK {
        assert_eq!(v.push([2; 4096]), i);
    }
    v.reservation()
        .advise(0, BLOCK * 4096, Advice::DontFork)
        .unwrap();
    let refused = at_mapping_limit(|| v.try_push([3; 4096]).map(|_| ()).map_err(|_| ()));
    assert_eq!(refused, Err(()), "the kernel had a mapping to spare");
    assert_eq!(v.len(), 2 * BLOCK);
    // Pushes alternating with another vector keep the block, as they keep a block that
    // still has slots, and so do fewer than 64 pushes in a row elsewhere.
    for round in 0..3u64 {
        other.push(round);
        let refused = at_mapping_limit(|| v.try_push([3; 4096]).map(|_| ()).map_err(|_| ()));
        assert_eq!(
            refused,
            Err(()),
            "round {round}: the kernel had a mapping to spare"
        );
        assert_eq!(v.len(), 2 * BLOCK, "round {round}");
    }
    for i in 0..63 {
        other.push(i);
    }
    assert_eq!(v.push([4; 4096]), BLOCK);
    assert_eq!(v.len(), 2 * BLOCK);
    assert_eq!(v.get(BLOCK), Some(&[4; 4096]));
    for i in BLOCK + 1..2 * BLOCK {
        assert_eq!(v.push([5; 4096]), i);
    }
    assert_eq!(v.count(), 2 * BLOCK);
    assert_eq!(other.len(), 66);
}

#[test]
fn sixty_four_pushes_in_a_row_elsewhere_give_up_a_block_whose_commit_was_refused() {
    let _alone = alone();
    let v: ConcurrentVec<Element> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .mode(CommitMode::Protected)
        .build_concurrent()
        .unwrap();
    let other: ConcurrentVec<u64> = Builder::new(1 << 12)
        .thread_block(BLOCK)
        .build_concurrent()
        .unwrap();
    assert_eq!(v.push([0; 4096]), 0);
    assert_eq!(
        thread::scope(|s| s.spawn(|| v.push([1; 4096])).join().unwrap()),
        1
    );
    for i in 2..BLOCK {
        assert_eq!(v.push([2; 4096]), i);
    }
    v.reservation()
        .advise(0, BLOCK * 4096, Advice::DontFork)
        .unwrap();
    let refused = at_mapping_limit(|| v.try_push([3; 4096]).map(|_| ()).map_err(|_| ()));
    assert_eq!(refused, Err(()), "the kernel had a mapping to spare");
    for i in 0..64 {
        other.push(i);
    }
    // The entry went to the other vector: a single slot after the block given up.
    assert_eq!(v.push([4; 4096]), 2 * BLOCK);
    assert_eq!(v.count(), BLOCK + 1);
}
