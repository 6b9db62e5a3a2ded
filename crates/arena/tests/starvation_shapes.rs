//! The starvation bound (DESIGN.md, "Caches") over shapes the bench does not try: many small
//! clients, large blocks interleaved with small ones, pressure coming from a request of whole
//! chunks or of a run, and an arena down to its last chunk. After every step each client
//! holds exactly the chunks its live blocks lie in plus at most one chunk without a live
//! block; an allocation that fails for want of memory fails just the same once its client has
//! given back all it keeps (its caches never make it fail); and a chunk another client keeps
//! idle goes back at that client's next free.

#![allow(clippy::cast_possible_truncation)]

use std::alloc::Layout;
use std::collections::BTreeSet;
use std::ptr::NonNull;

use memvisor_arena::{Arena, Backing, Client, Config, Error, Flags, Quota};

const CHUNK: usize = 64 << 10;

fn arena(chunks: usize, flags: Flags) -> Arena {
    let config = Config::new()
        .with_chunk_size(CHUNK)
        .with_alignment(16 << 10)
        .with_flags(flags);
    Arena::new(Backing::heap(chunks * CHUNK, CHUNK).unwrap(), config).unwrap()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[path = "common/rng.rs"]
mod rng;

use rng::Rng;

/// A client and its live blocks (address, size).
struct Tracked<'a> {
    client: Client<'a>,
    live: Vec<(NonNull<u8>, usize)>,
}

impl Tracked<'_> {
    /// The chunks its live blocks lie in.
    fn live_chunks(&self) -> BTreeSet<usize> {
        let base = self.client.arena().backing().as_ptr() as usize;
        let mut set = BTreeSet::new();
        for &(p, size) in &self.live {
            let off = p.as_ptr() as usize - base;
            set.extend(off / CHUNK..(off + size).div_ceil(CHUNK));
        }
        set
    }

    /// Holds exactly the chunks of its live blocks and at most one more, without one.
    fn check_bound(&self, when: &str) {
        let s = self.client.stats();
        let live = self.live_chunks().len();
        assert!(s.pinned_chunks <= 1, "{when}: {s:?}");
        assert_eq!(
            s.chunks,
            live + s.pinned_chunks,
            "{when}: {live} chunks with live blocks, {s:?}"
        );
    }

    fn free_one(&mut self, rng: &mut Rng) {
        let (p, size) = self.live.swap_remove(rng.below(self.live.len()));
        // SAFETY: a live block of the client, not used again.
        assert_eq!(unsafe { self.client.free(p) }, Ok(size));
    }
}

/// A request of one of the shapes: small, buddy, whole chunk, or a run.
fn request(rng: &mut Rng, runs: bool) -> Layout {
    match rng.below(if runs { 10 } else { 9 }) {
        0..=3 => layout(1 + rng.below(2048)),
        4..=5 => layout(2049 + rng.below(CHUNK / 4)),
        6 => Layout::from_size_align(4096, 4096 << rng.below(3)).unwrap(),
        7 => layout(CHUNK / 2 + rng.below(CHUNK / 2 + 1)),
        8 => layout(CHUNK),
        _ => layout(CHUNK + 1 + rng.below(3 * CHUNK)),
    }
}

/// Random steps over `clients` clients of an arena of `chunks` chunks. Every allocation that
/// runs out of memory is tried again after its client's `trim`: it must fail again (its own
/// caches did not make it fail). Then another client, chosen at random, frees a block, and
/// the next call of every client honours the trim request the failure made.
fn shapes(chunks: usize, clients: usize, steps: usize, runs: bool, flags: Flags, seed: u64) {
    let arena = arena(chunks, flags);
    let mut rng = Rng(seed);
    let mut all: Vec<Tracked<'_>> = (0..clients)
        .map(|_| Tracked {
            client: arena.create_client(Quota::UNLIMITED).unwrap(),
            live: Vec::new(),
        })
        .collect();
    let mut failures = 0;
    for step in 0..steps {
        let c = rng.below(clients);
        let t = &mut all[c];
        if t.live.is_empty() || rng.below(3) != 0 {
            let layout = request(&mut rng, runs);
            match t.client.alloc_sized(layout) {
                Ok(block) => t.live.push(block),
                Err(Error::OutOfMemory { .. }) => {
                    failures += 1;
                    let before = t.client.stats();
                    t.client.trim();
                    let retry = t.client.alloc_sized(layout);
                    assert!(
                        retry.is_err(),
                        "step {step}: {layout:?} failed, and succeeded once its client \
                         gave back what it kept ({before:?})"
                    );
                    // The failure asked every other client to trim: whichever frees next
                    // gives back its idle chunk.
                    let other = rng.below(clients);
                    if other != c && all[other].live.len() > 1 {
                        all[other].free_one(&mut rng);
                        let s = all[other].client.stats();
                        assert!(
                            s.pinned_chunks == 0 || s.chunks == all[other].live_chunks().len() + 1,
                            "step {step}: {s:?}"
                        );
                    }
                }
                Err(e) => panic!("step {step}: {layout:?}: {e:?}"),
            }
        } else {
            t.free_one(&mut rng);
        }
        if rng.below(50) == 0 {
            all[rng.below(clients)].client.trim();
        }
        for (i, t) in all.iter().enumerate() {
            t.check_bound(&format!("step {step}, client {i}"));
        }
    }
    if !cfg!(miri) {
        assert!(failures > 10, "the arena ran short only {failures} times");
    }
}

fn steps() -> usize {
    if cfg!(miri) { 10 } else { 6_000 }
}

