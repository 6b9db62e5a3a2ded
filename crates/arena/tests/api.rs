//! Behaviour and error tests of the public API, one behaviour each.

#![allow(clippy::cast_possible_truncation)]

mod common;

use std::alloc::Layout;
use std::ptr::NonNull;

use common::all_bytes_are;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Exhausted, Flags, POISON_BYTE, Quota};

const CHUNK: usize = 64 << 10;

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

#[test]
fn thread_traits_arena_sync_client_send() {
    fn sync_send<T: Sync + Send>() {}
    fn send<T: Send>() {}
    sync_send::<Arena>();
    send::<Client<'static>>();
    sync_send::<Backing>();
}

#[test]
fn new_block_too_small_errors() {
    let block = Backing::heap(CHUNK - 16, 4096).unwrap();
    let config = Config::new().with_chunk_size(CHUNK);
    assert_eq!(
        Arena::new(block, config).unwrap_err(),
        Error::BackingTooSmall {
            len: CHUNK - 16,
            chunk_size: CHUNK,
            align: 4096
        }
    );
}

#[test]
fn new_bad_config_errors() {
    let block = Backing::heap(CHUNK, 4096).unwrap();
    let config = Config::new().with_chunk_size(CHUNK + 1);
    assert!(matches!(
        Arena::new(block, config),
        Err(Error::InvalidChunkSize { .. })
    ));
}

#[test]
fn from_raw_range_past_address_space_end_errors() {
    // Ranges whose end wraps past the address space, and one longer than `isize::MAX`: no
    // memory is that long, so they are refused before anything is sized after them (the
    // pointers are never read).
    let config = Config::new().with_chunk_size(CHUNK);
    for (addr, len) in [
        (usize::MAX - 4095, 4 * CHUNK),
        (usize::MAX - 4 * CHUNK + 1, 4 * CHUNK),
        (1 << 20, isize::MAX.unsigned_abs() + 1),
    ] {
        let ptr = NonNull::new(std::ptr::without_provenance_mut::<u8>(addr)).unwrap();
        // SAFETY: the call refuses the range and never touches it.
        let result = unsafe { Arena::from_raw(ptr, len, config) };
        assert_eq!(
            result.unwrap_err(),
            Error::BackingTooLarge {
                len,
                align: config.alignment()
            },
            "{addr:#x} + {len:#x}"
        );
    }
}

#[test]
fn new_unaligned_block_rounds_start_up() {
    let block = Backing::heap(3 * CHUNK, 4096).unwrap();
    let start = block.as_ptr();
    // SAFETY: the range lies inside `block`, which outlives the arena (dropped after it).
    let arena = unsafe {
        Arena::from_raw(
            NonNull::new(start.add(8)).unwrap(),
            3 * CHUNK - 8,
            Config::new().with_chunk_size(CHUNK),
        )
    }
    .unwrap();
    assert_eq!(arena.chunk_count(), 2);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(4096, 4096)).unwrap();
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    assert!(p.as_ptr() as usize >= start as usize + 4096);
    drop(client);
    drop(arena);
    drop(block);
}

#[test]
fn new_heap_block_drops_reservation_flags() {
    let arena = arena(1, Flags::all());
    assert_eq!(
        arena.accepted_flags(),
        Flags::ZERO | Flags::POISON | Flags::STATISTICS
    );
    assert_eq!(arena.max_block_size(), CHUNK);
}

#[test]
#[cfg(feature = "std")]
fn supported_flags_lists_every_flag_with_std() {
    assert_eq!(Arena::supported_flags(), Flags::all());
}

#[test]
fn alloc_sizes_round_to_classes_and_pages() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for (size, want) in [
        (1, 16),
        (16, 16),
        (17, 32),
        (100, 112),
        (129, 160),
        (1000, 1024),
        (2048, 2048),
        (2049, 2304),
        (5000, 5120),
    ] {
        let (p, got) = client.alloc_sized(layout(size, 8)).unwrap();
        assert_eq!(got, want, "size {size}");
        assert_eq!(client.size_of(p.as_ptr()), Ok(want));
    }
}

#[test]
fn alloc_zero_size_gets_min_block() {
    let config = Config::new().with_chunk_size(CHUNK).with_min_block(64);
    let arena = Arena::new(Backing::heap(CHUNK, 4096).unwrap(), config).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let (a, size) = client.alloc_sized(layout(0, 1)).unwrap();
    let (b, _) = client.alloc_sized(layout(0, 1)).unwrap();
    assert_eq!(size, 64);
    assert_ne!(a, b);
}

#[test]
fn alloc_alignment_honoured_up_to_max() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    assert_eq!(arena.max_alignment(), 4096);
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [1, 24, 300, 3000] {
            let p = client.alloc(layout(size, align)).unwrap();
            assert_eq!(p.as_ptr() as usize % align.max(16), 0, "{size} {align}");
        }
    }
}

#[test]
fn alloc_alignment_above_max_errors() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    assert_eq!(
        client.alloc(layout(8, 8192)),
        Err(Error::UnsupportedAlignment {
            align: 8192,
            max: 4096
        })
    );
}

