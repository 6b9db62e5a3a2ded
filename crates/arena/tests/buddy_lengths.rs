//! Lengths of buddy blocks and runs against a model of the rounding [`Client::alloc`]
//! documents: whole buddy pages, over 16 pages a multiple of a sixteenth of the power of two of
//! pages at or above the size, over a chunk whole chunks. Random allocations of 2 KiB to
//! several chunks (and small sizes aligned above 64), frees, grows, shrinks and trims over a
//! client with a quota and one without, checked after every call: each block's `size_of`, the
//! length each call returns, the used bytes and live blocks of each client and of the arena,
//! the cached bytes, and the rounded length the quota and out-of-memory errors name.

#![allow(clippy::cast_possible_truncation)]

#[path = "common/rng.rs"]
mod rng;

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};
use rng::Rng;

const CHUNK: usize = 64 << 10;
/// Buddy pages of chunks up to 1 MiB.
const PAGE: usize = 256;
const CHUNKS: usize = 12;
const STEPS: usize = 3000;

/// The length `Client::alloc` documents for `size` bytes taking buddy pages (over 2 KiB, or
/// aligned above 64) or whole chunks.
fn length(size: usize) -> usize {
    let size = size.max(1);
    if size > CHUNK {
        return size.div_ceil(CHUNK) * CHUNK;
    }
    let pages = size.div_ceil(PAGE);
    let step = (pages.next_power_of_two() / 16).max(1);
    pages.div_ceil(step) * step * PAGE
}

#[test]
fn length_model_matches_the_documented_edges() {
    // 16 pages and fewer: whole pages; 17 to 32 pages: pairs of pages; a power of two of
    // pages is its own length; a chunk less a byte is the chunk.
    assert_eq!(length(16 * PAGE), 16 * PAGE);
    assert_eq!(length(16 * PAGE + 1), 18 * PAGE);
    assert_eq!(length(33 * PAGE), 36 * PAGE);
    assert_eq!(length(128 * PAGE + 1), 144 * PAGE);
    assert_eq!(length(CHUNK - 1), CHUNK);
    assert_eq!(length(CHUNK + 1), 2 * CHUNK);
}

struct Live {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

struct Model<'a> {
    client: Client<'a>,
    quota: Option<usize>,
    live: Vec<Live>,
}

impl Model<'_> {
    fn used(&self) -> usize {
        self.live.iter().map(|b| b.len).sum()
    }
}

fn check(arena: &Arena, models: &[Model<'_>], step: usize) {
    let mut used = 0;
    let mut live = 0;
    let mut cached = 0;
    for m in models {
        let stats = m.client.stats();
        assert_eq!(stats.used_bytes, m.used(), "step {step}: used bytes");
        assert_eq!(stats.live_blocks, m.live.len(), "step {step}: live blocks");
        assert_eq!(stats.free_bytes, stats.total_bytes - stats.used_bytes);
        assert!(stats.cached_bytes <= stats.free_bytes, "step {step}");
        assert_eq!(stats.cached_bytes % PAGE, 0, "step {step}: cached bytes");
        for b in &m.live {
            assert_eq!(m.client.size_of(b.ptr.as_ptr()), Ok(b.len), "step {step}");
        }
        used += stats.used_bytes;
        live += stats.live_blocks;
        cached += stats.cached_bytes;
    }
    let stats = arena.stats();
    if arena.accepted_flags().contains(Flags::STATISTICS) {
        assert_eq!(
            stats.used_bytes,
            Some(used),
            "step {step}: arena used bytes"
        );
        assert_eq!(
            stats.live_blocks,
            Some(live),
            "step {step}: arena live blocks"
        );
        assert_eq!(
            stats.cached_bytes,
            Some(cached),
            "step {step}: arena cached"
        );
    }
}

/// A size of 2 KiB to three chunks, most under a chunk, with the edges of the rounding often.
fn size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => {
            // A power of two of pages from 16 to a chunk, or a byte either side.
            let pages = 1usize << (4 + rng.below(5));
            pages * PAGE + rng.below(3) - 1
        }
        1 => CHUNK - 1 + rng.below(3),
        2 => CHUNK + 1 + rng.below(2 * CHUNK),
        _ => 2049 + rng.below(CHUNK - 2048),
    }
}

fn align(rng: &mut Rng) -> usize {
    [16, 64, 512, 4096][rng.below(4)]
}

/// How often each outcome came, so that the test is seen to reach them all.
#[derive(Debug, Default)]
struct Seen {
    quota_exceeded: usize,
    out_of_memory: usize,
    runs: usize,
    in_place: usize,
    moved: usize,
    cached_on_free: usize,
}

