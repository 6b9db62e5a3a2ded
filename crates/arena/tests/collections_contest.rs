//! Collections of two clients competing for one arena, edge sizes and alignments on every
//! public entry point, and resizes of blocks through `&Client: Allocator` across chunk and run
//! bounds, with the statistics' relations and every block's contents checked after each step.

#![allow(clippy::cast_possible_truncation)]

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use common::all_bytes_are;
use hashbrown::{DefaultHashBuilder, HashMap};
use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize, flags: Flags) -> Arena {
    let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
    Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
}

/// Every documented relation between the counters of the arena and of `clients` (all the
/// arena's live clients).
fn check_stats(arena: &Arena, clients: &[&Client<'_>], when: &str) {
    let a = arena.stats();
    assert_eq!(a.chunks, arena.chunk_count(), "{when}");
    assert_eq!(a.chunk_size, arena.chunk_size(), "{when}");
    assert_eq!(a.total_bytes, a.chunks * a.chunk_size, "{when}");
    assert_eq!(a.held_chunks + a.free_chunks, a.chunks, "{when}");
    assert_eq!(a.free_bytes, a.free_chunks * a.chunk_size, "{when}");
    assert!(a.cached_chunks <= a.free_chunks, "{when}");
    assert!(a.largest_free_block <= arena.max_block_size(), "{when}");
    assert!(a.largest_free_block <= a.free_bytes, "{when}");
    assert_eq!(a.largest_free_block == 0, a.free_chunks == 0, "{when}");
    assert_eq!(a.clients, clients.len(), "{when}");
    let (mut chunks, mut used, mut live, mut cached, mut pinned) = (0, 0, 0, 0, 0);
    for c in clients {
        let s = c.stats();
        assert_eq!(s.total_bytes, s.chunks * a.chunk_size, "{when}");
        assert_eq!(s.used_bytes + s.free_bytes, s.total_bytes, "{when}");
        assert!(s.cached_bytes <= s.free_bytes, "{when}");
        assert!(s.peak_used_bytes >= s.used_bytes, "{when}");
        assert!(s.pinned_chunks <= 1, "{when}");
        assert!(s.cached_chunks <= s.pinned_chunks, "{when}");
        assert_eq!(s.pinned_bytes, s.pinned_chunks * a.chunk_size, "{when}");
        assert_eq!(s.allocations, s.frees + s.live_blocks as u64, "{when}");
        assert!(s.largest_free_block <= s.free_bytes, "{when}");
        if let Some(q) = c.quota().limit() {
            assert!(s.used_bytes <= q, "{when}");
        }
        chunks += s.chunks;
        used += s.used_bytes;
        live += s.live_blocks;
        cached += s.cached_bytes;
        pinned += s.pinned_chunks;
    }
    assert_eq!(a.held_chunks, chunks, "{when}");
    if arena.accepted_flags().contains(Flags::STATISTICS) {
        assert_eq!(a.used_bytes, Some(used), "{when}");
        assert_eq!(a.live_blocks, Some(live), "{when}");
        assert_eq!(a.cached_bytes, Some(cached), "{when}");
        assert_eq!(a.pinned_chunks, Some(pinned), "{when}");
    } else {
        assert_eq!(a.used_bytes, None, "{when}");
        assert_eq!(a.live_blocks, None, "{when}");
    }
}

/// A client's pattern: its id in every byte, so that memory handed to two clients at once
/// shows as a byte of the other's.
fn tag(client: &Client<'_>) -> u8 {
    // Neither 0 (zeroed memory) nor the poison byte.
    let t = 1 + (client.id() % 250) as u8;
    if t >= memvisor_arena::POISON_BYTE {
        t + 1
    } else {
        t
    }
}

/// Fills `buf` with `len` bytes of `t` (one `memset`, where `resize` writes byte by byte,
/// which Miri interprets step by step).
fn fill_to(buf: &mut Vec<u8, &Client<'_>>, len: usize, t: u8) {
    assert!(buf.capacity() >= len && buf.len() <= len);
    // SAFETY: the capacity holds `len` bytes, all written here before the length covers them.
    unsafe {
        buf.as_mut_ptr()
            .add(buf.len())
            .write_bytes(t, len - buf.len());
        buf.set_len(len);
    }
}

#[test]
fn two_clients_collections_run_each_other_out_of_memory() {
    let chunks = if cfg!(miri) { 4 } else { 64 };
    let arena = arena(chunks, Flags::STATISTICS);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let (ta, tb) = (tag(&a), tag(&b));
    let mut va: Vec<Vec<u8, &Client<'_>>, &Client<'_>> = Vec::new_in(&a);
    let mut vb: Vec<Vec<u8, &Client<'_>>, &Client<'_>> = Vec::new_in(&b);
    let mut ma: HashMap<u32, u64, DefaultHashBuilder, &Client<'_>> =
        HashMap::with_hasher_in(DefaultHashBuilder::default(), &a);
    let mut mb: HashMap<u32, u64, DefaultHashBuilder, &Client<'_>> =
        HashMap::with_hasher_in(DefaultHashBuilder::default(), &b);
    // Growing buffers of both clients, alternately, until each has been refused.
    let (mut a_full, mut b_full) = (false, false);
    let mut len = 100usize;
    let mut step = 0u32;
    while !(a_full && b_full) {
        step += 1;
        for (v, m, t, full, c) in [
            (&mut va, &mut ma, ta, &mut a_full, &a),
            (&mut vb, &mut mb, tb, &mut b_full, &b),
        ] {
            if *full {
                continue;
            }
            let mut buf = Vec::new_in(c);
            if buf.try_reserve_exact(len).is_err() || v.try_reserve(1).is_err() {
                *full = true;
                continue;
            }
            fill_to(&mut buf, len, t);
            v.push(buf);
            if m.try_reserve(1).is_ok() {
                m.insert(step, u64::from(t) * u64::from(step));
            }
            // Grow the last buffer past a chunk, in place or moved.
            if let Some(last) = v.last_mut()
                && last.try_reserve(len * 3).is_ok()
            {
                let n = last.len() + len * 3;
                fill_to(last, n, t);
            }
        }
        check_stats(&arena, &[&a, &b], "growing");
        len = (len * 3 / 2).min(3 * CHUNK);
        assert!(step < 10_000, "no end to growth");
    }
    let check = |v: &Vec<Vec<u8, &Client<'_>>, &Client<'_>>, t: u8| {
        for buf in v {
            assert!(
                all_bytes_are(buf, t),
                "a buffer of client {t:#x} was overwritten"
            );
        }
    };
    check(&va, ta);
    check(&vb, tb);
    for (k, val) in &ma {
        assert_eq!(*val, u64::from(ta) * u64::from(*k));
    }
    for (k, val) in &mb {
        assert_eq!(*val, u64::from(tb) * u64::from(*k));
    }
    // Shrink and clone a's buffers, then let them go: b grows into what a gave back.
    for buf in &mut va {
        let half = buf.len() / 2;
        buf.truncate(half);
        buf.shrink_to_fit();
    }
    check(&va, ta);
    let copy = va.last().map(|l| {
        let mut c = Vec::new_in(&a);
        c.extend_from_slice(l);
        c
    });
    check_stats(&arena, &[&a, &b], "shrunk");
    let b_before = b.stats().used_bytes;
    drop(copy);
    drop(ma);
    drop(va);
    a.trim();
    check_stats(&arena, &[&a, &b], "a freed");
    assert_eq!(a.stats().chunks, 0);
    let mut more = 0;
    loop {
        let mut buf = Vec::new_in(&b);
        if buf.try_reserve_exact(CHUNK / 2).is_err() || vb.try_reserve(1).is_err() {
            break;
        }
        fill_to(&mut buf, CHUNK / 2, tb);
        vb.push(buf);
        more += 1;
    }
    assert!(more > 0, "b could not grow into a's memory");
    assert!(b.stats().used_bytes > b_before);
    check(&vb, tb);
    check_stats(&arena, &[&a, &b], "b grown");
    drop(mb);
    drop(vb);
    check_stats(&arena, &[&a, &b], "b freed");
}

#[test]
fn boxes_of_large_arrays_cross_chunks_and_survive_the_other_client() {
    let arena = arena(16, Flags::STATISTICS | Flags::ZERO);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let sizes = [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17];
    let mut boxes = std::vec::Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let c = if i % 2 == 0 { &a } else { &b };
        let bx = Box::<[u8], _>::try_new_zeroed_slice_in(n, c).unwrap();
        // SAFETY: zeroed bytes are valid `u8`s.
        let mut bx = unsafe { bx.assume_init() };
        assert!(all_bytes_are(&bx, 0));
        bx.fill(tag(c));
        boxes.push((bx, tag(c)));
        check_stats(&arena, &[&a, &b], "box");
    }
    for (bx, t) in &boxes {
        assert!(all_bytes_are(bx, *t));
    }
    drop(boxes);
    check_stats(&arena, &[&a, &b], "boxes dropped");
    assert_eq!(a.stats().live_blocks + b.stats().live_blocks, 0);
}