/// An arena whose chunk alignment is `align`, over `memory` from `align` bytes past a 128-byte
/// boundary (so no block is aligned past `align` by luck).
///
/// # Safety
/// `memory` outlives the arena and is not touched while it lives.
unsafe fn arena_aligned_to(memory: &mut [u8], align: usize) -> Arena {
    let skip = (align + 128 - memory.as_ptr() as usize % 128) % 128;
    let start = NonNull::new(memory[skip..].as_mut_ptr()).unwrap();
    // SAFETY: `4 * CHUNK` bytes from `start` lie in `memory` (which has 128 bytes to spare),
    // and the caller keeps it alive and untouched while the arena lives.
    let backing = unsafe { Backing::from_raw(start, 4 * CHUNK) };
    let config = Config::new().with_chunk_size(CHUNK).with_alignment(align);
    let arena = Arena::new(backing, config).unwrap();
    assert_eq!(arena.max_alignment(), align);
    arena
}

#[test]
fn small_alloc_alignment_above_a_low_max_errors() {
    for max in [16, 32] {
        let mut memory = vec![0u8; 4 * CHUNK + 128];
        // SAFETY: `memory` is declared first, so it outlives the arena, and is not touched.
        let arena = unsafe { arena_aligned_to(&mut memory, max) };
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        for align in (max * 2..=128).filter(|a| a.is_power_of_two()) {
            for size in [1, 32, 64, 2048] {
                let before = (client.stats(), arena.stats());
                assert_eq!(
                    client.alloc(layout(size, align)),
                    Err(Error::UnsupportedAlignment { align, max }),
                    "size {size} align {align} max {max}"
                );
                assert_eq!((client.stats(), arena.stats()), before);
            }
        }
        for align in (1..=max).filter(|a| a.is_power_of_two()) {
            for size in [1, 32, 64, 2048, 5000] {
                let p = client.alloc(layout(size, align)).unwrap();
                assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            }
        }
    }
}

#[test]
fn alloc_too_large_errors() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    assert_eq!(
        client.alloc(layout(CHUNK + 1, 8)),
        Err(Error::TooLarge {
            size: CHUNK + 1,
            max: CHUNK
        })
    );
    assert_eq!(client.stats().chunks, 0);
}

#[test]
fn alloc_whole_chunk_fills_it() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(CHUNK, 8)).unwrap();
    assert_eq!(client.stats().largest_free_block, 0);
    assert_eq!(
        client.alloc(layout(16, 8)),
        Err(Error::OutOfMemory {
            size: 16,
            requested: 8192,
            exhausted: Exhausted::Chunks {
                chunks: 1,
                chunk_size: CHUNK
            }
        })
    );
    assert_eq!(free(&client, p), Ok(CHUNK));
    assert_eq!(client.stats().largest_free_block, CHUNK);
}

#[test]
fn alloc_over_quota_errors_and_changes_nothing() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::bytes(1024)).unwrap();
    client.alloc(layout(1000, 8)).unwrap();
    let before = client.stats();
    assert_eq!(
        client.alloc(layout(1, 1)),
        Err(Error::QuotaExceeded {
            requested: 16,
            used: 1024,
            quota: 1024
        })
    );
    assert_eq!(client.stats(), before);
}

#[test]
fn alloc_out_of_memory_errors_and_recovers() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match client.alloc(layout(3000, 8)) {
            Ok(p) => blocks.push(p),
            Err(e) => break e,
        }
    };
    let out_of_chunks = Error::OutOfMemory {
        size: 3000,
        requested: 3072,
        exhausted: Exhausted::Chunks {
            chunks: 2,
            chunk_size: CHUNK,
        },
    };
    assert_eq!(err, out_of_chunks);
    let before = client.stats();
    assert_eq!(client.alloc(layout(3000, 8)), Err(out_of_chunks));
    assert_eq!(client.stats(), before);
    // Each 3 KiB block takes a 4 KiB buddy block and gives back its last 1 KiB, which no
    // 3 KiB block fits.
    assert_eq!(blocks.len(), 2 * CHUNK / 4096);
    free(&client, blocks.pop().unwrap()).unwrap();
    client.alloc(layout(3000, 8)).unwrap();
}

#[test]
fn free_outside_arena_errors() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let mut local = 0u64;
    let p = NonNull::from(&mut local).cast::<u8>();
    assert_eq!(
        free(&client, p),
        Err(Error::Foreign {
            addr: p.as_ptr() as usize
        })
    );
}

#[test]
fn free_at_arena_edges_errors_and_changes_nothing() {
    // Two chunks and a tail of the backing that no chunk covers.
    let config = Config::new().with_chunk_size(CHUNK);
    let arena = Arena::new(Backing::heap(2 * CHUNK + 4096, 4096).unwrap(), config).unwrap();
    assert_eq!(arena.chunk_count(), 2);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    // Blocks over half a chunk take a chunk each: the client holds both.
    let blocks = [
        client.alloc(layout(CHUNK / 2 + 1, 8)).unwrap(),
        client.alloc(layout(CHUNK / 2 + 1, 8)).unwrap(),
    ];
    assert_eq!(client.stats().chunks, 2);
    let before = client.stats();
    let base = arena.backing().as_ptr();
    let end = base.wrapping_add(2 * CHUNK);
    let last = NonNull::new(end.wrapping_sub(16)).unwrap();
    assert!(arena.contains(last.as_ptr()));
    assert_eq!(
        free(&client, last),
        Err(Error::NotABlock {
            addr: last.as_ptr() as usize
        })
    );
    for outside in [end, end.wrapping_add(4096 - 16), base.wrapping_sub(16)] {
        assert!(!arena.contains(outside));
        let outside = NonNull::new(outside).unwrap();
        assert_eq!(
            free(&client, outside),
            Err(Error::Foreign {
                addr: outside.as_ptr() as usize
            })
        );
    }
    assert_eq!(client.stats(), before);
    for p in blocks {
        assert!(client.owns(p.as_ptr()));
        // 129 pages of 256 bytes, rounded to a sixteenth of 256 pages: 144.
        assert_eq!(free(&client, p), Ok(CHUNK / 2 + CHUNK / 16));
    }
}

