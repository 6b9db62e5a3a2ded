//! `arena`: allocating and freeing in a `memvisor-arena` client over a 256 MiB block, against
//! `buddy_system_allocator`, `talc` and `buddy-alloc` over the same block, glibc `malloc`, and
//! mimalloc v2 first-class heaps (`mimalloc-heap`: `mi_heap_new`, `mi_heap_malloc_aligned`,
//! `mi_free`, `mi_heap_destroy`; in its own memory, like `malloc`), and the same heaps of the same
//! mimalloc source built with `MI_SECURE=4` (`mimalloc-heap-secure`, [`crate::mimalloc::Secure`]:
//! guard pages, encoded free lists, block canaries, double frees detected; interior frees
//! reported only as overflows, stale frees not at all, foreign ones faulting where unmapped, all
//! of which memvisor refuses by name) wherever `mimalloc-heap` runs.
//!
//! Every contender gets the same workload from the same seed: sizes drawn log-uniformly
//! (`wide` 16 B–64 KiB, `small` 16 B–1 KiB), blocks of alignment 8. The arena runs with its
//! default configuration (1 MiB chunks, no flags). The shared block is advised for transparent
//! huge pages, which mimalloc's own memory gets on Linux too (glibc `malloc`'s does not), but not
//! the secure build's: it never advises its segments, so where THP is `madvise` its blocks lie in
//! 4 KiB pages.
//!
//! - `pair_wide`, `pair_small`: 10,000 live blocks, then ns per pair of a free of a random live
//!   block and an allocation of a fresh size in its place.
//! - `release_all`: µs to free 100,000 live small blocks: memvisor deletes the client,
//!   `mimalloc-heap` and `mimalloc-heap-secure` destroy their heap, the other peers free the blocks
//!   one by one in random order.
//! - `free_one_by_one`: ns per free of 100,000 live small blocks freed one by one in random order.
//! - `starvation`: in a 64 MiB arena of 1 MiB chunks, client A allocates random wide sizes up to 56
//!   MiB (or until the arena is full) and frees them all in random order; the figure is how many 1
//!   MiB blocks client B then gets, in percent of what it gets from an empty arena.
//! - `owns`: ns per ownership test of a live block's address (10,000 live wide blocks, random
//!   order). Peers have no such test.
//! - `fill_percent` (the shared definition, "block used at first failure"): wide sizes allocated
//!   until the first failure; the figure is the requested bytes as a percentage of the block.
//! - `fill_until_full_percent`: the same sizes allocated on past the first failure until 1,000
//!   requests in a row fail (smaller requests use the room larger ones could not); the figure is
//!   the requested bytes as a percentage of the block.
//! - `rounding_percent`: the fill of `fill_until_full_percent`, the figure the bytes the blocks
//!   take beyond those requested, as a percentage of those requested (memvisor's block sizes, and
//!   `buddy_system_allocator`'s count of what it hands out; the other peers do not say).
//! - `bookkeeping_percent`: the arena's side tables as a percentage of the block.

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::c_void;
use std::hint::black_box;
use std::marker::PhantomData;
use std::ptr::NonNull;

use buddy_alloc::BuddyAllocParam;
use buddy_alloc::buddy_alloc::BuddyAlloc;
use memvisor_arena::{Arena, Backing, Client, Config, Quota};
use talc::{ErrOnOom, Span, Talc};

use crate::harness::{Bench, Sample, as_ns, ns_per_iter, ns_per_op, time};
use crate::mimalloc::{Mimalloc, Plain, Secure};
use crate::report::{Better, Row};
use crate::util::{LogUniform, SplitMix64};

/// Size of the block every contender works in.
pub const BLOCK: usize = 256 << 20;
/// Live blocks during `pair_*` and `owns`.
pub const LIVE: usize = 10_000;
/// Free+alloc pairs timed per `pair_*` run.
pub const PAIRS: usize = 200_000;
/// Live blocks freed by `release_all`.
pub const RELEASE: usize = 100_000;
/// Alignment of every request.
const ALIGN: usize = 8;

