//! Frees through the arena from other threads against what the docs promise of them: quotas
//! credited back when the holder takes the blocks in, mailboxes of idle clients, racing frees
//! of one block, and clients created and deleted in numbers.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Barrier;

use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize, flags: Flags) -> Arena {
    let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
    Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Frees the block at `addr` through the arena.
fn remote_free(arena: &Arena, addr: usize) -> Result<usize, Error> {
    // SAFETY: the tests never use a block after freeing it, and its client outlives the call.
    unsafe { arena.free(NonNull::new(addr as *mut u8).unwrap()) }
}

/// Frees each block of `addrs` through the arena on another thread, and waits for it.
fn remote_free_all(arena: &Arena, addrs: &[usize]) -> Vec<Result<usize, Error>> {
    std::thread::scope(|s| {
        s.spawn(|| addrs.iter().map(|&a| remote_free(arena, a)).collect())
            .join()
            .unwrap()
    })
}

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

/// A client at its quota gets the room of blocks another thread freed through the arena at its
/// next allocation, whether that allocation would be served from its caches, its slabs, buddy
/// pages or a run.
#[test]
fn alloc_at_quota_after_remote_free_on_thread_takes_the_room_back() {
    let small = if cfg!(miri) { 1024 } else { 4096 };
    for (size, quota, cached) in [
        (48, small, true),
        (48, small, false),
        (5000, 3 * CHUNK, false),
        (2 * CHUNK, 3 * CHUNK, false),
    ] {
        let arena = arena(8, Flags::STATISTICS);
        let client = arena.create_client(Quota::bytes(quota)).unwrap();
        let mut blocks = Vec::new();
        while let Ok(p) = client.alloc(layout(size)) {
            blocks.push(addr(p));
        }
        // A cached block of the size, and the room it left taken by a smaller block: the
        // next allocation of the size would come from the cache, but for the quota.
        let hit = cached.then(|| {
            let p = blocks.pop().unwrap();
            // SAFETY: not used after.
            unsafe { client.free(NonNull::new(p as *mut u8).unwrap()) }.unwrap();
            blocks.push(addr(client.alloc(layout(32)).unwrap()));
            p
        });
        assert!(matches!(
            client.alloc(layout(size)),
            Err(Error::QuotaExceeded { .. })
        ));
        let victim = blocks.remove(0);
        let freed = remote_free_all(&arena, &[victim]);
        assert!(freed[0].is_ok(), "{size}: {freed:?}");
        let used = client.stats().used_bytes;
        let p = client.alloc(layout(size)).unwrap_or_else(|e| {
            panic!("{size}: the block freed through the arena still counts: {e}")
        });
        if let Some(hit) = hit {
            // The cache also holds the block just taken in, freed last.
            assert!([hit, victim].contains(&addr(p)), "served from the cache");
        }
        assert_eq!(client.stats().used_bytes, used);
        assert_eq!(arena.stats().used_bytes, Some(used));
        assert_eq!(client.stats().live_blocks, blocks.len() + 1);
        assert!(client.owns(p.as_ptr()));
    }
}

/// Blocks freed through the arena into a client that never calls again stay counted as its
/// live blocks and keep its chunks, cost no memory but the chunks' remote-free bits, and go
/// back with the client when it is deleted.
#[test]
fn remote_frees_flooding_an_idle_client_are_bounded_and_go_back_at_delete() {
    let arena = arena(16, Flags::STATISTICS);
    let before = arena.bookkeeping_bytes();
    let idle = arena.create_client(Quota::UNLIMITED).unwrap();
    let n = if cfg!(miri) { 64 } else { 2000 };
    let blocks: Vec<usize> = (0..n)
        .map(|i| addr(idle.alloc(layout(16 + (i % 8) * 48)).unwrap()))
        .collect();
    let stats = idle.stats();
    let chunks = stats.chunks;
    assert!(remote_free_all(&arena, &blocks).iter().all(Result::is_ok));
    // Nothing taken in: the client made no call.
    assert_eq!(idle.stats().live_blocks, n);
    assert_eq!(idle.stats().chunks, chunks);
    assert_eq!(arena.stats().live_blocks, Some(n));
    assert_eq!(arena.stats().used_bytes, Some(stats.used_bytes));
    // One table of remote-free bits per chunk a free landed in, at most.
    assert!(arena.bookkeeping_bytes() <= before + chunks * CHUNK / 128);
    // Every block is refused a second time, on any path.
    for &a in &blocks[..blocks.len().min(64)] {
        assert_eq!(remote_free(&arena, a), Err(Error::NotABlock { addr: a }));
        assert!(!idle.owns(a as *const u8));
        assert_eq!(arena.owner_of(a as *const u8), None);
    }
    drop(idle);
    let s = arena.stats();
    assert_eq!(
        (s.held_chunks, s.clients, s.used_bytes, s.live_blocks),
        (0, 0, Some(0), Some(0))
    );
    assert_eq!(s.pinned_chunks, Some(0));
    assert_eq!(s.cached_bytes, Some(0));
    // The next holder of those chunks sees none of it.
    let next = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = next.alloc(layout(16)).unwrap();
    assert!(next.owns(p.as_ptr()));
    assert_eq!(remote_free_all(&arena, &[addr(p)])[0], Ok(16));
    next.trim();
    assert_eq!(next.stats().live_blocks, 0);
}

/// Two threads free each block through the arena at once while its holder makes no call:
/// exactly one free succeeds, the other gets a typed error, and the block is taken in once.
#[test]
fn remote_free_twice_on_two_threads_at_once_frees_once() {
    let arena = arena(16, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let n = if cfg!(miri) { 8 } else { 1000 };
    let keep = client.alloc(layout(32)).unwrap();
    let blocks: Vec<usize> = (0..n)
        .map(|i| addr(client.alloc(layout(16 + (i % 5) * 300)).unwrap()))
        .collect();
    let barrier = Barrier::new(2);
    let (mine, theirs): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let race = || {
            barrier.wait();
            blocks
                .iter()
                .map(|&a| remote_free(&arena, a))
                .collect::<Vec<_>>()
        };
        let one = s.spawn(race);
        let two = s.spawn(race);
        (one.join().unwrap(), two.join().unwrap())
    });
    for ((&a, one), two) in blocks.iter().zip(&mine).zip(&theirs) {
        match (one, two) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => assert_eq!(*e, Error::NotABlock { addr: a }),
            other => panic!("block {a:#x}: {other:?}"),
        }
    }
    assert_eq!(client.stats().live_blocks, n + 1);
    client.trim();
    let s = client.stats();
    assert_eq!((s.live_blocks, s.used_bytes), (1, 32));
    assert_eq!(arena.stats().live_blocks, Some(1));
    // Nothing was taken in twice: every block the client hands out now is distinct and apart
    // from `keep`.
    let mut again: Vec<(usize, usize)> = (0..n)
        .map(|i| {
            let (p, size) = client.alloc_sized(layout(16 + (i % 5) * 300)).unwrap();
            (addr(p), size)
        })
        .collect();
    again.push((addr(keep), 32));
    again.sort_unstable();
    for w in again.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:x?}");
    }
}

