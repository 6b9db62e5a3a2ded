//! `vec::Vec` against `std::vec::Vec` at the edges of every index and range argument: the same
//! calls on the same elements either both panic or both return the same value, and leave the
//! same elements behind. Also iterators whose size hints are false, and `dedup_by` closures
//! that tell the two elements apart or change the one kept.

use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::panic::{AssertUnwindSafe, catch_unwind};

use memvisor_vmem::vec::Vec;

/// A call on our vector, its result formatted.
type Ours = Box<dyn Fn(&mut Vec<u32>) -> String>;
/// The same call on std's vector.
type Std = Box<dyn Fn(&mut std::vec::Vec<u32>) -> String>;

/// One call, made on both vectors; its result is formatted so that the two can be compared.
struct Call {
    name: String,
    ours: Ours,
    std: Std,
}

/// Makes a `Call` from one expression written once for both vectors.
macro_rules! call {
    ($name:expr, |$v:ident| $body:expr) => {
        Call {
            name: $name,
            ours: Box::new(move |$v: &mut Vec<u32>| $body),
            std: Box::new(move |$v: &mut std::vec::Vec<u32>| $body),
        }
    };
}

/// Every index and range call at indices around a length of 5 and at the end of `usize`.
fn calls() -> std::vec::Vec<Call> {
    let edges = [0, 1, 5, 6, usize::MAX];
    let bounds = |x: usize| [Included(x), Excluded(x), Unbounded];
    let mut calls = std::vec::Vec::new();
    for i in edges {
        calls.push(call!(format!("insert({i})"), |v| format!(
            "{:?}",
            v.insert(i, 9)
        )));
        calls.push(call!(format!("remove({i})"), |v| v.remove(i).to_string()));
        calls.push(call!(format!("swap_remove({i})"), |v| v
            .swap_remove(i)
            .to_string()));
        calls.push(call!(format!("truncate({i})"), |v| format!(
            "{:?}",
            v.truncate(i)
        )));
        calls.push(call!(format!("split_off({i})"), |v| {
            format!("{:?}", &v.split_off(i)[..])
        }));
        for j in edges {
            for start in bounds(i) {
                for end in bounds(j) {
                    let range: (Bound<usize>, Bound<usize>) = (start, end);
                    calls.push(call!(format!("drain({range:?})"), |v| {
                        format!("{:?}", v.drain(range).collect::<std::vec::Vec<_>>())
                    }));
                    calls.push(call!(format!("extend_from_within({range:?})"), |v| {
                        format!("{:?}", v.extend_from_within(range))
                    }));
                }
            }
        }
    }
    calls
}

#[test]
#[cfg_attr(
    miri,
    ignore = "about a thousand caught panics; each path runs under Miri elsewhere"
)]
fn index_and_range_edges_match_std() {
    let calls = calls();
    assert!(calls.len() > 400);
    for call in &calls {
        let mut ours = Vec::with_capacity(64).unwrap();
        ours.extend([1, 2, 3, 4, 5]);
        let mut std = vec![1, 2, 3, 4, 5];
        let got = catch_unwind(AssertUnwindSafe(|| (call.ours)(&mut ours))).ok();
        let want = catch_unwind(AssertUnwindSafe(|| (call.std)(&mut std))).ok();
        assert_eq!(got, want, "{}: result (None: panicked)", call.name);
        assert_eq!(ours, std, "{}: elements left", call.name);
    }
}

/// Yields `items` values whatever its size hint says.
struct Lying {
    items: u32,
    hint: (usize, Option<usize>),
}

impl Iterator for Lying {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.items = self.items.checked_sub(1)?;
        Some(self.items)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.hint
    }
}

#[test]
fn extend_from_iterator_with_false_size_hint_takes_every_item() {
    for hint in [
        (0, Some(0)),
        (usize::MAX, None),
        (usize::MAX, Some(usize::MAX)),
        (1, Some(1)),
    ] {
        let mut v = Vec::with_capacity(10).unwrap();
        v.extend(Lying { items: 10, hint });
        assert_eq!(v, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], "hint {hint:?}");
        // One more item than fits: the ten fit, the eleventh panics, nothing is lost.
        let mut v = Vec::with_capacity(10).unwrap();
        let full = catch_unwind(AssertUnwindSafe(|| v.extend(Lying { items: 11, hint })));
        assert!(full.is_err());
        assert_eq!(v.len(), 10);
        assert_eq!(v[0], 10);
    }
}

#[test]
fn dedup_by_with_asymmetric_or_mutating_closures_matches_std() {
    let input = [1u32, 3, 2, 5, 4, 4, 9, 1, 1, 8];
    let mut ours = Vec::with_capacity(16).unwrap();
    ours.extend(input);
    let mut std = input.to_vec();
    // The later element comes first, the kept one second.
    ours.dedup_by(|later, kept| later > kept);
    std.dedup_by(|later, kept| later > kept);
    assert_eq!(ours, std);

    let mut ours = Vec::with_capacity(16).unwrap();
    ours.extend(input);
    let mut std = input.to_vec();
    // The kept element can take in the removed ones.
    let fold = |later: &mut u32, kept: &mut u32| {
        let same = (*later % 2) == (*kept % 2);
        if same {
            *kept += *later;
        }
        same
    };
    ours.dedup_by(fold);
    std.dedup_by(fold);
    assert_eq!(ours, std);
}
