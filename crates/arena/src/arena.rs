//! [`Arena`]: one region of backing memory cut into chunks, handed out to clients.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;

use crate::backing::Backing;
use crate::chunks::{ChunkSet, NIL};
use crate::classes::{self, CLASS_SLOTS, MIN_SLAB, NCLASSES};
use crate::client::{Client, Mailbox, NO_SLAB, Slab};
use crate::client_ids::ClientIds;
use crate::config::{Config, Flags, MAX_CHUNK_SIZE, MIN_BLOCK, MIN_CHUNK_SIZE, Quota};
use crate::error::{Error, Exhausted, HostTable, Result};

/// A test's hold on [`Arena::decommit_free_chunks`] (see `Arena::hold_decommit`).
#[cfg(all(test, feature = "std"))]
type HoldDecommit = Box<dyn Fn(usize) + Send>;

// A test's pause in `Arena::owner_of` on its own thread, between the first read of the chunk's
// owner and the read of the block's bits: runs once, then is gone.
#[cfg(all(test, feature = "std"))]
std::thread_local! {
    static OWNER_OF_PAUSE: core::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { core::cell::RefCell::new(None) };
}

// A test's pause in `Arena::owner_of` on its own thread, between the read of the block's bits
// and the second read of the chunk's owner: runs once, then is gone.
#[cfg(all(test, feature = "std"))]
std::thread_local! {
    static OWNER_OF_PAUSE_AFTER_BITS: core::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { core::cell::RefCell::new(None) };
}

// A caller's test's pause in `Arena::free` on its own thread, once the block is claimed and
// before it goes into its holder's mailbox: runs once, then is gone.
#[cfg(feature = "test-pauses")]
std::thread_local! {
    static FREE_PAUSE: core::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { core::cell::RefCell::new(None) };
}

/// A chunk record's `prev` while a run is being taken: this call committed the chunk (so a
/// refusal further on decommits it again). Never a chunk index: an arena has fewer than
/// `2^29` chunks (its slab units, at least 8 per chunk, are indexed by `u32`).
const COMMITTED_BY_RUN: u32 = NIL - 1;
use crate::remote_bits::RemoteBits;
use crate::sync::{AtomicPtr, AtomicU32, AtomicUsize, DecommitWait, Ordering, fence};
use crate::table;

/// Smallest buddy page: large blocks are whole numbers of pages.
pub(crate) const MIN_PAGE_SHIFT: u32 = 8;
/// At most `2^MAX_ORDER` buddy pages per chunk, so that each order's free bitmap has at most 64
/// words and one summary word covers it (and a page count fits the page metadata).
pub(crate) const MAX_ORDER: u32 = 12;
/// log2 of the buddy page of chunks of `2^chunk_shift` bytes.
pub(crate) const fn page_shift(chunk_shift: u32) -> u32 {
    let shift = chunk_shift.saturating_sub(MAX_ORDER);
    if shift > MIN_PAGE_SHIFT {
        shift
    } else {
        MIN_PAGE_SHIFT
    }
}

/// The most chunks of `2^chunk_shift` bytes an arena uses, whatever its backing's length:
/// slab records are indexed by `u32`, so at most `u32::MAX - 1` slab units (32 TiB of them,
/// or more with pages over 8 KiB) are used, the rest is left alone like any tail. (A slab
/// unit, 8 KiB or a page of at most a 16th of a chunk, is below the chunk: the shift is
/// positive.)
pub(crate) const fn max_chunks(chunk_shift: u32) -> usize {
    (NO_SLAB as usize - 1) >> (chunk_shift - slab_unit_shift(page_shift(chunk_shift)))
}

/// log2 of the slab unit with buddy pages of `2^page_shift` bytes: [`MIN_SLAB`], or a page if
/// that is larger.
const fn slab_unit_shift(page_shift: u32) -> u32 {
    if page_shift > MIN_SLAB.trailing_zeros() {
        page_shift
    } else {
        MIN_SLAB.trailing_zeros()
    }
}

/// The largest block any arena can hand out, whatever its configuration and backing: a run of
/// every chunk the largest arena of chunks of one size uses (the chunks whose slab units a
/// `u32` indexes, at most the `2^28 - 1` a run records, and at most `isize::MAX` bytes of
/// them), for the size that makes it largest: 64 TiB less one 64 MiB chunk with 64-bit pointers
/// (of 64 MiB chunks), 2 GiB less one 64 KiB chunk with 32-bit ones (of 64 KiB chunks), which
/// `isize::MAX` bounds. [`Client::alloc`](crate::Client::alloc) refuses
/// any larger size with [`Error::TooLarge`] in every arena, so a caller can refuse it without one.
pub const MAX_BLOCK_SIZE: usize = {
    let mut largest = 0;
    let mut chunk_shift = MIN_CHUNK_SIZE.trailing_zeros();
    while chunk_shift <= MAX_CHUNK_SIZE.trailing_zeros() {
        let mut chunks = max_chunks(chunk_shift);
        if chunks > crate::client::MAX_RUN {
            chunks = crate::client::MAX_RUN;
        }
        if chunks > isize::MAX as usize >> chunk_shift {
            chunks = isize::MAX as usize >> chunk_shift;
        }
        if chunks << chunk_shift > largest {
            largest = chunks << chunk_shift;
        }
        chunk_shift += 1;
    }
    largest
};

/// log2 of the bytes whose block-start bits and page metadata share a pair of words of the
/// marks table (so a block's start bit and its page's metadata share a cache line).
pub(crate) const MARK_SHIFT: u32 = 10;
const _: () = assert!(MIN_BLOCK * 64 == 1 << MARK_SHIFT, "one start word per KiB");

/// Index, in the marks table seen as `u16`s, of the metadata slot for byte offset `off`: the
/// second word of the KiB of `off`, at the `u16` of the page `off` lies in (the first with
/// pages of 1 KiB or more). For a page's own metadata, `off` is the page's start.
#[inline]
pub(crate) fn meta_slot(geo: &Geometry, off: usize) -> usize {
    (((off >> MARK_SHIFT) << 1 | 1) << 2) | ((off >> geo.page_shift) & geo.meta_mask)
}

/// Index, in the marks table, of the word with the start bit of byte offset `off` (bit
/// `(off / 16) % 64`).
#[inline]
pub(crate) fn start_word(off: usize) -> usize {
    (off >> MARK_SHIFT) << 1
}

/// Number of buddy orders (free lists).
pub(crate) const ORDERS: usize = MAX_ORDER as usize + 1;
/// Length of the per-order arrays: [`ORDERS`] rounded up to a power of two, so that an order
/// masked with `ORDER_SLOTS - 1` (see [`slot`]) indexes them without a bounds check.
pub(crate) const ORDER_SLOTS: usize = ORDERS.next_power_of_two();

/// The index of `order` (at most [`MAX_ORDER`]) in a per-order array: the order itself; the mask
/// only tells the compiler that it is in bounds.
#[inline]
pub(crate) fn slot(order: u32) -> usize {
    debug_assert!(order <= MAX_ORDER);
    order as usize & (ORDER_SLOTS - 1)
}

/// The shape of an arena, copied into each client so the hot paths read no shared state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Start of chunk 0.
    pub(crate) base: NonNull<u8>,
    /// Its address.
    pub(crate) base_addr: usize,
    /// Bytes covered by chunks.
    pub(crate) len: usize,
    /// Number of chunks.
    pub(crate) nchunks: usize,
    /// log2 of the chunk size.
    pub(crate) chunk_shift: u32,
    /// log2 of the buddy page size.
    pub(crate) page_shift: u32,
    /// log2 of pages per chunk: the largest order.
    pub(crate) max_order: u32,
    /// Pages of a chunk that blocks may use (all but the guard page).
    pub(crate) usable_pages: usize,
    /// The largest block size.
    pub(crate) max_block: usize,
    /// The largest alignment a block may ask for.
    pub(crate) max_align: usize,
    /// The first size class in use (classes below the minimum block size are skipped).
    pub(crate) min_class: usize,
    /// The accepted flags.
    pub(crate) flags: Flags,
    /// Buddy order (in pages) of each class's slabs.
    pub(crate) slab_order: [u32; NCLASSES],
    /// Blocks per slab of each class (0 past the last class, so that a class masked with
    /// `CLASS_SLOTS - 1` indexes it without a bounds check).
    pub(crate) slab_cap: [u16; CLASS_SLOTS],
    /// log2 of the bytes of each class's slabs (0 past the last class).
    pub(crate) slab_shift: [u32; CLASS_SLOTS],
    /// log2 of the slab unit, the smallest slab (8 KiB, or a page if larger): the slab table
    /// has a record per unit, and a slab's record is that of its first unit.
    pub(crate) slab_unit_shift: u32,
    /// 64-bit words of the marks table per chunk: for each KiB, a word of block-start bits
    /// (one per 16 bytes) and a word of page metadata (see [`meta_slot`]).
    pub(crate) marks_per_chunk: usize,
    /// `1 KiB / page - 1` (0 for pages of 1 KiB or more): which `u16` of a KiB's metadata word
    /// a page uses.
    pub(crate) meta_mask: usize,
    /// 64-bit words of the free bitmaps per chunk: a summary word per order, then each order's
    /// bitmap.
    pub(crate) free_words: usize,
    /// Where each order's bitmap starts among a chunk's free words.
    pub(crate) order_word: [usize; ORDER_SLOTS],
}

impl Geometry {
    /// The largest block over a chunk: the whole arena, but at most the
    /// [`MAX_RUN`](crate::client::MAX_RUN) chunks a run can record (fewer than the chunks of
    /// an arena only with 64 KiB chunks past 16 TiB).
    pub(crate) fn max_run_bytes(&self) -> usize {
        self.len
            .min(crate::client::MAX_RUN.saturating_mul(1 << self.chunk_shift))
    }
}

/// What the arena knows of one chunk; only the chunk's holder touches it.
///
/// The all-zero record is that of a chunk never handed out: not committed, side tables clean,
/// no guard page. The table of records starts as zeroed memory, untouched until a chunk is
/// first taken, when `Arena::take` writes its counts and links (the `NIL` list ends
/// included); they mean something only while the chunk is held.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkInfo {
    /// Bytes of the chunk in live and cached buddy blocks (slabs count whole).
    pub(crate) used: usize,
    /// Live blocks in the chunk (a block larger than a chunk counts in its first chunk).
    pub(crate) live: u32,
    /// Next chunk of the holder's list.
    pub(crate) next: u32,
    /// Previous chunk of the holder's list.
    pub(crate) prev: u32,
    /// Next chunk of the holder's list of chunks with a free block of each order.
    pub(crate) order_next: [u32; ORDER_SLOTS],
    /// Previous chunk of those lists.
    pub(crate) order_prev: [u32; ORDER_SLOTS],
    /// Whether its memory is committed (always, once handed out, for a caller's block).
    committed: bool,
    /// Whether its parts of the side tables (start bits, page metadata, free bitmaps,
    /// remote-free bits) may be non-zero; false (they are all zero) for a chunk never handed
    /// out or given back empty by its holder, which taking it then need not clear.
    dirty: bool,
    /// Whether its guard page is set (reservation-backed arenas, `std` only).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    guarded: bool,
}

