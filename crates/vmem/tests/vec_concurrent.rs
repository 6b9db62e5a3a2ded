//! Behaviour of `vec::ConcurrentVec`: pushes and reads, capacity, holes left by panicking
//! constructors, drop counts, panic safety, odd element types kept inside the reservation, a
//! multi-threaded stress test, and a model test against `std::vec::Vec<Option<T>>`.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth};
use memvisor_vmem::{CommitMode, page_size};
use proptest::prelude::*;

/// The longest thread block, and a `Pusher`'s: eight words of ready bits, 512 slots where
/// `usize` has 64 bits, 256 where it has 32.
const BLOCK: usize = 8 * usize::BITS as usize;

/// A ready-bit word's slots: 64, or 32 where `usize` has 32 bits.
const WORD: usize = usize::BITS as usize;

/// Counts drops through a shared counter; panics on drop if `bomb`, on clone if `value == 13`.
#[derive(Debug)]
struct Counted {
    value: u64,
    drops: Arc<AtomicUsize>,
    bomb: bool,
}

impl Counted {
    fn new(value: u64, drops: &Arc<AtomicUsize>) -> Self {
        Self {
            value,
            drops: Arc::clone(drops),
            bomb: false,
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        assert!(self.value != 13, "clone of 13 refused");
        Self::new(self.value, &self.drops)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
        if self.bomb && !thread::panicking() {
            panic!("drop bomb {}", self.value);
        }
    }
}

#[test]
fn push_returns_consecutive_indices_and_get_reads_them() {
    let v = ConcurrentVec::with_capacity(1000).unwrap();
    for i in 0..100u32 {
        assert_eq!(v.push(i * 2), i as usize);
    }
    assert_eq!(v.len(), 100);
    for i in 0..100 {
        assert_eq!(v.get(i), Some(&(i as u32 * 2)));
        assert_eq!(v[i], i as u32 * 2);
    }
    assert_eq!(v.get(100), None);
    assert_eq!(v.get(usize::MAX), None);
}

#[test]
fn empty_vec_reads_nothing() {
    let v = ConcurrentVec::<String>::with_capacity(10).unwrap();
    assert!(v.is_empty());
    assert_eq!(v.get(0), None);
    assert_eq!(v.iter().count(), 0);
    assert_eq!(v.committed_bytes(), 0);
    assert_eq!(format!("{v:?}"), "[]");
}

#[test]
#[should_panic(expected = "index 3 is not a published element (len 1)")]
fn index_unpublished_panics() {
    let v = ConcurrentVec::with_capacity(10).unwrap();
    v.push(1);
    let _ = v[3];
}

#[test]
fn try_push_at_capacity_returns_value_and_keeps_len() {
    let v = ConcurrentVec::with_capacity(2).unwrap();
    v.push('a');
    v.push('b');
    let err = v.try_push('c').unwrap_err();
    assert_eq!(
        err.error(),
        &Error::CapacityExceeded {
            capacity: 2,
            requested: 3
        }
    );
    assert_eq!(err.into_value(), 'c');
    assert_eq!(v.len(), 2);
    // Repeated failures do not disturb the count.
    for _ in 0..10 {
        assert!(v.try_push('d').is_err());
    }
    assert_eq!(v.len(), 2);
    assert_eq!(v.iter().collect::<String>(), "ab");
}

#[test]
fn push_at_capacity_panics_with_clear_message() {
    let v = ConcurrentVec::with_capacity(1).unwrap();
    v.push(1u8);
    let panic = catch_unwind(AssertUnwindSafe(|| v.push(2))).unwrap_err();
    assert_eq!(
        panic.downcast_ref::<String>().unwrap(),
        "memvisor_vmem::vec::ConcurrentVec::push: vector is full: 2 elements needed, capacity is 1"
    );
}

#[test]
fn try_push_with_at_capacity_does_not_call_constructor() {
    let v = ConcurrentVec::with_capacity(0).unwrap();
    let e = v.try_push_with(|_| -> u8 { unreachable!("not called") });
    assert_eq!(
        e,
        Err(Error::CapacityExceeded {
            capacity: 0,
            requested: 1
        })
    );
}

#[test]
fn push_with_panic_leaves_hole_never_dropped() {
    let drops = Arc::new(AtomicUsize::new(0));
    let v = ConcurrentVec::with_capacity(10).unwrap();
    v.push(Counted::new(0, &drops));
    let r = catch_unwind(AssertUnwindSafe(|| {
        v.push_with(|_| -> Counted { panic!("constructor fails") })
    }));
    assert!(r.is_err());
    let i = v.push_with(|index| Counted::new(index as u64, &drops));
    assert_eq!(i, 2);
    assert_eq!(v.len(), 3);
    assert!(v.get(1).is_none());
    let entries: Vec<(usize, u64)> = v.entries().map(|(i, c)| (i, c.value)).collect();
    assert_eq!(entries, [(0, 0), (2, 2)]);
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), 2);
}

#[test]
fn drop_drops_every_published_element_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let n = if cfg!(miri) { 200 } else { 10_000 };
    let v = ConcurrentVec::with_capacity(n).unwrap();
    for i in 0..n {
        v.push(Counted::new(i as u64, &drops));
    }
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), n);
}

