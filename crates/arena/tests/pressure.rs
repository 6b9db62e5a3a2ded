//! Memory a client keeps for reuse under pressure from other clients, trimming, and frees
//! through the arena from any thread.

#![allow(clippy::cast_possible_truncation)]

mod common;

use std::alloc::Layout;
use std::ptr::NonNull;

use common::all_bytes_are;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};

fn arena(len: usize, chunk: usize, flags: Flags) -> Arena {
    let config = Config::new().with_chunk_size(chunk).with_flags(flags);
    Arena::new(Backing::heap(len, 4096).unwrap(), config).unwrap()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn free(client: &Client<'_>, p: NonNull<u8>) -> usize {
    // SAFETY: the tests never use a block after freeing it.
    unsafe { client.free(p) }.unwrap()
}

/// Whole-chunk blocks `client` gets until the arena runs out.
fn whole_chunks(client: &Client<'_>) -> usize {
    let chunk = client.arena().chunk_size();
    let mut n = 0;
    while client.alloc(layout(chunk)).is_ok() {
        n += 1;
    }
    n
}

/// A small xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Log-uniform in `16..=max`.
    fn size(&mut self, max: usize) -> usize {
        let bits = 4 + self.next() % u64::from(max.ilog2() - 3);
        let lo = 1usize << bits;
        (lo + (self.next() as usize) % lo).min(max)
    }
}

/// Client A peaks at 7/8 of the arena in random sizes and frees it all in random order; then
/// client B takes whole chunks. B must get at least 95% of what it gets from an empty arena.
#[test]
fn alloc_after_other_client_peak_and_free_gets_nearly_all_chunks() {
    // 64 MiB in 1 MiB chunks, A up to 56 MiB (Miri: 512 KiB in 64 KiB chunks, blocks up to 2 KiB).
    let (len, chunk) = if cfg!(miri) {
        (512 << 10, 64 << 10)
    } else {
        (64 << 20, 1 << 20)
    };
    let max = if cfg!(miri) { 2048 } else { 64 << 10 };
    let arena = arena(len, chunk, Flags::STATISTICS);
    let empty = {
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        whole_chunks(&b)
    };
    assert_eq!(empty, len / chunk);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = Vec::new();
    // Up to 7/8 of the arena, or until it is full (small arenas under Miri fill first).
    while a.stats().used_bytes < len / 8 * 7 {
        match a.alloc(layout(rng.size(max))) {
            Ok(p) => live.push(p),
            Err(Error::OutOfMemory { .. }) if cfg!(miri) => break,
            Err(e) => panic!("A failed below its peak: {e}"),
        }
    }
    // Eight chunks under Miri lose more to each chunk's last partly used pages.
    let least_peak = if cfg!(miri) { len / 3 * 2 } else { len / 4 * 3 };
    assert!(a.stats().peak_used_bytes >= least_peak, "{:?}", a.stats());
    for i in (1..live.len()).rev() {
        live.swap(i, rng.next() as usize % (i + 1));
    }
    for p in live {
        free(&a, p);
    }
    let s = a.stats();
    assert_eq!((s.live_blocks, s.used_bytes), (0, 0));
    assert!(
        s.chunks <= 1,
        "A keeps {} chunks with no live block",
        s.chunks
    );
    assert_eq!(s.pinned_chunks, s.chunks);
    assert_eq!(arena.stats().pinned_chunks, Some(s.chunks));
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let got = whole_chunks(&b);
    // The bound: A keeps at most one chunk without a live block from B.
    assert!(got + 1 >= empty, "B got {got} of {empty} chunks");
    if !cfg!(miri) {
        assert!(got * 100 >= empty * 95, "B got {got} of {empty} chunks");
    }
}

#[test]
fn free_second_idle_chunk_gives_it_back_with_its_caches() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::STATISTICS);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    // Fill two chunks with small and buddy blocks, then free them all: the caches keep some.
    let mut live = Vec::new();
    while a.stats().chunks < 3 {
        live.push(
            a.alloc(layout(if live.len() % 3 == 0 { 5000 } else { 48 }))
                .unwrap(),
        );
    }
    for p in live {
        free(&a, p);
    }
    let s = a.stats();
    assert_eq!(s.chunks, 1);
    assert_eq!(s.pinned_chunks, 1);
    assert_eq!(s.pinned_bytes, chunk);
    assert!(s.cached_bytes > 0);
    assert_eq!(arena.stats().cached_bytes, Some(s.cached_bytes));
    assert_eq!(arena.stats().free_chunks, 3);
}

