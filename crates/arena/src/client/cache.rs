//! Caches of freed blocks: a client keeps its most recently freed blocks, per size class and
//! per buddy order, and hands them out again without going through slabs or free bitmaps.
//!
//! A cached block is not live: its start bit is clear (so `owns`, `free` and `size_of` reject
//! it) and its bytes count as free in the statistics. It still counts as used in its slab
//! (small blocks) or its chunk record (buddy blocks; the tail that was trimmed off a buddy
//! block's power-of-two block stays free, and is re-cut when the block is reused for another
//! length). The caches are bounded, given back when an allocation would otherwise fail for
//! want of a chunk (only if that lets it succeed), and dropped with the client, whose chunks go
//! back whole.

use alloc::boxed::Box;

use super::held::HeldChunk;
use super::{CACHED, Slab, State, meta};
use crate::arena::{Arena, ORDER_SLOTS, slot};
use crate::classes::{CLASS_SLOTS, CLASSES, NCLASSES};
use crate::config::Flags;

/// Most cached blocks of one size class. A class's bin fills and empties as a random walk
/// under a steady mix of sizes; each time it is empty at an allocation, the block comes from
/// its slab, whose record and free list (in the blocks' memory) are likely cache misses, and
/// each time it is full at a free, its older half goes back to the slabs
/// ([`State::spill_small`]). A deeper bin makes both rarer.
const SMALL_ENTRIES: usize = 64;
/// Bytes of blocks of one size class the cache aims at: classes of over 512 bytes keep fewer
/// than [`SMALL_ENTRIES`] blocks (at least 8).
const SMALL_BYTES: usize = 32 << 10;
/// Most cached blocks of one buddy order.
const LARGE_ENTRIES: usize = 16;
/// Bytes of blocks of one buddy order the cache may hold: orders of over 16 KiB keep fewer
/// than [`LARGE_ENTRIES`] blocks.
const LARGE_BYTES: usize = 256 << 10;
/// The largest buddy block cached.
const LARGE_MAX: usize = 64 << 10;

/// How many blocks of `class` the cache keeps.
pub(super) const fn small_cap(class: usize) -> usize {
    let n = SMALL_BYTES / CLASSES[class] as usize;
    if n < 8 {
        8
    } else if n > SMALL_ENTRIES {
        SMALL_ENTRIES
    } else {
        n
    }
}

/// The order of the small bins' blocks by offset, and the kept empty slab of each class (null
/// if none). Each bin's order is a permutation of its entries' indices (a bin holds at most
/// [`SMALL_ENTRIES`]), a byte each: this lives on the stack of an allocation, which may be a
/// thread's of 16 KiB, where a sorted copy of the offsets (12 KiB) overflowed it.
struct SortedBins {
    order: [[u8; SMALL_ENTRIES]; NCLASSES],
    len: [usize; NCLASSES],
    empty: [*mut Slab; NCLASSES],
}

const _: () = assert!(SMALL_ENTRIES <= 1 << u8::BITS);

impl SortedBins {
    /// No bin sorted, no empty slab.
    fn new() -> Self {
        Self {
            order: [[0; SMALL_ENTRIES]; NCLASSES],
            len: [0; NCLASSES],
            empty: [core::ptr::null_mut(); NCLASSES],
        }
    }
}

/// [`small_cap`] of every class (0 past the last).
const SMALL_CAP: [u8; CLASS_SLOTS] = {
    let mut caps = [0u8; CLASS_SLOTS];
    let mut class = 0;
    while class < NCLASSES {
        #[allow(clippy::cast_possible_truncation, reason = "at most SMALL_ENTRIES")]
        {
            caps[class] = small_cap(class) as u8;
        }
        class += 1;
    }
    caps
};

/// Bins of cached blocks: one per size class slot, then one per order slot.
const BINS: usize = CLASS_SLOTS + ORDER_SLOTS;
/// Where the entries of the order bins start.
const LARGE_BASE: usize = CLASS_SLOTS * SMALL_ENTRIES;
/// Entries of all bins.
const ENTRIES: usize = LARGE_BASE + ORDER_SLOTS * LARGE_ENTRIES;

/// The bin of size class `class` and where its entries start.
#[inline]
fn small_bin(class: usize) -> (usize, usize) {
    let class = class & (CLASS_SLOTS - 1);
    (class, class * SMALL_ENTRIES)
}

/// The bin of buddy order `order` and where its entries start.
#[inline]
fn large_bin(order: u32) -> (usize, usize) {
    let o = slot(order);
    (CLASS_SLOTS + o, LARGE_BASE + o * LARGE_ENTRIES)
}

/// The entry of `lens[..=last]` (lengths in pages, each at least 1) whose length shares the
/// most leading bits with `want + 1`: the smallest `(n - 1) ^ want`, so that the fewest tail
/// pieces change when it is cut to `want + 1` pages (the tails of two lengths differ in the
/// pieces below the highest bit where their lengths minus one differ). Of equals, `last`,
/// then the first.
#[inline(always)]
fn nearest_length(lens: &[u16; LARGE_ENTRIES], last: usize, want: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: the target has SSE2 (the `cfg` above), which is all the function needs.
        unsafe { nearest_length_sse2(lens, last, want) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        nearest_length_scalar(lens, last, want)
    }
}

/// [`nearest_length`] entry by entry.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    expect(
        dead_code,
        reason = "the reference of the SSE2 form, and the form of other targets"
    )
)]
#[inline(always)]
fn nearest_length_scalar(lens: &[u16; LARGE_ENTRIES], last: usize, want: usize) -> usize {
    let mut best = last;
    let mut best_diff = usize::from(lens[last]).wrapping_sub(1) ^ want;
    // Selects rather than branches: which entry wins is unpredictable.
    for (i, &n) in lens.iter().enumerate().take(last) {
        let diff = usize::from(n).wrapping_sub(1) ^ want;
        let better = diff < best_diff;
        best = if better { i } else { best };
        best_diff = best_diff.min(diff);
    }
    best
}