/// Statistics of an arena.
///
/// While other threads take and give back chunks, the figures are read one after the other,
/// not at one instant; each snapshot still keeps `held_chunks + free_chunks == chunks`,
/// `free_bytes == free_chunks * chunk_size`, `cached_chunks <= free_chunks` and
/// `largest_free_block <= free_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaStats {
    /// Bytes covered by chunks.
    pub total_bytes: usize,
    /// The chunk size.
    pub chunk_size: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// Chunks held by clients.
    pub held_chunks: usize,
    /// Chunks no client holds.
    pub free_chunks: usize,
    /// Free chunks that clients held before and whose memory is still committed (cached for
    /// the next taker). Chunks never handed out do not count, even over a caller's or heap
    /// memory, which is committed throughout. A chunk a caller decommitted through the
    /// reservation (`Backing::reservation`) still counts until a client takes it;
    /// `Arena::decommit_free_chunks` decommits these and takes them out of the count. Over a
    /// reservation, the chunks held and these are the committed ones.
    pub cached_chunks: usize,
    /// Bytes in chunks no client holds.
    pub free_bytes: usize,
    /// Bytes in live blocks of all clients ([`Flags::STATISTICS`] only), a block freed
    /// through [`Arena::free`] counting until its client takes it in.
    pub used_bytes: Option<usize>,
    /// Live blocks of all clients ([`Flags::STATISTICS`] only), a block freed through
    /// [`Arena::free`] counting until its client takes it in.
    pub live_blocks: Option<usize>,
    /// The largest block a new client could get now: the longest run of free chunks, at most
    /// [`Arena::max_block_size`] (with [`Flags::GUARD`], a chunk's largest block if a chunk
    /// is free), 0 if no chunk is free.
    /// Finding it scans the free-chunk bitmap (a bit per chunk).
    pub largest_free_block: usize,
    /// Live clients.
    pub clients: usize,
    /// Bytes of the arena's side tables (owner table, block-start bitmap, page metadata).
    pub bookkeeping_bytes: usize,
    /// Bytes of freed blocks all clients keep for reuse ([`Flags::STATISTICS`] only; see
    /// [`ClientStats::cached_bytes`](crate::ClientStats::cached_bytes)). There is no
    /// arena-wide count of cached blocks beside it
    /// ([`ClientStats::cached_blocks`](crate::ClientStats::cached_blocks) is per client): the
    /// arena has no list of its clients to add theirs up when asked, a client's bins are
    /// memory of the thread using it, which another thread may not read, and a count kept up
    /// to date would be one more shared counter written at allocations and frees.
    pub cached_bytes: Option<usize>,
    /// Held chunks with no live block in them, over all clients ([`Flags::STATISTICS`] only):
    /// chunks that only cached blocks, empty slabs or nothing keep from other clients. Each
    /// client keeps at most one (see [`ClientStats::pinned_chunks`](crate::ClientStats)).
    pub pinned_chunks: Option<usize>,
}

/// One region of backing memory shared by isolated [`Client`]s.
///
/// The backing memory is cut into chunks of the size set with [`Config::with_chunk_size`]; each
/// client takes chunks as it needs them and runs a buddy allocator with a small-size front over
/// them, so a client's memory is never handed to another client while the client lives. Deleting
/// (dropping) a client gives all its chunks back at once.
///
/// # Threads
/// `Arena` is `Send` and `Sync`: clients of one arena may live on different threads, and chunk
/// hand-out and return are lock-free. A [`Client`] is `Send` but not `Sync`: one thread at a
/// time allocates from it.
///
/// # Examples
/// ```
/// use core::alloc::Layout;
///
/// use memvisor_arena::{Arena, Backing, Config, Quota};
///
/// let arena = Arena::new(Backing::heap(4 << 20, 4096)?, Config::new())?;
/// let a = arena.create_client(Quota::UNLIMITED)?;
/// let b = arena.create_client(Quota::bytes(4096))?;
/// let p = a.alloc(Layout::new::<[u64; 4]>())?;
/// assert!(a.owns(p.as_ptr()));
/// assert!(!b.owns(p.as_ptr()));
/// // SAFETY: `p` belongs to `a`, so `b` refuses it and nothing is freed.
/// assert!(unsafe { b.free(p) }.is_err());
/// drop(a); // frees everything `a` allocated
/// assert_eq!(arena.stats().held_chunks, 0);
/// # Ok::<(), memvisor_arena::Error>(())
/// ```
pub struct Arena {
    geo: Geometry,
    config: Config,
    stack: ChunkSet,
    owner: Box<[AtomicU32]>,
    /// Per chunk, how many times it was taken (wrapping), counted by `take` before anything
    /// else it or the new holder writes: `owner_of` reads it before and after a block's bits,
    /// and a count that changed means the chunk changed hands meanwhile, also when the owner
    /// word ends as it began (the same client, or a client given its identifier, took the chunk
    /// again).
    takes: Box<[AtomicU32]>,
    /// Per chunk, the mailbox of remote frees of its holder (null while nobody holds it).
    mail: Box<[AtomicPtr<Mailbox>]>,
    /// The marks table. Start-bit words are written only by the chunk's holder, with relaxed
    /// loads and stores (other threads read them in [`free`](Self::free) and
    /// [`owner_of`](Self::owner_of)); metadata words are written only by the chunk's holder,
    /// through [`marks_ptr`](Self::marks_ptr), and read by it and by a [`free`](Self::free)
    /// on another thread, which reads the metadata of the block it claimed (see `Sync`).
    marks: Box<[core::sync::atomic::AtomicU64]>,
    /// Blocks claimed by frees from other threads, not yet taken back by their holders.
    remote: RemoteBits,
    free_bits: Box<[UnsafeCell<u64>]>,
    info: Box<[UnsafeCell<ChunkInfo>]>,
    /// The slab table: a record per slab unit, written only by the holder of its chunk.
    slabs: Box<[UnsafeCell<Slab>]>,
    /// Client identifiers, with the mailboxes of deleted clients.
    ids: ClientIds,
    clients: AtomicUsize,
    used: AtomicUsize,
    live: AtomicUsize,
    cached: AtomicUsize,
    /// Bumped by [`trim`](Self::trim) and when a client finds no chunk left: each client gives
    /// back what it keeps at its next free, or allocation that misses its caches, that sees a
    /// new value.
    trims: AtomicUsize,
    /// Chunks [`decommit_free_chunks`](Self::decommit_free_chunks) has out of the free set at
    /// this moment (each for one decommit): a taker that finds no chunk free waits for them.
    decommitting: AtomicUsize,
    /// Called by [`decommit_free_chunks`](Self::decommit_free_chunks) with each chunk it has
    /// out of the free set, before its system call: a test holds the decommit there.
    #[cfg(all(test, feature = "std"))]
    hold_decommit: std::sync::Mutex<Option<HoldDecommit>>,
    /// Bytes of cached blocks of all clients ([`Flags::STATISTICS`]).
    cached_bytes: AtomicUsize,
    /// Held chunks without a live block ([`Flags::STATISTICS`]).
    pinned: AtomicUsize,
    /// Offset of chunk 0 from the start of the backing memory (for reservation offsets, `std`
    /// only).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pad: usize,
    backing: Backing,
}

// SAFETY: the side tables in `UnsafeCell`s are partitioned by chunk, and the cells of a chunk
// are only touched by the client holding it: a chunk is taken from the stack with `Acquire` and
// given back with `Release`, so its holders' accesses are ordered, and a client is used by one
// thread at a time (it is not `Sync`). One exception: `free` on another thread reads (plain
// loads, no write) the page metadata of the block it has just claimed; the block's allocation,
// which wrote it, happened before that call (its caller's promise), and the holder does not
// write that block's metadata while the claim stands (the block stays live until the holder
// takes it from its mailbox), nor whole metadata words holding it (a slab's, written only while
// the slab has no live block). Everything else is atomic or read-only.
unsafe impl Sync for Arena {}
// SAFETY: the arena owns its block and tables; nothing in it is tied to a thread.
unsafe impl Send for Arena {}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("backing", &self.backing)
            .field("config", &self.config)
            .field("accepted_flags", &self.geo.flags)
            .field("chunks", &self.geo.nchunks)
            .field("free_chunks", &self.stack.len())
            .finish_non_exhaustive()
    }
}

/// Bytes of the side tables made with the arena, for `nchunks` chunks, `nmarks` mark words,
/// `nfree` free-bitmap words and `nslabs` slab records: per chunk its owner and free-chunk
/// bits (8 bytes), mailbox pointer and record. The remote-free tables come on top.
fn fixed_table_bytes(nchunks: usize, nmarks: usize, nfree: usize, nslabs: usize) -> usize {
    nchunks * (12 + core::mem::size_of::<usize>() + core::mem::size_of::<ChunkInfo>())
        + (nmarks + nfree) * 8
        + nslabs * core::mem::size_of::<Slab>()
}

impl Arena {
    /// Flags this build supports. [`Flags::DECOMMIT`] and [`Flags::GUARD`] need the `std`
    /// feature (and, on an arena, reservation backing memory).
    ///
    /// # Examples
    /// ```
    /// use memvisor_arena::{Arena, Flags};
    ///
    /// assert!(Arena::supported_flags().contains(Flags::ZERO | Flags::POISON | Flags::STATISTICS));
    /// ```
    #[must_use]
    pub fn supported_flags() -> Flags {
        let all = Flags::ZERO | Flags::POISON | Flags::STATISTICS;
        if cfg!(feature = "std") {
            all | Flags::DECOMMIT | Flags::GUARD
        } else {
            all
        }
    }