#[test]
fn trim_client_gives_back_every_chunk_without_a_live_block() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::STATISTICS);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let keep = a.alloc(layout(100)).unwrap();
    let blocks: Vec<_> = (0..60)
        .map(|i| a.alloc(layout(16 + i * 40)).unwrap())
        .collect();
    for p in blocks {
        free(&a, p);
    }
    a.trim();
    let s = a.stats();
    assert_eq!(s.cached_bytes, 0);
    assert_eq!(s.chunks, 1, "the chunk with the live block stays");
    assert_eq!(s.pinned_chunks, 0);
    assert_eq!(arena.stats().cached_bytes, Some(0));
    assert_eq!(a.size_of(keep.as_ptr()), Ok(112));
    free(&a, keep);
    a.trim();
    assert_eq!(a.stats().chunks, 0);
    assert_eq!(arena.stats().free_chunks, 4);
}

#[test]
fn trim_arena_reaches_client_at_its_next_free() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let keep = a.alloc(layout(100)).unwrap();
    let p = a.alloc(layout(3000)).unwrap();
    free(&a, p);
    assert!(a.stats().cached_bytes > 0);
    arena.trim();
    free(&a, keep);
    assert_eq!(a.stats().cached_bytes, 0);
    assert_eq!(a.stats().chunks, 0);
}

#[test]
fn alloc_out_of_chunks_asks_other_clients_to_trim() {
    let chunk = 64 << 10;
    let arena = arena(3 * chunk, chunk, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let whole = a.alloc(layout(chunk)).unwrap();
    let p = a.alloc(layout(100)).unwrap();
    free(&a, p);
    assert_eq!((a.stats().chunks, a.stats().pinned_chunks), (2, 1));
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    b.alloc(layout(chunk)).unwrap();
    assert!(matches!(
        b.alloc(layout(chunk)),
        Err(Error::OutOfMemory { .. })
    ));
    // A's next free sees the request: both its chunks go back, then B gets them.
    free(&a, whole);
    assert_eq!(a.stats().chunks, 0);
    assert_eq!(whole_chunks(&b), 2);
}

#[test]
fn arena_free_on_other_thread_frees_at_owner_next_call() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::STATISTICS | Flags::POISON);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let blocks: Vec<usize> = [16, 100, 2048, 3000, 40_000]
        .iter()
        .map(|&size| client.alloc(layout(size)).unwrap().as_ptr() as usize)
        .collect();
    let sizes: Vec<usize> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                blocks
                    .iter()
                    .map(|&addr| {
                        let p = NonNull::new(addr as *mut u8).unwrap();
                        // SAFETY: the block is not used after this; the client outlives the
                        // scope.
                        unsafe { arena.free(p) }.unwrap()
                    })
                    .collect()
            })
            .join()
            .unwrap()
    });
    // 40,000 bytes are 157 pages of 256, rounded to a sixteenth of 256 pages: 160.
    assert_eq!(sizes, [16, 112, 2048, 3072, 40_960]);
    for &addr in &blocks {
        assert!(!client.owns(addr as *const u8));
        assert_eq!(arena.owner_of(addr as *const u8), None);
    }
    assert_eq!(client.stats().live_blocks, 5, "not yet taken back");
    client.trim();
    let s = client.stats();
    assert_eq!((s.live_blocks, s.used_bytes, s.chunks), (0, 0, 0));
    assert_eq!(arena.stats().used_bytes, Some(0));
}

#[test]
fn arena_free_twice_second_is_not_a_block() {
    let arena = arena(1 << 20, 64 << 10, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(64)).unwrap();
    // SAFETY: `p` is not used after this.
    assert_eq!(unsafe { arena.free(p) }, Ok(64));
    // SAFETY: rejected, nothing freed.
    let again = unsafe { arena.free(p) };
    assert_eq!(
        again,
        Err(Error::NotABlock {
            addr: p.as_ptr() as usize
        })
    );
    // SAFETY: rejected, nothing freed.
    let by_client = unsafe { client.free(p) };
    assert_eq!(
        by_client,
        Err(Error::NotABlock {
            addr: p.as_ptr() as usize
        })
    );
    client.trim();
    assert_eq!(client.stats().live_blocks, 0);
}

