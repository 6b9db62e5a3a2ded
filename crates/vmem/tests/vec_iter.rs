//! Iterators of `vec::Vec` and `vec::ConcurrentVec` from both ends and partly consumed, what
//! their `Debug` shows, the slice traits of `Vec`, and the panicking forms that must leave
//! the vector as it was.

use std::borrow::{Borrow, BorrowMut};
use std::cell::Cell;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use memvisor_vmem::vec::{ConcurrentVec, Vec};

fn filled(capacity: usize, values: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v = Vec::with_capacity(capacity).unwrap();
    v.extend(values);
    v
}

/// Adds one to its counter when dropped.
struct Tracked(Rc<Cell<usize>>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn drain_from_both_ends_shows_rest_and_closes_gap() {
    let mut v = filled(16, 0..8);
    {
        let mut d = v.drain(2..6);
        assert_eq!(d.next_back(), Some(5));
        assert_eq!(d.next(), Some(2));
        assert_eq!(format!("{d:?}"), "Drain([3, 4])");
        assert_eq!(d.next_back(), Some(4));
        assert_eq!(d.next_back(), Some(3));
        assert_eq!(d.next_back(), None);
        assert_eq!(d.next(), None);
    }
    assert_eq!(v, [0, 1, 6, 7]);
}

#[test]
fn drain_start_overflowing_panics_and_leaves_vector() {
    let mut v = filled(8, 0..3);
    let r = catch_unwind(AssertUnwindSafe(|| {
        drop(v.drain((Bound::Excluded(usize::MAX), Bound::Unbounded)));
    }));
    assert!(r.is_err());
    assert_eq!(v, [0, 1, 2]);
}

#[test]
fn into_iter_from_both_ends_drops_the_rest() {
    let mut v = filled(16, 0..6);
    v.push(6);
    let mut it = v.into_iter();
    assert_eq!(it.size_hint(), (7, Some(7)));
    assert_eq!(it.next_back(), Some(6));
    assert_eq!(it.next(), Some(0));
    assert_eq!(format!("{it:?}"), "IntoIter([1, 2, 3, 4, 5])");
    assert_eq!(it.size_hint(), (5, Some(5)));
    assert!(it.reservation().len() >= 6 * size_of::<u32>());
    assert_eq!(it.next_back(), Some(5));
    assert_eq!(it.collect::<std::vec::Vec<_>>(), [1, 2, 3, 4]);

    let drops = Rc::new(Cell::new(0));
    let mut v = Vec::with_capacity(8).unwrap();
    for _ in 0..5 {
        v.push(Tracked(Rc::clone(&drops)));
    }
    let mut it = v.into_iter();
    drop(it.next());
    drop(it.next_back());
    assert_eq!(drops.get(), 2);
    drop(it);
    assert_eq!(drops.get(), 5);
}

#[test]
fn extend_from_slice_past_capacity_panics_and_leaves_vector() {
    let mut v = filled(4, [1]);
    let too_many = vec![9u32; v.capacity()];
    let r = catch_unwind(AssertUnwindSafe(|| v.extend_from_slice(&too_many)));
    let message = r.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("extend_from_slice"), "{message}");
    assert_eq!(v, [1]);
}

#[test]
fn slice_traits_see_the_elements() {
    let mut v = filled(8, [3, 1, 2]);
    let as_ref: &[u32] = v.as_ref();
    assert_eq!(as_ref, [3, 1, 2]);
    AsMut::<[u32]>::as_mut(&mut v).sort_unstable();
    assert_eq!(Borrow::<[u32]>::borrow(&v), [1, 2, 3]);
    BorrowMut::<[u32]>::borrow_mut(&mut v)[0] = 10;
    assert_eq!(format!("{v:?}"), "[10, 2, 3]");
    assert!(v == *[10u32, 2, 3].as_slice());
    assert!(v != *[10u32, 2].as_slice());
    // `builder(n)` gives the same vector as `with_capacity(n)`.
    let built: Vec<u32> = Vec::<u32>::builder(8).build().unwrap();
    assert_eq!(built.capacity(), v.capacity());
}