/// [`nearest_length`] over all 16 entries at once, without a branch: the scan's loop ended
/// at the bin's length, a branch mispredicted about once per call (the lengths of the bins
/// are random).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn nearest_length_sse2(lens: &[u16; LARGE_ENTRIES], last: usize, want: usize) -> usize {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi16, _mm_cmplt_epi16, _mm_loadu_si128, _mm_min_epi16,
        _mm_movemask_epi8, _mm_or_si128, _mm_packs_epi16, _mm_set_epi16, _mm_set1_epi16,
        _mm_shuffle_epi32, _mm_slli_epi32, _mm_srli_epi32, _mm_sub_epi16, _mm_xor_si128,
    };
    const _: () = assert!(LARGE_ENTRIES == 16, "two vectors of eight lanes");
    // A cached block's length is at most 64 KiB of pages of at least 256 bytes, 256 pages: the
    // differences fit 16-bit lanes, and no valid entry's is 0xFFFF, the value of the
    // entries past `last`.
    debug_assert!(want < 1 << 16 && lens[..=last].iter().all(|&n| n >= 1));
    #[allow(
        clippy::cast_possible_truncation,
        reason = "`want` is below 2^16 (above)"
    )]
    #[allow(clippy::cast_possible_wrap, reason = "lanes of 16 bits")]
    let want = _mm_set1_epi16(want as u16 as i16);
    #[allow(clippy::cast_possible_truncation, reason = "`last` is below 16")]
    #[allow(clippy::cast_possible_wrap, reason = "below 16")]
    let last_lane = _mm_set1_epi16(last as i16);
    let one = _mm_set1_epi16(1);
    // `x ^ 0x8000` turns an unsigned comparison of 16-bit lanes into the signed one SSE2 has.
    #[allow(clippy::cast_possible_wrap, reason = "the sign bit of a lane")]
    let flip = _mm_set1_epi16(0x8000u16 as i16);
    let lane = |at: usize, first: i16| -> __m128i {
        // SAFETY: `lens` has 16 entries, so its entries `at..at + 8` (at is 0 or 8) are 16
        // readable bytes; `loadu` needs no alignment.
        let n = unsafe { _mm_loadu_si128(lens.as_ptr().add(at).cast()) };
        let diff = _mm_xor_si128(_mm_sub_epi16(n, one), want);
        let index = _mm_set_epi16(
            first + 7,
            first + 6,
            first + 5,
            first + 4,
            first + 3,
            first + 2,
            first + 1,
            first,
        );
        // Entries past `last` get 0xFFFF, which no valid entry has.
        let past = _mm_cmplt_epi16(last_lane, index);
        _mm_xor_si128(_mm_or_si128(diff, past), flip)
    };
    let (low, high) = (lane(0, 0), lane(8, 8));
    let mut min = _mm_min_epi16(low, high);
    min = _mm_min_epi16(min, _mm_shuffle_epi32::<0b01_00_11_10>(min));
    min = _mm_min_epi16(min, _mm_shuffle_epi32::<0b10_11_00_01>(min));
    min = _mm_min_epi16(
        min,
        _mm_or_si128(_mm_slli_epi32::<16>(min), _mm_srli_epi32::<16>(min)),
    );
    // Never an entry past `last`, whatever the lengths and `want` (the `debug_assert` above is
    // off in release builds): such an entry can equal the least difference only if that is
    // the greatest lane value, which entry `last` then has too, and `last` wins ties.
    // One bit per entry that has the least difference.
    let equal = _mm_packs_epi16(_mm_cmpeq_epi16(low, min), _mm_cmpeq_epi16(high, min));
    #[allow(clippy::cast_sign_loss, reason = "16 bits of a byte mask")]
    let mask = _mm_movemask_epi8(equal) as u32;
    let first = mask.trailing_zeros() as usize;
    if mask >> last & 1 != 0 { last } else { first }
}

/// The pieces of the tail `tail` (in pages) of a block whose `2^order`-page block ends at page
/// `top` (a multiple of `2^order`), those of the orders in `below` only, as `(order, index)`
/// from the lowest order up. The piece of order `i` starts at page `top - rest`, `rest` being
/// the tail with its bits below `i` cleared, so its index is `(top - rest) >> i`: one shift
/// where `(top >> i) - (tail >> i)` takes two.
#[inline(always)]
fn tail_pieces(top: usize, tail: usize, below: usize) -> impl Iterator<Item = (u32, usize)> {
    let mut rest = tail;
    core::iter::from_fn(move || {
        if rest & below == 0 {
            return None;
        }
        let i = rest.trailing_zeros();
        let piece = (i, (top - rest) >> i);
        rest &= rest - 1;
        Some(piece)
    })
}

/// What [`State::uncache_large`] found.
pub(super) enum Uncached {
    /// A cached block, at this offset, now cut to the requested length.
    Hit(usize),
    /// No cached block of the order.
    Miss,
    /// The best cached block, at this offset, cannot be cut to the requested length (a piece
    /// of its tail is in use); nothing changed.
    Stuck(usize),
}

/// The cached blocks of one client, as offsets from chunk 0, in bins by size class and by
/// buddy order.
pub(super) struct Caches {
    /// Offsets of the cached blocks: [`SMALL_ENTRIES`] per class, then [`LARGE_ENTRIES`] per
    /// order, the first `len` of each bin in use.
    offs: [usize; ENTRIES],
    /// The length in pages of each cached buddy block: entry `i` of `pages` belongs to entry
    /// `LARGE_BASE + i` of `offs` (small blocks need none).
    pages: [u16; ENTRIES - LARGE_BASE],
    len: [u8; BINS],
    cap: [u8; BINS],
}

// SAFETY: `Caches` holds arrays of integers only; zero bytes are bins with nothing in them and
// no room, which `boxed` then gives their room.
unsafe impl crate::table::Zeroable for Caches {}

