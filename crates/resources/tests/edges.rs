//! Named edge cases at 0 and at `u64::MAX` / `u32::MAX`.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, Request,
};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn full() -> AddressAllocator<u8> {
    AddressAllocator::new(AddressRange::FULL)
}

#[test]
fn first_match_in_space_from_zero_starts_at_zero() {
    let mut a = full();
    assert_eq!(a.allocate(1, 1, AllocPolicy::FirstMatch), Ok(r(0, 0)));
    assert_eq!(a.allocate(2, 2, AllocPolicy::FirstMatch), Ok(r(2, 3)));
    assert_eq!(a.free_ranges().next(), Some(r(1, 1)));
}

#[test]
fn last_match_in_full_space_ends_at_max() {
    let mut a = full();
    assert_eq!(
        a.allocate(1, 1, AllocPolicy::LastMatch),
        Ok(r(u64::MAX, u64::MAX))
    );
    assert_eq!(
        a.allocate(0x10, 0x10, AllocPolicy::LastMatch),
        Ok(r(u64::MAX - 0x1f, u64::MAX - 0x10))
    );
}

#[test]
fn alignment_two_pow_63_places_at_zero_and_half() {
    let mut a = full();
    assert_eq!(
        a.allocate(1, 1 << 63, AllocPolicy::LastMatch),
        Ok(r(1 << 63, 1 << 63))
    );
    assert_eq!(a.allocate(1, 1 << 63, AllocPolicy::FirstMatch), Ok(r(0, 0)));
    assert_eq!(
        a.allocate(1, 1 << 63, AllocPolicy::FirstMatch),
        Err(Error::OutOfSpace {
            size: 1,
            alignment: 1 << 63
        })
    );
}

#[test]
fn largest_single_allocation_in_full_space_succeeds() {
    let mut a = full();
    assert_eq!(
        a.allocate(u64::MAX, 1, AllocPolicy::LastMatch),
        Ok(r(1, u64::MAX))
    );
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [r(0, 0)]);
    assert_eq!(a.available(), 1);
    assert_eq!(
        a.allocate(2, 1, AllocPolicy::FirstMatch),
        Err(Error::OutOfSpace {
            size: 2,
            alignment: 1
        })
    );
}

#[test]
fn exact_match_single_unit_at_max_succeeds() {
    let mut a = full();
    assert_eq!(
        a.allocate(1, 1, AllocPolicy::ExactMatch(u64::MAX)),
        Ok(r(u64::MAX, u64::MAX))
    );
    assert_eq!(
        a.allocate(1, 1, AllocPolicy::ExactMatch(u64::MAX)),
        Err(Error::Overlap {
            requested: r(u64::MAX, u64::MAX),
            existing: r(u64::MAX, u64::MAX)
        })
    );
    assert_eq!(
        a.release_containing(u64::MAX),
        Ok((r(u64::MAX, u64::MAX), 0))
    );
}

#[test]
fn exact_match_at_zero_succeeds() {
    let mut a = full();
    assert_eq!(
        a.allocate(0x1000, 0x1000, AllocPolicy::ExactMatch(0)),
        Ok(r(0, 0xfff))
    );
    assert_eq!(
        a.allocation_containing(0).map(|x| x.range),
        Some(r(0, 0xfff))
    );
}

#[test]
fn window_at_top_of_space_places_last_unit() {
    let mut a = full();
    let w = r(u64::MAX - 7, u64::MAX);
    let req = Request::new(4, 4, AllocPolicy::FirstMatch)
        .unwrap()
        .within(w);
    assert_eq!(a.allocate_with(&req, 1), Ok(r(u64::MAX - 7, u64::MAX - 4)));
    assert_eq!(a.allocate_with(&req, 2), Ok(r(u64::MAX - 3, u64::MAX)));
    assert_eq!(
        a.allocate_with(&req, 3),
        Err(Error::OutOfSpace {
            size: 4,
            alignment: 4
        })
    );
}

#[test]
fn free_last_range_merges_with_tail_at_max() {
    let mut a = AddressAllocator::<()>::new(r(u64::MAX - 0xff, u64::MAX));
    let x = a.allocate(0x10, 1, AllocPolicy::FirstMatch).unwrap();
    let y = a.allocate(0x10, 1, AllocPolicy::LastMatch).unwrap();
    assert_eq!(y.end(), u64::MAX);
    a.free(&y).unwrap();
    assert_eq!(
        a.free_ranges().collect::<Vec<_>>(),
        [r(x.end() + 1, u64::MAX)]
    );
    a.free(&x).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [a.space()]);
    a.check_invariants().unwrap();
}

#[test]
fn single_unit_space_at_zero_and_max() {
    for unit in [0, u64::MAX] {
        let mut a = AddressAllocator::<()>::new(r(unit, unit));
        assert_eq!(a.allocate(1, 1, AllocPolicy::LastMatch), Ok(r(unit, unit)));
        assert_eq!(
            a.allocate(1, 1, AllocPolicy::FirstMatch),
            Err(Error::OutOfSpace {
                size: 1,
                alignment: 1
            })
        );
        assert_eq!(a.free(&r(unit, unit)), Ok(()));
    }
}

#[test]
fn id_range_touching_zero_and_max() {
    let mut low = IdAllocator::new(0, 0).unwrap();
    assert_eq!(low.allocate_id(), Ok(0));
    assert_eq!(low.free_id(0), Ok(()));
    let mut high = IdAllocator::new(u32::MAX, u32::MAX).unwrap();
    assert_eq!(
        high.allocate_ids(1, 1 << 31),
        Err(Error::OutOfIds {
            count: 1,
            alignment: 1 << 31
        })
    );
    assert_eq!(high.allocate_id(), Ok(u32::MAX));
    assert_eq!(high.free_id(u32::MAX), Ok(()));
    assert_eq!(high.allocate_ids(1, 1), Ok(u32::MAX..=u32::MAX));
    assert_eq!(
        high.free_id(u32::MAX - 1),
        Err(Error::IdOutOfRange {
            id: u64::from(u32::MAX) - 1,
            first: u64::from(u32::MAX),
            last: u64::from(u32::MAX)
        })
    );
}

/// An exact request over a freed unit and the single-unit allocation after it names that
/// allocation, not the run of adjacent allocations it belongs to.
#[test]
fn overlap_error_names_single_unit_neighbour_exactly() {
    let mut a: AddressAllocator<u8> = AddressAllocator::new(r(0x1_0000, 0x1_07ff));
    for _ in 0..3 {
        a.allocate(1, 1, AllocPolicy::FirstMatch).unwrap();
    }
    a.free(&r(0x1_0000, 0x1_0000)).unwrap();
    assert_eq!(
        a.allocate(2, 1, AllocPolicy::ExactMatch(0x1_0000)),
        Err(Error::Overlap {
            requested: r(0x1_0000, 0x1_0001),
            existing: r(0x1_0001, 0x1_0001)
        })
    );
    // The failed request changed nothing.
    assert_eq!(a.allocated().count(), 2);
}
