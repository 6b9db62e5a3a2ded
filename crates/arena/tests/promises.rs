//! Promises of the documentation checked one by one: each error with the fields its
//! documentation gives it, and "nothing changes on error" against a full snapshot of the
//! arena and the client.

use std::alloc::Layout;
use std::ptr::NonNull;

use memvisor_arena::{
    Arena, ArenaStats, Backing, Client, ClientStats, Config, Error, Exhausted, Flags, Quota,
};

const CHUNK: usize = 64 << 10;

/// Rounds of the random workloads: fewer under Miri, which runs them a thousand times slower.
const ROUNDS: usize = if cfg!(miri) { 150 } else { 2000 };

fn arena(chunks: usize, flags: Flags) -> Arena {
    let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
    Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn free(client: &Client<'_>, p: NonNull<u8>) -> Result<usize, Error> {
    // SAFETY: the tests never use a block after freeing it.
    unsafe { client.free(p) }
}

fn snapshot(arena: &Arena, client: &Client<'_>) -> (ArenaStats, ClientStats) {
    (arena.stats(), client.stats())
}

/// `Backing::heap` names the length the global allocator refused. A quarter of a 32-bit
/// address space can be had, so the refusal is checked where `usize` has 64 bits.
#[test]
#[cfg(target_pointer_width = "64")]
#[cfg_attr(
    miri,
    ignore = "Miri stops at an allocation it cannot make instead of refusing it"
)]
fn heap_backing_the_allocator_refuses_is_out_of_memory_of_its_length() {
    let len = (isize::MAX as usize / 2) & !4095;
    assert_eq!(
        Backing::heap(len, 4096).unwrap_err(),
        Error::OutOfMemory {
            size: len,
            requested: len,
            exhausted: Exhausted::HostMemory
        }
    );
}

/// Each value of a configuration is refused with its own error naming it and its range,
/// the first one out of range first, by `validate` and by `Arena::new` alike.
#[test]
fn config_errors_name_the_value_and_its_range() {
    let min_block = Config::new().with_min_block(24);
    let expected = Error::InvalidMinBlock {
        size: 24,
        min: 16,
        max: 256,
    };
    assert_eq!(min_block.validate(), Err(expected.clone()));
    let backing = Backing::heap(4 * CHUNK, 4096).unwrap();
    assert_eq!(Arena::new(backing, min_block).unwrap_err(), expected);
    assert_eq!(
        Config::new().with_min_block(512).validate(),
        Err(Error::InvalidMinBlock {
            size: 512,
            min: 16,
            max: 256
        })
    );
    let align = Config::new()
        .with_chunk_size(CHUNK)
        .with_alignment(2 * CHUNK);
    assert_eq!(
        align.validate(),
        Err(Error::InvalidAlignment {
            align: 2 * CHUNK,
            chunk_size: CHUNK
        })
    );
    assert_eq!(
        Config::new().with_alignment(8).validate(),
        Err(Error::InvalidAlignment {
            align: 8,
            chunk_size: 1 << 20
        })
    );
    // The chunk size is checked first.
    assert_eq!(
        Config::new()
            .with_chunk_size(3)
            .with_min_block(3)
            .with_alignment(3)
            .validate(),
        Err(Error::InvalidChunkSize {
            size: 3,
            min: 64 << 10,
            max: 64 << 20
        })
    );
}

/// `min_block`: smaller requests are rounded up to it.
#[test]
fn min_block_rounds_smaller_requests_up() {
    for min in [16, 32, 64, 128, 256] {
        let config = Config::new().with_chunk_size(CHUNK).with_min_block(min);
        let arena = Arena::new(Backing::heap(4 * CHUNK, 4096).unwrap(), config).unwrap();
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        for size in [0, 1, min - 1, min] {
            let (p, got) = client.alloc_sized(layout(size, 1)).unwrap();
            assert_eq!(got, min, "size {size} with minimum block {min}");
            assert_eq!(client.size_of(p.as_ptr()), Ok(min));
            free(&client, p).unwrap();
        }
    }
}

