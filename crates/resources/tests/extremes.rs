//! The documented promises at their extremes, each checked once: ranges and requests that end
//! at `u64::MAX`, sizes of 0, alignments of 0, not a power of two and 2^63, IDs at `u16::MAX`,
//! `u32::MAX` and `u64::MAX`, allocators filled to the last unit then emptied, and every
//! placement policy at the edges of the space. A refused call is compared with a clone taken
//! before it.

use memvisor_resources::{
    AddressAllocator, AddressRange, AllocPolicy, Error, IdAllocator, MAX_ID_RANGE, Request,
};

const TOP: u64 = 1 << 63;

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

fn req(size: u64, alignment: u64, policy: AllocPolicy) -> Request {
    Request::new(size, alignment, policy).unwrap()
}

/// `call` fails with `want` and leaves `a` as it was (equality and its listing).
fn refused_unchanged<T: Clone + PartialEq + std::fmt::Debug>(
    a: &mut AddressAllocator<T>,
    want: Error,
    call: impl FnOnce(&mut AddressAllocator<T>) -> Result<AddressRange, Error>,
) {
    let before = a.clone();
    assert_eq!(call(a), Err(want));
    assert_eq!(*a, before);
    assert_eq!(format!("{a:?}"), format!("{before:?}"));
    a.check_invariants().unwrap();
}

#[test]
fn request_checks_at_the_extremes() {
    use AllocPolicy::{ExactMatch, FirstMatch, LastMatch};
    for policy in [FirstMatch, LastMatch, ExactMatch(0)] {
        assert_eq!(Request::new(0, 1, policy), Err(Error::ZeroSize));
        // The size is checked before the alignment.
        assert_eq!(Request::new(0, 0, policy), Err(Error::ZeroSize));
        for bad in [0, 3, TOP + 1, u64::MAX] {
            assert_eq!(
                Request::new(1, bad, policy),
                Err(Error::InvalidAlignment(bad))
            );
        }
        let top = Request::new(u64::MAX, TOP, policy).unwrap();
        assert_eq!(
            (top.size(), top.alignment(), top.policy()),
            (u64::MAX, TOP, policy)
        );
    }
    assert_eq!(
        Request::new(1, TOP, ExactMatch(1)),
        Err(Error::UnalignedAddress {
            address: 1,
            alignment: TOP
        })
    );
    // The alignment is checked before the end of the exact range.
    assert_eq!(
        Request::new(2, 2, ExactMatch(u64::MAX)),
        Err(Error::UnalignedAddress {
            address: u64::MAX,
            alignment: 2
        })
    );
    assert_eq!(
        Request::new(2, 1, ExactMatch(u64::MAX)),
        Err(Error::Overflow {
            start: u64::MAX,
            size: 2
        })
    );
    assert_eq!(
        Request::new(TOP + 1, TOP, ExactMatch(TOP)),
        Err(Error::Overflow {
            start: TOP,
            size: TOP + 1
        })
    );
    assert!(Request::new(TOP, TOP, ExactMatch(TOP)).is_ok());
    assert!(Request::new(1, 1, ExactMatch(u64::MAX)).is_ok());
    assert!(Request::new(u64::MAX, 1, ExactMatch(1)).is_ok());
}

