//! [`Client`]: one isolated user of an arena, with its own chunks, buddy free lists and slabs.

use alloc::boxed::Box;
use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::arena::{Arena, ChunkInfo, Geometry, ORDER_SLOTS, meta_slot, start_word};
use crate::chunks::NIL;
use crate::classes::{CLASS_SLOTS, CLASSES, NCLASSES, SMALL_MAX, class_of, class_size};
use crate::config::{Flags, MIN_BLOCK, Quota};
use crate::error::{Error, Result};
use crate::remote_bits::RemoteBits;
use crate::sync::AtomicU32;

mod buddy;
mod cache;
mod held;
mod marks;
mod remote;
mod run;
mod slab;

use cache::{Caches, Uncached};
use held::HeldChunk;
pub(crate) use remote::Mailbox;
pub(crate) use run::MAX_RUN;
use slab::FreeObj;
pub(crate) use slab::{NO_SLAB, Slab};

/// A buddy block's length is a multiple of `2^order / LENGTH_STEPS` pages, `2^order` being the
/// power of two at or above its size in pages: a block of over 16 pages is less than an eighth
/// longer than its size rounded to a page, the tail cut off its power-of-two block is at most
/// three pieces (one per set bit of `2^order` minus its length, which is under `2^order / 2`),
/// and a cached block's re-cut to another length of its order clears and sets at most five
/// (`tails_and_recuts_of_sixteenth_lengths_stay_within_their_bound`). With page-granular
/// lengths those were up to `order - 1` and `2 * order - 3` pieces, whose loops' exits were
/// most of a wide pair's mispredicted branches. A block aligned above its power of two comes
/// from a block of a higher order, whose tail has one more piece per order between the two.
const LENGTH_STEPS: usize = 16;
const _: () = assert!(LENGTH_STEPS.is_power_of_two());

/// The largest alignment a slab block can have: blocks of a class whose size is a multiple of
/// it are aligned to it (slabs start on a buddy page of at least 256 bytes, and their blocks
/// follow each other from there).
const SLAB_ALIGN: usize = 64;
const _: () = assert!(SMALL_MAX.is_multiple_of(SLAB_ALIGN));

/// The byte freed blocks are filled with under [`Flags::POISON`].
pub const POISON_BYTE: u8 = 0xA5;

/// Page metadata: the top two bits say what a buddy page is (nothing, the first page of a live
/// buddy block, a page of a slab), the low 14 a value.
const KIND: u16 = 0b11 << 14;
/// First page of a freed buddy block kept in the client's cache; value: its length in pages
/// minus one.
const CACHED: u16 = 1 << 14;
/// First page of a live buddy block; value: its length in pages minus one.
const LIVE: u16 = 2 << 14;
/// Any page of a slab; value: the slab's size class (its order is the class's slab order).
const SLAB: u16 = 3 << 14;
const VALUE: u16 = !KIND;
// A slab page's metadata masked with `CLASS_SLOTS - 1` is its class (the quick free).
const _: () = assert!(CLASS_SLOTS - 1 <= VALUE as usize && CLASS_SLOTS.is_power_of_two());

/// Page metadata of `kind` with `value` (at most 14 bits: orders up to 14, page counts up to
/// 2^14 - 1, which the geometry guarantees).
#[inline]
fn meta(kind: u16, value: usize) -> u16 {
    debug_assert!(value <= usize::from(VALUE));
    kind | (u16::try_from(value).unwrap_or(VALUE) & VALUE)
}

/// The size of the live block at `off` whose page metadata is `meta`, given the marks table
/// `marks` (as `u16`s).
///
/// # Safety
/// A live block starts at `off` and its metadata is not being written.
#[inline]
pub(crate) unsafe fn block_size(geo: &Geometry, marks: *const u16, off: usize, meta: u16) -> usize {
    match meta & KIND {
        SLAB => class_size(usize::from(meta & VALUE)),
        _ if run::is_run(meta) => {
            // SAFETY: the caller's promise.
            unsafe { run::run_chunks(geo, marks, off) << geo.chunk_shift }
        }
        _ => {
            debug_assert_eq!(meta & KIND, LIVE);
            (usize::from(meta & VALUE) + 1) << geo.page_shift
        }
    }
}

/// A chunk's index as the tables store it.
fn chunk_index(chunk: usize) -> u32 {
    u32::try_from(chunk).expect("the arena has fewer than u32::MAX chunks")
}

/// Statistics of one client.
///
/// Fields may be added in later versions: it is read, not built, outside this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Bytes of the chunks the client holds.
    pub total_bytes: usize,
    /// Bytes in its live blocks (sizes as [`Client::size_of`] reports them), counting blocks
    /// freed through the arena ([`Arena::free`]) that the client has not taken in yet.
    pub used_bytes: usize,
    /// `total_bytes - used_bytes`: free blocks, slab slack, guard pages.
    pub free_bytes: usize,
    /// The most `used_bytes` has been.
    pub peak_used_bytes: usize,
    /// Live blocks, counting blocks freed through the arena ([`Arena::free`]) that the client
    /// has not taken in yet.
    pub live_blocks: usize,
    /// Chunks held.
    pub chunks: usize,
    /// Held chunks wholly free: no live block, no cached block and no slab in them (kept for
    /// reuse; at most one). A part of [`pinned_chunks`](Self::pinned_chunks).
    pub cached_chunks: usize,
    /// Bytes of freed blocks kept for quick reuse (part of `free_bytes`).
    pub cached_bytes: usize,
    /// Freed blocks kept for quick reuse: the blocks [`cached_bytes`](Self::cached_bytes)
    /// counts, apart from [`live_blocks`](Self::live_blocks). Counted when asked, in time
    /// proportional to the number of bins (about 40), not of blocks.
    pub cached_blocks: usize,
    /// Held chunks with no live block in them (blocks freed through the arena and not yet
    /// taken in count as live): kept for reuse, holding only cached blocks, empty slabs or
    /// nothing. At most one: when a free leaves a second chunk without a live
    /// block, that chunk's cached blocks and empty slabs are given back and so is the chunk.
    pub pinned_chunks: usize,
    /// Bytes of those chunks.
    pub pinned_bytes: usize,
    /// The largest block the client has room for in its chunks: the largest free or cached
    /// run of buddy pages, or the largest size class with a cached block or a slab with
    /// room. What a request gets without taking another chunk: one that takes buddy pages
    /// (over 2 KiB, or aligned above 64) when it is no larger, and aligned to no more, than
    /// the largest *free* run; a cached block only when the request is of its size class or
    /// buddy order; a small block when its class has a cached block or a slab with room.
    /// Anything else may take another chunk (a new slab, or pages), while the arena has
    /// one; the cached blocks are given back first only when it has none.
    pub largest_free_block: usize,
    /// Successful allocations so far.
    pub allocations: u64,
    /// Successful frees so far: the client's own, and those through [`Arena::free`] once the
    /// client has taken the block in.
    pub frees: u64,
}

/// One isolated user of an [`Arena`]: it allocates and frees blocks in chunks that only it
/// holds, tells whether it owns an address and the size of a block, and gives all its memory
/// back when dropped (or passed to [`Arena::delete_client`]), in time proportional to its
/// chunks, not its blocks.
///
/// Every block is aligned to at least 16 bytes. Freeing an address this client did not hand
/// out, an interior address or an already freed block is an error that changes nothing, found
/// in constant time from a chunk-owner table and a block-start bitmap.
///
/// # Threads
/// A client is `Send` but not `Sync`: it may move between threads, and one thread at a time
/// uses it. Its methods take `&self` (the state is behind an `UnsafeCell`), so `&Client`
/// implements [`Allocator`] and collections can live inside it, e.g.
/// `allocator_api2::vec::Vec::new_in(&client)`.
///
/// Sharing one client between threads does not compile:
/// ```compile_fail
/// use memvisor_arena::{Arena, Backing, Config, Quota};
///
/// let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
/// let client = arena.create_client(Quota::UNLIMITED).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| client.trim()); // `Client` is not `Sync`
///     client.trim();
/// });
/// ```
/// Moving it to another thread does:
/// ```
/// use memvisor_arena::{Arena, Backing, Config, Quota};
///
/// let arena = Arena::new(Backing::heap(4 << 20, 4096).unwrap(), Config::new()).unwrap();
/// let client = arena.create_client(Quota::UNLIMITED).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || client.trim());
/// });
/// ```
///
/// # Examples
/// ```
/// use core::alloc::Layout;
///
/// use memvisor_arena::{Arena, Backing, Config, Quota};
///
/// let arena = Arena::new(Backing::heap(4 << 20, 4096)?, Config::new())?;
/// let client = arena.create_client(Quota::UNLIMITED)?;
/// let p = client.alloc(Layout::from_size_align(100, 8).unwrap())?;
/// assert_eq!(client.size_of(p.as_ptr())?, 112); // rounded up to its size class
/// assert!(client.owns(p.as_ptr()));
/// // SAFETY: `p` is not used after this.
/// assert_eq!(unsafe { client.free(p) }?, 112);
/// assert!(!client.owns(p.as_ptr()));
/// # Ok::<(), memvisor_arena::Error>(())
/// ```
pub struct Client<'a> {
    arena: &'a Arena,
    owners: &'a [AtomicU32],
    remote: &'a RemoteBits,
    id: u32,
    state: UnsafeCell<State>,
}

// SAFETY: the state points only into memory and side-table cells of chunks this client holds
// (and the arena, which is `Sync`); nothing else reaches them while the client holds the
// chunks, so moving the client moves the sole access right with it. It is not `Sync`
// (`UnsafeCell`), so one thread at a time uses it.
unsafe impl Send for Client<'_> {}

