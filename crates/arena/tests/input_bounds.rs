//! Work that the sizes a caller chooses can make the arena do: each call costs what its
//! documentation says, however many chunks or blocks the caller has made before.

use std::alloc::Layout;

use memvisor_arena::{Arena, Backing, Config, Quota};

const CHUNK: usize = 64 << 10;

/// Run allocations of a client that holds 100,000 chunks and keeps an idle chunk at the far
/// end of its chunk list (a chunk no run can grow through): each finds the idle chunk and the
/// free run in constant time and a scan of the free-chunk words, not in a walk of the
/// client's chunks or a test of each taken chunk. The 5,000 rounds take well under a second
/// in a debug build; walking 100,000 chunk records a round took 7 s more (0.7 ms a round in a
/// release build, with the test of each taken chunk). A 32-bit process, whose address space
/// has no room for 6 GiB, holds 10,000 chunks.
#[test]
#[cfg_attr(miri, ignore = "an arena of 100,000 chunks")]
fn run_allocations_beside_many_held_chunks_do_not_walk_them() {
    let held = if usize::BITS == 64 { 100_000 } else { 10_000 };
    let config = Config::new().with_chunk_size(CHUNK);
    let arena = Arena::new(Backing::heap((held + 4) * CHUNK, 4096).unwrap(), config).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    // Chunk 0, the first on the list, soon idle; chunks 1..held, a run beside it.
    let small = client
        .alloc(Layout::from_size_align(16, 8).unwrap())
        .unwrap();
    let big = client
        .alloc(Layout::from_size_align((held - 1) * CHUNK, 8).unwrap())
        .unwrap();
    // SAFETY: neither block is used again.
    unsafe { client.free(small) }.unwrap();
    assert_eq!(client.stats().pinned_chunks, 1);
    let run = Layout::from_size_align(2 * CHUNK, 8).unwrap();
    for _ in 0..5_000 {
        let p = client.alloc(run).unwrap();
        assert_eq!(
            p.as_ptr().addr() - arena.backing().as_ptr().addr(),
            held * CHUNK
        );
        // SAFETY: as above.
        unsafe { client.free(p) }.unwrap();
    }
    assert_eq!(client.stats().pinned_chunks, 1, "the idle chunk is kept");
    // SAFETY: as above.
    unsafe { client.free(big) }.unwrap();
}
