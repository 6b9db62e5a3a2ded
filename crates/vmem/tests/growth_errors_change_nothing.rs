//! Error atomicity of growth: for random operation sequences, every growth call of a `Vec`, a
//! `ConcurrentVec` or a `Reservation` that returns an error (a capacity exceeded, an index or a
//! range out of bounds, a length that overflows) leaves the whole observable state as it was:
//! the elements, `len`, the capacities, the committed bytes and, for a reservation, which pages
//! are committed and guarded.

#![allow(clippy::cast_possible_truncation)]

use memvisor_vmem::vec::{Builder, ConcurrentVec, Growth, Vec};
use memvisor_vmem::{Reservation, page_size};
use proptest::prelude::*;

const CASES: u32 = 64;
/// The vectors' capacity: small, so that growth meets it, and several pages of `u32`s (seven
/// on 4 KiB pages, with one-page growth), so that a failed call that commits memory past what
/// was committed shows in the committed bytes (in one page, as at 700, only the first commit
/// could).
const CAP: usize = 7000;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

#[derive(Clone, Debug)]
enum VecOp {
    Reserve(usize),
    ReserveExact(usize),
    Push,
    Insert(usize),
    ExtendFromSlice(usize),
    ExtendFromWithin(usize, usize),
    Append(usize),
    SplitOff(usize),
    Truncate(usize),
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..300,
        1 => Just(CAP),
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 2),
        1 => Just(isize::MAX as usize),
    ]
}

fn vec_op() -> impl Strategy<Value = VecOp> {
    prop_oneof![
        2 => count().prop_map(VecOp::Reserve),
        2 => count().prop_map(VecOp::ReserveExact),
        4 => Just(VecOp::Push),
        1 => count().prop_map(VecOp::Insert),
        2 => count().prop_map(VecOp::ExtendFromSlice),
        1 => (count(), count()).prop_map(|(a, b)| VecOp::ExtendFromWithin(a, b)),
        1 => (0usize..400).prop_map(VecOp::Append),
        1 => count().prop_map(VecOp::SplitOff),
        1 => (0usize..CAP).prop_map(VecOp::Truncate),
    ]
}

fn vec_state(v: &Vec<u32>) -> (std::vec::Vec<u32>, usize, usize, usize, usize) {
    (
        v.iter().copied().collect(),
        v.len(),
        v.capacity(),
        v.committed_capacity(),
        v.committed_bytes(),
    )
}

/// Applies `op` to `v`; whether it failed.
fn apply_vec(v: &mut Vec<u32>, op: &VecOp, step: u32) -> bool {
    match *op {
        VecOp::Reserve(n) => v.try_reserve(n).is_err(),
        VecOp::ReserveExact(n) => v.try_reserve_exact(n).is_err(),
        VecOp::Push => v.try_push(step).is_err(),
        VecOp::Insert(i) => v.try_insert(i, step).is_err(),
        VecOp::ExtendFromSlice(n) => {
            let more: std::vec::Vec<u32> = (0..n.min(CAP + 1)).map(|i| i as u32).collect();
            v.try_extend_from_slice(&more).is_err()
        }
        VecOp::ExtendFromWithin(a, b) => {
            // Inverted and out-of-bounds ranges are std's panics: checked by the std model,
            // not here.
            if a > b || b > v.len() {
                return false;
            }
            v.try_extend_from_within(a..b).is_err()
        }
        VecOp::Append(n) => {
            let mut other = Builder::new(CAP).build::<u32>().unwrap();
            other.extend((0..n).map(|i| i as u32));
            let before = vec_state(&other);
            let failed = v.try_append(&mut other).is_err();
            if failed {
                assert_eq!(
                    vec_state(&other),
                    before,
                    "a failed append changed its source"
                );
            }
            failed
        }
        VecOp::SplitOff(at) => v.try_split_off(at).is_err(),
        VecOp::Truncate(len) => {
            v.truncate(len);
            false
        }
    }
}

#[derive(Clone, Debug)]
enum ConcurrentOp {
    Reserve(usize),
    ReserveExact(usize),
    Push,
    PusherPushes(usize),
}

fn concurrent_op() -> impl Strategy<Value = ConcurrentOp> {
    prop_oneof![
        2 => count().prop_map(ConcurrentOp::Reserve),
        2 => count().prop_map(ConcurrentOp::ReserveExact),
        4 => Just(ConcurrentOp::Push),
        1 => (0usize..40).prop_map(ConcurrentOp::PusherPushes),
    ]
}

fn concurrent_state(v: &ConcurrentVec<u32>) -> (std::vec::Vec<(usize, u32)>, usize, usize, usize) {
    (
        v.entries().map(|(i, &x)| (i, x)).collect(),
        v.len(),
        v.committed_capacity(),
        v.committed_bytes(),
    )
}