struct State {
    geo: Geometry,
    /// The marks table: per KiB a word of start bits and a word of page metadata.
    marks: *mut u64,
    info: *mut ChunkInfo,
    /// The slab table: a record per slab unit of the arena.
    slabs: *mut Slab,
    quota: Quota,
    /// The quota's limit (`usize::MAX` without one).
    limit: usize,
    /// `limit` minus the bytes of the live blocks: what the quota still allows (kept instead
    /// of the used bytes so that the quota check is one comparison).
    room: usize,
    /// The least `room` has been: `limit` minus the peak of the used bytes.
    low_room: usize,
    /// Successful frees so far (successful allocations are these plus the live blocks, which
    /// the chunk records count, so the allocation path keeps no count of its own).
    frees: u64,
    chunk_head: u32,
    chunks: usize,
    empty_chunks: usize,
    /// Held chunks without a live block (see [`ClientStats::pinned_chunks`]).
    idle_chunks: usize,
    /// The chunk that last became the only one without a live block (`idle_chunks` going
    /// from 0 to 1), so that a run finds the kept chunk without walking the chunk list. A
    /// hint: checked against the owner table and the chunk's record before it is used.
    kept_hint: u32,
    /// The client's identifier.
    id: u32,
    /// Where other threads put the blocks they free ([`Arena::free`]); made with `Box`, freed
    /// when the client is dropped.
    mailbox: *mut Mailbox,
    /// The arena's trim request count when this client last trimmed.
    seen_trims: usize,
    /// Bytes of cached buddy blocks (those of small blocks are counted from the bins when
    /// asked: see [`State::cached_bytes`]).
    cached_large: usize,
    /// The cached bytes as last added to the arena's statistics ([`Flags::STATISTICS`]).
    cached_reported: usize,
    free_bits: *mut u64,
    heads: [u32; ORDER_SLOTS],
    mask: u32,
    partial: [*mut Slab; NCLASSES],
    empty_slabs: [u32; NCLASSES],
    /// The caches' bins, made when the first freed block is cached: about 19 KiB, which would
    /// make a client too large to move around cheaply (or to live on a small stack), and
    /// which a client that never frees does not need.
    cache: Option<Box<Caches>>,
    /// The class of each 16 bytes of small size (entry `(size + 15) / 16`; a zero size gets
    /// the smallest block), the arena's smallest class in use at least.
    class_of: [u8; SMALL_MAX / 16 + 1],
    /// The size of the class in `class_of`, entry by entry (one load instead of two on the
    /// allocation path).
    class_bytes: [u16; SMALL_MAX / 16 + 1],
    /// Whether an allocation has more to do: [`Flags::ZERO`] or [`Flags::STATISTICS`].
    alloc_flags: bool,
    /// `low_room`, or `usize::MAX` with `alloc_flags`: an allocation that leaves `room` below
    /// it has more to do ([`State::after_alloc`]), so the common one makes one test for both.
    alloc_watch: usize,
    /// Whether a free has more to do: [`Flags::POISON`] or [`Flags::STATISTICS`].
    free_flags: bool,
    /// The arena's length in [`MIN_BLOCK`]s once the cache bins exist, 0 before and with
    /// `free_flags`: the bound of the quick free's one range test, which so also tells that
    /// the bins exist.
    quick_units: usize,
    /// Entries, blocks and slab records [`State::flush_would_free`] has visited, for tests
    /// of its cost.
    #[cfg(test)]
    flush_visits: core::cell::Cell<usize>,
}

impl fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'a> Client<'a> {
    /// A client with identifier `id` and its `mailbox` (from the arena's
    /// [`ClientIds::take`](crate::client_ids::ClientIds::take), the client's until it is
    /// dropped and gives both back).
    pub(crate) fn new(arena: &'a Arena, id: u32, quota: Quota, mailbox: *mut Mailbox) -> Self {
        let geo = arena.geometry();
        let free_flags = geo.flags.contains(Flags::POISON) || geo.flags.contains(Flags::STATISTICS);
        let alloc_flags = geo.flags.contains(Flags::ZERO) || geo.flags.contains(Flags::STATISTICS);
        Self {
            arena,
            owners: arena.owners(),
            remote: arena.remote_bits(),
            id,
            state: UnsafeCell::new(State {
                geo,
                marks: arena.marks_ptr(),
                info: arena.info_ptr(),
                slabs: arena.slabs_ptr(),
                quota,
                limit: quota.limit().unwrap_or(usize::MAX),
                room: quota.limit().unwrap_or(usize::MAX),
                low_room: quota.limit().unwrap_or(usize::MAX),
                frees: 0,
                chunk_head: NIL,
                chunks: 0,
                empty_chunks: 0,
                idle_chunks: 0,
                kept_hint: NIL,
                id,
                mailbox,
                seen_trims: arena.trim_requests(),
                cached_large: 0,
                cached_reported: 0,
                free_bits: arena.free_bits_ptr(),
                heads: [NIL; ORDER_SLOTS],
                mask: 0,
                partial: [ptr::null_mut(); NCLASSES],
                empty_slabs: [0; NCLASSES],
                cache: None,
                class_of: core::array::from_fn(|step| {
                    let class = class_of((step * 16).max(1)).max(geo.min_class);
                    u8::try_from(class).expect("fewer than 256 classes")
                }),
                class_bytes: core::array::from_fn(|step| {
                    let class = class_of((step * 16).max(1)).max(geo.min_class);
                    CLASSES[class]
                }),
                alloc_flags,
                alloc_watch: if alloc_flags {
                    usize::MAX
                } else {
                    quota.limit().unwrap_or(usize::MAX)
                },
                free_flags,
                quick_units: 0,
                #[cfg(test)]
                flush_visits: core::cell::Cell::new(0),
            }),
        }
    }

    /// The client's identifier, unique among the live clients of its arena: once the client
    /// is deleted, a later client of the arena may get it.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The arena it lives in.
    #[must_use]
    pub fn arena(&self) -> &'a Arena {
        self.arena
    }

    /// Its quota.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.with(|s| s.quota)
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // SAFETY: the client is not `Sync`, so only this thread can be here; no method calls
        // out to user code while the borrow lives, so it is never borrowed twice.
        f(unsafe { &mut *self.state.get() })
    }

    /// Allocates a block for `layout`. Sizes up to 2 KiB with alignment up to 64 are rounded up
    /// to a size class (with alignment 32 or 64, to a class that is a multiple of it); larger
    /// ones to a multiple of the buddy page (256 bytes for chunks up to 1 MiB, a 4096th of the
    /// chunk above) and, over 16 pages, of a sixteenth of the power of two of pages at or above
    /// that (at most an eighth over the size rounded to a page), and sizes over a chunk to whole
    /// chunks. A zero size gets the smallest block. With [`Flags::ZERO`] the block reads as
    /// zero.
    ///
    /// # Errors
    /// [`Error::UnsupportedAlignment`] beyond [`Arena::max_alignment`], [`Error::TooLarge`]
    /// beyond [`Arena::max_block_size`], [`Error::QuotaExceeded`] if the block would take the
    /// client over its quota, [`Error::OutOfMemory`] if the arena has no chunk left that fits
    /// it (for a block over a chunk, no run of that many contiguous free chunks; a chunk that
    /// `Arena::decommit_free_chunks` has out of the free set is waited for, up to 100 ms),
    /// [`Error::Vmem`] if committing a chunk fails. Nothing changes on error, except that an
    /// allocation refused for lack of room (quota, memory) may first have freed the blocks
    /// other threads freed through the arena and honoured a trim request (work every allocation
    /// that misses the caches does), and one refused for want of a chunk asks the other clients
    /// to trim (see [`Arena::trim`]); one refused for its alignment or size does none of these.
    /// A block over a chunk first gives back the client's kept chunk (the one without a live
    /// block, see [`ClientStats::pinned_chunks`]) when the chunks around it make a free run
    /// with it, and takes that run; if the run is then refused (another thread took its chunks
    /// meanwhile, or committing failed), the kept chunk stays given back. A run whose commit
    /// is refused part-way decommits again the chunks it committed (if the system refuses
    /// that too, they stay committed, counted in
    /// [`ArenaStats::cached_chunks`](crate::ArenaStats::cached_chunks)).
    #[inline]
    pub fn alloc(&self, layout: Layout) -> Result<NonNull<u8>> {
        self.alloc_sized(layout).map(|(p, _)| p)
    }

    /// [`alloc`](Self::alloc), also returning the block's size.
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc).
    #[inline]
    pub fn alloc_sized(&self, layout: Layout) -> Result<(NonNull<u8>, usize)> {
        let arena = self.arena;
        let id = self.id;
        self.with(|s| match s.alloc(arena, id, layout) {
            // Blocks freed through the arena still count against the quota until taken back.
            Err(Error::QuotaExceeded { .. }) if s.has_mail(arena) => {
                s.poll(arena);
                s.alloc(arena, id, layout)
            }
            result => result,
        })
        // The paths below know what they needed of the arena; the error names what was asked.
        .map_err(|e| e.asked(layout.size()))
    }

    /// Frees the block at `ptr` and returns its size.
    ///
    /// # Errors
    /// [`Error::Foreign`] if `ptr` is outside the arena, [`Error::NotOwned`] if it lies in a
    /// chunk this client does not hold, [`Error::NotABlock`] if it is not the start of a live
    /// block (interior, already freed). Nothing changes on error.
    ///
    /// # Safety
    /// If `ptr` is a live block of this client, nothing may use it after this call (no
    /// reference into it may live on), and no [`Arena::free`] of it may run at the same time
    /// on another thread (one ordered before or after is refused, or refuses this one). A
    /// rejected pointer is left alone, so this promise only matters for blocks the call frees.
    #[inline(always)]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<usize> {
        // SAFETY: as in `with`: one thread uses the client, and nothing here calls out.
        let s = unsafe { &mut *self.state.get() };
        if let Some(size) = s.free_quick(self.arena, self.owners, self.id, ptr.as_ptr()) {
            return Ok(size);
        }
        // SAFETY: the caller's promise.
        unsafe { self.free_slow(ptr) }
    }

    /// [`free`](Self::free) of anything [`State::free_quick`] leaves alone: every error,
    /// runs, a chunk's last live block, a client without cache bins yet, flags, mail.
    ///
    /// # Safety
    /// As [`free`](Self::free).
    #[inline(never)]
    unsafe fn free_slow(&self, ptr: NonNull<u8>) -> Result<usize> {
        let (arena, owners, remote, id) = (self.arena, self.owners, self.remote, self.id);
        // The first free of a live block makes the bins that keep it (a refused pointer makes
        // nothing).
        if self.with(|s| s.cache.is_none() && s.locate(owners, remote, id, ptr.as_ptr()).is_ok()) {
            self.make_bins();
        }
        self.with(|s| {
            let (off, chunk, meta) = s.claim(owners, remote, id, ptr.as_ptr())?;
            let size = s.free(arena, off, chunk, meta);
            if s.has_mail(arena) {
                s.poll(arena);
            }
            Ok(size)
        })
    }

    /// Makes the cache bins if the client has none yet (if the global allocator refuses them,
    /// nothing is cached). The state is not borrowed meanwhile: the bins come from the global
    /// allocator, which may be this very client (a thread's global allocator over it), and
    /// its nested call must find the state free.
    #[cold]
    fn make_bins(&self) {
        let geo = self.arena.geometry();
        let bins = cache::Caches::boxed(geo.page_shift, geo.max_order);
        let spare = self.with(|s| {
            if s.cache.is_none() {
                s.cache = bins;
                if s.cache.is_some() && !s.free_flags {
                    // The quick free may run from now on (bins are never taken away).
                    s.quick_units = s.geo.len / MIN_BLOCK;
                }
                None
            } else {
                bins
            }
        });
        // Bins a nested call made first go back to the global allocator, again outside the
        // borrow.
        drop(spare);
    }

    /// Whether `ptr` is the start of a live block of this client.
    #[inline]
    #[must_use]
    pub fn owns(&self, ptr: *const u8) -> bool {
        let (owners, remote, id) = (self.owners, self.remote, self.id);
        self.with(|s| s.locate(owners, remote, id, ptr).is_ok())
    }

    /// The size of the live block at `ptr` (its requested size rounded up).
    ///
    /// # Errors
    /// As [`free`](Self::free).
    #[inline]
    pub fn size_of(&self, ptr: *const u8) -> Result<usize> {
        let (owners, remote, id) = (self.owners, self.remote, self.id);
        self.with(|s| {
            let (off, meta, _) = s.locate_meta(owners, remote, id, ptr)?;
            Ok(s.block_size(off, meta))
        })
    }

    /// The client's statistics. Takes time in proportion to the chunks it holds: the live
    /// blocks (and so the allocations, frees plus live blocks) are counted from the chunks'
    /// records, and the cached bytes of small blocks from the bins, so that the allocation
    /// and free paths need not keep those counts.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        self.with(|s| s.stats())
    }

    /// Gives back everything the client keeps for reuse: frees the blocks other threads freed
    /// through [`Arena::free`], gives its cached blocks back to their slabs and the buddy
    /// allocator, its empty slabs to the buddy allocator and every chunk left without a block
    /// to the arena. Live blocks are not touched.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    ///
    /// use memvisor_arena::{Arena, Backing, Config, Quota};
    ///
    /// let arena = Arena::new(Backing::heap(4 << 20, 4096)?, Config::new())?;
    /// let client = arena.create_client(Quota::UNLIMITED)?;
    /// let p = client.alloc(Layout::from_size_align(100, 8).unwrap())?;
    /// // SAFETY: `p` is not used after this.
    /// unsafe { client.free(p) }?;
    /// assert!(client.stats().cached_bytes > 0);
    /// client.trim();
    /// assert_eq!(client.stats().cached_bytes, 0);
    /// assert_eq!(client.stats().chunks, 0);
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    pub fn trim(&self) {
        let arena = self.arena;
        self.with(|s| {
            s.drain(arena);
            s.trim(arena);
        });
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        let s = self.state.get_mut();
        if s.geo.flags.contains(Flags::STATISTICS) {
            self.arena.count_free(s.used(), s.live());
            self.arena.count_cached(0, s.cached_reported);
            self.arena.count_pinned(0, s.idle_chunks);
        }
        // The chunks may still have live blocks: the arena clears their tables when it hands
        // them out again.
        self.arena.release_list(s.chunk_head, false);
        // SAFETY: the mailbox came from the arena's `ClientIds::take` (see `create_client`);
        // nothing pushes onto it any more (a free through the arena needs the client alive,
        // and the chunks no longer point at it).
        unsafe { self.arena.client_gone(s.mailbox) };
    }
}

