//! The record of explicit huge pages is made by the first `map` of them that the system grants.
//! Here many threads make that first map of one reservation at once, each over a huge page of
//! its own, while other threads commit, ask about and advise ranges that cut those huge pages:
//! the record is made once, every answer is one some order of the calls gives, and afterwards
//! the record says exactly which maps succeeded. Without free huge pages every map is refused
//! (`ENOMEM`) and none keeps a record; under Miri every map succeeds, and Miri checks the making
//! and the reads of the record for data races.
#![cfg(all(target_os = "linux", feature = "std"))]

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(not(miri))]
use memvisor_testkit::huge_page_lock;
use memvisor_vmem::{
    Advice, CommitMode, Error, HugeTlbSize, MapSource, Operation, Protection, Reservation,
    page_size,
};

const HUGE: usize = 2 << 20;

/// The refusal of a range whose start is `value` bytes into the reservation, one page past the
/// start of a 2 MiB page.
fn cut(value: usize) -> Result<(), Error> {
    Err(Error::Misaligned {
        what: "offset",
        value,
        page_size: HUGE,
    })
}

/// Whether `answer` is the system's refusal to give explicit huge pages.
fn no_huge_pages(answer: &Result<(), Error>) -> bool {
    matches!(
        answer,
        Err(Error::Os {
            operation: Operation::Map,
            source,
        }) if source.raw() == 12
    )
}

/// One round: `slots` threads map a huge page each (the first maps of huge pages of the
/// reservation, all at once), `slots` threads commit, advise and query a range that cuts each
/// of them meanwhile.
fn first_maps_racing(mode: CommitMode, slots: usize, rounds: usize) {
    let p = page_size();
    let r = Reservation::builder()
        .mode(mode)
        .alignment(HUGE)
        .reserve(slots * HUGE)
        .unwrap();
    let start = Barrier::new(2 * slots);
    let mapped_all = AtomicBool::new(false);
    let maps: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let mappers: Vec<_> = (0..slots)
            .map(|slot| {
                let (r, start) = (&r, &start);
                s.spawn(move || {
                    start.wait();
                    // SAFETY: nothing refers to the reservation's contents; the other threads
                    // only commit, advise and ask.
                    unsafe {
                        r.map_unchecked(
                            slot * HUGE,
                            HUGE,
                            MapSource::AnonymousPrivate,
                            Protection::ReadWrite,
                            Some(HugeTlbSize::Size2M),
                        )
                    }
                })
            })
            .collect();
        for slot in 0..slots {
            let (r, start, mapped_all) = (&r, &start, &mapped_all);
            s.spawn(move || {
                start.wait();
                let inside = slot * HUGE + p;
                let mut round = 0;
                while round < rounds || !mapped_all.load(Ordering::Acquire) {
                    round += 1;
                    let committed = r.commit(inside, p);
                    assert!(
                        committed.is_ok() || committed == cut(inside),
                        "{committed:?}"
                    );
                    let advised = r.advise(inside, p, Advice::DontDump);
                    assert!(advised.is_ok() || advised == cut(inside), "{advised:?}");
                    // Queries take any range and change nothing.
                    r.is_committed(inside, p).unwrap();
                    r.is_guarded(slot * HUGE, HUGE).unwrap();
                    assert!(r.committed_bytes() <= slots * HUGE);
                }
            });
        }
        let maps = mappers.into_iter().map(|m| m.join().unwrap()).collect();
        mapped_all.store(true, Ordering::Release);
        maps
    });
    let mut r = r;
    for (slot, map) in maps.iter().enumerate() {
        let inside = slot * HUGE + p;
        match map {
            Ok(()) => {
                // Recorded: a range that cuts it is refused, whole huge pages are committed.
                assert_eq!(r.commit(inside, p), cut(inside), "{mode:?} slot {slot}");
                assert!(r.is_committed(slot * HUGE, HUGE).unwrap());
                assert_eq!(
                    r.decommit(slot * HUGE, p),
                    Err(Error::Misaligned {
                        what: "end",
                        value: slot * HUGE + p,
                        page_size: HUGE
                    })
                );
            }
            refused => {
                assert!(no_huge_pages(refused), "{mode:?} slot {slot}: {refused:?}");
                // Not recorded: the cut range is the reservation's own pages.
                r.commit(inside, p).unwrap();
                assert!(r.is_committed(inside, p).unwrap());
            }
        }
    }
    // A decommit of the whole reservation clears the record; committed bytes add up.
    r.decommit(0, slots * HUGE).unwrap();
    assert_eq!(r.committed_bytes(), 0);
    r.commit(p, p).unwrap();
    assert_eq!(r.committed_bytes(), p);
}

#[test]
fn first_maps_of_huge_pages_from_many_threads_make_one_record() {
    // Miri takes nothing from the host's pool of huge pages.
    #[cfg(not(miri))]
    let _pool = huge_page_lock::huge_page_lock();
    let (slots, rounds) = if cfg!(miri) { (2, 2) } else { (8, 200) };
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        first_maps_racing(mode, slots, rounds);
    }
}
