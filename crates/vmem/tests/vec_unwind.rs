//! Unwinding through the vectors: elements whose `Clone`, `Drop` or `PartialEq` panic, and
//! closures and iterators that panic midway. After the panic the vector must stay usable and
//! every element must be dropped exactly once (a count of live instances ends at zero).
//! Also odd element types (zero-sized, larger than a page, page-aligned) and capacities at
//! the limits.

#![allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Vec};

/// Shared state of a family of [`Probe`]s: how many are alive, and which clone / drop /
/// comparison panics.
#[derive(Default)]
struct Lab {
    live: Cell<isize>,
    clones: Cell<usize>,
    drops: Cell<usize>,
    eqs: Cell<usize>,
    /// Panic on the clone with this number (1-based); 0 never.
    clone_bomb: Cell<usize>,
    /// Panic on the drop with this number (1-based); 0 never.
    drop_bomb: Cell<usize>,
    /// Panic on the comparison with this number (1-based); 0 never.
    eq_bomb: Cell<usize>,
}

impl Lab {
    fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    fn make(self: &Rc<Self>, value: u32) -> Probe {
        self.live.set(self.live.get() + 1);
        Probe {
            value,
            lab: Rc::clone(self),
        }
    }
}

/// An element that counts live instances and panics where its [`Lab`] says.
struct Probe {
    value: u32,
    lab: Rc<Lab>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value)
    }
}

impl Clone for Probe {
    fn clone(&self) -> Self {
        let n = self.lab.clones.get() + 1;
        self.lab.clones.set(n);
        assert!(n != self.lab.clone_bomb.get(), "clone {n} panics");
        self.lab.make(self.value)
    }
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        let n = self.lab.eqs.get() + 1;
        self.lab.eqs.set(n);
        assert!(n != self.lab.eq_bomb.get(), "comparison {n} panics");
        self.value == other.value
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.lab.live.set(self.lab.live.get() - 1);
        let n = self.lab.drops.get() + 1;
        self.lab.drops.set(n);
        if n == self.lab.drop_bomb.get() && !std::thread::panicking() {
            panic!("drop {n} panics");
        }
    }
}

fn probes(lab: &Rc<Lab>, values: impl IntoIterator<Item = u32>) -> Vec<Probe> {
    let mut v = Vec::with_capacity(64).unwrap();
    for x in values {
        v.push(lab.make(x));
    }
    v
}

fn values(v: &[Probe]) -> std::vec::Vec<u32> {
    v.iter().map(|p| p.value).collect()
}

fn n() -> u32 {
    if cfg!(miri) { 8 } else { 40 }
}

/// Runs `f` against a fresh vector of `0..n()` for each position of a panic that `arm` sets,
/// then checks the vector is consistent and that every probe is dropped exactly once.
fn for_each_bomb(arm: impl Fn(&Lab, usize), f: impl Fn(&mut Vec<Probe>, &Rc<Lab>)) {
    for bomb in 1..=n() as usize + 1 {
        let lab = Lab::new();
        let mut v = probes(&lab, 0..n());
        arm(&lab, bomb);
        let _ = catch_unwind(AssertUnwindSafe(|| f(&mut v, &lab)));
        lab.clone_bomb.set(0);
        lab.drop_bomb.set(0);
        lab.eq_bomb.set(0);
        // Still usable: read, change and grow it.
        let _ = format!("{v:?}");
        v.retain(|p| p.value % 2 == 0);
        v.push(lab.make(7));
        assert_eq!(lab.live.get(), v.len() as isize, "bomb {bomb}");
        drop(v);
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}

#[test]
fn retain_with_panicking_drop_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.drop_bomb.set(b),
        |v, _| v.retain(|p| p.value % 3 == 0),
    );
}

#[test]
fn retain_mut_with_panicking_predicate_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, _| {
            v.retain_mut(|p| {
                p.value += 1;
                // Panics on the bomb's clone.
                drop(p.clone());
                p.value % 2 == 0
            });
        },
    );
}