// SAFETY: blocks are valid for their layout (size and alignment checked in `alloc`) until
// freed or the client is dropped; the client is not `Clone`. `deallocate` receives only blocks
// `allocate` returned, which this client handed out, or the dangling pointers of zero-sized
// layouts, which it leaves alone.
unsafe impl Allocator for Client<'_> {
    /// A block for `layout`, as [`Client::alloc`] gives; a zero-sized layout takes no memory
    /// and gets a dangling pointer aligned as asked, as the standard allocator's collections
    /// expect (a vector shrunk to nothing never gives its buffer back).
    fn allocate(&self, layout: Layout) -> core::result::Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let dangling = NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align()))
                .ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let (ptr, size) = self.alloc_sized(layout).map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, size))
    }

    /// Frees the block; a zero-sized layout's pointer was never allocated and is left alone.
    /// A pointer that is not a live block of this client (another client's or arena's, an
    /// interior or already freed address) is refused as [`Client::free`] refuses it and left
    /// alone: the trait has no way to report it, and the call does not panic.
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the `Allocator` contract: `ptr` is a live block of this client and the caller
        // no longer uses it. (A pointer that is not is refused and left alone.)
        let _refused_or_freed = unsafe { self.free(ptr) };
    }

    /// Keeps the block where it is when `new_layout` fits it (its size class or buddy pages
    /// hold `new_layout.size()` bytes and it is aligned as asked): that needs no memory, so it
    /// succeeds at the quota or in a full arena. Otherwise moves it into a new block, as the
    /// default does. With [`Flags::ZERO`] the bytes past `old_layout.size()` read as zero, as
    /// in a new block.
    ///
    /// Before anything else, a pointer that is not the start of a live block of this client
    /// (another client's or arena's block, an interior, freed or made-up address), an
    /// `old_layout` larger than the block, or a `new_layout` smaller than `old_layout` is
    /// refused with [`AllocError`]: nothing is allocated, read, written or freed. (A zero-sized
    /// `old_layout` names no block: its pointer is neither read nor freed.)
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        let zero = self.arena.geometry().flags.contains(Flags::ZERO);
        // SAFETY: the caller's promise, passed on.
        unsafe { self.grow_to(ptr, old_layout, new_layout, zero) }
    }

    /// As [`grow`](Self::grow), with the bytes past `old_layout.size()` zeroed.
    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.grow_to(ptr, old_layout, new_layout, true) }
    }

    /// Moves the block into a smaller one, as the default does; but when no smaller block can
    /// be had (the quota is reached, or the arena is out of chunks for its size class), the
    /// block stays where it is, whole, if it is aligned as `new_layout` asks: shrinking never
    /// needs more memory than the block, so it does not fail for want of it (a collection
    /// shrunk at its quota would otherwise end in `handle_alloc_error`).
    ///
    /// Refuses with [`AllocError`], before anything else, what [`grow`](Self::grow) refuses:
    /// a pointer that is not a live block of this client, an `old_layout` larger than the
    /// block, and a `new_layout` larger than `old_layout`.
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        if new_layout.size() > old_layout.size() {
            return Err(AllocError);
        }
        if old_layout.size() == 0 {
            // No block (the dangling pointer of a zero-sized layout): nothing to copy or free,
            // and `new_layout` is zero-sized too.
            return self.allocate(new_layout);
        }
        // The caller's promise, checked before anything is allocated or read: `ptr` is a live
        // block of this client holding `old_layout.size()` bytes.
        let size = self.block_of(ptr, old_layout)?;
        let new = match self.allocate(new_layout) {
            Ok(new) => new,
            Err(e) => {
                if !ptr.as_ptr().addr().is_multiple_of(new_layout.align()) {
                    return Err(e);
                }
                if self.arena.geometry().flags.contains(Flags::ZERO) {
                    // As a new block would: past the bytes kept, the block reads as zero.
                    // SAFETY: the live block `ptr..ptr + size` is the caller's, and
                    // `new_layout.size() <= old_layout.size() <= size` (tested above).
                    unsafe {
                        ptr.as_ptr()
                            .add(new_layout.size())
                            .write_bytes(0, size - new_layout.size());
                    };
                }
                return Ok(NonNull::slice_from_raw_parts(ptr, size));
            }
        };
        // SAFETY: `ptr` is a live block of this client of `size >= old_layout.size() >=
        // new_layout.size()` bytes (tested above) and `new` holds at least
        // `new_layout.size()`; two live blocks do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast::<u8>().as_ptr(), new_layout.size());
            self.release_moved(ptr, new, new_layout)
        }
    }
}

impl Client<'_> {
    /// [`Allocator::grow`] (`zero`: the bytes past `old_layout.size()` zeroed): in place when
    /// the block holds `new_layout`, else into a new block.
    ///
    /// # Safety
    /// As [`Allocator::grow`].
    unsafe fn grow_to(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
        zero: bool,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        if new_layout.size() < old_layout.size() {
            return Err(AllocError);
        }
        if old_layout.size() == 0 {
            // No block (the dangling pointer of a zero-sized layout): nothing to copy or free.
            return if zero && !self.arena.geometry().flags.contains(Flags::ZERO) {
                self.allocate_zeroed(new_layout)
            } else {
                self.allocate(new_layout)
            };
        }
        // The caller's promise, checked before anything is allocated or read: `ptr` is a live
        // block of this client holding `old_layout.size()` bytes.
        let size = self.block_of(ptr, old_layout)?;
        if new_layout.size() <= size && ptr.as_ptr().addr().is_multiple_of(new_layout.align()) {
            if zero {
                // SAFETY: the live block `ptr..ptr + size` is the caller's, and
                // `old_layout.size() <= new_layout.size() <= size`.
                unsafe {
                    ptr.as_ptr()
                        .add(old_layout.size())
                        .write_bytes(0, size - old_layout.size());
                }
            }
            return Ok(NonNull::slice_from_raw_parts(ptr, size));
        }
        // With `Flags::ZERO` a new block reads as zero already.
        let new = if zero && !self.arena.geometry().flags.contains(Flags::ZERO) {
            self.allocate_zeroed(new_layout)?
        } else {
            self.allocate(new_layout)?
        };
        // SAFETY: `ptr` is a live block of this client of `size >= old_layout.size()` bytes
        // (tested above) and `new` holds at least `new_layout.size() >= old_layout.size()`;
        // two live blocks do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast::<u8>().as_ptr(), old_layout.size());
            self.release_moved(ptr, new, new_layout)
        }
    }

    /// The size of the live block of this client at `ptr` if it holds `layout.size()` bytes,
    /// else [`AllocError`]: the test [`Allocator::grow`] and [`Allocator::shrink`] make
    /// before they allocate, read or free anything (one ownership lookup, as
    /// [`size_of`](Self::size_of)).
    fn block_of(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> core::result::Result<usize, AllocError> {
        match self.size_of(ptr.as_ptr()) {
            Ok(size) if layout.size() <= size => Ok(size),
            _ => Err(AllocError),
        }
    }

    /// Frees `old`, whose bytes were just copied into the new block `new` (of `layout`), and
    /// returns `new`. Should the free be refused, `new` is given back instead and the move is
    /// refused, so that the caller never holds both blocks nor believes `old` freed.
    ///
    /// # Safety
    /// `old` was checked to be a live block of this client ([`block_of`](Self::block_of)) in
    /// this call, and the caller no longer uses it; `new` was just allocated with `layout`.
    unsafe fn release_moved(
        &self,
        old: NonNull<u8>,
        new: NonNull<[u8]>,
        layout: Layout,
    ) -> core::result::Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise.
        match unsafe { self.free(old) } {
            Ok(_) => Ok(new),
            Err(_) => {
                // SAFETY: `new` was allocated with `layout` in this call and never handed out.
                unsafe { self.deallocate(new.cast(), layout) };
                Err(AllocError)
            }
        }
    }
}

impl State {
    #[inline]
    fn at(&self, off: usize) -> *mut u8 {
        self.geo.base.as_ptr().wrapping_add(off)
    }

    #[inline]
    fn info(&mut self, chunk: HeldChunk) -> &mut ChunkInfo {
        // SAFETY: the client holds `chunk` (`HeldChunk`), so only it touches the record, and
        // the table has one per chunk.
        unsafe { &mut *self.info.add(chunk.index()) }
    }