#[test]
fn drop_with_panicking_destructor_drops_the_rest() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut v = ConcurrentVec::with_capacity(100).unwrap();
    for i in 0..70 {
        v.push(Counted::new(i, &drops));
    }
    v.get_mut(3).unwrap().bomb = true;
    v.get_mut(65).unwrap().bomb = true;
    assert!(catch_unwind(AssertUnwindSafe(|| drop(v))).is_err());
    assert_eq!(drops.load(Ordering::Relaxed), 70);
}

#[test]
fn clear_drops_all_and_restarts_indices() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut v = ConcurrentVec::with_capacity(100).unwrap();
    for i in 0..10 {
        v.push(Counted::new(i, &drops));
    }
    v.get_mut(4).unwrap().bomb = true;
    assert!(catch_unwind(AssertUnwindSafe(|| v.clear())).is_err());
    assert_eq!(drops.load(Ordering::Relaxed), 10);
    assert!(v.is_empty());
    assert_eq!(v.iter().count(), 0);
    assert_eq!(v.push(Counted::new(99, &drops)), 0);
    assert_eq!(v[0].value, 99);
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), 11);
}

#[test]
fn clone_keeps_indices_and_holes() {
    let v = ConcurrentVec::with_capacity(10).unwrap();
    v.push("a".to_owned());
    let _ = catch_unwind(AssertUnwindSafe(|| {
        v.push_with(|_| -> String { panic!("hole") })
    }));
    v.push("c".to_owned());
    let c = v.clone();
    assert_eq!(c.len(), 3);
    assert_eq!(c.get(0).map(String::as_str), Some("a"));
    assert_eq!(c.get(1), None);
    assert_eq!(c.get(2).map(String::as_str), Some("c"));
    assert_eq!(c.push("d".to_owned()), 3);
    assert_eq!(c.options(), v.options());
}

#[test]
fn clone_while_another_thread_pushes_copies_a_consistent_prefix() {
    // Pushes that land while the copy is made must not be written into the copy past what it
    // committed (with protected commits that faulted), nor leave it with elements at or past
    // its length, which its own pushes would claim again.
    let (cap, rounds) = if cfg!(miri) { (8, 1) } else { (256, 150) };
    let mut v: ConcurrentVec<Page> = Builder::new(cap)
        .growth(Growth::Fixed(0))
        .mode(CommitMode::Protected)
        .thread_block(1)
        .build_concurrent()
        .unwrap();
    for _ in 0..rounds {
        v.clear();
        thread::scope(|s| {
            let v = &v;
            s.spawn(move || while v.try_push(Page([1; 4096])).is_ok() {});
            while v.len() < v.capacity() {
                let copy = v.try_clone().unwrap();
                let len = copy.len();
                assert!(copy.entries().all(|(i, page)| i < len && page.0[0] == 1));
                if len < copy.capacity() {
                    assert_eq!(copy.push(Page([2; 4096])), len);
                }
            }
        });
    }
}

#[test]
fn clone_panic_drops_partial_copy_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let v = ConcurrentVec::with_capacity(10).unwrap();
    for value in [1, 2, 13, 4] {
        v.push(Counted::new(value, &drops));
    }
    assert!(catch_unwind(AssertUnwindSafe(|| v.clone())).is_err());
    assert_eq!(drops.load(Ordering::Relaxed), 2);
    assert_eq!(v.iter().count(), 4);
}

#[test]
fn into_iter_moves_out_in_order_and_drops_rest() {
    let drops = Arc::new(AtomicUsize::new(0));
    let v = ConcurrentVec::with_capacity(200).unwrap();
    for i in 0..130 {
        v.push(Counted::new(i, &drops));
    }
    let mut it = v.into_iter();
    let first: Vec<u64> = it.by_ref().take(70).map(|c| c.value).collect();
    assert!(first.into_iter().eq(0..70));
    assert_eq!(drops.load(Ordering::Relaxed), 70);
    drop(it);
    assert_eq!(drops.load(Ordering::Relaxed), 130);
}

#[test]
fn iter_mut_and_get_mut_change_elements() {
    let mut v = ConcurrentVec::with_capacity(100).unwrap();
    for i in 0..80u32 {
        v.push(i);
    }
    for x in &mut v {
        *x += 1;
    }
    *v.get_mut(0).unwrap() = 100;
    assert_eq!(v.get_mut(80), None);
    assert_eq!((&v).into_iter().sum::<u32>(), (2..=80).sum::<u32>() + 100);
}

#[test]
fn zero_sized_elements_publish_and_drop() {
    static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            ZST_DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let v = ConcurrentVec::with_capacity(1 << 20).unwrap();
    for i in 0..300 {
        assert_eq!(v.push(Zst), i);
    }
    assert_eq!(v.iter().count(), 300);
    assert!(v.get(299).is_some());
    drop(v);
    assert_eq!(ZST_DROPS.load(Ordering::Relaxed), 300);
    let small = ConcurrentVec::with_capacity(1).unwrap();
    small.push(());
    assert!(small.try_push(()).is_err());
}

