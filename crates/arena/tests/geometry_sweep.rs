//! Every geometry an arena can have, under random requests at the edges of its limits: each
//! chunk size from 64 KiB to 64 MiB (so buddy pages from 256 bytes to 16 KiB), each chunk
//! alignment up to the chunk size, each minimum block size, every flag, over a caller's block
//! and over a reservation, with sizes around the small/buddy/run bounds and alignments past
//! the arena's. Run in a build with overflow checks, an arithmetic step that wraps on one of
//! these shapes panics here.
//!
//! Checked at each step: a block is aligned as asked and at least as large as asked, reads as
//! zero with `ZERO`, and keeps its bytes (its first and last bytes are tagged and read back
//! before every free, so blocks that overlap show); every refusal is one of the documented
//! errors; pointers inside blocks are answered without a panic; resizes keep the promise of
//! their layout; and deleting the client gives every chunk back.

mod common;

use std::alloc::Layout;
use std::ptr::NonNull;

use common::all_bytes_are;
use memvisor_arena::allocator_api2::alloc::Allocator;
use memvisor_arena::{Arena, Backing, Config, Error, Flags, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, Quota};

/// Bytes tagged at each end of a block.
const TAG: usize = 64;

/// Arenas tried, and requests in each: fewer under Miri, which runs them a thousand times
/// slower (and over small chunks of a caller's block only); a quarter of the arenas under the
/// sanitizers, which run them 5 to 15 times slower.
const ROUNDS: u64 = if cfg!(miri) {
    4
} else if cfg!(memvisor_sanitized) {
    64
} else {
    256
};
const STEPS: usize = if cfg!(miri) { 40 } else { 300 };

/// xorshift64: the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// A live block: where, its layout, and the tag written at its ends.
struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u8,
}

impl Live {
    /// The byte ranges tagged: the first and last [`TAG`] bytes (the whole block if shorter).
    fn ends(&self) -> [(usize, usize); 2] {
        let n = self.layout.size();
        [(0, n.min(TAG)), (n.saturating_sub(TAG), n)]
    }

    fn write_tag(&self) {
        for (from, to) in self.ends() {
            // SAFETY: the block is live and holds `layout.size()` bytes.
            unsafe { self.ptr.as_ptr().add(from).write_bytes(self.tag, to - from) };
        }
    }

    fn check_tag(&self) {
        for (from, to) in self.ends() {
            // SAFETY: as in `write_tag`.
            let bytes =
                unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(from), to - from) };
            assert!(
                all_bytes_are(bytes, self.tag),
                "block at {:p} ({:?}) lost its bytes",
                self.ptr,
                self.layout
            );
        }
    }
}

/// An arena of a random shape: chunk size, alignment, minimum block, flags, backing.
fn random_arena(rng: &mut Rng) -> (Arena, usize) {
    let shifts = if cfg!(miri) {
        2
    } else {
        (MAX_CHUNK_SIZE / MIN_CHUNK_SIZE).trailing_zeros() as usize + 1
    };
    let chunk = MIN_CHUNK_SIZE << rng.below(shifts);
    let align = 16usize << rng.below(chunk.trailing_zeros() as usize - 3);
    let min_block = 16usize << rng.below(5);
    let mut flags = Flags::empty();
    for flag in [
        Flags::ZERO,
        Flags::DECOMMIT,
        Flags::GUARD,
        Flags::POISON,
        Flags::STATISTICS,
    ] {
        if rng.below(3) == 0 {
            flags |= flag;
        }
    }
    let config = Config::new()
        .with_chunk_size(chunk)
        .with_alignment(align)
        .with_min_block(min_block)
        .with_flags(flags);
    // Past 16 MiB chunks, a few chunks only.
    let chunks = 1 + rng.below(if chunk > 16 << 20 { 2 } else { 4 });
    // Reservations come with `std`.
    #[cfg(feature = "std")]
    if !cfg!(miri) && rng.below(2) == 0 {
        let arena = Arena::with_reservation(chunks * chunk + rng.below(3) * 4096, config).unwrap();
        assert_eq!(arena.chunk_count(), chunks);
        return (arena, chunk);
    }
    // Room for the start to be rounded up to the alignment.
    let arena = Arena::new(Backing::heap(chunks * chunk + align, 16).unwrap(), config).unwrap();
    assert_eq!(arena.chunk_count(), chunks);
    (arena, chunk)
}

/// A request size near one of the arena's bounds.
fn random_size(rng: &mut Rng, chunk: usize, total: usize) -> usize {
    match rng.below(6) {
        0 => rng.below(2049),
        1 => 2048 + rng.below(64),
        2 => rng.below(chunk + 1),
        3 => chunk / 2 - 32 + rng.below(64),
        4 => rng.below(2 * total + 1),
        _ => chunk - 32 + rng.below(64),
    }
}