#[test]
fn ranges_at_the_extremes() {
    assert_eq!(AddressRange::FULL, r(0, u64::MAX));
    assert_eq!(AddressRange::FULL.size(), None);
    assert_eq!(AddressRange::FULL.size_u128(), 1 << 64);
    assert_eq!(r(1, u64::MAX).size(), Some(u64::MAX));
    assert_eq!(r(u64::MAX, u64::MAX).size(), Some(1));
    assert_eq!(
        AddressRange::new(u64::MAX, 0),
        Err(Error::InvalidRange {
            start: u64::MAX,
            end: 0
        })
    );
    assert_eq!(
        AddressRange::from_start_and_size(0, 0),
        Err(Error::ZeroSize)
    );
    assert_eq!(
        AddressRange::from_start_and_size(u64::MAX, 0),
        Err(Error::ZeroSize)
    );
    assert_eq!(
        AddressRange::from_start_and_size(1, u64::MAX),
        Ok(r(1, u64::MAX))
    );
    assert_eq!(
        AddressRange::from_start_and_size(2, u64::MAX),
        Err(Error::Overflow {
            start: 2,
            size: u64::MAX
        })
    );
    let full = AddressRange::FULL;
    assert!(full.contains(0) && full.contains(u64::MAX));
    assert!(full.contains_range(&full) && full.overlaps(&r(u64::MAX, u64::MAX)));
    assert_eq!(
        full.intersection(&r(u64::MAX, u64::MAX)),
        Some(r(u64::MAX, u64::MAX))
    );
    assert_eq!(r(0, 0).intersection(&r(u64::MAX, u64::MAX)), None);
    assert!(!r(0, TOP - 1).overlaps(&r(TOP, u64::MAX)));
    assert_eq!(full.to_string(), "[0x0, 0xffffffffffffffff]");
}

/// Each policy at both ends of the whole space and of a space ending at `u64::MAX`, with the
/// largest sizes and alignments.
#[test]
fn every_policy_at_the_edges_of_the_space() {
    use AllocPolicy::{ExactMatch, FirstMatch, LastMatch};
    let mut a = AddressAllocator::<()>::new(AddressRange::FULL);
    assert_eq!(a.available(), 1 << 64);
    assert_eq!(a.largest_free(), 1 << 64);
    assert_eq!(a.allocate(u64::MAX, 1, FirstMatch), Ok(r(0, u64::MAX - 1)));
    assert_eq!(a.allocate(1, 1, LastMatch), Ok(r(u64::MAX, u64::MAX)));
    assert_eq!((a.used(), a.available(), a.len()), (1 << 64, 0, 2));
    assert_eq!(a.free_ranges().count(), 0);
    refused_unchanged(
        &mut a,
        Error::OutOfSpace {
            size: 1,
            alignment: 1,
        },
        |a| a.allocate(1, 1, FirstMatch),
    );
    refused_unchanged(
        &mut a,
        Error::Overlap {
            requested: r(u64::MAX, u64::MAX),
            existing: r(u64::MAX, u64::MAX),
        },
        |a| a.allocate(1, 1, ExactMatch(u64::MAX)),
    );
    assert_eq!(a.free(&r(u64::MAX, u64::MAX)), Ok(()));
    assert_eq!(a.free(&r(0, u64::MAX - 1)), Ok(()));
    assert!(a.is_empty());
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [AddressRange::FULL]);

    // 2^63 alignment: two places in the whole space, 0 and 2^63.
    assert_eq!(a.allocate(TOP, TOP, LastMatch), Ok(r(TOP, u64::MAX)));
    assert_eq!(a.allocate(1, TOP, LastMatch), Ok(r(0, 0)));
    refused_unchanged(
        &mut a,
        Error::OutOfSpace {
            size: 1,
            alignment: TOP,
        },
        |a| a.allocate(1, TOP, FirstMatch),
    );
    assert_eq!(a.allocate(TOP - 1, 1, FirstMatch), Ok(r(1, TOP - 1)));
    a.check_invariants().unwrap();

    // A space of the top 16 units: every unit by each policy, then none left.
    let base = u64::MAX - 15;
    let mut top = AddressAllocator::<u8>::new(r(base, u64::MAX));
    assert_eq!(
        top.allocate_with(&req(1, 1, LastMatch), 1),
        Ok(r(u64::MAX, u64::MAX))
    );
    assert_eq!(
        top.allocate_with(&req(1, 1, FirstMatch), 2),
        Ok(r(base, base))
    );
    assert_eq!(
        top.allocate_with(&req(2, 2, LastMatch), 3),
        Ok(r(u64::MAX - 3, u64::MAX - 2))
    );
    refused_unchanged(
        &mut top,
        Error::OutsideSpace {
            range: r(0, 0),
            space: r(base, u64::MAX),
        },
        |a| a.allocate_with(&req(1, 1, ExactMatch(0)), 9),
    );
    refused_unchanged(
        &mut top,
        Error::OutOfSpace {
            size: 16,
            alignment: 1,
        },
        |a| a.allocate_with(&req(16, 1, FirstMatch), 9),
    );
    // An alignment above the space's own: only multiples of 2^63 in the space would do.
    refused_unchanged(
        &mut top,
        Error::OutOfSpace {
            size: 1,
            alignment: TOP,
        },
        |a| a.allocate_with(&req(1, TOP, LastMatch), 9),
    );
    // A window ending at u64::MAX, last match: the highest free unit in it.
    let window = r(u64::MAX - 4, u64::MAX);
    assert_eq!(
        top.allocate_with(&req(1, 1, LastMatch).within(window), 4),
        Ok(r(u64::MAX - 1, u64::MAX - 1))
    );
    // A window reaching outside the space is refused, however the rest would place.
    refused_unchanged(
        &mut top,
        Error::OutsideSpace {
            range: r(base - 1, u64::MAX),
            space: r(base, u64::MAX),
        },
        |a| a.allocate_with(&req(1, 1, FirstMatch).within(r(base - 1, u64::MAX)), 9),
    );
    while top.allocate_with(&req(1, 1, FirstMatch), 5).is_ok() {}
    assert_eq!((top.used(), top.available(), top.len()), (16, 0, 15));
    assert_eq!(top.largest_free(), 0);
    // Free everything by address, last to first: one free range again, the tags given back.
    let all: Vec<_> = top.allocated().map(|x| (x.range, *x.tag)).collect();
    for (range, tag) in all.into_iter().rev() {
        assert_eq!(top.free(&range), Ok(tag));
        top.check_invariants().unwrap();
    }
    assert_eq!(top.free_ranges().collect::<Vec<_>>(), [r(base, u64::MAX)]);
    assert_eq!((top.used(), top.available()), (0, 16));
}