#[test]
fn arena_free_pending_block_is_dead_to_every_query() {
    let arena = arena(1 << 20, 64 << 10, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let keep = client.alloc(layout(64)).unwrap();
    let p = client.alloc(layout(64)).unwrap();
    // SAFETY: `p` is not used after this.
    assert_eq!(unsafe { arena.free(p) }, Ok(64));
    // Still in the mailbox: the client has not taken it back yet.
    assert_eq!(client.stats().live_blocks, 2);
    assert!(!client.owns(p.as_ptr()));
    assert_eq!(arena.owner_of(p.as_ptr()), None);
    let addr = p.as_ptr() as usize;
    assert_eq!(client.size_of(p.as_ptr()), Err(Error::NotABlock { addr }));
    assert!(client.owns(keep.as_ptr()));
    assert_eq!(arena.owner_of(keep.as_ptr()), Some(client.id()));
    client.trim();
    assert_eq!(client.stats().live_blocks, 1);
    assert_eq!(free(&client, keep), 64);
}

#[test]
fn client_free_then_arena_free_is_not_a_block() {
    let arena = arena(1 << 20, 64 << 10, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let _keep = client.alloc(layout(64)).unwrap();
    let p = client.alloc(layout(64)).unwrap();
    assert_eq!(free(&client, p), 64);
    let before = client.stats();
    // SAFETY: rejected, nothing freed.
    let again = unsafe { arena.free(p) };
    let addr = p.as_ptr() as usize;
    assert_eq!(again, Err(Error::NotABlock { addr }));
    assert_eq!(client.stats(), before);
}

#[test]
fn arena_free_first_in_chunk_adds_its_remote_bits_to_bookkeeping() {
    let arena = arena(1 << 20, 64 << 10, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let before = arena.bookkeeping_bytes();
    let p = client.alloc(layout(64)).unwrap();
    let q = client.alloc(layout(64)).unwrap();
    assert_eq!(free(&client, p), 64);
    assert_eq!(
        arena.bookkeeping_bytes(),
        before,
        "the client's own frees need no bits"
    );
    // SAFETY: `q` is not used after this.
    assert_eq!(unsafe { arena.free(q) }, Ok(64));
    // One bit per 16 bytes of the chunk.
    assert_eq!(arena.bookkeeping_bytes(), before + (64 << 10) / 16 / 8);
}

#[test]
fn delete_client_with_pending_arena_free_leaves_next_holder_clear() {
    let arena = arena(64 << 10, 64 << 10, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = a.alloc(layout(64)).unwrap();
    // SAFETY: `p` is not used after this; `a` outlives the call.
    assert_eq!(unsafe { arena.free(p) }, Ok(64));
    drop(a);
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let q = b.alloc(layout(64)).unwrap();
    assert_eq!(q, p, "the same chunk, the same first block");
    assert!(b.owns(q.as_ptr()));
    assert_eq!(arena.owner_of(q.as_ptr()), Some(b.id()));
    // SAFETY: `q` is not used after this.
    assert_eq!(unsafe { arena.free(q) }, Ok(64));
    b.trim();
    assert_eq!(b.stats().live_blocks, 0);
}

#[test]
fn arena_free_bad_pointers_error_and_change_nothing() {
    let arena = arena(1 << 20, 64 << 10, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(5000)).unwrap();
    let mut outside = 0u64;
    let outside = NonNull::from(&mut outside).cast::<u8>();
    let before = (arena.bookkeeping_bytes(), arena.stats(), client.stats());
    // SAFETY: every pointer below is rejected, so nothing is freed.
    unsafe {
        assert!(matches!(arena.free(outside), Err(Error::Foreign { .. })));
        let interior = NonNull::new(p.as_ptr().wrapping_add(16)).unwrap();
        assert!(matches!(arena.free(interior), Err(Error::NotABlock { .. })));
        let odd = NonNull::new(p.as_ptr().wrapping_add(1)).unwrap();
        assert!(matches!(arena.free(odd), Err(Error::NotABlock { .. })));
        let unheld = NonNull::new(p.as_ptr().wrapping_add(5 * (64 << 10))).unwrap();
        assert!(matches!(arena.free(unheld), Err(Error::NotOwned { .. })));
    }
    // Not even the chunk's remote-free bits are made for a refused pointer.
    assert_eq!(
        (arena.bookkeeping_bytes(), arena.stats(), client.stats()),
        before
    );
    assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
    assert_eq!(arena.owner_of(p.as_ptr().wrapping_add(16)), None);
    assert_eq!(arena.owner_of(outside.as_ptr()), None);
    assert_eq!(client.size_of(p.as_ptr()), Ok(5120));
    assert_eq!(free(&client, p), 5120);
}

#[test]
fn arena_free_many_threads_all_blocks_come_back() {
    let chunk = 64 << 10;
    let arena = arena(16 * chunk, chunk, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let n = if cfg!(miri) { 40 } else { 4000 };
    let blocks: Vec<usize> = (0..n)
        .map(|i| client.alloc(layout(16 + (i % 20) * 16)).unwrap().as_ptr() as usize)
        .collect();
    let shared = &arena;
    std::thread::scope(|scope| {
        for part in blocks.chunks(blocks.len() / 4) {
            scope.spawn(move || {
                for &addr in part {
                    let p = NonNull::new(addr as *mut u8).unwrap();
                    // SAFETY: each block is freed once, by one thread; the client outlives
                    // the scope.
                    unsafe { shared.free(p) }.unwrap();
                }
            });
        }
        // The client keeps allocating and freeing meanwhile, draining its mailbox.
        for i in 0..n / 4 {
            let p = client.alloc(layout(16 + (i % 7) * 100)).unwrap();
            free(&client, p);
        }
    });
    client.trim();
    let s = client.stats();
    assert_eq!((s.live_blocks, s.used_bytes, s.chunks), (0, 0, 0));
    assert_eq!(arena.stats().live_blocks, Some(0));
}

#[test]
fn alloc_over_a_chunk_takes_a_run_and_free_gives_it_back() {
    let chunk = 64 << 10;
    let arena = arena(8 * chunk, chunk, Flags::STATISTICS | Flags::ZERO);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let small = client.alloc(layout(100)).unwrap();
    let (p, size) = client.alloc_sized(layout(3 * chunk + 1)).unwrap();
    assert_eq!(size, 4 * chunk);
    assert_eq!(
        (p.as_ptr() as usize - arena.backing().as_ptr() as usize) % chunk,
        0
    );
    // SAFETY: a live block of `size` bytes, zeroed.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), size) };
    assert!(all_bytes_are(bytes, 0));
    bytes.fill(7);
    assert_eq!(client.size_of(p.as_ptr()), Ok(size));
    assert!(client.owns(p.as_ptr()));
    assert!(!client.owns(p.as_ptr().wrapping_add(chunk)));
    assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
    let s = client.stats();
    assert_eq!((s.chunks, s.used_bytes, s.live_blocks), (5, size + 112, 2));
    assert_eq!(arena.stats().used_bytes, Some(size + 112));
    assert_eq!(free(&client, p), size);
    assert_eq!(client.stats().chunks, 1);
    assert_eq!(arena.stats().free_chunks, 7);
    free(&client, small);
    assert_eq!(client.stats().used_bytes, 0);
}

#[test]
fn alloc_run_without_contiguous_chunks_is_out_of_memory_and_changes_nothing() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    // Chunks 0 and 2 to A, 1 and 3 to B: two free chunks never side by side.
    let a0 = a.alloc(layout(chunk)).unwrap();
    b.alloc(layout(chunk)).unwrap();
    let a2 = a.alloc(layout(chunk)).unwrap();
    b.alloc(layout(chunk)).unwrap();
    free(&a, a0);
    free(&a, a2);
    a.trim();
    assert_eq!(arena.stats().free_chunks, 2);
    let before = b.stats();
    assert!(matches!(
        b.alloc(layout(2 * chunk)),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(b.stats(), before);
    assert_eq!(arena.stats().free_chunks, 2);
    assert!(matches!(
        b.alloc(layout(4 * chunk + 1)),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn alloc_run_over_quota_errors() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::empty());
    let client = arena.create_client(Quota::bytes(2 * chunk)).unwrap();
    assert!(matches!(
        client.alloc(layout(2 * chunk + 1)),
        Err(Error::QuotaExceeded { .. })
    ));
    assert!(client.alloc(layout(2 * chunk)).is_ok());
}

#[test]
fn arena_free_of_run_on_other_thread_gives_it_back_at_trim() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::POISON);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let addr = client.alloc(layout(2 * chunk)).unwrap().as_ptr() as usize;
    let size = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: not used after this; the client outlives the scope.
                unsafe { arena.free(NonNull::new(addr as *mut u8).unwrap()) }
            })
            .join()
            .unwrap()
    });
    assert_eq!(size, Ok(2 * chunk));
    client.trim();
    assert_eq!(client.stats().chunks, 0);
    assert_eq!(arena.stats().free_chunks, 4);
}

#[test]
fn delete_client_with_run_gives_all_chunks_back() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    client.alloc(layout(3 * chunk)).unwrap();
    client.alloc(layout(10)).unwrap();
    arena.delete_client(client);
    assert_eq!(arena.stats().free_chunks, 4);
    let again = arena.create_client(Quota::UNLIMITED).unwrap();
    assert!(again.alloc(layout(4 * chunk)).is_ok());
}