/// `QuotaExceeded` names the block's size (the request rounded up to its block), the bytes
/// in use and the quota, for small, aligned small, page and run blocks; nothing changes.
#[test]
fn quota_exceeded_names_the_rounded_block_the_use_and_the_quota() {
    let arena = arena(8, Flags::STATISTICS);
    // A length of buddy pages that needs no rounding: a multiple of a sixteenth of a chunk.
    let quota = CHUNK - CHUNK / 16 + 16;
    let client = arena.create_client(Quota::bytes(quota)).unwrap();
    let (held, used) = client.alloc_sized(layout(CHUNK - CHUNK / 16, 16)).unwrap();
    assert_eq!(used, CHUNK - CHUNK / 16);
    let before = snapshot(&arena, &client);
    for (l, block) in [
        (layout(1000, 8), 1024),
        (layout(48, 64), 64),
        (layout(5000, 16), 5120),
        // 17 pages round to 18, and 129 pages aligned above a page to 144.
        (layout(16 * 256 + 1, 16), 18 * 256),
        (layout(CHUNK / 2 + 1, 4096), CHUNK / 2 + CHUNK / 16),
        (layout(2 * CHUNK + 1, 16), 3 * CHUNK),
    ] {
        assert_eq!(
            client.alloc(l),
            Err(Error::QuotaExceeded {
                requested: block,
                used,
                quota
            }),
            "{l:?}"
        );
        assert_eq!(snapshot(&arena, &client), before, "{l:?}");
    }
    free(&client, held).unwrap();
}

/// A quota counts a buddy block at its rounded length: 17 pages take 18, so a quota of 17
/// pages refuses them, naming 18 pages, with nothing changed, and a quota of 18 pages holds
/// them exactly.
#[test]
fn quota_counts_a_buddy_block_at_its_rounded_length() {
    let arena = arena(2, Flags::STATISTICS);
    let size = 16 * 256 + 1;
    let tight = arena.create_client(Quota::bytes(17 * 256)).unwrap();
    let before = snapshot(&arena, &tight);
    assert_eq!(
        tight.alloc(layout(size, 16)),
        Err(Error::QuotaExceeded {
            requested: 18 * 256,
            used: 0,
            quota: 17 * 256
        })
    );
    assert_eq!(snapshot(&arena, &tight), before);
    let exact = arena.create_client(Quota::bytes(18 * 256)).unwrap();
    let (p, got) = exact.alloc_sized(layout(size, 16)).unwrap();
    assert_eq!(got, 18 * 256);
    assert_eq!(exact.stats().used_bytes, 18 * 256);
    assert_eq!(arena.stats().used_bytes, Some(18 * 256));
    assert_eq!(free(&exact, p), Ok(18 * 256));
}

/// `OutOfMemory` names the size asked for and what the allocation needed from the arena: the
/// whole slab for a small block that needed a new one, the size rounded to pages for a page
/// block, the run's whole chunks for a block over a chunk.
#[test]
fn out_of_memory_names_what_the_arena_was_asked_for() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let a = client.alloc(layout(CHUNK, 16)).unwrap();
    let b = client.alloc(layout(CHUNK, 16)).unwrap();
    let before = snapshot(&arena, &client);
    let chunks = Exhausted::Chunks {
        chunks: 2,
        chunk_size: CHUNK,
    };
    let out = |size, requested| Error::OutOfMemory {
        size,
        requested,
        exhausted: chunks,
    };
    let err = client.alloc(layout(100, 8)).unwrap_err();
    let Error::OutOfMemory {
        size: 100,
        requested,
        exhausted,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(exhausted, chunks);
    assert!(
        requested >= 8192 && requested.is_power_of_two(),
        "{requested}"
    );
    assert_eq!(client.alloc(layout(5000, 16)), Err(out(5000, 5120)));
    // The length the block would have: 17 pages round to 18, 129 pages to 144.
    assert_eq!(
        client.alloc(layout(16 * 256 + 1, 16)),
        Err(out(16 * 256 + 1, 18 * 256))
    );
    assert_eq!(
        client.alloc(layout(CHUNK / 2 + 1, 4096)),
        Err(out(CHUNK / 2 + 1, CHUNK / 2 + CHUNK / 16))
    );
    assert_eq!(
        client.alloc(layout(CHUNK + 1, 16)),
        Err(Error::OutOfMemory {
            size: CHUNK + 1,
            requested: 2 * CHUNK,
            exhausted: Exhausted::Run {
                run: 2,
                free: 0,
                chunks: 2,
                chunk_size: CHUNK
            }
        })
    );
    assert_eq!(snapshot(&arena, &client), before);
    free(&client, a).unwrap();
    free(&client, b).unwrap();
}