#[test]
fn free_other_clients_block_errors_and_keeps_it() {
    let arena = arena(2, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = a.alloc(layout(64, 8)).unwrap();
    b.alloc(layout(64, 8)).unwrap();
    let before = (a.stats(), b.stats());
    assert!(matches!(free(&b, p), Err(Error::NotOwned { chunk: 0, .. })));
    assert_eq!((a.stats(), b.stats()), before);
    assert!(a.owns(p.as_ptr()));
    assert_eq!(free(&a, p), Ok(64));
}

#[test]
fn free_interior_pointer_errors() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for size in [64, 5000] {
        let p = client.alloc(layout(size, 8)).unwrap();
        for delta in [1, 16, 48] {
            // SAFETY: inside the block.
            let inner = unsafe { NonNull::new_unchecked(p.as_ptr().add(delta)) };
            assert_eq!(
                free(&client, inner),
                Err(Error::NotABlock {
                    addr: inner.as_ptr() as usize
                })
            );
        }
        assert!(client.owns(p.as_ptr()));
    }
}

#[test]
fn free_twice_errors() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let keep = client.alloc(layout(32, 8)).unwrap();
    for size in [32, 20_000] {
        let p = client.alloc(layout(size, 8)).unwrap();
        free(&client, p).unwrap();
        let before = client.stats();
        assert_eq!(
            free(&client, p),
            Err(Error::NotABlock {
                addr: p.as_ptr() as usize
            })
        );
        assert_eq!(client.stats(), before);
    }
    assert!(client.owns(keep.as_ptr()));
}

