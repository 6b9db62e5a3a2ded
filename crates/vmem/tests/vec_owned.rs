//! Behaviour of `vec::Vec`: std `Vec`'s documented behaviours, capacity limits, memory given
//! back, panic safety, drop counts, odd element types, and a model test against `std::vec::Vec`.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod common;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use memvisor_vmem::vec::{Builder, Error, Growth, Vec};
use memvisor_vmem::{CommitMode, page_size};
use proptest::prelude::*;

/// Counts drops of its values through a shared counter; panics on drop if `bomb`.
#[derive(Debug)]
struct Counted {
    value: u32,
    drops: Rc<Cell<usize>>,
    bomb: bool,
}

impl Counted {
    fn new(value: u32, drops: &Rc<Cell<usize>>) -> Self {
        Self {
            value,
            drops: Rc::clone(drops),
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
        self.drops.set(self.drops.get() + 1);
        if self.bomb && !std::thread::panicking() {
            panic!("drop bomb {}", self.value);
        }
    }
}

#[test]
fn push_then_index_and_pop_returns_in_reverse() {
    let mut v = Vec::with_capacity(100).unwrap();
    for i in 0..10 {
        v.push(i);
    }
    assert_eq!(v.len(), 10);
    assert_eq!(v[3], 3);
    assert_eq!(v.first(), Some(&0));
    assert_eq!(v.pop(), Some(9));
    assert_eq!(v.len(), 9);
    assert!(!v.is_empty());
}

#[test]
fn push_at_capacity_try_push_returns_value_and_leaves_vec() {
    let mut v = Vec::with_capacity(3).unwrap();
    v.extend([1, 2, 3]);
    let err = v.try_push(4).unwrap_err();
    assert_eq!(
        err.error(),
        &Error::CapacityExceeded {
            capacity: 3,
            requested: 4
        }
    );
    assert_eq!(err.into_value(), 4);
    assert_eq!(v, [1, 2, 3]);
}

#[test]
fn push_at_capacity_panics_with_clear_message() {
    let mut v = Vec::with_capacity(1).unwrap();
    v.push(1u8);
    let panic = catch_unwind(AssertUnwindSafe(|| v.push(2))).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert_eq!(
        msg,
        "memvisor_vmem::vec::Vec::push: vector is full: 2 elements needed, capacity is 1"
    );
    assert_eq!(v, [1]);
}

#[test]
fn grow_keeps_addresses_stable() {
    let mut v = Vec::with_capacity(100_000).unwrap();
    v.push(0u64);
    let first = &raw const v[0];
    let n = if cfg!(miri) { 3_000 } else { 100_000 };
    v.extend(1..n);
    assert_eq!(&raw const v[0], first);
    assert!(v.iter().copied().eq(0..n));
}

#[test]
fn commit_follows_growth_policy() {
    let page = page_size();
    let mut v = Builder::new(1 << 16)
        .growth(Growth::Fixed(4 * page))
        .build::<u8>()
        .unwrap();
    assert_eq!(v.committed_bytes(), 0);
    v.push(1);
    assert_eq!(v.committed_bytes(), 4 * page);
    assert_eq!(v.committed_capacity(), 4 * page);
    v.resize(4 * page + 1, 0);
    assert_eq!(v.committed_bytes(), 8 * page);
    assert_eq!(v.reservation().committed_bytes(), 8 * page);
}

#[test]
fn growth_doubling_doubles_until_max() {
    let page = page_size();
    let mut v = Builder::new(1 << 20)
        .growth(Growth::Doubling {
            min: page,
            max: 4 * page,
        })
        .build::<u8>()
        .unwrap();
    v.push(0);
    assert_eq!(v.committed_bytes(), page);
    v.resize(page + 1, 0);
    assert_eq!(v.committed_bytes(), 2 * page);
    v.resize(2 * page + 1, 0);
    assert_eq!(v.committed_bytes(), 4 * page);
    v.resize(4 * page + 1, 0);
    assert_eq!(v.committed_bytes(), 8 * page);
    v.resize(8 * page + 1, 0);
    assert_eq!(v.committed_bytes(), 12 * page);
}

#[test]
fn build_invalid_growth_is_error() {
    let e = Builder::new(8)
        .growth(Growth::Doubling { min: 2, max: 1 })
        .build::<u8>()
        .unwrap_err();
    assert_eq!(e, Error::InvalidGrowth { min: 2, max: 1 });
}

#[test]
fn build_bad_alignment_is_error() {
    let e = Builder::new(8).alignment(3).build::<u8>().unwrap_err();
    assert_eq!(e, Error::InvalidAlignment { align: 3 });
}

#[test]
fn build_huge_capacity_is_too_large() {
    let e = Vec::<u64>::with_capacity(usize::MAX / 2).unwrap_err();
    assert_eq!(
        e,
        Error::TooLarge {
            capacity: usize::MAX / 2,
            element_size: 8
        }
    );
}

/// No slice may span more than `isize::MAX` bytes, so neither may a vector's reservation,
/// whatever the system would map: such capacities are refused as too large, with the
/// same error on every system, before anything is reserved.
#[test]
fn build_capacity_whose_bytes_exceed_isize_max_is_too_large() {
    let above = isize::MAX as usize + 1;
    for (capacity, element_size, e) in [
        (above, 1, Vec::<u8>::with_capacity(above).map(drop)),
        (above / 2, 2, Vec::<u16>::with_capacity(above / 2).map(drop)),
        (
            above,
            1,
            memvisor_vmem::vec::ConcurrentVec::<u8>::with_capacity(above).map(drop),
        ),
        // The slots fit below `isize::MAX` bytes, the ready bits after them do not.
        (
            isize::MAX as usize,
            1,
            memvisor_vmem::vec::ConcurrentVec::<u8>::with_capacity(isize::MAX as usize).map(drop),
        ),
    ] {
        assert_eq!(
            e,
            Err(Error::TooLarge {
                capacity,
                element_size
            })
        );
    }
}

#[test]
fn truncate_and_shrink_to_fit_decommit() {
    let page = page_size();
    let mut v = Builder::new(1 << 16)
        .growth(Growth::Fixed(page))
        .build::<u64>()
        .unwrap();
    v.extend(0..(4 * page / 8) as u64);
    assert_eq!(v.committed_bytes(), 4 * page);
    v.truncate(page / 8 + 1);
    assert_eq!(v.committed_bytes(), 4 * page, "truncate keeps memory");
    v.shrink_to_fit().unwrap();
    assert_eq!(v.committed_bytes(), 2 * page);
    assert_eq!(v.reservation().committed_bytes(), 2 * page);
    assert!(v.iter().copied().eq(0..(page / 8 + 1) as u64));
    v.clear();
    v.shrink_to(1).unwrap();
    assert_eq!(v.committed_bytes(), page);
    v.shrink_to_fit().unwrap();
    assert_eq!(v.committed_bytes(), 0);
    // It grows again after shrinking.
    v.push(7);
    assert_eq!(v, [7]);
}

#[cfg_attr(miri, ignore = "residency needs the OS")]
#[test]
fn shrink_to_fit_releases_resident_pages() {
    let page = page_size();
    let mut v = Builder::new(1 << 20)
        .growth(Growth::Fixed(page))
        .build::<u8>()
        .unwrap();
    v.resize(64 * page, 1);
    assert_eq!(v.reservation().resident_pages(0, 64 * page).unwrap(), 64);
    v.truncate(page);
    v.shrink_to_fit().unwrap();
    assert_eq!(v.reservation().resident_pages(0, 64 * page).unwrap(), 1);
}

#[test]
fn insert_and_remove_shift_elements() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([1, 2, 4]);
    v.insert(2, 3);
    v.insert(0, 0);
    v.insert(5, 5);
    assert_eq!(v, [0, 1, 2, 3, 4, 5]);
    assert_eq!(v.remove(0), 0);
    assert_eq!(v.remove(4), 5);
    assert_eq!(v, [1, 2, 3, 4]);
    assert_eq!(v.swap_remove(0), 1);
    assert_eq!(v, [4, 2, 3]);
    assert_eq!(v.swap_remove(2), 3);
    assert_eq!(v, [4, 2]);
}