/// The holder trims (taking in its mailbox and giving back chunks left without a live block)
/// while another thread frees blocks through the arena, some of them twice in a row: every
/// block comes back once, every second free is refused, and the chunks all go back.
#[test]
fn remote_frees_race_with_holder_trim_on_thread() {
    let arena = arena(8, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let rounds = if cfg!(miri) { 2 } else { 100 };
    for round in 0..rounds {
        let blocks: Vec<usize> = (0..16)
            .map(|i| addr(client.alloc(layout(16 + (i + round) % 7 * 700)).unwrap()))
            .collect();
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                for &a in &blocks {
                    assert!(remote_free(&arena, a).is_ok());
                    // Ordered after the first: refused, whether the block is still in the
                    // mailbox, taken in, or its chunk gone back to the arena.
                    let again = remote_free(&arena, a);
                    assert!(
                        matches!(again, Err(Error::NotABlock { .. } | Error::NotOwned { .. })),
                        "{again:?}"
                    );
                }
            });
            while !other.is_finished() {
                client.trim();
            }
            other.join().unwrap();
        });
        client.trim();
        let s = client.stats();
        assert_eq!(
            (s.live_blocks, s.used_bytes, s.chunks),
            (0, 0, 0),
            "{round}"
        );
    }
    let s = arena.stats();
    assert_eq!((s.held_chunks, s.live_blocks), (0, Some(0)));
}

/// A client deleted with blocks in its caches, slabs, runs and mailbox leaves nothing behind,
/// over and over: ten thousand clients in turn, each with the identifier of the one before
/// (given back at its delete), none of whose memory the next one sees as its own, and the
/// arena's statistics come back to empty.
#[test]
fn create_and_delete_many_clients_leaves_nothing_behind() {
    let arena = arena(8, Flags::STATISTICS);
    let before = arena.stats();
    let n = if cfg!(miri) { 8 } else { 10_000 };
    let mut stale = Vec::new();
    for i in 0..n {
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        assert_eq!(client.id(), 1, "the deleted client's id is reused");
        for &a in &stale {
            assert!(!client.owns(a as *const u8));
        }
        stale.clear();
        let a = client.alloc(layout(48)).unwrap();
        let b = client.alloc(layout(3000)).unwrap();
        stale.extend([addr(a), addr(b)]);
        match i % 4 {
            // A cached block.
            // SAFETY: not used after.
            0 => assert_eq!(unsafe { client.free(b) }, Ok(3072)),
            // A block in the mailbox.
            1 => assert_eq!(remote_free(&arena, addr(b)), Ok(3072)),
            // A run.
            2 => stale.push(addr(client.alloc(layout(CHUNK + 1)).unwrap())),
            _ => {}
        }
        if i % 2 == 0 {
            arena.delete_client(client);
        } else {
            drop(client);
        }
        let s = arena.stats();
        assert_eq!(
            (s.held_chunks, s.clients, s.used_bytes, s.live_blocks),
            (0, 0, Some(0), Some(0)),
            "after client {i}"
        );
        assert_eq!((s.cached_bytes, s.pinned_chunks), (Some(0), Some(0)));
        for &p in &stale {
            assert_eq!(arena.owner_of(p as *const u8), None);
        }
    }
    let after = arena.stats();
    assert_eq!(after.free_chunks, before.free_chunks);
    assert_eq!(after.largest_free_block, before.largest_free_block);
}