/// The sizes and alignments of the attack: 0, 1, around a chunk, the whole arena, `usize::MAX`.
fn edge_sizes(arena: &Arena) -> std::vec::Vec<usize> {
    let total = arena.chunk_count() * arena.chunk_size();
    let chunk = arena.chunk_size();
    let max = arena.max_block_size();
    std::vec![
        0,
        1,
        15,
        16,
        2048,
        2049,
        chunk / 2 - 1,
        chunk / 2,
        chunk / 2 + 1,
        chunk - 4096,
        chunk - 1,
        chunk,
        chunk + 1,
        max - 1,
        max,
        max + 1,
        total - 1,
        total,
        total + 1,
        isize::MAX as usize,
        usize::MAX - 4096,
        usize::MAX,
    ]
}

#[test]
fn every_entry_point_at_edge_sizes_and_alignments() {
    let mut arenas = std::vec![
        arena(8, Flags::empty()),
        arena(8, Flags::STATISTICS),
        arena(8, Flags::STATISTICS | Flags::ZERO | Flags::POISON),
        Arena::new(
            Backing::heap(5 << 20, 1 << 20).unwrap(),
            Config::new()
                .with_chunk_size(1 << 20)
                .with_alignment(1 << 20)
                .with_min_block(256)
                .with_flags(Flags::STATISTICS | Flags::ZERO),
        )
        .unwrap(),
    ];
    // Reservations come with `std`.
    #[cfg(feature = "std")]
    if !cfg!(miri) {
        let flags = Flags::STATISTICS | Flags::GUARD | Flags::DECOMMIT | Flags::POISON;
        let config = Config::new()
            .with_chunk_size(CHUNK)
            .with_alignment(CHUNK)
            .with_flags(flags);
        arenas.push(Arena::with_reservation(8 * CHUNK, config).unwrap());
        let config = Config::new()
            .with_chunk_size(CHUNK)
            .with_flags(Flags::DECOMMIT);
        arenas.push(Arena::with_reservation(8 * CHUNK + 4096, config).unwrap());
    }
    if cfg!(miri) {
        // A few seconds there: one arena of each kind of flag set.
        arenas.truncate(1);
    }
    for arena in &arenas {
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let q = arena.create_client(Quota::bytes(CHUNK + 1)).unwrap();
        let mut held: std::vec::Vec<(NonNull<u8>, usize, u8, &Client<'_>)> = std::vec::Vec::new();
        for c in [&a, &q] {
            for (k, &size) in edge_sizes(arena).iter().enumerate() {
                if cfg!(miri) && k % 3 != 0 {
                    continue;
                }
                let shifts: &[u32] = if cfg!(miri) {
                    &[0, 17, 63]
                } else {
                    &[0, 4, 6, 7, 12, 13, 15, 16, 17, 19, 20, 21, 40, 63]
                };
                for &shift in shifts {
                    // 2^40 and 2^63 are not `usize` values where it has 32 bits.
                    let Some(align) = 1usize.checked_shl(shift) else {
                        continue;
                    };
                    let Ok(layout) = Layout::from_size_align(size, align) else {
                        continue;
                    };
                    let before = (arena.stats(), a.stats(), q.stats());
                    match c.alloc_sized(layout) {
                        Ok((p, got)) => {
                            assert!(got >= size.max(1));
                            assert!(size <= arena.max_block_size(), "{size} {align}");
                            assert!(align <= arena.max_alignment(), "{size} {align}");
                            assert_eq!(p.as_ptr().addr() % align, 0);
                            assert_eq!(c.size_of(p.as_ptr()), Ok(got));
                            assert_eq!(arena.owner_of(p.as_ptr()), Some(c.id()));
                            // SAFETY: `p` is a live block of `got` bytes.
                            unsafe { p.as_ptr().write_bytes(tag(c), got) };
                            held.push((p, got, tag(c), c));
                        }
                        Err(e) => {
                            assert!(
                                matches!(
                                    e,
                                    Error::UnsupportedAlignment { .. }
                                        | Error::TooLarge { .. }
                                        | Error::QuotaExceeded { .. }
                                        | Error::OutOfMemory { .. }
                                ),
                                "{e:?}"
                            );
                            // A refused shape changes nothing at all.
                            if matches!(
                                e,
                                Error::UnsupportedAlignment { .. } | Error::TooLarge { .. }
                            ) {
                                assert_eq!(before, (arena.stats(), a.stats(), q.stats()));
                            }
                        }
                    }
                    // Allocator::allocate answers as alloc does, never panics.
                    if let Ok(blk) = Allocator::allocate(&c, layout)
                        && size > 0
                    {
                        // SAFETY: just allocated with `layout`.
                        unsafe { Allocator::deallocate(&c, blk.cast(), layout) };
                    }
                    check_stats(arena, &[&a, &q], "edge alloc");
                    if held.len() > 6 {
                        let (p, got, t, owner) = held.remove(0);
                        // SAFETY: `p` is a live block of `got` bytes.
                        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), got) };
                        assert!(all_bytes_are(bytes, t));
                        let other = if owner.id() == a.id() { &q } else { &a };
                        // SAFETY: refused: not the other's block.
                        assert!(unsafe { other.free(p) }.is_err());
                        // SAFETY: `p` is not used after this.
                        assert_eq!(unsafe { owner.free(p) }, Ok(got));
                        check_stats(arena, &[&a, &q], "edge free");
                    }
                }
            }
        }
        for (p, got, t, c) in held.drain(..) {
            // SAFETY: `p` is a live block of `got` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), got) };
            assert!(all_bytes_are(bytes, t));
            // SAFETY: `p` is not used after this.
            assert_eq!(unsafe { c.free(p) }, Ok(got));
        }
        check_stats(arena, &[&a, &q], "all freed");
        // Pointers at the edges of the address space and of the arena.
        let base = arena.backing().as_ptr();
        for addr in [
            0usize,
            1,
            16,
            base.addr().wrapping_sub(16),
            base.addr(),
            base.addr() + arena.backing().len(),
            base.addr() + arena.backing().len() - 16,
            usize::MAX,
            usize::MAX - 15,
        ] {
            let p = base.with_addr(addr);
            assert!(!a.owns(p));
            assert!(a.size_of(p).is_err());
            assert_eq!(arena.owner_of(p), None);
            if let Some(nn) = NonNull::new(p) {
                // SAFETY: no live block is there: refused, nothing freed.
                assert!(unsafe { a.free(nn) }.is_err());
                // SAFETY: as above.
                assert!(unsafe { arena.free(nn) }.is_err());
            }
        }
        check_stats(arena, &[&a, &q], "bad pointers");
    }
}