impl Caches {
    /// Bins with nothing in them and no room.
    const EMPTY: Self = Self {
        offs: [0; ENTRIES],
        pages: [0; ENTRIES - LARGE_BASE],
        len: [0; BINS],
        cap: [0; BINS],
    };

    /// Empty caches for buddy pages of `2^page_shift` bytes and orders up to `max_order`, on
    /// the heap: blocks of the largest order (whole chunks) and blocks over [`LARGE_MAX`] are
    /// never cached, so a chunk freed whole still goes back to the arena, and the cached blocks
    /// of a client add up to at most about 1.45 MiB (about 445 KiB small, 1 MiB buddy blocks).
    /// Made in zeroed memory and filled in place, never on the stack (they are about 19 KiB: a
    /// thread with a 16 KiB stack frees blocks too); `None` if the allocator refuses them.
    pub(super) fn boxed(page_shift: u32, max_order: u32) -> Option<Box<Self>> {
        let mut caches = crate::table::zeroed_box::<Self>()?;
        caches.cap[..CLASS_SLOTS].copy_from_slice(&SMALL_CAP);
        for (order, cap) in caches.cap[CLASS_SLOTS..]
            .iter_mut()
            .enumerate()
            .take(max_order as usize)
        {
            let block = (1usize << page_shift) << order;
            if block <= LARGE_MAX {
                *cap = u8::try_from((LARGE_BYTES / block).min(LARGE_ENTRIES)).unwrap_or(0);
            }
        }
        Some(caches)
    }

    /// The cached small blocks of `class`.
    fn small(&self, class: usize) -> &[usize] {
        let (bin, base) = small_bin(class);
        &self.offs[base..base + usize::from(self.len[bin])]
    }

    /// Adds the small block at `off` to bin `bin`, whose entries start at `base`; false if the
    /// bin is full.
    #[inline(always)]
    fn push_small(&mut self, bin: usize, base: usize, off: usize) -> bool {
        let len = usize::from(self.len[bin]);
        if len >= usize::from(self.cap[bin]) {
            return false;
        }
        // SAFETY: a bin's cap is at most its number of entries (`Caches::boxed`), so entry
        // `base + len` is one of the bin's, inside the array.
        unsafe { *self.offs.get_unchecked_mut(base + len) = off };
        self.len[bin] += 1;
        true
    }

    /// Adds the buddy block of `pages` pages at `off` to order bin `bin`, whose entries start
    /// at `base` (at least [`LARGE_BASE`]); false if the bin is full.
    #[inline]
    fn push_large(&mut self, bin: usize, base: usize, off: usize, pages: usize) -> bool {
        let len = usize::from(self.len[bin]);
        if len >= usize::from(self.cap[bin]) {
            return false;
        }
        let at = base + len;
        // SAFETY: a bin's cap is at most its number of entries (`Caches::boxed`), so entry `at`
        // is one of the bin's, inside `offs`, and an order bin's, so `at - LARGE_BASE` is
        // inside `pages`.
        unsafe {
            *self.offs.get_unchecked_mut(at) = off;
            *self.pages.get_unchecked_mut(at - LARGE_BASE) =
                u16::try_from(pages).unwrap_or(u16::MAX);
        }
        self.len[bin] += 1;
        true
    }

    /// Every cached buddy block, as (offset, pages).
    fn all_large(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..ORDER_SLOTS).flat_map(move |o| {
            let base = LARGE_BASE + o * LARGE_ENTRIES;
            let end = base + usize::from(self.len[CLASS_SLOTS + o]);
            self.offs[base..end]
                .iter()
                .zip(&self.pages[base - LARGE_BASE..end - LARGE_BASE])
                .map(|(&off, &n)| (off, usize::from(n)))
        })
    }
}

impl State {
    /// The bins, `None` before [`Client::make_bins`](super::Client::make_bins) made them or
    /// if the global allocator had no room for them (then nothing is cached). They are not
    /// made here: the state is borrowed, and the global allocator may be this very client.
    #[inline]
    fn bins(&mut self) -> Option<&mut Caches> {
        self.cache.as_deref_mut()
    }

    /// The offsets in the bin of `class`, oldest first.
    #[cfg(test)]
    pub(super) fn cache_entries(&self, class: usize) -> alloc::vec::Vec<usize> {
        self.cache
            .as_deref()
            .map_or_else(alloc::vec::Vec::new, |c| c.small(class).to_vec())
    }

    /// Bytes of all cached blocks: the small ones counted from the bins (the paths that
    /// cache and take them do not keep a total), the buddy blocks kept in `cached_large`.
    pub(super) fn cached_bytes(&self) -> usize {
        let Some(c) = self.cache.as_deref() else {
            return 0;
        };
        let small: usize = (0..NCLASSES)
            .map(|class| usize::from(c.len[class]) * usize::from(CLASSES[class]))
            .sum();
        debug_assert_eq!(
            self.cached_large,
            c.all_large().map(|(_, n)| n).sum::<usize>() << self.geo.page_shift
        );
        small + self.cached_large
    }

    /// Number of cached blocks, small and buddy: the lengths of all bins.
    pub(super) fn cached_blocks(&self) -> usize {
        self.cache
            .as_deref()
            .map_or(0, |c| c.len.iter().map(|&n| usize::from(n)).sum())
    }

    /// The largest cached block.
    pub(super) fn largest_cached(&self) -> usize {
        let Some(c) = self.cache.as_deref() else {
            return 0;
        };
        let small = (0..NCLASSES)
            .rev()
            .find(|&class| !c.small(class).is_empty())
            .map_or(0, |class| usize::from(CLASSES[class]));
        let large = c.all_large().map(|(_, n)| n).max().unwrap_or(0);
        small.max(large << self.geo.page_shift)
    }

    /// Keeps the freed small block at `off` of `class` for reuse; false (nothing changed) if
    /// the class's cache is full.
    #[inline]
    pub(super) fn cache_small(&mut self, class: usize, off: usize) -> bool {
        let (bin, base) = small_bin(class);
        self.bins().is_some_and(|c| c.push_small(bin, base, off))
    }

