//! Loom models of concurrent chunk hand-out and return.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-arena --release --test loom_handout`.

#![cfg(loom)]

use std::alloc::Layout;

use loom::sync::Arc;
use loom::thread;
use memvisor_arena::{Arena, Backing, Client, Config, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize) -> Arc<Arena> {
    let config = Config::new().with_chunk_size(CHUNK);
    Arc::new(Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap())
}

/// Takes a whole chunk for a new client, writes `tag` over it and checks it, and returns the
/// chunk's address, or `None` if no chunk was free. With `keep` the client is leaked, so it
/// holds its chunk for good.
fn take_chunk(arena: &Arena, tag: u8, keep: bool) -> Option<usize> {
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client
        .alloc(Layout::from_size_align(CHUNK, 8).unwrap())
        .ok()?;
    if keep {
        std::mem::forget(client);
    }
    // SAFETY: a live block of a whole chunk, owned by this client only.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), CHUNK) };
    bytes[0] = tag;
    bytes[CHUNK - 1] = tag;
    thread::yield_now();
    assert_eq!((bytes[0], bytes[CHUNK - 1]), (tag, tag));
    Some(p.as_ptr() as usize)
}

#[test]
fn two_clients_get_distinct_chunks() {
    loom::model(|| {
        let arena = arena(2);
        let other = {
            let arena = arena.clone();
            thread::spawn(move || take_chunk(&arena, 1, true))
        };
        let mine = take_chunk(&arena, 2, true).expect("two chunks for two clients");
        let theirs = other.join().unwrap().expect("two chunks for two clients");
        assert_ne!(mine, theirs);
        let stats = arena.stats();
        assert_eq!(
            (stats.free_chunks, stats.held_chunks, stats.clients),
            (0, 2, 2)
        );
    });
}

#[test]
fn one_chunk_is_never_handed_out_twice() {
    loom::model(|| {
        let arena = arena(1);
        let other = {
            let arena = arena.clone();
            thread::spawn(move || {
                let client = arena.create_client(Quota::UNLIMITED).unwrap();
                let got = client
                    .alloc(Layout::from_size_align(CHUNK, 8).unwrap())
                    .ok();
                // While this client lives, nobody else may hold the chunk.
                if let Some(p) = got {
                    // SAFETY: a live block of a whole chunk, owned by this client only.
                    unsafe { p.as_ptr().write(1) };
                    thread::yield_now();
                    // SAFETY: as above.
                    assert_eq!(unsafe { p.as_ptr().read() }, 1);
                }
                got.is_some()
            })
        };
        // This thread's client is created, used and dropped concurrently with the other.
        let mine = take_chunk(&arena, 2, false).is_some();
        let theirs = other.join().unwrap();
        assert!(mine || theirs, "the only chunk was lost");
        assert_eq!(arena.stats().free_chunks, 1);
    });
}

#[test]
fn chain_return_races_with_take() {
    loom::model(|| {
        let arena = arena(3);
        let leaving = arena.create_client(Quota::UNLIMITED).unwrap();
        let layout = Layout::from_size_align(CHUNK, 8).unwrap();
        leaving.alloc(layout).unwrap();
        leaving.alloc(layout).unwrap();
        let other = {
            let arena = arena.clone();
            thread::spawn(move || take_chunk(&arena, 3, true))
        };
        // Gives both chunks back in one exchange while the other thread takes one.
        drop(leaving);
        assert!(other.join().unwrap().is_some());
        let stats = arena.stats();
        assert_eq!((stats.free_chunks, stats.held_chunks), (2, 1));
    });
}

#[test]
fn chunk_given_back_below_a_scan_is_the_next_one_taken() {
    // Making an arena of 66 chunks under loom fills its tables one atomic at a time: more
    // steps than loom allows by default, though all on one thread.
    let mut model = loom::model::Builder::new();
    model.max_branches = 100_000;
    model.check(|| {
        // 66 chunks: the first bitmap word full but for chunk 5; chunks 64 and 65 free in the
        // second.
        let arena = arena(66);
        let layout = |chunks: usize| Layout::from_size_align(chunks * CHUNK, 8).unwrap();
        let runs = arena.create_client(Quota::UNLIMITED).unwrap();
        let base = runs.alloc(layout(5)).unwrap().as_ptr() as usize;
        let chunk_of = |addr: usize| (addr - base) / CHUNK;
        let leaving = arena.create_client(Quota::UNLIMITED).unwrap();
        let five = leaving.alloc(layout(1)).unwrap().as_ptr() as usize;
        assert_eq!(chunk_of(five), 5);
        runs.alloc(layout(58)).unwrap();
        assert_eq!(arena.stats().free_chunks, 2);
        // SAFETY: the thread that gets the client is joined below, before `arena` is dropped,
        // so the arena outlives the client.
        let leaving = unsafe { std::mem::transmute::<Client<'_>, Client<'static>>(leaving) };
        // Chunk 5 goes back while this thread takes a chunk, scanning past the first word.
        let other = thread::spawn(move || drop(leaving));
        let taken = chunk_of(take_chunk(&arena, 4, true).expect("chunks 64 and 65 are free"));
        other.join().unwrap();
        // Whichever chunk the take got, the next take gets the lowest free one: 5 or 64.
        let next = chunk_of(take_chunk(&arena, 5, true).expect("two chunks left"));
        assert!(
            (taken, next) == (5, 64) || (taken, next) == (64, 5),
            "took {taken} then {next}"
        );
        drop(runs);
    });
}
