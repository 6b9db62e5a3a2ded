//! Isolation under pressure, as a language VM with many threads uses an arena: each thread
//! owns clients, fills every block it allocates with a tag of its client and block, hands
//! blocks to other threads that free them through the arena while the owners allocate, free,
//! trim and run out of memory, and deletes clients whose blocks wait in their mailboxes. No
//! block may ever lose its tag (no client gets memory another still holds), and every bad free
//! is a typed error that changes nothing.

#![allow(clippy::cast_possible_truncation)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};

const CHUNK: usize = 64 << 10;
/// Clients each thread owns at a time.
const SLOTS: usize = 2;

#[path = "common/rng.rs"]
mod rng;

use rng::Rng;

/// A live block and the tag its words hold.
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    words: usize,
    tag: u64,
}

impl Block {
    fn ptr(self) -> NonNull<u8> {
        NonNull::new(self.addr as *mut u8).unwrap()
    }

    /// The block's words (at most the first 4 KiB and the last word, so that large runs
    /// cost little to check).
    fn probe(self) -> impl Iterator<Item = *mut u64> {
        let head = self.words.min(512);
        (0..head)
            .chain(std::iter::once(self.words - 1))
            .map(move |i| (self.addr as *mut u64).wrapping_add(i))
    }

    fn fill(self) {
        for w in self.probe() {
            // SAFETY: the block is live, at least `words` words long, 16-aligned, and only
            // its holder's thread (or the thread it was handed to) uses it.
            unsafe { w.write(self.tag) };
        }
    }

    fn check(self, what: &str) {
        for w in self.probe() {
            // SAFETY: as in `fill`.
            let v = unsafe { w.read() };
            assert_eq!(
                v, self.tag,
                "{what}: block {:#x} word {:#x} holds {v:#x}, not its tag {:#x}",
                self.addr, w as usize, self.tag
            );
        }
    }
}

/// A block handed to another thread to free through the arena; `pending` is its client's
/// count of such frees in flight.
struct Handed<'c> {
    block: Block,
    owner: u32,
    pending: &'c AtomicUsize,
}

/// A client owned by one thread, its live blocks and its frees in flight on other threads.
struct Owned<'a, 'c> {
    client: Client<'a>,
    live: Vec<Block>,
    pending: &'c AtomicUsize,
}

fn size_for(rng: &mut Rng) -> usize {
    let small = cfg!(miri);
    match rng.below(16) {
        0..=8 => 1 + rng.below(2048),
        9..=12 => 2049 + rng.below(if small { 4096 } else { CHUNK / 2 }),
        13 | 14 if !small => CHUNK / 2 + rng.below(CHUNK / 2 + 1),
        15 if !small => CHUNK + 1 + rng.below(2 * CHUNK),
        _ => 16,
    }
}

/// Bad frees and lookups around live block `b` of `owned` (on its thread, which alone can
/// change its chunk): each is refused with its typed error and changes nothing.
fn bad_frees_change_nothing(arena: &Arena, owned: &Owned<'_, '_>, b: Block) {
    let id = owned.client.id();
    let before = owned.client.stats();
    let size = owned.client.size_of(b.ptr().as_ptr()).unwrap();
    assert_eq!(arena.owner_of(b.ptr().as_ptr()), Some(id));
    for delta in [1, 8, 16, size / 2, size - 16] {
        if delta == 0 || delta >= size {
            continue;
        }
        let inner = NonNull::new(b.ptr().as_ptr().wrapping_add(delta)).unwrap();
        assert_eq!(arena.owner_of(inner.as_ptr()), None);
        // SAFETY: `inner` starts no block (it lies inside live block `b`), so it is refused.
        let err = unsafe { arena.free(inner) }.unwrap_err();
        assert!(matches!(err, Error::NotABlock { .. }), "{err:?}");
        // SAFETY: as above.
        let err = unsafe { owned.client.free(inner) }.unwrap_err();
        assert!(matches!(err, Error::NotABlock { .. }), "{err:?}");
    }
    let end = arena.backing().as_ptr().wrapping_add(arena.backing().len());
    let past = NonNull::new(end).unwrap();
    assert_eq!(arena.owner_of(past.as_ptr()), None);
    // SAFETY: outside the arena: refused.
    let err = unsafe { arena.free(past) }.unwrap_err();
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
    assert_eq!(owned.client.stats(), before);
    b.check("after bad frees");
}

