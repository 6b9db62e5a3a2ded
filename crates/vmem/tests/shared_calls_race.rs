//! Every call that holds the reservation's call lock shared (`prefault_unchecked`,
//! `prefault_read_unchecked`, `bind_numa`) on one thread, over the whole reservation, while
//! another thread runs every call that holds it alone over parts of it: commit, lock, unlock,
//! both advice calls, and decommit, protect, map, free, discard, purge and guard through their
//! `_unchecked` forms. No thread reads or writes the range itself, so every contract is kept;
//! each shared call must answer as if it ran before or after each of the others (`Ok`, or
//! the typed error for a page that is not committed, not writable, not readable or a guard
//! page), never a
//! refusal of the system for a page taken after its check, never a fault of the touching
//! fallback; the calls holding the lock alone never see the shared ones either. Under Miri,
//! which takes the touching fallback, zeroes for decommit, map, free, discard and purge, and
//! keeps protection and NUMA policy as bookkeeping, a share that let one of them in would be
//! a data race.

use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_vmem::{
    Advice, CommitMode, Error, HugePageAdvice, NumaPolicy, Protection, Reservation, page_size,
};

const PAGES: usize = 8;

fn rounds() -> usize {
    if cfg!(miri) { 2 } else { 300 }
}

/// A call over `offset..offset + len`.
type Call = fn(&Reservation, usize, usize) -> Result<(), Error>;

/// The calls that hold the lock alone and keep every page a prefault may meet in a state a
/// commit of the range undoes, by name. Map is left out where the platform has none.
fn exclusive_calls() -> Vec<(&'static str, Call)> {
    let mut calls: Vec<(&'static str, Call)> = vec![
        ("commit", |r, o, l| r.commit(o, l)),
        ("lock", |r, o, l| r.lock(o, l)),
        ("unlock", |r, o, l| r.unlock(o, l)),
        ("advise", |r, o, l| r.advise(o, l, Advice::DontDump)),
        ("advise_huge_pages", |r, o, l| {
            r.advise_huge_pages(o, l, HugePageAdvice::NoHuge)
        }),
        // SAFETY: no thread reads or writes the range and no reference into it is live (nor
        // for the calls below); the prefaults only touch pages committed read-write.
        ("decommit", |r, o, l| unsafe { r.decommit_unchecked(o, l) }),
        // SAFETY: as above.
        ("protect", |r, o, l| unsafe {
            r.protect_unchecked(o, l, Protection::Read)
        }),
        // SAFETY: as above.
        ("protect none", |r, o, l| unsafe {
            r.protect_unchecked(o, l, Protection::None)
        }),
        // SAFETY: as above.
        ("free", |r, o, l| unsafe { r.free_unchecked(o, l) }),
        // SAFETY: as above.
        ("discard", |r, o, l| unsafe { r.discard_unchecked(o, l) }),
        // SAFETY: as above.
        ("purge", |r, o, l| unsafe { r.purge_unchecked(o, l) }),
    ];
    if cfg!(unix) {
        calls.push(("map", |r, o, l| {
            let source = memvisor_vmem::MapSource::AnonymousPrivate;
            // SAFETY: as above.
            unsafe { r.map_unchecked(o, l, source, Protection::ReadWrite, None) }
        }));
    }
    calls
}

/// What a call that holds the lock alone may answer here, whatever runs beside it: its own
/// typed refusals of the pages' state (not committed, not readable, locked pages), or, for
/// what the platform cannot do, `Unsupported`; never the system's refusal.
fn exclusive_allowed(result: &Result<(), Error>) -> bool {
    matches!(
        result,
        Ok(())
            | Err(Error::NotCommitted { .. }
                | Error::NotReadable { .. }
                | Error::Locked { .. }
                | Error::Unsupported { .. })
    )
}

/// The calls that share the lock, over the whole range, and what each may answer.
#[derive(Clone, Copy, Debug)]
enum Shared {
    Prefault,
    PrefaultRead,
    Bind,
}

impl Shared {
    fn call(self, r: &Reservation, len: usize) -> Result<(), Error> {
        match self {
            // SAFETY: no thread reads or writes the range and no reference into it is live;
            // no other prefault of it runs.
            Self::Prefault => unsafe { r.prefault_unchecked(0, len) },
            // SAFETY: as above.
            Self::PrefaultRead => unsafe { r.prefault_read_unchecked(0, len) },
            Self::Bind => r.bind_numa(0, len, NumaPolicy::Bind, &[0]),
        }
    }

    fn allowed(self, result: &Result<(), Error>) -> bool {
        match self {
            Self::Prefault | Self::PrefaultRead => matches!(
                result,
                Ok(())
                    | Err(Error::NotCommitted { .. }
                        | Error::NotWritable { .. }
                        | Error::NotReadable { .. }
                        | Error::Guarded { .. })
            ),
            // Node 0 and its policy hold for any page, committed or not.
            Self::Bind if cfg!(any(target_os = "linux", miri)) => result.is_ok(),
            Self::Bind => matches!(result, Err(Error::Unsupported { .. })),
        }
    }
}