/// Shrinking a run to a small block and growing it back, growing blocks that end at a chunk's
/// end while the next chunk is another client's: the other client's bytes never change and
/// the grown block never overlaps them.
#[test]
fn resizes_across_chunk_bounds_never_reach_another_client() {
    for flags in [Flags::STATISTICS, Flags::STATISTICS | Flags::ZERO] {
        let arena = arena(12, flags);
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        let (ta, tb) = (tag(&a), tag(&b));
        // A whole chunk of a, then a whole chunk of b right after it.
        let whole = Layout::from_size_align(CHUNK, 16).unwrap();
        let pa = a.alloc(whole).unwrap();
        let pb = b.alloc(whole).unwrap();
        // SAFETY: live blocks of `CHUNK` bytes.
        unsafe {
            pa.as_ptr().write_bytes(ta, CHUNK);
            pb.as_ptr().write_bytes(tb, CHUNK);
        }
        let b_bytes = || {
            // SAFETY: `pb` is live throughout.
            all_bytes_are(
                unsafe { core::slice::from_raw_parts(pb.as_ptr(), CHUNK) },
                tb,
            )
        };
        let mut p = pa;
        let mut old = whole;
        for new_size in [
            CHUNK + 1,
            2 * CHUNK,
            3 * CHUNK + 5,
            17,
            1,
            CHUNK - 1,
            CHUNK,
            4 * CHUNK,
        ] {
            let new = Layout::from_size_align(new_size, 16).unwrap();
            // SAFETY: `p` is a live block of `a` of `old`'s size.
            let r = unsafe {
                if new_size >= old.size() {
                    Allocator::grow(&&a, p, old, new)
                } else {
                    Allocator::shrink(&&a, p, old, new)
                }
            };
            let blk = r.unwrap_or_else(|_| panic!("resize to {new_size}"));
            p = blk.cast();
            let got = blk.len();
            assert!(got >= new_size);
            // No overlap with b's block.
            let (s, e) = (p.as_ptr().addr(), p.as_ptr().addr() + got);
            let (bs, be) = (pb.as_ptr().addr(), pb.as_ptr().addr() + CHUNK);
            assert!(e <= bs || be <= s, "{new_size}: a's block overlaps b's");
            // The kept prefix reads as a's.
            let kept = old.size().min(new_size);
            // SAFETY: live block of `got >= kept` bytes.
            let prefix = unsafe { core::slice::from_raw_parts(p.as_ptr(), kept) };
            assert!(all_bytes_are(prefix, ta));
            // SAFETY: live block of `got` bytes.
            unsafe { p.as_ptr().write_bytes(ta, got) };
            old = Layout::from_size_align(got, 16).unwrap();
            assert!(b_bytes(), "b's chunk written after resize to {new_size}");
            check_stats(&arena, &[&a, &b], "resize");
        }
        // Refused resizes change nothing: b's block through a, old larger than the block,
        // sizes on the wrong side.
        let before = (arena.stats(), a.stats(), b.stats());
        let big = Layout::from_size_align(2 * CHUNK, 16).unwrap();
        // SAFETY: refused before anything is touched.
        unsafe {
            assert!(Allocator::grow(&&a, pb, whole, big).is_err());
            assert!(Allocator::shrink(&&a, pb, whole, Layout::new::<u8>()).is_err());
            let too_old = Layout::from_size_align(old.size() + 1, 16).unwrap();
            assert!(Allocator::grow(&&a, p, too_old, Layout::new::<[u8; 1 << 20]>()).is_err());
            assert!(Allocator::grow(&&a, p, old, Layout::new::<u8>()).is_err());
            assert!(Allocator::shrink(&&a, p, Layout::new::<u8>(), old).is_err());
            let huge = Layout::from_size_align(isize::MAX as usize - 4095, 16);
            if let Ok(huge) = huge {
                assert!(Allocator::grow(&&a, p, old, huge).is_err());
            }
        }
        assert_eq!(before, (arena.stats(), a.stats(), b.stats()));
        assert!(b_bytes());
        // SAFETY: live blocks, not used after.
        unsafe {
            assert_eq!(a.free(p), Ok(old.size()));
            assert_eq!(b.free(pb), Ok(CHUNK));
        }
        check_stats(&arena, &[&a, &b], "end");
    }
}