    /// The chunk on one of this client's lists (its chunk list, an order list) at `chunk`,
    /// not [`NIL`].
    #[inline]
    fn listed(chunk: u32) -> HeldChunk {
        debug_assert_ne!(chunk, NIL);
        // SAFETY: the client's lists link only chunks it holds (invariant 1; a chunk leaves
        // them before it goes back).
        unsafe { HeldChunk::new_unchecked(chunk as usize) }
    }

    /// The chunk that the block or slab of this client at offset `off` lies in.
    ///
    /// # Safety
    /// A block or slab of this client (live, cached, in its mailbox or being handed out)
    /// lies at `off`.
    #[inline]
    unsafe fn chunk_of(&self, off: usize) -> HeldChunk {
        // SAFETY: the caller's promise: the client's blocks lie in chunks it holds
        // (invariant 2).
        unsafe { HeldChunk::new_unchecked(off >> self.geo.chunk_shift) }
    }

    /// Takes `chunk` out of the doubly linked list of held chunks (its own `next` and `prev`
    /// are left for the caller to reset or reuse).
    fn unlink_chunk(&mut self, chunk: HeldChunk) {
        let (next, prev) = {
            let info = self.info(chunk);
            (info.next, info.prev)
        };
        if prev == NIL {
            self.chunk_head = next;
        } else {
            self.info(Self::listed(prev)).next = next;
        }
        if next != NIL {
            self.info(Self::listed(next)).prev = prev;
        }
    }

    #[inline]
    fn check_quota(&self, bytes: usize) -> Result<()> {
        if bytes > self.room {
            return Err(self.quota_exceeded(bytes));
        }
        Ok(())
    }

    #[cold]
    fn quota_exceeded(&self, bytes: usize) -> Error {
        Error::QuotaExceeded {
            requested: bytes,
            used: self.used(),
            quota: self.limit,
        }
    }

    #[inline(always)]
    fn alloc(&mut self, arena: &Arena, id: u32, layout: Layout) -> Result<(NonNull<u8>, usize)> {
        let size = layout.size();
        let align = layout.align();
        let (off, bytes) = if align <= MIN_BLOCK && size <= SMALL_MAX {
            let step = (size + 15) >> 4;
            let class = usize::from(self.class_of[step]);
            let bytes = usize::from(self.class_bytes[step]);
            self.small(arena, id, class, bytes)?
        } else if align <= SLAB_ALIGN && size <= SMALL_MAX && align <= self.geo.max_align {
            // Slab blocks are aligned relative to the chunk starts, which are aligned only to
            // `max_align`: past it, `alloc_large` refuses the alignment.
            let class = self.aligned_class(size, align);
            self.small(arena, id, class, class_size(class))?
        } else {
            self.alloc_large(arena, id, size.max(1), align)?
        };
        self.set_start(off);
        // SAFETY: the block at `off` was just handed out by this client.
        let chunk = unsafe { self.chunk_of(off) };
        let info = self.info(chunk);
        info.live += 1;
        if info.live == 1 {
            self.busy(arena);
        }
        self.room -= bytes;
        let p = self.at(off);
        if self.room < self.alloc_watch {
            // A branch, not a select: past the first growth a new peak is rare, and without
            // flags nothing else is to do.
            self.after_alloc(arena, p, bytes);
        }
        // SAFETY: `p` is inside the arena, whose base is not null and does not wrap.
        Ok((unsafe { NonNull::new_unchecked(p) }, bytes))
    }

    /// An allocation of the block of `bytes` at `p` that left `room` below `alloc_watch`: a new
    /// peak of the used bytes, or flags ([`on_alloc`](Self::on_alloc)).
    #[cold]
    fn after_alloc(&mut self, arena: &Arena, p: *mut u8, bytes: usize) {
        self.low_room = self.low_room.min(self.room);
        if self.alloc_flags {
            self.on_alloc(arena, p, bytes);
        } else {
            self.alloc_watch = self.low_room;
        }
    }

    /// Takes a block of `class`, of `bytes` (its size), from its cache or its slabs; returns
    /// its offset and size.
    #[inline(always)]
    fn small(
        &mut self,
        arena: &Arena,
        id: u32,
        class: usize,
        bytes: usize,
    ) -> Result<(usize, usize)> {
        debug_assert_eq!(bytes, class_size(class));
        self.check_quota(bytes)?;
        let off = match self.uncache_small(class) {
            Some(off) => off,
            None => self.small_missed(arena, id, class)?,
        };
        Ok((off, bytes))
    }

    /// [`small`](Self::small) when the cache of `class` is empty: takes in the mail, then a
    /// block from the class's slabs. Out of line, so that the cache hit it is not taken on is
    /// short and keeps few values live.
    #[inline(never)]
    fn small_missed(&mut self, arena: &Arena, id: u32, class: usize) -> Result<usize> {
        if self.has_mail(arena) {
            self.poll(arena);
        }
        self.alloc_small(arena, id, class)
    }

    /// The smallest class of at least `size` bytes (at most [`SMALL_MAX`]) whose blocks are
    /// all aligned to `align` (a power of two up to [`SLAB_ALIGN`]): a slab's blocks lie at
    /// its page-aligned start plus multiples of the class size, so a class that is a multiple
    /// of `align` has them all aligned. The largest class is one.
    #[cold]
    fn aligned_class(&self, size: usize, align: usize) -> usize {
        let mut class = usize::from(self.class_of[(size + 15) >> 4]);
        while !class_size(class).is_multiple_of(align) {
            class += 1;
        }
        class
    }

    /// [`Flags::ZERO`] and [`Flags::STATISTICS`] for the block of `bytes` at `p` just handed
    /// out.
    #[cold]
    fn on_alloc(&mut self, arena: &Arena, p: *mut u8, bytes: usize) {
        if self.geo.flags.contains(Flags::ZERO) {
            // SAFETY: the block `p..p + bytes` was just handed out, lies in a chunk this client
            // holds, and nobody else refers to it.
            unsafe { p.write_bytes(0, bytes) };
        }
        if self.geo.flags.contains(Flags::STATISTICS) {
            arena.count_alloc(bytes);
            self.report_cached(arena);
        }
    }

    /// Brings the arena's count of cached bytes up to date ([`Flags::STATISTICS`]).
    #[cold]
    fn report_cached(&mut self, arena: &Arena) {
        let cached = self.cached_bytes();
        arena.count_cached(cached, self.cached_reported);
        self.cached_reported = cached;
    }

    /// Asks the other clients to trim at their next free or cache miss (this one need not: it is
    /// about to give back what helps, or has nothing that would).
    #[cold]
    fn ask_others_to_trim(&mut self, arena: &Arena) {
        let now = arena.request_trim();
        if self.seen_trims == now.wrapping_sub(1) {
            self.seen_trims = now;
        }
    }

    /// A held chunk got its first live block.
    #[inline]
    fn busy(&mut self, arena: &Arena) {
        self.idle_chunks -= 1;
        if self.geo.flags.contains(Flags::STATISTICS) {
            arena.count_pinned(0, 1);
        }
    }

    /// Held chunk `chunk` lost its last live block, or was taken.
    #[inline]
    fn idle(&mut self, arena: &Arena, chunk: u32) {
        if self.idle_chunks == 0 {
            self.kept_hint = chunk;
        }
        self.idle_chunks += 1;
        if self.geo.flags.contains(Flags::STATISTICS) {
            arena.count_pinned(1, 0);
        }
    }

    /// Takes a buddy block for `size` bytes aligned to `align` (over 16 bytes or over
    /// `SMALL_MAX` bytes), from the cache of its order or the free bitmaps, and marks its page
    /// live; returns its offset and size.
    #[inline]
    fn alloc_large(
        &mut self,
        arena: &Arena,
        id: u32,
        size: usize,
        align: usize,
    ) -> Result<(usize, usize)> {
        if align > self.geo.max_align {
            return Err(Error::UnsupportedAlignment {
                align,
                max: self.geo.max_align,
            });
        }
        if size > self.geo.max_block {
            if self.geo.max_block < 1 << self.geo.chunk_shift {
                // With guard pages, chunks are not contiguous memory.
                return Err(Error::TooLarge {
                    size,
                    max: self.geo.max_block,
                });
            }
            return self.alloc_run(arena, id, size);
        }
        let shift = self.geo.page_shift;
        // `size <= max_block`, so this does not overflow.
        let pages = (size + (1 << shift) - 1) >> shift;
        let order = pages.next_power_of_two().trailing_zeros();
        // A multiple of a sixteenth of `2^order` (at most `2^order`, so the order stays): the
        // tail cut off the power-of-two block is at most three pieces, and a cached block's
        // re-cut changes at most five (see `LENGTH_STEPS`).
        let step = (1 << order.saturating_sub(LENGTH_STEPS.trailing_zeros())) - 1;
        let pages = (pages + step) & !step;
        let bytes = pages << shift;
        self.check_quota(bytes)?;
        let min_order = (align >> shift).max(1).trailing_zeros();
        let order = order.max(min_order);
        let mut found = self.uncache_large(pages, order);
        // Past the checks of the request's shape, which change nothing, and only on a cache
        // miss (as for small blocks): blocks freed through the arena and trim requests are
        // taken in before the block is sought in the free bitmaps. Honouring a trim before a
        // cache hit would give back the very block that serves the request, which, with the
        // rest of its chunk in use, may leave no block of its order.
        if !matches!(found, Uncached::Hit(_)) && self.has_mail(arena) {
            self.poll(arena);
            found = self.uncache_large(pages, order);
        }
        let off = match found {
            Uncached::Hit(off) => off,
            Uncached::Miss => self.alloc_pages(arena, id, pages, min_order, bytes)?,
            Uncached::Stuck(stuck) => {
                let off = self.alloc_pages(arena, id, pages, min_order, bytes)?;
                self.evict_large(arena, order, stuck);
                off
            }
        };
        self.set_page(off >> shift, meta(LIVE, pages - 1));
        Ok((off, bytes))
    }