#[test]
fn free_relocate_and_resize_at_the_edges() {
    use AllocPolicy::{ExactMatch, FirstMatch, LastMatch};
    let mut a = AddressAllocator::<u8>::new(AddressRange::FULL);
    a.reserve_with(AddressRange::FULL, 7).unwrap();
    assert_eq!((a.used(), a.available()), (1 << 64, 0));
    assert_eq!(
        a.allocation_containing(u64::MAX).map(|x| (x.range, *x.tag)),
        Some((AddressRange::FULL, 7))
    );
    // Not exactly the allocation: refused, naming it.
    let before = a.clone();
    assert_eq!(
        a.free(&r(0, u64::MAX - 1)),
        Err(Error::NotExactAllocation {
            requested: r(0, u64::MAX - 1),
            existing: AddressRange::FULL
        })
    );
    assert_eq!(a, before);
    assert_eq!(a.release_containing(u64::MAX), Ok((AddressRange::FULL, 7)));
    assert_eq!(
        a.release_containing(u64::MAX),
        Err(Error::AddressNotAllocated(u64::MAX))
    );
    assert_eq!(
        a.free(&AddressRange::FULL),
        Err(Error::NotAllocated(AddressRange::FULL))
    );

    // Relocating onto itself, and to the very top.
    let low = a
        .allocate_with(&req(0x1000, 0x1000, FirstMatch), 1)
        .unwrap();
    assert_eq!(
        a.relocate(&low, &req(0x1000, 0x1000, ExactMatch(0))),
        Ok(low)
    );
    let high = a.relocate(&low, &req(0x1000, 0x1000, LastMatch)).unwrap();
    assert_eq!(high, r(u64::MAX - 0xfff, u64::MAX));
    assert_eq!(a.allocation_containing(u64::MAX).map(|x| *x.tag), Some(1));
    // A relocation that cannot be placed leaves the range where it was.
    let pin = a.allocate_with(&req(1, 1, ExactMatch(TOP)), 2).unwrap();
    let before = a.clone();
    assert_eq!(
        a.relocate(&high, &req(u64::MAX, 1, FirstMatch)),
        Err(Error::OutOfSpace {
            size: u64::MAX,
            alignment: 1
        })
    );
    assert_eq!(a, before);
    assert_eq!(a.free(&pin), Ok(2));
    // The moved range may overlap its old place: the whole space less one unit, at the top.
    assert_eq!(
        a.relocate(&high, &req(u64::MAX, 1, LastMatch)),
        Ok(r(1, u64::MAX))
    );

    // Shrinking the space to the allocation exactly, then one unit less at either end.
    assert_eq!(a.resize(r(1, u64::MAX)), Ok(()));
    assert_eq!((a.used(), a.available()), (u128::from(u64::MAX), 0));
    let before = a.clone();
    assert_eq!(
        a.resize(r(2, u64::MAX)),
        Err(Error::OutsideSpace {
            range: r(1, u64::MAX),
            space: r(2, u64::MAX)
        })
    );
    assert_eq!(
        a.resize(r(1, u64::MAX - 1)),
        Err(Error::OutsideSpace {
            range: r(1, u64::MAX),
            space: r(1, u64::MAX - 1)
        })
    );
    assert_eq!(a, before);
    assert_eq!(a.resize(AddressRange::FULL), Ok(()));
    assert_eq!(a.allocate_with(&req(1, 1, FirstMatch), 2), Ok(r(0, 0)));
    a.check_invariants().unwrap();
}