/// One thread: `rounds` random steps over its clients, frees of blocks other threads hand it.
fn worker<'c>(
    arena: &Arena,
    me: usize,
    rounds: usize,
    counters: &'c [AtomicUsize],
    inbox: &mpsc::Receiver<Handed<'c>>,
    peers: &[mpsc::Sender<Handed<'c>>],
    quota: bool,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((me as u64 + 1) * 0x2545_F491_4F6C_DD1D));
    let mut serial = 0u64;
    let new_client = |slot: usize, rng: &mut Rng| {
        let quota = if quota && rng.below(2) == 0 {
            Quota::bytes(CHUNK * (1 + rng.below(4)))
        } else {
            Quota::UNLIMITED
        };
        Owned {
            client: arena.create_client(quota).unwrap(),
            live: Vec::new(),
            pending: &counters[me * SLOTS + slot],
        }
    };
    let mut owned: Vec<Owned<'_, 'c>> = (0..SLOTS).map(|s| new_client(s, &mut rng)).collect();
    let free_handed = |h: Handed| {
        h.block.check("handed over");
        assert_eq!(arena.owner_of(h.block.ptr().as_ptr()), Some(h.owner));
        // SAFETY: the block was handed over through a channel, its only free is this one,
        // and its client is not deleted while `pending` counts this call.
        let freed = unsafe { arena.free(h.block.ptr()) }.unwrap();
        assert!(freed >= h.block.words * 8);
        h.pending.fetch_sub(1, Ordering::Release);
    };
    for _ in 0..rounds {
        while let Ok(h) = inbox.try_recv() {
            free_handed(h);
        }
        let slot = rng.below(SLOTS);
        let o = &mut owned[slot];
        match rng.below(20) {
            0..=8 => {
                let size = size_for(&mut rng);
                let align = 1 << rng.below(8);
                match o
                    .client
                    .alloc(Layout::from_size_align(size, align).unwrap())
                {
                    Ok(p) => {
                        serial += 1;
                        let b = Block {
                            addr: p.as_ptr() as usize,
                            words: size.div_ceil(8).max(1),
                            tag: u64::from(o.client.id()) << 40 | (me as u64) << 32 | serial,
                        };
                        assert_eq!(arena.owner_of(p.as_ptr()), Some(o.client.id()));
                        b.fill();
                        o.live.push(b);
                    }
                    Err(Error::OutOfMemory { .. } | Error::QuotaExceeded { .. }) => {
                        // Short of memory: give some back.
                        for _ in 0..o.live.len() / 2 {
                            let b = o.live.swap_remove(rng.below(o.live.len()));
                            b.check("freed under pressure");
                            // SAFETY: a live block of the client, not used again.
                            unsafe { o.client.free(b.ptr()) }.unwrap();
                        }
                    }
                    Err(Error::TooLarge { .. }) if size > arena.max_block_size() => {}
                    Err(e) => panic!("allocation of {size} bytes: {e:?}"),
                }
            }
            9..=11 if !o.live.is_empty() => {
                let b = o.live.swap_remove(rng.below(o.live.len()));
                b.check("freed by its client");
                // SAFETY: a live block of the client, not used again.
                unsafe { o.client.free(b.ptr()) }.unwrap();
            }
            12..=14 if !o.live.is_empty() => {
                let b = o.live.swap_remove(rng.below(o.live.len()));
                b.check("handed over");
                o.pending.fetch_add(1, Ordering::Relaxed);
                let to = rng.below(peers.len());
                peers[to]
                    .send(Handed {
                        block: b,
                        owner: o.client.id(),
                        pending: o.pending,
                    })
                    .unwrap();
            }
            15 if !o.live.is_empty() => {
                let b = o.live[rng.below(o.live.len())];
                bad_frees_change_nothing(arena, o, b);
            }
            16 => o.client.trim(),
            17 => arena.trim(),
            18 if o.pending.load(Ordering::Acquire) == 0 => {
                // Deleted with blocks possibly waiting in its mailbox; no free through the
                // arena of its blocks is in flight.
                for b in &o.live {
                    b.check("before deletion");
                }
                let old = std::mem::replace(o, new_client(slot, &mut rng));
                arena.delete_client(old.client);
            }
            _ => {
                for b in &o.live {
                    b.check("checked");
                }
            }
        }
    }
    // Wait until every block handed out by this thread is freed, freeing those handed to it.
    while owned.iter().any(|o| o.pending.load(Ordering::Acquire) != 0) {
        while let Ok(h) = inbox.try_recv() {
            free_handed(h);
        }
        std::thread::yield_now();
    }
    for o in owned {
        for b in o.live {
            b.check("at the end");
            // SAFETY: a live block of the client, not used again.
            unsafe { o.client.free(b.ptr()) }.unwrap();
        }
        o.client.trim();
        let s = o.client.stats();
        assert_eq!((s.live_blocks, s.used_bytes, s.chunks), (0, 0, 0));
    }
}

