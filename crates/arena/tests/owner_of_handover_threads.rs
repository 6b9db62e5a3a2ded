//! `Arena::owner_of` on other threads while one chunk passes back and forth between two
//! clients: client `a` only ever has a block at the chunk's first slot, client `b` at its
//! first two, so an answer naming `a` for the second slot names a client for a block it never
//! had. (`arena::tests::owner_of_never_names_the_previous_holder_of_a_chunk` stops a reader at
//! the point where that happened; this runs the race freely.)

use std::alloc::Layout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memvisor_arena::{Arena, Backing, Config, Quota};

#[test]
fn owner_of_threads_never_name_a_previous_holder() {
    const CHUNK: usize = 64 << 10;
    let config = Config::new().with_chunk_size(CHUNK);
    let arena = Arc::new(Arena::new(Backing::heap(CHUNK, 4096).unwrap(), config).unwrap());
    let small = Layout::from_size_align(48, 8).unwrap();
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let second = {
        let p = b.alloc(small).unwrap();
        let q = b.alloc(small).unwrap();
        // SAFETY: live blocks of `b`, not used after.
        unsafe { (b.free(p).unwrap(), b.free(q).unwrap()) };
        b.trim();
        q.as_ptr().addr()
    };
    let rounds = if cfg!(miri) { 8 } else { 5_000 };
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (arena, done) = (Arc::clone(&arena), Arc::clone(&done));
            let a = a.id();
            std::thread::spawn(move || {
                let (mut named_b, mut wrong) = (0usize, 0usize);
                while !done.load(Ordering::Relaxed) {
                    match arena.owner_of(std::ptr::without_provenance(second)) {
                        Some(id) if id == a => wrong += 1,
                        Some(_) => named_b += 1,
                        None => {}
                    }
                }
                (named_b, wrong)
            })
        })
        .collect();
    for _ in 0..rounds {
        let p = a.alloc(small).unwrap();
        // SAFETY: a live block of `a`, not used after.
        unsafe { a.free(p).unwrap() };
        a.trim();
        let (p, q) = (b.alloc(small).unwrap(), b.alloc(small).unwrap());
        assert_eq!(q.as_ptr().addr(), second);
        // SAFETY: live blocks of `b`, not used after.
        unsafe { (b.free(p).unwrap(), b.free(q).unwrap()) };
        b.trim();
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        let (_named_b, wrong) = reader.join().unwrap();
        assert_eq!(wrong, 0, "owner_of named `a` for a block only `b` had");
    }
    assert_eq!(arena.stats().held_chunks, 0);
}