fn race(mode: CommitMode, shared: Shared) {
    let page = page_size();
    let len = PAGES * page;
    let r = Reservation::builder().mode(mode).reserve(len).unwrap();
    r.commit(0, len).unwrap();
    if matches!(shared, Shared::Bind) && r.bind_numa(0, len, NumaPolicy::Bind, &[0]).is_err() {
        eprintln!("{mode:?}: the system refuses node 0 (no NUMA support), bind left out");
        return;
    }
    let calls = exclusive_calls();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sharer = s.spawn(|| {
            let mut unexpected = Vec::new();
            let mut ran = 0usize;
            while !done.load(Ordering::Acquire) || ran == 0 {
                let result = shared.call(&r, len);
                if !shared.allowed(&result) {
                    unexpected.push(result);
                }
                ran += 1;
                std::thread::yield_now();
            }
            unexpected
        });
        let mut refused = Vec::new();
        for round in 0..rounds() {
            for (i, (name, call)) in calls.iter().enumerate() {
                let first = (round + i) % PAGES * page;
                let part = page * (1 + (round + i) % 3).min(PAGES - (round + i) % PAGES);
                let result = call(&r, first, part);
                if !exclusive_allowed(&result) {
                    refused.push((*name, result));
                }
                std::thread::yield_now();
                // Locked pages are refused by the content advice: let them go now and then.
                if i % 4 == 3 {
                    r.unlock(0, len).unwrap();
                }
                r.commit(0, len).unwrap();
            }
        }
        // Guard pages stay until `unguard` (`&mut self`): guard the range page by page last,
        // while the shared calls go on.
        for first in 0..PAGES {
            r.unlock(first * page, page).unwrap();
            // SAFETY: as for the calls above.
            let result = unsafe { r.guard_unchecked(first * page, page) };
            if !exclusive_allowed(&result) {
                refused.push(("guard", result));
            }
            std::thread::yield_now();
        }
        done.store(true, Ordering::Release);
        let unexpected = sharer.join().unwrap();
        assert!(
            refused.is_empty(),
            "{mode:?} {shared:?}: refused beside a share: {:?}",
            &refused[..refused.len().min(5)]
        );
        assert!(
            unexpected.is_empty(),
            "{mode:?} {shared:?}: answered what no order of the calls allows: {:?}",
            &unexpected[..unexpected.len().min(5)]
        );
    });
    assert_eq!(r.committed_bytes(), 0);
    assert!(!r.is_committed(0, page).unwrap());
}

#[test]
fn prefault_beside_every_exclusive_call_protected() {
    race(CommitMode::Protected, Shared::Prefault);
}

#[test]
fn prefault_beside_every_exclusive_call_sparse() {
    race(CommitMode::Sparse, Shared::Prefault);
}

#[test]
fn prefault_read_beside_every_exclusive_call_protected() {
    race(CommitMode::Protected, Shared::PrefaultRead);
}

#[test]
fn prefault_read_beside_every_exclusive_call_sparse() {
    race(CommitMode::Sparse, Shared::PrefaultRead);
}

#[test]
fn bind_numa_beside_every_exclusive_call_protected() {
    race(CommitMode::Protected, Shared::Bind);
}

#[test]
fn bind_numa_beside_every_exclusive_call_sparse() {
    race(CommitMode::Sparse, Shared::Bind);
}

/// Binds and prefaults share the lock with one another: a bind moving the pages that a
/// prefault populates answers as either order does, and the pages read back what was
/// written before (the touching fallback writes back what it read, moved or not).
#[test]
fn bind_numa_beside_prefaults() {
    let page = page_size();
    let len = PAGES * page;
    let r = Reservation::new(len).unwrap();
    r.commit(0, len).unwrap();
    if r.bind_numa(0, len, NumaPolicy::Bind, &[0]).is_err() {
        eprintln!("the system refuses node 0 (no NUMA support), nothing to race");
        return;
    }
    let byte = |i: usize| u8::try_from(i % 251).unwrap();
    for i in (0..len).step_by(page / 4) {
        // SAFETY: committed read-write; no other thread runs yet.
        unsafe { r.as_ptr().add(i).write(byte(i)) };
    }
    let rounds = if cfg!(miri) { 4 } else { 2_000 };
    std::thread::scope(|s| {
        let binder = s.spawn(|| {
            (0..rounds)
                .map(|_| r.bind_numa(0, len, NumaPolicy::Bind, &[0]))
                .find(Result::is_err)
        });
        for _ in 0..rounds {
            // SAFETY: no thread reads or writes the range and no reference into it is live;
            // no other prefault of it runs.
            unsafe { r.prefault_unchecked(0, len) }.unwrap();
            // SAFETY: as above.
            unsafe { r.prefault_read_unchecked(0, len) }.unwrap();
        }
        assert_eq!(binder.join().unwrap(), None);
    });
    assert!(r.is_committed(0, len).unwrap());
    for i in (0..len).step_by(page / 4) {
        // SAFETY: committed read-write; the threads are done.
        assert_eq!(unsafe { r.as_ptr().add(i).read() }, byte(i), "byte {i}");
    }
}