/// Runs every scenario of the group.
pub fn run(bench: &Bench) -> Vec<Row> {
    let mut region = Region::new(BLOCK);
    vec![
        pair(bench, &mut region, "pair_wide", 65_536),
        pair(bench, &mut region, "pair_small", 1_024),
        release_all(bench, &mut region),
        free_one_by_one(bench, &mut region),
        starvation(bench, &mut region),
        owns(bench, &mut region),
        fill_percent(bench, &mut region),
        fill_until_full_percent(bench, &mut region),
        rounding_percent(bench, &mut region),
        bookkeeping_percent(),
    ]
}

/// The 256 MiB every contender runs in, allocated, advised for huge pages and touched once.
pub(crate) struct Region {
    pub(crate) ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    pub(crate) fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 1 << 20).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc(layout) }).expect("256 MiB for the benchmark");
        // Transparent huge pages where the host allows them, as mimalloc's own memory gets
        // them (its arenas are advised so): otherwise the contenders in the region would pay a
        // TLB miss per 4 KiB that mimalloc pays per 2 MiB. Refused advice leaves 4 KiB pages.
        #[cfg(target_os = "linux")]
        // SAFETY: advice on memory this region owns; it does not change the contents.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE);
        }
        // Touch every page so no contender pays the first faults.
        for off in (0..len).step_by(4096) {
            // SAFETY: inside the allocation.
            unsafe { ptr.as_ptr().add(off).write_volatile(0) };
        }
        Self { ptr, layout }
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// An arena over the region.
    pub(crate) fn arena(&mut self) -> Result<Arena, String> {
        // SAFETY: the region is valid for its length, and the `&mut self` borrow of the caller
        // keeps anything else from using it while the arena lives (each contender drops its
        // arena before returning).
        unsafe { Arena::from_raw(self.ptr, self.len(), Config::new()) }
            .map_err(|e| format!("arena: {e}"))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// What every contender does: allocate `size` bytes aligned to 8, free a block by pointer and
/// size.
pub(crate) trait Heap {
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>>;
    /// # Safety
    /// `ptr` came from `alloc(size)` on this heap and is live.
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize);
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("valid layout")
}

pub(crate) struct Memvisor<'a, 'b>(pub(crate) &'b Client<'a>);

impl Heap for Memvisor<'_, '_> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(layout(size)).ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: a live block of this client, not used again (caller's promise).
        let _ = unsafe { self.0.free(ptr) };
    }
}

struct BuddySystem(buddy_system_allocator::Heap<33>);

impl BuddySystem {
    fn new(region: &mut Region) -> Self {
        let mut heap = buddy_system_allocator::Heap::<33>::new();
        // SAFETY: the region is ours while the heap lives (the `&mut` borrow of the caller).
        unsafe { heap.init(region.ptr.as_ptr() as usize, region.len()) };
        Self(heap)
    }
}

impl Heap for BuddySystem {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.0.alloc(layout(size)).ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        self.0.dealloc(ptr, layout(size));
    }
}

struct TalcHeap(Talc<ErrOnOom>);

impl TalcHeap {
    fn new(region: &mut Region) -> Result<Self, String> {
        let mut talc = Talc::new(ErrOnOom);
        // SAFETY: the region is ours while the heap lives.
        unsafe { talc.claim(Span::from_base_size(region.ptr.as_ptr(), region.len())) }
            .map_err(|()| "talc: claim failed".to_owned())?;
        Ok(Self(talc))
    }
}

impl Heap for TalcHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: a non-zero size.
        unsafe { self.0.malloc(layout(size)) }.ok()
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller's promise.
        unsafe { self.0.free(ptr, layout(size)) };
    }
}

struct BuddyAllocHeap(BuddyAlloc);