#[test]
fn dedup_with_panicking_eq_or_drop_drops_each_once() {
    let dup = |v: &mut Vec<Probe>, lab: &Rc<Lab>| {
        let mut w = Vec::with_capacity(128).unwrap();
        for p in v.drain(..) {
            w.push(lab.make(p.value / 3));
            w.push(p);
        }
        *v = w;
        // `PartialEq` needs both sides equal by value: normalize.
        for p in v.iter_mut() {
            p.value /= 3;
        }
        v.dedup();
    };
    for_each_bomb(|lab, b| lab.eq_bomb.set(b), dup);
    for_each_bomb(|lab, b| lab.drop_bomb.set(b + n() as usize), dup);
}

#[test]
fn dedup_by_with_panicking_drop_keeps_vector_consistent() {
    for_each_bomb(
        |lab, b| lab.drop_bomb.set(b),
        |v, _| v.dedup_by(|a, b| a.value / 4 == b.value / 4),
    );
}

#[test]
fn extend_from_slice_with_panicking_clone_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, lab| {
            let src: std::vec::Vec<Probe> = (0..n()).map(|x| lab.make(x)).collect();
            v.extend_from_slice(&src);
        },
    );
}

#[test]
fn extend_from_within_with_panicking_clone_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, _| v.extend_from_within(2..),
    );
}

#[test]
fn resize_with_panicking_clone_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, lab| v.resize(2 * n() as usize, lab.make(99)),
    );
}

#[test]
fn resize_with_panicking_fill_drops_each_once() {
    for_each_bomb(
        |lab, b| lab.drop_bomb.set(b),
        |v, lab| {
            let mut k = 0;
            v.resize_with(2 * n() as usize, || {
                k += 1;
                assert!(k != 5, "fill panics");
                lab.make(k)
            });
        },
    );
}

#[test]
fn extend_from_panicking_iterator_keeps_what_was_pushed() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, lab| {
            let src: std::vec::Vec<Probe> = (0..n()).map(|x| lab.make(x)).collect();
            v.extend(src.iter().cloned());
        },
    );
}

#[test]
fn truncate_and_clear_with_panicking_drop_drop_each_once() {
    for_each_bomb(|lab, b| lab.drop_bomb.set(b), |v, _| v.truncate(3));
    for_each_bomb(|lab, b| lab.drop_bomb.set(b), |v, _| v.clear());
}

#[test]
fn drain_with_panicking_drop_moves_tail_back() {
    for_each_bomb(
        |lab, b| lab.drop_bomb.set(b),
        |v, _| {
            let mut d = v.drain(2..n() as usize - 2);
            let _ = d.next();
            let _ = d.next_back();
            drop(d);
        },
    );
}

#[test]
fn drain_consumer_panics_midway() {
    for_each_bomb(
        |lab, b| lab.clone_bomb.set(b),
        |v, _| {
            for p in v.drain(1..) {
                drop(p.clone());
            }
        },
    );
}

std::thread_local! {
    static TRACKED_LIVE: Cell<isize> = const { Cell::new(0) };
}

/// An element counted in a thread-local, so that leaking it leaks no heap memory.
struct Tracked(u32);

impl Tracked {
    fn new(value: u32) -> Self {
        TRACKED_LIVE.with(|l| l.set(l.get() + 1));
        Self(value)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        TRACKED_LIVE.with(|l| l.set(l.get() - 1));
    }
}

#[test]
fn forgotten_drain_leaks_but_keeps_prefix() {
    let mut v = Vec::with_capacity(16).unwrap();
    for i in 0..8 {
        v.push(Tracked::new(i));
    }
    let mut d = v.drain(2..5);
    let first = d.next();
    std::mem::forget(d);
    drop(first);
    assert_eq!(v.iter().map(|t| t.0).collect::<std::vec::Vec<_>>(), [0, 1]);
    v.push(Tracked::new(50));
    drop(v);
    // The drained range's rest and the tail are leaked, never dropped twice.
    assert_eq!(TRACKED_LIVE.with(Cell::get), 5);
}

#[test]
fn into_iter_with_panicking_drop_drops_rest_once() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let v = probes(&lab, 0..n());
        lab.drop_bomb.set(bomb);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut it = v.into_iter();
            let _ = it.next();
            let _ = it.next_back();
            drop(it);
        }));
        assert!(r.is_err());
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}