    /// The common free, kept small enough to inline into the caller: a block of this client
    /// (not a run) whose chunk keeps another live block, into its cache bin (a small block
    /// whose bin is full after the older half of the bin went back to the slabs, a buddy
    /// block whose bin is full into the free bitmaps), once the bins exist, without flags and
    /// with no mail or trim request waiting. Returns `None`, having changed nothing, for
    /// anything else ([`Client::free_slow`] handles it, errors included). It reads and writes
    /// what [`claim`](Self::claim) and [`free`](Self::free) do, in the same order, but for the
    /// remote-free bit: with an empty mailbox no free through the arena can have claimed the
    /// block (see below).
    #[inline(always)]
    fn free_quick(
        &mut self,
        arena: &Arena,
        owners: &[AtomicU32],
        id: u32,
        ptr: *const u8,
    ) -> Option<usize> {
        let off = ptr.addr().wrapping_sub(self.geo.base_addr);
        // One test for the range, the alignment (a misaligned offset rotates its low bits to
        // the top), the flags and the bins (`quick_units` is 0 with flags that need the full
        // path and until the bins exist).
        if off.rotate_right(MIN_BLOCK.trailing_zeros()) >= self.quick_units {
            return None;
        }
        let chunk = off >> self.geo.chunk_shift;
        // SAFETY: `off < len = nchunks << chunk_shift`, so `chunk < nchunks`, the length of
        // the owner table.
        if unsafe { owners.get_unchecked(chunk) }.load(crate::sync::Ordering::Relaxed) != id {
            return None;
        }
        let kib = self.marks.wrapping_add(start_word(off));
        // SAFETY: as in `claim`: the marks table covers the arena and is made of `AtomicU64`s.
        let word = unsafe { &*kib.cast::<core::sync::atomic::AtomicU64>() };
        let bits = word.load(core::sync::atomic::Ordering::Relaxed);
        let bit = 1u64 << ((off >> 4) & 63);
        // The remote-free bit is not read: a free through the arena claims the block and then
        // pushes it onto this client's mailbox, and only this thread empties the mailbox,
        // clearing the start bit before it releases the claim. So a claim made before this
        // call (the caller's promise rules out one at the same time) has either left the
        // mailbox non-empty, which sends this free to the full path below, or been taken
        // with its start bit cleared, which the test here refuses.
        if bits & bit == 0 {
            return None;
        }
        // SAFETY: as in `claim`: the metadata slot of `off`, next to its start-bit word, in a
        // chunk this client holds (the owner table says so).
        let meta = unsafe {
            *kib.add(1)
                .cast::<u16>()
                .add((off >> self.geo.page_shift) & self.geo.meta_mask)
        };
        // SAFETY: the owner table says this client holds `chunk`.
        let held = unsafe { HeldChunk::new_unchecked(chunk) };
        if self.info(held).live <= 1 || self.has_mail(arena) {
            return None;
        }
        // Slab blocks first, on one comparison, all the way to the end: the common case is
        // straight-line code, and every call it may make is its last step (nothing is kept
        // across it).
        if meta >= SLAB {
            word.store(bits & !bit, core::sync::atomic::Ordering::Relaxed);
            self.info(held).live -= 1;
            // A slab page's value is its class, below `CLASS_SLOTS`: the mask that keeps the
            // class's arrays in bounds is all it takes.
            let class = usize::from(meta) & (CLASS_SLOTS - 1);
            let bytes = class_size(class);
            self.room += bytes;
            self.frees += 1;
            // SAFETY: the range test passed, so `quick_units` is not 0: the bins exist.
            if unsafe { self.cache_small_quick(class, off) } {
                return Some(bytes);
            }
            return Some(self.spill_small_quick(arena, class, off));
        }
        if meta >= LIVE && !run::is_run(meta) {
            word.store(bits & !bit, core::sync::atomic::Ordering::Relaxed);
            self.info(held).live -= 1;
            return Some(self.free_pages_quick(arena, off, usize::from(meta & VALUE) + 1));
        }
        None
    }

    /// The quick free's [`spill_small`](Self::spill_small); returns the block's size.
    #[inline(never)]
    fn spill_small_quick(&mut self, arena: &Arena, class: usize, off: usize) -> usize {
        self.spill_small(arena, class, off);
        class_size(class)
    }

    /// The quick free of the live buddy block of `pages` pages at `off`, its start bit already
    /// cleared and its chunk's count of live blocks lowered: into the cache of its order, or
    /// back to the free bitmaps if that is full; returns its size.
    #[inline(never)]
    fn free_pages_quick(&mut self, arena: &Arena, off: usize, pages: usize) -> usize {
        if !self.cache_large(off, meta_slot(&self.geo, off), pages) {
            self.set_page(off >> self.geo.page_shift, 0);
            self.free_pages(arena, off, pages);
        }
        let bytes = pages << self.geo.page_shift;
        self.room += bytes;
        self.frees += 1;
        bytes
    }

    /// Frees the live block at `off`, in held chunk `chunk`, with page metadata `meta`
    /// (checked by `claim`, or taken from the mailbox); returns its size.
    #[inline(always)]
    fn free(&mut self, arena: &Arena, off: usize, chunk: HeldChunk, meta: u16) -> usize {
        let plain = !self.free_flags;
        let info = self.info(chunk);
        if meta >= SLAB && info.live > 1 && plain {
            // The common case: a small block of a chunk that stays busy, no flags.
            info.live -= 1;
            let class = usize::from(meta & VALUE);
            let bytes = class_size(class);
            self.keep_small(arena, class, off);
            self.room += bytes;
            self.frees += 1;
            return bytes;
        }
        self.free_other(arena, off, chunk, meta)
    }

    /// [`free`](Self::free) of anything but a small block of a chunk that stays busy without
    /// flags: a run, a buddy block, or a block whose chunk is left without a live block.
    #[inline(never)]
    fn free_other(&mut self, arena: &Arena, off: usize, chunk: HeldChunk, meta: u16) -> usize {
        if run::is_run(meta) {
            return self.free_run(arena, off);
        }
        let info = self.info(chunk);
        info.live -= 1;
        // A chunk left without a live block while another is kept already: it is not kept.
        let purge = info.live == 0 && {
            self.idle(arena, chunk_index(chunk.index()));
            self.idle_chunks > 1
        };
        let value = usize::from(meta & VALUE);
        let bytes = if meta & KIND == SLAB {
            let bytes = class_size(value);
            if self.free_flags {
                self.on_free(arena, off, bytes, core::mem::size_of::<FreeObj>());
            }
            if purge {
                self.free_small(arena, off, value, true);
            } else {
                self.keep_small(arena, value, off);
            }
            bytes
        } else {
            let bytes = (value + 1) << self.geo.page_shift;
            if self.free_flags {
                self.on_free(arena, off, bytes, 0);
            }
            if purge || !self.cache_large(off, meta_slot(&self.geo, off), value + 1) {
                self.set_page(off >> self.geo.page_shift, 0);
                self.free_pages(arena, off, value + 1);
            }
            bytes
        };
        self.room += bytes;
        self.frees += 1;
        if purge {
            self.purge(arena, chunk.index());
        }
        if self.free_flags && self.geo.flags.contains(Flags::STATISTICS) {
            self.report_cached(arena);
        }
        bytes
    }

    /// [`Flags::POISON`] (all but the first `keep` bytes) and [`Flags::STATISTICS`] for the
    /// block of `bytes` at `off` being freed.
    #[cold]
    fn on_free(&mut self, arena: &Arena, off: usize, bytes: usize, keep: usize) {
        if self.geo.flags.contains(Flags::POISON) {
            // SAFETY: the block is being freed: it lies in a chunk this client holds and the
            // caller of `free` promised not to use it again.
            unsafe { self.at(off + keep).write_bytes(POISON_BYTE, bytes - keep) };
        }
        if self.geo.flags.contains(Flags::STATISTICS) {
            arena.count_free(bytes, 1);
        }
    }

    /// Bytes in live blocks.
    #[inline]
    fn used(&self) -> usize {
        self.limit - self.room
    }

    /// Live blocks: every successful allocation not yet freed, counted from the records of
    /// the held chunks (a walk of the chunk list).
    fn live(&self) -> usize {
        let mut live = 0;
        let mut chunk = self.chunk_head;
        while chunk != NIL {
            // SAFETY: the chunk list links only chunks this client holds, whose records only
            // it touches; the table has one per chunk.
            let info = unsafe { &*self.info.add(chunk as usize) };
            live += info.live as usize;
            chunk = info.next;
        }
        live
    }

    fn stats(&self) -> ClientStats {
        let total = self.chunks << self.geo.chunk_shift;
        let mut largest = if self.mask == 0 {
            0
        } else {
            (1usize << (31 - self.mask.leading_zeros())) << self.geo.page_shift
        };
        for (class, slab) in self.partial.iter().enumerate() {
            if !slab.is_null() {
                largest = largest.max(usize::from(CLASSES[class]));
            }
        }
        largest = largest.max(self.largest_cached());
        let live = self.live();
        ClientStats {
            total_bytes: total,
            used_bytes: self.used(),
            free_bytes: total - self.used(),
            peak_used_bytes: self.limit - self.low_room,
            live_blocks: live,
            chunks: self.chunks,
            cached_chunks: self.empty_chunks,
            cached_bytes: self.cached_bytes(),
            cached_blocks: self.cached_blocks(),
            pinned_chunks: self.idle_chunks,
            pinned_bytes: self.idle_chunks << self.geo.chunk_shift,
            largest_free_block: largest,
            allocations: self.frees + u64::try_from(live).unwrap_or(u64::MAX),
            frees: self.frees,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::arena::{MARK_SHIFT, ORDERS};
    use crate::backing::Backing;
    use crate::config::Config;

    const CHUNK: usize = 64 << 10;

    fn arena(chunks: usize) -> Arena {
        let config = Config::new().with_chunk_size(CHUNK);
        Arena::new(Backing::heap(chunks * CHUNK, 4096).unwrap(), config).unwrap()
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// Frees `p` and empties the caches, so that the slabs and the buddy allocator see the
    /// free at once.
    fn free_uncached(client: &Client<'_>, p: NonNull<u8>) -> usize {
        // SAFETY: the callers never use `p` again.
        let size = unsafe { client.free(p) }.unwrap();
        let arena = client.arena;
        client.with(|s| s.flush(arena, false));
        size
    }

    impl Client<'_> {
        /// Checks the buddy bookkeeping of every held chunk: free bits agree with summaries
        /// and order lists, no two free buddies are left unmerged, and free plus used pages
        /// cover each chunk's usable pages.
        fn check(&self) {
            self.with(|s| {
                let geo = s.geo;
                let mut chunk = s.chunk_head;
                let mut seen = 0;
                let mut empty = 0;
                while chunk != NIL {
                    let words = s.free_words(State::listed(chunk));
                    let mut free_pages = 0;
                    for order in 0..=geo.max_order {
                        let count = 1usize << (geo.max_order - order);
                        let mut any = false;
                        for index in 0..count {
                            if s.is_free(State::listed(chunk), order, index) {
                                any = true;
                                free_pages += 1 << order;
                                if order < geo.max_order {
                                    assert!(
                                        !s.is_free(State::listed(chunk), order, index ^ 1),
                                        "unmerged buddies"
                                    );
                                }
                                // No free block overlaps a free block of another order.
                                for up in order + 1..=geo.max_order {
                                    assert!(!s.is_free(
                                        State::listed(chunk),
                                        up,
                                        index >> (up - order)
                                    ));
                                }
                            }
                        }
                        // SAFETY: the summary word of `order` of a held chunk.
                        let summary = unsafe { *words.add(order as usize) };
                        assert_eq!(summary != 0, any, "summary of order {order}");
                        let mut on_list = false;
                        let mut at = s.heads[order as usize];
                        while at != NIL {
                            on_list |= at == chunk;
                            at = s.info(State::listed(at)).order_next[order as usize];
                        }
                        assert_eq!(on_list, any, "list of order {order}");
                    }
                    let used = s.info(State::listed(chunk)).used;
                    assert_eq!(
                        (free_pages << geo.page_shift) + used,
                        geo.usable_pages << geo.page_shift
                    );
                    empty += usize::from(used == 0);
                    seen += 1;
                    chunk = s.info(State::listed(chunk)).next;
                }
                assert_eq!(seen, s.chunks);
                assert_eq!(empty, s.empty_chunks);
                for order in 0..ORDERS {
                    assert_eq!(s.mask & (1 << order) != 0, s.heads[order] != NIL);
                }
            });
        }
    }

    #[test]
    fn alloc_pages_tail_returns_as_free_blocks() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        // 5 pages take an 8-page block and give 3 back.
        let (_, size) = client.alloc_sized(layout(5 * 256)).unwrap();
        assert_eq!(size, 5 * 256);
        client.check();
        let s = client.stats();
        assert_eq!(s.total_bytes - s.used_bytes, CHUNK - 5 * 256);
    }

    #[test]
    fn free_pages_merges_back_to_whole_chunk() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        // 8 + 32 + 16 + 4 KiB buddy blocks, trimmed, all in one chunk.
        let blocks: Vec<_> = [5000, 20_000, 9000, 3000]
            .iter()
            .map(|&size| client.alloc(layout(size)).unwrap())
            .collect();
        assert_eq!(client.stats().chunks, 1);
        client.check();
        for p in blocks {
            free_uncached(&client, p);
            client.check();
        }
        let stats = client.stats();
        assert_eq!(stats.largest_free_block, CHUNK, "merged back to one block");
        assert_eq!((stats.chunks, stats.cached_chunks), (1, 1));
    }

