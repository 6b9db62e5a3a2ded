//! Loom models of frees through the arena from another thread: the read of a block's start
//! bit (which only the holder writes, with plain stores), the claim of its remote-free bit,
//! the push onto its holder's mailbox, and the holder taking the mailbox while it allocates
//! and frees. A free by the holder racing with a free of the same block through the arena is
//! excluded by `Arena::free`'s contract; ordered double frees are modelled.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p memvisor-arena --release --test loom_remote`.

#![cfg(loom)]

use std::alloc::Layout;
use std::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;
use memvisor_arena::{Arena, Backing, Config, Error, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize) -> Arc<Arena> {
    let config = Config::new().with_chunk_size(CHUNK);
    Arc::new(Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap())
}

fn small() -> Layout {
    Layout::from_size_align(48, 8).unwrap()
}

/// Frees the block at `addr` through the arena.
fn remote_free(arena: &Arena, addr: usize) -> Result<usize, Error> {
    // SAFETY: the block is not used after this, and its client outlives the call (the
    // models join this thread before dropping it).
    unsafe { arena.free(NonNull::new(addr as *mut u8).unwrap()) }
}

#[test]
fn remote_frees_race_with_holder_frees_and_all_come_back() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let a = client.alloc(small()).unwrap().as_ptr() as usize;
        let b = client.alloc(small()).unwrap().as_ptr() as usize;
        let c = client.alloc(small()).unwrap();
        let other = {
            let arena = arena.clone();
            thread::spawn(move || {
                assert_eq!(remote_free(&arena, a), Ok(48));
                assert_eq!(remote_free(&arena, b), Ok(48));
            })
        };
        // The holder frees its own block (and looks at its mailbox) meanwhile.
        // SAFETY: `c` is not used after this.
        assert_eq!(unsafe { client.free(c) }, Ok(48));
        other.join().unwrap();
        client.trim();
        let stats = client.stats();
        assert_eq!(
            (stats.live_blocks, stats.used_bytes, stats.chunks),
            (0, 0, 0)
        );
        assert_eq!(arena.stats().free_chunks, 1);
    });
}

#[test]
fn holder_allocs_in_the_start_word_a_remote_free_reads() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let a = client.alloc(small()).unwrap().as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || remote_free(&arena, a))
        };
        // The holder sets start bits of the same word with plain stores meanwhile.
        let b = client.alloc(small()).unwrap();
        let c = client.alloc(small()).unwrap();
        assert_eq!(other.join().unwrap(), Ok(48));
        assert!(client.owns(b.as_ptr()) && client.owns(c.as_ptr()));
        client.trim();
        assert_eq!(client.stats().live_blocks, 2);
        assert!(client.owns(b.as_ptr()) && client.owns(c.as_ptr()));
    });
}

#[test]
fn holder_free_after_remote_free_is_refused() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = client.alloc(small()).unwrap();
        let addr = p.as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || remote_free(&arena, addr))
        };
        assert_eq!(other.join().unwrap(), Ok(48));
        // SAFETY: a double free ordered after the first (by the join): refused.
        assert_eq!(unsafe { client.free(p) }, Err(Error::NotABlock { addr }));
        client.trim();
        assert_eq!(client.stats().live_blocks, 0);
        assert_eq!(client.stats().chunks, 0);
    });
}

#[test]
fn second_remote_free_racing_with_the_drain_is_refused() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let keep = client.alloc(small()).unwrap();
        let addr = client.alloc(small()).unwrap().as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || (remote_free(&arena, addr), remote_free(&arena, addr)))
        };
        // The holder takes its mailbox meanwhile: before, between or after the two frees.
        client.trim();
        let (first, second) = other.join().unwrap();
        assert_eq!(first, Ok(48));
        assert_eq!(second, Err(Error::NotABlock { addr }));
        client.trim();
        assert_eq!(client.stats().live_blocks, 1);
        assert!(client.owns(keep.as_ptr()));
    });
}

/// Racing frees are a caller's bug (`Arena::free`'s safety section); while the holder makes no
/// call, so the address cannot be handed out again, the claim still lets only one through.
#[test]
fn two_remote_frees_of_one_block_free_it_once() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let addr = client.alloc(small()).unwrap().as_ptr() as usize;
        let spawn = || {
            let arena = arena.clone();
            thread::spawn(move || remote_free(&arena, addr).is_ok())
        };
        let (one, two) = (spawn(), spawn());
        let (one, two) = (one.join().unwrap(), two.join().unwrap());
        assert!(one ^ two);
        client.trim();
        assert_eq!(client.stats().live_blocks, 0);
    });
}

/// As above, on the holder's quick free: the chunk keeps other live blocks and the client has
/// its bins, so only the mailbox stands between the claim and a second free of the block.
#[test]
fn holder_quick_free_after_remote_free_is_refused() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = client.alloc(small()).unwrap();
        let keep = client.alloc(small()).unwrap();
        let warm = client.alloc(small()).unwrap();
        // SAFETY: a live block, not used after.
        assert_eq!(unsafe { client.free(warm) }, Ok(48));
        let addr = p.as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || remote_free(&arena, addr))
        };
        assert_eq!(other.join().unwrap(), Ok(48));
        // SAFETY: a double free ordered after the first (by the join): refused.
        assert_eq!(unsafe { client.free(p) }, Err(Error::NotABlock { addr }));
        // Taken from the mailbox: its start bit is clear, and the quick free refuses it too.
        client.trim();
        // SAFETY: as above.
        assert_eq!(unsafe { client.free(p) }, Err(Error::NotABlock { addr }));
        assert_eq!(client.stats().live_blocks, 1);
        // SAFETY: a live block, not used after.
        assert_eq!(unsafe { client.free(keep) }, Ok(48));
    });
}