#[test]
fn concurrent_iter_clone_resumes_at_same_place() {
    let v = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..5u32 {
        v.push(i);
    }
    let mut it = v.iter();
    assert_eq!(it.next(), Some(&0));
    let copy = it.clone();
    assert_eq!(it.copied().collect::<std::vec::Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(copy.copied().collect::<std::vec::Vec<_>>(), [1, 2, 3, 4]);

    let mut entries = v.entries();
    entries.next();
    entries.next();
    let rest: std::vec::Vec<_> = entries.clone().map(|(i, _)| i).collect();
    assert_eq!(rest, [2, 3, 4]);
    assert_eq!(entries.count(), 3);
}

#[test]
fn concurrent_iter_mut_bounds_and_changes_every_element() {
    let mut v = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..4u32 {
        v.push(i);
    }
    let it = v.iter_mut();
    let (low, high) = it.size_hint();
    assert_eq!(low, 0);
    assert!(high.is_some_and(|h| h >= 4), "{high:?}");
    for x in it {
        *x *= 10;
    }
    assert_eq!(
        v.iter().copied().collect::<std::vec::Vec<_>>(),
        [0, 10, 20, 30]
    );
}

/// `Debug` of a `ConcurrentVec`'s `IterMut` shows only the elements it has not yielded: the
/// yielded ones are borrowed mutably by the caller, and reading them would alias that borrow
/// (Miri checks this test).
#[test]
fn concurrent_iter_mut_debug_shows_only_what_is_ahead() {
    let mut v = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..4u32 {
        v.push(i);
    }
    let mut it = v.iter_mut();
    assert_eq!(format!("{it:?}"), "IterMut([0, 1, 2, 3])");
    let first = it.next().unwrap();
    let second = it.next().unwrap();
    assert_eq!(format!("{it:?}"), "IterMut([2, 3])");
    *first = 10;
    *second = 11;
    it.by_ref().for_each(|x| *x += 20);
    assert_eq!(format!("{it:?}"), "IterMut([])");
    *first += 1;
    assert_eq!(
        v.iter().copied().collect::<std::vec::Vec<_>>(),
        [11, 11, 22, 23]
    );
}

/// The same from another thread while the caller writes through the elements already
/// yielded: `IterMut` is `Sync`, and its `Debug` must not read them.
#[test]
fn concurrent_iter_mut_debug_on_another_thread_reads_only_what_is_ahead() {
    let mut v = ConcurrentVec::with_capacity(16).unwrap();
    for i in 0..4u32 {
        v.push(i);
    }
    let mut it = v.iter_mut();
    let first = it.next().unwrap();
    std::thread::scope(|s| {
        let shown = s.spawn(|| format!("{:?}", &it));
        for _ in 0..100 {
            *first = first.wrapping_add(1);
        }
        assert_eq!(shown.join().unwrap(), "IterMut([1, 2, 3])");
    });
    assert_eq!(*first, 100);
}

/// Writes through a yielded element before and after `Debug`: a `Debug` that read the element
/// in between would break the caller's exclusive borrow (Miri checks this test under Stacked
/// and Tree Borrows), and the elements own heap memory whose reads Miri follows too.
#[test]
fn concurrent_iter_mut_debug_between_writes_through_a_yielded_element() {
    let mut v = ConcurrentVec::with_capacity(16).unwrap();
    for s in ["a", "b", "c"] {
        v.push(String::from(s));
    }
    let mut it = v.iter_mut();
    let first = it.next().unwrap();
    first.push('!');
    assert_eq!(format!("{it:?}"), r#"IterMut(["b", "c"])"#);
    *first = String::from("replaced");
    let last = it.nth(1).unwrap();
    last.push('?');
    assert_eq!(format!("{it:?}"), "IterMut([])");
    first.push('.');
    last.push('.');
    assert_eq!(
        v.iter().collect::<std::vec::Vec<_>>(),
        ["replaced.", "b", "c?."]
    );
}

/// `Debug` of a `ConcurrentVec`'s `IntoIter` shows only the elements it has not yielded: the
/// yielded ones were moved out, and here already dropped (Miri checks that none is read).
#[test]
fn concurrent_into_iter_debug_shows_only_what_is_left() {
    let v = ConcurrentVec::with_capacity(16).unwrap();
    for s in ["a", "b", "c"] {
        v.push(String::from(s));
    }
    let mut it = v.into_iter();
    assert_eq!(it.next().as_deref(), Some("a"));
    let text = format!("{it:?}");
    assert!(
        text.starts_with(r#"IntoIter { vec: ["b", "c"], "#),
        "{text}"
    );
    assert_eq!(it.next().as_deref(), Some("b"));
    assert_eq!(it.next().as_deref(), Some("c"));
    let text = format!("{it:?}");
    assert!(text.starts_with("IntoIter { vec: [], "), "{text}");
}

#[test]
fn pusher_debug_shows_its_block() {
    let v = ConcurrentVec::<u32>::with_capacity(64).unwrap();
    let mut p = v.pusher();
    p.push(1);
    let text = format!("{p:?}");
    assert!(text.starts_with("Pusher { next: "), "{text}");
    assert!(text.contains("end: "), "{text}");
    assert_eq!(v.get(0), Some(&1));
}
