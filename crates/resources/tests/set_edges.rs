//! `AllocatorSet` edges the model test does not reach: exact addresses, keyed reservations,
//! and the totals and listings over several spaces. A refused call leaves the set as it was.

use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Request};

fn r(start: u64, end: u64) -> AddressRange {
    AddressRange::new(start, end).unwrap()
}

/// Two spaces, not in address order, with a hole between them.
fn set() -> AllocatorSet<&'static str> {
    AllocatorSet::new(&[r(0x2000, 0x2fff), r(0x0, 0x7ff)]).unwrap()
}

fn exact(address: u64, size: u64) -> Request {
    Request::new(size, 1, AllocPolicy::ExactMatch(address)).unwrap()
}

#[test]
fn allocate_exact_in_second_space_lands_there() {
    let mut s = set();
    let got = s.allocate_with(&exact(0x100, 0x80), "a").unwrap();
    assert_eq!(got, r(0x100, 0x17f));
    let found = s.allocation_containing(0x17f).unwrap();
    assert_eq!((found.range, *found.tag), (got, "a"));
    assert!(s.pools()[0].is_empty());
    assert_eq!(s.pools()[1].len(), 1);
    s.check_invariants().unwrap();
}

#[test]
fn allocate_exact_below_set_alignment_errors_and_leaves_set() {
    let mut s = set().with_alignment(0x100, 0x100).unwrap();
    let before = s.clone();
    let err = s.allocate_with(&exact(0x2010, 0x10), "a").unwrap_err();
    assert_eq!(
        err,
        Error::UnalignedAddress {
            address: 0x2010,
            alignment: 0x100
        }
    );
    assert_eq!(s, before);
    // At an aligned address the same request succeeds.
    assert_eq!(
        s.allocate_with(&exact(0x2100, 0x10), "a").unwrap(),
        r(0x2100, 0x210f)
    );
}

#[test]
fn allocate_exact_outside_every_space_errors_and_leaves_set() {
    let mut s = set();
    let before = s.clone();
    // In the hole between the spaces.
    assert_eq!(
        s.allocate_with(&exact(0x1000, 0x100), "a").unwrap_err(),
        Error::OutsideSpace {
            range: r(0x1000, 0x10ff),
            space: r(0x2000, 0x2fff)
        }
    );
    // Straddling the end of a space: no one space holds it.
    assert_eq!(
        s.allocate_with(&exact(0x2f80, 0x100), "a").unwrap_err(),
        Error::OutsideSpace {
            range: r(0x2f80, 0x307f),
            space: r(0x2000, 0x2fff)
        }
    );
    assert_eq!(s, before);
}

#[test]
fn allocate_exact_outside_its_window_errors_and_leaves_set() {
    let mut s = set();
    let before = s.clone();
    let request = exact(0x2800, 0x100).within(r(0x2000, 0x27ff));
    assert!(s.allocate_with(&request, "a").is_err());
    assert_eq!(s, before);
    // Inside the window it is placed exactly.
    let request = exact(0x2400, 0x100).within(r(0x2000, 0x27ff));
    assert_eq!(s.allocate_with(&request, "a").unwrap(), r(0x2400, 0x24ff));
}

#[test]
fn allocate_exact_on_taken_range_errors_and_leaves_set() {
    let mut s = set();
    s.reserve_with(r(0x2000, 0x20ff), "taken").unwrap();
    let before = s.clone();
    assert!(s.allocate_with(&exact(0x2080, 0x100), "a").is_err());
    assert_eq!(s, before);
}

#[test]
fn reserve_keyed_with_key_in_use_errors_and_leaves_set() {
    let mut s = set();
    s.reserve_keyed(7, r(0x2000, 0x20ff), "first").unwrap();
    assert_eq!(s.get(7), Some(r(0x2000, 0x20ff)));
    let before = s.clone();
    assert_eq!(
        s.reserve_keyed(7, r(0x0, 0xff), "second").unwrap_err(),
        Error::KeyInUse(7)
    );
    assert_eq!(s, before);
    // A refused reservation does not take the key either.
    assert!(s.reserve_keyed(8, r(0x2080, 0x217f), "overlap").is_err());
    assert_eq!(s.get(8), None);
    assert_eq!(s, before);

    assert_eq!(s.release(7).unwrap(), (r(0x2000, 0x20ff), "first"));
    assert_eq!(s.get(7), None);
    assert!(s.is_empty());
    // The key is free again.
    s.reserve_keyed(7, r(0x0, 0xff), "again").unwrap();
    assert_eq!(s.get(7), Some(r(0x0, 0xff)));
}