#[test]
fn capacity_above_isize_max_is_too_large() {
    let e = ConcurrentVec::<()>::with_capacity(usize::MAX).unwrap_err();
    assert_eq!(
        e,
        Error::TooLarge {
            capacity: usize::MAX,
            element_size: 0
        }
    );
}

/// A page-sized element, so that a vector of them commits a page per element.
#[repr(align(4096))]
#[derive(Clone, Debug)]
struct Page([u8; 4096]);

/// Checks that every byte of every slot, and of the vector's bookkeeping, lies in the
/// reservation, with the vector filled to capacity (so a write past the end would have hit
/// memory the reservation does not own, or faulted on an uncommitted page).
fn assert_slots_inside<T>(v: &ConcurrentVec<T>) {
    let r = v.reservation();
    let size = std::mem::size_of::<T>();
    for (i, x) in v.entries() {
        let p = std::ptr::from_ref(x).cast::<u8>();
        assert_eq!(
            p as usize % std::mem::align_of::<T>(),
            0,
            "slot {i} misaligned"
        );
        assert!(r.contains(p), "slot {i} starts outside");
        assert!(
            r.contains(p.wrapping_add(size - 1)),
            "slot {i} ends outside"
        );
    }
    assert!(v.committed_bytes() <= r.len());
}

#[test]
fn overaligned_elements_stay_inside_reservation() {
    let v = Builder::new(9)
        .growth(Growth::Fixed(1))
        .build_concurrent::<Page>()
        .unwrap();
    for i in 0..9u8 {
        v.push(Page([i; 4096]));
    }
    assert!(v.try_push(Page([0; 4096])).is_err());
    assert_slots_inside(&v);
    for (i, page) in v.entries() {
        assert!(page.0.iter().all(|&b| usize::from(b) == i));
    }
}

#[test]
fn large_elements_stay_inside_reservation() {
    let v = Builder::new(13)
        .growth(Growth::Fixed(1))
        .build_concurrent::<[u8; 10_000]>()
        .unwrap();
    for i in 0..13u8 {
        v.push([i; 10_000]);
    }
    assert!(v.try_push([0; 10_000]).is_err());
    assert_slots_inside(&v);
    for (i, x) in v.entries() {
        let i = u8::try_from(i).unwrap();
        assert!(*x == [i; 10_000]);
    }
}

/// In `CommitMode::Protected` with one-page growth steps, pages are committed only as slots
/// need them, so a slot write that strays past its committed pages faults; filled to capacity,
/// the reservation holds exactly the slot pages and one page of ready bits.
#[test]
fn large_elements_reservation_is_sized_from_layout() {
    type Big = [u64; 1537];
    let page = page_size();
    let cap = 3;
    let v = Builder::new(cap)
        .growth(Growth::Fixed(1))
        .mode(CommitMode::Protected)
        .build_concurrent::<Big>()
        .unwrap();
    for i in 0..cap as u64 {
        v.push([i; 1537]);
        assert_slots_inside(&v);
    }
    let r = v.reservation();
    let data = (cap * std::mem::size_of::<Big>()).next_multiple_of(page);
    assert_eq!(r.len(), data + page);
    assert!(r.is_committed(0, data).unwrap());
    for (i, x) in v.entries() {
        assert!(x.iter().all(|&w| w == i as u64));
    }
}

#[test]
fn growth_commits_in_steps() {
    let page = page_size();
    let v = Builder::new(1 << 16)
        .growth(Growth::Fixed(2 * page))
        .build_concurrent::<u64>()
        .unwrap();
    v.push(1);
    // Two pages of slots and one page of ready bits.
    assert_eq!(v.committed_bytes(), 3 * page);
    assert_eq!(v.committed_capacity(), 2 * page / 8);
    for i in 0..(2 * page / 8) as u64 {
        v.push(i);
    }
    assert_eq!(v.committed_bytes(), 5 * page);
}

#[test]
fn sparse_mode_and_alignment_work() {
    let v = Builder::new(5000)
        .mode(CommitMode::Sparse)
        .alignment(1 << 21)
        .build_concurrent::<u32>()
        .unwrap();
    for i in 0..5000 {
        v.push(i);
    }
    assert_eq!(v.reservation().as_ptr() as usize % (1 << 21), 0);
    assert_eq!(
        v.iter().map(|&x| u64::from(x)).sum::<u64>(),
        4999 * 5000 / 2
    );
}