impl BuddyAllocHeap {
    fn new(region: &mut Region) -> Self {
        let param = BuddyAllocParam::new(region.ptr.as_ptr(), region.len(), 16);
        // SAFETY: the region is ours while the heap lives.
        Self(unsafe { BuddyAlloc::new(param) })
    }
}

impl Heap for BuddyAllocHeap {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        NonNull::new(self.0.malloc(size))
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        self.0.free(ptr.as_ptr());
    }
}

/// A mimalloc first-class heap of build `M`; dropping it destroys the heap with all its blocks.
struct MimallocHeap<M: Mimalloc>(*mut c_void, PhantomData<M>);

impl<M: Mimalloc> MimallocHeap<M> {
    fn new() -> Result<Self, String> {
        // SAFETY: no precondition; a null result is an error.
        let heap = unsafe { M::heap_new() };
        if heap.is_null() {
            return Err(format!("{}: mi_heap_new failed", M::NAME));
        }
        Ok(Self(heap, PhantomData))
    }
}

impl<M: Mimalloc> Heap for MimallocHeap<M> {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: a live heap of this build, made on this thread (the heap is not `Send`).
        NonNull::new(unsafe { M::heap_malloc_aligned(self.0, size, ALIGN) }.cast())
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: from this heap, live (caller's promise).
        unsafe { M::free(ptr.as_ptr().cast()) };
    }
}

impl<M: Mimalloc> Drop for MimallocHeap<M> {
    fn drop(&mut self) {
        // SAFETY: made in `new` on this thread, destroyed once; its blocks are not used after.
        unsafe { M::heap_destroy(self.0) };
    }
}

struct Malloc;

impl Heap for Malloc {
    #[inline]
    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: plain malloc.
        NonNull::new(unsafe { libc::malloc(size) }.cast::<u8>())
    }
    #[inline]
    unsafe fn free(&mut self, ptr: NonNull<u8>, _size: usize) {
        // SAFETY: from malloc, live (caller's promise).
        unsafe { libc::free(ptr.as_ptr().cast()) };
    }
}

/// The same sizes and victims for everyone.
pub(crate) struct Workload {
    initial: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

impl Workload {
    pub(crate) fn new(live: usize, pairs: usize, hi: u64, seed: u64) -> Self {
        let sizes = LogUniform::new(16, hi);
        let mut rng = SplitMix64::new(seed);
        let size = |rng: &mut SplitMix64| usize::try_from(sizes.sample(rng)).unwrap_or(16);
        let initial = (0..live).map(|_| size(&mut rng)).collect();
        let pairs = (0..pairs)
            .map(|_| (rng.below_usize(live), size(&mut rng)))
            .collect();
        Self { initial, pairs }
    }
}

fn fill<H: Heap>(heap: &mut H, sizes: &[usize]) -> Result<Vec<(NonNull<u8>, usize)>, String> {
    sizes
        .iter()
        .map(|&size| {
            heap.alloc(size)
                .map(|p| (p, size))
                .ok_or_else(|| format!("out of memory filling {} blocks", sizes.len()))
        })
        .collect()
}

/// Frees every block (outside any timed region).
fn empty<H: Heap>(heap: &mut H, live: Vec<(NonNull<u8>, usize)>) {
    for (p, size) in live {
        // SAFETY: every entry is a live block of `heap`.
        unsafe { heap.free(p, size) };
    }
}

pub(crate) fn pair_run<H: Heap>(heap: &mut H, work: &Workload) -> Sample {
    let mut live = fill(heap, &work.initial)?;
    let mut failed = false;
    let ns = ns_per_op(work.pairs.len() as u64, || {
        for &(victim, size) in &work.pairs {
            let (p, old) = live[victim];
            // SAFETY: `p` is live in `heap` and replaced below.
            unsafe { heap.free(p, old) };
            match heap.alloc(size) {
                Some(q) => live[victim] = (black_box(q), size),
                None => {
                    failed = true;
                    break;
                }
            }
        }
    });
    if failed {
        return Err("out of memory during the pairs".to_owned());
    }
    empty(heap, live);
    Ok(ns)
}

fn pair(bench: &Bench, region: &mut Region, name: &str, hi: u64) -> Row {
    let work = Workload::new(LIVE, PAIRS, hi, 7);
    let region = std::cell::RefCell::new(region);
    bench
        .scenario(name, LIVE as u64, "ns/op", Better::Lower)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            pair_run(&mut Memvisor(&client), &work)
        })
        .peer("buddy_system_allocator", || {
            pair_run(&mut BuddySystem::new(&mut region.borrow_mut()), &work)
        })
        .peer("talc", || {
            pair_run(&mut TalcHeap::new(&mut region.borrow_mut())?, &work)
        })
        .peer("buddy-alloc", || {
            pair_run(&mut BuddyAllocHeap::new(&mut region.borrow_mut()), &work)
        })
        .peer("malloc", || pair_run(&mut Malloc, &work))
        .peer(Plain::NAME, || {
            pair_run(&mut MimallocHeap::<Plain>::new()?, &work)
        })
        .peer(Secure::NAME, || {
            pair_run(&mut MimallocHeap::<Secure>::new()?, &work)
        })
        .run()
}