/// The ID ranges at the top of each width: every ID handed out, refusals named as documented,
/// everything freed, then handed out again smallest first.
#[test]
fn ids_at_the_top_of_each_width() {
    let mut one = IdAllocator::new(u32::MAX, u32::MAX).unwrap();
    assert_eq!(one.capacity(), 1);
    assert_eq!(
        one.allocate_ids(1, TOP),
        Err(Error::OutOfIds {
            count: 1,
            alignment: TOP
        })
    );
    assert_eq!(
        one.allocate_ids_at(u32::MAX, 2),
        Err(Error::IdOutOfRange {
            id: 1 << 32,
            first: u32::MAX.into(),
            last: u32::MAX.into()
        })
    );
    assert_eq!(one.allocate_id(), Ok(u32::MAX));
    assert_eq!(
        one.allocate_id(),
        Err(Error::OutOfIds {
            count: 1,
            alignment: 1
        })
    );
    assert_eq!(
        one.allocate_many(1),
        Err(Error::NotEnoughIds {
            requested: 1,
            available: 0
        })
    );
    assert_eq!(
        one.allocate_id_at(u32::MAX),
        Err(Error::IdAlreadyAllocated(u32::MAX.into()))
    );
    assert_eq!(
        one.free_id(0),
        Err(Error::IdOutOfRange {
            id: 0,
            first: u32::MAX.into(),
            last: u32::MAX.into()
        })
    );
    assert_eq!(one.free_id(u32::MAX), Ok(()));
    assert_eq!(
        one.free_id(u32::MAX),
        Err(Error::IdAlreadyFree(u32::MAX.into()))
    );
    assert_eq!(one.allocate_ids(1, 1), Ok(u32::MAX..=u32::MAX));

    let mut top = IdAllocator::<u64>::with_range(u64::MAX - 7, u64::MAX).unwrap();
    assert_eq!(
        top.allocate_ids_at(u64::MAX, 2),
        Err(Error::Overflow {
            start: u64::MAX,
            size: 2
        })
    );
    assert_eq!(
        top.allocate_ids_at(u64::MAX - 1, u32::MAX),
        Err(Error::Overflow {
            start: u64::MAX - 1,
            size: u32::MAX.into()
        })
    );
    assert_eq!(
        top.allocate_ids(1, TOP),
        Err(Error::OutOfIds {
            count: 1,
            alignment: TOP
        })
    );
    assert_eq!(top.allocate_ids(4, 4), Ok(u64::MAX - 7..=u64::MAX - 4));
    assert_eq!(
        top.allocate_ids_at(u64::MAX - 1, 2),
        Ok(u64::MAX - 1..=u64::MAX)
    );
    let before = top.clone();
    assert_eq!(
        top.allocate_many(3),
        Err(Error::NotEnoughIds {
            requested: 3,
            available: 2
        })
    );
    assert_eq!(top, before);
    assert_eq!(top.allocate_many(2), Ok(vec![u64::MAX - 3, u64::MAX - 2]));
    assert_eq!(top.available(), 0);
}