/// `TooLarge` names the size and `Arena::max_block_size`; `UnsupportedAlignment` the
/// alignment and `Arena::max_alignment`.
#[test]
fn shape_errors_name_the_request_and_the_arenas_limit() {
    let arena = arena(4, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let before = snapshot(&arena, &client);
    let max = arena.max_block_size();
    assert_eq!(max, 4 * CHUNK);
    assert_eq!(
        client.alloc(layout(max + 1, 16)),
        Err(Error::TooLarge { size: max + 1, max })
    );
    assert_eq!(
        client.alloc(layout(isize::MAX as usize - 15, 16)),
        Err(Error::TooLarge {
            size: isize::MAX as usize - 15,
            max
        })
    );
    let align = arena.max_alignment() * 2;
    assert_eq!(
        client.alloc(layout(16, align)),
        Err(Error::UnsupportedAlignment {
            align,
            max: arena.max_alignment()
        })
    );
    assert_eq!(snapshot(&arena, &client), before);
    // The largest block is had.
    let p = client.alloc(layout(max, 16)).unwrap();
    assert_eq!(client.size_of(p.as_ptr()), Ok(max));
    free(&client, p).unwrap();
}

/// Pointer errors name the address (and the chunk); a refused pointer changes nothing.
#[test]
fn pointer_errors_name_the_address_and_chunk() {
    let arena = arena(4, Flags::STATISTICS);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let _pa = a.alloc(layout(64, 16)).unwrap();
    let pb = b.alloc(layout(64, 16)).unwrap();
    let chunk = (pb.as_ptr() as usize - arena.backing().as_ptr() as usize) / CHUNK;
    let before = (snapshot(&arena, &a), b.stats());
    let addr = pb.as_ptr() as usize;
    assert_eq!(
        free(&a, pb),
        Err(Error::NotOwned { addr, chunk }),
        "another client's block"
    );
    assert_eq!(a.size_of(pb.as_ptr()), Err(Error::NotOwned { addr, chunk }));
    let inner = NonNull::new(pb.as_ptr().wrapping_add(16)).unwrap();
    assert_eq!(free(&b, inner), Err(Error::NotABlock { addr: addr + 16 }));
    let heap = Box::new(0u64);
    let foreign = NonNull::from(&*heap).cast::<u8>();
    assert_eq!(
        free(&a, foreign),
        Err(Error::Foreign {
            addr: foreign.as_ptr() as usize
        })
    );
    // SAFETY: refused: the pointer is not a block of the arena.
    let refused = unsafe { arena.free(foreign) };
    assert_eq!(
        refused,
        Err(Error::Foreign {
            addr: foreign.as_ptr() as usize
        })
    );
    // SAFETY: refused: an interior pointer.
    let refused = unsafe { arena.free(inner) };
    assert_eq!(refused, Err(Error::NotABlock { addr: addr + 16 }));
    assert_eq!((snapshot(&arena, &a), b.stats()), before);
}

/// `Client::id`: not 0, unique among the arena's live clients, and a deleted client's goes to
/// a later client.
#[test]
fn client_ids_unique_among_live_clients_and_reused() {
    // Fewer under Miri, where making a client takes a tenth of a second.
    let clients = if cfg!(miri) { 16 } else { 100 };
    let arena = arena(2, Flags::empty());
    let mut seen = std::collections::HashSet::new();
    let live: Vec<_> = (0..clients)
        .map(|_| arena.create_client(Quota::UNLIMITED).unwrap())
        .collect();
    for c in &live {
        assert!(c.id() != 0);
        assert!(seen.insert(c.id()), "id {} of two live clients", c.id());
    }
    drop(live);
    for _ in 0..clients {
        let c = arena.create_client(Quota::UNLIMITED).unwrap();
        assert!(seen.contains(&c.id()), "id {} new, none reused", c.id());
    }
}

/// `ClientStats`: `free_bytes` is `total_bytes - used_bytes`; at most one pinned chunk,
/// `cached_chunks` a part of it, `cached_bytes` a part of `free_bytes`.
#[test]
fn client_stats_add_up() {
    let arena = arena(8, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut live = Vec::new();
    let mut rng = Rng(7);
    for round in 0..ROUNDS {
        let size = 1 + rng.next() % 20_000;
        if rng.next().is_multiple_of(2) || live.is_empty() {
            if let Ok(p) = client.alloc(layout(size, 16)) {
                live.push(p);
            }
        } else {
            let p = live.swap_remove(rng.next() % live.len());
            free(&client, p).unwrap();
        }
        let s = client.stats();
        assert_eq!(s.free_bytes, s.total_bytes - s.used_bytes, "round {round}");
        assert_eq!(s.total_bytes, s.chunks * CHUNK);
        assert!(s.pinned_chunks <= 1 && s.cached_chunks <= s.pinned_chunks);
        assert_eq!(s.pinned_bytes, s.pinned_chunks * CHUNK);
        assert!(s.cached_bytes <= s.free_bytes);
        assert_eq!(s.live_blocks, live.len());
        assert_eq!(s.allocations, s.frees + live.len() as u64);
        assert!(s.peak_used_bytes >= s.used_bytes);
        let a = arena.stats();
        assert_eq!(a.used_bytes, Some(s.used_bytes));
        assert_eq!(a.live_blocks, Some(s.live_blocks));
        assert_eq!(a.cached_bytes, Some(s.cached_bytes));
        assert_eq!(a.pinned_chunks, Some(s.pinned_chunks));
        assert_eq!(a.held_chunks, s.chunks);
        assert_eq!(a.free_chunks, a.chunks - a.held_chunks);
        assert_eq!(a.free_bytes, a.free_chunks * CHUNK);
    }
    for p in live {
        free(&client, p).unwrap();
    }
}

/// A small deterministic generator for the workloads below.
struct Rng(u64);

impl Rng {
    /// 31 random bits.
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).expect("31 bits fit")
    }
}