/// µs to free every block of `live` one by one, in `order`.
fn free_each<H: Heap>(heap: &mut H, sizes: &[usize], order: &[usize]) -> Sample {
    let live = fill(heap, sizes)?;
    let ((), elapsed) = time(|| {
        for &i in order {
            let (p, size) = live[i];
            // SAFETY: each block is freed once.
            unsafe { heap.free(p, size) };
        }
    });
    Ok(as_ns(elapsed) / 1e3)
}

/// µs to destroy a mimalloc heap of build `M` holding a block of each of `sizes`.
fn destroy_heap<M: Mimalloc>(sizes: &[usize]) -> Sample {
    let mut heap = MimallocHeap::<M>::new()?;
    let live = fill(&mut heap, sizes)?;
    drop(live);
    let ((), elapsed) = time(|| drop(heap));
    Ok(as_ns(elapsed) / 1e3)
}

fn release_all(bench: &Bench, region: &mut Region) -> Row {
    let work = Workload::new(RELEASE, 0, 1_024, 11);
    let mut order: Vec<usize> = (0..RELEASE).collect();
    SplitMix64::new(12).shuffle(&mut order);
    let region = std::cell::RefCell::new(region);
    bench
        .scenario("release_all", RELEASE as u64, "us", Better::Lower)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            let live = fill(&mut Memvisor(&client), &work.initial)?;
            drop(live);
            let ((), elapsed) = time(|| arena.delete_client(client));
            if arena.stats().held_chunks != 0 {
                return Err("chunks still held after delete".to_owned());
            }
            Ok(as_ns(elapsed) / 1e3)
        })
        .unsupported(
            "buddy_system_allocator",
            "not run: its free scans a list per order; one run took 218 s on the bench machine",
        )
        .peer("talc", || {
            free_each(
                &mut TalcHeap::new(&mut region.borrow_mut())?,
                &work.initial,
                &order,
            )
        })
        .peer("buddy-alloc", || {
            free_each(
                &mut BuddyAllocHeap::new(&mut region.borrow_mut()),
                &work.initial,
                &order,
            )
        })
        .peer(Plain::NAME, || destroy_heap::<Plain>(&work.initial))
        .peer(Secure::NAME, || destroy_heap::<Secure>(&work.initial))
        .run()
}

