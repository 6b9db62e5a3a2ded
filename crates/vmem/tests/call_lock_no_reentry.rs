//! The calls of a reservation that change its pages take turns on one lock per reservation,
//! held from their checks to their records. Every path that runs while it is held (unlocking
//! and re-advising inside a decommit or guard, the hole filled after a refused map, the
//! refusals that return early, a vector's growth) must finish without taking it again: each
//! case runs on a thread the test waits for with a deadline, and a call that waits for ever
//! fails the test instead of hanging it.
#![cfg(all(target_os = "linux", not(miri)))]

use std::time::Duration;

use memvisor_testkit::watchdog::within;
use memvisor_vmem::vec::Builder;
use memvisor_vmem::{
    Advice, CommitMode, Error, HugePageAdvice, HugeTlbSize, MapSource, Protection, Reservation,
    page_size,
};

/// Long enough for any of these calls on a loaded machine; a call waiting on a lock its own
/// thread holds never returns.
const DEADLINE: Duration = Duration::from_secs(60);

fn reservation(mode: CommitMode, pages: usize) -> Reservation {
    Reservation::builder()
        .mode(mode)
        .reserve(pages * page_size())
        .unwrap()
}

/// Locked, advised pages, some of them mapped over by another source: a decommit unlocks them,
/// replaces the mapped runs and gives the advice again, all with the lock held.
fn prepared(mode: CommitMode) -> Reservation {
    let p = page_size();
    let mut r = reservation(mode, 8);
    r.commit(0, 8 * p).unwrap();
    r.map(
        2 * p,
        2 * p,
        MapSource::AnonymousShared,
        Protection::ReadWrite,
        None,
    )
    .unwrap();
    r.lock(0, 8 * p).unwrap();
    r.advise(0, 8 * p, Advice::DontDump).unwrap();
    r.advise_huge_pages(0, 8 * p, HugePageAdvice::NoHuge)
        .unwrap();
    r
}

#[test]
fn decommit_of_locked_mapped_advised_pages_returns() {
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let mut r = within("decommit", DEADLINE, move || {
            let mut r = prepared(mode);
            r.decommit(0, 8 * page_size()).unwrap();
            r
        });
        // The lock was given back: every other call still runs.
        within("calls after the decommit", DEADLINE, move || {
            r.commit(0, page_size()).unwrap();
            r.lock(0, page_size()).unwrap();
            r.unlock(0, page_size()).unwrap();
            r.protect(0, page_size(), Protection::Read).unwrap();
            r.decommit(0, page_size()).unwrap();
        });
    }
}

#[test]
fn guard_of_locked_mapped_advised_pages_returns() {
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let mut r = within("guard", DEADLINE, move || {
            let mut r = prepared(mode);
            r.guard(2 * page_size(), 4 * page_size()).unwrap();
            r
        });
        within("calls after the guard", DEADLINE, move || {
            assert!(matches!(
                r.commit(2 * page_size(), page_size()),
                Err(Error::Guarded { .. })
            ));
            r.unguard(2 * page_size(), 4 * page_size()).unwrap();
            r.commit(0, 8 * page_size()).unwrap();
            r.guard(0, page_size()).unwrap();
        });
    }
}

#[test]
fn refused_calls_give_the_lock_back() {
    within("refusals", DEADLINE, || {
        let p = page_size();
        let mut r = reservation(CommitMode::Protected, 4);
        r.commit(0, 2 * p).unwrap();
        r.lock(0, p).unwrap();
        // Refused with the lock held, after it was taken.
        assert!(matches!(r.discard(0, 2 * p), Err(Error::Locked { .. })));
        assert!(matches!(
            r.protect(0, 4 * p, Protection::Read),
            Err(Error::NotCommitted { .. })
        ));
        assert!(matches!(r.lock(0, 4 * p), Err(Error::NotCommitted { .. })));
        r.protect(p, p, Protection::None).unwrap();
        assert!(matches!(r.lock(p, p), Err(Error::NotReadable { .. })));
        r.guard(3 * p, p).unwrap();
        assert!(matches!(r.commit(2 * p, 2 * p), Err(Error::Guarded { .. })));
        assert!(matches!(
            r.map(
                2 * p,
                2 * p,
                MapSource::AnonymousPrivate,
                Protection::Read,
                None
            ),
            Err(Error::Guarded { .. })
        ));
        // And every call still takes it afterwards.
        r.unlock(0, p).unwrap();
        r.discard(0, p).unwrap();
        r.commit(0, 3 * p).unwrap();
        r.decommit(0, 3 * p).unwrap();
    });
}

#[test]
fn map_refused_by_the_system_fills_the_hole_and_returns() {
    // Explicit huge pages where none are reserved: the system refuses the mapping (perhaps
    // after taking the old pages), and the hole is filled with the lock held.
    let huge = HugeTlbSize::Size2M.bytes();
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut r = within("refused map", DEADLINE, move || {
        let mut r = Reservation::builder()
            .alignment(huge)
            .reserve(2 * huge)
            .unwrap();
        r.commit(0, 2 * huge).unwrap();
        r.lock(0, page_size()).unwrap();
        let mapped = r.map(
            0,
            huge,
            MapSource::AnonymousPrivate,
            Protection::ReadWrite,
            Some(HugeTlbSize::Size2M),
        );
        if free == 0 {
            assert!(
                matches!(mapped, Err(Error::Os { .. } | Error::Lost { .. })),
                "{mapped:?}"
            );
        }
        r
    });
    within("calls after the map", DEADLINE, move || {
        r.commit(0, 2 * huge).unwrap();
        // Past the range of the map: where the system has huge pages free, the map succeeded
        // and a page of its huge page cannot be locked alone.
        r.lock(huge, page_size()).unwrap();
        r.decommit(0, 2 * huge).unwrap();
    });
}

#[test]
fn vector_growth_racing_with_locks_and_advice_returns() {
    within("vector growth", DEADLINE, || {
        let v = Builder::new(1 << 20).build_concurrent::<u64>().unwrap();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let v = &v;
                s.spawn(move || {
                    for i in 0..50_000 {
                        v.push(t * 100_000 + i);
                    }
                });
            }
            let v = &v;
            s.spawn(move || {
                let r = v.reservation();
                for _ in 0..200 {
                    let committed = r.committed_bytes().min(64 * page_size());
                    if committed >= page_size() {
                        // The first pages are committed for good once counted.
                        let len = committed / page_size() * page_size();
                        let _ = r.lock(0, len);
                        let _ = r.unlock(0, len);
                        let _ = r.advise_huge_pages(0, len, HugePageAdvice::NoHuge);
                        let _ = r.advise(0, len, Advice::DontFork);
                        let _ = r.advise(0, len, Advice::DoFork);
                    }
                    std::thread::yield_now();
                }
            });
        });
        // Every push published its element (slots held back by a thread's block count in
        // `len` but hold none).
        let published = (0..v.len()).filter(|&i| v.get(i).is_some()).count();
        assert_eq!(published, 100_000);
    });
}
