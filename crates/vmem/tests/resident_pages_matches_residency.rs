//! `Reservation::resident_pages` asks the system only about the committed runs of a range: it
//! must still give, for every range, the count of the pages `residency` says are resident, and
//! the same error for every range `residency` refuses.

use memvisor_vmem::{Error, Protection, Reservation, page_size};

/// The count `residency` gives for a range, or its error.
fn by_residency(r: &Reservation, offset: usize, len: usize) -> Result<usize, Error> {
    r.residency(offset, len)
        .map(|pages| pages.iter().filter(|&&resident| resident).count())
}

/// Every range of a reservation whose pages are committed and touched, committed and never
/// touched, decommitted after a write, guard pages, and committed but made inaccessible (runs
/// starting and ending at its first and last pages): both calls agree, and so do their errors
/// for an empty, misaligned, overflowing or too long range.
#[test]
fn resident_pages_agrees_with_residency_for_every_range() {
    let page = page_size();
    let pages = 20;
    let mut r = Reservation::new(pages * page).unwrap();
    // Pages 0..6 committed, 1..3 written.
    r.commit(0, 6 * page).unwrap();
    r.prefault(page, 2 * page).unwrap();
    // Pages 6 and 7 guard pages.
    r.guard(6 * page, 2 * page).unwrap();
    // Pages 9..12 committed and written, then page 10 decommitted.
    r.commit(9 * page, 3 * page).unwrap();
    r.prefault(9 * page, 3 * page).unwrap();
    r.decommit(10 * page, page).unwrap();
    // Pages 14..20 committed, 15 and 19 written, 16 written then made inaccessible.
    r.commit(14 * page, 6 * page).unwrap();
    for p in [15, 16, 19] {
        // SAFETY: the page is committed read-write and belongs to this reservation alone.
        unsafe { r.as_ptr().add(p * page).write(1) };
    }
    r.protect(16 * page, page, Protection::None).unwrap();

    let mut resident = 0;
    for first in 0..pages {
        for count in 1..=pages - first {
            let (offset, len) = (first * page, count * page);
            let want = by_residency(&r, offset, len).unwrap();
            assert_eq!(r.resident_pages(offset, len), Ok(want), "{first}+{count}");
            if count == pages {
                resident = want;
            }
        }
    }
    // Pages 1, 2, 9, 11, 15 and 19 at least (16 too where the system keeps it in memory).
    assert!(resident >= 6, "{resident}");

    for (offset, len) in [
        (0, 0),
        (page, 0),
        (1, page),
        (0, page + 1),
        (0, (pages + 1) * page),
        (pages * page, page),
        (usize::MAX - page + 1, page),
        (page, usize::MAX - page + 1),
    ] {
        let want = by_residency(&r, offset, len).unwrap_err();
        assert_eq!(
            r.resident_pages(offset, len),
            Err(want),
            "{offset:#x}+{len:#x}"
        );
    }
}
