//! `Arena::decommit_free_chunks`' counts: with guard pages, with `Flags::DECOMMIT`, over chunks
//! a caller already decommitted through the reservation, and over a heap backing, the cached
//! chunks, the committed bytes and the count it returns stay exact.

#![cfg(feature = "std")]

use std::alloc::Layout;

use memvisor_arena::{Arena, Backing, Config, Flags, Quota};

const CHUNK: usize = 64 << 10;

/// A client holding one small block allocates `n` blocks of `block` bytes (in chunks of their
/// own, but for what fits beside the small block) and gives them back; returns the client.
fn give_back(arena: &Arena, n: usize, block: usize) -> memvisor_arena::Client<'_> {
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    client.alloc(Layout::new::<u64>()).unwrap();
    let layout = Layout::from_size_align(block, 16).unwrap();
    let blocks: Vec<_> = (0..n).map(|_| client.alloc(layout).unwrap()).collect();
    for p in blocks {
        // SAFETY: a live block of the client, written whole, not used after.
        unsafe {
            p.as_ptr().write_bytes(7, block);
            client.free(p).unwrap();
        }
    }
    client.trim();
    client
}

#[test]
fn with_guard_pages_only_the_usable_pages_are_decommitted_and_counted() {
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::GUARD);
    let arena = Arena::with_reservation(4 * CHUNK, config).unwrap();
    let r = arena.backing().reservation().unwrap();
    let client = give_back(&arena, 3, arena.max_block_size());
    // The last page of each chunk is its guard page.
    let usable = CHUNK - r.page_size();
    let given_back = arena.stats();
    assert!(given_back.cached_chunks >= 2);
    assert_eq!(
        r.committed_bytes(),
        (given_back.held_chunks + given_back.cached_chunks) * usable
    );
    assert_eq!(arena.decommit_free_chunks(), Ok(given_back.cached_chunks));
    let stats = arena.stats();
    assert_eq!(
        (stats.cached_chunks, stats.held_chunks),
        (0, given_back.held_chunks)
    );
    assert_eq!(r.committed_bytes(), stats.held_chunks * usable);
    assert!(arena.resident_bytes().unwrap().unwrap() <= stats.held_chunks * usable);
    // Taken again: committed again (its usable pages only).
    let layout = Layout::from_size_align(arena.max_block_size(), 16).unwrap();
    for _ in 0..2 {
        let p = client.alloc(layout).unwrap();
        // SAFETY: a live block, written whole.
        unsafe { p.as_ptr().write_bytes(1, layout.size()) };
    }
    let taken = arena.stats();
    assert!(taken.held_chunks > stats.held_chunks);
    assert_eq!(taken.cached_chunks, 0);
    assert_eq!(r.committed_bytes(), taken.held_chunks * usable);
    arena.delete_client(client);
    assert_eq!(arena.stats().cached_chunks, taken.held_chunks);
}

#[test]
fn with_decommit_nothing_is_left_to_decommit() {
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::DECOMMIT);
    let arena = Arena::with_reservation(4 * CHUNK, config).unwrap();
    let client = give_back(&arena, 3, CHUNK);
    assert_eq!(arena.stats().cached_chunks, 0);
    assert_eq!(arena.decommit_free_chunks(), Ok(0));
    assert_eq!(
        arena.backing().reservation().unwrap().committed_bytes(),
        CHUNK
    );
    arena.delete_client(client);
}

#[test]
fn chunks_a_caller_decommitted_are_counted_out_too() {
    let arena = Arena::with_reservation(4 * CHUNK, Config::new().with_chunk_size(CHUNK)).unwrap();
    let r = arena.backing().reservation().unwrap();
    let client = give_back(&arena, 3, CHUNK);
    arena.delete_client(client);
    assert_eq!(arena.stats().cached_chunks, 4);
    // SAFETY: no client lives, so no block does: nothing refers to the memory.
    unsafe { r.decommit_unchecked(0, 2 * CHUNK) }.unwrap();
    // The arena's records say all four are committed: it cannot tell the caller's decommit.
    assert_eq!(arena.decommit_free_chunks(), Ok(4));
    assert_eq!(arena.stats().cached_chunks, 0);
    assert_eq!(r.committed_bytes(), 0);
}

#[test]
fn a_heap_backing_keeps_its_count() {
    let backing = Backing::heap(4 * CHUNK, 4096).unwrap();
    let arena = Arena::new(backing, Config::new().with_chunk_size(CHUNK)).unwrap();
    let client = give_back(&arena, 3, CHUNK);
    assert_eq!(arena.stats().cached_chunks, 3);
    assert_eq!(arena.decommit_free_chunks(), Ok(0));
    assert_eq!(arena.stats().cached_chunks, 3);
    arena.delete_client(client);
}
