//! What a whole-range call over a very large reservation costs in memory: the per-page bitmaps
//! record a range that covers whole blocks of pages without writing its words, so mapping,
//! committing, decommitting or advising terabytes that nobody touches stays cheap.
#![cfg(all(
    target_os = "linux",
    target_pointer_width = "64",
    feature = "std",
    not(miri)
))]

use std::os::fd::{AsFd, FromRawFd};

use memvisor_testkit::resident::{measuring, rss_bytes};
use memvisor_vmem::{Advice, CommitMode, MapSource, Protection, Reservation, page_size};

const TIB: usize = 1 << 40;

/// The most resident memory a whole-range call over 1 TiB may add. Writing one bit per page
/// of one bitmap is 32 MiB; the calls below write at least four of them.
const BOUND: usize = 16 << 20;

fn memfd(len: usize) -> std::fs::File {
    // SAFETY: a fresh memfd, owned below.
    let fd = unsafe { libc::memfd_create(c"large-range".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len as u64).unwrap();
    file
}

fn grew(before: usize, what: &str) {
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < BOUND,
        "{what} added {grown} bytes of resident memory (bound {BOUND})"
    );
}

#[test]
fn mapping_a_memfd_over_a_whole_tib_reservation_writes_no_bitmap_words() {
    let _one = measuring();
    let file = memfd(TIB);
    let mut r = Reservation::new(TIB).unwrap();
    let before = rss_bytes();
    r.map(
        0,
        TIB,
        MapSource::file(file.as_fd(), 0),
        Protection::ReadWrite,
        None,
    )
    .unwrap();
    grew(before, "map");
    assert!(r.is_committed(0, TIB).unwrap());
    assert_eq!(r.committed_bytes(), TIB);
    // The bitmaps answer page by page as before.
    let last = TIB - page_size();
    // SAFETY: mapped read-write from the memfd; nothing else uses it.
    unsafe { r.as_ptr().add(last).write(9) };
    // SAFETY: as above.
    assert_eq!(unsafe { r.as_ptr().add(last).read() }, 9);
    r.advise(0, TIB, Advice::DontDump).unwrap();
    grew(before, "map and advice");
    r.decommit(0, TIB).unwrap();
    grew(before, "map, advice and decommit");
    assert_eq!(r.committed_bytes(), 0);
    assert!(!r.is_committed(last, page_size()).unwrap());
    r.commit(last, page_size()).unwrap();
    // SAFETY: committed read-write; fresh pages read zero.
    assert_eq!(unsafe { r.as_ptr().add(last).read() }, 0);
    assert!(r.is_committed(last, page_size()).unwrap());
    assert!(!r.is_committed(0, page_size()).unwrap());
    assert_eq!(r.committed_bytes(), page_size());
}

#[test]
fn committing_a_whole_tib_sparse_reservation_writes_no_bitmap_words() {
    let _one = measuring();
    let r = Reservation::builder()
        .mode(CommitMode::Sparse)
        .reserve(TIB)
        .unwrap();
    let before = rss_bytes();
    r.commit(0, TIB).unwrap();
    grew(before, "commit");
    assert!(r.is_committed(0, TIB).unwrap());
    assert_eq!(r.committed_bytes(), TIB);
    // A run that cuts blocks of pages counts exactly the pages it changes.
    let mut r = r;
    r.decommit(page_size(), TIB - 2 * page_size()).unwrap();
    assert_eq!(r.committed_bytes(), 2 * page_size());
    assert!(r.is_committed(0, page_size()).unwrap());
    assert!(!r.is_committed(page_size(), page_size()).unwrap());
    assert!(r.is_committed(TIB - page_size(), page_size()).unwrap());
    r.commit(0, TIB).unwrap();
    assert_eq!(r.committed_bytes(), TIB);
    grew(before, "commit, decommit and commit");
    r.decommit(0, TIB).unwrap();
    assert_eq!(r.committed_bytes(), 0);
    assert_eq!(r.resident_pages(0, TIB).unwrap(), 0);
}