/// `ClientStats::largest_free_block`, with nothing cached: a request of that size gets a
/// block without the client taking another chunk.
#[test]
fn client_largest_free_block_is_had_without_another_chunk() {
    let arena = arena(16, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut rng = Rng(11);
    let mut live = Vec::new();
    for round in 0..ROUNDS {
        let size = 1 + (rng.next() % 40_000);
        if !rng.next().is_multiple_of(3) || live.is_empty() {
            if let Ok(p) = client.alloc(layout(size, 16)) {
                live.push(p);
            }
        } else {
            let p = live.swap_remove(rng.next() % live.len());
            free(&client, p).unwrap();
        }
        if round % 7 != 0 {
            continue;
        }
        client.trim();
        let before = client.stats();
        assert_eq!(before.cached_bytes, 0);
        let largest = before.largest_free_block;
        if largest == 0 {
            continue;
        }
        let p = client.alloc(layout(largest, 16)).unwrap();
        assert_eq!(
            client.stats().chunks,
            before.chunks,
            "round {round}: a block of {largest} bytes took another chunk"
        );
        free(&client, p).unwrap();
    }
    for p in live {
        free(&client, p).unwrap();
    }
}

/// `ArenaStats::largest_free_block`: a new client gets a block of that size, and not one
/// byte more.
#[test]
fn arena_largest_free_block_is_what_a_new_client_gets() {
    let arena = arena(16, Flags::empty());
    let mut rng = Rng(5);
    let mut clients = Vec::new();
    for _ in 0..ROUNDS.min(40) {
        let c = arena.create_client(Quota::UNLIMITED).unwrap();
        let size = 1 + (rng.next() % (3 * CHUNK));
        let p = c.alloc(layout(size, 16)).ok();
        clients.push((c, p));
        if rng.next().is_multiple_of(2) {
            let i = rng.next() % clients.len();
            drop(clients.swap_remove(i));
        }
        let largest = arena.stats().largest_free_block;
        let fresh = arena.create_client(Quota::UNLIMITED).unwrap();
        if largest > 0 {
            let p = fresh.alloc(layout(largest, 16)).unwrap();
            free(&fresh, p).unwrap();
            fresh.trim();
        }
        assert!(
            matches!(
                fresh.alloc(layout(largest + 1, 16)),
                Err(Error::OutOfMemory { .. })
            ),
            "{largest}"
        );
    }
}