#[test]
fn split_off_and_append_move_ownership_once() {
    let lab = Lab::new();
    let mut a = probes(&lab, 0..n());
    let mut b = a.split_off(3);
    assert_eq!(values(&a), [0, 1, 2]);
    a.append(&mut b);
    assert!(b.is_empty());
    assert_eq!(a.len(), n() as usize);
    let mut c = a.split_off(0);
    assert!(a.is_empty());
    c.retain(|p| p.value != 1);
    drop((a, b, c));
    assert_eq!(lab.live.get(), 0);
}

/// A zero-sized element that counts live instances in a thread-local.
struct Zst;

std::thread_local! {
    static ZST_LIVE: Cell<isize> = const { Cell::new(0) };
    static ZST_DROP_BOMB: Cell<usize> = const { Cell::new(0) };
    static ZST_DROPS: Cell<usize> = const { Cell::new(0) };
}

impl Zst {
    fn new() -> Self {
        ZST_LIVE.with(|l| l.set(l.get() + 1));
        Zst
    }
}

impl Clone for Zst {
    fn clone(&self) -> Self {
        Zst::new()
    }
}

impl Drop for Zst {
    fn drop(&mut self) {
        ZST_LIVE.with(|l| l.set(l.get() - 1));
        let n = ZST_DROPS.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        if n == ZST_DROP_BOMB.with(Cell::get) && !std::thread::panicking() {
            panic!("zero-sized drop panics");
        }
    }
}

fn zst_live() -> isize {
    ZST_LIVE.with(Cell::get)
}

#[test]
fn zero_sized_elements_drop_once_through_every_edit() {
    let mut v = Vec::with_capacity(usize::MAX).unwrap();
    for _ in 0..10 {
        v.push(Zst::new());
    }
    v.insert(3, Zst::new());
    drop(v.remove(0));
    drop(v.swap_remove(0));
    assert_eq!(zst_live(), 9);
    drop(v.drain(2..4));
    assert_eq!(zst_live(), 7);
    let mut k = 0;
    v.retain(|_| {
        k += 1;
        k % 2 == 0
    });
    assert_eq!(v.len(), 3);
    v.extend_from_within(..);
    v.dedup_by(|_, _| true);
    assert_eq!(v.len(), 1);
    v.resize(5, Zst::new());
    assert_eq!(zst_live(), 5);
    let mut tail = v.split_off(2);
    v.append(&mut tail);
    let mut it = v.into_iter();
    drop(it.next());
    drop(it);
    assert_eq!(zst_live(), 0);
}

#[test]
fn zero_sized_drop_panic_in_drain_and_drop() {
    for bomb in 1..=6 {
        ZST_DROPS.with(|d| d.set(0));
        ZST_DROP_BOMB.with(|b| b.set(bomb));
        let mut v = Vec::with_capacity(usize::MAX).unwrap();
        for _ in 0..6 {
            v.push(Zst::new());
        }
        let _ = catch_unwind(AssertUnwindSafe(|| drop(v.drain(1..4))));
        assert_eq!(zst_live(), v.len() as isize);
        let _ = catch_unwind(AssertUnwindSafe(|| drop(v)));
        assert_eq!(zst_live(), 0);
    }
    ZST_DROP_BOMB.with(|b| b.set(0));
}

/// A page-aligned element.
#[derive(Clone, Debug, PartialEq)]
#[repr(align(4096))]
struct PageAligned(u64);

/// An element larger than a page.
#[derive(Clone, Debug, PartialEq)]
struct Large([u64; 1100]);

#[test]
fn page_aligned_elements_edit_in_place() {
    let mut v = Vec::with_capacity(16).unwrap();
    for i in 0..6 {
        v.push(PageAligned(i));
    }
    assert!((v.as_ptr() as usize).is_multiple_of(4096));
    v.insert(2, PageAligned(100));
    v.retain(|x| x.0 != 3);
    v.dedup();
    drop(v.drain(1..3));
    v.extend_from_within(..2);
    assert!(
        v.iter()
            .all(|x| (std::ptr::from_ref(x) as usize).is_multiple_of(4096))
    );
    let c = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..6 {
        let idx = c.push(PageAligned(i));
        assert!((std::ptr::from_ref(&c[idx]) as usize).is_multiple_of(4096));
    }
    assert_eq!(c.iter().count(), 6);
}