#[test]
#[should_panic(expected = "insertion index (is 3) should be <= len (is 2)")]
fn insert_past_len_panics() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([1, 2]);
    v.insert(3, 0);
}

#[test]
#[should_panic(expected = "removal index (is 2) should be < len (is 2)")]
fn remove_past_len_panics() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([1, 2]);
    v.remove(2);
}

#[test]
fn try_insert_at_capacity_returns_value() {
    let mut v = Vec::with_capacity(2).unwrap();
    v.extend([1, 2]);
    assert_eq!(v.try_insert(0, 9).unwrap_err().into_value(), 9);
    assert_eq!(v, [1, 2]);
}

#[test]
fn try_insert_past_len_hands_the_value_back() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([1, 2]);
    let e = v.try_insert(3, 9).unwrap_err();
    assert_eq!(e.error(), &Error::OutOfRange { index: 3, len: 2 });
    assert_eq!(e.into_value(), 9);
    // Past the capacity too: the index is checked before any memory is asked for.
    let e = v.try_insert(usize::MAX, 7).unwrap_err();
    assert_eq!(
        e.error(),
        &Error::OutOfRange {
            index: usize::MAX,
            len: 2
        }
    );
    assert_eq!(v, [1, 2]);
    let mut full = Vec::with_capacity(2).unwrap();
    full.extend([1, 2]);
    let e = full.try_insert(5, 9).unwrap_err();
    assert_eq!(e.error(), &Error::OutOfRange { index: 5, len: 2 });
}