fn free_one_by_one(bench: &Bench, region: &mut Region) -> Row {
    let work = Workload::new(RELEASE, 0, 1_024, 15);
    let mut order: Vec<usize> = (0..RELEASE).collect();
    SplitMix64::new(16).shuffle(&mut order);
    let per_free = |us: f64| us * 1e3 / RELEASE as f64;
    let region = std::cell::RefCell::new(region);
    bench
        .scenario("free_one_by_one", RELEASE as u64, "ns/op", Better::Lower)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            free_each(&mut Memvisor(&client), &work.initial, &order).map(per_free)
        })
        .peer(Plain::NAME, || {
            free_each(&mut MimallocHeap::<Plain>::new()?, &work.initial, &order).map(per_free)
        })
        .peer(Secure::NAME, || {
            free_each(&mut MimallocHeap::<Secure>::new()?, &work.initial, &order).map(per_free)
        })
        .peer("talc", || {
            free_each(
                &mut TalcHeap::new(&mut region.borrow_mut())?,
                &work.initial,
                &order,
            )
            .map(per_free)
        })
        .peer("buddy-alloc", || {
            free_each(
                &mut BuddyAllocHeap::new(&mut region.borrow_mut()),
                &work.initial,
                &order,
            )
            .map(per_free)
        })
        .peer("malloc", || {
            free_each(&mut Malloc, &work.initial, &order).map(per_free)
        })
        .run()
}

/// Whole 1 MiB blocks `client` gets until the first failure.
fn whole_chunks(client: &Client<'_>) -> usize {
    let chunk = Layout::from_size_align(1 << 20, ALIGN).expect("valid layout");
    let mut n = 0;
    while client.alloc(chunk).is_ok() {
        n += 1;
    }
    n
}

fn starvation(bench: &Bench, region: &mut Region) -> Row {
    const ARENA: usize = 64 << 20;
    const PEAK: usize = 56 << 20;
    let region = std::cell::RefCell::new(region);
    bench
        .scenario("starvation", 0, "%", Better::Higher)
        .memvisor(|| {
            let region = region.borrow_mut();
            // SAFETY: the first 64 MiB of the region, ours while the arena lives (the borrow).
            let arena = unsafe { Arena::from_raw(region.ptr, ARENA, Config::new()) }
                .map_err(|e| format!("arena: {e}"))?;
            let empty = whole_chunks(
                &arena
                    .create_client(Quota::UNLIMITED)
                    .map_err(|e| e.to_string())?,
            );
            let a = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            let sizes = LogUniform::new(16, 65_536);
            let mut rng = SplitMix64::new(31);
            let mut live = Vec::new();
            let mut used = 0;
            // Up to 56 MiB of blocks (their rounded sizes), or the first failure if the arena
            // fills up before.
            while used < PEAK {
                let size = usize::try_from(sizes.sample(&mut rng)).unwrap_or(16);
                let Ok((p, got)) = a.alloc_sized(layout(size)) else {
                    break;
                };
                live.push(p);
                used += got;
            }
            rng.shuffle(&mut live);
            for p in live {
                // SAFETY: a live block of `a`, freed once.
                unsafe { a.free(p) }.map_err(|e| e.to_string())?;
            }
            let b = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            Ok(whole_chunks(&b) as f64 * 100.0 / empty.max(1) as f64)
        })
        .run()
}

fn owns(bench: &Bench, region: &mut Region) -> Row {
    let work = Workload::new(LIVE, 0, 65_536, 13);
    let mut rng = SplitMix64::new(14);
    let queries: Vec<usize> = (0..1_000_000).map(|_| rng.below_usize(LIVE)).collect();
    let region = std::cell::RefCell::new(region);
    bench
        .scenario("owns", LIVE as u64, "ns/op", Better::Lower)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            let live = fill(&mut Memvisor(&client), &work.initial)?;
            let ptrs: Vec<*const u8> = queries
                .iter()
                .map(|&i| live[i].0.as_ptr().cast_const())
                .collect();
            let mut owned = 0usize;
            let ns = ns_per_iter(ptrs.len(), |i| {
                owned += usize::from(client.owns(ptrs[i]));
            });
            if owned != ptrs.len() {
                return Err(format!(
                    "owns said no for {} live blocks",
                    ptrs.len() - owned
                ));
            }
            Ok(ns)
        })
        .run()
}