    /// An arena over `backing`.
    ///
    /// Chunk 0 starts at the backing's start rounded up to [`Config::alignment`]; the chunks
    /// that fit are used and any tail is left alone. Flags the backing cannot honour are dropped:
    /// [`Flags::DECOMMIT`] and [`Flags::GUARD`] need a reservation ([`Backing::reserve`]), and
    /// [`Flags::GUARD`] a chunk of at least four pages; [`accepted_flags`](Self::accepted_flags)
    /// says what was kept.
    ///
    /// # Errors
    /// As [`Config::validate`]; [`Error::BackingTooLarge`] (with the configured alignment) if
    /// the backing is longer than `isize::MAX` bytes or runs past the end of the address space
    /// (which no memory does: a [`Backing::from_raw`] that breaks its promise);
    /// [`Error::BackingTooSmall`] if not one chunk fits; [`Error::TablesUnavailable`] (of
    /// [`HostTable::SideTables`]) if the host's allocator refuses the side tables.
    pub fn new(backing: Backing, config: Config) -> Result<Self> {
        config.validate()?;
        let chunk = config.chunk_size();
        let start = backing.as_ptr() as usize;
        // Refused before anything is sized after the length or an address is computed from it.
        if isize::try_from(backing.len()).is_err() || start.checked_add(backing.len()).is_none() {
            return Err(Error::BackingTooLarge {
                len: backing.len(),
                align: config.alignment(),
            });
        }
        let too_small = Error::BackingTooSmall {
            len: backing.len(),
            chunk_size: chunk,
            align: config.alignment(),
        };
        let pad = start
            .checked_next_multiple_of(config.alignment())
            .ok_or(too_small.clone())?
            - start;
        let room = backing.len().checked_sub(pad).ok_or(too_small.clone())?;
        let chunk_shift = chunk.trailing_zeros();
        let page_shift = page_shift(chunk_shift);
        let slab_unit_shift = slab_unit_shift(page_shift);
        let nchunks = (room / chunk).min(max_chunks(chunk_shift));
        let count = match u32::try_from(nchunks) {
            Ok(count) if count > 0 && count < NIL => count,
            _ => return Err(too_small),
        };
        let mut flags = config.flags() & Self::supported_flags();
        let os_page = os_page_size(&backing);
        if !backing.is_reserved() {
            flags = flags & !(Flags::DECOMMIT | Flags::GUARD);
        } else if os_page.saturating_mul(4) > chunk {
            flags = flags & !Flags::GUARD;
        }
        let max_order = chunk_shift - page_shift;
        let guard = if flags.contains(Flags::GUARD) {
            os_page
        } else {
            0
        };
        let usable_pages = (chunk - guard) >> page_shift;
        let max_block = if guard == 0 { chunk } else { chunk / 2 };
        let mut slab_order = [0u32; NCLASSES];
        let mut slab_cap = [0u16; CLASS_SLOTS];
        let mut slab_shift = [0u32; CLASS_SLOTS];
        for (class, (order, cap)) in slab_order.iter_mut().zip(&mut slab_cap).enumerate() {
            let bytes = classes::slab_bytes(class).max(1 << page_shift);
            debug_assert!(bytes <= classes::MAX_SLAB);
            *order = (bytes >> page_shift).trailing_zeros();
            *cap = u16::try_from(classes::slab_capacity(class, bytes)).expect("at most 1024");
            slab_shift[class] = bytes.trailing_zeros();
        }
        let mut order_word = [0usize; ORDER_SLOTS];
        let mut free_words = ORDERS;
        for (order, word) in order_word
            .iter_mut()
            .enumerate()
            .take(max_order as usize + 1)
        {
            *word = free_words;
            free_words += ((1usize << (max_order as usize - order)) / 64).max(1);
        }
        let min_class = classes::class_of(config.min_block());
        let base = backing.as_ptr().wrapping_add(pad);
        let geo = Geometry {
            // SAFETY: `pad < backing.len()` (a chunk fits after it), so `base` is inside the
            // backing, whose pointer is not null, and does not wrap.
            base: unsafe { NonNull::new_unchecked(base) },
            base_addr: start + pad,
            len: nchunks << chunk_shift,
            nchunks,
            chunk_shift,
            page_shift,
            max_order,
            usable_pages,
            max_block,
            max_align: config.alignment().min(max_block),
            min_class,
            flags,
            slab_order,
            slab_cap,
            slab_shift,
            slab_unit_shift,
            marks_per_chunk: 2 * (chunk >> MARK_SHIFT),
            meta_mask: (1usize << MARK_SHIFT >> page_shift).max(1) - 1,
            free_words,
            order_word,
        };
        let (nmarks, nfree, nslabs) = (
            geo.marks_per_chunk * nchunks,
            nchunks * free_words,
            geo.len >> geo.slab_unit_shift,
        );
        // What the tables below take, with the remote-free table pointers (no remote-free bits
        // yet).
        let bytes = fixed_table_bytes(nchunks, nmarks, nfree, nslabs)
            + nchunks * core::mem::size_of::<usize>();
        let refused = || Error::TablesUnavailable {
            bytes,
            what: HostTable::SideTables,
        };
        // Every table starts as zero bytes meaning "free, nobody, nothing": zeroed memory, which
        // the system hands out untouched, so making an arena writes a few words whatever its
        // size, and a table takes memory as its chunks are first used. (Under loom, whose
        // atomics have no all-zero form, the atomic tables are filled with the same values.)
        Ok(Self {
            // Free chunks are clear bits.
            stack: ChunkSet::new(count).ok_or_else(refused)?,
            // 0: no owner.
            owner: table::empty(nchunks).ok_or_else(refused)?,
            takes: table::empty(nchunks).ok_or_else(refused)?,
            // Null: no mailbox.
            mail: table::empty(nchunks).ok_or_else(refused)?,
            marks: table::zeroed(nmarks).ok_or_else(refused)?,
            // Null table pointers: no remote-free bits made.
            remote: RemoteBits::new(nchunks, chunk_shift).ok_or_else(refused)?,
            free_bits: table::zeroed(nfree).ok_or_else(refused)?,
            // The record of a chunk never handed out (see `ChunkInfo`).
            info: table::zeroed(nchunks).ok_or_else(refused)?,
            // A record is written whole when its slab is made, and read only while the page
            // metadata says a slab starts there: zero bytes stand for "no slab".
            slabs: table::zeroed(nslabs).ok_or_else(refused)?,
            ids: ClientIds::new(),
            clients: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            trims: AtomicUsize::new(0),
            decommitting: AtomicUsize::new(0),
            #[cfg(all(test, feature = "std"))]
            hold_decommit: std::sync::Mutex::new(None),
            cached_bytes: AtomicUsize::new(0),
            pinned: AtomicUsize::new(0),
            pad,
            geo,
            config,
            backing,
        })
    }