fn run(arena: &Arena, threads: usize, rounds: usize, quota: bool) {
    let counters: Vec<AtomicUsize> = (0..threads * SLOTS).map(|_| AtomicUsize::new(0)).collect();
    let counters = &counters[..];
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (me, inbox) in receivers.into_iter().enumerate() {
            let peers = senders.clone();
            let done = &done;
            scope.spawn(move || {
                worker(arena, me, rounds, counters, &inbox, &peers, quota);
                done.fetch_add(1, Ordering::AcqRel);
                // Keep freeing what other threads hand over until they are all done.
                while done.load(Ordering::Acquire) < threads {
                    while let Ok(h) = inbox.try_recv() {
                        h.block.check("handed over late");
                        // SAFETY: as in `worker`.
                        unsafe { arena.free(h.block.ptr()) }.unwrap();
                        h.pending.fetch_sub(1, Ordering::Release);
                    }
                    std::thread::yield_now();
                }
            });
        }
    });
    let s = arena.stats();
    assert_eq!((s.held_chunks, s.clients), (0, 0));
    assert_eq!(s.free_chunks, s.chunks);
}

fn threads_and_rounds() -> (usize, usize) {
    if cfg!(miri) { (2, 8) } else { (4, 4000) }
}

/// Four threads of two clients each in an arena of 24 chunks of 64 KiB: they run out of
/// memory often, and every block keeps its tag throughout.
#[test]
fn clients_on_threads_under_pressure_never_share_memory() {
    let (threads, rounds) = threads_and_rounds();
    let all = [
        Flags::STATISTICS | Flags::POISON | Flags::ZERO,
        Flags::empty(),
    ];
    for flags in &all[..if cfg!(miri) { 1 } else { 2 }] {
        let config = Config::new().with_chunk_size(CHUNK).with_flags(*flags);
        let chunks = if cfg!(miri) { 6 } else { 24 };
        let arena = Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap();
        run(&arena, threads, rounds, true);
        if !cfg!(miri) {
            run(&arena, threads, rounds, false);
        }
    }
}

/// The same over a reservation with guard pages after each chunk and released chunks
/// decommitted: a block reaching a guard page or a decommitted chunk faults.
#[cfg(feature = "std")]
#[test]
#[cfg_attr(miri, ignore = "a reservation is mmap")]
fn clients_on_threads_over_a_guarded_reservation_never_share_memory() {
    let (threads, rounds) = threads_and_rounds();
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::GUARD | Flags::DECOMMIT | Flags::STATISTICS);
    let arena = Arena::with_reservation(24 * CHUNK, config).unwrap();
    run(&arena, threads, rounds, true);
}

/// Pointers to the blocks of a deleted client — small, buddy, a whole chunk, a run, a block
/// left in its mailbox — and around them (inside, past the run's end, past the arena's end):
/// refused with their typed error, changing nothing, both while their chunks are free and
/// once another client holds them, whose blocks keep their tags.
#[test]
fn deleted_clients_pointers_are_refused_and_change_nothing() {
    let config = Config::new().with_chunk_size(CHUNK);
    let arena = Arena::new(Backing::heap(6 * CHUNK, CHUNK).unwrap(), config).unwrap();
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let sizes = [16, 100, 5000, 40_000, CHUNK, 2 * CHUNK + 1];
    let blocks: Vec<(NonNull<u8>, usize)> = sizes
        .iter()
        .map(|&size| {
            (
                a.alloc(Layout::from_size_align(size, 8).unwrap()).unwrap(),
                size,
            )
        })
        .collect();
    // The 100-byte block waits in the mailbox when its client goes.
    // SAFETY: a live block of `a`, not used again; `a` outlives the call.
    unsafe { arena.free(blocks[1].0) }.unwrap();
    arena.delete_client(a);
    let end = arena.backing().as_ptr().wrapping_add(arena.backing().len());
    let mut stale: Vec<*mut u8> = Vec::new();
    for &(p, size) in &blocks {
        stale.extend([
            p.as_ptr(),
            p.as_ptr().wrapping_add(16),
            p.as_ptr().wrapping_add(size.next_multiple_of(16)),
        ]);
    }
    stale.push(blocks[5].0.as_ptr().wrapping_add(2 * CHUNK));
    let refused = |b: Option<&Client<'_>>| {
        let before = (
            arena.stats(),
            b.map(Client::stats),
            arena.bookkeeping_bytes(),
        );
        for &p in &stale {
            if b.is_some_and(|b| b.owns(p)) {
                // A block of the new holder at that address: not a stale pointer any more.
                continue;
            }
            assert_eq!(arena.owner_of(p), None, "{p:?}");
            let ptr = NonNull::new(p).unwrap();
            // SAFETY: no live block starts at `p`, so nothing is freed.
            let err = unsafe { arena.free(ptr) }.unwrap_err();
            // Free chunks have no owner; the new holder's chunks have no block there.
            if b.is_none() {
                assert!(matches!(err, Error::NotOwned { .. }), "{p:?}: {err:?}");
            } else {
                assert!(matches!(err, Error::NotABlock { .. }), "{p:?}: {err:?}");
            }
            if let Some(b) = b {
                // SAFETY: as above.
                assert!(unsafe { b.free(ptr) }.is_err());
            }
        }
        let past = NonNull::new(end).unwrap();
        assert_eq!(arena.owner_of(end), None);
        // SAFETY: outside the arena.
        let err = unsafe { arena.free(past) }.unwrap_err();
        assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
        assert_eq!(
            (
                arena.stats(),
                b.map(Client::stats),
                arena.bookkeeping_bytes()
            ),
            before
        );
    };
    refused(None);
    // Another client takes every chunk again, in blocks of every shape, tagged.
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut live = Vec::new();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut serial = 0;
    loop {
        // Under Miri, fewer and larger blocks.
        let sizes: &[usize] = if cfg!(miri) {
            &[5000, 40_000]
        } else {
            &[16, 100, 5000, 40_000]
        };
        let size = sizes[rng.below(sizes.len())];
        let Ok(p) = b.alloc(Layout::from_size_align(size, 8).unwrap()) else {
            break;
        };
        serial += 1;
        let block = Block {
            addr: p.as_ptr() as usize,
            words: size / 8,
            tag: u64::from(b.id()) << 40 | serial,
        };
        block.fill();
        live.push(block);
    }
    assert_eq!(arena.stats().free_chunks, 0);
    refused(Some(&b));
    for block in live {
        block.check("the new holder's block");
        // SAFETY: a live block of `b`, not used again.
        unsafe { b.free(block.ptr()) }.unwrap();
    }
}