/// `Arena::trim` and `Client::trim` on one thread while clients on others allocate, write,
/// check and free: every block keeps its owner's pattern, and the counters hold at the end.
#[test]
fn trim_while_other_threads_allocate() {
    let arena = arena(32, Flags::STATISTICS);
    let rounds = if cfg!(miri) { 20 } else { 3_000 };
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let arena = &arena;
            s.spawn(move || {
                let c = arena.create_client(Quota::UNLIMITED).unwrap();
                let tg = tag(&c);
                let mut live: std::vec::Vec<(NonNull<u8>, usize)> = std::vec::Vec::new();
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                for _ in 0..rounds {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let size = [16, 300, 3000, 20_000, CHUNK, CHUNK + 1][(x % 6) as usize];
                    if !x.is_multiple_of(3) || live.is_empty() {
                        if let Ok((p, n)) =
                            c.alloc_sized(Layout::from_size_align(size, 16).unwrap())
                        {
                            // SAFETY: live block of `n` bytes.
                            unsafe { p.as_ptr().write_bytes(tg, n) };
                            live.push((p, n));
                        }
                    } else {
                        let (p, n) = live.swap_remove((x >> 8) as usize % live.len());
                        // SAFETY: live block of `n` bytes.
                        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), n) };
                        assert!(all_bytes_are(bytes, tg));
                        if x.is_multiple_of(7) {
                            // SAFETY: not used after.
                            assert_eq!(unsafe { arena.free(p) }, Ok(n));
                        } else {
                            // SAFETY: not used after.
                            assert_eq!(unsafe { c.free(p) }, Ok(n));
                        }
                    }
                    if x.is_multiple_of(101) {
                        c.trim();
                    }
                }
                for (p, n) in live {
                    // SAFETY: live block of `n` bytes, not used after.
                    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), n) };
                    assert!(all_bytes_are(bytes, tg));
                    // SAFETY: as above.
                    assert_eq!(unsafe { c.free(p) }, Ok(n));
                }
                drop(c);
            });
        }
        for _ in 0..rounds {
            arena.trim();
            let st = arena.stats();
            assert_eq!(st.held_chunks + st.free_chunks, st.chunks);
            std::thread::yield_now();
        }
    });
    check_stats(&arena, &[], "after threads");
    assert_eq!(arena.stats().held_chunks, 0);
}