    /// Keeps the freed small block at `off` of `class` (of `bytes`, its size) for reuse; if
    /// the class's bin is full, first gives the older half of it back to the slabs
    /// ([`spill_small`](Self::spill_small)). Without bins the block goes straight to its slab.
    #[inline(always)]
    pub(super) fn keep_small(&mut self, arena: &Arena, class: usize, off: usize) {
        if !self.cache_small(class, off) {
            self.spill_small(arena, class, off);
        }
    }

    /// [`keep_small`](Self::keep_small) of a block whose bin is full (or missing): the older
    /// half of the bin goes back to the slabs, oldest first, and the block takes the place of
    /// the newest. One spill per half a bin of frees instead of one slab return per free once
    /// the bin is full: the slab records the spilled blocks need do not depend on each other
    /// (their class is the bin's, their offsets are in the bin), so their cache misses
    /// overlap, and the bin starts again half full, as far from full as from empty.
    #[inline(never)]
    pub(super) fn spill_small(&mut self, arena: &Arena, class: usize, off: usize) {
        let (bin, base) = small_bin(class);
        let Some(c) = self.cache.as_deref_mut() else {
            self.free_small(arena, off, class, false);
            return;
        };
        let len = usize::from(c.len[bin]);
        let half = len / 2;
        let mut spilled = [0usize; SMALL_ENTRIES / 2];
        spilled[..half].copy_from_slice(&c.offs[base..base + half]);
        c.offs.copy_within(base + half..base + len, base);
        c.offs[base + len - half] = off;
        // At most `SMALL_ENTRIES` (64) entries.
        c.len[bin] = u8::try_from(len - half + 1).unwrap_or(u8::MAX);
        let at = self.slab_class(class);
        for &o in &spilled[..half] {
            // SAFETY: `o` was a cached block of `class`: a block of this client in a slab of
            // the class (which counts it as live), no longer in the bin and used by no one.
            unsafe { self.free_small_at(arena, at, o, false) };
        }
    }

    /// Keeps the freed small block at `off` of `class` in its bin if it has room; false
    /// (nothing changed) otherwise.
    ///
    /// # Safety
    /// The bins exist (the quick free, which runs only once they do: `quick_units` is 0
    /// before).
    #[inline(always)]
    pub(super) unsafe fn cache_small_quick(&mut self, class: usize, off: usize) -> bool {
        let (bin, base) = small_bin(class);
        debug_assert!(self.cache.is_some());
        // SAFETY: the caller's promise.
        let c = unsafe { self.cache.as_deref_mut().unwrap_unchecked() };
        c.push_small(bin, base, off)
    }

    /// Keeps the freed buddy block of `pages` pages at `off` for reuse; false (nothing
    /// changed) if the cache of its order is full. Its tail — the rest of its power-of-two
    /// block, given back as free blocks when it was cut — stays as it is; its page (metadata
    /// slot `slot`) says `CACHED` and its length.
    #[inline]
    pub(super) fn cache_large(&mut self, off: usize, slot: usize, pages: usize) -> bool {
        let (bin, base) = large_bin(pages.next_power_of_two().trailing_zeros());
        if !self
            .bins()
            .is_some_and(|c| c.push_large(bin, base, off, pages))
        {
            return false;
        }
        // SAFETY: `slot` is the metadata slot of the block's page, in the marks table, in a
        // chunk this client holds.
        unsafe { *self.marks.cast::<u16>().add(slot) = meta(CACHED, pages - 1) };
        self.cached_large += pages << self.geo.page_shift;
        true
    }

    /// Takes the most recently cached block of `class`, if any.
    #[inline]
    pub(super) fn uncache_small(&mut self, class: usize) -> Option<usize> {
        let (bin, base) = small_bin(class);
        let c = self.cache.as_deref_mut()?;
        let len = c.len[bin].checked_sub(1)?;
        c.len[bin] = len;
        // SAFETY: `len` is below the bin's length, at most its number of entries.
        Some(unsafe { *c.offs.get_unchecked(base + usize::from(len)) })
    }

    /// Takes a cached block of `order` (aligned to `2^order` pages) and cuts it to `pages`
    /// pages, its tail given back as free blocks (its page metadata is the caller's to set). Of
    /// the cached blocks it takes the one whose length shares the most leading bits with
    /// `pages`, so the fewest tail pieces change. If that block's tail is partly in use and
    /// must change, nothing changes and the result is [`Uncached::Stuck`]: the caller gives
    /// that block back with [`evict_large`](Self::evict_large) once its allocation has
    /// succeeded (so that a failed allocation still changes nothing).
    #[inline]
    pub(super) fn uncache_large(&mut self, pages: usize, order: u32) -> Uncached {
        let (bin, base) = large_bin(order);
        let Some(c) = self.cache.as_deref_mut() else {
            return Uncached::Miss;
        };
        let Some(last) = c.len[bin].checked_sub(1) else {
            return Uncached::Miss;
        };
        let last = usize::from(last) % LARGE_ENTRIES;
        let lens: &[u16; LARGE_ENTRIES] = c.pages[base - LARGE_BASE..][..LARGE_ENTRIES]
            .try_into()
            .unwrap_or(&[1; LARGE_ENTRIES]);
        let best = nearest_length(lens, last, pages - 1);
        let had = usize::from(lens[best]);
        let off = c.offs[base + best];
        if had != pages {
            let shift = self.geo.page_shift;
            // SAFETY: `off` is a cached buddy block of this client (invariant 7: held).
            let chunk = unsafe { self.chunk_of(off) };
            let rel = (off >> shift) & ((1 << self.geo.max_order) - 1);
            if !self.retrim(chunk, rel, had, pages, order) {
                return Uncached::Stuck(off);
            }
            let info = self.info(chunk);
            info.used = info.used + (pages << shift) - (had << shift);
        }
        if let Some(c) = self.cache.as_deref_mut() {
            c.offs[base + best] = c.offs[base + last];
            c.pages[base - LARGE_BASE + best] = c.pages[base - LARGE_BASE + last];
            c.len[bin] -= 1;
        }
        self.cached_large -= had << self.geo.page_shift;
        Uncached::Hit(off)
    }

