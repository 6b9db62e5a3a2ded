//! `Arena::decommit_free_chunks` on one thread while clients on others take and give back
//! every chunk of the arena: an allocation waits for the chunk that is out of the free set for
//! its decommit (refused only when the decommit's thread has not run for `DECOMMIT_WAIT`, as on
//! a loaded machine, and then asked again), every block reads what its client wrote, and the
//! statistics come back exact.

#![cfg(feature = "std")]

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use memvisor_arena::{Arena, Config, Error, Exhausted, Quota};

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
    /// Stops the decommitting thread when the takers end, also when one fails (the test then
    /// fails instead of waiting for ever on that thread).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (decommitted, refusals) = thread::scope(|s| {
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
                    let mut refusals = 0usize;
                    for round in 0..ROUNDS {
                        let tag = u8::try_from((t * ROUNDS + round) % 251).unwrap();
                        // Both clients together ask for every chunk of the arena.
                        let blocks: Vec<_> = (0..PER_CLIENT)
                            .map(|_| {
                                loop {
                                    match client.alloc(layout) {
                                        Ok(p) => break p,
                                        Err(Error::OutOfMemory {
                                            exhausted: Exhausted::Decommitting { .. },
                                            ..
                                        }) => refusals += 1,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            })
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
                    refusals
                })
            })
            .collect();
        let done = Done(&done);
        let refusals: usize = takers.into_iter().map(|t| t.join().unwrap()).sum();
        drop(done);
        (trimmer.join().unwrap(), refusals)
    });
    // A refusal waited 100 ms for a decommit of microseconds: only a descheduled decommitting
    // thread makes one, never one allocation in twenty (without the wait, most races would).
    assert!(
        refusals * 20 <= CLIENTS * PER_CLIENT * ROUNDS,
        "{refusals} allocations refused while a decommit held their chunk"
    );
    let stats = arena.stats();
    assert_eq!(stats.held_chunks, 0);
    assert_eq!(stats.free_chunks, CLIENTS * PER_CLIENT);
    assert_eq!(stats.clients, 0);
    assert!(decommitted > 0, "the race was not run");
    let left = stats.cached_chunks;
    assert_eq!(arena.decommit_free_chunks(), Ok(left));
    assert_eq!(arena.stats().cached_chunks, 0);
}