#[test]
fn owns_only_live_block_starts() {
    let arena = arena(2, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = a.alloc(layout(100, 8)).unwrap();
    assert!(a.owns(p.as_ptr()));
    assert!(!b.owns(p.as_ptr()));
    assert!(!a.owns(p.as_ptr().wrapping_add(16)));
    assert!(!a.owns(std::ptr::null()));
    assert_eq!(
        b.size_of(p.as_ptr()),
        Err(Error::NotOwned {
            addr: p.as_ptr() as usize,
            chunk: 0
        })
    );
}

#[test]
fn delete_client_frees_everything_and_spares_others() {
    let arena = arena(8, Flags::STATISTICS);
    let keep = arena.create_client(Quota::UNLIMITED).unwrap();
    let kept: Vec<_> = (0..50)
        .map(|i| {
            let p = keep.alloc(layout(300, 8)).unwrap();
            // SAFETY: a live block of 300 bytes.
            unsafe { p.as_ptr().write_bytes(i, 300) };
            (p, i)
        })
        .collect();
    let leaky = arena.create_client(Quota::UNLIMITED).unwrap();
    for size in (0..60).map(|i| 16 + i * 37 % 9000) {
        leaky.alloc(layout(size, 8)).unwrap();
    }
    assert!(leaky.stats().chunks >= 2);
    let held = arena.stats().held_chunks;
    let leaked_chunks = leaky.stats().chunks;
    arena.delete_client(leaky);
    assert_eq!(arena.stats().held_chunks, held - leaked_chunks);
    assert_eq!(arena.stats().used_bytes, Some(keep.stats().used_bytes));
    assert_eq!(arena.stats().live_blocks, Some(50));
    for (p, i) in kept {
        // SAFETY: still live.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 300) };
        assert!(all_bytes_are(bytes, i));
    }
}

#[test]
fn deleted_client_chunks_go_to_next_client() {
    let arena = arena(1, Flags::empty());
    let a = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = a.alloc(layout(CHUNK, 8)).unwrap();
    let b = arena.create_client(Quota::UNLIMITED).unwrap();
    assert!(matches!(
        b.alloc(layout(16, 8)),
        Err(Error::OutOfMemory { .. })
    ));
    drop(a);
    let q = b.alloc(layout(CHUNK, 8)).unwrap();
    assert_eq!(p, q);
    assert!(b.owns(q.as_ptr()));
    assert_ne!(b.id(), 1);
}

#[test]
fn zero_flag_zeroes_reused_memory() {
    let arena = arena(1, Flags::ZERO);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for size in [48, 4000] {
        let p = client.alloc(layout(size, 8)).unwrap();
        // SAFETY: a live block of `size` bytes.
        unsafe { p.as_ptr().write_bytes(0xEE, size) };
        free(&client, p).unwrap();
        let q = client.alloc(layout(size, 8)).unwrap();
        assert_eq!(p, q);
        // SAFETY: a live block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), size) };
        assert!(all_bytes_are(bytes, 0));
    }
}

#[test]
fn poison_flag_fills_freed_blocks() {
    let arena = arena(1, Flags::POISON);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let _keep = client.alloc(layout(4000, 8)).unwrap();
    for (size, kept) in [(48, 2), (4000, 0)] {
        let p = client.alloc(layout(size, 8)).unwrap();
        free(&client, p).unwrap();
        // SAFETY: the memory stays inside the arena; only read to check the poison.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr().add(kept), size - kept) };
        assert!(all_bytes_are(bytes, POISON_BYTE), "size {size}");
    }
}

#[test]
fn stats_track_usage_and_cached_chunks() {
    let arena = arena(4, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let big: Vec<_> = (0..3)
        .map(|_| client.alloc(layout(CHUNK, 8)).unwrap())
        .collect();
    let small = client.alloc(layout(10, 1)).unwrap();
    let stats = client.stats();
    assert_eq!(stats.chunks, 4);
    assert_eq!(stats.used_bytes, 3 * CHUNK + 16);
    assert_eq!(stats.live_blocks, 4);
    assert_eq!(stats.total_bytes, 4 * CHUNK);
    assert_eq!(stats.free_bytes, CHUNK - 16);
    assert_eq!(stats.cached_chunks, 0);
    assert_eq!(stats.allocations, 4);
    assert!(stats.largest_free_block >= CHUNK / 2);
    let a = arena.stats();
    assert_eq!(
        (a.held_chunks, a.free_chunks, a.largest_free_block),
        (4, 0, 0)
    );
    assert_eq!(a.used_bytes, Some(3 * CHUNK + 16));
    for p in big {
        free(&client, p).unwrap();
    }
    let stats = client.stats();
    assert_eq!(stats.chunks, 2, "one empty chunk kept");
    assert_eq!(stats.cached_chunks, 1);
    assert_eq!(stats.frees, 3);
    assert_eq!(stats.peak_used_bytes, 3 * CHUNK + 16);
    let a = arena.stats();
    assert_eq!((a.free_chunks, a.cached_chunks), (2, 2));
    assert_eq!(
        a.largest_free_block,
        2 * CHUNK,
        "the two free chunks are adjacent"
    );
    // About 2.1% with 64 KiB chunks (1.7% with 1 MiB chunks).
    assert!(a.bookkeeping_bytes * 40 < a.total_bytes);
    free(&client, small).unwrap();
    assert_eq!(arena.stats().used_bytes, Some(0));
}

#[test]
fn arena_without_statistics_reports_none() {
    let arena = arena(1, Flags::empty());
    assert_eq!(arena.stats().used_bytes, None);
    assert_eq!(arena.stats().live_blocks, None);
}

#[test]
fn clients_on_threads_never_overlap() {
    let arena = arena(64, Flags::STATISTICS);
    let per_thread: Vec<(Vec<(usize, usize)>, Client<'_>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u8)
            .map(|t| {
                let arena = &arena;
                scope.spawn(move || {
                    let client = arena.create_client(Quota::UNLIMITED).unwrap();
                    let n = if cfg!(miri) { 20 } else { 200 };
                    let mut blocks = Vec::new();
                    for i in 0..n {
                        let size = 16 + (i * 131 + usize::from(t) * 7) % 6000;
                        let (p, got) = client.alloc_sized(layout(size, 8)).unwrap();
                        // SAFETY: a live block of `got` bytes.
                        unsafe { p.as_ptr().write_bytes(t, got) };
                        blocks.push((p.as_ptr() as usize, got));
                    }
                    for &(p, got) in &blocks {
                        // SAFETY: still live; nothing else writes it.
                        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, got) };
                        assert!(all_bytes_are(bytes, t));
                    }
                    // The client moves to the scope's thread, which keeps it (and its chunks)
                    // until the addresses are compared.
                    (blocks, client)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(usize, usize)> = per_thread
        .iter()
        .flat_map(|(blocks, _)| blocks.iter().copied())
        .collect();
    all.sort_unstable();
    for w in all.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0);
    }
    drop(per_thread);
    assert_eq!(arena.stats().held_chunks, 0);
}

#[test]
fn client_moves_to_another_thread() {
    let arena = arena(2, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(64, 8)).unwrap() as NonNull<u8>;
    let addr = p.as_ptr() as usize;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            assert!(client.owns(addr as *const u8));
            drop(client);
        });
    });
    assert_eq!(arena.stats().held_chunks, 0);
}

#[test]
fn debug_output_names_types() {
    let arena = arena(1, Flags::ZERO);
    let client = arena.create_client(Quota::bytes(100)).unwrap();
    assert!(format!("{arena:?}").starts_with("Arena {"));
    assert!(format!("{client:?}").contains("id: 1"));
    assert!(format!("{:?}", arena.backing()).contains("heap"));
}

#[test]
#[cfg(feature = "std")]
fn reservation_commits_on_demand_and_guards() {
    let chunk = 1 << 20;
    let config = Config::new()
        .with_chunk_size(chunk)
        .with_flags(Flags::DECOMMIT | Flags::GUARD);
    let arena = Arena::with_reservation(4 * chunk, config).unwrap();
    assert!(arena.backing().is_reserved());
    assert_eq!(
        arena.accepted_flags(),
        Flags::DECOMMIT | Flags::GUARD,
        "page size {}",
        memvisor_vmem::page_size()
    );
    assert_eq!(arena.max_block_size(), chunk / 2);
    let r = arena.backing().reservation().unwrap();
    assert_eq!(r.committed_bytes(), 0);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(chunk / 2, 8)).unwrap();
    // SAFETY: a live block of half a chunk.
    unsafe { p.as_ptr().write_bytes(1, chunk / 2) };
    assert_eq!(r.committed_bytes(), chunk - memvisor_vmem::page_size());
    assert!(matches!(
        client.alloc(layout(chunk / 2 + 1, 8)),
        Err(Error::TooLarge { .. })
    ));
    drop(client);
    assert_eq!(r.committed_bytes(), 0);
    assert_eq!(arena.stats().cached_chunks, 0);
}