#[test]
fn ids_full_then_empty_then_full_again() {
    // Every u16: the whole type.
    let mut ports = IdAllocator::<u16>::with_range(0, u16::MAX).unwrap();
    assert_eq!(ports.capacity(), 1 << 16);
    let all = ports.allocate_many(1 << 16).unwrap();
    assert_eq!(all.len(), 1 << 16);
    assert!(all.iter().copied().eq(0..=u16::MAX));
    assert_eq!((ports.used(), ports.available()), (1 << 16, 0));
    assert_eq!(ports.never_allocated_runs().count(), 0);
    let before = ports.clone();
    assert_eq!(
        ports.allocate_id(),
        Err(Error::OutOfIds {
            count: 1,
            alignment: 1
        })
    );
    assert_eq!(
        ports.allocate_ids(1, 1 << 15),
        Err(Error::OutOfIds {
            count: 1,
            alignment: 1 << 15
        })
    );
    assert_eq!(
        ports.allocate_many(1),
        Err(Error::NotEnoughIds {
            requested: 1,
            available: 0
        })
    );
    assert_eq!(ports, before);
    assert_eq!(ports.free_ids(0..=u16::MAX), Ok(()));
    assert_eq!((ports.used(), ports.available()), (0, 1 << 16));
    assert_eq!(ports.iter().count(), 0);
    assert_eq!(
        ports.free_id(u16::MAX),
        Err(Error::IdAlreadyFree(u16::MAX.into()))
    );
    assert_eq!(ports.free_ids(7..=9), Err(Error::IdAlreadyFree(7)));
    // Freed, not never allocated: the list of never-allocated runs stays empty.
    assert_eq!(ports.never_allocated_runs().count(), 0);
    assert_eq!(ports.allocate_ids(1 << 15, 1 << 15), Ok(0..=(1 << 15) - 1));
    assert_eq!(ports.allocate_ids(1 << 15, 1 << 15), Ok(1 << 15..=u16::MAX));

    // The largest u64 window, at the top of the type, taken one ID at a time from its end.
    let first = u64::MAX - (MAX_ID_RANGE - 1);
    let mut wide = IdAllocator::<u64>::with_range(first, u64::MAX).unwrap();
    assert_eq!(wide.capacity(), MAX_ID_RANGE);
    assert_eq!(
        IdAllocator::<u64>::with_range(first - 1, u64::MAX).err(),
        Some(Error::IdRangeTooLarge {
            first: first - 1,
            last: u64::MAX,
            max: MAX_ID_RANGE
        })
    );
    for id in (u64::MAX - 999..=u64::MAX).rev() {
        assert_eq!(wide.allocate_id_at(id), Ok(id));
    }
    assert_eq!(
        wide.allocated_runs().collect::<Vec<_>>(),
        [u64::MAX - 999..=u64::MAX]
    );
    assert_eq!(wide.free_ids(u64::MAX - 999..=u64::MAX), Ok(()));
    assert_eq!(wide.used(), 0);
    assert_eq!(wide.free_id(u64::MAX), Err(Error::IdAlreadyFree(u64::MAX)));
    assert_eq!(wide.free_id(first), Err(Error::IdNeverAllocated(first)));
    assert_eq!(wide.allocate_id(), Ok(first));
}