#[test]
fn used_and_allocated_cover_every_space() {
    let mut s = set();
    assert!(s.is_empty());
    assert_eq!(s.used(), 0);
    s.reserve_with(r(0x2000, 0x203f), "high").unwrap();
    s.reserve_with(r(0x10, 0x1f), "low").unwrap();
    assert!(!s.is_empty());
    assert_eq!(s.len(), 2);
    assert_eq!(s.used(), 0x40 + 0x10);
    // Pools are listed in the order the set was given its spaces.
    let listed: Vec<_> = s.allocated().map(|a| (a.range, *a.tag)).collect();
    assert_eq!(
        listed,
        [(r(0x2000, 0x203f), "high"), (r(0x10, 0x1f), "low")]
    );
    s.free(&r(0x2000, 0x203f)).unwrap();
    assert_eq!(s.used(), 0x10);
    assert_eq!(s.allocated().count(), 1);
}

/// A keyed reservation freed by a range that differs from it only outside every space: the key
/// goes with the allocation, and a later allocation at the same place keeps its own key.
#[test]
fn free_by_wider_range_drops_the_key_of_what_it_frees() {
    let mut s = AllocatorSet::<&str>::new(&[r(0x1000, 0xffff)]).unwrap();
    s.reserve_keyed(7, r(0x1000, 0x1fff), "dev7").unwrap();
    assert_eq!(s.free(&r(0x0, 0x1fff)), Ok("dev7"));
    assert_eq!(s.get(7), None);
    s.reserve_keyed(8, r(0x1000, 0x1fff), "dev8").unwrap();
    let before = s.clone();
    assert_eq!(s.release(7), Err(Error::UnknownKey(7)));
    assert_eq!(s, before);
    assert_eq!(s.get(8), Some(r(0x1000, 0x1fff)));
    assert_eq!(s.release(8), Ok((r(0x1000, 0x1fff), "dev8")));
    assert!(s.is_empty());
    s.check_invariants().unwrap();
}

/// A keyed reservation that starts outside every space, freed by its part inside: its key goes.
#[test]
fn free_of_the_inside_part_drops_the_key_of_a_reservation_sticking_out() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x1000, 0x1fff)]).unwrap();
    s.reserve_keyed(1, r(0x0, 0x1fff), 10).unwrap();
    assert_eq!(s.free(&r(0x1000, 0x1fff)), Ok(10));
    assert_eq!((s.get(1), s.len()), (None, 0));
    s.reserve_keyed(1, r(0x1000, 0x17ff), 11).unwrap();
    assert_eq!(s.release(1), Ok((r(0x1000, 0x17ff), 11)));
}

/// A reservation spanning two spaces is freed whole or not at all: one of its parts alone is
/// refused, naming the whole reservation, and its key keeps working.
#[test]
fn free_of_one_part_of_a_spanning_reservation_is_refused() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x1000, 0x1fff), r(0x2000, 0x2fff)]).unwrap();
    s.reserve_keyed(1, r(0x1000, 0x2fff), 10).unwrap();
    let before = s.clone();
    for part in [r(0x1000, 0x1fff), r(0x2000, 0x2fff)] {
        assert_eq!(
            s.free(&part),
            Err(Error::NotExactAllocation {
                requested: part,
                existing: r(0x1000, 0x2fff),
            })
        );
        assert_eq!(s, before);
    }
    assert_eq!(s.release(1), Ok((r(0x1000, 0x2fff), 10)));
    assert!(s.is_empty());
    // Unkeyed, the same holds.
    s.reserve_with(r(0x1800, 0x27ff), 3).unwrap();
    let before = s.clone();
    assert_eq!(
        s.free(&r(0x2000, 0x27ff)),
        Err(Error::NotExactAllocation {
            requested: r(0x2000, 0x27ff),
            existing: r(0x1800, 0x27ff),
        })
    );
    assert_eq!(s, before);
    assert_eq!(s.free(&r(0x1800, 0x27ff)), Ok(3));
    s.check_invariants().unwrap();
}