#[test]
fn every_geometry_serves_random_requests_at_its_limits() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..ROUNDS {
        let (arena, chunk) = random_arena(&mut rng);
        let total = arena.stats().total_bytes;
        let zero = arena.accepted_flags().contains(Flags::ZERO);
        let quota = if rng.below(3) == 0 {
            Quota::bytes(rng.below(total + 1))
        } else {
            Quota::UNLIMITED
        };
        let client = arena.create_client(quota).unwrap();
        let mut live: Vec<Live> = Vec::new();
        for step in 0..STEPS {
            let what = format!("round {round} step {step}: {:?}", arena.config());
            match rng.below(8) {
                0..=3 => {
                    let size = random_size(&mut rng, chunk, total);
                    let align = 1usize << rng.below(28);
                    let Ok(layout) = Layout::from_size_align(size, align) else {
                        continue;
                    };
                    match client.alloc(layout) {
                        Ok(ptr) => {
                            assert!(ptr.as_ptr().addr().is_multiple_of(align), "{what}");
                            let got = client.size_of(ptr.as_ptr()).unwrap();
                            assert!(got >= size, "{what}: {got} < {size}");
                            assert!(align <= arena.max_alignment(), "{what}");
                            let block = Live {
                                ptr,
                                layout,
                                tag: u8::try_from(step % 251).unwrap() + 1,
                            };
                            if zero {
                                for (from, to) in block.ends() {
                                    // SAFETY: the block is live and holds `size` bytes.
                                    let bytes = unsafe {
                                        std::slice::from_raw_parts(
                                            ptr.as_ptr().add(from),
                                            to - from,
                                        )
                                    };
                                    assert!(all_bytes_are(bytes, 0), "{what}");
                                }
                            }
                            block.write_tag();
                            live.push(block);
                        }
                        Err(Error::UnsupportedAlignment { align: a, max }) => {
                            assert_eq!((a, max), (align, arena.max_alignment()), "{what}");
                            assert!(align > max, "{what}");
                        }
                        Err(Error::TooLarge { size: s, max }) => {
                            assert_eq!(s, size.max(1), "{what}");
                            assert!(size > max, "{what}");
                        }
                        Err(Error::QuotaExceeded { .. } | Error::OutOfMemory { .. }) => {}
                        Err(e) => panic!("{what}: {e:?}"),
                    }
                }
                4 if !live.is_empty() => {
                    let block = live.swap_remove(rng.below(live.len()));
                    block.check_tag();
                    let freed = if rng.below(2) == 0 {
                        // SAFETY: the block is live and not used after this.
                        unsafe { client.free(block.ptr) }
                    } else {
                        // SAFETY: as above; the client outlives the call, on this thread.
                        unsafe { arena.free(block.ptr) }
                    };
                    assert!(freed.unwrap() >= block.layout.size(), "{what}");
                }
                5 if !live.is_empty() => {
                    // Any address inside or just past a block is answered, never a panic.
                    let block = &live[rng.below(live.len())];
                    let inside = block
                        .ptr
                        .as_ptr()
                        .wrapping_add(rng.below(block.layout.size() + 64));
                    let _ = client.size_of(inside);
                    let _ = client.owns(inside);
                    let _ = arena.owner_of(inside);
                }
                6 if !live.is_empty() => {
                    let i = rng.below(live.len());
                    live[i].check_tag();
                    let old = live[i].layout;
                    let size = rng.below(2 * chunk);
                    let align = 1usize << rng.below(14);
                    let Ok(new) = Layout::from_size_align(size, align) else {
                        continue;
                    };
                    // SAFETY: the block is live, of layout `old`; on success the old pointer is
                    // not used again.
                    let resized = unsafe {
                        if size >= old.size() {
                            client.grow(live[i].ptr, old, new)
                        } else {
                            client.shrink(live[i].ptr, old, new)
                        }
                    };
                    if let Ok(block) = resized {
                        assert!(block.len() >= size, "{what}");
                        assert!(
                            block.cast::<u8>().as_ptr().addr().is_multiple_of(align),
                            "{what}"
                        );
                        let kept = size.min(old.size());
                        let moved = Live {
                            ptr: block.cast(),
                            layout: new,
                            tag: live[i].tag,
                        };
                        // The first bytes moved with the block.
                        // SAFETY: the block is live and holds at least `size` bytes.
                        let first = unsafe {
                            std::slice::from_raw_parts(moved.ptr.as_ptr(), kept.min(TAG))
                        };
                        assert!(all_bytes_are(first, moved.tag), "{what}");
                        if size == 0 {
                            live.swap_remove(i);
                        } else {
                            moved.write_tag();
                            live[i] = moved;
                        }
                    }
                }
                _ => {
                    let _ = client.stats();
                    let _ = arena.stats();
                    if rng.below(10) == 0 {
                        client.trim();
                    }
                }
            }
        }
        for block in &live {
            block.check_tag();
        }
        drop(client);
        assert_eq!(arena.stats().held_chunks, 0, "round {round}");
    }
}
