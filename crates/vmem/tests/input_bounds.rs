//! Work that the lengths a caller passes can make a reservation do: each call costs what its
//! documentation says, however long the range.

use memvisor_vmem::{Reservation, page_size};

/// `resident_pages` over a 1 TiB reservation with a few committed pages asks the system only
/// about the committed runs: it reads the commit bitmap's words (2^22 for 2^28 pages) and
/// queries three pages. Asking about every page of the range (2^28 of them, in `mincore`
/// calls of 4,096 pages, each page then tested in the bitmap) took 0.44 s in a release build
/// and many seconds in a debug one.
#[test]
#[cfg_attr(miri, ignore = "a 1 TiB reservation")]
fn resident_pages_of_a_huge_range_queries_only_committed_runs() {
    let page = page_size();
    // A 32-bit process has 4 GiB of address space at most: it reserves 1 GiB.
    let size = usize::try_from(1u64 << 40).unwrap_or(1 << 30);
    let mut r = Reservation::new(size).unwrap();
    for at in [0, size / 2 / page, size / page - 1] {
        r.commit(at * page, page).unwrap();
        r.prefault(at * page, page).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(r.resident_pages(0, r.len()).unwrap(), 3);
    }
    assert_eq!(r.resident_pages(page, size / 2 - page).unwrap(), 0);
}
