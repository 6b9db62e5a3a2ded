//! Making an arena over a large reservation writes a few pages of bookkeeping whatever the
//! reservation's size: every side table starts as untouched zero pages and takes memory as its
//! chunks are first used (Linux: the resident set size read from `/proc/self/status`).

#![cfg(all(target_os = "linux", feature = "std", target_pointer_width = "64"))]

use std::alloc::Layout;
use std::time::{Duration, Instant};

use memvisor_arena::{Arena, Config, Flags, Quota};
use memvisor_testkit::resident::rss_bytes;

/// What making an arena over `len` bytes of address space with chunks of `chunk` bytes adds to
/// the resident set, and how long it takes; the arena is then used (a client allocates,
/// writes and frees blocks of several sizes, one of several chunks where blocks may span
/// chunks) and dropped.
fn made(len: usize, chunk: usize, flags: Flags) -> (usize, Duration) {
    let before = rss_bytes();
    let start = Instant::now();
    let arena =
        Arena::with_reservation(len, Config::new().with_chunk_size(chunk).with_flags(flags))
            .unwrap();
    let took = start.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    // Nothing is written per chunk: a few words, the reservation and the table allocations
    // (1.4 s for 1 TiB of 64 KiB chunks when every chunk's record was written).
    assert!(took < Duration::from_secs(1), "made in {took:?}");
    assert_eq!(arena.stats().free_chunks, len / chunk);
    assert_eq!(arena.stats().held_chunks, 0);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut blocks = Vec::new();
    for size in [24, 3000, chunk / 2, 3 * chunk] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        if size > arena.max_block_size() {
            continue;
        }
        let p = client.alloc(layout).unwrap();
        // SAFETY: a live block of at least `size` bytes.
        unsafe { p.as_ptr().cast::<u8>().write_bytes(0xA5, size) };
        assert_eq!(arena.owner_of(p.as_ptr().cast()), Some(client.id()));
        blocks.push(p);
    }
    let held = arena.stats().held_chunks;
    assert!(held >= 1, "held {held}");
    for p in blocks {
        // SAFETY: a live block of this client, not used again.
        unsafe { client.free(p.cast()) }.unwrap();
    }
    arena.delete_client(client);
    assert_eq!(arena.stats().held_chunks, 0);
    assert_eq!(arena.stats().free_chunks, len / chunk);
    (grown, took)
}

/// Both sizes in one test, the larger tables second: the allocator may serve a table from
/// memory freed before (and clear it) rather than from fresh zero pages, which glibc does for
/// tables under its mmap threshold once blocks of their size were freed (see the crate's
/// design, *Space*), so the measurement of the smaller tables comes first in the process.
#[test]
#[cfg_attr(miri, ignore = "reads /proc and needs real page residency")]
fn tebibyte_reservation_makes_a_few_pages_resident() {
    // 1 TiB of 1 MiB chunks: a million chunk records, owners, mailbox and remote-free table
    // pointers, all written at creation before (about 170 MiB).
    let (grown, took) = made(1 << 40, 1 << 20, Flags::empty());
    assert!(
        grown < 8 << 20,
        "a 1 TiB reservation made {} KiB resident (in {took:?})",
        grown >> 10
    );
    // 1 TiB of 64 KiB chunks: 16 million chunks (2.7 GiB of records written at creation
    // before), with decommit and guard pages.
    let (grown, took) = made(1 << 40, 64 << 10, Flags::DECOMMIT | Flags::GUARD);
    assert!(
        grown < 8 << 20,
        "a 1 TiB reservation of 64 KiB chunks made {} KiB resident (in {took:?})",
        grown >> 10
    );
}