#[test]
fn elements_larger_than_a_page_edit_in_place() {
    let mut v = Vec::with_capacity(8).unwrap();
    for i in 0..5 {
        v.push(Large([i; 1100]));
    }
    v.insert(0, Large([9; 1100]));
    assert_eq!(v.remove(1).0[0], 0);
    v.truncate(3);
    v.shrink_to_fit().unwrap();
    v.push(Large([7; 1100]));
    assert_eq!(
        v.iter().map(|x| x.0[1099]).collect::<std::vec::Vec<_>>(),
        [9, 1, 2, 7]
    );
    let c = ConcurrentVec::with_capacity(4).unwrap();
    for i in 0..4 {
        c.push(Large([i; 1100]));
    }
    assert!(c.try_push(Large([0; 1100])).is_err());
    assert_eq!(c.iter().map(|x| x.0[5]).sum::<u64>(), 6);
}

#[test]
fn capacity_limits_are_typed_errors() {
    // Zero capacity: nothing fits.
    let mut v = Vec::<u8>::with_capacity(0).unwrap();
    assert!(matches!(
        v.try_push(1).unwrap_err().error(),
        Error::CapacityExceeded { .. }
    ));
    assert!(v.try_reserve(usize::MAX).is_err());
    let c = ConcurrentVec::<u8>::with_capacity(0).unwrap();
    assert!(c.try_push(1).is_err());
    assert!(c.try_push_with(|_| 1).is_err());
    assert!(c.pusher().try_push(1).is_err());
    assert_eq!(c.iter().count(), 0);
    // The longest thread block: 512 slots, 256 where `usize` has 32 bits.
    let c = Builder::new(0)
        .thread_block(8 * usize::BITS as usize)
        .build_concurrent::<u8>()
        .unwrap();
    assert!(c.try_push(1).is_err());
    // Byte sizes that overflow.
    for cap in [usize::MAX, usize::MAX / 2 + 1, usize::MAX / 8 + 1] {
        assert!(matches!(
            Vec::<u64>::with_capacity(cap),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            ConcurrentVec::<u64>::with_capacity(cap),
            Err(Error::TooLarge { .. })
        ));
    }
    assert!(matches!(
        Vec::<PageAligned>::with_capacity(usize::MAX / 4096 + 1),
        Err(Error::TooLarge { .. })
    ));
    // Sizes that fit in `usize` but not in the address space.
    assert!(Vec::<u64>::with_capacity(usize::MAX / 16).is_err());
    assert!(ConcurrentVec::<u64>::with_capacity(usize::MAX / 16).is_err());
    // Zero-sized elements at the largest capacity.
    let mut z = Vec::<()>::with_capacity(usize::MAX).unwrap();
    z.push(());
    assert!(z.try_reserve(usize::MAX).is_err());
    // SAFETY: zero-sized elements need no memory and `()` has no invariant to break.
    unsafe { z.set_len(usize::MAX) };
    assert!(z.try_push(()).is_err());
    assert_eq!(z.len(), usize::MAX);
    // Huge alignment requests are errors too (Miri refuses such allocations outright). A 32-bit
    // process can have a block aligned to 2^30 or 2^31 bytes (vec_extreme_input checks that
    // such an alignment is honoured or refused).
    let top = 1usize << (usize::BITS - 1);
    let aligns = if cfg!(miri) || usize::BITS < 64 {
        vec![]
    } else {
        vec![top >> 1, top]
    };
    for align in aligns {
        let r = Builder::new(1).alignment(align).build::<u8>();
        assert!(r.is_err(), "alignment {align:#x}");
    }
}

