//! Loom model of the arena's statistics read while chunks change hands.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-arena --release --test loom_stats`.

#![cfg(loom)]

use std::alloc::Layout;

use loom::thread;
use memvisor_arena::{Arena, Backing, Config, Quota};

const CHUNK: usize = 64 << 10;

/// One client gives its chunk back while another takes it and a third thread reads the
/// statistics: a chunk held throughout by a fourth client is never reported free (the free
/// count, lowered by the taker before the giver raised it, must not read as all chunks free).
#[test]
fn a_held_chunk_is_never_reported_free() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let config = Config::new().with_chunk_size(CHUNK);
        // Leaked, so that clients made here can move to the threads (`'static`).
        let arena: &'static Arena = Box::leak(Box::new(
            Arena::new(Backing::heap(2 * CHUNK, 4096).unwrap(), config).unwrap(),
        ));
        let whole = Layout::from_size_align(CHUNK, 16).unwrap();
        let kept = arena.create_client(Quota::UNLIMITED).unwrap();
        let _p = kept.alloc(whole).unwrap();
        std::mem::forget(kept);
        let giver = arena.create_client(Quota::UNLIMITED).unwrap();
        let q = giver.alloc(whole).unwrap();
        let give = {
            thread::spawn(move || {
                let giver = giver;
                // SAFETY: not used after.
                unsafe { giver.free(q) }.unwrap();
                giver.trim();
                std::mem::forget(giver);
            })
        };
        let take = {
            thread::spawn(move || {
                let taker = arena.create_client(Quota::UNLIMITED).unwrap();
                let _ = taker.alloc(whole);
                std::mem::forget(taker);
            })
        };
        let st = arena.stats();
        assert!(st.free_chunks <= 1 && st.held_chunks >= 1, "{st:?}");
        give.join().unwrap();
        take.join().unwrap();
    });
}
