//! `Arena::owner_of` is safe with any pointer, from any thread, while chunks change hands: it
//! reads start-bit words that a chunk's new holder clears when it takes the chunk. Run under
//! Miri, this finds a data race if that clearing is not atomic.

use std::alloc::Layout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_arena::{Arena, Backing, Config, Quota};

#[test]
fn owner_of_races_chunks_changing_hands() {
    const CHUNK: usize = 64 << 10;
    let config = Config::new().with_chunk_size(CHUNK);
    let arena = Arc::new(Arena::new(Backing::heap(2 * CHUNK, 4096).unwrap(), config).unwrap());
    let rounds = if cfg!(miri) { 6 } else { 2000 };
    let done = Arc::new(AtomicBool::new(false));
    let base = {
        let c = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = c.alloc(Layout::from_size_align(16, 8).unwrap()).unwrap();
        p.as_ptr().addr() & !(CHUNK - 1)
    };
    let reader = {
        let (arena, done) = (Arc::clone(&arena), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !done.load(Ordering::Relaxed) {
                for off in (0..2 * CHUNK).step_by(4096 + 16) {
                    let ptr = std::ptr::without_provenance::<u8>(base + off);
                    seen += usize::from(arena.owner_of(ptr).is_some());
                }
            }
            seen
        })
    };
    for _ in 0..rounds {
        // Each client leaves its chunk with start bits set (deleted with live blocks), so the
        // next one to take it clears them.
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        for size in [16, 4096, 16] {
            client
                .alloc(Layout::from_size_align(size, 8).unwrap())
                .unwrap();
        }
        drop(client);
    }
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(arena.stats().held_chunks, 0);
}