#[test]
#[cfg(feature = "std")]
fn reservation_of_under_a_chunk_is_too_small_and_uses_only_what_was_asked() {
    let chunk = 64 << 10;
    let config = Config::new().with_chunk_size(chunk);
    for len in [0, 1, chunk - 1] {
        assert!(
            matches!(
                Arena::with_reservation(len, config),
                Err(Error::BackingTooSmall { len: l, chunk_size, .. }) if l == len && chunk_size == chunk
            ),
            "len {len}"
        );
    }
    // One byte short of two chunks: the reservation is rounded up to whole pages, but the
    // arena spans the length asked for, which holds one chunk.
    let arena = Arena::with_reservation(2 * chunk - 1, config).unwrap();
    assert_eq!(arena.backing().len(), 2 * chunk - 1);
    assert_eq!(arena.stats().chunks, 1);
    assert_eq!(arena.stats().total_bytes, chunk);
}

#[test]
#[cfg(feature = "std")]
fn reservation_without_decommit_caches_chunks() {
    let chunk = 1 << 20;
    let arena = Arena::with_reservation(2 * chunk, Config::new().with_chunk_size(chunk)).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    client.alloc(layout(100, 8)).unwrap();
    drop(client);
    assert_eq!(arena.stats().cached_chunks, 1);
    assert_eq!(
        arena.backing().reservation().unwrap().committed_bytes(),
        chunk
    );
}

/// Allocates a block of each of `sizes` bytes and writes all of it, after checking that its
/// pages are committed in the reservation (`what` starts the message).
#[cfg(feature = "std")]
fn alloc_committed_and_write(
    client: &Client<'_>,
    r: &memvisor_vmem::Reservation,
    sizes: &[usize],
    what: &str,
) {
    let page = memvisor_vmem::page_size();
    for &size in sizes {
        let p = client.alloc(layout(size, 8)).unwrap();
        let off = p.as_ptr() as usize - r.as_ptr() as usize;
        let start = off / page * page;
        let len = (off + size).next_multiple_of(page) - start;
        assert!(
            r.is_committed(start, len).unwrap(),
            "{what}a block of {size} bytes"
        );
        // SAFETY: a live block of `size` bytes.
        unsafe { p.as_ptr().write_bytes(0xA5, size) };
    }
}

/// The memory of an arena without clients may be given back to the system through its
/// reservation, whatever the arena committed before: a chunk is committed again when a client
/// takes it, small blocks, buddy blocks and runs alike.
#[cfg(feature = "std")]
#[test]
fn chunks_decommitted_through_the_reservation_are_committed_again_when_taken() {
    let arena = Arena::with_reservation(4 * CHUNK, Config::new().with_chunk_size(CHUNK)).unwrap();
    let r = arena.backing().reservation().unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    client.alloc(layout(100, 8)).unwrap();
    client.alloc(layout(2 * CHUNK, 8)).unwrap();
    drop(client);
    assert_eq!(arena.stats().cached_chunks, 3);
    // SAFETY: no client lives, so no block does: nothing refers to the memory, and nothing
    // touches it until it is committed again.
    unsafe { r.decommit_unchecked(0, r.len()) }.unwrap();
    assert_eq!(r.committed_bytes(), 0);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    alloc_committed_and_write(&client, r, &[100, 5000, 2 * CHUNK], "");
    drop(client);
    assert_eq!(arena.stats().cached_chunks, 3);
    assert_eq!(r.committed_bytes(), 3 * CHUNK);
}

/// As above, over a sparse reservation too (where decommitting only discards), and with guard
/// pages: a decommit over a chunk's guard page is refused and changes nothing, and one of each
/// chunk's other pages is committed again when the chunk is taken.
#[test]
#[cfg(feature = "std")]
#[cfg_attr(
    miri,
    ignore = "6 s under Miri; the test above runs the same arena code there"
)]
fn chunks_decommitted_in_either_mode_and_around_guard_pages_are_committed_again() {
    use memvisor_vmem::CommitMode;

    let chunk = 1 << 20;
    let page = memvisor_vmem::page_size();
    for mode in [CommitMode::Protected, CommitMode::Sparse] {
        for flags in [Flags::empty(), Flags::GUARD] {
            let config = Config::new().with_chunk_size(chunk).with_flags(flags);
            let backing = Backing::reserve(2 * chunk, chunk, mode).unwrap();
            let arena = Arena::new(backing, config).unwrap();
            assert_eq!(arena.accepted_flags(), flags, "page size {page}");
            let r = arena.backing().reservation().unwrap();
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            client.alloc(layout(100, 8)).unwrap();
            client.alloc(layout(chunk / 2, 8)).unwrap();
            drop(client);
            let committed = r.committed_bytes();
            assert!(committed > 0);
            let usable = if flags.contains(Flags::GUARD) {
                // SAFETY: no client lives (nothing refers to the memory); refused anyway.
                let whole = unsafe { r.decommit_unchecked(0, r.len()) };
                assert!(
                    matches!(whole, Err(memvisor_vmem::Error::Guarded { .. })),
                    "{mode:?}: {whole:?}"
                );
                assert_eq!(r.committed_bytes(), committed, "{mode:?}");
                chunk - page
            } else {
                chunk
            };
            for c in 0..2 {
                // SAFETY: no client lives, so no block does, and none is taken until this
                // returns.
                unsafe { r.decommit_unchecked(c * chunk, usable) }.unwrap();
            }
            assert_eq!(r.committed_bytes(), 0, "{mode:?} {flags:?}");
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let what = format!("{mode:?} {flags:?}: ");
            alloc_committed_and_write(&client, r, &[100, chunk / 2], &what);
            drop(client);
            assert_eq!(r.committed_bytes(), committed, "{mode:?} {flags:?}");
        }
    }
}