/// Ten thousand clients alive at once, most never allocating: they cost no chunk, and the
/// ones that allocate each get their own.
#[test]
fn many_live_clients_cost_no_chunks_until_they_allocate() {
    let arena = arena(8, Flags::STATISTICS);
    let n = if cfg!(miri) { 16 } else { 10_000 };
    let clients: Vec<Client<'_>> = (0..n)
        .map(|_| arena.create_client(Quota::UNLIMITED).unwrap())
        .collect();
    assert_eq!(arena.stats().clients, n);
    assert_eq!(arena.stats().held_chunks, 0);
    let some: Vec<_> = clients
        .iter()
        .step_by(n / 8)
        .map(|c| (c, c.alloc(layout(16)).unwrap()))
        .collect();
    assert_eq!(arena.stats().held_chunks, 8);
    // A ninth allocating client finds no chunk.
    assert!(matches!(
        clients[1].alloc(layout(16)),
        Err(Error::OutOfMemory { .. })
    ));
    for (c, p) in &some {
        for (other, q) in &some {
            assert_eq!(c.owns(q.as_ptr()), c.id() == other.id());
        }
        assert_eq!(arena.owner_of(p.as_ptr()), Some(c.id()));
    }
    drop(some);
    drop(clients);
    let s = arena.stats();
    assert_eq!((s.clients, s.held_chunks, s.live_blocks), (0, 0, Some(0)));
}

/// Clients on two threads allocate, free their own blocks and free each other's through the
/// arena: afterwards the arena's statistics are the sums of the clients' (nothing counted
/// twice or lost in the races), and each client's live blocks are still its own.
#[test]
fn stats_of_clients_freeing_each_others_blocks_on_threads_add_up() {
    let arena = arena(if cfg!(miri) { 16 } else { 256 }, Flags::STATISTICS);
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    let (to_one, from_two) = std::sync::mpsc::channel::<usize>();
    let (to_two, from_one) = std::sync::mpsc::channel::<usize>();
    let work = |client: &Client<'_>,
                send: std::sync::mpsc::Sender<usize>,
                recv: std::sync::mpsc::Receiver<usize>,
                seed: usize| {
        let mut mine = Vec::new();
        for i in 0..rounds {
            let size = 16 + (i * 37 + seed) % 5000;
            let p = client.alloc(layout(size)).unwrap();
            match i % 4 {
                0 => send.send(addr(p)).unwrap(),
                // SAFETY: not used after.
                1 | 2 => assert!(unsafe { client.free(p) }.is_ok()),
                _ => mine.push(p),
            }
            while let Ok(a) = recv.try_recv() {
                assert!(remote_free(&arena, a).is_ok());
            }
        }
        drop(send);
        for a in recv {
            assert!(remote_free(&arena, a).is_ok());
        }
        mine
    };
    let (one, two) = (
        arena.create_client(Quota::UNLIMITED).unwrap(),
        arena.create_client(Quota::UNLIMITED).unwrap(),
    );
    let (one, two, mine_one, mine_two) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mine = work(&one, to_two, from_two, 0);
            (one, mine.into_iter().map(addr).collect::<Vec<_>>())
        });
        let b = s.spawn(|| {
            let mine = work(&two, to_one, from_one, 11);
            (two, mine.into_iter().map(addr).collect::<Vec<_>>())
        });
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        (a.0, b.0, a.1, b.1)
    });
    for (client, mine) in [(&one, &mine_one), (&two, &mine_two)] {
        client.trim();
        assert_eq!(client.stats().live_blocks, mine.len());
        for &a in mine {
            assert_eq!(arena.owner_of(a as *const u8), Some(client.id()));
        }
    }
    let (a, b, s) = (one.stats(), two.stats(), arena.stats());
    assert_eq!(s.used_bytes, Some(a.used_bytes + b.used_bytes));
    assert_eq!(s.live_blocks, Some(a.live_blocks + b.live_blocks));
    assert_eq!(s.cached_bytes, Some(a.cached_bytes + b.cached_bytes));
    assert_eq!(s.pinned_chunks, Some(a.pinned_chunks + b.pinned_chunks));
    assert_eq!(s.held_chunks, a.chunks + b.chunks);
    drop((one, two));
    let s = arena.stats();
    assert_eq!(
        (s.used_bytes, s.live_blocks, s.held_chunks),
        (Some(0), Some(0), 0)
    );
}
