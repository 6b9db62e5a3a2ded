//! `vec::Vec` editing operations at their edges: the panicking forms fail exactly where the
//! `try_` forms return an error and leave both vectors as they were; every range bound form of
//! `extend_from_within` selects what `std` selects.

use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use memvisor_vmem::vec::{Error, Vec};

fn filled(capacity: usize, values: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v = Vec::with_capacity(capacity).unwrap();
    v.extend(values);
    v
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).unwrap_err();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn dedup_by_key_keeps_first_of_each_run() {
    let mut v = filled(16, [10, 11, 20, 21, 22, 10, 30]);
    v.dedup_by_key(|x| *x / 10);
    assert_eq!(v, [10, 20, 10, 30]);
    let mut empty = filled(4, []);
    empty.dedup_by_key(|x| *x);
    assert!(empty.is_empty());
}

#[test]
fn split_off_middle_and_end_moves_the_tail() {
    let mut v = filled(8, 1..=5);
    let tail = v.split_off(2);
    assert_eq!(
        (v.as_slice(), tail.as_slice()),
        (&[1, 2][..], &[3, 4, 5][..])
    );
    let mut v = filled(8, 1..=3);
    let tail = v.split_off(3);
    assert_eq!(v, [1, 2, 3]);
    assert!(tail.is_empty());
}

#[test]
fn split_off_past_len_panics_and_leaves_vector() {
    let mut v = filled(8, 1..=3);
    let message = panic_message(|| drop(v.split_off(4)));
    assert!(message.contains("split_off"), "{message}");
    assert_eq!(v, [1, 2, 3]);
    assert_eq!(
        v.try_split_off(4).unwrap_err(),
        Error::OutOfRange { index: 4, len: 3 }
    );
}

#[test]
fn append_moves_everything_and_empties_other() {
    let mut a = filled(8, [1, 2]);
    let mut b = filled(8, [3, 4, 5]);
    a.append(&mut b);
    assert_eq!(a, [1, 2, 3, 4, 5]);
    assert!(b.is_empty());
    // Appending an empty vector changes nothing.
    a.append(&mut b);
    assert_eq!(a, [1, 2, 3, 4, 5]);
}

#[test]
fn append_past_capacity_panics_and_moves_nothing() {
    let mut a = filled(4, [1, 2, 3]);
    let cap = a.capacity();
    let mut b = filled(cap, (0..u32::try_from(cap).unwrap()).map(|x| x + 100));
    let before_b: std::vec::Vec<u32> = b.iter().copied().collect();
    let message = panic_message(|| a.append(&mut b));
    assert!(message.contains("append"), "{message}");
    assert_eq!(a, [1, 2, 3]);
    assert_eq!(b.as_slice(), &before_b[..]);
    assert!(matches!(
        a.try_append(&mut b),
        Err(Error::CapacityExceeded { .. })
    ));
    assert_eq!(a, [1, 2, 3]);
    assert_eq!(b.len(), cap);
}

#[test]
fn extend_from_within_every_bound_form_matches_std() {
    let base = [1u32, 2, 3, 4, 5];
    let bounds: [(Bound<usize>, Bound<usize>); 6] = [
        (Bound::Unbounded, Bound::Unbounded),
        (Bound::Included(1), Bound::Excluded(3)),
        (Bound::Included(1), Bound::Included(3)),
        (Bound::Excluded(1), Bound::Included(3)),
        (Bound::Excluded(0), Bound::Unbounded),
        (Bound::Unbounded, Bound::Included(0)),
    ];
    for range in bounds {
        let mut ours = filled(32, base);
        let mut std_vec = base.to_vec();
        ours.extend_from_within(range);
        std_vec.extend_from_within(range);
        assert_eq!(ours.as_slice(), &std_vec[..], "{range:?}");
    }
}

#[test]
fn extend_from_within_bad_range_errors_or_panics_and_leaves_vector() {
    let mut v = filled(32, [1, 2, 3]);
    assert_eq!(
        v.try_extend_from_within(2..5).unwrap_err(),
        Error::OutOfRange { index: 5, len: 3 }
    );
    // Start past end.
    assert!(matches!(
        v.try_extend_from_within((Bound::Excluded(2), Bound::Excluded(2))),
        Err(Error::OutOfRange { len: 3, .. })
    ));
    // Bounds that overflow when made exclusive.
    assert!(matches!(
        v.try_extend_from_within((Bound::Excluded(usize::MAX), Bound::Unbounded)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        v.try_extend_from_within(..=usize::MAX),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(v, [1, 2, 3]);
    let message = panic_message(|| v.extend_from_within(1..=3));
    assert!(message.contains("extend_from_within"), "{message}");
    assert_eq!(v, [1, 2, 3]);
}

#[test]
fn extend_from_within_past_capacity_errors_and_leaves_vector() {
    let mut v = filled(4, [7]);
    let cap = v.capacity();
    v.extend((1..cap).map(|_| 7));
    assert_eq!(v.len(), cap);
    assert!(matches!(
        v.try_extend_from_within(..1),
        Err(Error::CapacityExceeded { .. })
    ));
    assert_eq!(v.len(), cap);
}
