//! `prefault_unchecked` and `prefault_read_unchecked` on one thread while another decommits,
//! protects and commits the same pages through the `_unchecked` forms. Neither thread
//! reads or writes the range itself, so both contracts are kept; the prefaults must then
//! answer as if each ran before or after each of the other calls: `Ok`, or the typed error
//! for a page that is not committed, not writable, or not readable. Never the
//! system's refusal of a page taken after the check, never a fault of the touching fallback,
//! and under Miri (which takes that fallback) no data race with the decommit's zeroing.

use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_vmem::{CommitMode, Error, Protection, Reservation, page_size};

const PAGES: usize = 8;

fn rounds() -> usize {
    if cfg!(miri) { 60 } else { 20_000 }
}

fn allowed(result: Result<(), Error>) -> bool {
    matches!(
        result,
        Ok(())
            | Err(Error::NotCommitted { .. }
                | Error::NotWritable { .. }
                | Error::NotReadable { .. })
    )
}

fn race(mode: CommitMode, read: bool) {
    let page = page_size();
    let len = PAGES * page;
    let r = Reservation::builder().mode(mode).reserve(len).unwrap();
    r.commit(0, len).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let prefaulter = s.spawn(|| {
            let mut unexpected = Vec::new();
            while !done.load(Ordering::Acquire) {
                let result = if read {
                    // SAFETY: no thread reads or writes the range and no reference into it
                    // is live.
                    unsafe { r.prefault_read_unchecked(0, len) }
                } else {
                    // SAFETY: as above.
                    unsafe { r.prefault_unchecked(0, len) }
                };
                if !allowed(result.clone()) {
                    unexpected.push(result);
                }
                std::thread::yield_now();
            }
            unexpected
        });
        for round in 0..rounds() {
            let first = (round % PAGES) * page;
            let part = page * (1 + round % 3).min(PAGES - round % PAGES);
            match round % 3 {
                // SAFETY: no thread reads or writes the range, and no reference into it is
                // live; the prefaults only touch pages while they are committed read-write.
                0 => unsafe { r.decommit_unchecked(first, part) }.unwrap(),
                // SAFETY: as above.
                1 => unsafe { r.protect_unchecked(first, part, Protection::None) }.unwrap(),
                // SAFETY: as above.
                _ => unsafe { r.protect_unchecked(first, part, Protection::Read) }.unwrap(),
            }
            r.commit(0, len).unwrap();
            std::thread::yield_now();
        }
        done.store(true, Ordering::Release);
        let unexpected = prefaulter.join().unwrap();
        assert!(
            unexpected.is_empty(),
            "prefault answered what no order of the calls allows: {:?}",
            &unexpected[..unexpected.len().min(5)]
        );
    });
}

#[test]
fn prefault_racing_decommit_protect_answers_a_typed_error_protected() {
    race(CommitMode::Protected, false);
}

#[test]
fn prefault_racing_decommit_protect_answers_a_typed_error_sparse() {
    race(CommitMode::Sparse, false);
}

#[test]
fn prefault_read_racing_decommit_protect_answers_a_typed_error_protected() {
    race(CommitMode::Protected, true);
}

#[test]
fn prefault_read_racing_decommit_protect_answers_a_typed_error_sparse() {
    race(CommitMode::Sparse, true);
}
