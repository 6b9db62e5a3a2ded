//! `Arena::decommit_free_chunks` on one thread while clients on others take and give back
//! every chunk of the arena: no allocation is refused for the chunk that is out of the free
//! set for its decommit, every block reads what its client wrote, and the statistics come
//! back exact.

#![cfg(feature = "std")]

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use memvisor_arena::{Arena, Config, Quota};

const CHUNK: usize = 64 << 10;

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of system calls racing; the unit test covers the logic"
)]
fn decommit_free_chunks_racing_with_takers_refuses_no_allocation() {
    const CLIENTS: usize = 2;
    const PER_CLIENT: usize = 2;
    const ROUNDS: usize = 1_000;
    let arena = Arena::with_reservation(
        CLIENTS * PER_CLIENT * CHUNK,
        Config::new().with_chunk_size(CHUNK),
    )
    .unwrap();
    let layout = Layout::from_size_align(CHUNK, 16).unwrap();
    let done = AtomicBool::new(false);
    let decommitted = thread::scope(|s| {
        let trimmer = s.spawn(|| {
            let mut decommitted = 0;
            while !done.load(Ordering::Relaxed) {
                decommitted += arena.decommit_free_chunks().unwrap();
            }
            decommitted
        });
        let takers: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let client = arena.create_client(Quota::UNLIMITED).unwrap();
                    for round in 0..ROUNDS {
                        let tag = u8::try_from((t * ROUNDS + round) % 251).unwrap();
                        // Both clients together ask for every chunk of the arena.
                        let blocks: Vec<_> = (0..PER_CLIENT)
                            .map(|_| client.alloc(layout).unwrap_or_else(|e| panic!("{e}")))
                            .collect();
                        for &p in &blocks {
                            // SAFETY: a live block of a chunk.
                            unsafe { p.as_ptr().write_bytes(tag, CHUNK) };
                        }
                        for p in blocks {
                            // SAFETY: as above; read, then freed and not used after.
                            unsafe {
                                assert_eq!(p.as_ptr().read(), tag);
                                assert_eq!(p.as_ptr().add(CHUNK - 1).read(), tag);
                                client.free(p).unwrap();
                            }
                        }
                        client.trim();
                    }
                    arena.delete_client(client);
                })
            })
            .collect();
        for t in takers {
            t.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        trimmer.join().unwrap()
    });
    let stats = arena.stats();
    assert_eq!(stats.held_chunks, 0);
    assert_eq!(stats.free_chunks, CLIENTS * PER_CLIENT);
    assert_eq!(stats.clients, 0);
    assert!(decommitted > 0, "the race was not run");
    let left = stats.cached_chunks;
    assert_eq!(arena.decommit_free_chunks(), Ok(left));
    assert_eq!(arena.stats().cached_chunks, 0);
}