#[test]
fn concurrent_clear_with_panicking_drop_then_reuse() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let mut c = ConcurrentVec::with_capacity(64).unwrap();
        for i in 0..n() {
            c.push(lab.make(i));
        }
        lab.drop_bomb.set(bomb);
        assert!(catch_unwind(AssertUnwindSafe(|| c.clear())).is_err());
        lab.drop_bomb.set(0);
        assert_eq!(lab.live.get(), 0);
        assert_eq!(c.push(lab.make(1)), 0);
        assert_eq!(c.get(0).map(|p| p.value), Some(1));
        assert_eq!(c.iter().count(), 1);
        drop(c);
        assert_eq!(lab.live.get(), 0);
    }
}

#[test]
fn concurrent_into_iter_with_panicking_drop_drops_rest_once() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let c = ConcurrentVec::with_capacity(64).unwrap();
        for i in 0..n() {
            c.push(lab.make(i));
        }
        let _ = catch_unwind(AssertUnwindSafe(|| c.push_with(|_| panic!("hole"))));
        let mut it = c.into_iter();
        drop(it.next());
        let _ = format!("{it:?}");
        lab.drop_bomb.set(bomb);
        let _ = catch_unwind(AssertUnwindSafe(|| drop(it)));
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}

#[test]
fn concurrent_clone_with_panicking_clone_drops_partial_copy() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let c = ConcurrentVec::with_capacity(64).unwrap();
        for i in 0..n() {
            c.push(lab.make(i));
        }
        lab.clone_bomb.set(bomb);
        let _ = catch_unwind(AssertUnwindSafe(|| drop(c.clone())));
        assert_eq!(lab.live.get(), n() as isize);
        drop(c);
        assert_eq!(lab.live.get(), 0);
    }
}

#[test]
fn concurrent_eq_panics_leave_vectors_intact() {
    let lab = Lab::new();
    let a = ConcurrentVec::with_capacity(16).unwrap();
    let b = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..5 {
        a.push(lab.make(i));
        b.push(lab.make(i));
    }
    lab.eq_bomb.set(3);
    assert!(catch_unwind(AssertUnwindSafe(|| a == b)).is_err());
    lab.eq_bomb.set(0);
    assert!(a == b);
    drop((a, b));
    assert_eq!(lab.live.get(), 0);
}

#[test]
fn concurrent_zero_sized_elements_drop_once() {
    let mut c = ConcurrentVec::with_capacity(100).unwrap();
    for _ in 0..10 {
        c.push(Zst::new());
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        c.push_with(|_| -> Zst { panic!("hole") })
    }));
    assert_eq!(c.iter_mut().count(), 10);
    let copy = c.clone();
    assert_eq!(zst_live(), 20);
    drop(copy);
    let mut it = c.into_iter();
    drop(it.next());
    drop(it);
    assert_eq!(zst_live(), 0);
}