#[test]
fn stress_threads_push_and_read() {
    let (threads, per_thread) = if cfg!(miri) { (3, 40) } else { (4, 50_000) };
    // Room for the slots each thread may hold unfilled in its last block.
    let block = Builder::new(threads * per_thread)
        .thread_block_slots()
        .unwrap();
    let capacity = threads * per_thread + threads * block;
    let v = Arc::new(
        Builder::new(capacity)
            .growth(Growth::Fixed(1))
            .build_concurrent::<(usize, usize)>()
            .unwrap(),
    );
    assert_eq!(v.thread_block(), block);
    let pushers: Vec<_> = (0..threads)
        .map(|t| {
            let v = Arc::clone(&v);
            thread::spawn(move || {
                let mut mine = Vec::with_capacity(per_thread);
                for i in 0..per_thread {
                    let index = v.push((t, i));
                    assert_eq!(v.get(index), Some(&(t, i)));
                    mine.push(index);
                }
                mine
            })
        })
        .collect();
    let reader = {
        let v = Arc::clone(&v);
        thread::spawn(move || {
            let mut seen = 0;
            while seen < threads * per_thread {
                let len = v.len();
                // Every published element is a pair some thread pushed, and per thread the
                // values come in push order along the indices.
                let mut last = vec![None; threads];
                seen = 0;
                for (_, &(t, i)) in v.entries() {
                    assert!(t < threads && i < per_thread);
                    assert!(last[t].is_none_or(|l| l < i));
                    last[t] = Some(i);
                    seen += 1;
                }
                assert!(seen <= len.max(v.len()));
                if let Some(probe) = len.checked_sub(1)
                    && let Some(&(t, i)) = v.get(probe)
                {
                    assert!(t < threads && i < per_thread);
                }
                thread::yield_now();
            }
        })
    };
    let mut all: Vec<usize> = Vec::new();
    for p in pushers {
        all.extend(p.join().unwrap());
    }
    reader.join().unwrap();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), threads * per_thread);
    assert!(all.iter().all(|&index| index < v.len()));
    // Claimed but unfilled: at most a block's rest per thread.
    assert!(v.len() - all.len() <= threads * (block - 1));
    assert_eq!(v.iter().count(), threads * per_thread);
}

/// Threads push until the vector is full; returns the successful pushes and the vector.
fn race_to_capacity(
    threads: u64,
    builder: Builder,
    drops: &Arc<AtomicUsize>,
) -> (usize, ConcurrentVec<Counted>) {
    let v = Arc::new(builder.build_concurrent().unwrap());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let v = Arc::clone(&v);
            let drops = Arc::clone(drops);
            thread::spawn(move || {
                let mut ok = 0;
                loop {
                    match v.try_push(Counted::new(t, &drops)) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            assert!(matches!(e.error(), Error::CapacityExceeded { .. }));
                            break ok;
                        }
                    }
                }
            })
        })
        .collect();
    let total = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let v = Arc::into_inner(v).expect("threads joined");
    (total, v)
}

#[test]
fn stress_threads_race_past_capacity_single_slots_fill_it_exactly() {
    let (threads, cap) = if cfg!(miri) { (3, 20) } else { (4, 10_000) };
    let drops = Arc::new(AtomicUsize::new(0));
    let (total, v) = race_to_capacity(threads, Builder::new(cap).thread_block(1), &drops);
    assert_eq!(total, cap);
    assert_eq!(v.len(), cap);
    assert_eq!(v.iter().count(), cap);
    // Rejected values were dropped by the pushers: one each.
    assert_eq!(drops.load(Ordering::Relaxed), threads as usize);
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), threads as usize + cap);
}

#[test]
fn stress_threads_race_past_capacity_in_blocks_leave_at_most_a_block_each() {
    let (threads, cap, block) = if cfg!(miri) {
        (3, 40, 4)
    } else {
        (4, 100_000, BLOCK)
    };
    let drops = Arc::new(AtomicUsize::new(0));
    let builder = Builder::new(cap).thread_block(block);
    let (total, v) = race_to_capacity(threads, builder, &drops);
    assert_eq!(v.len(), cap);
    assert_eq!(v.iter().count(), total);
    assert!(
        cap - total <= threads as usize * (block - 1),
        "{total} of {cap}"
    );
    assert_eq!(drops.load(Ordering::Relaxed), threads as usize);
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), threads as usize + total);
}

#[test]
fn concurrent_vec_is_send_and_sync_for_send_sync_elements() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConcurrentVec<u64>>();
    assert_send_sync::<ConcurrentVec<String>>();
    assert_send_sync::<memvisor_vmem::vec::Vec<u64>>();
}

#[test]
fn pusher_fills_word_blocks_in_order() {
    let v = ConcurrentVec::with_capacity(1000).unwrap();
    let mut p = v.pusher();
    for i in 0..BLOCK {
        assert_eq!(p.push(i), i);
    }
    assert_eq!(p.remaining(), 0);
    assert_eq!(p.push(BLOCK), BLOCK);
    // The second block runs to the next multiple of `BLOCK` or to the capacity.
    let second_end = (2 * BLOCK).min(1000);
    assert_eq!(p.remaining(), second_end - BLOCK - 1);
    assert_eq!(v.len(), second_end);
    assert!(v.iter().copied().eq(0..=BLOCK));
    assert_eq!(v.get(BLOCK + 1), None);
    assert!(std::ptr::eq(p.vec(), &raw const v));
}