/// Requests in a row that fail before a fill stops: a fill goes on past its first failure,
/// so that smaller requests still use the room larger ones could not, and what an allocator
/// loses to rounding shows as room it never gets back.
const FILL_MISSES: usize = 1_000;

/// What a fill asked for and what the allocator used for it, in bytes.
struct Filled {
    asked: usize,
    used: usize,
}

/// Allocates wide sizes (the same sequence for every contender) until `misses` requests in a
/// row fail: 1 stops at the first failure. `alloc` answers the bytes it used for a request (its
/// block's size, or the request's where the allocator does not say), or `None` if it refused
/// it.
fn fill_block(
    len: usize,
    misses: usize,
    mut alloc: impl FnMut(usize) -> Option<usize>,
) -> Result<Filled, String> {
    let sizes = LogUniform::new(16, 65_536);
    let mut rng = SplitMix64::new(21);
    let mut filled = Filled { asked: 0, used: 0 };
    let mut missed = 0;
    while missed < misses {
        let size = usize::try_from(sizes.sample(&mut rng)).unwrap_or(16);
        let Some(used) = alloc(size) else {
            missed += 1;
            continue;
        };
        missed = 0;
        if used < size {
            return Err(format!("a block of {used} bytes for {size} asked"));
        }
        filled.asked += size;
        filled.used += used;
        if filled.used > len {
            return Err("allocated more than the block".to_owned());
        }
    }
    Ok(filled)
}

/// The bytes asked for until the first failure, in percent of the block.
fn fill_run(heap: &mut dyn Heap, len: usize) -> Sample {
    let filled = fill_block(len, 1, |size| heap.alloc(size).map(|_| size))?;
    Ok(filled.asked as f64 * 100.0 / len as f64)
}

/// The bytes asked for until [`FILL_MISSES`] requests in a row fail, in percent of the block.
fn fill_until_full_run(heap: &mut dyn Heap, len: usize) -> Sample {
    let filled = fill_block(len, FILL_MISSES, |size| heap.alloc(size).map(|_| size))?;
    Ok(filled.asked as f64 * 100.0 / len as f64)
}

/// The bytes used beyond those asked for in a full block, in percent of those asked for.
fn rounding_run(filled: &Filled) -> Sample {
    if filled.asked == 0 {
        return Err("nothing was allocated".to_owned());
    }
    Ok((filled.used - filled.asked) as f64 * 100.0 / filled.asked as f64)
}

/// `fill_percent`, as the shared benchmark defines it: the block used at the first failure.
fn fill_percent(bench: &Bench, region: &mut Region) -> Row {
    fill_row(bench, region, "fill_percent", fill_run)
}

/// `fill_until_full_percent`: the block used once [`FILL_MISSES`] requests in a row fail.
fn fill_until_full_percent(bench: &Bench, region: &mut Region) -> Row {
    fill_row(
        bench,
        region,
        "fill_until_full_percent",
        fill_until_full_run,
    )
}

/// A fill scenario: `run` on a fresh heap of every contender over the block.
fn fill_row(
    bench: &Bench,
    region: &mut Region,
    name: &str,
    run: fn(&mut dyn Heap, usize) -> Sample,
) -> Row {
    let len = region.len();
    let region = std::cell::RefCell::new(region);
    bench
        .scenario(name, 0, "%", Better::Higher)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            run(&mut Memvisor(&client), len)
        })
        .peer("buddy_system_allocator", || {
            run(&mut BuddySystem::new(&mut region.borrow_mut()), len)
        })
        .peer("talc", || {
            run(&mut TalcHeap::new(&mut region.borrow_mut())?, len)
        })
        .peer("buddy-alloc", || {
            run(&mut BuddyAllocHeap::new(&mut region.borrow_mut()), len)
        })
        .run()
}