    /// Gives the cached block of `order` at `off`, if it is still cached, back to the buddy
    /// allocator.
    #[cold]
    pub(super) fn evict_large(&mut self, arena: &Arena, order: u32, off: usize) {
        let (bin, base) = large_bin(order);
        let Some(c) = self.cache.as_deref_mut() else {
            return;
        };
        let len = usize::from(c.len[bin]);
        let Some(i) = c.offs[base..base + len].iter().position(|&o| o == off) else {
            return;
        };
        let pages = usize::from(c.pages[base - LARGE_BASE + i]);
        c.offs[base + i] = c.offs[base + len - 1];
        c.pages[base - LARGE_BASE + i] = c.pages[base - LARGE_BASE + len - 1];
        c.len[bin] -= 1;
        self.cached_large -= pages << self.geo.page_shift;
        self.set_page(off >> self.geo.page_shift, 0);
        self.free_pages(arena, off, pages);
    }

    /// Turns the held block of `had` pages at page `rel` of `chunk` (aligned to `2^order`
    /// pages, `had` and `pages` at most that), whose tail pieces are free, into a block of
    /// `pages` pages with the tail pieces of that length free: only the pieces the two tails do
    /// not share change. False, with nothing changed, if one of those pieces is in use.
    #[inline]
    fn retrim(
        &mut self,
        chunk: HeldChunk,
        rel: usize,
        had: usize,
        pages: usize,
        order: u32,
    ) -> bool {
        // The tail of a block of `n` pages is one piece of order `i` for each bit `i` of
        // `t = 2^order - n`, at page `2^order - (t >> i << i)`. Pieces of the two tails below
        // the highest bit where the `t`s differ differ; the others are the same.
        debug_assert_ne!(had, pages);
        let end = 1usize << order;
        let (t_had, t_pages) = (end - had, end - pages);
        let below = (2usize << (usize::BITS - 1 - (t_had ^ t_pages).leading_zeros())) - 1;
        let top = rel + end;
        if !tail_pieces(top, t_had, below).all(|(i, at)| self.is_free(chunk, i, at)) {
            return false;
        }
        for (i, at) in tail_pieces(top, t_had, below) {
            self.clear_free(chunk, i, at);
        }
        for (i, at) in tail_pieces(top, t_pages, below) {
            self.set_free(chunk, i, at);
        }
        true
    }

    /// Gives every cached block back: small blocks to their slabs (with `reclaim`, a slab
    /// left empty goes back to the buddy allocator even if it is the only empty one of its
    /// class), buddy blocks to the free bitmaps.
    #[cold]
    pub(super) fn flush(&mut self, arena: &Arena, reclaim: bool) {
        for class in 0..NCLASSES {
            while let Some(off) = self.uncache_small(class) {
                self.free_small(arena, off, class, reclaim);
            }
            if reclaim && self.empty_slabs[class] != 0 {
                // The empty slab kept for the class goes too.
                let mut slab = self.partial[class];
                while !slab.is_null() {
                    // SAFETY: `slab` is on this client's partial list of `class`, so it is a
                    // record of a live slab; it is dropped only after its link is read.
                    unsafe {
                        let next = self.next_slab(slab);
                        if self.slab_live(slab, class) == 0 {
                            self.drop_slab(arena, slab, class);
                        }
                        slab = next;
                    }
                }
            }
        }
        let shift = self.geo.page_shift;
        for bin in CLASS_SLOTS..BINS {
            while let Some(c) = self.cache.as_deref_mut()
                && let Some(len) = c.len[bin].checked_sub(1)
            {
                c.len[bin] = len;
                let at = LARGE_BASE + (bin - CLASS_SLOTS) * LARGE_ENTRIES + usize::from(len);
                let (off, pages) = (c.offs[at], usize::from(c.pages[at - LARGE_BASE]));
                self.cached_large -= pages << shift;
                self.set_page(off >> shift, 0);
                self.free_pages(arena, off, pages);
            }
        }
        if self.geo.flags.contains(Flags::STATISTICS) {
            self.report_cached(arena);
        }
    }

    /// Gives back what chunk `chunk`, just left without a live block while the client keeps
    /// another such chunk, still holds — its cached blocks and its empty slabs — and so the
    /// chunk itself (the last piece given back releases it).
    #[cold]
    pub(super) fn purge(&mut self, arena: &Arena, chunk: usize) {
        let chunk_shift = self.geo.chunk_shift;
        // The chunk goes back with the last piece given back: whether it is still held is
        // asked of the owner table.
        let held = |s: &Self| HeldChunk::checked(arena.owners(), s.id, chunk);
        // The entries of a bin before `i` lie in other chunks; the scan for the next one in
        // `chunk` is a tight loop over the rest.
        let in_chunk = |off: &usize| *off >> chunk_shift == chunk;
        for class in 0..NCLASSES {
            let (bin, base) = small_bin(class);
            let mut i = 0;
            while let Some(c) = self.cache.as_deref_mut()
                && let Some(found) = c.offs[base + i..base + usize::from(c.len[bin])]
                    .iter()
                    .position(in_chunk)
            {
                i += found;
                let off = c.offs[base + i];
                let last = usize::from(c.len[bin]) - 1;
                c.offs[base + i] = c.offs[base + last];
                c.len[bin] -= 1;
                self.free_small(arena, off, class, true);
            }
        }
        for order in 0..=self.geo.max_order {
            let (bin, base) = large_bin(order);
            let mut i = 0;
            while let Some(c) = self.cache.as_deref_mut()
                && let Some(found) = c.offs[base + i..base + usize::from(c.len[bin])]
                    .iter()
                    .position(in_chunk)
            {
                i += found;
                let off = c.offs[base + i];
                let last = usize::from(c.len[bin]) - 1;
                let pages = usize::from(c.pages[base - LARGE_BASE + i]);
                c.offs[base + i] = c.offs[base + last];
                c.pages[base - LARGE_BASE + i] = c.pages[base - LARGE_BASE + last];
                c.len[bin] -= 1;
                self.cached_large -= pages << self.geo.page_shift;
                self.set_page(off >> self.geo.page_shift, 0);
                self.free_pages(arena, off, pages);
            }
        }
        if held(self).is_some() {
            for class in 0..NCLASSES {
                if self.empty_slabs[class] == 0 {
                    continue;
                }
                let mut slab = self.partial[class];
                while !slab.is_null() {
                    // SAFETY: `slab` is on this client's partial list of `class`, so it is a
                    // record of a live slab; it is dropped only after its link is read.
                    unsafe {
                        let next = self.next_slab(slab);
                        if self.slab_live(slab, class) == 0
                            && self.slab_start(slab) >> chunk_shift == chunk
                        {
                            self.drop_slab(arena, slab, class);
                        }
                        slab = next;
                    }
                }
            }
        }
        if let Some(chunk) = held(self)
            && self.info(chunk).used == 0
        {
            self.release_chunk(arena, chunk);
        }
        if self.geo.flags.contains(Flags::STATISTICS) {
            self.report_cached(arena);
        }
    }