/// Pointers handed to another thread.
struct Handed<T>(T);
// SAFETY: the test hands the blocks over through a thread spawn, which orders their
// allocation before the frees on the other thread.
unsafe impl<T> Sync for Handed<T> {}

/// Blocks freed through the arena on other threads and still in their client's mailbox when
/// the client is deleted go back with its chunks; the next holder of those chunks gets clean
/// tables: its blocks at the same addresses are live, freed once, and refused twice.
#[test]
fn client_deleted_with_blocks_freed_on_other_threads() {
    let arena = arena(8, Flags::STATISTICS);
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let sizes = [16usize, 100, 3000, CHUNK / 2, CHUNK, 2 * CHUNK + 1];
    let blocks: std::vec::Vec<(usize, usize)> = sizes
        .iter()
        .map(|&n| {
            let (p, got) = a
                .alloc_sized(Layout::from_size_align(n, 16).unwrap())
                .unwrap();
            (p.as_ptr().addr(), got)
        })
        .collect();
    // Interior addresses of the run, one per chunk: no block starts there.
    let (run, run_len) = blocks[5];
    let base = arena.backing().as_ptr();
    for k in 1..run_len / CHUNK {
        let p = base.with_addr(run + k * CHUNK);
        assert!(!a.owns(p));
        assert_eq!(arena.owner_of(p), None);
        assert!(a.size_of(p).is_err());
        // SAFETY: no block starts there: refused, nothing freed.
        assert!(unsafe { arena.free(NonNull::new(p).unwrap()) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { a.free(NonNull::new(p).unwrap()) }.is_err());
    }
    let handed = Handed(
        blocks
            .iter()
            .map(|&(addr, got)| (NonNull::new(base.with_addr(addr)).unwrap(), got))
            .collect::<std::vec::Vec<_>>(),
    );
    let (handed, arena_ref) = (&handed, &arena);
    std::thread::scope(|s| {
        s.spawn(move || {
            let arena = arena_ref;
            for &(p, got) in &handed.0 {
                // SAFETY: a live block of `a`, which outlives the call; not used after.
                assert_eq!(unsafe { arena.free(p) }, Ok(got));
            }
        });
    });
    check_stats(&arena, &[&a], "mail pending");
    assert_eq!(a.stats().live_blocks, blocks.len());
    drop(a);
    check_stats(&arena, &[], "deleted");
    assert_eq!(arena.stats().held_chunks, 0);
    assert_eq!(arena.stats().used_bytes, Some(0));
    assert_eq!(arena.stats().live_blocks, Some(0));
    // The next client takes the same chunks and gets blocks at the same addresses.
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let again: std::vec::Vec<(NonNull<u8>, usize)> = sizes
        .iter()
        .map(|&n| {
            b.alloc_sized(Layout::from_size_align(n, 16).unwrap())
                .unwrap()
        })
        .collect();
    for &(p, got) in &again {
        assert_eq!(arena.owner_of(p.as_ptr()), Some(b.id()));
        assert_eq!(b.size_of(p.as_ptr()), Ok(got));
        // SAFETY: a live block of `got` bytes.
        unsafe { p.as_ptr().write_bytes(tag(&b), got) };
    }
    check_stats(&arena, &[&b], "retaken");
    let handed = Handed(again.clone());
    let (handed, arena_ref) = (&handed, &arena);
    std::thread::scope(|s| {
        s.spawn(move || {
            let arena = arena_ref;
            for &(p, got) in &handed.0 {
                // SAFETY: a live block of `b`, which outlives the call; not used after.
                assert_eq!(unsafe { arena.free(p) }, Ok(got));
                // SAFETY: freed just now: refused.
                assert!(unsafe { arena.free(p) }.is_err());
            }
        });
    });
    for &(p, _) in &again {
        // SAFETY: freed through the arena: refused.
        assert!(unsafe { b.free(p) }.is_err());
    }
    b.trim();
    check_stats(&arena, &[&b], "freed remotely");
    assert_eq!(b.stats().live_blocks, 0);
    assert_eq!(b.stats().chunks, 0);
}

/// After every step of a random workload of three clients (edge sizes, alignments up to a
/// chunk, frees by the holder and through the arena, trims, deletions), the counters keep
/// their relations, every block its owner's pattern, and a new client gets a block of
/// `ArenaStats::largest_free_block` bytes.
#[test]
fn random_workload_keeps_counters_and_largest_free_block_true() {
    #[path = "common/rng.rs"]
    mod rng;
    let steps = if cfg!(miri) { 20 } else { 3_000 };
    for (seed, flags) in [
        (1u64, Flags::STATISTICS),
        (7, Flags::STATISTICS | Flags::ZERO | Flags::POISON),
    ] {
        let arena = arena(16, flags);
        let mut r = rng::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut clients: std::vec::Vec<Option<Client<'_>>> = (0..3)
            .map(|i| {
                Some(
                    arena
                        .create_client(if i == 2 {
                            Quota::bytes(3 * CHUNK)
                        } else {
                            Quota::UNLIMITED
                        })
                        .unwrap(),
                )
            })
            .collect();
        let mut live: std::vec::Vec<std::vec::Vec<(NonNull<u8>, usize)>> =
            std::vec![std::vec::Vec::new(); 3];
        let sizes = [
            0,
            1,
            16,
            17,
            2048,
            2049,
            4096,
            CHUNK / 2,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
        ];
        for step in 0..steps {
            let i = r.below(3);
            let Some(c) = &clients[i] else {
                if r.below(8) == 0 {
                    clients[i] = Some(arena.create_client(Quota::UNLIMITED).unwrap());
                }
                continue;
            };
            match r.below(20) {
                0..=9 => {
                    let size = sizes[r.below(sizes.len())] + r.below(3) * 16;
                    let align = 1usize << r.below(17);
                    if let Ok((p, n)) = c.alloc_sized(Layout::from_size_align(size, align).unwrap())
                    {
                        assert_eq!(p.as_ptr().addr() % align, 0);
                        // SAFETY: a live block of `n` bytes.
                        unsafe { p.as_ptr().write_bytes(tag(c), n) };
                        live[i].push((p, n));
                    }
                }
                10..=15 if !live[i].is_empty() => {
                    let k = r.below(live[i].len());
                    let (p, n) = live[i].swap_remove(k);
                    // SAFETY: a live block of `n` bytes.
                    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), n) };
                    assert!(all_bytes_are(bytes, tag(c)), "step {step}");
                    if r.below(3) == 0 {
                        // SAFETY: not used after; its client outlives the call.
                        assert_eq!(unsafe { arena.free(p) }, Ok(n));
                    } else {
                        // SAFETY: not used after.
                        assert_eq!(unsafe { c.free(p) }, Ok(n));
                    }
                }
                16 => c.trim(),
                17 => arena.trim(),
                18 if r.below(4) == 0 => {
                    for &(p, n) in &live[i] {
                        // SAFETY: a live block of `n` bytes.
                        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), n) };
                        assert!(all_bytes_are(bytes, tag(c)), "step {step}");
                    }
                    live[i].clear();
                    clients[i] = None;
                }
                _ => {}
            }
            let alive: std::vec::Vec<&Client<'_>> = clients.iter().flatten().collect();
            check_stats(&arena, &alive, "random step");
            if step % 10 == 5
                && let Some(c) = &clients[i]
            {
                // After a trim nothing is cached: a largest free block over the small sizes is
                // a free run of buddy pages, which a request of its size gets in place.
                c.trim();
                let st = c.stats();
                let room = c.quota().limit().map_or(usize::MAX, |q| q - st.used_bytes);
                if st.largest_free_block > 2048 && st.largest_free_block <= room {
                    let l = Layout::from_size_align(st.largest_free_block, 16).unwrap();
                    let (p, _) = c.alloc_sized(l).unwrap_or_else(|e| {
                        panic!("step {step}: {} refused: {e:?}", st.largest_free_block)
                    });
                    assert_eq!(c.stats().chunks, st.chunks, "step {step}: took a chunk");
                    // SAFETY: just allocated, not used.
                    unsafe { c.free(p) }.unwrap();
                }
            }
            if step % 10 == 0 {
                let largest = arena.stats().largest_free_block;
                if largest > 0 {
                    let fresh = arena.create_client(Quota::UNLIMITED).unwrap();
                    let got = fresh.alloc(Layout::from_size_align(largest, 16).unwrap());
                    assert!(got.is_ok(), "step {step}: {largest} refused: {got:?}");
                    drop(fresh);
                }
            }
        }
        for (i, c) in clients.iter().enumerate() {
            if let Some(c) = c {
                for &(p, n) in &live[i] {
                    // SAFETY: a live block of `n` bytes.
                    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), n) };
                    assert!(all_bytes_are(bytes, tag(c)));
                }
            }
        }
    }
}