#[test]
fn retain_keeps_order_and_drops_removed_once() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(100).unwrap();
    v.extend((0..20).map(|i| Counted::new(i, &drops)));
    v.retain(|c| c.value % 3 == 0);
    assert_eq!(drops.get(), 13);
    assert!(v.iter().map(|c| c.value).eq((0..20).step_by(3)));
    drop(v);
    assert_eq!(drops.get(), 20);
}

#[test]
fn retain_predicate_panic_keeps_unvisited() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(100).unwrap();
    v.extend((0..10).map(|i| Counted::new(i, &drops)));
    let r = catch_unwind(AssertUnwindSafe(|| {
        v.retain(|c| {
            assert!(c.value != 5, "predicate panics at 5");
            c.value % 2 == 0
        });
    }));
    assert!(r.is_err());
    // 1 and 3 were removed; 0, 2, 4 kept; 5..10 unvisited and kept.
    assert_eq!(drops.get(), 2);
    assert!(v.iter().map(|c| c.value).eq([0, 2, 4, 5, 6, 7, 8, 9]));
    drop(v);
    assert_eq!(drops.get(), 10);
}

#[test]
fn retain_mut_changes_elements() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend(1..=5);
    v.retain_mut(|x| {
        *x *= 10;
        *x != 30
    });
    assert_eq!(v, [10, 20, 40, 50]);
}

#[test]
fn drain_middle_moves_tail_and_drops_unyielded() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(100).unwrap();
    v.extend((0..10).map(|i| Counted::new(i, &drops)));
    {
        let mut d = v.drain(2..6);
        assert_eq!(d.len(), 4);
        assert_eq!(d.next().unwrap().value, 2);
        assert_eq!(d.next_back().unwrap().value, 5);
        assert_eq!(d.as_slice().len(), 2);
    }
    assert_eq!(drops.get(), 4);
    assert!(v.iter().map(|c| c.value).eq([0, 1, 6, 7, 8, 9]));
}

#[test]
fn drain_ranges_match_std() {
    for (a, b) in [(0, 0), (0, 5), (5, 5), (2, 5), (0, 3)] {
        let mut ours = Vec::with_capacity(8).unwrap();
        ours.extend(0..5);
        let mut std_v: std::vec::Vec<i32> = (0..5).collect();
        let got: std::vec::Vec<i32> = ours.drain(a..b).collect();
        let want: std::vec::Vec<i32> = std_v.drain(a..b).collect();
        assert_eq!(got, want);
        assert_eq!(ours, std_v);
    }
    let mut v = Vec::with_capacity(8).unwrap();
    v.extend(0..5);
    assert_eq!(v.drain(..=1).collect::<std::vec::Vec<_>>(), [0, 1]);
    assert_eq!(v.drain(1..).collect::<std::vec::Vec<_>>(), [3, 4]);
    assert_eq!(v.drain(..).collect::<std::vec::Vec<_>>(), [2]);
}