    /// Gives back every cached block, every empty slab and every chunk without a block.
    pub(super) fn trim(&mut self, arena: &Arena) {
        self.flush(arena, true);
        let mut chunk = self.chunk_head;
        while chunk != super::NIL {
            let held = Self::listed(chunk);
            let next = self.info(held).next;
            if self.info(held).used == 0 {
                self.release_chunk(arena, held);
            }
            chunk = next;
        }
    }

    /// Whether [`flush`](Self::flush) with `reclaim` would leave a free buddy block of at
    /// least `order`, given that none is free now: whether some aligned run of `2^order`
    /// pages would then be all free. Changes nothing (not even the order of the caches, which
    /// decides the blocks later allocations get). Cold: it walks the partial lists of
    /// classes with an empty slab once, to find those slabs, and then, for each block a
    /// flush gives back, the caches and those slabs (at most about 1,700 entries and 24 slabs,
    /// so at most a few million steps, however many slabs the client has).
    #[cold]
    pub(super) fn flush_would_free(&self, order: u32) -> bool {
        if self.cached_bytes() == 0 && self.empty_slabs.iter().all(|&n| n == 0) {
            return false;
        }
        let size = 1usize << order;
        let mut sorted = SortedBins::new();
        self.sort_small_bins(&mut sorted);
        let mut found = false;
        self.each_flushed(&sorted, &mut |chunk, rel, pages| {
            // A block of `pages` pages lies at a multiple of `pages.next_power_of_two()`:
            // either it covers a whole run of `size` pages, or it lies inside one.
            if pages >= size {
                found = true;
                return true;
            }
            let region = rel & !(size - 1);
            let mut free = self.free_pages_in(chunk, region, order);
            self.each_flushed(&sorted, &mut |c, r, n| {
                if c == chunk && (region..region + size).contains(&r) {
                    free += n;
                }
                false
            });
            debug_assert!(free <= size);
            found = free == size;
            found
        });
        found
    }

    /// The order of each small bin by offset, which puts the blocks of one slab side by side
    /// (the bins themselves keep their order), and the kept empty slabs, found with one walk
    /// of the partial list of each class that has one, written into `sorted` (made by the
    /// caller, [`SortedBins::new`]: returned by value, its 1.9 KiB were copied once a call).
    fn sort_small_bins(&self, sorted: &mut SortedBins) {
        for class in 0..NCLASSES {
            // A class keeps at most one empty slab: a second one emptied goes back at once,
            // and a new slab is made only when the class has none with room.
            debug_assert!(self.empty_slabs[class] <= 1);
            if self.empty_slabs[class] == 0 {
                continue;
            }
            let mut slab = self.partial[class];
            while !slab.is_null() {
                self.count_flush_visit();
                // SAFETY: `slab` is on this client's partial list, the record of a live slab.
                let (live, next) = unsafe { (self.slab_live(slab, class), self.next_slab(slab)) };
                if live == 0 {
                    sorted.empty[class] = slab;
                    break;
                }
                slab = next;
            }
        }
        if let Some(c) = self.cache.as_deref() {
            for class in 0..NCLASSES {
                let blocks = c.small(class);
                let order = &mut sorted.order[class][..blocks.len()];
                for (i, at) in (0..=u8::MAX).zip(order.iter_mut()) {
                    *at = i;
                }
                order.sort_unstable_by_key(|&i| blocks[usize::from(i)]);
                sorted.len[class] = blocks.len();
            }
        }
    }