/// Clients on three threads grow collections until the arena runs out, check them, give them
/// back and grow again, while this thread trims and reads the arena's statistics and the
/// owners of addresses all over the arena: every collection keeps its client's pattern, and
/// every address answers one owner or none.
#[test]
fn collections_on_threads_against_trims_and_owner_probes() {
    let arena = arena(24, Flags::STATISTICS);
    let rounds = if cfg!(miri) { 1 } else { 6 };
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (arena, done) = (&arena, &done);
            s.spawn(move || {
                let c = arena.create_client(Quota::UNLIMITED).unwrap();
                let t = tag(&c);
                for round in 0..rounds {
                    let mut bufs: Vec<Vec<u8, &Client<'_>>, &Client<'_>> = Vec::new_in(&c);
                    let mut map: HashMap<usize, usize, DefaultHashBuilder, &Client<'_>> =
                        HashMap::with_hasher_in(DefaultHashBuilder::default(), &c);
                    let mut len = 64 + round * 1000;
                    loop {
                        let mut b = Vec::new_in(&c);
                        if b.try_reserve_exact(len).is_err()
                            || bufs.try_reserve(1).is_err()
                            || map.try_reserve(1).is_err()
                        {
                            break;
                        }
                        fill_to(&mut b, len, t);
                        map.insert(bufs.len(), len);
                        bufs.push(b);
                        len = (len * 5 / 4).min(2 * CHUNK + 7);
                        if cfg!(miri) && bufs.len() > 3 {
                            break;
                        }
                    }
                    for (i, b) in bufs.iter().enumerate() {
                        assert_eq!(map[&i], b.len());
                        assert!(
                            all_bytes_are(b, t),
                            "a collection of {t:#x} was overwritten"
                        );
                    }
                    let copy = map.clone();
                    assert_eq!(copy.len(), map.len());
                    drop((bufs, map, copy));
                    if round % 2 == 1 {
                        c.trim();
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            });
        }
        let base = arena.backing().as_ptr();
        let len = arena.stats().total_bytes;
        let mut x = 12345u64;
        while done.load(std::sync::atomic::Ordering::Acquire) < 3 {
            arena.trim();
            let st = arena.stats();
            assert_eq!(st.held_chunks + st.free_chunks, st.chunks);
            assert!(st.largest_free_block <= st.free_bytes);
            for _ in 0..if cfg!(miri) { 1 } else { 64 } {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Truncated to the low bits of `usize` where it has 32.
                let at = (x >> 16) as usize;
                let _ = arena.owner_of(base.wrapping_add((at % len) & !15));
            }
            std::thread::yield_now();
        }
    });
    check_stats(&arena, &[], "threads done");
    assert_eq!(arena.stats().held_chunks, 0);
}