/// A `Pusher` claims 512 slots (256 where `usize` has 32 bits) at a time but commits them as
/// plain pushes do, a growth step at a time: with page-sized elements and one page a step, each
/// push commits at most its element's page (and the ready bits' page), not the whole block's
/// 2 MiB; a plain push after the block commits past it as usual.
#[test]
fn pusher_commits_its_block_a_growth_step_at_a_time() {
    let page = page_size();
    let v: ConcurrentVec<[u8; 4096]> = Builder::new(BLOCK + 1)
        .growth(Growth::Fixed(4096))
        .build_concurrent()
        .unwrap();
    let mut p = v.pusher();
    let pushes = if cfg!(miri) { 8 } else { BLOCK };
    for i in 0..pushes {
        assert_eq!(p.push([i as u8; 4096]), i);
        let bound = ((i + 1) * 4096).next_multiple_of(page) + page;
        assert!(
            v.committed_bytes() <= bound,
            "{} bytes committed after {} pushes",
            v.committed_bytes(),
            i + 1
        );
        assert!(v.committed_capacity() > i);
    }
    assert_eq!(v.len(), BLOCK);
    assert_eq!(v.iter().count(), pushes);
    assert!(v.iter().enumerate().all(|(i, e)| e[4095] == i as u8));
    assert_eq!(v.push([7; 4096]), BLOCK);
    assert_eq!(v[BLOCK], [7; 4096]);
}

#[test]
fn pusher_after_plain_push_fills_up_to_the_block_boundary() {
    let v = ConcurrentVec::with_capacity(2000).unwrap();
    assert_eq!(v.push(1u8), 0);
    let mut p = v.pusher();
    // The first block runs to the next multiple of `BLOCK`, so that later blocks are aligned.
    assert_eq!(p.push(2), 1);
    assert_eq!(p.remaining(), BLOCK - 2);
    assert_eq!(v.push(3), BLOCK);
    let entries: Vec<(usize, u8)> = v.entries().map(|(i, &x)| (i, x)).collect();
    assert_eq!(entries, [(0, 1), (1, 2), (BLOCK, 3)]);
}

#[test]
fn pusher_tail_block_and_capacity() {
    let v = ConcurrentVec::with_capacity(70).unwrap();
    v.push(0usize);
    let mut p = v.pusher();
    // No whole word-aligned block fits before the capacity, so the pusher takes the rest.
    for i in 1..70 {
        assert_eq!(p.push(i), i);
    }
    let err = p.try_push(70).unwrap_err();
    assert_eq!(
        err.error(),
        &Error::CapacityExceeded {
            capacity: 70,
            requested: 71
        }
    );
    assert_eq!(err.into_value(), 70);
    assert!(v.try_push(71).is_err());
    assert_eq!(v.len(), 70);
    assert_eq!(v.iter().count(), 70);
    let panic = catch_unwind(AssertUnwindSafe(|| p.push(72))).unwrap_err();
    assert_eq!(
        panic.downcast_ref::<String>().unwrap(),
        "memvisor_vmem::vec::Pusher::push: vector is full: 71 elements needed, capacity is 70"
    );
}

#[test]
fn pusher_push_with_panic_leaves_hole_and_goes_on() {
    let drops = Arc::new(AtomicUsize::new(0));
    let v = ConcurrentVec::with_capacity(200).unwrap();
    let mut p = v.pusher();
    p.push(Counted::new(0, &drops));
    let r = catch_unwind(AssertUnwindSafe(|| {
        p.push_with(|_| -> Counted { panic!("constructor") })
    }));
    assert!(r.is_err());
    assert_eq!(p.push_with(|i| Counted::new(i as u64, &drops)), 2);
    assert_eq!(p.try_push_with(|i| Counted::new(i as u64, &drops)), Ok(3));
    assert!(v.get(1).is_none());
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), 3);
}

