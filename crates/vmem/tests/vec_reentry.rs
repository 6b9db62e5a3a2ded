//! User code that runs in the middle of a vector operation and uses vectors itself: element
//! constructors of `push_with` that push into the same vector (moving this thread's claim
//! cache on, to blocks, or away to another vector), element clones that push into the vector
//! being cloned, and destructors that push into another vector while the first one drops.
//! Every element must be published once, at its own index, and dropped once.
// Per-thread blocks need thread-locals, which the crate has only with `std`.
#![cfg(feature = "std")]
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Vec};

/// Pushes made inside one element constructor (scaled down under Miri).
fn inner() -> u64 {
    if cfg!(miri) { 40 } else { 600 }
}

fn vector(capacity: usize, block: usize) -> ConcurrentVec<u64> {
    Builder::new(capacity)
        .thread_block(block)
        .build_concurrent()
        .unwrap()
}

/// Checks that every index in `pushed` holds its value, that they are distinct, and that
/// iteration yields exactly them.
fn check(v: &ConcurrentVec<u64>, pushed: &[(usize, u64)]) {
    let indices: BTreeSet<usize> = pushed.iter().map(|&(i, _)| i).collect();
    assert_eq!(indices.len(), pushed.len(), "an index was handed out twice");
    for &(index, value) in pushed {
        assert_eq!(v.get(index), Some(&value), "slot {index}");
    }
    let mut seen: std::vec::Vec<(usize, u64)> = v.entries().map(|(i, &x)| (i, x)).collect();
    let mut want = pushed.to_vec();
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want);
    assert_eq!(v.count(), pushed.len());
    assert!(v.published_prefix() <= v.len());
}

#[test]
fn push_with_whose_constructor_pushes_into_the_same_vector_keeps_every_element() {
    // Up to the longest thread block: 512 slots, 256 where `usize` has 32 bits.
    for block in [1, 64, 8 * usize::BITS as usize] {
        let v = vector(1 << 13, block);
        let other = vector(1 << 13, block);
        let mut pushed = std::vec::Vec::new();
        // Another thread's claim between two of this thread's: blocks from now on.
        pushed.push((v.push(0), 0));
        let elsewhere = thread::scope(|s| s.spawn(|| v.push(1)).join().unwrap());
        pushed.push((elsewhere, 1));
        pushed.push((v.push(2), 2));
        for round in 0..3u64 {
            let mut nested = std::vec::Vec::new();
            let outer = v.push_with(|index| {
                for k in 0..inner() {
                    let value = 1_000_000 * (round + 1) + k;
                    nested.push((v.push(value), value));
                }
                // 64 pushes in a row into another vector give this thread's block of `v` up.
                if round == 1 {
                    for k in 0..70 {
                        other.push(k);
                    }
                }
                index as u64 + 10_000_000
            });
            assert!(nested.iter().all(|&(i, _)| i != outer));
            pushed.push((outer, outer as u64 + 10_000_000));
            pushed.extend(nested);
        }
        check(&v, &pushed);
    }
}

#[test]
fn pusher_push_with_whose_constructor_pushes_through_the_vector_keeps_every_element() {
    let v = vector(1 << 13, 64);
    let mut pusher = v.pusher();
    let shared = pusher.vec();
    let mut pushed = std::vec::Vec::new();
    for round in 0..3u64 {
        let mut nested = std::vec::Vec::new();
        let outer = pusher.push_with(|index| {
            for k in 0..inner() {
                let value = 1_000_000 * (round + 1) + k;
                nested.push((shared.push(value), value));
            }
            index as u64
        });
        pushed.push((outer, outer as u64));
        pushed.extend(nested);
        for _ in 0..inner() {
            let value = 5_000_000 + round;
            pushed.push((pusher.push(value), value));
        }
    }
    check(&v, &pushed);
}

/// An element whose clone pushes a new element into the vector it lives in.
struct Grows {
    value: u64,
    home: &'static ConcurrentVec<Grows>,
}

impl Clone for Grows {
    fn clone(&self) -> Self {
        self.home.push(Grows {
            value: self.value + 1_000_000,
            home: self.home,
        });
        Grows {
            value: self.value,
            home: self.home,
        }
    }
}

#[test]
fn clone_whose_element_clones_push_into_the_source_copies_what_was_there() {
    static SOURCE: OnceLock<ConcurrentVec<Grows>> = OnceLock::new();
    let count = if cfg!(miri) { 70 } else { 1500 };
    let home = SOURCE.get_or_init(|| {
        Builder::new(1 << 13)
            .thread_block(64)
            .build_concurrent()
            .unwrap()
    });
    for value in 0..count {
        home.push(Grows { value, home });
    }
    let before = home.len();
    let copy = home.clone();
    // The copy holds the elements that were there, at their indices; the pushes the clones
    // made went into the source, after them.
    assert_eq!(copy.len(), before);
    assert_eq!(copy.count(), count as usize);
    for (index, element) in copy.entries() {
        assert_eq!(home[index].value, element.value);
        assert!(element.value < count);
    }
    assert_eq!(home.count(), 2 * count as usize);
    let mut added: std::vec::Vec<u64> = home
        .iter()
        .map(|g| g.value)
        .filter(|&x| x >= 1_000_000)
        .collect();
    added.sort_unstable();
    assert!(added.iter().copied().eq(1_000_000..1_000_000 + count));
}

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// An element that pushes its value into another vector when it is dropped.
struct Forwards<'a> {
    value: u64,
    to: &'a ConcurrentVec<u64>,
}

impl<'a> Forwards<'a> {
    fn new(value: u64, to: &'a ConcurrentVec<u64>) -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self { value, to }
    }
}

impl Drop for Forwards<'_> {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        self.to.push(self.value);
    }
}

#[test]
fn destructors_that_push_into_another_vector_run_once_each_through_clear_drop_and_into_iter() {
    let sink = vector(1 << 14, 64);
    let count = if cfg!(miri) { 100 } else { 2000 };
    {
        let mut v: ConcurrentVec<Forwards<'_>> = Builder::new(1 << 13)
            .thread_block(64)
            .build_concurrent()
            .unwrap();
        // This thread holds blocks of both vectors, and each destructor's push moves its
        // claim cache from `v` to `sink`.
        thread::scope(|s| {
            s.spawn(|| {
                for k in 0..count {
                    v.push(Forwards::new(k, &sink));
                }
            });
            for k in 0..count {
                v.push(Forwards::new(count + k, &sink));
            }
        });
        v.clear();
        assert_eq!(sink.count(), 2 * count as usize);
        for k in 0..count {
            v.push(Forwards::new(2 * count + k, &sink));
        }
        let mut rest = v.into_iter();
        drop(rest.next());
        drop(rest);
        let mut owned = Vec::with_capacity(count as usize).unwrap();
        for k in 0..count {
            owned.push(Forwards::new(3 * count + k, &sink));
        }
        owned.truncate(count as usize / 2);
        drop(owned.drain(1..3));
    }
    assert_eq!(LIVE.load(Ordering::Relaxed), 0);
    let mut values: std::vec::Vec<u64> = sink.iter().copied().collect();
    values.sort_unstable();
    assert!(values.iter().copied().eq(0..4 * count));
}