    #[test]
    fn free_pages_tail_taken_frees_pieces_and_merges_later() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        // 3 pages take a 4-page block and give its last page back; 1 page takes that page.
        // (Alignment 256 sends these small sizes to the buddy allocator.)
        let paged = |pages: usize| Layout::from_size_align(pages * 256, 256).unwrap();
        let three = client.alloc(paged(3)).unwrap();
        let one = client.alloc(paged(1)).unwrap();
        assert_eq!(one.as_ptr(), three.as_ptr().wrapping_add(3 * 256));
        free_uncached(&client, three);
        client.check();
        assert_eq!(client.stats().used_bytes, 256);
        free_uncached(&client, one);
        client.check();
        assert_eq!(
            client.stats().largest_free_block,
            CHUNK,
            "merged back to one block"
        );
    }

    /// Whether every word is zero, compared a slice at a time with zeros: one comparison of
    /// memory instead of a loop over each word, which Miri would interpret step by step.
    fn all_zero(words: &[u64]) -> bool {
        const ZEROS: [u64; 512] = [0; 512];
        words.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
    }

    #[test]
    fn buddy_blocks_round_to_a_sixteenth_of_their_power_of_two() {
        // A buddy block of `n` pages over 16 takes a multiple of a sixteenth of the power of
        // two at or above `n` (so that a cut's tail is at most three pieces and a re-cut
        // changes at most five): at most an eighth of the block above its size rounded to a
        // page.
        let arena = arena(4);
        let page = 1usize << arena.geometry().page_shift;
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let stride = if cfg!(miri) { 509 } else { 7 };
        for size in (2049..=CHUNK).step_by(stride).chain([CHUNK]) {
            let pages = size.div_ceil(page);
            let step = (pages.next_power_of_two() >> 4).max(1);
            let want = pages.div_ceil(step) * step * page;
            let (p, got) = client.alloc_sized(layout(size)).unwrap();
            assert_eq!(got, want, "size {size}");
            assert_eq!(client.size_of(p.as_ptr()), Ok(want), "size {size}");
            assert!(got - pages * page < pages * page / 8, "size {size}");
            assert_eq!(free_uncached(&client, p), want, "size {size}");
        }
        client.check();
    }

    #[test]
    fn alloc_free_large_pages_keep_marks_apart() {
        // 2 MiB and 4 MiB chunks have 512-byte and 1 KiB pages: two pages, then one page, per
        // KiB of page metadata. Under Miri, which interprets every metadata write, 2 MiB only:
        // `slab_metadata_of_every_class_and_page_size_reads_back_and_clears` covers 1 KiB pages.
        let chunks: &[usize] = if cfg!(miri) {
            &[2 << 20]
        } else {
            &[2 << 20, 4 << 20]
        };
        for &chunk in chunks {
            let config = Config::new().with_chunk_size(chunk);
            let arena = Arena::new(Backing::heap(chunk, 4096).unwrap(), config).unwrap();
            let page = 1usize << arena.geometry().page_shift;
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let sizes = [page, 3 * page, 40, page + 1, 2000, 5 * page];
            let blocks: Vec<_> = sizes
                .iter()
                .map(|&size| client.alloc_sized(layout(size)).unwrap())
                .collect();
            client.check();
            for (&(p, size), &asked) in blocks.iter().zip(&sizes) {
                assert!(size >= asked);
                assert_eq!(client.size_of(p.as_ptr()), Ok(size));
                assert!(!client.owns(p.as_ptr().wrapping_add(16)));
            }
            for (p, size) in blocks {
                // SAFETY: never used again.
                assert_eq!(unsafe { client.free(p) }, Ok(size));
                client.check();
            }
            assert_eq!(client.stats().used_bytes, 0);
        }
    }

    #[test]
    fn slab_blocks_in_pages_over_a_kib_find_their_metadata() {
        // 8 and 16 MiB chunks have 2 and 4 KiB pages: a slab block may lie in another KiB
        // than its page's start. Under Miri, 16 MiB only, with fewer blocks (still several
        // slabs of each size).
        let chunks: &[usize] = if cfg!(miri) {
            &[16 << 20]
        } else {
            &[8 << 20, 16 << 20]
        };
        let count = if cfg!(miri) { 60 } else { 200 };
        for &chunk in chunks {
            let config = Config::new().with_chunk_size(chunk);
            let arena = Arena::new(Backing::heap(chunk, 4096).unwrap(), config).unwrap();
            assert!(arena.geometry().page_shift > MARK_SHIFT);
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let blocks: Vec<_> = (0..count)
                .map(|i| client.alloc_sized(layout([48, 1000, 2048][i % 3])).unwrap())
                .collect();
            for &(p, size) in &blocks {
                assert_eq!(client.size_of(p.as_ptr()), Ok(size));
                assert!(!client.owns(p.as_ptr().wrapping_add(16)));
            }
            for (p, size) in blocks {
                assert_eq!(free_uncached(&client, p), size);
                assert!(client.size_of(p.as_ptr()).is_err());
            }
            client.check();
            let kept: usize = client.with(|s| s.empty_slabs.iter().map(|&n| n as usize).sum());
            assert_eq!(kept, 3, "one empty slab kept per class");
            // Giving those back too leaves no metadata behind in any KiB.
            client.with(|s| s.flush(&arena, true));
            let words = arena.geometry().marks_per_chunk;
            // SAFETY: the chunk's words of the marks table, read while nothing writes them.
            let marks = unsafe { core::slice::from_raw_parts(arena.marks_ptr(), words) };
            assert!(all_zero(marks));
        }
    }

    #[test]
    fn slab_metadata_of_every_class_and_page_size_reads_back_and_clears() {
        // Pages of 256 B to 4 KiB: one to four metadata slots a KiB, slabs of whole KiBs
        // (written a word at a time) and smaller. Under Miri, the four- and one-slot cases;
        // `alloc_free_large_pages_keep_marks_apart` covers 512-byte pages and
        // `slab_blocks_in_pages_over_a_kib_find_their_metadata` 4 KiB pages there.
        let chunks: &[usize] = if cfg!(miri) {
            &[256 << 10, 4 << 20]
        } else {
            &[256 << 10, 2 << 20, 4 << 20, 16 << 20]
        };
        for &chunk in chunks {
            let config = Config::new().with_chunk_size(chunk);
            let arena = Arena::new(Backing::heap(16 << 20, 4096).unwrap(), config).unwrap();
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let mut blocks = Vec::new();
            // Every multiple of 16 natively; under Miri, which interprets each metadata write,
            // each class's own size (every class still, in a fifth of the time).
            let sizes: Vec<usize> = if cfg!(miri) {
                CLASSES.iter().map(|&size| usize::from(size)).collect()
            } else {
                (16..=SMALL_MAX).step_by(16).collect()
            };
            for size in sizes {
                for _ in 0..3 {
                    blocks.push(client.alloc_sized(layout(size)).unwrap());
                }
            }
            for &(p, size) in &blocks {
                assert_eq!(client.size_of(p.as_ptr()), Ok(size), "chunk {chunk}");
                assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
            }
            for (p, size) in blocks {
                assert_eq!(free_uncached(&client, p), size);
            }
            client.check();
            client.with(|s| s.flush(&arena, true));
            let words = arena.geometry().marks_per_chunk * arena.geometry().nchunks;
            // SAFETY: the marks table, read while nothing writes it.
            let marks = unsafe { core::slice::from_raw_parts(arena.marks_ptr(), words) };
            assert!(all_zero(marks), "chunk {chunk}");
        }
    }

    #[test]
    fn slab_blocks_start_at_slab_start_and_fill_it() {
        // Nothing of a slab's memory is kept for bookkeeping: its first block is at its start
        // and its blocks fill it to within one block.
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let class = class_of(48);
        let cap = arena.geometry().slab_cap[class] as usize;
        let slab_bytes =
            (1usize << arena.geometry().slab_order[class]) << arena.geometry().page_shift;
        assert_eq!(cap, slab_bytes / 48);
        let blocks: Vec<_> = (0..cap)
            .map(|_| client.alloc(layout(48)).unwrap())
            .collect();
        let start = blocks[0].as_ptr().addr();
        let base = arena.geometry().base_addr;
        assert_eq!(
            (start - base) % slab_bytes,
            0,
            "first block at the slab's start"
        );
        for (i, p) in blocks.iter().enumerate() {
            assert_eq!(p.as_ptr().addr(), start + i * 48);
        }
        assert_eq!(client.stats().chunks, 1);
        for p in blocks {
            free_uncached(&client, p);
        }
        client.check();
    }

    #[test]
    fn slab_keeps_one_empty_slab_per_class() {
        let arena = arena(2);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let cap = arena.geometry().slab_cap[class_of(64)] as usize;
        let blocks: Vec<_> = (0..3 * cap)
            .map(|_| client.alloc(layout(64)).unwrap())
            .collect();
        let chunk_bytes_full = client.with(|s| s.info(State::listed(s.chunk_head)).used);
        assert_eq!(chunk_bytes_full, 3 * 8192);
        for p in blocks {
            free_uncached(&client, p);
        }
        client.check();
        let kept = client.with(|s| s.info(State::listed(s.chunk_head)).used);
        assert_eq!(kept, 8192, "one empty slab kept");
        assert_eq!(client.with(|s| s.empty_slabs[class_of(64)]), 1);
    }

    #[test]
    fn slab_of_few_blocks_is_given_blocks_back_without_writing_them() {
        // A slab of at most 64 blocks keeps which are free in its record: a block given back
        // to it is not written, and its free blocks are handed out lowest first.
        let arena = arena(2);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let _busy = client.alloc(layout(5000)).unwrap();
        for size in [128, 256, 1024] {
            let class = class_of(size);
            let cap = arena.geometry().slab_cap[class] as usize;
            assert!(cap <= 64, "size {size}");
            let blocks: Vec<_> = (0..cap)
                .map(|_| client.alloc(layout(size)).unwrap())
                .collect();
            for p in &blocks {
                // SAFETY: a live block of `size` bytes.
                unsafe { p.as_ptr().write_bytes(0xA5, size) };
            }
            let freed: Vec<usize> = (1..cap).step_by(2).collect();
            for &i in &freed {
                free_uncached(&client, blocks[i]);
            }
            for &i in &freed {
                // SAFETY: the block was given back to its slab; its bytes are still the
                // arena's, and only read.
                let bytes = unsafe { core::slice::from_raw_parts(blocks[i].as_ptr(), size) };
                assert!(bytes.iter().all(|&b| b == 0xA5), "size {size} block {i}");
            }
            let live = client.with(|s| {
                let (slab, _) = s.slab_of(blocks[0].as_ptr().addr() - s.geo.base_addr, class);
                // SAFETY: the slab of a live block of this client.
                unsafe { s.slab_live(slab, class) }
            });
            assert_eq!(live, cap - freed.len(), "size {size}");
            for &i in &freed {
                assert_eq!(
                    client.alloc(layout(size)).unwrap(),
                    blocks[i],
                    "size {size}"
                );
            }
        }
        client.check();
    }

    /// How many blocks a bin of `cap` entries holds after `frees` frees into it from empty:
    /// each free adds one, and a free that finds it full first gives back its older half.
    fn binned_after(cap: usize, frees: usize) -> usize {
        (0..frees).fold(0, |len, _| {
            if len == cap {
                len - len / 2 + 1
            } else {
                len + 1
            }
        })
    }

    #[test]
    fn free_quick_full_bin_spills_older_half_to_slab() {
        // A live block keeps the chunk busy, so every free below but the first (which makes
        // the bins) takes the quick path: the first ones fill the class's bin, then each free
        // that finds it full gives its older half back to the slab.
        let arena = arena(2);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let _busy = client.alloc(layout(5000)).unwrap();
        let cap = arena.geometry().slab_cap[class_of(32)] as usize;
        let blocks: Vec<_> = (0..cap)
            .map(|_| client.alloc(layout(32)).unwrap())
            .collect();
        assert_eq!(client.stats().chunks, 1);
        let slab_live = |client: &Client<'_>| {
            client.with(|s| {
                let (slab, _) =
                    s.slab_of(blocks[0].as_ptr().addr() - s.geo.base_addr, class_of(32));
                // SAFETY: the slab of a live (or cached) block of this client.
                unsafe { s.slab_live(slab, class_of(32)) }
            })
        };
        assert_eq!(slab_live(&client), cap);
        let bin_cap = cache::small_cap(class_of(32));
        assert!(bin_cap < cap);
        // Some blocks stay live, so that the bin ends neither full nor half full.
        let freed = cap - bin_cap / 8;
        let binned = binned_after(bin_cap, freed);
        assert!(binned > bin_cap / 2 + 1 && binned < bin_cap);
        for &p in &blocks[..freed] {
            // SAFETY: never used again.
            assert_eq!(unsafe { client.free(p) }, Ok(32));
        }
        let stats = client.stats();
        assert_eq!(stats.cached_bytes, binned * 32);
        assert_eq!(stats.live_blocks, 1 + cap - freed);
        assert_eq!(
            slab_live(&client),
            binned + cap - freed,
            "the others are back in the slab"
        );
        client.check();
        // The bin hands its blocks out again, then the slab the rest.
        let again: Vec<_> = (0..freed)
            .map(|_| client.alloc(layout(32)).unwrap())
            .collect();
        assert_eq!(client.stats().cached_bytes, 0);
        assert_eq!(slab_live(&client), cap);
        assert_eq!(client.stats().chunks, 1);
        client.check();
        drop(again);
    }

    #[test]
    fn spill_keeps_newer_half_and_freed_block_in_bin_order() {
        let arena = arena(2);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let _busy = client.alloc(layout(5000)).unwrap();
        let class = class_of(48);
        let bin_cap = cache::small_cap(class);
        let blocks: Vec<_> = (0..=bin_cap)
            .map(|_| client.alloc(layout(48)).unwrap())
            .collect();
        let offs: Vec<usize> = client.with(|s| {
            blocks
                .iter()
                .map(|p| p.as_ptr().addr() - s.geo.base_addr)
                .collect()
        });
        for &p in &blocks[..bin_cap] {
            // SAFETY: never used again.
            unsafe { client.free(p) }.unwrap();
        }
        let bin = |client: &Client<'_>| client.with(|s| s.cache_entries(class));
        assert_eq!(bin(&client), offs[..bin_cap], "full, oldest first");
        let slab_free = |client: &Client<'_>| {
            client.with(|s| {
                let (slab, _) = s.slab_of(offs[0], class);
                // SAFETY: the slab of cached blocks of this client.
                unsafe { s.slab_live(slab, class) }
            })
        };
        let live_before = slab_free(&client);
        // SAFETY: never used again.
        unsafe { client.free(blocks[bin_cap]) }.unwrap();
        let half = bin_cap / 2;
        let mut kept = offs[half..bin_cap].to_vec();
        kept.push(offs[bin_cap]);
        assert_eq!(bin(&client), kept, "the newer half, then the freed block");
        assert_eq!(client.stats().cached_bytes, kept.len() * 48);
        assert_eq!(slab_free(&client), live_before - half);
        client.check();
        // The spilled blocks are free in their slab: none of them is cached, and each is
        // handed out again once the bin is empty, as a live block.
        let again: Vec<_> = (0..=bin_cap)
            .map(|_| client.alloc(layout(48)).unwrap())
            .collect();
        let mut got: Vec<usize> = client.with(|s| {
            again
                .iter()
                .map(|p| p.as_ptr().addr() - s.geo.base_addr)
                .collect()
        });
        got.sort_unstable();
        let mut all = offs.clone();
        all.sort_unstable();
        assert_eq!(got, all, "every freed block comes back exactly once");
        assert_eq!(client.stats().cached_bytes, 0);
        client.check();
    }

    #[test]
    fn cache_bins_made_at_first_free() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let p = client.alloc(layout(40)).unwrap();
        client.alloc(layout(5000)).unwrap();
        assert!(client.with(|s| s.cache.is_none()));
        assert_eq!(client.stats().cached_bytes, 0);
        // SAFETY: never used again.
        unsafe { client.free(p) }.unwrap();
        assert!(client.with(|s| s.cache.is_some()));
        assert_eq!(client.stats().cached_bytes, 48);
    }

    #[test]
    fn cache_large_reuse_other_size_retrims_tail() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let paged = |pages: usize| Layout::from_size_align(pages * 256, 256).unwrap();
        let most: usize = if cfg!(miri) { 8 } else { 64 };
        let same_order = (1..=most).flat_map(|had| {
            (1..=most)
                .filter(move |&w| w.next_power_of_two() == had.next_power_of_two())
                .map(move |w| (had, w))
        });
        for (had, wanted) in same_order {
            // Lengths are multiples of a sixteenth of their power of two.
            let length = |pages: usize| {
                let step = (pages.next_power_of_two() / LENGTH_STEPS).max(1);
                pages.div_ceil(step) * step
            };
            let p = client.alloc(paged(had)).unwrap();
            // SAFETY: never used again.
            unsafe { client.free(p) }.unwrap();
            assert_eq!(client.stats().cached_bytes, length(had) * 256);
            client.check();
            let (q, size) = client.alloc_sized(paged(wanted)).unwrap();
            assert_eq!(
                (q, size),
                (p, length(wanted) * 256),
                "{had} -> {wanted} pages"
            );
            assert_eq!(client.stats().cached_bytes, 0);
            client.check();
            free_uncached(&client, q);
            client.check();
        }
        assert_eq!(client.stats().largest_free_block, CHUNK);
    }

    #[test]
    fn cache_large_tail_in_use_gives_block_back() {
        let arena = arena(1);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let paged = |pages: usize| Layout::from_size_align(pages * 256, 256).unwrap();
        // 5 pages leave pages 5 (one page) and 6..8 free; the cached block keeps that tail.
        let five = client.alloc(paged(5)).unwrap();
        // SAFETY: never used again.
        unsafe { client.free(five) }.unwrap();
        // One page takes page 5, the tail's first piece.
        let one = client.alloc(paged(1)).unwrap();
        assert_eq!(one.as_ptr(), five.as_ptr().wrapping_add(5 * 256));
        client.check();
        // Six pages cannot grow the cached block: it goes back, and six pages come from the
        // free blocks.
        let (six, size) = client.alloc_sized(paged(6)).unwrap();
        assert_eq!(size, 6 * 256);
        assert_ne!(six, five);
        assert_eq!(client.stats().cached_bytes, 0);
        client.check();
        free_uncached(&client, six);
        free_uncached(&client, one);
        client.check();
        assert_eq!(client.stats().largest_free_block, CHUNK);
    }

    #[test]
    fn cache_flush_would_free_matches_flush() {
        // Random frees into the caches of a full arena; then, for every order, the dry run
        // says whether a flush frees a block of that order, and a flush on a copy of the
        // decision agrees.
        let mut seen = [0; 2];
        for seed in 1..if cfg!(miri) { 3 } else { 40 } {
            let arena = arena(2);
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let mut live = Vec::new();
            let mut x = 0x2545_F491_4F6C_DD1Du64 ^ seed;
            loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = 1 + (x >> 8) as usize % if x.is_multiple_of(3) { 20_000 } else { 1500 };
                match client.alloc(layout(size)) {
                    Ok(p) => live.push(p),
                    Err(_) => break,
                }
            }
            for (i, p) in live.into_iter().enumerate() {
                if (i as u64 ^ seed).is_multiple_of(3) {
                    // SAFETY: never used again.
                    unsafe { client.free(p) }.unwrap();
                }
            }
            client.check();
            let predicted: Vec<bool> = (0..=arena.geometry().max_order)
                .map(|order| client.with(|s| s.mask >> order == 0 && s.flush_would_free(order)))
                .collect();
            let had: Vec<bool> = (0..=arena.geometry().max_order)
                .map(|order| client.with(|s| s.mask >> order != 0))
                .collect();
            let arena_ref = client.arena;
            client.with(|s| s.flush(arena_ref, true));
            client.check();
            for order in 0..=arena.geometry().max_order as usize {
                if !had[order] {
                    let now = client.with(|s| s.mask >> order != 0);
                    assert_eq!(predicted[order], now, "seed {seed} order {order}");
                    seen[usize::from(now)] += 1;
                }
            }
        }
        if !cfg!(miri) {
            assert!(seen[0] > 0 && seen[1] > 0, "both answers seen: {seen:?}");
        }
    }

    /// The dry run before a flush visits the client's partial slabs at most once, not once
    /// per block it would give back: with thousands of partly used slabs of the class whose
    /// empty slab is kept, and a few dozen cached buddy blocks, it costs the slabs plus the
    /// square of the blocks, where a walk of the partial list for each cached block cost
    /// their product (a few hundred million slab records for a client of a GiB of small
    /// blocks, at every allocation that ran out of chunks).
    #[test]
    fn flush_would_free_walks_partial_slabs_once() {
        let partial = if cfg!(miri) { 16 } else { 2_000 };
        let class = class_of(2048);
        let arena = arena(partial / 2 + 16);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let arena_ref = client.arena;
        // Full slabs of the class, then one block freed in each but the last, whose blocks
        // are all freed: `partial` partly used slabs and the kept empty one.
        let mut slabs: Vec<Vec<NonNull<u8>>> = Vec::new();
        let mut last = ptr::null_mut();
        while slabs.len() < partial + 1 || slabs.last().unwrap().len() < 2 {
            let p = client.alloc(layout(2048)).unwrap();
            let off = p.as_ptr().addr() - arena.backing().as_ptr().addr();
            let slab = client.with(|s| s.slab_of(off, class).0);
            if slab != last {
                slabs.push(Vec::new());
                last = slab;
            }
            slabs.last_mut().unwrap().push(p);
        }
        // The last slab may be partly used only: it is left alone.
        let unfilled = slabs.pop().unwrap();
        let empty = slabs.pop().unwrap();
        for slab in &slabs {
            // SAFETY: never used again.
            unsafe { client.free(slab[0]) }.unwrap();
        }
        for &p in &empty {
            // SAFETY: never used again.
            unsafe { client.free(p) }.unwrap();
        }
        client.with(|s| s.flush(arena_ref, false));
        assert_eq!(client.with(|s| s.empty_slabs[class]), 1);
        // Cached buddy blocks of two orders, each beside a live block, so that no flush
        // frees a whole chunk and the dry run looks at every one of them.
        let pairs = if cfg!(miri) { 4 } else { 16 };
        let mut live = Vec::new();
        for size in [4096, 8192] {
            let blocks: Vec<_> = (0..2 * pairs)
                .map(|_| client.alloc(layout(size)).unwrap())
                .collect();
            for pair in blocks.chunks(2) {
                live.push(pair[0]);
                // SAFETY: never used again.
                unsafe { client.free(pair[1]) }.unwrap();
            }
        }
        if !cfg!(miri) {
            client.check();
        }
        let cached = 2 * pairs;
        assert_eq!(client.with(|s| s.cached_large), pairs * (4096 + 8192));
        let order = arena.geometry().max_order;
        let (would, visits) = client.with(|s| {
            s.flush_visits.set(0);
            (s.flush_would_free(order), s.flush_visits.get())
        });
        assert!(!would, "every chunk keeps a live block");
        // Each block given back (the cached ones and the empty slab) at most once per block
        // given back, and the partial list once.
        let blocks = cached + 1;
        let bound = partial + 1 + (blocks + 1) * (blocks + 1);
        assert!(visits <= bound, "{visits} visits, more than {bound}");
        client.with(|s| s.flush(arena_ref, true));
        if !cfg!(miri) {
            client.check();
        }
        assert_eq!(client.with(|s| s.empty_slabs[class]), 0);
        for p in live {
            // SAFETY: never used again.
            unsafe { client.free(p) }.unwrap();
        }
        for p in slabs.iter().flat_map(|slab| &slab[1..]).chain(&unfilled) {
            // SAFETY: never used again.
            unsafe { client.free(*p) }.unwrap();
        }
        client.trim();
        assert_eq!(client.stats().chunks, 0);
    }

    #[test]
    fn random_ops_keep_buddy_invariants() {
        let arena = arena(4);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let mut live = Vec::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let steps = if cfg!(miri) { 30 } else { 3000 };
        for _ in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || live.is_empty() {
                let size = 1 + (x >> 8) as usize % if x.is_multiple_of(5) { 40_000 } else { 3000 };
                if let Ok(p) = client.alloc(layout(size)) {
                    live.push(p);
                }
            } else {
                let p = live.swap_remove((x >> 8) as usize % live.len());
                // SAFETY: never used again.
                unsafe { client.free(p) }.unwrap();
            }
            if x.is_multiple_of(if cfg!(miri) { 4 } else { 16 }) {
                client.check();
            }
        }
        for p in live {
            // SAFETY: never used again.
            unsafe { client.free(p) }.unwrap();
        }
        client.check();
        assert_eq!(client.stats().used_bytes, 0);
    }

    /// The figures the allocation and free paths do not count themselves (allocations, cached
    /// bytes of small blocks), against a model, over random small, buddy and whole-chunk blocks,
    /// some freed through the arena (counted live until taken in), with and without flags.
    #[test]
    fn stats_match_a_model_with_and_without_flags() {
        for flags in [
            Flags::empty(),
            Flags::STATISTICS,
            Flags::ZERO,
            Flags::POISON | Flags::STATISTICS,
        ] {
            let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
            let arena = Arena::new(Backing::heap(16 * CHUNK, 4096).unwrap(), config).unwrap();
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let (mut allocs, mut frees) = (0u64, 0u64);
            let mut mailed = 0usize;
            let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let steps = if cfg!(miri) { 60 } else { 4000 };
            for step in 0..steps {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !x.is_multiple_of(3) || live.is_empty() {
                    let size = 1
                        + (x >> 8) as usize
                            % match x % 16 {
                                0 => 2 * CHUNK,
                                1..=3 => 8 << 10,
                                _ => 1024,
                            };
                    if let Ok((p, bytes)) = client.alloc_sized(layout(size)) {
                        live.push((p, bytes));
                        allocs += 1;
                    }
                } else {
                    let (p, bytes) = live.swap_remove((x >> 8) as usize % live.len());
                    if x.is_multiple_of(7) {
                        // SAFETY: a live block of the client, never used again.
                        unsafe { arena.free(p) }.unwrap();
                        mailed += 1;
                    } else {
                        // SAFETY: as above.
                        assert_eq!(unsafe { client.free(p) }.unwrap(), bytes);
                        frees += 1;
                    }
                }
                if step % 64 == 0 || step + 1 == steps {
                    let stats = client.stats();
                    // Blocks in the mailbox count as live and used until taken in (at the next
                    // free or cache miss), which the model cannot tell apart: compare the sums.
                    let taken = usize::try_from(stats.frees - frees).unwrap();
                    assert!(taken <= mailed, "{flags:?} step {step}");
                    assert_eq!(stats.live_blocks, live.len() + (mailed - taken));
                    assert_eq!(stats.allocations, allocs, "{flags:?} step {step}");
                    assert_eq!(
                        stats.allocations,
                        stats.frees + stats.live_blocks as u64,
                        "{flags:?}"
                    );
                    assert!(stats.peak_used_bytes >= stats.used_bytes, "{flags:?}");
                    let cached = client.with(|s| {
                        let bins: usize = (0..NCLASSES)
                            .map(|class| s.cache_entries(class).len() * class_size(class))
                            .sum();
                        bins + s.cached_large
                    });
                    assert_eq!(stats.cached_bytes, cached, "{flags:?} step {step}");
                    if flags.contains(Flags::STATISTICS) {
                        assert_eq!(arena.stats().cached_bytes, Some(stats.cached_bytes));
                        assert_eq!(arena.stats().live_blocks, Some(stats.live_blocks));
                    }
                }
            }
            // Taking in the mail makes the model exact again.
            client.trim();
            let stats = client.stats();
            assert_eq!(
                stats.frees,
                frees + u64::try_from(mailed).unwrap(),
                "{flags:?}"
            );
            assert_eq!(stats.live_blocks, live.len(), "{flags:?}");
            assert_eq!(stats.cached_bytes, 0, "{flags:?}");
            let used_now: usize = live.iter().map(|&(_, bytes)| bytes).sum();
            assert_eq!(stats.used_bytes, used_now, "{flags:?}");
            for (p, _) in live {
                // SAFETY: never used again.
                unsafe { client.free(p) }.unwrap();
            }
            let stats = client.stats();
            assert_eq!((stats.live_blocks, stats.used_bytes), (0, 0), "{flags:?}");
            assert_eq!(stats.allocations, stats.frees, "{flags:?}");
        }
    }

    /// The peak of the used bytes is exact when every free is the client's own, with and
    /// without flags (the allocation path tests a new peak and the flags in one comparison).
    #[test]
    fn peak_used_bytes_is_exact_with_and_without_flags() {
        for flags in [Flags::empty(), Flags::ZERO, Flags::STATISTICS] {
            let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
            let arena = Arena::new(Backing::heap(8 * CHUNK, 4096).unwrap(), config).unwrap();
            let client = arena.create_client(Quota::bytes(4 * CHUNK)).unwrap();
            let (mut used, mut peak) = (0usize, 0usize);
            let mut live = Vec::new();
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..if cfg!(miri) { 40 } else { 2000 } {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !x.is_multiple_of(3) || live.is_empty() {
                    let size = 1 + (x >> 8) as usize % if x.is_multiple_of(4) { 9000 } else { 600 };
                    if let Ok((p, bytes)) = client.alloc_sized(layout(size)) {
                        live.push((p, bytes));
                        used += bytes;
                        peak = peak.max(used);
                    }
                } else {
                    let (p, bytes) = live.swap_remove((x >> 8) as usize % live.len());
                    // SAFETY: never used again.
                    unsafe { client.free(p) }.unwrap();
                    used -= bytes;
                }
                let stats = client.stats();
                assert_eq!(stats.used_bytes, used, "{flags:?}");
                assert_eq!(stats.peak_used_bytes, peak, "{flags:?}");
            }
            for (p, _) in live {
                // SAFETY: never used again.
                unsafe { client.free(p) }.unwrap();
            }
            assert_eq!(client.stats().peak_used_bytes, peak, "{flags:?}");
        }
    }
}