#[test]
fn stress_threads_push_through_pushers() {
    let (threads, per_thread) = if cfg!(miri) { (2, 150) } else { (4, 50_000) };
    let drops = Arc::new(AtomicUsize::new(0));
    // Room for the plain pushes and, per thread, the unfilled rest of a pusher block and of a
    // thread block.
    let cap = threads * per_thread + threads * (per_thread / 1000 + 1) + threads * 2 * BLOCK;
    let v = Arc::new(ConcurrentVec::with_capacity(cap).unwrap());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let v = Arc::clone(&v);
            let drops = Arc::clone(&drops);
            thread::spawn(move || {
                let mut p = v.pusher();
                let mut last = None;
                for i in 0..per_thread {
                    let index = p.push(Counted::new((t * per_thread + i) as u64, &drops));
                    assert!(last.is_none_or(|l| l < index));
                    last = Some(index);
                    assert_eq!(v[index].value, (t * per_thread + i) as u64);
                    if i % 1000 == 0 {
                        // Plain pushes mixed in.
                        v.push(Counted::new(u64::MAX, &drops));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut values: Vec<u64> = v
        .iter()
        .map(|c| c.value)
        .filter(|&x| x != u64::MAX)
        .collect();
    values.sort_unstable();
    assert!(values.into_iter().eq(0..(threads * per_thread) as u64));
    let total = v.iter().count();
    drop(v);
    assert_eq!(drops.load(Ordering::Relaxed), total);
}

#[test]
fn published_prefix_moves_by_whole_words_and_stops_at_holes() {
    let v = ConcurrentVec::with_capacity(130).unwrap();
    for i in 0..127 {
        v.push(i);
    }
    // Every whole word below 127: 64 slots, or 96 where a word has 32.
    assert_eq!(v.published_prefix(), 127 / WORD * WORD);
    v.push(127);
    assert_eq!(v.published_prefix(), 128);
    v.push(128);
    v.push(129);
    // The last word holds only the two slots below the capacity.
    assert_eq!(v.published_prefix(), 130);
    let mut v = v;
    v.clear();
    assert_eq!(v.published_prefix(), 0);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        v.push_with(|_| -> i32 { panic!("hole") })
    }));
    for i in 1..130 {
        v.push(i);
    }
    assert_eq!(v.published_prefix(), 0);
    assert_eq!(v.get(0), None);
    assert_eq!(v.get(129), Some(&129));
}

#[test]
fn published_prefix_catches_up_over_words_completed_out_of_order() {
    let v = ConcurrentVec::with_capacity(2048).unwrap();
    let mut late = v.pusher();
    late.push(0u32); // claims slots 0..BLOCK and leaves them open
    let mut early = v.pusher();
    for i in 0..BLOCK as u32 {
        early.push(i); // fills BLOCK..2 * BLOCK
    }
    assert_eq!(v.published_prefix(), 0);
    for i in 1..BLOCK as u32 {
        late.push(i);
    }
    // Completing word 7 carries the prefix over the already complete words 8 to 15.
    assert_eq!(v.published_prefix(), 2 * BLOCK);
}

#[test]
fn published_prefix_word_whose_last_slot_publishes_first_catches_up_later() {
    let v = ConcurrentVec::with_capacity(200).unwrap();
    // Slot 0 is claimed first but published last: slot 63's publisher finds word 0 incomplete.
    let first = v.push_with(|_| {
        for i in 1..64 {
            assert_eq!(v.push(i), i);
        }
        assert_eq!(v.get(0), None);
        0
    });
    assert_eq!(first, 0);
    for i in 0..64 {
        assert_eq!(v.get(i), Some(&i));
    }
    // Publishing slot 127 (the next word's last) carries the prefix over both words.
    for i in 64..128 {
        v.push(i);
    }
    assert_eq!(v.published_prefix(), 128);
    assert!((0..128).all(|i| v.get(i) == Some(&i)));
    // The capacity's last slot ends the partial last word.
    for i in 128..200 {
        v.push(i);
    }
    assert_eq!(v.published_prefix(), 200);
    assert_eq!(v.iter().count(), 200);
}

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    PushPanics,
    Get(usize),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u32>().prop_map(Op::Push),
        1 => Just(Op::PushPanics),
        2 => any::<usize>().prop_map(Op::Get),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(256, 3))]
    #[test]
    fn matches_option_vec_model(ops in proptest::collection::vec(op(), 0..80)) {
        const CAP: usize = 70;
        let mut ours = Builder::new(CAP).growth(Growth::Fixed(1)).build_concurrent::<u32>().unwrap();
        let mut model: Vec<Option<u32>> = Vec::new();
        for op in ops {
            match op {
                Op::Push(x) => match ours.try_push(x) {
                    Ok(i) => {
                        prop_assert_eq!(i, model.len());
                        model.push(Some(x));
                    }
                    Err(e) => {
                        prop_assert_eq!(model.len(), CAP);
                        prop_assert_eq!(e.into_value(), x);
                    }
                },
                Op::PushPanics => {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        ours.try_push_with(|_| -> u32 { panic!("constructor") })
                    }));
                    match r {
                        Err(_) => model.push(None),
                        Ok(e) => prop_assert!(e.is_err() && model.len() == CAP),
                    }
                }
                Op::Get(i) => {
                    let i = i % (CAP + 2);
                    prop_assert_eq!(ours.get(i).copied(), model.get(i).copied().flatten());
                }
                Op::Clear => {
                    ours.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(ours.len(), model.len());
            let prefix = model.iter().take_while(|x| x.is_some()).count();
            let words = if prefix == CAP { CAP } else { prefix - prefix % WORD };
            prop_assert_eq!(ours.published_prefix(), words);
            let got: Vec<(usize, u32)> = ours.entries().map(|(i, &x)| (i, x)).collect();
            let want: Vec<(usize, u32)> = model
                .iter()
                .enumerate()
                .filter_map(|(i, x)| x.map(|x| (i, x)))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn count_leaves_out_holes_and_unpublished_slots() {
    let v = ConcurrentVec::with_capacity(100).unwrap();
    assert_eq!(v.count(), 0);
    v.push(1u32);
    let hole = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.push_with(|_| -> u32 { panic!("no element") })
    }));
    assert!(hole.is_err());
    v.push(3);
    assert_eq!(v.len(), 3);
    assert_eq!(v.count(), 2);
}

#[test]
fn reserve_through_shared_reference_commits_ahead() {
    let v = ConcurrentVec::<u64>::with_capacity(1 << 16).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| v.reserve(40_000).unwrap());
        s.spawn(|| {
            for i in 0..1000 {
                v.push(i);
            }
        });
    });
    assert!(v.committed_capacity() >= 40_000);
    assert_eq!(
        v.reserve(1 << 16).unwrap_err(),
        memvisor_vmem::vec::Error::CapacityExceeded {
            capacity: 1 << 16,
            requested: 1000 + (1 << 16)
        }
    );
    assert_eq!(v.count(), 1000);
}