    /// Calls `f(chunk, first page, pages)` for each buddy block a flush with `reclaim` gives
    /// back (cached buddy blocks, the slabs it empties and the empty slabs kept) until `f`
    /// returns true; `sorted` is [`sort_small_bins`](Self::sort_small_bins)'s. Walks no
    /// list: its cost is the cached blocks'.
    fn each_flushed(
        &self,
        sorted: &SortedBins,
        f: &mut dyn FnMut(HeldChunk, usize, usize) -> bool,
    ) {
        let shift = self.geo.page_shift;
        let page_mask = (1usize << self.geo.max_order) - 1;
        static NO_BINS: Caches = Caches::EMPTY;
        let c = self.cache.as_deref().unwrap_or(&NO_BINS);
        for (off, pages) in c.all_large() {
            self.count_flush_visit();
            // SAFETY: `off` is a cached buddy block of this client (invariant 7: held).
            let chunk = unsafe { self.chunk_of(off) };
            if f(chunk, (off >> shift) & page_mask, pages) {
                return;
            }
        }
        for class in 0..NCLASSES {
            let len = sorted.len[class];
            let (bin, order) = (c.small(class), &sorted.order[class][..len]);
            let block = |k: usize| bin[usize::from(order[k])];
            let pages = 1usize << self.geo.slab_order[class];
            let mut i = 0;
            while i < len {
                let (slab, _) = self.slab_of(block(i), class);
                let start = i;
                while i < len && self.slab_of(block(i), class).0 == slab {
                    self.count_flush_visit();
                    i += 1;
                }
                // SAFETY: cached blocks lie in live slabs of this client (a slab with a cached
                // block counts it as live, so it is not given back).
                let live = unsafe { self.slab_live(slab, class) };
                if live == i - start {
                    let off = self.slab_start(slab);
                    // SAFETY: a live slab of this client lies at `off`.
                    let chunk = unsafe { self.chunk_of(off) };
                    if f(chunk, (off >> shift) & page_mask, pages) {
                        return;
                    }
                }
            }
            let slab = sorted.empty[class];
            if !slab.is_null() {
                self.count_flush_visit();
                let off = self.slab_start(slab);
                // SAFETY: a slab on this client's partial list lies at `off`.
                let chunk = unsafe { self.chunk_of(off) };
                if f(chunk, (off >> shift) & page_mask, pages) {
                    return;
                }
            }
        }
    }

    /// Counts one entry, block or slab record visited by
    /// [`flush_would_free`](Self::flush_would_free) (tests only).
    #[inline]
    fn count_flush_visit(&self) {
        #[cfg(test)]
        self.flush_visits.set(self.flush_visits.get() + 1);
    }