#[test]
fn alloc_small_aligned_comes_from_slabs() {
    let chunk = 64 << 10;
    let arena = arena(4 * chunk, chunk, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut blocks = Vec::new();
    for align in [32, 64] {
        for size in (1..=2048).step_by(37) {
            let (p, got) = client
                .alloc_sized(Layout::from_size_align(size, align).unwrap())
                .unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            assert!(got >= size && got.is_multiple_of(align));
            // A slab block: its size is a class, not a whole number of 256-byte pages.
            assert!(got < size + align + size / 4 + 16, "size {size} got {got}");
            assert_eq!(client.size_of(p.as_ptr()), Ok(got));
            blocks.push(p);
        }
    }
    // Sixteen 32-byte blocks aligned to 32 fit in one 512-byte stretch of a slab.
    let small: Vec<_> = (0..16)
        .map(|_| {
            client
                .alloc(Layout::from_size_align(20, 32).unwrap())
                .unwrap()
        })
        .collect();
    assert!(small.iter().all(|p| client.size_of(p.as_ptr()) == Ok(32)));
    for p in blocks.into_iter().chain(small) {
        free(&client, p);
    }
    assert_eq!(client.stats().used_bytes, 0);
}

#[test]
fn alloc_more_allocating_clients_than_chunks_is_out_of_memory_and_changes_nothing() {
    // Each allocating client holds at least one whole chunk (tiny clients do not share
    // chunks): one more client than chunks cannot allocate even 16 bytes.
    let chunks = 16;
    let arena = arena(chunks << 16, 64 << 10, Flags::empty());
    let clients: Vec<_> = (0..=chunks)
        .map(|_| arena.create_client(Quota::UNLIMITED).unwrap())
        .collect();
    let blocks: Vec<_> = clients[..chunks]
        .iter()
        .map(|c| c.alloc(layout(16)).unwrap())
        .collect();
    let last = &clients[chunks];
    // The request the error names is the slab the block would have come from.
    assert!(matches!(
        last.alloc(layout(16)),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(last.stats().chunks, 0);
    assert_eq!(arena.stats().held_chunks, chunks);
    // Isolation still holds between the others, and deleting them gives every chunk back.
    // SAFETY: refused: the block belongs to another client.
    assert!(unsafe { clients[1].free(blocks[0]) }.is_err());
    drop(clients);
    assert_eq!(arena.stats().held_chunks, 0);
}

#[test]
fn trim_request_does_not_cost_an_allocation_its_cached_block() {
    // A buddy block freed into the cache serves the next allocation of its size even with a
    // trim request pending: the request is honoured at an allocation that misses the caches.
    // (Honoured first, it gave the block back to a chunk whose other pieces are in use, no
    // block of its order was left, and the one-chunk arena answered `OutOfMemory`.)
    for trim in [false, true] {
        let chunk = 64 << 10;
        let arena = arena(chunk, chunk, Flags::empty());
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        client.alloc(layout(242)).unwrap();
        let big = client.alloc(layout(24_147)).unwrap();
        client.alloc(layout(0)).unwrap();
        client
            .alloc(Layout::from_size_align(278, 128).unwrap())
            .unwrap();
        free(&client, big);
        let largest = client.stats().largest_free_block;
        assert!(largest >= 24_147);
        if trim {
            arena.trim();
        }
        assert_eq!(client.alloc(layout(largest)), Ok(big), "trim first: {trim}");
        assert_eq!(client.stats().chunks, 1);
    }
}

/// An allocation refused for lack of memory leaves the caches as they were: the blocks later
/// allocations get are the ones they would have got without it. (The check whether giving
/// the caches back would help must not reorder them.)
#[test]
fn refused_allocation_leaves_the_order_of_cached_blocks() {
    let next_after = |refuse_first: bool| {
        let arena = arena(64 << 10, 64 << 10, Flags::empty());
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let p1 = client.alloc(layout(64)).unwrap();
        let p2 = client.alloc(layout(64)).unwrap();
        assert!(p1 < p2);
        let mut fill = Vec::new();
        for size in [32 << 10, 16 << 10, 8 << 10] {
            fill.push(client.alloc(layout(size)).unwrap());
        }
        free(&client, p2);
        free(&client, p1);
        if refuse_first {
            let stats = client.stats();
            // A new slab of the largest class does not fit.
            assert!(matches!(
                client.alloc(layout(2000)),
                Err(Error::OutOfMemory { .. })
            ));
            assert_eq!(client.stats(), stats);
        }
        // Which of the two cached blocks comes back first.
        client.alloc(layout(64)).unwrap() == p1
    };
    assert_eq!(next_after(true), next_after(false));
}