#[test]
#[should_panic(expected = "range end index 6 out of range for slice of length 5")]
fn drain_past_len_panics() {
    let mut v = Vec::with_capacity(8).unwrap();
    v.extend(0..5);
    v.drain(2..6);
}

#[test]
fn drain_leaked_keeps_prefix_only() {
    let mut v = Vec::with_capacity(8).unwrap();
    v.extend(0..5);
    std::mem::forget(v.drain(2..3));
    assert_eq!(v, [0, 1]);
}

#[test]
fn drain_drop_panic_still_moves_tail() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(100).unwrap();
    v.extend((0..6).map(|i| Counted::new(i, &drops)));
    v[2].bomb = true;
    let r = catch_unwind(AssertUnwindSafe(|| drop(v.drain(1..4))));
    assert!(r.is_err());
    assert_eq!(drops.get(), 3);
    assert!(v.iter().map(|c| c.value).eq([0, 4, 5]));
}

#[test]
fn truncate_drop_panic_drops_rest_and_sets_len() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(100).unwrap();
    v.extend((0..6).map(|i| Counted::new(i, &drops)));
    v[3].bomb = true;
    let r = catch_unwind(AssertUnwindSafe(|| v.truncate(2)));
    assert!(r.is_err());
    assert_eq!(drops.get(), 4);
    assert_eq!(v.len(), 2);
}

#[test]
fn drop_drops_every_element_once() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(1000).unwrap();
    v.extend((0..100).map(|i| Counted::new(i, &drops)));
    v.pop();
    assert_eq!(drops.get(), 1);
    v.remove(10);
    v.swap_remove(10);
    v.truncate(90);
    assert_eq!(drops.get(), 10);
    drop(v);
    assert_eq!(drops.get(), 100);
}

#[test]
fn drop_with_panicking_element_drops_others() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend((0..5).map(|i| Counted::new(i, &drops)));
    v[1].bomb = true;
    assert!(catch_unwind(AssertUnwindSafe(|| drop(v))).is_err());
    assert_eq!(drops.get(), 5);
}

#[test]
fn into_iter_yields_in_order_and_drops_rest() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend((0..6).map(|i| Counted::new(i, &drops)));
    let mut it = v.into_iter();
    assert_eq!(it.len(), 6);
    assert_eq!(it.next().unwrap().value, 0);
    assert_eq!(it.next_back().unwrap().value, 5);
    assert_eq!(it.as_slice().len(), 4);
    assert_eq!(drops.get(), 2);
    drop(it);
    assert_eq!(drops.get(), 6);
}

#[test]
fn clone_copies_elements_and_options() {
    let mut v = Builder::new(50)
        .growth(Growth::Fixed(1))
        .build::<String>()
        .unwrap();
    v.push("a".to_owned());
    v.push("b".to_owned());
    let c = v.clone();
    assert_eq!(c, v);
    assert_eq!(c.capacity(), 50);
    assert_eq!(c.options(), v.options());
    assert_ne!(c.as_ptr(), v.as_ptr());
}

#[test]
fn clone_panic_drops_partial_copy() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([1, 2, 13, 4].map(|i| Counted::new(i, &drops)));
    assert!(catch_unwind(AssertUnwindSafe(|| v.clone())).is_err());
    // The two clones made before the panic were dropped with the partial copy.
    assert_eq!(drops.get(), 2);
    assert_eq!(v.len(), 4);
}

#[test]
fn extend_from_slice_all_or_nothing() {
    let mut v = Vec::with_capacity(4).unwrap();
    v.extend_from_slice(&[1, 2]);
    let e = v.try_extend_from_slice(&[3, 4, 5]).unwrap_err();
    assert_eq!(
        e,
        Error::CapacityExceeded {
            capacity: 4,
            requested: 5
        }
    );
    assert_eq!(v, [1, 2]);
    v.extend(&[3, 4]);
    assert_eq!(v, [1, 2, 3, 4]);
}

