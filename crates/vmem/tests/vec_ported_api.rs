//! The calls a program written against virtual-buffer's vectors makes, on ours:
//! `reserve_exact` and `try_reserve_exact` (the growth step left out), `get_unchecked`, and
//! comparisons with slices, arrays, `std::vec::Vec` and `Cow` on both sides.

use std::borrow::Cow;

use memvisor_vmem::page_size;
use memvisor_vmem::vec::{Builder, ConcurrentVec, Error, Growth, Vec};

/// A growth step of 64 pages, so that a step and an exact reservation differ.
fn step() -> usize {
    64 * page_size()
}

#[test]
fn vec_reserve_exact_commits_the_pages_asked_for_not_a_step() {
    let mut v = Builder::new(1 << 20)
        .growth(Growth::Fixed(step()))
        .build::<u64>()
        .unwrap();
    v.push(1);
    assert_eq!(v.committed_bytes(), step());
    // Within what is committed: nothing more.
    v.try_reserve_exact(100).unwrap();
    assert_eq!(v.committed_bytes(), step());
    // Past it: the pages for `len + additional` slots, without a step.
    let slots = step() / 8 + 1;
    v.reserve_exact(slots - 1);
    assert_eq!(v.committed_bytes(), step() + page_size());
    assert!(v.committed_capacity() >= slots);
    // The growth step still applies to ordinary growth.
    v.try_reserve(v.committed_capacity()).unwrap();
    assert!(v.committed_bytes() >= 2 * step());
}

#[test]
fn vec_try_reserve_exact_past_capacity_is_refused_and_changes_nothing() {
    let mut v = Vec::<u8>::with_capacity(10).unwrap();
    v.extend([1, 2, 3]);
    let before = (v.len(), v.committed_bytes(), v.committed_capacity());
    assert_eq!(
        v.try_reserve_exact(8),
        Err(Error::CapacityExceeded {
            capacity: 10,
            requested: 11
        })
    );
    assert_eq!(
        v.try_reserve_exact(usize::MAX),
        Err(Error::CapacityExceeded {
            capacity: 10,
            requested: usize::MAX
        })
    );
    assert_eq!(
        (v.len(), v.committed_bytes(), v.committed_capacity()),
        before
    );
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.reserve_exact(8))).is_err());
    assert_eq!(v, [1, 2, 3]);
}

#[test]
fn vec_compares_with_cow_both_ways() {
    let mut v = Vec::with_capacity(8).unwrap();
    v.extend([1, 2, 3]);
    let borrowed: Cow<'_, [i32]> = Cow::Borrowed(&[1, 2, 3]);
    let owned: Cow<'_, [i32]> = Cow::Owned(vec![1, 2]);
    assert!(borrowed == v);
    assert!(v == borrowed);
    assert!(owned != v);
    assert!(v != owned);
}

#[test]
fn concurrent_reserve_exact_commits_the_pages_asked_for_not_a_step() {
    let v = Builder::new(1 << 20)
        .growth(Growth::Fixed(step()))
        .thread_block(1)
        .build_concurrent::<u64>()
        .unwrap();
    v.push(1);
    let first = v.committed_bytes();
    v.reserve_exact(100).unwrap();
    assert_eq!(v.committed_bytes(), first);
    let slots = v.committed_capacity() + 1;
    v.reserve_exact(slots - 1).unwrap();
    assert!(v.committed_capacity() >= slots);
    // One more page of slots, and the ready bits' page if it needed one more: no step.
    assert!(v.committed_bytes() <= first + 2 * page_size());
    assert_eq!(
        v.reserve_exact(1 << 20),
        Err(Error::CapacityExceeded {
            capacity: 1 << 20,
            requested: (1 << 20) + 1
        })
    );
    // Still the step for a push past what is committed.
    v.reserve(v.committed_capacity()).unwrap();
    assert!(v.committed_bytes() >= first + step());
}

#[test]
fn concurrent_get_unchecked_reads_published_elements() {
    let mut v = ConcurrentVec::with_capacity(200).unwrap();
    let indices: std::vec::Vec<usize> = (0..150).map(|i| v.push(i * 2)).collect();
    for (i, &index) in indices.iter().enumerate() {
        // SAFETY: each index was returned by a push on this thread, which published it.
        assert_eq!(unsafe { *v.get_unchecked(index) }, i * 2);
    }
    // SAFETY: published by the push above; `&mut self` excludes other access.
    unsafe { *v.get_unchecked_mut(indices[7]) = 1 };
    assert_eq!(v.get(7), Some(&1));
}

#[test]
fn concurrent_vec_compares_with_slices_arrays_vecs_and_cow() {
    let v = ConcurrentVec::with_capacity(8).unwrap();
    for x in [1, 2, 3] {
        v.push(x);
    }
    let slice: &[i32] = &[1, 2, 3];
    let std_vec = vec![1, 2, 3];
    assert!(v == *slice);
    assert!(v == slice);
    assert!(v == [1, 2, 3]);
    let array: &[i32; 3] = &[1, 2, 3];
    assert!(v == array);
    assert!(v == std_vec);
    assert!(v != [1, 2]);
    assert!(v != [1, 2, 4]);
    let borrowed: Cow<'_, [i32]> = Cow::Borrowed(slice);
    assert!(borrowed == v);
    assert!(v == borrowed);
    assert!(*slice == v);
    assert!(slice == v);
    assert!(std_vec == v);
}