/// Crafted ID snapshots at the extremes: each refused with the check it fails, the rest loaded
/// as the state the same calls build.
#[test]
fn crafted_id_snapshots_at_the_extremes() {
    use memvisor_resources::{IdLoadLimits, IdSnapshot};
    fn load(text: &str) -> Result<IdAllocator<u32>, Error> {
        let snapshot: IdSnapshot<u32> = serde_json::from_str(text).unwrap();
        IdAllocator::from_snapshot(&snapshot, &IdLoadLimits::default())
    }
    fn load64(text: &str) -> Result<IdAllocator<u64>, Error> {
        let snapshot: IdSnapshot<u64> = serde_json::from_str(text).unwrap();
        IdAllocator::from_snapshot(&snapshot, &IdLoadLimits::default())
    }
    let refused = [
        (
            r#"{"first":0,"last":10,"used":18446744073709551615,"allocated":[[0,0]],"never_allocated":[]}"#,
            Error::Inconsistent("used count does not match the allocated runs"),
        ),
        (
            r#"{"first":0,"last":10,"used":0,"allocated":[],"never_allocated":[[11,12]]}"#,
            Error::Inconsistent("a run lies outside the ID range"),
        ),
        (
            r#"{"first":0,"last":10,"used":0,"allocated":[],"never_allocated":[[6,5]]}"#,
            Error::Inconsistent("a run starts after it ends"),
        ),
        (
            r#"{"first":0,"last":4294967295,"used":0,"allocated":[],"never_allocated":[[5,9],[0,1]]}"#,
            Error::Inconsistent("runs are not sorted, overlap or touch"),
        ),
        // Every ID of the u32 range in one short run: refused before any bitmap is made.
        (
            r#"{"first":0,"last":4294967295,"used":4294967296,"allocated":[[0,4294967295]],"never_allocated":[]}"#,
            Error::SnapshotTooLarge {
                needed: 545_390_592,
                limit: 1 << 20,
            },
        ),
    ];
    for (text, want) in refused {
        assert_eq!(load(text).map(|a| a.used()), Err(want), "{text}");
    }
    // The top ID of each width, allocated, freed or never allocated: loads as the calls make it.
    let loaded = load64(
        r#"{"first":18446744073709551600,"last":18446744073709551615,"used":2,"allocated":[[18446744073709551600,18446744073709551600],[18446744073709551615,18446744073709551615]],"never_allocated":[[18446744073709551602,18446744073709551613]]}"#,
    )
    .unwrap();
    let mut built = IdAllocator::<u64>::with_range(u64::MAX - 15, u64::MAX).unwrap();
    built.allocate_ids_at(u64::MAX - 15, 2).unwrap();
    built.allocate_ids_at(u64::MAX - 1, 2).unwrap();
    built.free_id(u64::MAX - 14).unwrap();
    built.free_id(u64::MAX - 1).unwrap();
    assert_eq!(loaded, built);
    assert_eq!(loaded.snapshot(), built.snapshot());
    let mut loaded = loaded;
    assert_eq!(
        loaded.free_id(u64::MAX - 1),
        Err(Error::IdAlreadyFree(u64::MAX - 1))
    );
    assert_eq!(
        loaded.free_id(u64::MAX - 2),
        Err(Error::IdNeverAllocated(u64::MAX - 2))
    );
    assert_eq!(loaded.allocate_id(), Ok(u64::MAX - 14));
    // A u16 snapshot with an ID past u16::MAX is refused by the reader, not wrapped.
    let snapshot: Result<IdSnapshot<u16>, _> = serde_json::from_str(
        r#"{"first":0,"last":65535,"used":1,"allocated":[[65536,65536]],"never_allocated":[]}"#,
    );
    assert!(snapshot.is_err());
}