#[test]
fn resize_fills_and_truncates() {
    let mut v = Vec::with_capacity(10).unwrap();
    v.resize(3, 'x');
    assert_eq!(v, ['x'; 3]);
    let mut n = 0;
    v.resize_with(5, || {
        n += 1;
        char::from(b'0' + n)
    });
    assert_eq!(v, ['x', 'x', 'x', '1', '2']);
    v.resize(1, 'y');
    assert_eq!(v, ['x']);
    assert!(catch_unwind(AssertUnwindSafe(|| v.resize(11, 'z'))).is_err());
    assert_eq!(v, ['x']);
}

#[test]
fn try_reserve_commits_ahead() {
    let mut v = Vec::<u16>::with_capacity(10_000).unwrap();
    v.try_reserve(5_000).unwrap();
    assert!(v.committed_capacity() >= 5_000);
    let e = v.try_reserve(10_001).unwrap_err();
    assert_eq!(
        e,
        Error::CapacityExceeded {
            capacity: 10_000,
            requested: 10_001
        }
    );
    let e = v.try_reserve(usize::MAX).unwrap_err();
    assert!(matches!(e, Error::CapacityExceeded { .. }));
}

#[test]
fn zero_sized_elements_count_without_memory() {
    let mut v = Vec::with_capacity(usize::MAX).unwrap();
    for _ in 0..1000 {
        v.push(());
    }
    assert_eq!(v.len(), 1000);
    assert_eq!(v.committed_bytes(), 0);
    assert_eq!(v.pop(), Some(()));
    v.truncate(10);
    assert_eq!(v.iter().count(), 10);
    let mut small = Vec::with_capacity(2).unwrap();
    small.push(());
    small.push(());
    assert!(small.try_push(()).is_err());
}

#[test]
fn zero_sized_drops_are_counted() {
    struct Zst;
    thread_local!(static ZST_DROPS: Cell<usize> = const { Cell::new(0) });
    impl Drop for Zst {
        fn drop(&mut self) {
            ZST_DROPS.with(|d| d.set(d.get() + 1));
        }
    }
    let mut v = Vec::with_capacity(100).unwrap();
    for _ in 0..50 {
        v.push(Zst);
    }
    v.truncate(20);
    assert_eq!(ZST_DROPS.with(Cell::get), 30);
    drop(v);
    assert_eq!(ZST_DROPS.with(Cell::get), 50);
}

#[repr(align(8192))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Aligned8k(u64);

#[test]
fn overaligned_elements_are_aligned_and_inside() {
    let mut v = Vec::with_capacity(5).unwrap();
    for i in 0..5 {
        v.push(Aligned8k(i));
    }
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x.0, i as u64);
        let p = std::ptr::from_ref(x).cast::<u8>();
        assert_eq!(p as usize % 8192, 0);
        assert!(v.reservation().contains(p));
        assert!(v.reservation().contains(p.wrapping_add(8191)));
    }
    assert!(v.try_push(Aligned8k(5)).is_err());
}

#[test]
fn large_elements_fit_inside_reservation() {
    let mut v = Builder::new(7)
        .growth(Growth::Fixed(1))
        .build::<[u8; 10_000]>()
        .unwrap();
    for i in 0..7u8 {
        v.push([i; 10_000]);
    }
    for (i, x) in v.iter().enumerate() {
        assert!(x.iter().all(|&b| b == i as u8));
        let p = x.as_ptr();
        assert!(v.reservation().contains(p));
        assert!(v.reservation().contains(p.wrapping_add(9_999)));
    }
    assert!(v.reservation().len() >= 70_000);
}

#[test]
fn sparse_mode_and_alignment_options_work() {
    let mut v = Builder::new(1000)
        .mode(CommitMode::Sparse)
        .alignment(1 << 21)
        .build::<u32>()
        .unwrap();
    v.extend(0..1000);
    assert_eq!(v.as_ptr() as usize % (1 << 21), 0);
    assert_eq!(v.reservation().mode(), CommitMode::Sparse);
    assert_eq!(v.iter().sum::<u32>(), 999 * 1000 / 2);
}