/// The fill of [`fill_until_full_percent`], measured by what the blocks take: memvisor's block
/// sizes ([`Client::alloc_sized`]) and `buddy_system_allocator`'s own count of the bytes it hands
/// out with their rounding (`stats_alloc_actual`); `talc` and `buddy-alloc` do not say.
fn rounding_percent(bench: &Bench, region: &mut Region) -> Row {
    let len = region.len();
    let region = std::cell::RefCell::new(region);
    bench
        .scenario("rounding_percent", 0, "%", Better::Lower)
        .memvisor(|| {
            let mut region = region.borrow_mut();
            let arena = region.arena()?;
            let client = arena
                .create_client(Quota::UNLIMITED)
                .map_err(|e| e.to_string())?;
            rounding_run(&fill_block(len, FILL_MISSES, |size| {
                client.alloc_sized(layout(size)).ok().map(|(_, used)| used)
            })?)
        })
        .peer("buddy_system_allocator", || {
            let mut heap = BuddySystem::new(&mut region.borrow_mut());
            let mut before = heap.0.stats_alloc_actual();
            rounding_run(&fill_block(len, FILL_MISSES, |size| {
                heap.alloc(size)?;
                let now = heap.0.stats_alloc_actual();
                let used = now - before;
                before = now;
                Some(used)
            })?)
        })
        .run()
}

fn bookkeeping_percent() -> Row {
    let mut row = Row::new("bookkeeping_percent", 0, "%", Better::Lower);
    let figure = Arena::new(
        // A reservation costs no memory: the figure only needs the table sizes.
        match Backing::reserve(BLOCK, 1 << 20, memvisor_vmem::CommitMode::Protected) {
            Ok(block) => block,
            Err(e) => {
                row.notes.insert("memvisor".to_owned(), e.to_string());
                return row;
            }
        },
        Config::new(),
    )
    .map(|arena| arena.bookkeeping_bytes() as f64 * 100.0 / BLOCK as f64);
    match figure {
        Ok(percent) => row.memvisor = Some(percent),
        Err(e) => {
            row.notes.insert("memvisor".to_owned(), e.to_string());
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap of `len` bytes that refuses its `refused`-th request (from 1) and any that would
    /// take it past `len`, handing out no memory (the fill never writes its blocks).
    struct Refusing {
        len: usize,
        taken: usize,
        requests: usize,
        refused: usize,
    }

    impl Heap for Refusing {
        fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
            self.requests += 1;
            if self.requests == self.refused || self.taken + size > self.len {
                return None;
            }
            self.taken += size;
            Some(NonNull::dangling())
        }

        unsafe fn free(&mut self, _: NonNull<u8>, size: usize) {
            self.taken -= size;
        }
    }

    fn first_size() -> usize {
        usize::try_from(LogUniform::new(16, 65_536).sample(&mut SplitMix64::new(21))).unwrap()
    }

    /// `fill_percent` is the block used at the first failure (the shared benchmark's
    /// definition): a heap that refuses the second request gets the first one's bytes, however
    /// much it takes after.
    #[test]
    fn fill_percent_stops_at_the_first_failure() {
        let len = 1 << 20;
        let mut heap = Refusing {
            len,
            taken: 0,
            requests: 0,
            refused: 2,
        };
        let figure = fill_run(&mut heap, len).unwrap();
        assert_eq!(figure, first_size() as f64 * 100.0 / len as f64);
        assert_eq!(heap.requests, 2);
    }

    /// `fill_until_full_percent` goes on past the first failure until 1,000 requests in a row
    /// fail: the same heap gets more than the first request's bytes, and the figure is what
    /// was asked of the heap.
    #[test]
    fn fill_until_full_percent_goes_past_the_first_failure() {
        let len = 1 << 20;
        let mut heap = Refusing {
            len,
            taken: 0,
            requests: 0,
            refused: 2,
        };
        let figure = fill_until_full_run(&mut heap, len).unwrap();
        assert!(figure > first_size() as f64 * 100.0 / len as f64);
        assert_eq!(figure, heap.taken as f64 * 100.0 / len as f64);
        assert!(heap.requests >= FILL_MISSES + 2);
    }
}
