//! Zero-sized and over-aligned elements pushed into a `ConcurrentVec` from several threads up
//! to its capacity, through `push`, `push_with` (some constructors panic) and `Pusher`s, with
//! and without thread blocks: every index is handed out once and stays inside the capacity,
//! every successful push reads back, every slot is aligned, and every element is dropped once.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error};

/// Elements alive, per element type.
static ZST_LIVE: AtomicIsize = AtomicIsize::new(0);
static BIG_LIVE: AtomicIsize = AtomicIsize::new(0);

trait Element: Send + Sync + Sized {
    fn new(value: u64) -> Self;
    /// The value the element was made with, if it keeps one.
    fn value(&self) -> Option<u64>;
    fn live() -> isize;
}

struct Zst;

impl Element for Zst {
    fn new(_: u64) -> Self {
        ZST_LIVE.fetch_add(1, Ordering::Relaxed);
        Zst
    }
    fn value(&self) -> Option<u64> {
        None
    }
    fn live() -> isize {
        ZST_LIVE.load(Ordering::Relaxed)
    }
}

impl Drop for Zst {
    fn drop(&mut self) {
        ZST_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An element aligned to two pages (more than the page size on 4 KiB systems).
#[repr(align(8192))]
struct Big(u64);

impl Element for Big {
    fn new(value: u64) -> Self {
        BIG_LIVE.fetch_add(1, Ordering::Relaxed);
        Big(value)
    }
    fn value(&self) -> Option<u64> {
        Some(self.0)
    }
    fn live() -> isize {
        BIG_LIVE.load(Ordering::Relaxed)
    }
}

impl Drop for Big {
    fn drop(&mut self) {
        BIG_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One thread's pushes until every way of pushing finds the vector full; returns the indices
/// and values that went in.
fn fill<T: Element>(v: &ConcurrentVec<T>, thread: u64) -> std::vec::Vec<(usize, u64)> {
    let mut done = std::vec::Vec::new();
    let mut pusher = v.pusher();
    let full = |e: &Error| matches!(e, Error::CapacityExceeded { .. });
    let mut step = 0u64;
    let (mut plain, mut with, mut through_pusher) = (true, true, true);
    while plain || with || through_pusher {
        let value = thread << 32 | step;
        step += 1;
        match step % 3 {
            0 if plain => match v.try_push(T::new(value)) {
                Ok(index) => done.push((index, value)),
                Err(e) => {
                    assert!(full(e.error()));
                    plain = false;
                }
            },
            1 if with => {
                let panics = step % 7 == 1;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    v.try_push_with(|_| {
                        assert!(!panics, "constructor refuses");
                        T::new(value)
                    })
                }));
                match result {
                    Ok(Ok(index)) => done.push((index, value)),
                    Ok(Err(e)) => {
                        assert!(full(&e));
                        with = false;
                    }
                    Err(_) => assert!(panics),
                }
            }
            2 if through_pusher => match pusher.try_push(T::new(value)) {
                Ok(index) => done.push((index, value)),
                Err(e) => {
                    assert!(full(e.error()));
                    through_pusher = false;
                }
            },
            _ => {}
        }
    }
    done
}

fn race_to_capacity<T: Element>() {
    let (capacity, threads) = if cfg!(miri) { (70, 3) } else { (5000, 4) };
    for block in [1, 4, 64] {
        let v: ConcurrentVec<T> = Builder::new(capacity)
            .thread_block(block)
            .build_concurrent()
            .unwrap();
        let all = Mutex::new(std::vec::Vec::new());
        thread::scope(|s| {
            for t in 0..threads {
                let (v, all) = (&v, &all);
                s.spawn(move || {
                    let done = fill(v, t);
                    all.lock().unwrap().extend(done);
                });
            }
        });
        let all = all.into_inner().unwrap();
        let indices: BTreeSet<usize> = all.iter().map(|&(i, _)| i).collect();
        assert_eq!(indices.len(), all.len(), "an index was handed out twice");
        assert!(indices.iter().all(|&i| i < capacity));
        assert_eq!(v.len(), capacity);
        assert_eq!(v.count(), all.len());
        assert_eq!(T::live(), all.len().cast_signed());
        let base = v.reservation().as_ptr() as usize;
        let end = base + v.reservation().len();
        for &(index, value) in &all {
            let element = v.get(index).expect("a successful push reads back");
            if let Some(kept) = element.value() {
                assert_eq!(kept, value);
            }
            let at = std::ptr::from_ref(element) as usize;
            assert_eq!(at % align_of::<T>(), 0);
            assert!(at >= base && at + size_of::<T>() <= end);
        }
        drop(v);
        assert_eq!(T::live(), 0);
    }
}

#[test]
fn zero_sized_elements_race_to_capacity_from_threads() {
    race_to_capacity::<Zst>();
}

#[test]
fn over_aligned_elements_race_to_capacity_from_threads() {
    race_to_capacity::<Big>();
}