/// Pointers into the backing outside every chunk — the padding before chunk 0 and the tail
/// after the last chunk — are no client's: refused as foreign by the arena and by a client
/// that holds every chunk, changing nothing.
#[test]
fn pointers_in_the_padding_and_the_tail_are_foreign() {
    let chunks = 3;
    let total = (chunks + 2) * CHUNK;
    let memory = std::alloc::Layout::from_size_align(total, CHUNK).unwrap();
    // SAFETY: a non-zero size.
    let raw = unsafe { std::alloc::alloc_zeroed(memory) };
    assert!(!raw.is_null());
    // A page into the allocation, so chunk 0 (aligned to a chunk) starts a chunk less a page
    // later, and the last chunk is followed by three pages of tail.
    let start = raw.wrapping_add(4096);
    let len = (chunks + 1) * CHUNK - 4096 + 3 * 4096;
    {
        // SAFETY: `start..start + len` lies in the allocation, which nothing else uses and
        // which outlives the arena (freed below, after it is dropped).
        let backing = unsafe { Backing::from_raw(NonNull::new(start).unwrap(), len) };
        let config = Config::new().with_chunk_size(CHUNK).with_alignment(CHUNK);
        let arena = Arena::new(backing, config).unwrap();
        assert_eq!(arena.chunk_count(), chunks);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let blocks: Vec<_> = (0..chunks)
            .map(|_| {
                client
                    .alloc(Layout::from_size_align(CHUNK, 8).unwrap())
                    .unwrap()
            })
            .collect();
        let first = raw.wrapping_add(CHUNK);
        assert_eq!(blocks[0].as_ptr(), first);
        let tail = first.wrapping_add(chunks * CHUNK);
        let outside = [
            start,
            first.wrapping_sub(16),
            tail,
            tail.wrapping_add(16),
            start.wrapping_add(len - 16),
        ];
        let before = (arena.stats(), client.stats(), arena.bookkeeping_bytes());
        for p in outside {
            assert!(!arena.contains(p), "{p:?}");
            assert_eq!(arena.owner_of(p), None, "{p:?}");
            assert!(!client.owns(p), "{p:?}");
            let ptr = NonNull::new(p).unwrap();
            // SAFETY: no block starts at `p`, so nothing is freed.
            let err = unsafe { arena.free(ptr) }.unwrap_err();
            assert!(matches!(err, Error::Foreign { .. }), "{p:?}: {err:?}");
            // SAFETY: as above.
            let err = unsafe { client.free(ptr) }.unwrap_err();
            assert!(matches!(err, Error::Foreign { .. }), "{p:?}: {err:?}");
            assert!(matches!(client.size_of(p), Err(Error::Foreign { .. })));
        }
        assert_eq!(
            (arena.stats(), client.stats(), arena.bookkeeping_bytes()),
            before
        );
        for p in blocks {
            // SAFETY: live blocks of the client, not used again.
            unsafe { client.free(p) }.unwrap();
        }
    }
    // SAFETY: allocated above with `memory`; the arena is gone.
    unsafe { std::alloc::dealloc(raw, memory) };
}
