//! Loom models of frees through the arena from another thread: the read of a block's start
//! bit (which only the holder writes, with plain stores), the claim of its remote-free bit,
//! the push onto its holder's mailbox, the holder taking the mailbox while it allocates and
//! frees, and the chunk going back to the arena (by a trim or the holder's deletion) and on to
//! another client. A free by the holder racing with a free of the same block through the arena is
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

/// Two threads free two blocks of one chunk through the arena at once, the first frees to land
/// in it: both race to make the chunk's remote-free bits (one table is kept) and to push onto
/// the holder's mailbox. Both blocks come back, once. (The holder taking its mailbox meanwhile
/// is modelled above; with it, this model takes too long.)
#[test]
fn remote_frees_of_two_blocks_on_two_threads_both_come_back() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let keep = client.alloc(small()).unwrap();
        let before = arena.bookkeeping_bytes();
        let b = client.alloc(small()).unwrap().as_ptr() as usize;
        let c = client.alloc(small()).unwrap().as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || remote_free(&arena, b))
        };
        // This thread frees the other block through the arena meanwhile.
        assert_eq!(remote_free(&arena, c), Ok(48));
        assert_eq!(other.join().unwrap(), Ok(48));
        // One table of remote-free bits: a KiB of chunk takes 8 bytes.
        assert_eq!(arena.bookkeeping_bytes() - before, CHUNK / 128);
        client.trim();
        assert_eq!(client.stats().live_blocks, 1);
        assert!(client.owns(keep.as_ptr()));
        // The two blocks are free once each: two new ones are distinct and apart from `keep`.
        let (b, c) = (
            client.alloc(small()).unwrap(),
            client.alloc(small()).unwrap(),
        );
        assert!(b != c && b != keep && c != keep);
    });
}

/// A free through the arena of a chunk's last live block, and a second free of it ordered
/// after the first, while the holder trims: taking the block in gives the chunk back to the
/// arena, so the second free finds the block in the mailbox, dead, or its chunk gone — and is
/// refused each time.
#[test]
fn second_remote_free_racing_with_the_chunk_going_back_is_refused() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let addr = client.alloc(small()).unwrap().as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || (remote_free(&arena, addr), remote_free(&arena, addr)))
        };
        client.trim();
        let (first, second) = other.join().unwrap();
        assert_eq!(first, Ok(48));
        assert!(
            matches!(
                second,
                Err(Error::NotABlock { .. } | Error::NotOwned { .. })
            ),
            "{second:?}"
        );
        client.trim();
        assert_eq!((client.stats().live_blocks, client.stats().chunks), (0, 0));
        assert_eq!(arena.stats().free_chunks, 1);
    });
}

/// The holder takes a block freed through the arena in and gives its chunk back while the
/// freeing thread's own client takes a chunk: if it gets that one, its tables (the start bits
/// and the remote-free bits the free made) are clean for it.
#[test]
fn chunk_with_remote_bits_goes_back_and_to_another_client_on_thread() {
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let addr = client.alloc(small()).unwrap().as_ptr() as usize;
        let other = {
            let arena = arena.clone();
            thread::spawn(move || {
                assert_eq!(remote_free(&arena, addr), Ok(48));
                let next = arena.create_client(Quota::UNLIMITED).unwrap();
                // Refused while the holder keeps the chunk.
                if let Ok(p) = next.alloc(small()) {
                    // The same first block of the same chunk, live for its new holder only.
                    assert_eq!(p.as_ptr() as usize, addr);
                    assert!(next.owns(p.as_ptr()));
                    assert_eq!(arena.owner_of(p.as_ptr()), Some(next.id()));
                    assert_eq!(remote_free(&arena, addr), Ok(48));
                    next.trim();
                    assert_eq!(next.stats().live_blocks, 0);
                }
            })
        };
        client.trim();
        other.join().unwrap();
        client.trim();
        assert_eq!(client.stats().chunks, 0);
        assert_eq!(arena.stats().free_chunks, 1);
    });
}

/// A client is deleted with a block still in its mailbox (the free through the arena has
/// returned, as its contract asks) while the freeing thread's own client takes a chunk: if it
/// gets the deleted client's chunk, the start bits and the remote-free bits are clean for it,
/// and its blocks are its own.
#[test]
fn client_deleted_with_mail_while_another_takes_its_chunk() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    loom::model(|| {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let addr = client.alloc(small()).unwrap().as_ptr() as usize;
        let freed = Arc::new(AtomicBool::new(false));
        let other = {
            let (arena, freed) = (arena.clone(), freed.clone());
            thread::spawn(move || {
                assert_eq!(remote_free(&arena, addr), Ok(48));
                freed.store(true, Ordering::Release);
                let next = arena.create_client(Quota::UNLIMITED).unwrap();
                if let Ok(p) = next.alloc(small()) {
                    assert_eq!(p.as_ptr() as usize, addr, "the same chunk, the same block");
                    assert_eq!(arena.owner_of(p.as_ptr()), Some(next.id()));
                    assert_eq!(remote_free(&arena, addr), Ok(48));
                    next.trim();
                    assert_eq!(next.stats().live_blocks, 0);
                }
            })
        };
        while !freed.load(Ordering::Acquire) {
            thread::yield_now();
        }
        drop(client);
        other.join().unwrap();
        let stats = arena.stats();
        assert_eq!((stats.free_chunks, stats.clients), (1, 0));
    });
}
