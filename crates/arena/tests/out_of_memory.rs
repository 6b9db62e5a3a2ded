//! What an allocation refused for want of memory tells its caller: the size asked for, what
//! the arena needed for it, what ran out (every chunk held, no run of contiguous free chunks,
//! the host's allocator for heap backing memory) and the setting that would make room. The
//! quota's refusal names its setting too.

use std::alloc::Layout;

use memvisor_arena::{Arena, Backing, Config, Flags, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize) -> Arena {
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_flags(Flags::empty());
    Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A second client of a one-chunk arena asking for 8 bytes is told it asked for 8 bytes,
/// that they needed a slab of a new chunk, that the arena's one chunk is held, and what
/// would make room.
#[test]
fn out_of_memory_with_every_chunk_held_names_the_ask_the_chunks_and_the_settings() {
    let arena = arena(1);
    let first = arena.create_client(Quota::UNLIMITED).unwrap();
    first.alloc(layout(8, 8)).unwrap();
    let second = arena.create_client(Quota::UNLIMITED).unwrap();
    let err = second.alloc(layout(8, 8)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: 0x8 bytes asked for needed 0x2000 bytes of a new chunk, but all 1 \
         chunks of 0x10000 bytes are held by clients (a larger backing, a smaller \
         Config::with_chunk_size, or trimming or deleting clients makes room)"
    );
    // A page block names its rounded length.
    let err = second.alloc(layout(5000, 16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: 0x1388 bytes asked for needed 0x1400 bytes of a new chunk, but all 1 \
         chunks of 0x10000 bytes are held by clients (a larger backing, a smaller \
         Config::with_chunk_size, or trimming or deleting clients makes room)"
    );
}

/// A block over a chunk that finds no run of contiguous free chunks says how many it needed
/// and how many chunks are free, though not side by side.
#[test]
fn out_of_memory_without_a_run_names_the_run_and_the_free_chunks() {
    let arena = arena(4);
    let holder = arena.create_client(Quota::UNLIMITED).unwrap();
    // Chunks 0 and 1 go to the holder, then chunk 0 back: chunks 0, 2 and 3 are free, with
    // chunk 1 between them.
    let a = holder.alloc(layout(CHUNK, 16)).unwrap();
    holder.alloc(layout(CHUNK, 16)).unwrap();
    // SAFETY: `a` is not used after this.
    unsafe { holder.free(a) }.unwrap();
    holder.trim();
    assert_eq!(arena.stats().free_chunks, 3);
    let asker = arena.create_client(Quota::UNLIMITED).unwrap();
    let err = asker.alloc(layout(2 * CHUNK + 1, 16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: 0x20001 bytes asked for needed 0x30000 bytes of 3 contiguous chunks, \
         but no run of 3 free chunks of 0x10000 bytes is left, 3 of the 4 being free (a larger \
         backing, or trimming or deleting clients makes room)"
    );
}

/// Heap backing memory the global allocator refuses names the length and what to change.
/// A quarter of a 32-bit address space can be had, so the refusal is checked where `usize`
/// has 64 bits.
#[test]
#[cfg(target_pointer_width = "64")]
#[cfg_attr(
    miri,
    ignore = "Miri stops at an allocation it cannot make instead of refusing it"
)]
fn out_of_memory_of_heap_backing_names_the_length_and_the_allocator() {
    let len = (isize::MAX as usize / 2) & !4095;
    let err = Backing::heap(len, 4096).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "out of memory: {len:#x} bytes asked for needed {len:#x} bytes of the global \
             allocator, but it refused them (a shorter Backing::heap, or Backing::reserve \
             makes room)"
        )
    );
}

/// A refusal by the quota names the quota and where it is set.
#[test]
fn quota_exceeded_names_the_quota_and_its_setting() {
    let arena = arena(1);
    let client = arena.create_client(Quota::bytes(1024)).unwrap();
    client.alloc(layout(1000, 8)).unwrap();
    let err = client.alloc(layout(1, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "allocating 0x10 bytes with 0x400 in use exceeds the client's quota of 0x400 bytes (a \
         larger Quota given to Arena::create_client makes room)"
    );
}