#[test]
fn cached_block_is_not_live() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for size in [48, 5000] {
        let p = client.alloc(layout(size, 8)).unwrap();
        let got = free(&client, p).unwrap();
        assert!(client.stats().cached_bytes >= got, "size {size} cached");
        assert!(!client.owns(p.as_ptr()));
        assert!(matches!(
            client.size_of(p.as_ptr()),
            Err(Error::NotABlock { .. })
        ));
        let before = client.stats();
        assert!(matches!(free(&client, p), Err(Error::NotABlock { .. })));
        assert_eq!(client.stats(), before, "double free changed nothing");
    }
}

#[test]
fn cached_block_reused_for_same_class_or_order() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(100, 8)).unwrap();
    free(&client, p).unwrap();
    assert_eq!(client.alloc(layout(112, 8)), Ok(p));
    // 5000 and 6000 bytes both take an 8 KiB buddy block: the cached block is cut anew.
    let q = client.alloc(layout(5000, 8)).unwrap();
    free(&client, q).unwrap();
    assert_eq!(client.alloc_sized(layout(6000, 8)), Ok((q, 6144)));
    assert_eq!(client.stats().cached_bytes, 0);
}

#[test]
fn cached_blocks_count_as_free_in_stats() {
    let arena = arena(2, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let small = client.alloc(layout(40, 8)).unwrap();
    let large = client.alloc(layout(3000, 8)).unwrap();
    let keep = client.alloc(layout(10, 8)).unwrap();
    free(&client, small).unwrap();
    free(&client, large).unwrap();
    let stats = client.stats();
    assert_eq!(stats.used_bytes, 16);
    assert_eq!(stats.live_blocks, 1);
    assert_eq!(stats.cached_bytes, 48 + 3072);
    assert_eq!(stats.free_bytes, stats.total_bytes - 16);
    assert_eq!(stats.frees, 2);
    assert_eq!(arena.stats().used_bytes, Some(16));
    assert_eq!(arena.stats().live_blocks, Some(1));
    free(&client, keep).unwrap();
    assert_eq!(arena.stats().used_bytes, Some(0));
}

#[test]
fn quota_ignores_cached_blocks() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::bytes(4096)).unwrap();
    let p = client.alloc(layout(4096, 8)).unwrap();
    free(&client, p).unwrap();
    assert_eq!(client.stats().used_bytes, 0);
    client.alloc(layout(4096, 8)).unwrap();
}