/// `AllocatorSet` at the extremes: the whole 64-bit space split in spaces given out of order,
/// alignments of 0, 3 and 2^63, exact placements and reservations reaching `u64::MAX`,
/// filled and emptied.
#[test]
fn set_at_the_extremes() {
    use AllocPolicy::{ExactMatch, FirstMatch, LastMatch};
    use memvisor_resources::AllocatorSet;
    assert_eq!(AllocatorSet::<u8>::new(&[]).err(), Some(Error::EmptySet));
    assert_eq!(
        AllocatorSet::<u8>::new(&[AddressRange::FULL, r(u64::MAX, u64::MAX)]).err(),
        Some(Error::Overlap {
            requested: r(u64::MAX, u64::MAX),
            existing: AddressRange::FULL
        })
    );
    let high = r(TOP, u64::MAX);
    let low = r(0, TOP - 1);
    let mut set = AllocatorSet::<u8>::new(&[high, low]).unwrap();
    for (min, preferred) in [(0, 1), (3, 1), (1, 0), (1, TOP + 1)] {
        let before = format!("{set:?}");
        assert_eq!(
            set.set_alignment(min, preferred),
            Err(Error::InvalidAlignment(if min.is_power_of_two() {
                preferred
            } else {
                min
            }))
        );
        assert_eq!(format!("{set:?}"), before);
    }
    // Tried in the order given: the high space first.
    assert_eq!(
        set.allocate_with(&req(1, 1, FirstMatch), 1),
        Ok(r(TOP, TOP))
    );
    assert_eq!(
        set.allocate_with(&req(1, 1, LastMatch), 2),
        Ok(r(u64::MAX, u64::MAX))
    );
    // A request as large as a space fits only in the low one, which is empty.
    assert_eq!(set.allocate_with(&req(TOP, 1, FirstMatch), 3), Ok(low));
    assert_eq!(set.used(), TOP as u128 + 2);
    let before = format!("{set:?}");
    assert_eq!(
        set.allocate_with(&req(TOP - 1, 1, FirstMatch), 4),
        Err(Error::OutOfSpace {
            size: TOP - 1,
            alignment: 1
        })
    );
    // An exact range across the two spaces lies in no single one.
    assert_eq!(
        set.allocate_with(&req(2, 1, ExactMatch(TOP - 1)), 4),
        Err(Error::OutsideSpace {
            range: r(TOP - 1, TOP),
            space: high
        })
    );
    assert_eq!(format!("{set:?}"), before);
    assert_eq!(set.free(&low), Ok(3));
    // A minimum alignment of 2^63: only 0 and 2^63 are places, and 2^63 is taken.
    set.set_alignment(TOP, TOP).unwrap();
    assert_eq!(
        set.allocate_with(&req(1, 1, ExactMatch(1)), 5),
        Err(Error::UnalignedAddress {
            address: 1,
            alignment: TOP
        })
    );
    assert_eq!(set.allocate_with(&req(1, 1, LastMatch), 5), Ok(r(0, 0)));
    assert_eq!(
        set.allocate_with(&req(1, 1, FirstMatch), 6),
        Err(Error::OutOfSpace {
            size: 1,
            alignment: TOP
        })
    );
    set.set_alignment(1, 1).unwrap();
    // A reservation of the whole space where it is free: both spaces, all or nothing.
    assert_eq!(set.free(&r(0, 0)), Ok(5));
    let before = format!("{set:?}");
    assert_eq!(
        set.reserve_with(AddressRange::FULL, 7),
        Err(Error::Overlap {
            requested: AddressRange::FULL,
            existing: r(TOP, TOP)
        })
    );
    assert_eq!(format!("{set:?}"), before);
    assert_eq!(set.free(&r(TOP, TOP)), Ok(1));
    assert_eq!(set.free(&r(u64::MAX, u64::MAX)), Ok(2));
    assert!(set.is_empty());
    assert_eq!(set.reserve_with(AddressRange::FULL, 7), Ok(()));
    assert_eq!(set.used(), 1 << 64);
    assert_eq!(set.len(), 2);
    assert_eq!(
        set.allocation_containing(TOP - 1)
            .map(|a| (a.range, *a.tag)),
        Some((low, 7))
    );
    assert_eq!(set.free(&AddressRange::FULL), Ok(7));
    assert_eq!((set.used(), set.len()), (0, 0));
    set.check_invariants().unwrap();
}
