//! A protect the system refuses partway (the process's mapping limit reached while splitting
//! the mapping) leaves no page counted with access it may have lost: a prefault of such a page
//! is an error, never a fault, and a commit gives it read-write access again. Alone in its file
//! (its own process), as it fills the mapping limit for a moment.
#![cfg(all(target_os = "linux", not(miri)))]

use memvisor_vmem::{CommitMode, Error, MapSource, Protection, Reservation, page_size};

#[path = "support/map_limit.rs"]
mod map_limit;
use map_limit::at_mapping_limit;

/// The permissions (`rw-p`, ...) of the mapping holding `addr`.
fn perms_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        let (start, end) = words.next().unwrap().split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        if (start..end).contains(&addr) {
            return words.next().unwrap().to_owned();
        }
    }
    panic!("no mapping at {addr:#x}");
}

#[test]
fn protect_refused_partway_counts_pages_at_their_lower_access() {
    let p = page_size();
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        let mut r = Reservation::builder().mode(mode).reserve(16 * p).unwrap();
        r.commit(0, 16 * p).unwrap();
        // Page 1 is a mapping of its own; pages 2.. are the reservation's.
        r.map(
            p,
            p,
            MapSource::AnonymousShared,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        // Page 1 changes whole; page 2 needs its mapping split, which the limit refuses.
        let refused = at_mapping_limit(|| r.protect(p, 2 * p, Protection::Read));
        let Err(err) = refused else {
            // The kernel had room after all: nothing partial to check.
            continue;
        };
        assert!(matches!(err, Error::Os { .. }), "{mode:?}: {err}");
        let page1 = r.as_ptr() as usize + p;
        // Whatever the kernel left, the reservation does not count on write access.
        assert!(
            matches!(r.prefault(p, 2 * p), Err(Error::NotWritable { .. })),
            "{mode:?}: pages {}",
            perms_at(page1)
        );
        // A commit over the range gives it read-write access again, as the bookkeeping says.
        r.commit(p, 2 * p).unwrap();
        assert!(perms_at(page1).starts_with("rw"), "{mode:?}");
        r.prefault(p, 2 * p).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().add(p).write(1) };
    }
}