#[test]
fn out_of_memory_gives_cached_blocks_back_first() {
    let arena = arena(1, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    // Small and large blocks of many sizes, all freed into the caches and slabs.
    let blocks: Vec<_> = (0..20)
        .map(|i| client.alloc(layout([48, 3000, 700][i % 3], 8)).unwrap())
        .collect();
    for p in blocks {
        free(&client, p).unwrap();
    }
    assert!(client.stats().cached_bytes > 0);
    assert_eq!(client.stats().chunks, 1);
    // The only chunk is taken whole: the caches and the empty slabs go back.
    let whole = client.alloc(layout(CHUNK, 8)).unwrap();
    assert_eq!(client.stats().cached_bytes, 0);
    assert_eq!(client.stats().used_bytes, CHUNK);
    free(&client, whole).unwrap();
}

#[test]
fn out_of_memory_with_caches_fills_as_much_again() {
    let arena = arena(4, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let fill = |client: &Client<'_>| {
        let mut blocks = Vec::new();
        let mut i = 0usize;
        while let Ok(p) = client.alloc(layout(16 + (i * 7919) % 9000, 8)) {
            blocks.push(p);
            i += 1;
        }
        blocks
    };
    let first = fill(&client);
    let used = client.stats().used_bytes;
    for &p in &first {
        free(&client, p).unwrap();
    }
    assert!(client.stats().cached_bytes > 0);
    let second = fill(&client);
    assert_eq!(second.len(), first.len());
    assert_eq!(client.stats().used_bytes, used);
}

#[test]
fn out_of_memory_that_caches_cannot_help_changes_nothing() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let _keep = client.alloc(layout(100, 8)).unwrap();
    let p = client.alloc(layout(3000, 8)).unwrap();
    free(&client, p).unwrap();
    let before = client.stats();
    assert!(before.cached_bytes > 0);
    // A whole chunk cannot fit beside the live small block, caches or not.
    assert!(matches!(
        client.alloc(layout(CHUNK, 8)),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(client.stats(), before);
}

#[test]
fn delete_client_with_cached_blocks_frees_everything() {
    let arena = arena(16, Flags::STATISTICS);
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for i in 0..200 {
        let p = client.alloc(layout(16 + i * 131 % 3000, 8)).unwrap();
        if i % 2 == 0 {
            free(&client, p).unwrap();
        }
    }
    assert!(client.stats().cached_bytes > 0);
    arena.delete_client(client);
    let stats = arena.stats();
    assert_eq!(stats.held_chunks, 0);
    assert_eq!(stats.used_bytes, Some(0));
    assert_eq!(stats.live_blocks, Some(0));
}

#[test]
fn out_of_memory_with_a_stuck_cached_block_changes_nothing() {
    let arena = arena(1, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    // Alignment 256 sends these sizes to the buddy allocator, in 256-byte pages.
    let paged = |pages: usize| layout(pages * 256, 256);
    // Blocks of 5 pages, each with its tail (1 + 2 pages) taken by other blocks: full.
    let fives: Vec<_> = (0..CHUNK / 2048)
        .map(|_| client.alloc(paged(5)).unwrap())
        .collect();
    for _ in 0..CHUNK / 2048 {
        client.alloc(paged(1)).unwrap();
        client.alloc(paged(2)).unwrap();
    }
    assert!(client.alloc(paged(1)).is_err());
    free(&client, fives[0]).unwrap();
    let before = client.stats();
    assert_eq!(before.cached_bytes, 5 * 256);
    // Six pages would need the cached block's tail, which is in use: out of memory, and
    // nothing changes (the cached block stays cached).
    assert!(matches!(
        client.alloc(paged(6)),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(client.stats(), before);
    assert_eq!(client.alloc(paged(5)), Ok(fives[0]));
}

/// Huge-page advice on a reserved backing before the arena is made: the advice is taken, and
/// chunks committed under it hold blocks as usual (also after one was given back and decommitted).
#[test]
#[cfg(all(feature = "std", target_os = "linux"))]
fn huge_page_advice_on_a_reserved_backing() {
    use memvisor_vmem::{CommitMode, HugePageAdvice};

    let backing = Backing::reserve(8 << 20, 2 << 20, CommitMode::Protected).unwrap();
    let reservation = backing.reservation().unwrap();
    match reservation.advise_huge_pages(0, reservation.len(), HugePageAdvice::Huge) {
        Ok(()) => {}
        // A kernel without transparent huge pages refuses; the arena is not concerned.
        Err(e) => {
            eprintln!("skipped: huge page advice refused: {e}");
            return;
        }
    }
    let arena = Arena::new(backing, Config::new().with_flags(Flags::DECOMMIT)).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    for _ in 0..2 {
        let p = client.alloc(layout(3 << 20, 8)).unwrap();
        // SAFETY: a live block of 3 MiB.
        unsafe { p.as_ptr().write_bytes(0xa5, 3 << 20) };
        assert_eq!(free(&client, p), Ok(3 << 20));
    }
}

/// The arena's `largest_free_block` is the block a new client really gets: without guard
/// pages, the longest run of free chunks; with them, one chunk's largest block.
#[test]
fn arena_largest_free_block_counts_runs_of_free_chunks() {
    let arena = arena(8, Flags::empty());
    assert_eq!(arena.stats().largest_free_block, 8 * CHUNK);
    assert_eq!(arena.stats().largest_free_block, arena.max_block_size());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    // Chunks 0..3 for a run, then one chunk in the middle of the rest.
    let run = client.alloc(layout(3 * CHUNK, 8)).unwrap();
    let one = client.alloc(layout(CHUNK, 8)).unwrap();
    assert_eq!(arena.stats().largest_free_block, 4 * CHUNK);
    let newcomer = arena.create_client(Quota::UNLIMITED).unwrap();
    let got = newcomer.alloc_sized(layout(4 * CHUNK, 8)).unwrap();
    assert_eq!(got.1, 4 * CHUNK, "what the statistic promised");
    assert_eq!(arena.stats().largest_free_block, 0);
    assert!(newcomer.alloc(layout(1, 1)).is_err());
    assert_eq!(free(&newcomer, got.0), Ok(4 * CHUNK));
    assert_eq!(free(&client, run), Ok(3 * CHUNK));
    assert_eq!(arena.stats().largest_free_block, 4 * CHUNK);
    assert_eq!(free(&client, one), Ok(CHUNK));
}

#[test]
#[cfg(feature = "std")]
fn arena_largest_free_block_with_guard_pages_is_one_chunk() {
    use memvisor_vmem::CommitMode;

    let backing = Backing::reserve(8 * CHUNK, CHUNK, CommitMode::Protected).unwrap();
    let arena = Arena::new(
        backing,
        Config::new()
            .with_chunk_size(CHUNK)
            .with_flags(Flags::GUARD),
    )
    .unwrap();
    assert_eq!(arena.stats().largest_free_block, arena.max_block_size());
    assert!(arena.max_block_size() < CHUNK);
}

/// With guard pages the largest alignment is the largest block, half a chunk, even when the
/// configured chunk alignment is larger; a block gets that alignment and no more.
#[test]
#[cfg(feature = "std")]
fn max_alignment_with_guard_pages_is_half_a_chunk() {
    use memvisor_vmem::CommitMode;

    let backing = Backing::reserve(8 * CHUNK, CHUNK, CommitMode::Protected).unwrap();
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_alignment(CHUNK)
        .with_flags(Flags::GUARD);
    let arena = Arena::new(backing, config).unwrap();
    assert_eq!(arena.max_alignment(), CHUNK / 2);
    assert_eq!(arena.max_alignment(), arena.max_block_size());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(64, CHUNK / 2)).unwrap();
    assert!(p.as_ptr().addr().is_multiple_of(CHUNK / 2));
    assert!(matches!(
        client.alloc(layout(64, CHUNK)),
        Err(Error::UnsupportedAlignment { .. })
    ));
    free(&client, p).unwrap();
}

/// `cached_chunks` counts only wholly free held chunks; a chunk that keeps a cached block or
/// a slab without a live block is pinned, not cached.
#[test]
fn cached_chunks_are_wholly_free_pinned_ones() {
    let first = arena(8, Flags::empty());
    let client = first.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(100, 16)).unwrap();
    free(&client, p).unwrap();
    let s = client.stats();
    assert_eq!(
        (s.chunks, s.live_blocks, s.pinned_chunks, s.cached_chunks),
        (1, 0, 1, 0)
    );
    // A whole-chunk block freed leaves its chunk wholly free: pinned and cached.
    let other = arena(8, Flags::empty());
    let client = other.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(CHUNK, 8)).unwrap();
    free(&client, p).unwrap();
    let s = client.stats();
    assert_eq!((s.chunks, s.pinned_chunks, s.cached_chunks), (1, 1, 1));
}

/// A request refused for its alignment or size (input errors) changes nothing, even with a
/// trim request or blocks freed through the arena waiting: those are taken in by the next
/// allocation that can succeed, not by one refused for its shape.
#[test]
fn alloc_refused_for_its_shape_takes_in_nothing() {
    let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let keep = client.alloc(layout(100, 8)).unwrap();
    let p = client.alloc(layout(100, 8)).unwrap();
    free(&client, p).unwrap();
    arena.trim();
    let q = client.alloc(layout(100, 8)).unwrap();
    // SAFETY: a live block of a client that outlives the call, not used after.
    unsafe { arena.free(q) }.unwrap();
    arena.trim();
    let before = client.stats();
    let wide = arena.max_alignment() * 2;
    assert!(matches!(
        client.alloc(layout(100, wide)),
        Err(Error::UnsupportedAlignment { .. })
    ));
    assert_eq!(client.stats(), before);
    assert!(matches!(
        client.alloc(layout(64 << 20, 8)),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(client.stats(), before);
    // The next allocation that succeeds takes them in.
    let r = client.alloc(layout(5000, 8)).unwrap();
    assert_eq!(client.stats().live_blocks, 2);
    free(&client, r).unwrap();
    free(&client, keep).unwrap();
}

#[test]
fn run_reuses_the_clients_own_kept_chunk() {
    // A 4-chunk arena whose first chunk the client keeps (a cached small block, or a cached
    // buddy block, and nothing live): a run of all four chunks needs it, and a run of three
    // finds it first.
    for (cached, run) in [(40, 4), (5000, 4), (40, 3), (5000, 3)] {
        let arena = arena(4, Flags::empty());
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = client.alloc(layout(cached, 8)).unwrap();
        free(&client, p).unwrap();
        assert_eq!(
            (client.stats().chunks, client.stats().pinned_chunks),
            (1, 1)
        );
        assert!(client.stats().cached_bytes > 0);
        let (q, size) = client
            .alloc_sized(layout(run * CHUNK, 8))
            .unwrap_or_else(|e| panic!("run of {run} after a cached {cached}: {e}"));
        assert_eq!(size, run * CHUNK);
        let stats = client.stats();
        assert_eq!(stats.chunks, run, "the kept chunk went into the run");
        assert_eq!((stats.cached_bytes, stats.pinned_chunks), (0, 0));
        assert_eq!(stats.live_blocks, 1);
        assert_eq!(free(&client, q), Ok(run * CHUNK));
        assert_eq!(client.stats().chunks, 0);
        assert_eq!(arena.stats().largest_free_block, 4 * CHUNK);
    }
}

#[test]
fn run_that_the_kept_chunk_cannot_help_changes_nothing() {
    // Chunk 0 kept by the client, chunk 1 holding another client's block: no run of three
    // exists with or without the kept chunk, and the kept chunk and its cached block stay.
    let arena = arena(4, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    let other = arena.create_client(Quota::UNLIMITED).unwrap();
    let p = client.alloc(layout(40, 8)).unwrap();
    let _held = other.alloc(layout(40, 8)).unwrap();
    free(&client, p).unwrap();
    let before = client.stats();
    assert_eq!(before.chunks, 1);
    assert!(matches!(
        client.alloc(layout(3 * CHUNK, 8)),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(client.stats(), before);
    // The cached block is still there to be reused.
    assert_eq!(client.alloc(layout(40, 8)).unwrap(), p);
}

#[test]
fn run_prefers_a_run_through_the_kept_chunk() {
    // Chunks 0..3 free and chunk 3 kept by the client: a run of two could be chunks 0 and 1,
    // but chunks 2 and 3 use the kept chunk, so the client ends up holding only the run.
    let arena = arena(4, Flags::empty());
    let client = arena.create_client(Quota::UNLIMITED).unwrap();
    {
        let other = arena.create_client(Quota::UNLIMITED).unwrap();
        for _ in 0..3 {
            other.alloc(layout(CHUNK, 8)).unwrap();
        }
        let p = client.alloc(layout(40, 8)).unwrap();
        free(&client, p).unwrap();
    }
    assert_eq!(
        (client.stats().chunks, client.stats().pinned_chunks),
        (1, 1)
    );
    let (q, size) = client.alloc_sized(layout(2 * CHUNK, 8)).unwrap();
    assert_eq!(size, 2 * CHUNK);
    let stats = client.stats();
    assert_eq!(
        (stats.chunks, stats.pinned_chunks, stats.cached_bytes),
        (2, 0, 0)
    );
    assert_eq!(free(&client, q), Ok(2 * CHUNK));
    assert_eq!(arena.stats().largest_free_block, 4 * CHUNK);
}