/// A spanning reservation that sticks out of every space is freed by the range it was given
/// or by the hull of its parts, and its key goes either way.
#[test]
fn spanning_reservation_sticking_out_is_freed_by_its_parts() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x1000, 0x1fff), r(0x3000, 0x3fff)]).unwrap();
    s.reserve_keyed(1, r(0x0, 0x37ff), 10).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.free(&r(0x1000, 0x37ff)), Ok(10));
    assert_eq!((s.get(1), s.len()), (None, 0));
    s.reserve_keyed(2, r(0x1800, 0x3fff), 20).unwrap();
    s.check_invariants().unwrap();
    assert_eq!(s.release(2), Ok((r(0x1800, 0x3fff), 20)));
    assert!(s.is_empty());
    s.check_invariants().unwrap();
}

/// Two allocations made apart, in adjacent spaces, are not one allocation: freeing both with
/// one range is refused, and each is freed on its own.
#[test]
fn free_of_two_separate_allocations_as_one_is_refused() {
    let mut s = AllocatorSet::<&str>::new(&[r(0x1000, 0x1fff), r(0x2000, 0x2fff)]).unwrap();
    s.reserve_with(r(0x1000, 0x1fff), "a").unwrap();
    s.reserve_keyed(2, r(0x2000, 0x2fff), "b").unwrap();
    let before = s.clone();
    assert_eq!(
        s.free(&r(0x1000, 0x2fff)),
        Err(Error::NotExactAllocation {
            requested: r(0x1000, 0x2fff),
            existing: r(0x1000, 0x1fff),
        })
    );
    assert_eq!(s, before);
    assert_eq!(s.free(&r(0x1000, 0x1fff)), Ok("a"));
    assert_eq!(s.release(2), Ok((r(0x2000, 0x2fff), "b")));
}

/// An overlap names the lowest allocation overlapped, whatever the order of the spaces.
#[test]
fn reserve_overlap_names_the_lowest_allocation() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x3000, 0x3fff), r(0x1000, 0x1fff)]).unwrap();
    s.reserve_with(r(0x3000, 0x30ff), 1).unwrap();
    s.reserve_with(r(0x1f00, 0x1fff), 2).unwrap();
    let before = s.clone();
    assert_eq!(
        s.reserve_with(r(0x1000, 0x3fff), 3),
        Err(Error::Overlap {
            requested: r(0x1000, 0x3fff),
            existing: r(0x1f00, 0x1fff),
        })
    );
    assert_eq!(s, before);
}

/// An exact placement's window is clipped to the space that holds the range, as a first-fit
/// window is.
#[test]
fn allocate_exact_window_is_clipped_to_its_space() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x1000, 0x1fff), r(0x3000, 0x3fff)]).unwrap();
    let got = s
        .allocate_with(&exact(0x3000, 0x100).within(r(0x0, 0xffff)), 1)
        .unwrap();
    assert_eq!(got, r(0x3000, 0x30ff));
    let before = s.clone();
    let err = s
        .allocate_with(&exact(0x3100, 0x100).within(r(0x0, 0x1fff)), 2)
        .unwrap_err();
    assert_eq!(
        err,
        Error::OutsideSpace {
            range: r(0x3100, 0x31ff),
            space: r(0x0, 0x1fff),
        }
    );
    assert_eq!(s, before);
}

/// An exact range outside the request's window is refused naming the window as given, also
/// when the window reaches past the space that holds the range.
#[test]
fn allocate_exact_outside_window_names_the_window() {
    let mut s = set();
    let before = s.clone();
    let window = r(0x100, 0x1_0000_0000);
    let err = s
        .allocate_with(&exact(0x0, 0x10).within(window), "a")
        .unwrap_err();
    assert_eq!(
        err,
        Error::OutsideSpace {
            range: r(0x0, 0xf),
            space: window
        }
    );
    assert_eq!(s, before);
    // Inside both, the window does not get in the way.
    let got = s
        .allocate_with(&exact(0x100, 0x10).within(window), "a")
        .unwrap();
    assert_eq!(got, r(0x100, 0x10f));
}

/// A space that overlaps several earlier ones is refused naming the first of them in the order
/// given, not the lowest.
#[test]
fn new_overlap_names_the_first_earlier_space_it_overlaps() {
    let (a, b, wide) = (r(0x10, 0x1f), r(0x30, 0x3f), r(0x0, 0x100));
    assert_eq!(
        AllocatorSet::<()>::new(&[b, a, r(0x200, 0x2ff), wide]),
        Err(Error::Overlap {
            requested: wide,
            existing: b,
        })
    );
    assert_eq!(
        AllocatorSet::<()>::new(&[a, b, wide, r(0x20, 0x2f)]),
        Err(Error::Overlap {
            requested: wide,
            existing: a,
        })
    );
    // Touching is not overlapping.
    assert!(AllocatorSet::<()>::new(&[r(0x20, 0x2f), a, b, r(0x40, u64::MAX)]).is_ok());
    assert_eq!(
        AllocatorSet::<()>::new(&[r(0x40, u64::MAX), a, r(5, 5), r(u64::MAX, u64::MAX)]),
        Err(Error::Overlap {
            requested: r(u64::MAX, u64::MAX),
            existing: r(0x40, u64::MAX),
        })
    );
}