    /// Pages of the free buddy blocks of orders below `order` inside the `2^order` pages from
    /// page `region` of `chunk`.
    fn free_pages_in(&self, chunk: HeldChunk, region: usize, order: u32) -> usize {
        let mut pages = 0;
        for o in 0..order {
            let first = region >> o;
            let count = 1usize << (order - o);
            let mut bits = 0;
            if count >= 64 {
                for index in (first..first + count).step_by(64) {
                    bits += self.free_word(chunk, o, index).count_ones();
                }
            } else {
                let word = self.free_word(chunk, o, first) >> (first % 64);
                bits = (word & ((1u64 << count) - 1)).count_ones();
            }
            pages += (bits as usize) << o;
        }
        pages
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::alloc::Layout;

    use super::{
        LARGE_ENTRIES, NCLASSES, SortedBins, State, nearest_length, nearest_length_scalar,
    };
    use crate::{Arena, Backing, Config, Quota};

    /// What [`State::each_flushed`] calls its function with, each block in the order it comes.
    type Flushed = Vec<(usize, usize, usize)>;

    /// The blocks a flush gives back, found as before the small bins' orders were sorted in
    /// place of their offsets: each bin copied and the copy sorted, its blocks then grouped
    /// by slab.
    fn flushed_by_sorted_copies(s: &State) -> Flushed {
        let mut sorted = SortedBins::new();
        s.sort_small_bins(&mut sorted);
        let shift = s.geo.page_shift;
        let page_mask = (1usize << s.geo.max_order) - 1;
        let mut out = Flushed::new();
        let Some(c) = s.cache.as_deref() else {
            return out;
        };
        for (off, pages) in c.all_large() {
            // SAFETY: a cached buddy block of the client lies in a chunk it holds.
            let chunk = unsafe { s.chunk_of(off) };
            out.push((chunk.index(), (off >> shift) & page_mask, pages));
        }
        for class in 0..NCLASSES {
            let mut copy = c.small(class).to_vec();
            copy.sort_unstable();
            let pages = 1usize << s.geo.slab_order[class];
            let mut i = 0;
            while i < copy.len() {
                let (slab, _) = s.slab_of(copy[i], class);
                let start = i;
                while i < copy.len() && s.slab_of(copy[i], class).0 == slab {
                    i += 1;
                }
                // SAFETY: a slab with a cached block is a live slab of the client.
                if unsafe { s.slab_live(slab, class) } == i - start {
                    let off = s.slab_start(slab);
                    // SAFETY: as above.
                    let chunk = unsafe { s.chunk_of(off) };
                    out.push((chunk.index(), (off >> shift) & page_mask, pages));
                }
            }
            let slab = sorted.empty[class];
            if !slab.is_null() {
                let off = s.slab_start(slab);
                // SAFETY: a kept empty slab of the client.
                let chunk = unsafe { s.chunk_of(off) };
                out.push((chunk.index(), (off >> shift) & page_mask, pages));
            }
        }
        out
    }

    /// [`State::flush_would_free`] as it answered before, from the blocks the sorted copies
    /// find.
    fn would_free_by_sorted_copies(s: &State, flushed: &Flushed, order: u32) -> bool {
        if s.cached_bytes() == 0 && s.empty_slabs.iter().all(|&n| n == 0) {
            return false;
        }
        let size = 1usize << order;
        flushed.iter().any(|&(chunk, rel, pages)| {
            if pages >= size {
                return true;
            }
            let region = rel & !(size - 1);
            // SAFETY: `chunk` holds a block of the client.
            let held = unsafe { super::HeldChunk::new_unchecked(chunk) };
            let mut free = s.free_pages_in(held, region, order);
            for &(c, r, n) in flushed {
                if c == chunk && (region..region + size).contains(&r) {
                    free += n;
                }
            }
            free == size
        })
    }

    /// Over random contents of the bins (blocks of every size class, some slabs with all
    /// their blocks cached, buddy blocks beside them), the small bins' orders list each bin's
    /// blocks as a sorted copy of it does, a flush gives back the same blocks in the same
    /// order, and whether it frees a block of each order is answered as before.
    #[test]
    fn flush_would_free_answers_as_sorted_copies_of_the_bins() {
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        let (seeds, chunks) = if cfg!(miri) { (2, 3) } else { (60, 12) };
        let mut answers = [0usize; 2];
        for _ in 0..seeds {
            let config = Config::new().with_chunk_size(64 << 10);
            let arena = Arena::new(Backing::heap(chunks << 16, 4096).unwrap(), config).unwrap();
            let client = arena.create_client(Quota::UNLIMITED).unwrap();
            let mut live = Vec::new();
            // Small blocks mostly, of every class, and some buddy blocks, until no chunk is
            // left.
            let small_only = next().is_multiple_of(2);
            loop {
                let x = next();
                let size = if small_only || !x.is_multiple_of(5) {
                    1 + usize::try_from((x >> 8) % 2048).unwrap()
                } else {
                    2049 + usize::try_from((x >> 8) % 30_000).unwrap()
                };
                match client.alloc(Layout::from_size_align(size, 8).unwrap()) {
                    Ok(p) => live.push(p),
                    Err(_) => break,
                }
            }
            // Freed in a random order, a random share of them: sparse frees cache blocks of
            // many slabs, dense ones empty whole slabs.
            let share = 1 + next() % 9;
            while !live.is_empty() {
                let at = usize::try_from(next() % live.len() as u64).unwrap();
                let p = live.swap_remove(at);
                if next() % 10 < share {
                    // SAFETY: never used again.
                    unsafe { client.free(p) }.unwrap();
                }
            }
            client.with(|s| {
                let mut sorted = SortedBins::new();
                s.sort_small_bins(&mut sorted);
                let bins = s.cache.as_deref().unwrap();
                for class in 0..NCLASSES {
                    let mut copy = bins.small(class).to_vec();
                    copy.sort_unstable();
                    let len = sorted.len[class];
                    let by_order: Vec<usize> = sorted.order[class][..len]
                        .iter()
                        .map(|&i| bins.small(class)[usize::from(i)])
                        .collect();
                    assert_eq!(by_order, copy, "class {class}");
                }
                let mut flushed = Flushed::new();
                s.each_flushed(&sorted, &mut |chunk, rel, pages| {
                    flushed.push((chunk.index(), rel, pages));
                    false
                });
                let reference = flushed_by_sorted_copies(s);
                assert_eq!(flushed, reference);
                for order in 0..=s.geo.max_order {
                    let answer = s.flush_would_free(order);
                    assert_eq!(
                        answer,
                        would_free_by_sorted_copies(s, &reference, order),
                        "order {order}"
                    );
                    answers[usize::from(answer)] += 1;
                }
            });
        }
        assert!(
            answers[0] > 0 && answers[1] > 0,
            "both answers seen: {answers:?}"
        );
    }

    /// [`nearest_length`] as its docs define it, for the check of both forms.
    fn nearest_by_definition(lens: &[u16; LARGE_ENTRIES], last: usize, want: usize) -> usize {
        let diff = |i: usize| (usize::from(lens[i]) - 1) ^ want;
        (0..=last).min_by_key(|&i| (diff(i), i != last, i)).unwrap()
    }

    /// Both forms against the definition (on targets without SSE2 the two forms are one), over
    /// stale entries past `last` of any value.
    #[test]
    fn nearest_length_in_both_forms_is_the_nearest_by_definition() {
        let mut next = crate::test_rng::xorshift(0x2545_F491_4F6C_DD1D_u64);
        let rounds = if cfg!(miri) { 200 } else { 20_000 };
        for round in 0..rounds {
            // Lengths of up to 256 pages; a narrow range in every other round, so that ties
            // (several entries as near as the nearest) are common.
            let top: u64 = if round % 2 == 0 { 256 } else { 4 };
            let mut lens = [0u16; LARGE_ENTRIES];
            for n in &mut lens {
                // Entries past `last` hold what was there before, anything.
                *n = u16::try_from(next() & 0xFFFF).unwrap();
            }
            let last = usize::try_from(next() % 16).unwrap();
            for n in &mut lens[..=last] {
                *n = u16::try_from(1 + next() % top).unwrap();
            }
            let want = usize::try_from(next() % top).unwrap();
            let nearest = nearest_by_definition(&lens, last, want);
            assert_eq!(
                nearest_length(&lens, last, want),
                nearest,
                "{lens:?}, last {last}, want {want}"
            );
            assert_eq!(
                nearest_length_scalar(&lens, last, want),
                nearest,
                "{lens:?}, last {last}, want {want}"
            );
        }
    }

    /// The bounds the docs give for lengths that are multiples of a sixteenth of their power
    /// of two: the tail cut off the power-of-two block is at most three pieces, and the
    /// re-cut of a cached block to another length of its order clears and sets at most five,
    /// counted with the iterator `alloc_pages`' tail and `retrim` use, over every order.
    #[test]
    fn tails_and_recuts_of_sixteenth_lengths_stay_within_their_bound() {
        use super::super::LENGTH_STEPS;
        use super::tail_pieces;
        for order in 0..=crate::arena::MAX_ORDER {
            let end = 1usize << order;
            let step = (end / LENGTH_STEPS).max(1);
            let lengths: Vec<usize> = (end / 2 + 1..=end).filter(|n| n % step == 0).collect();
            for &had in &lengths {
                let tail = tail_pieces(end, end - had, usize::MAX).count();
                assert!(tail <= 3, "order {order}, {had} pages: {tail} pieces");
                for &pages in lengths.iter().filter(|&&p| p != had) {
                    // As `retrim` counts them: the pieces below the highest bit where the
                    // two tails differ, cleared for the one and set for the other.
                    let (t_had, t_pages) = (end - had, end - pages);
                    let below =
                        (2usize << (usize::BITS - 1 - (t_had ^ t_pages).leading_zeros())) - 1;
                    let changed = tail_pieces(end, t_had, below).count()
                        + tail_pieces(end, t_pages, below).count();
                    assert!(
                        changed <= 5,
                        "order {order}, {had} -> {pages} pages: {changed}"
                    );
                }
            }
        }
    }
}