    /// An arena over `len` bytes at `ptr`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Safety
    /// As [`Backing::from_raw`].
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, config: Config) -> Result<Self> {
        // SAFETY: the caller's promise is the one `from_raw` needs.
        Self::new(unsafe { Backing::from_raw(ptr, len) }, config)
    }

    /// An arena over a fresh reservation of `len` bytes of address space: chunks are committed
    /// when a client first takes them, and with [`Flags::DECOMMIT`] decommitted when given
    /// back. The chunks that fit in `len` are used.
    ///
    /// Making it costs time and memory independent of `len` beyond the reservation itself:
    /// the side tables (see [`bookkeeping_bytes`](Self::bookkeeping_bytes)) start as zeroed
    /// memory that nothing writes until the chunks they describe are first taken, so a large
    /// reservation makes them resident as it is used. This holds as far as the global
    /// allocator hands out fresh pages for zeroed requests: glibc's does for requests above its
    /// mmap threshold (128 KiB, rising to at most 32 MiB after frees of such blocks), and may
    /// serve a smaller table from memory freed before, clearing it.
    ///
    /// # Errors
    /// As [`new`](Self::new) (so [`Error::BackingTooSmall`] for `len` under one chunk, before
    /// anything is reserved) and [`Backing::reserve`].
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    ///
    /// use memvisor_arena::{Arena, Config, Flags, Quota};
    ///
    /// let config = Config::new().with_flags(Flags::DECOMMIT | Flags::GUARD);
    /// let arena = Arena::with_reservation(4 << 20, config)?;
    /// assert!(arena.accepted_flags().contains(Flags::DECOMMIT | Flags::GUARD));
    /// let client = arena.create_client(Quota::UNLIMITED)?;
    /// client.alloc(Layout::from_size_align(100_000, 8).unwrap())?;
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn with_reservation(len: usize, config: Config) -> Result<Self> {
        config.validate()?;
        // The reservation is aligned to `alignment`, so chunk 0 starts at its start.
        if len < config.chunk_size() {
            return Err(Error::BackingTooSmall {
                len,
                chunk_size: config.chunk_size(),
                align: config.alignment(),
            });
        }
        let backing = Backing::reserve(
            len,
            config.alignment(),
            memvisor_vmem::CommitMode::Protected,
        )?;
        Self::new(backing, config)
    }

    /// The flags this arena took on (see [`new`](Self::new)).
    #[must_use]
    pub fn accepted_flags(&self) -> Flags {
        self.geo.flags
    }

    /// The configuration it was made with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The memory it was made from.
    #[must_use]
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The chunk size.
    #[must_use]
    pub fn chunk_size(&self) -> usize {
        1 << self.geo.chunk_shift
    }

    /// The number of chunks.
    #[must_use]
    pub fn chunk_count(&self) -> usize {
        self.geo.nchunks
    }

    /// The largest block a client can allocate: all the arena's chunks (a block larger than a
    /// chunk is a run of contiguous whole chunks), but at most `2^28 - 1` chunks (a run
    /// records its length in 28 bits; only an arena of 64 KiB chunks past 16 TiB has more),
    /// or half a chunk with [`Flags::GUARD`] (its chunks are not contiguous memory).
    #[must_use]
    pub fn max_block_size(&self) -> usize {
        if self.geo.max_block < self.chunk_size() {
            self.geo.max_block
        } else {
            self.geo.max_run_bytes()
        }
    }

    /// The largest alignment a block can ask for: the configured
    /// [alignment](crate::Config::with_alignment), but at most half a chunk with
    /// [`Flags::GUARD`] (the largest block there).
    #[must_use]
    pub fn max_alignment(&self) -> usize {
        self.geo.max_align
    }

    /// Whether `ptr` lies inside the arena's chunks.
    #[must_use]
    pub fn contains(&self, ptr: *const u8) -> bool {
        (ptr as usize).wrapping_sub(self.geo.base_addr) < self.geo.len
    }

    /// Bytes of the side tables: chunk owners, their counts of takes and the free-chunk bitmap
    /// (12 bytes per chunk), the remote-free mailbox pointers (one pointer per chunk), chunk
    /// records, the block-start bitmap (one bit per 16 bytes), the page metadata (2 bytes per
    /// buddy page), the buddy free bitmaps (two bits per buddy page), the slab records (16
    /// bytes per 8 KiB, or per page if pages are larger) and the remote-free bits (a pointer
    /// per chunk, and one bit per 16 bytes of each chunk a free through [`free`](Self::free)
    /// has landed in so far). Nothing is kept inside the block. This is address space: every
    /// table starts as zeroed memory and a chunk's parts of the tables are first written when
    /// the chunk is first taken.
    #[must_use]
    pub fn bookkeeping_bytes(&self) -> usize {
        fixed_table_bytes(
            self.geo.nchunks,
            self.marks.len(),
            self.free_bits.len(),
            self.slabs.len(),
        ) + self.remote.bytes()
    }

    /// Makes a client with the given quota.
    ///
    /// # Errors
    /// [`Error::ClientIdsExhausted`] while `u32::MAX - 1` clients are live (a deleted client's
    /// identifier, with its mailbox, goes to a later client, so any number of clients can be
    /// made over the arena's life); [`Error::TablesUnavailable`] (of [`HostTable::Mailbox`])
    /// if no deleted client's mailbox is left for reuse and the host's allocator refuses a new
    /// one (three words). Nothing changes on error: no client identifier is used up.
    ///
    /// # Examples
    /// ```
    /// use memvisor_arena::{Arena, Backing, Config, Quota};
    ///
    /// let arena = Arena::new(Backing::heap(1 << 20, 4096)?, Config::new())?;
    /// let client = arena.create_client(Quota::bytes(64 << 10))?;
    /// assert_eq!(client.quota(), Quota::bytes(64 << 10));
    /// assert_eq!(arena.stats().clients, 1);
    /// arena.delete_client(client);
    /// assert_eq!(arena.stats().clients, 0);
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    pub fn create_client(&self, quota: Quota) -> Result<Client<'_>> {
        let (id, mailbox) = self.ids.take()?;
        self.clients.fetch_add(1, Ordering::Relaxed);
        Ok(Client::new(self, id, quota, mailbox))
    }

    /// Deletes a client, giving all its memory back at once; the same as dropping it. Its
    /// blocks must not be used afterwards. A client of another arena is deleted all the same,
    /// its memory going back to its own arena (which it borrows); use
    /// [`Client::arena`] with [`core::ptr::eq`] first to refuse it.
    ///
    /// Safe handles cannot outlive what they point into. A client borrows its arena, so the
    /// arena cannot go while a client lives:
    /// ```compile_fail,E0505
    /// use memvisor_arena::{Arena, Backing, Config, Quota};
    ///
    /// let arena = Arena::new(Backing::heap(1 << 20, 4096).unwrap(), Config::new()).unwrap();
    /// let client = arena.create_client(Quota::UNLIMITED).unwrap();
    /// drop(arena); // `client` borrows it
    /// client.trim();
    /// ```
    /// and a collection in a client borrows the client, so the client cannot be deleted while
    /// the collection lives:
    /// ```compile_fail,E0505
    /// use memvisor_arena::allocator_api2::vec::Vec;
    /// use memvisor_arena::{Arena, Backing, Config, Quota};
    ///
    /// let arena = Arena::new(Backing::heap(1 << 20, 4096).unwrap(), Config::new()).unwrap();
    /// let client = arena.create_client(Quota::UNLIMITED).unwrap();
    /// let mut v = Vec::new_in(&client);
    /// v.push(1u64);
    /// arena.delete_client(client); // `v` borrows it
    /// assert_eq!(v[0], 1);
    /// ```
    pub fn delete_client(&self, client: Client<'_>) {
        drop(client);
    }

    /// Frees the block at `ptr`, whichever client holds it, on any thread; returns its size.
    ///
    /// The block stops being live at once: [`Client::owns`], [`owner_of`](Self::owner_of),
    /// [`Client::size_of`], [`Client::free`] and a second free through the arena reject it. It
    /// goes onto a lock-free list of its client, which the client empties into its free
    /// blocks at its next allocation that misses its caches, its next free or
    /// [`Client::trim`]; until then it counts as a live block of the client (its bytes as
    /// used, in [`ClientStats::live_blocks`](crate::ClientStats::live_blocks), and keeping its
    /// chunk held: a client that never calls again keeps it until deleted). Takes
    /// constant time: a range check, a load of the chunk's owner and of the block's start bit,
    /// an atomic claim of the block's remote-free bit and one exchange on the list (the first
    /// free through the arena into a chunk also makes that chunk's remote-free bits, 8 bytes
    /// per KiB of chunk, kept until the arena is dropped).
    ///
    /// Every error is found here, before anything changes: the holder's own start bits are
    /// written only by the holder, and this call claims the block in a separate bit that the
    /// holder's [`Client::free`] checks.
    ///
    /// # Errors
    /// [`Error::Foreign`] if `ptr` is outside the arena, [`Error::NotOwned`] if no client holds
    /// its chunk (also a block freed before whose chunk has gone back to the arena),
    /// [`Error::NotABlock`] if it is not the start of a live block (interior, already freed
    /// by its client or through the arena), [`Error::TablesUnavailable`] (of
    /// [`HostTable::RemoteFreeBits`]) if the chunk's remote-free bits (made at the first such
    /// free in a chunk, a 128th of the chunk) could not be allocated. Nothing changes on error.
    ///
    /// # Safety
    /// If `ptr` is a live block, nothing may use it after this call — a second free of it
    /// included — and its client must not be deleted before this call returns (once it has
    /// returned, deleting the client is fine: the blocks still in its mailbox go back with its
    /// chunks). The block must have reached this thread through something that orders its
    /// allocation before this call (any hand-over of a pointer between threads that is not a
    /// data race does).
    ///
    /// Any other pointer (a stale or a made-up one) is refused and changes nothing, as long
    /// as every free of a block at that address happened before this call and no client hands
    /// out a block there while it runs: a block handed out meanwhile looks to this call just
    /// like one that was handed over, and is freed, and a free not ordered before this call
    /// may not be seen by it yet.
    ///
    /// No other free of the same block, by its client ([`Client::free`]) or through the
    /// arena, may run unordered with this call (on another thread, with neither call
    /// happening before the other). Once one free wins, the block's client may take it back
    /// and hand the same address out again at any of its next calls; a free that lost the
    /// race but had not yet looked at the block then sees a live block there and frees it —
    /// the new one. No check can tell that apart from a free of the new block, because a
    /// pointer is all a free gets. A second free ordered after this one is refused as long as
    /// the address has not been handed out again, and racing frees through the arena are
    /// mostly refused the same way (they claim the block with one atomic operation), but
    /// neither is a way to free a block once: they are bugs this call sometimes reports, not
    /// behaviour to rely on.
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
    /// assert_eq!(arena.owner_of(p.as_ptr()), Some(client.id()));
    /// // SAFETY: `p` is not used after this, and `client` outlives the call.
    /// assert_eq!(unsafe { arena.free(p) }?, 112);
    /// assert_eq!(arena.owner_of(p.as_ptr()), None);
    /// // SAFETY: as above; the block is no longer live, so nothing is freed.
    /// assert!(unsafe { arena.free(p) }.is_err());
    /// // SAFETY: as above; the client refuses it too.
    /// assert!(unsafe { client.free(p) }.is_err());
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<usize> {
        let addr = ptr.as_ptr().addr();
        let off = addr.wrapping_sub(self.geo.base_addr);
        if off >= self.geo.len {
            return Err(Error::Foreign { addr });
        }
        let chunk = off >> self.geo.chunk_shift;
        let mailbox = self.mail[chunk].load(Ordering::Acquire);
        if self.owner[chunk].load(Ordering::Acquire) == 0 || mailbox.is_null() {
            return Err(Error::NotOwned { addr, chunk });
        }
        let bit = 1u64 << ((off >> 4) & 63);
        // A pointer that starts no block is refused before the claim, which would make the
        // chunk's remote-free bits on its first use: a refusal changes nothing.
        if !off.is_multiple_of(MIN_BLOCK)
            || self.marks[start_word(off)].load(Ordering::Relaxed) & bit == 0
        {
            return Err(Error::NotABlock { addr });
        }
        match self.remote.claim(off) {
            Some(true) => {}
            Some(false) => return Err(Error::NotABlock { addr }),
            None => {
                return Err(Error::TablesUnavailable {
                    bytes: self.remote.table_bytes(),
                    what: HostTable::RemoteFreeBits,
                });
            }
        }
        // Claimed first, tested second: the holder clears the start bit of a block it took
        // from its mailbox before it releases the claim (`Release`), and the claim is an
        // `Acquire`, so a second free through the arena that gets the claim after that sees
        // the start bit clear. The holder set the start bit before the block reached this
        // thread (the caller's promise), and its own free of the block is ordered with this
        // call (also the caller's promise). The test before the claim only refuses early.
        if self.marks[start_word(off)].load(Ordering::Relaxed) & bit == 0 {
            self.remote.release(off);
            return Err(Error::NotABlock { addr });
        }
        // SAFETY: the start bit was set, so a live block of the chunk's holder starts at `off`
        // (the caller's promise orders its allocation, and the writes of its page metadata,
        // before this call), and claiming its remote-free bit made it ours: the holder no
        // longer frees it, so its metadata slot does not change until the holder takes it
        // from the mailbox.
        let meta = unsafe {
            *self
                .marks_ptr()
                .cast::<u16>()
                .add(meta_slot(&self.geo, off))
        };
        // SAFETY: as above: a live block starts at `off`, its metadata stays as it is.
        let size = unsafe {
            crate::client::block_size(&self.geo, self.marks_ptr().cast::<u16>(), off, meta)
        };
        #[cfg(feature = "test-pauses")]
        if let Some(pause) = FREE_PAUSE.take() {
            pause();
        }
        // SAFETY: the mailbox is the holder's (set when it took the chunk, which it still
        // holds as a live block lies in it), alive until the holder is deleted, which the
        // caller promised is not before this call returns; the block, at least 16 bytes and
        // 16-aligned, is ours to write its link into (its client refuses to free it now, and
        // the caller promised no free of it by the client races with this call).
        unsafe { (*mailbox).push(self.geo.base, off) };
        Ok(size)
    }

    /// Runs `pause` in the next [`free`](Self::free) on this thread that reaches the block's
    /// mailbox: after the block is claimed, before it is handed to its holder. For tests of a
    /// caller's locks around `free` (the C library's hold of its clients while a free runs);
    /// the `test-pauses` feature is for those tests only.
    #[cfg(feature = "test-pauses")]
    #[doc(hidden)]
    pub fn pause_next_free_on_this_thread(pause: Box<dyn FnOnce()>) {
        FREE_PAUSE.set(Some(pause));
    }

    /// The identifier of the client whose live block starts at `ptr`, or `None` (outside the
    /// arena, in a chunk no client holds, not the start of a live block). Constant time, no
    /// wait: safe with any pointer, from any thread, while clients allocate, free (also through
    /// [`free`](Self::free)) and chunks change hands.
    ///
    /// On another thread than the client's, the answer is a snapshot that the client may
    /// change at once, but one snapshot: the chunk's owner and its count of takes are read
    /// before and after the block's bits, and the answer names a client only if neither
    /// changed. So it names only a client that had a live block at that address while the call
    /// ran: a chunk that changed hands while the call ran (given back by its holder, taken by
    /// another client or by the same one again) is answered `None`, as it was free for a
    /// moment then. (The count is a `u32`: a chunk taken a multiple of `2^32` times during one
    /// call, and ending with the owner it began with, would pass.)
    ///
    /// The memory model guarantees this for bits the new holder writes on the thread that took
    /// the chunk (the take's `Release` fence comes before them); a client moved to another
    /// thread after taking the chunk relies on the hardware making the chunk's hand-over
    /// visible to all threads at once before its later writes, which x86, ARMv8 and RISC-V do.
    #[must_use]
    pub fn owner_of(&self, ptr: *const u8) -> Option<u32> {
        let off = ptr.addr().wrapping_sub(self.geo.base_addr);
        if off >= self.geo.len || !off.is_multiple_of(MIN_BLOCK) {
            return None;
        }
        let (owner, takes) = (
            &self.owner[off >> self.geo.chunk_shift],
            &self.takes[off >> self.geo.chunk_shift],
        );
        // The count of takes first: the owner read after it (`Acquire`, the count being
        // stored with `Release` after the previous holder set the owner to 0) is this take's
        // or a later one's, and a later one's makes the second read of the count differ.
        let taken = takes.load(Ordering::Acquire);
        let id = owner.load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        #[cfg(all(test, feature = "std"))]
        if let Some(pause) = OWNER_OF_PAUSE.take() {
            pause();
        }
        let bit = 1u64 << ((off >> 4) & 63);
        let live = self.marks[start_word(off)].load(Ordering::Relaxed) & bit != 0
            && !self.remote.is_claimed(off);
        #[cfg(all(test, feature = "std"))]
        if let Some(pause) = OWNER_OF_PAUSE_AFTER_BITS.take() {
            pause();
        }
        // The count of takes and the owner again, read after the bits (a sequence check, the
        // count being the sequence): a bit written by a later holder of the chunk was written
        // after the `Release` fence of its `take`, which comes after that take's count and
        // after the chunk's owner was set to 0, so this `Acquire` fence then makes the loads
        // below see that count or a later one, and 0 or a later owner. A count that changed
        // means the chunk was free for a moment while this call ran: nobody held the block
        // then, even if the owner word ends as it began (the same client took the chunk back,
        // or a client given its identifier did). A bit of an earlier holder is not read: the
        // `Acquire` read of the owner above saw this holder's `take` clear it.
        fence(Ordering::Acquire);
        (live && takes.load(Ordering::Relaxed) == taken && owner.load(Ordering::Relaxed) == id)
            .then_some(id)
    }

    /// Asks every client to give back what it keeps for reuse — cached blocks, empty slabs,
    /// its empty chunk — at its next free, or its next allocation that misses its caches (a
    /// client on another thread cannot be reached sooner). [`Client::trim`] does it at once for one
    /// client. Clients also get this request when one of them finds no chunk left. Over a
    /// reservation, the chunks they give back stay committed (without [`Flags::DECOMMIT`])
    /// until
    #[cfg_attr(
        feature = "std",
        doc = "[`decommit_free_chunks`](Self::decommit_free_chunks) decommits them;"
    )]
    #[cfg_attr(not(feature = "std"), doc = "`decommit_free_chunks` decommits them;")]
    /// a heap's or a caller's block is committed throughout and nothing decommits it.
    pub fn trim(&self) {
        self.request_trim();
    }

    /// Statistics of the arena. Block-level totals need [`Flags::STATISTICS`].
    #[must_use]
    pub fn stats(&self) -> ArenaStats {
        let free_chunks = self.stack.len().min(self.geo.nchunks);
        let stats_on = self.geo.flags.contains(Flags::STATISTICS);
        ArenaStats {
            total_bytes: self.geo.len,
            chunk_size: self.chunk_size(),
            chunks: self.geo.nchunks,
            held_chunks: self.geo.nchunks - free_chunks,
            free_chunks,
            cached_chunks: self.cached.load(Ordering::Relaxed).min(free_chunks),
            free_bytes: free_chunks << self.geo.chunk_shift,
            used_bytes: stats_on.then(|| self.used.load(Ordering::Relaxed)),
            live_blocks: stats_on.then(|| self.live.load(Ordering::Relaxed)),
            largest_free_block: if self.geo.max_block < self.chunk_size() {
                // Guard pages: chunks are not contiguous, a block is at most `max_block`.
                if free_chunks > 0 {
                    self.geo.max_block
                } else {
                    0
                }
            } else {
                // The scan and the free count are read at different moments: while chunks
                // move, the scan may see more free chunks than the count says; a snapshot
                // never claims more in one block than is free.
                (self.stack.longest_run().min(free_chunks) << self.geo.chunk_shift)
                    .min(self.max_block_size())
            },
            clients: self.clients.load(Ordering::Relaxed),
            bookkeeping_bytes: self.bookkeeping_bytes(),
            cached_bytes: stats_on.then(|| self.cached_bytes.load(Ordering::Relaxed)),
            pinned_chunks: stats_on.then(|| self.pinned.load(Ordering::Relaxed)),
        }
    }

    /// Bytes of the block resident in memory now (reservation-backed arenas), or `None` for a
    /// caller's block.
    ///
    /// # Errors
    /// [`Error::Vmem`] if the residency query fails.
    #[cfg(feature = "std")]
    pub fn resident_bytes(&self) -> Result<Option<usize>> {
        match self.backing.reservation() {
            Some(r) => Ok(Some(r.resident_pages(0, r.len())? * r.page_size())),
            None => Ok(None),
        }
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    pub(crate) fn owners(&self) -> &[AtomicU32] {
        &self.owner
    }

    pub(crate) fn remote_bits(&self) -> &RemoteBits {
        &self.remote
    }

    /// The marks table as plain words, for the holders of chunks. An `AtomicU64` has the
    /// layout of a `u64` and its contents are in an `UnsafeCell`, so the pointer may write.
    pub(crate) fn marks_ptr(&self) -> *mut u64 {
        self.marks.as_ptr().cast_mut().cast::<u64>()
    }

    /// Points chunk `chunk`'s mailbox at `mailbox` (its new holder's), or at nothing.
    pub(crate) fn set_mailbox(&self, chunk: usize, mailbox: *mut Mailbox) {
        self.mail[chunk].store(mailbox, Ordering::Release);
    }

    /// How many times clients were asked to trim (see [`trim`](Self::trim)).
    #[inline]
    pub(crate) fn trim_requests(&self) -> usize {
        self.trims.load(Ordering::Relaxed)
    }

    /// Asks every client to give back what it keeps, at its next free or allocation that misses
    /// its caches; returns
    /// the new request count.
    pub(crate) fn request_trim(&self) -> usize {
        self.trims.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Cached-block bytes of all clients ([`Flags::STATISTICS`]): `added` more, `removed` less.
    pub(crate) fn count_cached(&self, added: usize, removed: usize) {
        if added != 0 {
            self.cached_bytes.fetch_add(added, Ordering::Relaxed);
        }
        if removed != 0 {
            self.cached_bytes.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Held chunks without a live block ([`Flags::STATISTICS`]): `added` more, `removed` less.
    pub(crate) fn count_pinned(&self, added: usize, removed: usize) {
        if added != 0 {
            self.pinned.fetch_add(added, Ordering::Relaxed);
        }
        if removed != 0 {
            self.pinned.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    pub(crate) fn free_bits_ptr(&self) -> *mut u64 {
        UnsafeCell::raw_get(self.free_bits.as_ptr())
    }

    pub(crate) fn info_ptr(&self) -> *mut ChunkInfo {
        UnsafeCell::raw_get(self.info.as_ptr())
    }

    pub(crate) fn slabs_ptr(&self) -> *mut Slab {
        UnsafeCell::raw_get(self.slabs.as_ptr())
    }

    /// Block-level totals, kept with [`Flags::STATISTICS`].
    pub(crate) fn count_alloc(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_free(&self, bytes: usize, blocks: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.live.fetch_sub(blocks, Ordering::Relaxed);
    }

    /// A client is gone: its chunks were given back, and its `mailbox` (with its identifier)
    /// goes to a later client.
    ///
    /// # Safety
    /// `mailbox` is the client's, from [`ClientIds::take`] of this arena, and nothing refers
    /// to it any more.
    pub(crate) unsafe fn client_gone(&self, mailbox: *mut Mailbox) {
        // SAFETY: the caller's promise.
        unsafe { self.ids.retire(mailbox) };
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a free chunk for client `id`: clears its side tables, commits it (and sets its
    /// guard page) if the block is a reservation, and records `id` as its owner. `requested`
    /// is only for the error.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if no chunk is free (after the wait of
    /// [`after_decommits`](Self::after_decommits) if one is out for its decommit),
    /// [`Error::Vmem`] if committing fails (the chunk goes back).
    pub(crate) fn acquire(&self, id: u32, requested: usize) -> Result<u32> {
        let chunk = match self.stack.pop() {
            Some(chunk) => chunk,
            None => self
                .after_decommits(|| self.stack.pop())
                .map_err(|waited| self.no_chunk(requested, waited))?,
        };
        if let Err(e) = self.take(chunk, id) {
            self.stack.push(chunk);
            return Err(e);
        }
        Ok(chunk)
    }

    /// `take` tried again while [`decommit_free_chunks`](Self::decommit_free_chunks) has chunks
    /// out of the free set, after a search that found none: a chunk out for its decommit
    /// (one system call) is waited for, not reported missing. `Err(false)` if none is out
    /// (or the last came back and `take` still found nothing), `Err(true)` if one is still
    /// out after [`DECOMMIT_WAIT`](crate::sync::DECOMMIT_WAIT) (see [`DecommitWait`]).
    #[cold]
    fn after_decommits<T>(&self, mut take: impl FnMut() -> Option<T>) -> Result<T, bool> {
        // Pairs with the `Release` fence before the claim of a chunk to decommit: a search
        // that saw that chunk's bit set sees the count that includes it.
        fence(Ordering::Acquire);
        if self.decommitting.load(Ordering::Relaxed) == 0 {
            return Err(false);
        }
        let mut wait = DecommitWait::new();
        while wait.pause() {
            // `Acquire`: a count gone down shows the chunk given back before it.
            let out = self.decommitting.load(Ordering::Acquire);
            if let Some(t) = take() {
                return Ok(t);
            }
            if out == 0 {
                return Err(false);
            }
        }
        Err(true)
    }

    /// Decommits the free chunks whose memory is still committed (those clients held and gave
    /// back without [`Flags::DECOMMIT`], counted in [`ArenaStats::cached_chunks`]), while
    /// clients live and allocate: each is taken out of the free set for its decommit, so
    /// that no client takes it meanwhile, and put back; a client that takes it later commits
    /// it again (see [`Client::alloc`]). Chunks clients hold are left alone: [`Arena::trim`]
    /// and [`Client::trim`] make clients give back the chunks they keep without a live block.
    /// Returns how many chunks it decommitted: those it took out of `cached_chunks`, a chunk
    /// a caller already decommitted through the reservation ([`Backing::reservation`])
    /// included, as the arena's record cannot tell. Does nothing and returns 0 for an arena
    /// whose backing is not a reservation, whose memory is the caller's or the heap's (their
    /// `cached_chunks` stay as they were: that memory is committed throughout).
    ///
    /// Time: one load per chunk of the arena, and one claim and system call per chunk
    /// decommitted; the search ends once no free chunk is counted committed. At most one
    /// chunk is out of the free set at a time, and the arena's statistics count it held until
    /// it is back. An allocation that finds no other chunk free meanwhile waits for it (a few
    /// yields, then sleeps of at most 1 ms), for at most 100 ms: if the decommitting thread
    /// has not put it back by then (a loaded machine that does not run it, a debugger, a
    /// stop-the-world collector), the allocation is refused with [`Error::OutOfMemory`] and
    /// [`Exhausted::Decommitting`](crate::Exhausted::Decommitting).
    ///
    /// Residency: [`ArenaStats::total_bytes`] is reserved; the chunks clients hold and
    /// `cached_chunks` are committed; [`Arena::resident_bytes`] says what is resident.
    ///
    /// # Errors
    /// [`Error::Vmem`] if the system refuses a decommit: that chunk goes back committed (and
    /// counted in `cached_chunks`), those decommitted before stay decommitted, and the rest
    /// are not tried.
    ///
    /// # Examples
    /// ```
    /// use core::alloc::Layout;
    ///
    /// use memvisor_arena::{Arena, Config, Quota};
    ///
    /// let arena = Arena::with_reservation(4 << 20, Config::new())?;
    /// let client = arena.create_client(Quota::UNLIMITED)?;
    /// let p = client.alloc(Layout::from_size_align(2 << 20, 16).unwrap())?;
    /// // SAFETY: `p` is a live block of the client, not used after.
    /// unsafe { client.free(p) }?;
    /// client.trim();
    /// assert_eq!(arena.stats().cached_chunks, 2);
    /// assert_eq!(arena.decommit_free_chunks()?, 2);
    /// assert_eq!(arena.stats().cached_chunks, 0);
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn decommit_free_chunks(&self) -> Result<usize> {
        let Some(r) = self.backing.reservation() else {
            return Ok(0);
        };
        let mut done = 0;
        let mut c = 0;
        while c < self.geo.nchunks && self.cached.load(Ordering::Relaxed) != 0 {
            if !self.stack.is_free(c) {
                c += 1;
                continue;
            }
            self.decommitting.fetch_add(1, Ordering::Relaxed);
            // Pairs with the `Acquire` fence of `after_decommits`.
            fence(Ordering::Release);
            let result = if self.stack.pop_run_at(c, 1) {
                // SAFETY: just taken from the free set by this call: no client holds the chunk,
                // and its record is this thread's (ordered after its last holder by the
                // `Acquire` of the take) until it goes back.
                let info = unsafe { &mut *self.info[c].get() };
                #[cfg(test)]
                if let Some(hold) = &*self.hold_decommit.lock().unwrap() {
                    hold(c);
                }
                let mut result = Ok(());
                if info.committed {
                    let (off, usable) = self.usable_range(c);
                    // SAFETY: no client holds the chunk (see above) and none can take it before
                    // it goes back below; the blocks its last holder had are all dead (freed,
                    // or their client deleted), so nothing may read or write its memory.
                    match unsafe { r.decommit_unchecked(off, usable) } {
                        Ok(()) => {
                            info.committed = false;
                            self.cached.fetch_sub(1, Ordering::Relaxed);
                            done += 1;
                        }
                        Err(e) => result = Err(Error::from(e)),
                    }
                }
                // `c` is below the chunk count, which fits a `u32`.
                self.stack.push(u32::try_from(c).unwrap_or(u32::MAX));
                result
            } else {
                Ok(())
            };
            // `Release`: a waiting taker that sees the count go down finds the chunk back.
            self.decommitting.fetch_sub(1, Ordering::Release);
            result?;
            c += 1;
        }
        Ok(done)
    }

    /// [`Error::OutOfMemory`] for `requested` bytes when no chunk is free; `waited`: a chunk
    /// was still out for its decommit when the wait for it ran out.
    #[cold]
    fn no_chunk(&self, requested: usize, waited: bool) -> Error {
        Error::OutOfMemory {
            size: requested,
            requested,
            exhausted: if waited {
                self.decommit_outlasted()
            } else {
                Exhausted::Chunks {
                    chunks: self.geo.nchunks,
                    chunk_size: self.chunk_size(),
                }
            },
        }
    }

    /// [`Error::OutOfMemory`] for a run of `n` chunks when none is free; `waited` as for
    /// [`no_chunk`](Self::no_chunk).
    #[cold]
    fn no_run(&self, n: usize, waited: bool) -> Error {
        let requested = n << self.geo.chunk_shift;
        Error::OutOfMemory {
            size: requested,
            requested,
            exhausted: if waited {
                self.decommit_outlasted()
            } else {
                Exhausted::Run {
                    run: n,
                    free: self.stack.len().min(self.geo.nchunks),
                    chunks: self.geo.nchunks,
                    chunk_size: self.chunk_size(),
                }
            },
        }
    }

    fn decommit_outlasted(&self) -> Exhausted {
        Exhausted::Decommitting {
            chunk_size: self.chunk_size(),
        }
    }

    /// The first chunk of the lowest run of `n` chunks through chunk `held` (held by the
    /// caller) whose other chunks are free: a snapshot, changing nothing.
    pub(crate) fn run_around(&self, n: usize, held: usize) -> Option<usize> {
        self.stack.run_around(n, held)
    }

    /// Takes `n` contiguous free chunks for client `id`, prepared as by
    /// [`acquire`](Self::acquire): those from chunk `at` if they are all free, else the lowest
    /// free run; returns the first.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if no run of `n` free chunks is left, [`Error::Vmem`] if
    /// committing fails (the chunks go back as they were: those this call committed are
    /// decommitted again, unless the system refuses that too).
    pub(crate) fn acquire_run(&self, id: u32, n: usize, at: Option<usize>) -> Result<u32> {
        let first = match at {
            Some(first) if self.stack.pop_run_at(first, n) => u32::try_from(first).ok(),
            _ => self.stack.pop_run(n),
        };
        let first = match first {
            Some(first) => first,
            None => self
                .after_decommits(|| self.stack.pop_run(n))
                .map_err(|waited| self.no_run(n, waited))?,
        };
        // The set just claimed chunks `first..first + n`: `n` fits and the sum is at most the
        // chunk count.
        let end = first + u32::try_from(n).unwrap_or(0);
        for chunk in first..end {
            match self.take(chunk, id) {
                // Marks the chunks this call committed (their `prev`, written again below), so
                // that a refusal further on decommits them again.
                Ok(true) => {
                    // SAFETY: taken above by this call and not handed to anyone.
                    unsafe { &mut *self.info[chunk as usize].get() }.prev = COMMITTED_BY_RUN;
                }
                Ok(false) => {}
                Err(e) => {
                    for back in first..chunk {
                        // SAFETY: taken above by this call and not handed to anyone.
                        let info = unsafe { &mut *self.info[back as usize].get() };
                        if info.prev == COMMITTED_BY_RUN && self.undo_commit(back as usize) {
                            info.committed = false;
                        }
                        info.prev = NIL;
                        info.next = if back + 1 < chunk { back + 1 } else { NIL };
                    }
                    if chunk > first {
                        self.release_list(first, false);
                    }
                    for rest in chunk..end {
                        self.stack.push(rest);
                    }
                    return Err(e);
                }
            }
        }
        for chunk in first..end {
            // SAFETY: as above.
            unsafe { &mut *self.info[chunk as usize].get() }.prev = NIL;
        }
        Ok(first)
    }

    /// Prepares chunk `chunk`, just taken from the free set, for client `id`: clears its side
    /// tables, commits it (and sets its guard page) if the block is a reservation, and records
    /// `id` as its owner. Returns whether this call committed it.
    fn take(&self, chunk: u32, id: u32) -> Result<bool> {
        let c = chunk as usize;
        // This take counted first (only the chunk's taker writes the count, so a load and a
        // store), with `Release`: the chunk's owner was set to 0 before the chunk was given
        // back (ordered before here by the `Acquire` of the take), so an `owner_of` that reads
        // this count reads that 0 or a later owner after it. Every start bit and remote-free
        // bit this thread writes from here on — the clearing below, and the holder's own
        // blocks after — comes after the fence: an `owner_of` that reads one of those bits and
        // then the count and owner again (after its `Acquire` fence) sees the chunk change
        // hands, and names nobody for the new holder's block.
        let takes = &self.takes[c];
        takes.store(
            takes.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
        fence(Ordering::Release);
        // SAFETY: the chunk was just taken from the free set, so no client holds it and this
        // thread is the only one touching its cells (ordered after its last holder by the
        // `Acquire` of the take).
        let info = unsafe { &mut *self.info[c].get() };
        #[cfg(feature = "std")]
        let committed_now = match self.backing.reservation() {
            Some(r) => self.prepare(r, c, info)?,
            None => false,
        };
        #[cfg(not(feature = "std"))]
        let committed_now = false;
        if info.committed {
            self.cached.fetch_sub(1, Ordering::Relaxed);
        }
        info.committed = true;
        info.used = 0;
        info.live = 0;
        info.next = NIL;
        info.prev = NIL;
        info.order_next = [NIL; ORDER_SLOTS];
        info.order_prev = [NIL; ORDER_SLOTS];
        let words = self.geo.marks_per_chunk;
        let free = self.geo.free_words;
        // Other threads may read the chunk's start-bit words (the even words of the marks) at
        // any time (`owner_of` with any pointer, a stale one included), so those are cleared
        // with atomic stores; the metadata words between them are the holder's plain memory.
        // The `Release` store of the owner below publishes them to a reader that sees the new
        // owner.
        let marks = &self.marks[c * words..(c + 1) * words];
        let meta_words = self.marks_ptr().wrapping_add(c * words + 1);
        // SAFETY: the range is chunk `c`'s part of the free bitmaps, inside them, and ours (see
        // above); only a chunk's holder reads its free bitmaps.
        let bits = unsafe { self.free_bits_ptr().add(c * free) };
        if !info.dirty {
            debug_assert!(
                marks.iter().all(|w| w.load(Ordering::Relaxed) == 0)
                    // SAFETY: as above.
                    && (0..free).all(|i| unsafe { *bits.add(i) } == 0),
                "chunk {c} marked clean has side-table bits set"
            );
        } else {
            for (i, word) in marks.iter().enumerate().step_by(2) {
                word.store(0, Ordering::Relaxed);
                // SAFETY: the metadata word after start-bit word `i` (`words` is even), in the
                // chunk's part of the marks, which only its holder (now the caller) writes or
                // reads as plain memory.
                unsafe { meta_words.add(i).write(0) };
            }
            // SAFETY: as above.
            unsafe { bits.write_bytes(0, free) };
        }
        if !info.dirty {
            debug_assert!(
                self.remote.chunk_is_clear(c),
                "chunk {c} marked clean has remote-free bits set"
            );
        } else {
            self.remote.clear_chunk(c);
        }
        info.dirty = true;
        self.owner[c].store(id, Ordering::Release);
        Ok(committed_now)
    }

    /// The offset of chunk `c` in the reservation and the length of its pages before its
    /// guard page (all of it without [`Flags::GUARD`]): what the arena commits and decommits.
    #[cfg(feature = "std")]
    fn usable_range(&self, c: usize) -> (usize, usize) {
        (
            self.pad + (c << self.geo.chunk_shift),
            self.geo.usable_pages << self.geo.page_shift,
        )
    }

    /// Commits chunk `c` unless the record and the reservation both say it is committed, and
    /// sets its guard page once; returns whether it committed it now.
    #[cfg(feature = "std")]
    fn prepare(
        &self,
        r: &memvisor_vmem::Reservation,
        c: usize,
        info: &mut ChunkInfo,
    ) -> Result<bool> {
        let (off, usable) = self.usable_range(c);
        let guard = self.chunk_size() - usable;
        if guard > 0 && !info.guarded {
            // SAFETY: the guard page lies in a chunk nobody holds and no block ever covers it.
            unsafe { r.guard_unchecked(off + usable, guard) }?;
            info.guarded = true;
        }
        // The record says what the arena committed; the reservation, what is committed now:
        // a caller may have decommitted chunks through the reservation while the arena had no
        // client (`Backing::reservation`), which the arena does not see. A lookup of its
        // bitmap, no system call.
        if info.committed && r.is_committed(off, usable)? {
            return Ok(false);
        }
        r.commit(off, usable)?;
        Ok(true)
    }

    /// Decommits chunk `c`, which a run being refused committed and nobody else holds or has
    /// held since; whether the system did.
    fn undo_commit(&self, c: usize) -> bool {
        #[cfg(feature = "std")]
        if let Some(r) = self.backing.reservation() {
            let (off, usable) = self.usable_range(c);
            // SAFETY: the chunk was committed by the refused call, which handed out nothing in
            // it, and no other client holds it until it is back in the free set.
            return unsafe { r.decommit_unchecked(off, usable) }.is_ok();
        }
        let _ = c;
        false
    }

    /// Gives back the list of chunks starting at `head` (linked through their records), all
    /// held by the caller, as one batch (the free-chunk search hint is lowered once, after the
    /// last); decommits them first with [`Flags::DECOMMIT`].
    /// `clean`: the chunks' parts of the side tables are all zero (see [`ChunkInfo`]).
    pub(crate) fn release_list(&self, head: u32, clean: bool) {
        if head == NIL {
            return;
        }
        let mut chunk = head;
        let mut batch = self.stack.batch();
        while chunk != NIL {
            let c = chunk as usize;
            // SAFETY: the caller holds every chunk of the list, so their records are its own.
            let info = unsafe { &mut *self.info[c].get() };
            let next = info.next;
            info.dirty = !clean;
            self.owner[c].store(0, Ordering::Relaxed);
            self.mail[c].store(core::ptr::null_mut(), Ordering::Relaxed);
            self.decommit(c, info);
            if info.committed {
                self.cached.fetch_add(1, Ordering::Relaxed);
            }
            batch.push(chunk);
            chunk = next;
        }
    }

    #[cfg(feature = "std")]
    fn decommit(&self, c: usize, info: &mut ChunkInfo) {
        if !self.geo.flags.contains(Flags::DECOMMIT) {
            return;
        }
        if let Some(r) = self.backing.reservation() {
            let (off, usable) = self.usable_range(c);
            // SAFETY: the chunk is being given back: its holder's blocks are all dead (freed or
            // its client deleted, after which they must not be used), and no other client holds
            // it until it is taken from the stack again, which happens after this call.
            if unsafe { r.decommit_unchecked(off, usable) }.is_ok() {
                info.committed = false;
            }
        }
    }

    #[cfg(not(feature = "std"))]
    fn decommit(&self, _c: usize, _info: &mut ChunkInfo) {}
}

#[cfg(feature = "std")]
fn os_page_size(backing: &Backing) -> usize {
    backing.reservation().map_or(
        memvisor_vmem::page_size(),
        memvisor_vmem::Reservation::page_size,
    )
}

#[cfg(not(feature = "std"))]
fn os_page_size(_backing: &Backing) -> usize {
    usize::MAX / 4
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const CHUNK: usize = 64 << 10;

    /// `owner_of` on one thread reads the chunk's owner, client `a`; before it reads the
    /// block's start bit, `a` frees its one block, trims (its chunk goes back) and client `b`
    /// takes the chunk and allocates its first two slots. The second slot was never a block of
    /// `a`: the answer is nobody (the chunk was free for a moment during the call). Reading
    /// the owner once named `a` for `b`'s block.
    #[test]
    #[cfg(feature = "std")]
    fn owner_of_never_names_the_previous_holder_of_a_chunk() {
        use std::sync::mpsc::channel;
        let arena = arena(1, CHUNK);
        let small = core::alloc::Layout::from_size_align(48, 8).unwrap();
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        let first = a.alloc(small).unwrap();
        let second = first.as_ptr().addr() + 48;
        let (paused, handed_over) = (channel(), channel::<()>());
        let answer = std::thread::scope(|scope| {
            let arena = &arena;
            let reader = scope.spawn(move || {
                let (tell, wait) = (paused.0, handed_over.1);
                OWNER_OF_PAUSE.set(Some(Box::new(move || {
                    tell.send(()).unwrap();
                    wait.recv().unwrap();
                })));
                arena.owner_of(core::ptr::without_provenance(second))
            });
            paused.1.recv().unwrap();
            // SAFETY: a live block of `a`, not used after.
            assert_eq!(unsafe { a.free(first) }, Ok(48));
            a.trim();
            assert_eq!(arena.stats().free_chunks, 1);
            b.alloc(small).unwrap();
            assert_eq!(b.alloc(small).unwrap().as_ptr().addr(), second);
            handed_over.0.send(()).unwrap();
            reader.join().unwrap()
        });
        assert_eq!(answer, None, "a is {}, b is {}", a.id(), b.id());
        // Asked now, the block is b's.
        assert_eq!(
            arena.owner_of(core::ptr::without_provenance(second)),
            Some(b.id())
        );
    }

    /// The chunk goes from client `a` to `b` and back to `a` during one `owner_of` call on
    /// another thread: the call reads the owner, `a`, while `a` holds the chunk with a block
    /// at its first slot only; before it reads the bits of the second slot, `a` gives the
    /// chunk back and `b` takes it and allocates both slots; before it reads the owner again,
    /// `b` gives the chunk back and `a` takes it again and allocates its first slot. Both
    /// reads of the owner give `a`, which never had a block at the second slot: the answer
    /// is nobody (`b`'s block was read, and the chunk changed hands meanwhile). Checked by the
    /// owner word alone, the answer named `a`.
    #[test]
    #[cfg(feature = "std")]
    fn owner_of_never_names_a_holder_that_took_the_chunk_back_meanwhile() {
        use std::sync::mpsc::channel;
        let arena = arena(1, CHUNK);
        let small = core::alloc::Layout::from_size_align(48, 8).unwrap();
        let a = arena.create_client(Quota::UNLIMITED).unwrap();
        let b = arena.create_client(Quota::UNLIMITED).unwrap();
        let first = a.alloc(small).unwrap();
        let second = first.as_ptr().addr() + 48;
        let (read_owner, b_holds) = (channel(), channel::<()>());
        let (read_bits, a_holds) = (channel(), channel::<()>());
        let answer = std::thread::scope(|scope| {
            let arena = &arena;
            let reader = scope.spawn(move || {
                let (tell, wait) = (read_owner.0, b_holds.1);
                OWNER_OF_PAUSE.set(Some(Box::new(move || {
                    tell.send(()).unwrap();
                    wait.recv().unwrap();
                })));
                let (tell, wait) = (read_bits.0, a_holds.1);
                OWNER_OF_PAUSE_AFTER_BITS.set(Some(Box::new(move || {
                    tell.send(()).unwrap();
                    wait.recv().unwrap();
                })));
                arena.owner_of(core::ptr::without_provenance(second))
            });
            read_owner.1.recv().unwrap();
            // SAFETY: a live block of `a`, not used after.
            assert_eq!(unsafe { a.free(first) }, Ok(48));
            a.trim();
            let p = b.alloc(small).unwrap();
            let q = b.alloc(small).unwrap();
            assert_eq!(q.as_ptr().addr(), second);
            b_holds.0.send(()).unwrap();
            read_bits.1.recv().unwrap();
            // SAFETY: live blocks of `b`, not used after.
            unsafe { (b.free(p).unwrap(), b.free(q).unwrap()) };
            b.trim();
            assert_eq!(a.alloc(small).unwrap(), first);
            a_holds.0.send(()).unwrap();
            reader.join().unwrap()
        });
        assert_eq!(answer, None, "a is {}, b is {}", a.id(), b.id());
        assert_eq!(arena.owner_of(core::ptr::without_provenance(second)), None);
        assert_eq!(arena.owner_of(first.as_ptr()), Some(a.id()));
    }

    fn arena(chunks: usize, chunk: usize) -> Arena {
        let config = Config::new().with_chunk_size(chunk);
        Arena::new(Backing::heap(chunks * chunk, 4096).unwrap(), config).unwrap()
    }

    #[test]
    fn acquire_sets_owner_and_release_list_clears_it() {
        let arena = arena(2, CHUNK);
        let a = arena.acquire(7, 1).unwrap();
        let b = arena.acquire(7, 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(arena.owners()[a as usize].load(Ordering::Relaxed), 7);
        assert_eq!(
            arena.acquire(8, 99),
            Err(Error::OutOfMemory {
                size: 99,
                requested: 99,
                exhausted: Exhausted::Chunks {
                    chunks: 2,
                    chunk_size: CHUNK
                }
            })
        );
        // SAFETY: both chunks are held by this test, which links them as a holder would.
        unsafe { (*arena.info[a as usize].get()).next = b };
        arena.release_list(a, false);
        assert_eq!(arena.stats().free_chunks, 2);
        assert_eq!(arena.stats().cached_chunks, 2);
        assert_eq!(arena.owners()[b as usize].load(Ordering::Relaxed), 0);
    }

    /// Identifiers run out only with `u32::MAX - 1` clients live at once (made here by moving
    /// the counter to its last values): the error names the count and nothing changes, also
    /// on a retry; a deleted client's identifier goes to the next client made, which owns
    /// none of the blocks the deleted one left in the chunks it gave back.
    #[test]
    fn client_ids_exhausted_until_a_client_is_deleted_then_reused() {
        let arena = arena(2, CHUNK);
        let first = arena.create_client(Quota::UNLIMITED).unwrap();
        arena.ids.set_next(u32::MAX - 1);
        let last = arena.create_client(Quota::UNLIMITED).unwrap();
        assert_eq!(last.id(), u32::MAX - 1);
        let before = arena.stats();
        for _ in 0..2 {
            assert_eq!(
                arena.create_client(Quota::UNLIMITED).map(|c| c.id()),
                Err(Error::ClientIdsExhausted { max: u32::MAX - 1 })
            );
            assert_eq!(arena.stats(), before);
            assert_eq!(arena.ids.next(), u32::MAX);
        }
        // The clients made before still work.
        let p = last.alloc(core::alloc::Layout::new::<u64>()).unwrap();
        assert_eq!(arena.owner_of(p.as_ptr()), Some(u32::MAX - 1));
        arena.delete_client(last);
        // The deleted client's identifier is the next client's; the block the deleted one
        // left (its chunk given back, not yet handed out again) is nobody's.
        let next = arena.create_client(Quota::UNLIMITED).unwrap();
        assert_eq!(next.id(), u32::MAX - 1);
        assert_eq!(arena.owner_of(p.as_ptr()), None);
        assert!(!next.owns(p.as_ptr()));
        assert!(next.size_of(p.as_ptr()).is_err());
        // SAFETY: `p` is not a block of `next`: the free is refused and touches nothing.
        assert!(unsafe { next.free(p) }.is_err());
        let q = next.alloc(core::alloc::Layout::new::<u64>()).unwrap();
        assert_eq!(arena.owner_of(q.as_ptr()), Some(u32::MAX - 1));
        assert!(matches!(
            arena.create_client(Quota::UNLIMITED),
            Err(Error::ClientIdsExhausted { .. })
        ));
        assert_eq!(first.id(), 1);
    }

    /// Identifiers of deleted clients go to later clients, so an arena makes any number of
    /// clients over its life, never more identifiers than clients live at once at most.
    #[test]
    fn client_ids_of_deleted_clients_are_reused() {
        let arena = arena(2, CHUNK);
        let kept = arena.create_client(Quota::UNLIMITED).unwrap();
        for _ in 0..if cfg!(miri) { 10 } else { 1000 } {
            let a = arena.create_client(Quota::UNLIMITED).unwrap();
            let b = arena.create_client(Quota::UNLIMITED).unwrap();
            assert_ne!(a.id(), b.id());
            assert!(a.id() <= 3 && b.id() <= 3 && a.id() != kept.id() && b.id() != kept.id());
            drop(b);
            drop(a);
        }
        assert_eq!(arena.ids.next(), 4);
    }

    /// A run holds at most `2^28 - 1` chunks (its length is two 14-bit metadata slots), so
    /// an arena of more chunks than that (64 KiB chunks past 16 TiB) cannot hand out all of
    /// them as one block: `max_block_size` and `TooLarge` say so, and the request past it is
    /// refused before anything is touched. Made here by giving a small arena's geometry the
    /// length of such an arena: only the refusal, which reads no table, runs over it. A
    /// 32-bit process has no arena that long (its `usize` cannot hold 16 TiB).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn max_block_size_is_the_longest_run_a_block_can_be() {
        let mut arena = arena(2, CHUNK);
        let max_run = ((1usize << 28) - 1) * CHUNK;
        arena.geo.len = (1usize << 29) * CHUNK;
        assert_eq!(arena.max_block_size(), max_run);
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        for size in [max_run + 1, max_run + CHUNK, arena.geo.len] {
            assert_eq!(
                client.alloc(core::alloc::Layout::from_size_align(size, 16).unwrap()),
                Err(Error::TooLarge { size, max: max_run })
            );
        }
        assert_eq!(client.stats().chunks, 0);
        assert_eq!(arena.stats().held_chunks, 0);
    }

    #[test]
    fn max_block_size_bounds_every_arena() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(MAX_BLOCK_SIZE, (1 << 46) - (1 << 26));
        #[cfg(target_pointer_width = "32")]
        assert_eq!(MAX_BLOCK_SIZE, (1 << 31) - (1 << 16));
        let mut largest = 0;
        // The largest arena of each chunk size (its length set past what `new` lays out, as
        // above): its longest block is at most the bound, and the longest of them is the bound.
        for shift in MIN_CHUNK_SIZE.trailing_zeros()..=MAX_CHUNK_SIZE.trailing_zeros() {
            assert!(
                max_chunks(shift) < 1 << 29,
                "chunk indices stay below COMMITTED_BY_RUN"
            );
            // A 64 MiB arena is too much for the interpreter; the others are of one chunk.
            if cfg!(miri) && shift > 20 {
                continue;
            }
            let mut arena = arena(1, 1 << shift);
            arena.geo.len = max_chunks(shift).min(isize::MAX as usize >> shift) << shift;
            assert!(arena.max_block_size() <= MAX_BLOCK_SIZE);
            largest = largest.max(arena.max_block_size());
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let size = MAX_BLOCK_SIZE + 1;
            assert!(matches!(
                client.alloc(core::alloc::Layout::from_size_align(size, 16).unwrap()),
                Err(Error::TooLarge { size: s, .. }) if s == size
            ));
        }
        // (The interpreter skips the arenas of the largest chunks.)
        if !cfg!(miri) {
            assert_eq!(largest, MAX_BLOCK_SIZE);
        }
    }

    #[test]
    fn new_large_chunks_scale_the_buddy_page() {
        let geo = arena(1, 4 << 20).geometry();
        assert_eq!(geo.page_shift, 10);
        assert_eq!(geo.meta_mask, 0, "one page per KiB of marks");
        assert_eq!(geo.max_order, MAX_ORDER);
        assert_eq!(geo.usable_pages, 4096);
        for class in 0..NCLASSES {
            let bytes = (1usize << geo.slab_order[class]) << geo.page_shift;
            assert!(bytes >= classes::slab_bytes(class));
            assert!(geo.slab_cap[class] >= 7);
        }
    }

    #[test]
    fn new_small_chunks_use_256_byte_pages() {
        let geo = arena(1, CHUNK).geometry();
        assert_eq!(geo.page_shift, MIN_PAGE_SHIFT);
        assert_eq!(geo.max_order, 8);
        assert_eq!(geo.max_block, CHUNK);
        assert_eq!(geo.marks_per_chunk, 2 * CHUNK / 16 / 64);
        assert_eq!(geo.meta_mask, 3);
        assert_eq!(geo.order_word[0], ORDERS);
        assert_eq!(geo.free_words, ORDERS + 4 + 2 + 7);
    }

    /// Free chunks still committed are decommitted while a client lives and holds a chunk of
    /// its own, counted out of `cached_chunks`, and committed again when taken: the block
    /// handed out there is written and read back. A chunk held is left alone.
    #[test]
    #[cfg(feature = "std")]
    fn decommit_free_chunks_leaves_held_chunks_and_commits_again_on_take() {
        let config = Config::new().with_chunk_size(CHUNK);
        let arena = Arena::with_reservation(4 * CHUNK, config).unwrap();
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let layout = core::alloc::Layout::from_size_align(CHUNK, 16).unwrap();
        let kept = client.alloc(core::alloc::Layout::new::<u64>()).unwrap();
        // SAFETY: a live block of 8 bytes.
        unsafe { kept.cast::<u64>().write(7) };
        let blocks = [client.alloc(layout).unwrap(), client.alloc(layout).unwrap()];
        for b in blocks {
            // SAFETY: a live block of a chunk, not used after.
            unsafe {
                b.as_ptr().write_bytes(1, CHUNK);
                client.free(b).unwrap();
            }
        }
        client.trim();
        assert_eq!(arena.stats().cached_chunks, 2);
        let r = arena.backing().reservation().unwrap();
        let committed = |c: usize| {
            let (off, usable) = arena.usable_range(c);
            r.is_committed(off, usable).unwrap()
        };
        assert_eq!(arena.decommit_free_chunks(), Ok(2));
        let stats = arena.stats();
        assert_eq!((stats.cached_chunks, stats.free_chunks), (0, 3));
        assert_eq!((0..4).filter(|&c| committed(c)).count(), 1);
        assert_eq!(arena.decommit_free_chunks(), Ok(0));
        // SAFETY: the block is live and its chunk was left alone.
        assert_eq!(unsafe { kept.cast::<u64>().read() }, 7);
        let again = client.alloc(layout).unwrap();
        // SAFETY: a live block of a chunk, committed again when taken.
        unsafe {
            again.as_ptr().write_bytes(2, CHUNK);
            assert_eq!(again.as_ptr().add(CHUNK - 1).read(), 2);
        }
        assert_eq!((0..4).filter(|&c| committed(c)).count(), 2);
        arena.delete_client(client);
    }

    /// An arena of one chunk, committed and given back by a client (so that
    /// `decommit_free_chunks` takes it out for its decommit), with the client and a decommit
    /// that, on its own thread, stops with the chunk out until `release` is sent; `out` says
    /// when it has it.
    #[cfg(feature = "std")]
    fn hold_the_only_chunk(
        test: impl FnOnce(&Client<'_>, std::sync::mpsc::Sender<()>),
    ) -> Result<usize> {
        let arena = Arena::with_reservation(CHUNK, Config::new().with_chunk_size(CHUNK)).unwrap();
        let client = arena.create_client(Quota::UNLIMITED).unwrap();
        let layout = core::alloc::Layout::from_size_align(CHUNK, 16).unwrap();
        let p = client.alloc(layout).unwrap();
        // SAFETY: a live block of the client, not used after.
        unsafe { client.free(p) }.unwrap();
        client.trim();
        assert_eq!(arena.stats().cached_chunks, 1);
        let (out, is_out) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        *arena.hold_decommit.lock().unwrap() = Some(Box::new(move |c| {
            out.send(c).unwrap();
            released.recv().unwrap();
        }));
        let decommitted = std::thread::scope(|s| {
            let decommit = s.spawn(|| arena.decommit_free_chunks());
            assert_eq!(is_out.recv().unwrap(), 0);
            test(&client, release);
            decommit.join().unwrap()
        });
        let stats = arena.stats();
        assert_eq!(stats.held_chunks + stats.free_chunks, 1);
        arena.delete_client(client);
        decommitted
    }

    /// A client that needs the only free chunk while `decommit_free_chunks` holds it out of
    /// the free set (for 20 ms here: a decommitting thread descheduled between its claim and
    /// its system call) gets it once it is back, committed again, where it was refused with
    /// `OutOfMemory`.
    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(
        miri,
        ignore = "Miri's clock counts instructions: the decommit's emulation outlasts the 100 ms wait"
    )]
    fn a_taker_waits_for_the_chunk_a_decommit_holds() {
        let decommitted = hold_the_only_chunk(|client, release| {
            std::thread::scope(|s| {
                s.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    release.send(()).unwrap();
                });
                let layout = core::alloc::Layout::from_size_align(CHUNK, 16).unwrap();
                let p = client.alloc(layout).unwrap_or_else(|e| panic!("{e}"));
                // SAFETY: a live block of a whole chunk, committed again when taken.
                unsafe {
                    p.as_ptr().write_bytes(3, CHUNK);
                    assert_eq!(p.as_ptr().add(CHUNK - 1).read(), 3);
                }
                assert_eq!(client.arena().stats().cached_chunks, 0);
            });
        });
        assert_eq!(decommitted, Ok(1));
    }

    /// A decommit held out longer than an allocation waits: the allocation is refused after
    /// `DECOMMIT_WAIT`, not much later, with `OutOfMemory` naming the decommit, and changes
    /// nothing; once the chunk is back it is taken.
    #[test]
    #[cfg(feature = "std")]
    fn a_taker_gives_up_on_a_decommit_held_past_the_wait() {
        let decommitted = hold_the_only_chunk(|client, release| {
            let layout = core::alloc::Layout::from_size_align(CHUNK, 16).unwrap();
            let start = std::time::Instant::now();
            let refused = client.alloc(layout).unwrap_err();
            let waited = start.elapsed();
            assert_eq!(
                refused,
                Error::OutOfMemory {
                    size: CHUNK,
                    requested: CHUNK,
                    exhausted: Exhausted::Decommitting { chunk_size: CHUNK }
                }
            );
            assert_eq!(
                crate::sync::DECOMMIT_WAIT,
                std::time::Duration::from_millis(100),
                "the docs and the message of Exhausted::Decommitting name 100 ms"
            );
            assert!(
                waited >= crate::sync::DECOMMIT_WAIT,
                "gave up after {waited:?}"
            );
            #[cfg(not(miri))]
            assert!(
                waited < crate::sync::DECOMMIT_WAIT + std::time::Duration::from_millis(400),
                "gave up after {waited:?}"
            );
            assert_eq!(client.stats().chunks, 0);
            release.send(()).unwrap();
            // The decommit puts the chunk back before it returns; an allocation waits for it
            // up to `DECOMMIT_WAIT`, and is asked again where the decommit's thread has not
            // run by then (a loaded machine, or Miri, whose clock counts instructions).
            let mut refusals = 0;
            loop {
                match client.alloc(layout) {
                    Ok(_) => break,
                    Err(e) if e == refused && refusals < 100 => refusals += 1,
                    Err(e) => panic!("after {refusals} refusals: {e}"),
                }
            }
        });
        assert_eq!(decommitted, Ok(1));
    }

    /// A taker that finds no chunk free while `decommit_free_chunks` has the only one out of
    /// the free set waits for it instead of failing: here the decommit is held out by hand
    /// for a millisecond (the time of a long system call).
    #[test]
    #[cfg(feature = "std")]
    #[cfg_attr(miri, ignore = "a millisecond of yields")]
    fn take_waits_for_a_chunk_out_for_its_decommit() {
        let arena = arena(1, CHUNK);
        arena.decommitting.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        assert!(arena.stack.pop_run_at(0, 1));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                arena.stack.push(0);
                arena.decommitting.fetch_sub(1, Ordering::Release);
            });
            assert_eq!(arena.acquire(5, 1), Ok(0));
        });
        assert_eq!(arena.stats().held_chunks, 1);
        // A chunk held by a client is not waited for.
        assert_eq!(
            arena.acquire(6, 1).unwrap_err(),
            Error::OutOfMemory {
                size: 1,
                requested: 1,
                exhausted: Exhausted::Chunks {
                    chunks: 1,
                    chunk_size: CHUNK
                }
            }
        );
    }
}