#[test]
fn traits_behave_like_std() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    let mut v = Vec::with_capacity(10).unwrap();
    v.extend([3, 1, 2]);
    v.sort_unstable();
    assert_eq!(format!("{v:?}"), "[1, 2, 3]");
    assert_eq!(v, vec![1, 2, 3]);
    assert_eq!(v, &[1, 2, 3][..]);
    let hash = |x: &dyn Fn(&mut DefaultHasher)| {
        let mut h = DefaultHasher::new();
        x(&mut h);
        h.finish()
    };
    assert_eq!(hash(&|h| v.hash(h)), hash(&|h| [1, 2, 3][..].hash(h)));
    for x in &mut v {
        *x += 1;
    }
    assert_eq!((&v).into_iter().sum::<i32>(), 9);
    let as_ref: &[i32] = v.as_ref();
    assert_eq!(as_ref, [2, 3, 4]);
}

#[derive(Clone, Debug)]
enum Op {
    Push(u16),
    Pop,
    Insert(usize, u16),
    Remove(usize),
    SwapRemove(usize),
    Truncate(usize),
    Retain(u16),
    Drain(usize, usize),
    Resize(usize, u16),
    Shrink,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u16>().prop_map(Op::Push),
        1 => Just(Op::Pop),
        1 => (any::<usize>(), any::<u16>()).prop_map(|(i, x)| Op::Insert(i, x)),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::SwapRemove),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => (1u16..5).prop_map(Op::Retain),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Drain(a, b)),
        1 => (0usize..2500, any::<u16>()).prop_map(|(n, x)| Op::Resize(n, x)),
        1 => Just(Op::Shrink),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(256, 3))]
    #[test]
    fn matches_std_vec_model(ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 24 } else { 60 })) {
        const CAP: usize = 2500;
        let mut ours = Builder::new(CAP).growth(Growth::Fixed(1)).build::<u16>().unwrap();
        let mut model: std::vec::Vec<u16> = std::vec::Vec::new();
        for op in ops {
            let len = model.len();
            match op {
                Op::Push(x) => {
                    let r = ours.try_push(x);
                    if len < CAP {
                        prop_assert!(r.is_ok());
                        model.push(x);
                    } else {
                        prop_assert_eq!(r.unwrap_err().into_value(), x);
                    }
                }
                Op::Pop => prop_assert_eq!(ours.pop(), model.pop()),
                Op::Insert(i, x) => {
                    let i = i % (len + 1);
                    let r = ours.try_insert(i, x);
                    if len < CAP {
                        prop_assert!(r.is_ok());
                        model.insert(i, x);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Remove(i) if len > 0 => prop_assert_eq!(ours.remove(i % len), model.remove(i % len)),
                Op::SwapRemove(i) if len > 0 => {
                    prop_assert_eq!(ours.swap_remove(i % len), model.swap_remove(i % len));
                }
                Op::Remove(_) | Op::SwapRemove(_) => {}
                Op::Truncate(n) => {
                    let n = n % (len + 2);
                    ours.truncate(n);
                    model.truncate(n);
                }
                Op::Retain(m) => {
                    ours.retain(|x| x % m == 0);
                    model.retain(|x| x % m == 0);
                }
                Op::Drain(a, b) => {
                    let a = a % (len + 1);
                    let b = a + b % (len - a + 1);
                    let got: std::vec::Vec<u16> = ours.drain(a..b).collect();
                    let want: std::vec::Vec<u16> = model.drain(a..b).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Resize(n, x) => {
                    ours.resize(n, x);
                    model.resize(n, x);
                }
                Op::Shrink => {
                    ours.shrink_to_fit().unwrap();
                    prop_assert_eq!(ours.committed_bytes(), (model.len() * 2).next_multiple_of(page_size()));
                }
                Op::Clear => {
                    ours.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(ours.as_slice(), model.as_slice());
            prop_assert!(ours.committed_capacity() >= ours.len());
            prop_assert_eq!(ours.reservation().committed_bytes(), ours.committed_bytes());
        }
    }
}

#[test]
fn into_iter_is_covariant_like_std() {
    fn shorten<'a>(
        it: memvisor_vmem::vec::IntoIter<&'static str>,
    ) -> memvisor_vmem::vec::IntoIter<&'a str> {
        it
    }
    let mut v = Vec::with_capacity(4).unwrap();
    v.push("kept");
    let mut it = shorten(v.into_iter());
    assert_eq!(it.next(), Some("kept"));
}

#[test]
fn drain_is_send_and_sync_when_element_is() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let mut v = Vec::with_capacity(4).unwrap();
    v.extend([1u8, 2, 3]);
    let drain = v.drain(1..);
    assert_send_sync(&drain);
    assert_eq!(drain.collect::<std::vec::Vec<_>>(), [2, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]
    #[test]
    fn dedup_split_append_extend_match_std(
        items in proptest::collection::vec(0u8..4, 0..40),
        at in 0usize..45,
        from in 0usize..45,
        to in 0usize..45,
    ) {
        let mut v = Vec::with_capacity(200).unwrap();
        v.extend(items.iter().copied());
        let mut model = items.clone();
        v.dedup();
        model.dedup();
        prop_assert_eq!(&v[..], &model[..]);
        let split = v.try_split_off(at);
        if at <= model.len() {
            let model_tail = model.split_off(at);
            let mut tail = split.unwrap();
            prop_assert_eq!(&tail[..], &model_tail[..]);
            prop_assert_eq!(&v[..], &model[..]);
            let mut model_tail = model_tail;
            v.try_append(&mut tail).unwrap();
            model.append(&mut model_tail);
            prop_assert!(tail.is_empty());
        } else {
            prop_assert_eq!(split.unwrap_err(), Error::OutOfRange { index: at, len: model.len() });
        }
        prop_assert_eq!(&v[..], &model[..]);
        let result = v.try_extend_from_within(from..to);
        if from <= to && to <= model.len() {
            result.unwrap();
            model.extend_from_within(from..to);
        } else {
            let out_of_range = matches!(result, Err(Error::OutOfRange { .. }));
            prop_assert!(out_of_range);
        }
        prop_assert_eq!(&v[..], &model[..]);
    }
}

#[test]
fn dedup_by_panic_keeps_visited_and_unvisited_elements() {
    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(16).unwrap();
    for i in [1, 1, 2, 2, 3, 3] {
        v.push((i, DropCount(Rc::clone(&drops))));
    }
    let mut calls = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        v.dedup_by(|a, b| {
            calls += 1;
            assert!(calls < 3, "boom");
            a.0 == b.0
        });
    }));
    assert!(result.is_err());
    // One duplicate was removed (dropped) before the panic; the rest are all still there.
    assert_eq!(drops.get(), 1);
    assert_eq!(
        v.iter().map(|x| x.0).collect::<std::vec::Vec<_>>(),
        [1, 2, 2, 3, 3]
    );
    drop(v);
    assert_eq!(drops.get(), 6);
}

/// Counts its drops.
struct DropCount(Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn append_past_capacity_is_error_and_moves_nothing() {
    let mut a = Vec::with_capacity(3).unwrap();
    let mut b = Vec::with_capacity(3).unwrap();
    a.extend([1, 2]);
    b.extend([3, 4]);
    assert_eq!(
        a.try_append(&mut b).unwrap_err(),
        Error::CapacityExceeded {
            capacity: 3,
            requested: 4
        }
    );
    assert_eq!(a, [1, 2]);
    assert_eq!(b, [3, 4]);
}

#[test]
fn spare_capacity_mut_offers_committed_slots_only() {
    let mut v = Vec::<u64>::with_capacity(1 << 20).unwrap();
    assert!(v.spare_capacity_mut().is_empty());
    v.push(1);
    let spare = v.spare_capacity_mut();
    assert_eq!(spare.len(), v.committed_capacity() - 1);
    let spare = v.spare_capacity_mut();
    spare[0].write(2);
    // SAFETY: slot 1 was just written and is committed.
    unsafe { v.set_len(2) };
    assert_eq!(v, [1, 2]);
}
