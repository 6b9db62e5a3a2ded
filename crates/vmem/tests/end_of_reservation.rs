//! Every call that takes a range, on the last pages of a reservation (a range that ends exactly
//! where the reservation ends), each made twice in a row: the second call answers as its
//! documentation says for pages in the state the first one left, and the public queries agree
//! with the calls made.

use memvisor_vmem::{
    Advice, CommitMode, Error, HugePageAdvice, Protection, Reservation, page_size,
};

const MODES: [CommitMode; 2] = [CommitMode::Protected, CommitMode::Sparse];

/// Pages of each reservation; the calls act on the last [`TAIL`] of them.
const PAGES: usize = 6;
const TAIL: usize = 2;

fn reservation(mode: CommitMode) -> Reservation {
    Reservation::builder()
        .mode(mode)
        .reserve(PAGES * page_size())
        .unwrap()
}

/// Reads the first byte of each page of the tail.
fn tail_bytes(r: &Reservation) -> Vec<u8> {
    let page = page_size();
    (PAGES - TAIL..PAGES)
        // SAFETY: the caller's tail is committed and readable; nothing writes it meanwhile.
        .map(|p| unsafe { r.as_ptr().add(p * page).read_volatile() })
        .collect()
}

fn fill_tail(r: &mut Reservation, value: u8) {
    let page = page_size();
    for p in PAGES - TAIL..PAGES {
        // SAFETY: the tail is committed read-write and only this thread uses it.
        unsafe { r.as_ptr().add(p * page).write_volatile(value) };
    }
}

/// A call only Linux carries out: accepted there, `Unsupported` elsewhere (as documented).
/// Whether it was carried out.
fn on_linux(result: Result<(), Error>) -> bool {
    if cfg!(target_os = "linux") {
        result.unwrap();
        true
    } else {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
        false
    }
}

#[test]
fn calls_on_the_last_pages_made_twice_answer_as_documented() {
    let page = page_size();
    let (offset, len) = ((PAGES - TAIL) * page, TAIL * page);
    for mode in MODES {
        let mut r = reservation(mode);
        assert_eq!(offset + len, r.len());
        for _ in 0..2 {
            r.commit(offset, len).unwrap();
            assert_eq!(r.committed_bytes(), len, "{mode:?}");
            assert!(r.is_committed(offset, len).unwrap());
            assert!(!r.is_committed(0, r.len()).unwrap());
        }
        fill_tail(&mut r, 7);
        for _ in 0..2 {
            r.prefault(offset, len).unwrap();
            r.prefault_read(offset, len).unwrap();
            r.lock(offset, len).unwrap();
            r.unlock(offset, len).unwrap();
            on_linux(r.advise(offset, len, Advice::DontDump));
            on_linux(r.advise(offset, len, Advice::DoDump));
            let huge = r.advise_huge_pages(offset, len, HugePageAdvice::NoHuge);
            assert!(
                huge.is_ok() || matches!(huge, Err(Error::Unsupported { .. })),
                "{mode:?}: {huge:?}"
            );
            assert_eq!(tail_bytes(&r), [7; TAIL], "{mode:?}");
        }
        if !cfg!(miri) {
            assert_eq!(r.resident_pages(offset, len).unwrap(), TAIL, "{mode:?}");
            assert_eq!(r.resident_pages(0, r.len()).unwrap(), TAIL, "{mode:?}");
        }
        for _ in 0..2 {
            r.protect(offset, len, Protection::Read).unwrap();
            assert_eq!(
                r.prefault(offset, len),
                Err(Error::NotWritable { offset }),
                "{mode:?}"
            );
            r.prefault_read(offset, len).unwrap();
            assert_eq!(tail_bytes(&r), [7; TAIL], "{mode:?}");
        }
        for _ in 0..2 {
            r.protect(offset, len, Protection::ReadWrite).unwrap();
            r.prefault(offset, len).unwrap();
        }
        for _ in 0..2 {
            let dropped = on_linux(r.discard(offset, len));
            assert_eq!(
                tail_bytes(&r),
                [if dropped { 0 } else { 7 }; TAIL],
                "{mode:?}"
            );
            assert_eq!(r.committed_bytes(), len, "{mode:?}");
        }
        fill_tail(&mut r, 9);
        for _ in 0..2 {
            let dropped = on_linux(r.purge(offset, len));
            assert_eq!(
                tail_bytes(&r),
                [if dropped { 0 } else { 9 }; TAIL],
                "{mode:?}"
            );
        }
        for _ in 0..2 {
            r.decommit(offset, len).unwrap();
            assert_eq!(r.committed_bytes(), 0, "{mode:?}");
            assert!(!r.is_committed(offset + len - page, page).unwrap());
        }
        r.guard(offset, len).unwrap();
        assert!(r.is_guarded(offset, len).unwrap());
        // A guard page is decommitted already: guarding it again keeps it one.
        r.guard(offset, len).unwrap();
        assert!(r.is_guarded(offset, len).unwrap());
        assert_eq!(r.commit(offset, len), Err(Error::Guarded { offset }));
        r.unguard(offset, len).unwrap();
        assert_eq!(
            r.unguard(offset, len),
            Err(Error::NotGuarded { offset }),
            "{mode:?}"
        );
        assert!(!r.is_guarded(offset + len - page, page).unwrap());
        r.commit(offset, len).unwrap();
        assert_eq!(tail_bytes(&r), [0; TAIL], "{mode:?}");
        assert_eq!(r.committed_bytes(), len, "{mode:?}");
        // One page past the end is refused; the last page alone is accepted.
        assert_eq!(
            r.commit(r.len(), page),
            Err(Error::OutOfBounds {
                offset: r.len(),
                len: page,
                size: r.len()
            })
        );
        r.decommit(r.len() - page, page).unwrap();
        assert_eq!(r.committed_bytes(), len - page, "{mode:?}");
    }
}

/// A source mapped over the last pages, twice in a row, then decommitted twice: the second map
/// replaces the first (its contents are the new source's), and the reservation's own pages come
/// back.
#[cfg(unix)]
#[test]
fn maps_over_the_last_pages_made_twice_replace_each_other() {
    use memvisor_vmem::MapSource;
    let page = page_size();
    let (offset, len) = ((PAGES - TAIL) * page, TAIL * page);
    for mode in MODES {
        let mut r = reservation(mode);
        for value in [3, 4] {
            r.map(
                offset,
                len,
                MapSource::AnonymousShared,
                Protection::ReadWrite,
                None,
            )
            .unwrap();
            assert_eq!(tail_bytes(&r), [0; TAIL], "{mode:?}");
            fill_tail(&mut r, value);
            assert_eq!(r.committed_bytes(), len, "{mode:?}");
        }
        assert_eq!(tail_bytes(&r), [4; TAIL], "{mode:?}");
        for _ in 0..2 {
            r.decommit(offset, len).unwrap();
            assert_eq!(r.committed_bytes(), 0, "{mode:?}");
        }
        r.commit(offset, len).unwrap();
        assert_eq!(tail_bytes(&r), [0; TAIL], "{mode:?}");
        // The reservation's own pages are private: free is accepted again.
        r.free(offset, len).unwrap();
    }
}