/// `reserve` covers single-slot pushes into the reserved slots, and a `Pusher`'s too: its block
/// of `BLOCK` slots reaches past the 100 reserved, but it commits a slot only when a push needs
/// it. 24-byte elements with one-page growth: a page holds 170 of them.
#[test]
fn reserve_covers_single_slots_and_a_pushers_slots() {
    let build = |thread_block| {
        Builder::new(100_000)
            .growth(Growth::Fixed(page_size()))
            .thread_block(thread_block)
            .build_concurrent::<[u8; 24]>()
            .unwrap()
    };
    let committed = |v: &ConcurrentVec<[u8; 24]>| (v.committed_capacity(), v.committed_bytes());

    let single = build(1);
    single.reserve(100).unwrap();
    let before = committed(&single);
    for _ in 0..100 {
        single.push([1; 24]);
    }
    assert_eq!(committed(&single), before);

    let blocks = build(BLOCK);
    blocks.reserve(100).unwrap();
    let before = committed(&blocks);
    let mut pusher = blocks.pusher();
    for _ in 0..100 {
        pusher.push([2; 24]);
    }
    assert_eq!(blocks.len(), BLOCK);
    assert_eq!(committed(&blocks), before);
    // Past what is committed, its next push commits a step, not the block's rest.
    for _ in 100..before.0 + 1 {
        pusher.push([3; 24]);
    }
    assert_eq!(
        committed(&blocks).1,
        before.1 + page_size(),
        "{before:?} then {:?}",
        committed(&blocks)
    );
}

/// A `Pusher`'s push keeps to the growth step as a single-slot push does (a page at a time here,
/// more only for an element that needs more), though it claims `BLOCK` slots at a time, as the
/// docs of `Growth` and `Pusher` say.
#[test]
#[cfg_attr(miri, ignore = "reserves 16 MiB of 4 KiB elements")]
fn a_pushers_push_keeps_to_the_growth_step() {
    let page = page_size();
    let build = || {
        Builder::new(4096)
            .growth(Growth::Doubling {
                min: page,
                max: page,
            })
            .thread_block(1)
            .build_concurrent::<[u8; 4096]>()
            .unwrap()
    };
    // The slot region's commit and the ready bits' page.
    let one_step = 4096usize.next_multiple_of(page) + page;

    let single = build();
    single.push([1; 4096]);
    assert!(single.committed_bytes() <= one_step);

    let blocks = build();
    let mut pusher = blocks.pusher();
    pusher.push([2; 4096]);
    assert_eq!(pusher.remaining(), BLOCK - 1);
    assert!(blocks.committed_bytes() <= one_step);
    assert_eq!(blocks.committed_bytes(), single.committed_bytes());
}

/// A `Pusher`'s block ends at the next multiple of `BLOCK` (so after three single pushes it
/// holds `BLOCK - 3` slots), and a push past what is committed commits a growth step past it,
/// whether the step ends inside the block or past it: one page with one-page steps, a whole step
/// with steps longer than the block.
#[test]
#[cfg_attr(miri, ignore = "commits up to 8 MiB of 4 KiB elements")]
fn a_pushers_push_commits_a_growth_step_past_what_is_committed() {
    let build = |growth| {
        Builder::new(4096)
            .growth(growth)
            .thread_block(1)
            .build_concurrent::<[u8; 4096]>()
            .unwrap()
    };
    let page = page_size();
    let short = build(Growth::Fixed(page));
    for _ in 0..3 {
        short.push([1; 4096]);
    }
    let mut pusher = short.pusher();
    assert_eq!(pusher.push([2; 4096]), 3);
    assert_eq!(pusher.remaining(), BLOCK - 4);
    assert_eq!(
        short.committed_capacity(),
        4usize.next_multiple_of(page / 4096)
    );

    let long = build(Growth::Fixed(8 << 20));
    long.pusher().push([3; 4096]);
    assert_eq!(long.committed_capacity(), 2048);
}

#[test]
fn extend_compare_and_hash_use_published_elements() {
    use std::hash::{BuildHasher, RandomState};

    let mut a = ConcurrentVec::with_capacity(16).unwrap();
    a.extend([1, 2, 3]);
    let mut b = ConcurrentVec::with_capacity(8).unwrap();
    b.extend(&[1, 2, 3]);
    assert_eq!(a, b);
    let state = RandomState::new();
    assert_eq!(state.hash_one(&a), state.hash_one(&b));
    b.push(0);
    assert_ne!(a, b);
    assert!(a < b);
    assert_eq!(a.cmp(&b), std::cmp::Ordering::Less);
    a.push(4);
    assert!(a > b);
}