/// The hash of `value` by std's default hasher.
fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(value)
}

/// Equality with a vector, a slice, an array, `std::vec::Vec` and `Cow` on either side, order,
/// hashing and `Debug` see the same sequence: the published elements, holes and `len` left out.
#[test]
fn concurrent_vec_has_one_rule_for_holes() {
    // [1, hole, 3]: len 3, two elements.
    let v = with_a_hole();
    assert_eq!(v.len(), 3);
    // [1, 3, then a Pusher's block left empty]: the holes lie elsewhere.
    let w = ConcurrentVec::with_capacity(1000).unwrap();
    w.push(1);
    w.pusher().push(3);
    assert!(w.len() > 3);
    // [1, 3] without holes.
    let mut plain = ConcurrentVec::with_capacity(8).unwrap();
    plain.extend([1, 3]);
    for other in [&w, &plain] {
        assert!(v == *other);
        assert!(*other == v);
        assert_eq!(v.cmp(other), std::cmp::Ordering::Equal);
        assert_eq!(v.partial_cmp(other), Some(std::cmp::Ordering::Equal));
        assert_eq!(hash_of(&v), hash_of(other));
        assert_eq!(format!("{v:?}"), format!("{other:?}"));
    }
    assert_eq!(format!("{v:?}"), "[1, 3]");
    let slice: &[i32] = &[1, 3];
    let std_vec = vec![1, 3];
    let cow: Cow<'_, [i32]> = Cow::Borrowed(slice);
    assert!(v == *slice);
    assert!(*slice == v);
    assert!(v == slice);
    assert!(slice == v);
    let array: &[i32; 2] = &[1, 3];
    assert!(v == [1, 3]);
    assert!(v == array);
    assert!(v == std_vec);
    assert!(std_vec == v);
    assert!(v == cow);
    assert!(cow == v);
    // The holes are not elements: not equal to a slice with a value in their place, nor to
    // one of `len` elements.
    for longer in [[1, 0, 3], [1, 3, 0]] {
        assert!(v != longer);
        assert!(v != longer[..]);
        assert!(longer[..] != v);
    }
    let shorter = ConcurrentVec::with_capacity(8).unwrap();
    shorter.push(1);
    assert!(v != shorter);
    assert_eq!(v.cmp(&shorter), std::cmp::Ordering::Greater);
    assert_ne!(hash_of(&v), hash_of(&shorter));
}

/// A vector of 8 slots: 1 published at 0, a hole (a push whose value panicked) at 1, and 3
/// published at 2.
fn with_a_hole() -> ConcurrentVec<i32> {
    let v = ConcurrentVec::with_capacity(8).unwrap();
    v.push(1);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.push_with(|_| -> i32 { panic!("hole") })
    }));
    v.push(3);
    v
}

/// The panic message of `f`, which must panic.
#[cfg(debug_assertions)]
fn panic_message(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Debug builds (Miri's too) check the contract of `get_unchecked` and `get_unchecked_mut`
/// before any read: a hole, a claimed slot not yet written, a slot past `len`, one past the
/// capacity, and an element cleared since its push all panic, naming the slot.
#[cfg(debug_assertions)]
#[test]
fn concurrent_get_unchecked_of_an_unpublished_slot_panics_in_debug_builds() {
    let mut v = with_a_hole();
    let unpublished = |index: usize| format!("of slot {index}, which is not published");
    for index in [1, 3, 7, 8, usize::MAX] {
        let message = panic_message(|| {
            // SAFETY: none; the debug check panics before the slot is read.
            let _ = unsafe { v.get_unchecked(index) };
        });
        assert!(message.contains(&unpublished(index)), "{message}");
        let message = panic_message(|| {
            // SAFETY: none; the debug check panics before the slot is read.
            let _ = unsafe { v.get_unchecked_mut(index) };
        });
        assert!(message.contains(&unpublished(index)), "{message}");
    }
    // A slot another thread has claimed and is still writing.
    let (claimed, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            v.push_with(|_| {
                claimed.wait();
                release.wait();
                5
            })
        });
        claimed.wait();
        let message = panic_message(|| {
            // SAFETY: none; the debug check panics before the slot (being written) is read.
            let _ = unsafe { v.get_unchecked(3) };
        });
        assert!(message.contains(&unpublished(3)), "{message}");
        release.wait();
    });
    // SAFETY: the writer was joined, so its publication happened before.
    assert_eq!(unsafe { *v.get_unchecked(3) }, 5);
    v.clear();
    let message = panic_message(|| {
        // SAFETY: none; the element pushed at 0 was dropped by `clear`.
        let _ = unsafe { v.get_unchecked(0) };
    });
    assert!(message.contains(&unpublished(0)), "{message}");
}