/// Many small clients, a few chunks each, in a small arena.
#[test]
fn many_small_clients_keep_at_most_one_idle_chunk_each() {
    let (chunks, clients) = if cfg!(miri) { (4, 3) } else { (40, 24) };
    shapes(
        chunks,
        clients,
        steps(),
        false,
        Flags::empty(),
        0x2545_F491_4F6C_DD1D,
    );
}

/// Large blocks and runs interleaved with small ones, over few clients.
#[test]
fn runs_interleaved_with_small_blocks_keep_the_bound() {
    let chunks = if cfg!(miri) { 5 } else { 32 };
    shapes(
        chunks,
        3,
        steps(),
        true,
        Flags::STATISTICS,
        0xD1B5_4A32_D192_ED03,
    );
    if !cfg!(miri) {
        shapes(
            chunks,
            3,
            steps(),
            true,
            Flags::empty(),
            0x9E37_79B9_7F4A_7C15,
        );
    }
}

/// Client `a` of an arena of `n` chunks takes every chunk: a whole-chunk block in each but
/// chunk `idle`, where it puts small and buddy blocks and frees them (cached, the chunk kept
/// idle). With `beside`, it also frees the whole-chunk block after `idle` (or before it, at
/// the end), whose chunk goes back to the arena: the arena then has one free chunk, beside
/// the kept one. Returns `a`'s live blocks.
fn take_all<'a>(arena: &'a Arena, a: &Client<'a>, idle: usize, beside: bool) -> Vec<NonNull<u8>> {
    let n = arena.chunk_count();
    let base = arena.backing().as_ptr() as usize;
    let mut whole = Vec::new();
    let mut parts = Vec::new();
    for chunk in 0..n {
        if chunk == idle {
            for size in [16, 100, 3000, 9000] {
                parts.push(a.alloc(layout(size)).unwrap());
            }
        } else {
            whole.push(a.alloc(layout(CHUNK)).unwrap());
        }
    }
    assert_eq!(arena.stats().free_chunks, 0);
    for p in parts {
        // SAFETY: live blocks of `a`, not used again.
        unsafe { a.free(p) }.unwrap();
    }
    if beside {
        let next = if idle + 1 < n { idle + 1 } else { idle - 1 };
        let at = whole
            .iter()
            .position(|p| (p.as_ptr() as usize - base) / CHUNK == next)
            .unwrap();
        // SAFETY: as above.
        unsafe { a.free(whole.swap_remove(at)) }.unwrap();
    }
    let s = a.stats();
    assert_eq!(s.pinned_chunks, 1, "idle {idle}: {s:?}");
    assert!(s.cached_bytes > 0, "idle {idle}: {s:?}");
    assert_eq!(arena.stats().free_chunks, usize::from(beside));
    whole
}

/// Where the kept chunk lies in an arena of `n` chunks: everywhere, or under Miri at the end.
fn idle_positions(n: usize) -> Vec<usize> {
    if cfg!(miri) {
        vec![0, n - 1]
    } else {
        (0..n).collect()
    }
}

/// Requests that need a chunk the arena no longer has (small, buddy, whole chunk) or a run
/// through the kept chunk and the one free beside it (under Miri, a small block and the run).
fn last_chunk_requests() -> Vec<(Layout, bool)> {
    let all = [
        (layout(16), false),
        (layout(2 * CHUNK), true),
        (layout(5000), false),
        (layout(CHUNK), false),
    ];
    all[..if cfg!(miri) { 2 } else { 4 }].to_vec()
}

/// The arena down to the one chunk its holder keeps idle (with blocks cached in it): the
/// holder itself gets any request that fits there, its caches given back first.
#[test]
fn holder_of_the_last_chunk_gets_it_for_any_request() {
    let n = if cfg!(miri) { 3 } else { 5 };
    for (want, beside) in last_chunk_requests() {
        for idle in idle_positions(n) {
            let arena = arena(n, Flags::STATISTICS);
            let a = arena.create_client(Quota::UNLIMITED).unwrap();
            let whole = take_all(&arena, &a, idle, beside);
            let p = a
                .alloc(want)
                .unwrap_or_else(|e| panic!("{want:?}, idle {idle}: {e:?}, {:?}", a.stats()));
            assert_eq!(arena.stats().free_chunks, 0);
            for p in whole.into_iter().chain([p]) {
                // SAFETY: live blocks of `a`, not used again.
                unsafe { a.free(p) }.unwrap();
            }
        }
    }
}

/// The arena down to the one chunk a client keeps idle: another client's request that needs
/// it fails, asks for a trim, and succeeds once the holder has freed one more block.
#[test]
fn last_chunk_kept_idle_goes_back_at_the_holders_next_free() {
    let n = if cfg!(miri) { 3 } else { 5 };
    for (want, beside) in last_chunk_requests() {
        for idle in idle_positions(n) {
            let arena = arena(n, Flags::STATISTICS);
            let a = arena.create_client(Quota::UNLIMITED).unwrap();
            let b = arena.create_client(Quota::UNLIMITED).unwrap();
            let mut whole = take_all(&arena, &a, idle, beside);
            let before = (a.stats(), b.stats());
            let err = b.alloc(want).unwrap_err();
            assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
            assert_eq!((a.stats(), b.stats()), before, "a failure changes nothing");
            // `a`'s next free honours the request: the kept chunk goes back.
            let p = whole.pop().unwrap();
            // SAFETY: a live block of `a`, not used again.
            unsafe { a.free(p) }.unwrap();
            let got = b
                .alloc(want)
                .unwrap_or_else(|e| panic!("{want:?}, idle {idle}: {e:?}, {:?}", a.stats()));
            // SAFETY: a live block of `b`, not used again.
            unsafe { b.free(got) }.unwrap();
            for p in whole {
                // SAFETY: live blocks of `a`, not used again.
                unsafe { a.free(p) }.unwrap();
            }
        }
    }
}
