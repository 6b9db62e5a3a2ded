//! A reservation-backed arena gives memory back to the operating system when a client with
//! many chunks is deleted (Linux: the resident set size read from `/proc/self/status`).

#![cfg(all(target_os = "linux", feature = "std"))]

use std::alloc::Layout;

use memvisor_arena::{Arena, Config, Flags, Quota};
use memvisor_testkit::resident::{measuring, rss_bytes};

#[test]
#[cfg_attr(miri, ignore = "reads /proc and needs real page residency")]
fn delete_client_with_many_chunks_lowers_rss() {
    let _alone = measuring();
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::DECOMMIT);
    let arena = Arena::with_reservation(CHUNKS * CHUNK, config).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let before = rss_bytes();
    // Fill 48 MiB with blocks of all sizes and touch every page.
    let mut filled = 0;
    let mut i = 0usize;
    while filled < 48 * CHUNK {
        let size = 16 + (i * 7919) % 60_000;
        let (p, got) = client
            .alloc_sized(Layout::from_size_align(size, 8).unwrap())
            .unwrap();
        // SAFETY: a live block of `got` bytes.
        unsafe { p.as_ptr().write_bytes(0x5A, got) };
        filled += got;
        i += 1;
    }
    assert!(client.stats().chunks >= 48);
    let full = rss_bytes();
    let resident = arena.resident_bytes().unwrap().unwrap();
    assert!(resident >= 48 * CHUNK, "resident {resident}");
    assert!(full >= before + 40 * CHUNK, "rss {before} -> {full}");
    arena.delete_client(client);
    let after = rss_bytes();
    assert_eq!(arena.resident_bytes().unwrap(), Some(0));
    assert!(
        after + 40 * CHUNK <= full,
        "rss did not fall: {before} -> {full} -> {after}"
    );
    assert_eq!(arena.stats().cached_chunks, 0);
}

/// Reserving address space is cheap: a large reservation's side tables take memory as chunks
/// are used, not in proportion to the reservation when it is made.
#[test]
#[cfg(target_pointer_width = "64")]
#[cfg_attr(miri, ignore = "reads /proc and needs real page residency")]
fn large_reservation_makes_little_resident() {
    let _alone = measuring();
    // 256 GiB of address space: its tables are about 5 GiB of address space (mostly the start
    // bits and the slab table), none of which is written when the arena is made (its chunk
    // records, owners and mailbox pointers, about 43 MiB, were before).
    let before = rss_bytes();
    let arena = Arena::with_reservation(256 << 30, Config::new()).unwrap();
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "a 256 GiB reservation made {} MiB resident",
        grown >> 20
    );
    // The arena works: a client allocates, writes and frees a block.
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let small = client
        .alloc(Layout::from_size_align(24, 8).unwrap())
        .unwrap();
    // SAFETY: a live block of at least 24 bytes.
    unsafe { small.as_ptr().cast::<u8>().write_bytes(1, 24) };
    // SAFETY: a live block of this client.
    unsafe { client.free(small.cast()) }.unwrap();
    arena.delete_client(client);
}

/// A long-running client keeps its arena while the chunks it gave back go to the system:
/// `decommit_free_chunks` lowers the resident set by them without deleting the client,
/// leaves the chunk the client still holds resident, and the statistics count them out of
/// the committed chunks (`cached_chunks`).
#[test]
#[cfg_attr(miri, ignore = "reads /proc and needs real page residency")]
fn decommit_free_chunks_while_a_client_lives_lowers_rss() {
    let _alone = measuring();
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let arena =
        Arena::with_reservation(CHUNKS * CHUNK, Config::new().with_chunk_size(CHUNK)).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let small = client
        .alloc(Layout::from_size_align(64, 8).unwrap())
        .unwrap();
    // SAFETY: a live block of 64 bytes.
    unsafe { small.as_ptr().write_bytes(0x33, 64) };
    let layout = Layout::from_size_align(CHUNK, 16).unwrap();
    let blocks: Vec<_> = (0..48).map(|_| client.alloc(layout).unwrap()).collect();
    for &p in &blocks {
        // SAFETY: a live block of a chunk.
        unsafe { p.as_ptr().write_bytes(0x5A, CHUNK) };
    }
    for p in blocks {
        // SAFETY: a live block of the client, not used after.
        unsafe { client.free(p) }.unwrap();
    }
    client.trim();
    let given_back = arena.stats();
    assert_eq!(given_back.cached_chunks, 48);
    assert_eq!(given_back.held_chunks, 1);
    let full = rss_bytes();
    assert!(arena.resident_bytes().unwrap().unwrap() >= 48 * CHUNK);
    assert_eq!(arena.decommit_free_chunks(), Ok(48));
    let after = rss_bytes();
    assert!(
        after + 40 * CHUNK <= full,
        "rss did not fall: {full} -> {after}"
    );
    let resident = arena.resident_bytes().unwrap().unwrap();
    assert!(resident <= CHUNK, "resident {resident}");
    assert_eq!(arena.stats().cached_chunks, 0);
    // The client lives on: its block is intact, and it allocates in a chunk committed again.
    // SAFETY: a live block of 64 bytes.
    assert_eq!(unsafe { small.as_ptr().add(63).read() }, 0x33);
    let again = client.alloc(layout).unwrap();
    // SAFETY: a live block of a chunk.
    unsafe { again.as_ptr().write_bytes(1, CHUNK) };
    arena.delete_client(client);
}