#[derive(Clone, Debug)]
enum ReservationOp {
    Commit(usize, usize),
    Decommit(usize, usize),
    Prefault(usize, usize),
    Guard(usize, usize),
    Unguard(usize, usize),
}

/// Offsets and lengths in pages, some past the reservation's end or overflowing, some not
/// page-aligned.
fn span(page: usize) -> impl Strategy<Value = (usize, usize)> {
    let at = prop_oneof![
        6 => (0usize..10).prop_map(move |p| p * page),
        1 => (0usize..10).prop_map(move |p| p * page + 1),
        1 => Just(usize::MAX - page + 1),
    ];
    let len = prop_oneof![
        6 => (0usize..10).prop_map(move |p| p * page),
        1 => Just(page - 1),
        1 => Just(usize::MAX),
    ];
    (at, len)
}

fn reservation_op(page: usize) -> impl Strategy<Value = ReservationOp> {
    prop_oneof![
        3 => span(page).prop_map(|(a, l)| ReservationOp::Commit(a, l)),
        2 => span(page).prop_map(|(a, l)| ReservationOp::Decommit(a, l)),
        1 => span(page).prop_map(|(a, l)| ReservationOp::Prefault(a, l)),
        1 => span(page).prop_map(|(a, l)| ReservationOp::Guard(a, l)),
        1 => span(page).prop_map(|(a, l)| ReservationOp::Unguard(a, l)),
    ]
}

/// The reservation's pages, committed and guarded, and its committed bytes.
fn reservation_state(r: &Reservation) -> (std::vec::Vec<(bool, bool)>, usize) {
    let page = page_size();
    (
        (0..r.len() / page)
            .map(|p| {
                (
                    r.is_committed(p * page, page).unwrap(),
                    r.is_guarded(p * page, page).unwrap(),
                )
            })
            .collect(),
        r.committed_bytes(),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; the models and the vectors' own tests run there")]
    fn vec_growth_that_fails_changes_nothing(ops in prop::collection::vec(vec_op(), 0..40)) {
        let mut v = Builder::new(CAP).growth(Growth::Fixed(page_size())).build::<u32>().unwrap();
        for (step, op) in ops.iter().enumerate() {
            let before = vec_state(&v);
            if apply_vec(&mut v, op, step as u32) {
                prop_assert_eq!(&vec_state(&v), &before, "step {}: {:?} failed", step, op);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; the models and the vectors' own tests run there")]
    fn concurrent_vec_growth_that_fails_changes_nothing(ops in prop::collection::vec(concurrent_op(), 0..60)) {
        let v = Builder::new(CAP).growth(Growth::Fixed(page_size())).thread_block(1).build_concurrent::<u32>().unwrap();
        for (step, op) in ops.iter().enumerate() {
            let before = concurrent_state(&v);
            let failed = match *op {
                ConcurrentOp::Reserve(n) => v.reserve(n).is_err(),
                ConcurrentOp::ReserveExact(n) => v.reserve_exact(n).is_err(),
                ConcurrentOp::Push => v.try_push(step as u32).is_err(),
                ConcurrentOp::PusherPushes(n) => {
                    // Each of the pusher's pushes that fails changes nothing; the pusher's
                    // block (claimed slots, counted by `len`) stays behind it, as documented.
                    let mut pusher = v.pusher();
                    for i in 0..n {
                        let now = concurrent_state(&v);
                        if pusher.try_push(i as u32).is_err() {
                            prop_assert_eq!(&concurrent_state(&v), &now, "step {}: pusher push {} failed", step, i);
                            break;
                        }
                    }
                    false
                }
            };
            if failed {
                prop_assert_eq!(&concurrent_state(&v), &before, "step {}: {:?} failed", step, op);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; the models and the vectors' own tests run there")]
    fn reservation_call_that_fails_changes_nothing(ops in prop::collection::vec(reservation_op(page_size()), 0..40)) {
        let page = page_size();
        let mut r = Reservation::builder().reserve(8 * page).unwrap();
        for (step, op) in ops.iter().enumerate() {
            let before = reservation_state(&r);
            let failed = match *op {
                ReservationOp::Commit(a, l) => r.commit(a, l).is_err(),
                ReservationOp::Decommit(a, l) => r.decommit(a, l).is_err(),
                ReservationOp::Prefault(a, l) => r.prefault(a, l).is_err(),
                ReservationOp::Guard(a, l) => r.guard(a, l).is_err(),
                ReservationOp::Unguard(a, l) => r.unguard(a, l).is_err(),
            };
            if failed {
                prop_assert_eq!(&reservation_state(&r), &before, "step {}: {:?} failed", step, op);
            }
        }
    }
}