/// Checking that the spaces are disjoint takes O(s log s), not a comparison of every pair: a
/// set of 200,000 spaces (in falling order, each checked against all the others before it)
/// is made at once.
#[test]
fn new_with_many_spaces_checks_them_in_n_log_n() {
    let n: u64 = if cfg!(miri) { 500 } else { 200_000 };
    let spaces: Vec<AddressRange> = (0..n).rev().map(|i| r(i * 0x20, i * 0x20 + 0xf)).collect();
    let s = AllocatorSet::<()>::new(&spaces).unwrap();
    assert_eq!(s.pools().len(), spaces.len());
    assert_eq!(s.pools()[0].space(), spaces[0]);
    // One overlap at the very end is still found, naming the space it overlaps.
    let mut bad = spaces.clone();
    bad.push(r(0x25, 0x25));
    assert_eq!(
        AllocatorSet::<()>::new(&bad),
        Err(Error::Overlap {
            requested: r(0x25, 0x25),
            existing: r(0x20, 0x2f),
        })
    );
}

/// Freeing a range that overlaps no allocation names the range given, not its part inside one
/// space, whether it sticks out of the spaces or spans several.
#[test]
fn free_of_nothing_allocated_names_the_range_given() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x2000, 0x2fff), r(0x1000, 0x1fff)]).unwrap();
    s.reserve_with(r(0x1000, 0x10ff), 1).unwrap();
    let before = s.clone();
    for range in [
        r(0x1100, 0x1fff_ffff),
        r(0x1800, 0x27ff),
        r(0x2800, u64::MAX),
        r(0x0, 0xfff),
        r(0x1100, 0x11ff),
    ] {
        assert_eq!(s.free(&range), Err(Error::NotAllocated(range)));
        assert_eq!(s, before);
    }
}

/// A range that overlaps an allocation without being exactly one is refused with the range
/// given and the lowest allocation it overlaps, whatever the order of the spaces and whatever
/// part of the range lies in free space.
#[test]
fn free_of_part_allocation_names_the_range_given_and_lowest_allocation() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x2000, 0x2fff), r(0x1000, 0x1fff)]).unwrap();
    s.reserve_with(r(0x1000, 0x1fff), 1).unwrap();
    s.reserve_with(r(0x2800, 0x28ff), 2).unwrap();
    let before = s.clone();
    let cases = [
        // The low space's part is exactly an allocation, the high one's is free.
        (r(0x1000, 0x27ff), r(0x1000, 0x1fff)),
        // Both parts overlap allocations without being them: the lower one is named.
        (r(0x1800, 0x2fff), r(0x1000, 0x1fff)),
        // Sticks out of every space at the top.
        (r(0x2800, u64::MAX), r(0x2800, 0x28ff)),
        (r(0x2000, 0x28ff), r(0x2800, 0x28ff)),
    ];
    for (range, existing) in cases {
        assert_eq!(
            s.free(&range),
            Err(Error::NotExactAllocation {
                requested: range,
                existing,
            }),
            "{range}"
        );
        assert_eq!(s, before);
    }
    s.check_invariants().unwrap();
}

/// A range that cuts into a reservation spanning spaces is refused naming the whole
/// reservation (the hull of its parts), even when the cut part is not the lowest part.
#[test]
fn free_cutting_a_spanning_reservation_names_its_hull() {
    let mut s = AllocatorSet::<u32>::new(&[r(0x2000, 0x2fff), r(0x1000, 0x1fff)]).unwrap();
    s.reserve_with(r(0x1800, 0x27ff), 1).unwrap();
    let before = s.clone();
    for range in [r(0x1800, 0x23ff), r(0x2000, 0x2fff), r(0x1000, 0x27ff)] {
        assert_eq!(
            s.free(&range),
            Err(Error::NotExactAllocation {
                requested: range,
                existing: r(0x1800, 0x27ff),
            }),
            "{range}"
        );
        assert_eq!(s, before);
    }
    assert_eq!(s.free(&r(0x1800, 0x27ff)), Ok(1));
    s.check_invariants().unwrap();
}