fn run(flags: Flags, seed: u64) -> Seen {
    let mut seen = Seen::default();
    let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
    let arena = Arena::new(Backing::heap(CHUNKS * CHUNK, 4096).unwrap(), config).unwrap();
    let mut rng = Rng(seed);
    let quota = 2 * CHUNK + rng.below(CHUNK);
    let mut models = vec![
        Model {
            client: arena.create_client(Quota::UNLIMITED).unwrap(),
            quota: None,
            live: Vec::new(),
        },
        Model {
            client: arena.create_client(Quota::bytes(quota)).unwrap(),
            quota: Some(quota),
            live: Vec::new(),
        },
    ];
    for step in 0..STEPS {
        let m = &mut models[rng.below(2)];
        let op = rng.below(20);
        if op < 8 || m.live.is_empty() {
            let align = align(&mut rng);
            // Sizes of 2 KiB and less take buddy pages when aligned above 64.
            let size = if align > 64 && rng.below(4) == 0 {
                1 + rng.below(2048)
            } else {
                size(&mut rng)
            };
            let layout = Layout::from_size_align(size, align).unwrap();
            let want = length(size);
            match m.client.alloc_sized(layout) {
                Ok((ptr, len)) => {
                    assert_eq!(len, want, "step {step}: {layout:?}");
                    assert!(ptr.as_ptr().addr().is_multiple_of(align), "step {step}");
                    assert!(m.quota.is_none_or(|q| m.used() + len <= q));
                    seen.runs += usize::from(size > CHUNK);
                    m.live.push(Live { ptr, len, layout });
                }
                Err(Error::QuotaExceeded {
                    requested,
                    used,
                    quota,
                }) => {
                    assert_eq!(requested, want, "step {step}: {layout:?}");
                    assert_eq!(used, m.used(), "step {step}");
                    assert_eq!(Some(quota), m.quota);
                    assert!(used + requested > quota, "step {step}");
                    seen.quota_exceeded += 1;
                }
                Err(Error::OutOfMemory {
                    size: asked,
                    requested,
                    ..
                }) => {
                    // The error names the size asked for and the block's length (a run's
                    // whole chunks).
                    assert_eq!(asked, size, "step {step}: {layout:?}");
                    assert_eq!(requested, want, "step {step}: {layout:?}");
                    assert!(m.quota.is_none_or(|q| m.used() + want <= q), "step {step}");
                    seen.out_of_memory += 1;
                }
                Err(e) => panic!("step {step}: {layout:?}: {e:?}"),
            }
        } else if op < 14 {
            let b = m.live.swap_remove(rng.below(m.live.len()));
            let before = m.client.stats().cached_bytes;
            // SAFETY: the block is live and never used again.
            assert_eq!(unsafe { m.client.free(b.ptr) }, Ok(b.len), "step {step}");
            let after = m.client.stats().cached_bytes;
            // Cached whole, at the length it had, or not cached (and maybe others given back).
            assert!(after == before + b.len || after <= before, "step {step}");
            seen.cached_on_free += usize::from(after == before + b.len);
        } else if op < 19 {
            let i = rng.below(m.live.len());
            let b = &m.live[i];
            let old = b.layout;
            let grow = rng.below(2) == 0;
            let new_size = if grow {
                let past = rng.below(2) * CHUNK;
                old.size() + rng.below(b.len + PAGE - old.size() + past)
            } else {
                // Shrunk sizes stay buddy blocks: over 2 KiB when aligned to 64 or less.
                let least = if old.align() > 64 { 1 } else { 2049 };
                least + rng.below(old.size() + 1 - least)
            };
            let new = Layout::from_size_align(new_size, old.align()).unwrap();
            let before_len = b.len;
            // SAFETY: `b` is a live block of the client allocated with `old`.
            let got = unsafe {
                if grow {
                    m.client.grow(b.ptr, old, new)
                } else {
                    m.client.shrink(b.ptr, old, new)
                }
            };
            match got {
                Ok(slice) => {
                    let (ptr, len) = (slice.cast::<u8>(), slice.len());
                    if ptr == b.ptr {
                        // In place (a grow within the block, or a shrink with no room
                        // for a new block): the block keeps its length.
                        assert_eq!(len, before_len, "step {step}: {old:?} -> {new:?}");
                        seen.in_place += 1;
                    } else {
                        assert_eq!(len, length(new_size), "step {step}: {old:?} -> {new:?}");
                        seen.moved += 1;
                    }
                    m.live[i] = Live {
                        ptr,
                        len,
                        layout: new,
                    };
                }
                Err(_) => assert!(grow, "step {step}: a shrink is not refused"),
            }
        } else {
            m.client.trim();
            assert_eq!(m.client.stats().cached_bytes, 0, "step {step}");
        }
        check(&arena, &models, step);
    }
    for m in &mut models {
        for b in m.live.drain(..) {
            // SAFETY: the block is live and never used again.
            assert_eq!(unsafe { m.client.free(b.ptr) }, Ok(b.len));
        }
        m.client.trim();
        let stats = m.client.stats();
        assert_eq!((stats.used_bytes, stats.cached_bytes), (0, 0));
    }
    check(&arena, &models, STEPS);
    seen
}

#[test]
#[cfg_attr(
    miri,
    ignore = "lengths are arithmetic; under Miri a dozen steps of blocks up to three chunks take \
              seconds, and tests/model.rs runs grows and shrinks there"
)]
fn buddy_lengths_match_the_documented_rounding_after_every_call() {
    for (flags, seed) in [(Flags::STATISTICS, 3), (Flags::empty(), 7)] {
        let seen = run(flags, seed);
        assert!(
            seen.quota_exceeded > 0
                && seen.out_of_memory > 0
                && seen.runs > 0
                && seen.in_place > 0
                && seen.moved > 0
                && seen.cached_on_free > 0,
            "{seen:?}"
        );
    }
}