#[test]
fn published_slice_is_the_published_prefix_in_index_order() {
    let v = Builder::new(200)
        .thread_block(1)
        .build_concurrent::<u64>()
        .unwrap();
    assert!(v.published_slice().is_empty());
    for i in 0..150 {
        v.push(i);
    }
    // Whole ready words only: two of them.
    assert_eq!(
        v.published_slice(),
        (0..128).collect::<std::vec::Vec<u64>>()
    );
    for i in 150..192 {
        v.push(i);
    }
    assert_eq!(
        v.published_slice(),
        (0..192).collect::<std::vec::Vec<u64>>()
    );
    // A hole ends it for good, whatever is published after it.
    let hole = catch_unwind(AssertUnwindSafe(|| {
        v.push_with(|_| -> u64 { panic!("hole") })
    }));
    assert!(hole.is_err());
    while v.try_push(7).is_ok() {}
    assert_eq!(v.published_slice().len(), 192);
    assert_eq!(v.published_slice().len(), v.published_prefix());
}

#[test]
fn published_slice_stays_valid_while_threads_push() {
    let v = ConcurrentVec::<u64>::with_capacity(4096).unwrap();
    for i in 0..64 {
        v.push(i);
    }
    let first = v.published_slice();
    let (pushes, looks) = if cfg!(miri) { (40, 3) } else { (600, 100) };
    thread::scope(|s| {
        for t in 0..3u64 {
            let v = &v;
            s.spawn(move || {
                for i in 0..pushes {
                    v.push(1000 * (t + 1) + i);
                }
            });
        }
        for _ in 0..looks {
            let now = v.published_slice();
            assert!(now.len() >= first.len());
            assert_eq!(&now[..64], first);
            for (i, x) in now.iter().enumerate() {
                assert_eq!(v.get(i), Some(x));
            }
        }
    });
    assert_eq!(first, (0..64).collect::<std::vec::Vec<u64>>());
}

#[test]
fn published_slice_of_zero_sized_elements() {
    let v = ConcurrentVec::<()>::with_capacity(100).unwrap();
    for _ in 0..100 {
        v.push(());
    }
    // The last, partial word at the capacity counts whole.
    assert_eq!(v.published_slice().len(), 100);
}

/// `thread_block(1)` turns off the blocks of plain pushes, not a `Pusher`'s: at capacity, the
/// slots a live `Pusher` holds (up to a block, 512 slots or 256 where `usize` has 32 bits, less
/// the one it filled) stay empty while a plain push is refused.
#[test]
fn a_live_pushers_block_stays_empty_at_capacity_with_thread_block_1() {
    let block = 8 * usize::BITS as usize;
    let capacity = block + 100;
    let v = Builder::new(capacity)
        .thread_block(1)
        .build_concurrent::<u32>()
        .unwrap();
    let mut pusher = v.pusher();
    pusher.push(0);
    let mut plain = 0;
    while v.try_push(1).is_ok() {
        plain += 1;
    }
    assert_eq!(plain, capacity - block);
    let refused = v.try_push(2).unwrap_err();
    assert!(matches!(refused.error(), Error::CapacityExceeded { .. }));
    assert_eq!(refused.into_value(), 2);
    assert_eq!(v.count(), capacity - block + 1);
    // The pusher fills its own block up to the capacity.
    while pusher.try_push(3).is_ok() {}
    assert_eq!(v.count(), capacity);
}

/// `clear` forgets every claim: a vector filled to its capacity (70, which ends in the middle
/// of a ready-bit word) takes every index again, from 0, up to the same capacity; its published
/// prefix counts the partial last word whole; indices past it read as nothing.
#[test]
fn clear_at_capacity_hands_out_every_index_again() {
    let mut v = Builder::new(70)
        .thread_block(1)
        .build_concurrent::<String>()
        .unwrap();
    for round in 0..3 {
        for i in 0..70 {
            assert_eq!(v.push(format!("{round} {i}")), i);
        }
        assert_eq!(v.try_push(String::new()).unwrap_err().into_value(), "");
        assert_eq!(v.len(), 70);
        assert_eq!(v.published_prefix(), 70);
        assert_eq!(v.published_slice().len(), 70);
        assert_eq!(v[69], format!("{round} 69"));
        assert_eq!(v.get(70), None);
        assert_eq!(v.get(usize::MAX), None);
        assert_eq!(v.get_mut(usize::MAX), None);
        v.clear();
        assert!(v.is_empty());
        assert_eq!(v.get(0), None);
        assert_eq!(v.iter().count(), 0);
    }
}

/// Without `std` there are no per-thread claim caches: every plain push claims one slot, also
/// once another thread's claims came between a thread's own (which, with `std`, moves the
/// thread to blocks of [`Builder::thread_block`] slots and `len` to the block's end), so `len`
/// counts exactly the pushes made.
#[cfg(not(feature = "std"))]
#[test]
fn without_std_interleaved_plain_pushes_claim_single_slots() {
    let v = Builder::new(1 << 13)
        .thread_block(64)
        .build_concurrent::<usize>()
        .unwrap();
    let elsewhere = |value| thread::scope(|s| s.spawn(|| v.push(value)).join().unwrap());
    for round in 0..4 {
        assert_eq!(v.push(4 * round), 4 * round);
        assert_eq!(elsewhere(4 * round + 1), 4 * round + 1);
        assert_eq!(v.push(4 * round + 2), 4 * round + 2);
        assert_eq!(v.push(4 * round + 3), 4 * round + 3);
        assert_eq!(v.len(), 4 * round + 4);
    }
    assert!(v.iter().copied().eq(0..16));
}