#[test]
fn concurrent_block_push_with_panics_leave_holes_that_are_never_read() {
    let per = if cfg!(miri) { 20 } else { 2000 };
    let lab_live = std::sync::Arc::new(std::sync::atomic::AtomicIsize::new(0));
    let v = Builder::new(4 * per + 4 * 64)
        .thread_block(64)
        .build_concurrent::<Shared>()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let v = &v;
            let live = &lab_live;
            s.spawn(move || {
                for i in 0..per {
                    if i % 7 == 3 {
                        let r = catch_unwind(AssertUnwindSafe(|| {
                            v.push_with(|_| -> Shared { panic!("no element") })
                        }));
                        assert!(r.is_err());
                    } else {
                        v.push(Shared::new(t * per + i, live));
                    }
                    // Read what is there while the other thread pushes.
                    let n = v.iter().count();
                    assert!(n <= v.len());
                    if i % 16 == 0 {
                        let _ = format!("{:?}", v.iter());
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..per / 4 {
                for (i, x) in v.entries() {
                    assert_eq!(v.get(i).map(|y| y.0), Some(x.0));
                }
                let _ = v.published_prefix();
            }
        });
    });
    let expected = 2 * (per - per.div_ceil(7));
    assert_eq!(v.count(), v.iter().count());
    assert_eq!(v.count(), expected);
    drop(v);
    assert_eq!(lab_live.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A thread-safe element counting live instances.
#[derive(Debug)]
struct Shared(usize, std::sync::Arc<std::sync::atomic::AtomicIsize>);

impl Shared {
    fn new(value: usize, live: &std::sync::Arc<std::sync::atomic::AtomicIsize>) -> Self {
        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(value, std::sync::Arc::clone(live))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn extreme_growth_steps_stay_inside_the_reservation() {
    use memvisor_vmem::vec::Growth;
    let cap = if cfg!(miri) { 600 } else { 100_000 };
    for growth in [
        Growth::Fixed(0),
        Growth::Fixed(usize::MAX),
        Growth::Doubling {
            min: usize::MAX,
            max: usize::MAX,
        },
        Growth::Doubling { min: 0, max: 0 },
    ] {
        let b = Builder::new(cap).growth(growth);
        let mut v = b.build::<u32>().unwrap();
        for i in 0..cap as u32 {
            v.push(i);
        }
        assert!(v.try_push(0).is_err());
        v.truncate(1);
        v.shrink_to(usize::MAX).unwrap();
        v.shrink_to_fit().unwrap();
        v.extend(0..10);
        assert_eq!(v.len(), 11);
        let c = b.build_concurrent::<u32>().unwrap();
        for i in 0..cap as u32 {
            c.push(i);
        }
        assert!(c.try_push(0).is_err());
        assert_eq!(c.count(), cap);
        assert_eq!(c.published_prefix(), cap);
    }
}

#[test]
fn clone_with_panicking_clone_drops_partial_copy_and_keeps_the_original() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let v = probes(&lab, 0..n());
        lab.clone_bomb.set(bomb);
        assert!(catch_unwind(AssertUnwindSafe(|| drop(v.clone()))).is_err());
        lab.clone_bomb.set(0);
        assert_eq!(lab.live.get(), n() as isize, "bomb {bomb}");
        assert_eq!(values(&v), (0..n()).collect::<std::vec::Vec<_>>());
        drop(v);
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}

#[test]
fn drain_from_both_ends_with_panicking_drop_of_the_rest_moves_tail_back() {
    for_each_bomb(
        |lab, b| lab.drop_bomb.set(b),
        |v, _| {
            let mut d = v.drain(1..n() as usize - 1);
            // Taken from the back first, so the rest lies before the taken ones.
            drop(d.next_back());
            drop(d.next_back());
            drop(d.next());
            drop(d);
        },
    );
}

#[test]
fn dedup_by_key_with_panicking_key_drops_each_once() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let mut v = probes(&lab, (0..n()).map(|x| x / 2));
        let calls = Cell::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            v.dedup_by_key(|p| {
                calls.set(calls.get() + 1);
                assert!(calls.get() != bomb, "key {bomb} panics");
                p.value
            });
        }));
        assert!(r.is_err() || bomb > 2 * (n() as usize - 1));
        // Kept elements stay in order, each value once before the panic and every element
        // not yet visited after it.
        let kept = values(&v);
        assert!(
            kept.windows(2).all(|w| w[0] <= w[1]),
            "bomb {bomb}: {kept:?}"
        );
        assert_eq!(lab.live.get(), v.len() as isize, "bomb {bomb}");
        drop(v);
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}

#[test]
fn concurrent_extend_from_panicking_iterator_keeps_what_was_pushed() {
    for bomb in 1..=n() as usize {
        let lab = Lab::new();
        let mut c = ConcurrentVec::with_capacity(64).unwrap();
        let src: std::vec::Vec<Probe> = (0..n()).map(|x| lab.make(x)).collect();
        lab.clone_bomb.set(bomb);
        assert!(catch_unwind(AssertUnwindSafe(|| c.extend(src.iter().cloned()))).is_err());
        lab.clone_bomb.set(0);
        // The clones made before the panic were pushed, in order, with no hole.
        assert!((0..bomb as u32 - 1).eq(c.iter().map(|p| p.value)));
        assert_eq!(c.len(), bomb - 1);
        assert_eq!(c.push(lab.make(99)), bomb - 1);
        drop(src);
        assert_eq!(lab.live.get(), bomb as isize, "bomb {bomb}");
        drop(c);
        assert_eq!(lab.live.get(), 0, "bomb {bomb}");
    }
}
