//! The reservation under a vector, reached through `reservation()`: the unsafe calls that would
//! discard, replace or protect its memory are refused with a typed error and change nothing.
//! Their contracts speak of references and other threads; the vector itself keeps reading,
//! writing and dropping its elements there, so a call that met the contract to the letter
//! would still leave the vector reading zeroed or inaccessible memory as elements.

use memvisor_vmem::vec::{Builder, ConcurrentVec, Vec};
use memvisor_vmem::{CommitMode, Error, MapSource, Operation, Protection, Reservation, page_size};

/// Each unsafe call of `Reservation` that changes what its memory holds or allows, over
/// `0..len`, with the operation it names. Each runs only when asked, so that a call that goes
/// through is seen before the next one runs.
type Call = fn(&Reservation, usize) -> memvisor_vmem::Result<()>;

fn content_calls() -> [(Operation, Call); 8] {
    [
        (Operation::Decommit, |r, len| {
            // SAFETY: no reference into the range is live and no other thread uses it.
            unsafe { r.decommit_unchecked(0, len) }
        }),
        (Operation::Guard, |r, len| {
            // SAFETY: as above.
            unsafe { r.guard_unchecked(0, len) }
        }),
        (Operation::Protect, |r, len| {
            // SAFETY: as above; nothing accesses the range while it is read-only.
            unsafe { r.protect_unchecked(0, len, Protection::Read) }
        }),
        (Operation::Protect, |r, len| {
            // SAFETY: as above; nothing accesses the range while it is inaccessible.
            unsafe { r.protect_unchecked(0, len, Protection::None) }
        }),
        (Operation::Map, |r, len| {
            // SAFETY: as for decommit.
            unsafe {
                r.map_unchecked(
                    0,
                    len,
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    None,
                )
            }
        }),
        (Operation::Free, |r, len| {
            // SAFETY: as for decommit.
            unsafe { r.free_unchecked(0, len) }
        }),
        (Operation::Discard, |r, len| {
            // SAFETY: as for decommit.
            unsafe { r.discard_unchecked(0, len) }
        }),
        (Operation::Purge, |r, len| {
            // SAFETY: as for decommit.
            unsafe { r.purge_unchecked(0, len) }
        }),
    ]
}

fn assert_refused(r: &Reservation, len: usize) {
    for (operation, call) in content_calls() {
        let result = call(r, len);
        assert_eq!(
            result,
            Err(Error::HeldByVector { operation }),
            "{operation} of a vector's memory"
        );
    }
}

#[test]
fn content_changing_calls_on_a_vectors_reservation_are_refused_and_change_nothing() {
    let page = page_size();
    for mode in [CommitMode::Sparse, CommitMode::Protected] {
        let mut v: Vec<Box<u64>> = Builder::new(4 * page).mode(mode).build().unwrap();
        v.extend((0..1000).map(Box::new));
        let committed = v.committed_bytes();
        assert_refused(v.reservation(), committed);
        // The elements are still there, their pages still counted, and the vector grows,
        // shrinks and drops its elements as before.
        assert!((0..1000).eq(v.iter().map(|b| **b)));
        assert!(v.reservation().is_committed(0, committed).unwrap());
        v.push(Box::new(1000));
        v.truncate(10);
        v.shrink_to_fit().unwrap();
        assert!((0..10).eq(v.iter().map(|b| **b)));

        let mut it = v.into_iter();
        assert_eq!(it.next().as_deref(), Some(&0));
        assert_refused(it.reservation(), page);
        assert!((1..10).eq(it.map(|b| *b)));
    }
}

#[test]
fn content_changing_calls_on_a_concurrent_vectors_reservation_are_refused_and_change_nothing() {
    let page = page_size();
    for mode in [CommitMode::Sparse, CommitMode::Protected] {
        let v: ConcurrentVec<Box<u64>> = Builder::new(4 * page)
            .mode(mode)
            .build_concurrent()
            .unwrap();
        for i in 0..1000 {
            v.push(Box::new(i));
        }
        let committed = v.committed_bytes();
        // The slots and the ready bits after them.
        let reserved = v.reservation().len();
        assert_refused(v.reservation(), page);
        assert_refused(v.reservation(), reserved);
        assert!((0..1000).eq(v.iter().map(|b| **b)));
        assert_eq!(v.count(), 1000);
        assert_eq!(v.committed_bytes(), committed);
        v.push(Box::new(1000));
        assert_eq!(v.get(1000).map(|b| **b), Some(1000));
    }
}

#[test]
fn a_reservation_of_its_own_still_takes_the_unsafe_calls() {
    let page = page_size();
    let r = Reservation::builder()
        .mode(CommitMode::Sparse)
        .reserve(4 * page)
        .unwrap();
    r.commit(0, 4 * page).unwrap();
    // SAFETY: nothing refers to the reservation's memory and no other thread uses it.
    unsafe { r.decommit_unchecked(0, 4 * page) }.unwrap();
    assert!(!r.is_committed(0, page).unwrap());
}
