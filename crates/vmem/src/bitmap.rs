//! A fixed-size bitmap of pages with atomic updates.
//!
//! The words live in pages of their own, mapped straight from the OS (not the heap; the
//! bitmaps made together by `PageBitmap::new_many` share one mapping, each in whole pages of
//! it), so they start zeroed and a large bitmap of which only a few words are touched costs address
//! space but almost no memory: a 64 GiB reservation's 2 MiB bitmap is resident only where written.
//!
//! The bits are grouped in blocks of [`BLOCK_BITS`] (one 4 KiB page of words), each with a
//! state byte: all clear, all set, or mixed. Only a mixed block's words hold its bits; a set or
//! clear that covers a whole block writes its state byte alone, so recording a run over a whole
//! terabyte-sized reservation writes one byte per 32,768 pages and leaves the words untouched.
//! A run that cuts a block makes the block mixed (writing its 4 KiB of words once) and then
//! sets or clears words as a flat bitmap would.
//!
//! Writers take turns; readers never wait for them. A reader answers as a scan of a flat bitmap
//! would: each word as it was at some moment of the call, in the order read (see
//! `read_block` for how a block whose words are rewritten under a reader is read again).

use core::fmt;
use core::ptr::NonNull;
#[cfg(not(all(loom, test)))]
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

#[cfg(all(loom, test))]
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

#[cfg(not(all(loom, test)))]
use crate::page::page_size;
#[cfg(not(all(loom, test)))]
use crate::reservation::CommitMode;
#[cfg(not(all(loom, test)))]
use crate::sys;
use crate::sys::SysError;

const BITS: usize = 64;

/// Words per block: 4 KiB of words.
#[cfg(not(all(loom, test)))]
const BLOCK_WORDS: usize = 512;
/// Words per block in the loom models (`tests/loom_bitmap.rs`), where every access is a step
/// of the model: two words, so that a block has words before and after any bit.
#[cfg(all(loom, test))]
const BLOCK_WORDS: usize = 2;

/// Bits (pages) per block.
pub(crate) const BLOCK_BITS: usize = BLOCK_WORDS * BITS;

/// Block states. A fresh (zeroed) state byte is `CLEAR`.
const CLEAR: u8 = 0;
const SET: u8 = 1;
/// The block's words hold its bits.
const MIXED: u8 = 2;

/// One bit per page; bit set means the page has the property the bitmap tracks.
pub(crate) struct PageBitmap {
    words: NonNull<AtomicU64>,
    len_words: usize,
    /// One state byte per block of `BLOCK_WORDS` words, after the words in the same mapping.
    blocks: NonNull<AtomicU8>,
    len_blocks: usize,
    /// Bytes of the mapping this bitmap releases when dropped: its words and states, and
    /// those of the bitmaps made with it by `new_many` (a whole number of pages); 0 for those.
    #[cfg_attr(
        all(loom, test),
        allow(dead_code, reason = "the loom models map nothing")
    )]
    mapped: usize,
    pages: usize,
    /// Held by `set_range` and `clear_range` while they change states and words, so that a
    /// block's change of state and the words written with it are one step for other writers.
    writing: AtomicBool,
    /// How many times the words of a uniform block were rewritten to make it mixed: a reader
    /// of a mixed block's words reads them again if this moved meanwhile (see `read_block`).
    rewrites: AtomicU64,
}

// SAFETY: the bitmap owns its words and states and only touches them through atomics.
unsafe impl Send for PageBitmap {}
// SAFETY: all access through `&self` is atomic.
unsafe impl Sync for PageBitmap {}

impl fmt::Debug for PageBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBitmap")
            .field("pages", &self.pages)
            .finish()
    }
}

/// Yields `(word index, mask)` for each word that bits `first..first + count` touch.
fn word_masks(first: usize, count: usize) -> impl DoubleEndedIterator<Item = (usize, u64)> {
    let end = first + count;
    let first_word = first / BITS;
    let end_word = end.div_ceil(BITS);
    (first_word..end_word).map(move |w| {
        let lo = if w == first_word { first % BITS } else { 0 };
        let hi = if w + 1 == end_word && !end.is_multiple_of(BITS) {
            end % BITS
        } else {
            BITS
        };
        let mask = if hi - lo == BITS {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        (w, mask)
    })
}

/// A part of a bit range inside one block.
#[derive(Clone, Copy, Debug)]
struct Segment {
    block: usize,
    first: usize,
    count: usize,
}

/// Yields the non-empty parts, block by block, of bits `first..first + count`.
fn segments(first: usize, count: usize) -> impl DoubleEndedIterator<Item = Segment> {
    let end = first + count;
    let first_block = first / BLOCK_BITS;
    let end_block = end.div_ceil(BLOCK_BITS);
    (first_block..end_block).filter_map(move |block| {
        let lo = first.max(block * BLOCK_BITS);
        // The last block may end past `usize::MAX`; the range ends before that.
        let hi = end.min((block + 1).saturating_mul(BLOCK_BITS));
        (hi > lo).then_some(Segment {
            block,
            first: lo,
            count: hi - lo,
        })
    })
}

/// Releases the writer's hold of a bitmap when dropped (also while unwinding).
struct Writing<'a>(&'a AtomicBool);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
std::thread_local! {
    /// How many bitmaps this thread asked the system for (`new_many` counts each).
    static MADE: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// How many bitmaps this thread asked the system for so far.
#[cfg(all(test, not(loom)))]
pub(crate) fn made() -> usize {
    MADE.with(core::cell::Cell::get)
}

impl PageBitmap {
    /// A bitmap of `pages` clear bits, its words and states on the heap (loom's atomics are
    /// objects of the model, not bytes of a zeroed mapping).
    #[cfg(all(loom, test))]
    pub(crate) fn new(pages: usize) -> Result<Self, SysError> {
        let len_words = pages.div_ceil(BITS).max(1);
        let len_blocks = len_words.div_ceil(BLOCK_WORDS);
        let words: alloc::boxed::Box<[AtomicU64]> =
            (0..len_words).map(|_| AtomicU64::new(0)).collect();
        let blocks: alloc::boxed::Box<[AtomicU8]> =
            (0..len_blocks).map(|_| AtomicU8::new(CLEAR)).collect();
        Ok(Self {
            words: NonNull::from(alloc::boxed::Box::leak(words)).cast(),
            len_words,
            blocks: NonNull::from(alloc::boxed::Box::leak(blocks)).cast(),
            len_blocks,
            mapped: 0,
            pages,
            writing: AtomicBool::new(false),
            rewrites: AtomicU64::new(0),
        })
    }

    /// A bitmap of `pages` clear bits, in a mapping of its own.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn new(pages: usize) -> Result<Self, SysError> {
        // SAFETY: a single bitmap owns its mapping.
        let [bitmap] = unsafe { Self::new_many(pages) }?;
        Ok(bitmap)
    }

    /// `N` bitmaps of `pages` clear bits each, their words and states in one mapping (one
    /// system call to make it and one to release it, not `N`), which the first owns: it
    /// releases the mapping when dropped, the others release nothing.
    ///
    /// # Safety
    /// The bitmaps after the first are not used after the first is dropped (they may be
    /// dropped after it: their drop touches nothing).
    #[cfg(not(all(loom, test)))]
    pub(crate) unsafe fn new_many<const N: usize>(pages: usize) -> Result<[Self; N], SysError> {
        #[cfg(test)]
        MADE.with(|made| made.set(made.get() + N));
        let len_words = pages.div_ceil(BITS).max(1);
        let len_blocks = len_words.div_ceil(BLOCK_WORDS);
        let page = page_size();
        // `len_words * 8` cannot overflow: it is at most `usize::MAX / 8 + 8` bytes, and the
        // states add one byte per 512 words.
        let each = (len_words * size_of::<AtomicU64>() + len_blocks).next_multiple_of(page);
        // Far below `usize::MAX` for a reservation's pages (an eighth of a byte per page and
        // bitmap); were it saturated, the system would refuse the length.
        let mapped = each.saturating_mul(N);
        // A sparse reservation is read-write and zeroed on Unix; committing it is needed on
        // Windows and free elsewhere.
        let base = sys::reserve(mapped, page, CommitMode::Sparse)?;
        // SAFETY: `base..base + mapped` is the reservation just made.
        if let Err(e) = unsafe { sys::commit(base.as_ptr(), mapped, CommitMode::Sparse) } {
            // SAFETY: releasing the reservation just made, which nothing else refers to.
            unsafe { sys::release(base, mapped, page) };
            return Err(e);
        }
        Ok(core::array::from_fn(|index| {
            // SAFETY: bitmap `index < N` takes `each` bytes from `index * each`, inside the
            // mapping (`N * each` bytes); its states start right after its words.
            let (words, blocks) = unsafe {
                let words = base.add(index * each);
                (words, words.add(len_words * size_of::<AtomicU64>()))
            };
            Self {
                words: words.cast(),
                len_words,
                blocks: blocks.cast(),
                len_blocks,
                mapped: if index == 0 { mapped } else { 0 },
                pages,
                writing: AtomicBool::new(false),
                rewrites: AtomicU64::new(0),
            }
        }))
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.len_words,
            "bitmap word {index} out of {}",
            self.len_words
        );
        // SAFETY: `index` is in bounds (checked above); the words are fresh zeroed pages, page
        // aligned, and zero is a valid `AtomicU64` (in the loom models, a box of initialised
        // atomics); the mapping (box) lives as long as `self`.
        unsafe { self.words.add(index).as_ref() }
    }

    fn state(&self, block: usize) -> &AtomicU8 {
        assert!(
            block < self.len_blocks,
            "bitmap block {block} out of {}",
            self.len_blocks
        );
        // SAFETY: `block` is in bounds (checked above); the states are bytes of the zeroed
        // mapping (any address is aligned for `AtomicU8`), and zero is a valid `AtomicU8` (in
        // the loom models, a box of initialised atomics); the mapping (box) lives as long as
        // `self`.
        unsafe { self.blocks.add(block).as_ref() }
    }

    /// The value of word `w` in a block whose state was read as `state`.
    fn word_in(&self, state: u8, w: usize) -> u64 {
        match state {
            CLEAR => 0,
            SET => u64::MAX,
            _ => self.word(w).load(Ordering::Acquire),
        }
    }

    fn check(&self, first: usize, count: usize) {
        assert!(
            first
                .checked_add(count)
                .is_some_and(|end| end <= self.pages),
            "bit range {first}+{count} outside a bitmap of {} pages",
            self.pages
        );
    }

    /// Reads block `block` with `read`, which is given the block's state and reads its words
    /// only if that state is `MIXED`; returns its answer.
    ///
    /// A block's words are true while it is mixed and left as they were (stale) while it is
    /// uniform, until a writer cuts it and rewrites them. So a reader that read the state as
    /// mixed just before a writer made the block uniform and cut it again would otherwise join
    /// words rewritten for the new state with stale words of the old one: an answer that no
    /// order of the writes gives (a first clear bit that was never the first clear one). Every
    /// rewrite moves `rewrites` before its words (and releases it with them), so a reader that
    /// read any rewritten word sees the count moved and reads the block again; one that sees
    /// it unchanged read each word as it was at some moment of its read, in the order it read
    /// them, as from a flat bitmap. A retry means a writer rewrote a block meanwhile (at most
    /// two per call), so readers never wait for a writer that does not progress.
    fn read_block<R>(&self, block: usize, mut read: impl FnMut(u8) -> R) -> R {
        loop {
            let rewrites = self.rewrites.load(Ordering::Acquire);
            let state = self.state(block).load(Ordering::Acquire);
            let answer = read(state);
            // Relaxed is enough: a rewritten word read with `Acquire` orders its rewrite's
            // count before this load.
            if state != MIXED || self.rewrites.load(Ordering::Relaxed) == rewrites {
                return answer;
            }
        }
    }

    /// Holds the bitmap for one writer until the result is dropped. Writers of a reservation's
    /// bitmaps already take turns (its call lock), so this never waits there.
    fn hold(&self) -> Writing<'_> {
        while self
            .writing
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            #[cfg(not(all(loom, test)))]
            core::hint::spin_loop();
            #[cfg(all(loom, test))]
            loom::hint::spin_loop();
        }
        Writing(&self.writing)
    }

    /// Sets (`value`) or clears the bits of `segment`; returns how many of them changed. The
    /// caller holds the bitmap (`hold`).
    fn fill(&self, segment: Segment, value: bool) -> usize {
        let (uniform, opposite) = if value { (SET, CLEAR) } else { (CLEAR, SET) };
        let state = self.state(segment.block);
        let before = state.load(Ordering::Acquire);
        if before == uniform {
            return 0;
        }
        let block_first = segment.block * BLOCK_BITS;
        let block_end = block_first.saturating_add(BLOCK_BITS).min(self.pages);
        if segment.first == block_first && segment.first + segment.count == block_end {
            // The whole block: its state says it, its words are left as they are (a mixed
            // block's words are read for the count; no other writer changes them meanwhile).
            let changed = if before == opposite {
                segment.count
            } else {
                word_masks(segment.first, segment.count)
                    .map(|(w, mask)| {
                        let old = self.word(w).load(Ordering::Acquire);
                        let differ = if value { mask & !old } else { mask & old };
                        differ.count_ones() as usize
                    })
                    .sum()
            };
            // Release: a reader that sees the new state sees what the caller did before.
            state.store(uniform, Ordering::Release);
            return changed;
        }
        if before == opposite {
            // The words of a uniform block may be stale: write them out first, then let
            // readers look at them (Release: a reader that sees `MIXED` sees these words).
            // A reader that read the state as mixed before the block became uniform may be
            // reading these words as they are rewritten: count the rewrite first, and release
            // it with each word, so that such a reader, having read a rewritten word, sees the
            // count moved and reads the block again (`read_block`).
            self.rewrites.fetch_add(1, Ordering::Release);
            let fill = if opposite == SET { u64::MAX } else { 0 };
            let first_word = segment.block * BLOCK_WORDS;
            let end_word = (first_word + BLOCK_WORDS).min(self.len_words);
            for w in first_word..end_word {
                self.word(w).store(fill, Ordering::Release);
            }
            state.store(MIXED, Ordering::Release);
        }
        word_masks(segment.first, segment.count)
            .map(|(w, mask)| {
                if value {
                    let old = self.word(w).fetch_or(mask, Ordering::AcqRel);
                    (mask & !old).count_ones() as usize
                } else {
                    let old = self.word(w).fetch_and(!mask, Ordering::AcqRel);
                    (mask & old).count_ones() as usize
                }
            })
            .sum()
    }

    /// Sets bits `first..first + count`; returns how many of them were clear before. Writers
    /// take turns (each call holds the bitmap), so concurrent calls never count a bit twice.
    /// Costs one state byte per whole block of the range, and words only in the (at most two)
    /// blocks the range cuts and in blocks already mixed.
    pub(crate) fn set_range(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        let _writing = self.hold();
        segments(first, count)
            .map(|segment| self.fill(segment, true))
            .sum()
    }

    /// Clears bits `first..first + count`; returns how many of them were set before (counted
    /// as in [`set_range`](Self::set_range)).
    pub(crate) fn clear_range(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        let _writing = self.hold();
        segments(first, count)
            .map(|segment| self.fill(segment, false))
            .sum()
    }

    /// The first bit of `segment` whose value is `value`, if any.
    fn first_in(&self, segment: Segment, value: bool) -> Option<usize> {
        self.read_block(segment.block, |state| match (state, value) {
            (CLEAR, false) | (SET, true) => Some(segment.first),
            (CLEAR, true) | (SET, false) => None,
            _ => word_masks(segment.first, segment.count).find_map(|(w, mask)| {
                let word = self.word_in(state, w);
                let bits = if value { word } else { !word } & mask;
                (bits != 0).then(|| w * BITS + bits.trailing_zeros() as usize)
            }),
        })
    }

    /// The first bit in `first..first + count` that is clear, if any.
    pub(crate) fn first_clear(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        segments(first, count).find_map(|segment| self.first_in(segment, false))
    }

    /// The first bit in `first..first + count` that is set, if any.
    pub(crate) fn first_set(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        segments(first, count).find_map(|segment| self.first_in(segment, true))
    }

    /// The last bit in `first..first + count` that is set, if any.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "only the tests and the loom models read backwards"
        )
    )]
    pub(crate) fn last_set(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        segments(first, count).rev().find_map(|segment| {
            self.read_block(segment.block, |state| match state {
                CLEAR => None,
                SET => Some(segment.first + segment.count - 1),
                _ => word_masks(segment.first, segment.count)
                    .rev()
                    .find_map(|(w, mask)| {
                        let present = self.word_in(state, w) & mask;
                        (present != 0)
                            .then(|| w * BITS + (BITS - 1 - present.leading_zeros() as usize))
                    }),
            })
        })
    }

    /// The first bit in `first..first + count` that is set here and clear in `other`.
    pub(crate) fn first_set_where_clear_in(
        &self,
        other: &PageBitmap,
        first: usize,
        count: usize,
    ) -> Option<usize> {
        self.check(first, count);
        other.check(first, count);
        segments(first, count).find_map(|segment| {
            // Both blocks as `read_block` reads one: again if either was read mixed and its
            // bitmap rewrote a block meanwhile.
            self.read_block(segment.block, |here| {
                other.read_block(segment.block, |there| match (here, there) {
                    (CLEAR, _) | (_, SET) => None,
                    (SET, CLEAR) => Some(segment.first),
                    _ => word_masks(segment.first, segment.count).find_map(|(w, mask)| {
                        let bits = self.word_in(here, w) & !other.word_in(there, w) & mask;
                        (bits != 0).then(|| w * BITS + bits.trailing_zeros() as usize)
                    }),
                })
            })
        })
    }

    /// Whether bit `index` is set.
    pub(crate) fn get(&self, index: usize) -> bool {
        self.check(index, 1);
        let state = self.state(index / BLOCK_BITS).load(Ordering::Acquire);
        self.word_in(state, index / BITS) & (1 << (index % BITS)) != 0
    }

    /// Bytes of the mapping the bitmap owns (words and states; those of all the bitmaps made
    /// with it, for the first of `new_many`, and none for the others) that are resident: what
    /// writing them has cost in memory.
    #[cfg(all(
        test,
        not(loom),
        not(miri),
        target_pointer_width = "64",
        any(target_os = "linux", target_os = "android")
    ))]
    pub(crate) fn resident_bytes(&self) -> usize {
        if self.mapped == 0 {
            return 0;
        }
        let page = page_size();
        let mut resident = alloc::vec![0u8; self.mapped / page];
        // SAFETY: `words..words + mapped` is the mapping the bitmap owns; `resident` has a
        // byte per page of it.
        unsafe { sys::residency(self.words.as_ptr().cast(), self.mapped, &mut resident) }
            .expect("mincore of a bitmap");
        resident.iter().filter(|&&b| b & 1 != 0).count() * page
    }

    /// The number of set bits in `first..first + count`.
    #[cfg(test)]
    pub(crate) fn count_set(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        segments(first, count)
            .map(|segment| {
                self.read_block(segment.block, |state| {
                    word_masks(segment.first, segment.count)
                        .map(|(w, mask)| (self.word_in(state, w) & mask).count_ones() as usize)
                        .sum::<usize>()
                })
            })
            .sum()
    }
}

#[cfg(all(loom, test))]
impl Drop for PageBitmap {
    fn drop(&mut self) {
        // SAFETY: `words` and `blocks` were leaked from boxes of these lengths in `new` and are
        // freed once.
        unsafe {
            drop(alloc::boxed::Box::from_raw(
                core::ptr::slice_from_raw_parts_mut(self.words.as_ptr(), self.len_words),
            ));
            drop(alloc::boxed::Box::from_raw(
                core::ptr::slice_from_raw_parts_mut(self.blocks.as_ptr(), self.len_blocks),
            ));
        }
    }
}

#[cfg(not(all(loom, test)))]
impl Drop for PageBitmap {
    fn drop(&mut self) {
        // A bitmap after the first of `new_many` owns no mapping.
        if self.mapped == 0 {
            return;
        }
        // SAFETY: `words` was reserved in `new_many` with this length and the page alignment,
        // and is released once; the bitmaps sharing it are no longer used (its contract).
        unsafe { sys::release(self.words.cast(), self.mapped, page_size()) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn set_range_across_words_sets_exactly_those_bits() {
        let b = PageBitmap::new(200).unwrap();
        b.set_range(60, 70);
        assert_eq!(b.count_set(0, 200), 70);
        assert!(!b.get(59));
        assert!(b.get(60));
        assert!(b.get(129));
        assert!(!b.get(130));
        assert_eq!(b.first_set(0, 200), Some(60));
        assert_eq!(b.first_clear(60, 100), Some(130));
    }

    #[test]
    fn clear_range_full_words_clears() {
        let b = PageBitmap::new(256).unwrap();
        assert_eq!(b.set_range(0, 256), 256);
        assert_eq!(b.set_range(10, 100), 0);
        assert_eq!(b.clear_range(64, 128), 128);
        assert_eq!(b.count_set(0, 256), 128);
        assert_eq!(b.first_clear(0, 256), Some(64));
        assert_eq!(b.clear_range(60, 10), 4);
        assert_eq!(b.first_set(64, 192), Some(192));
    }

    #[test]
    fn segments_of_a_range_ending_at_the_top_of_usize_stay_in_it() {
        // The last block of such a range ends past `usize::MAX`: its part ends at the range's
        // end. (A bitmap that long cannot be mapped on 64-bit targets; on 32-bit ones it takes
        // 512 MiB of address space.)
        let first = usize::MAX - 10;
        let parts: alloc::vec::Vec<Segment> = segments(first, 10).collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].block, parts[0].first, parts[0].count),
            (first / BLOCK_BITS, first, 10)
        );
        let across = usize::MAX / BLOCK_BITS * BLOCK_BITS - 5;
        let parts: alloc::vec::Vec<Segment> = segments(across, usize::MAX - across).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].first, parts[0].count), (across, 5));
        assert_eq!(
            (parts[1].first, parts[1].count),
            (across + 5, usize::MAX - across - 5)
        );
    }

    #[test]
    fn empty_and_one_page_bitmaps_answer_every_query() {
        let empty = PageBitmap::new(0).unwrap();
        assert_eq!(empty.set_range(0, 0), 0);
        assert_eq!(empty.clear_range(0, 0), 0);
        assert_eq!(empty.first_clear(0, 0), None);
        assert_eq!(empty.first_set(0, 0), None);
        assert_eq!(empty.last_set(0, 0), None);
        assert_eq!(empty.first_set_where_clear_in(&empty, 0, 0), None);
        assert_eq!(empty.count_set(0, 0), 0);
        let one = PageBitmap::new(1).unwrap();
        assert_eq!(one.first_clear(0, 1), Some(0));
        assert_eq!(one.set_range(0, 1), 1);
        assert!(one.get(0));
        assert_eq!(one.last_set(0, 1), Some(0));
        assert_eq!(one.first_set_where_clear_in(&empty_of(1), 0, 1), Some(0));
        assert_eq!(one.clear_range(0, 1), 1);
        assert_eq!(one.first_set(0, 1), None);
    }

    fn empty_of(pages: usize) -> PageBitmap {
        PageBitmap::new(pages).unwrap()
    }

    /// Bitmaps made together share one mapping, each in whole pages of it: for lengths of one
    /// page, of words not filled, of blocks not filled, and where the words and states of each
    /// fill whole pages exactly or just spill into one more, writing every word and state of
    /// one (its first and last words through cut blocks, the others whole) changes no bit of
    /// another, and the first may be dropped before the rest.
    #[test]
    fn bitmaps_made_together_share_no_word_or_state() {
        let page = page_size();
        // The most words whose bytes and state bytes fit in one page; one more spills.
        let mut words = page / 8;
        while words * 8 + words.div_ceil(BLOCK_WORDS) > page {
            words -= 1;
        }
        let fills_page = words * BITS;
        let mut lengths = alloc::vec![1, 65, fills_page + BITS];
        if !cfg!(miri) {
            lengths.extend([
                63,
                64,
                BLOCK_BITS - 1,
                BLOCK_BITS,
                BLOCK_BITS + 1,
                fills_page,
                3 * BLOCK_BITS + 100,
                8 * page * BITS + 1,
            ]);
        }
        for pages in lengths {
            // SAFETY: the bitmaps are used only while the first lives, and the first is
            // dropped before the others below.
            let [first, rest @ ..] = unsafe { PageBitmap::new_many::<14>(pages) }.unwrap();
            let all: alloc::vec::Vec<&PageBitmap> =
                core::iter::once(&first).chain(rest.iter()).collect();
            for (i, written) in all.iter().enumerate() {
                assert_eq!(written.set_range(0, pages), pages, "{pages} pages");
                if pages > 2 {
                    // Cuts the first and last blocks: their words are written.
                    assert_eq!(written.clear_range(pages - 1, 1), 1);
                    assert_eq!(written.clear_range(0, 1), 1);
                    assert_eq!(written.count_set(0, pages), pages - 2);
                }
                for (j, other) in all.iter().enumerate() {
                    if j != i {
                        assert_eq!(other.first_set(0, pages), None, "{pages} pages: {i} in {j}");
                    }
                }
                written.clear_range(0, pages);
            }
            drop(all);
            drop(first);
            drop(rest);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not map memory from the system")]
    // On 32-bit systems the bitmap of `usize::MAX` pages is 512 MiB, which may well be had.
    #[cfg(target_pointer_width = "64")]
    fn lengths_past_the_address_space_are_refused() {
        for pages in [usize::MAX, usize::MAX - BLOCK_BITS, 1 << 60] {
            assert!(PageBitmap::new(pages).is_err(), "{pages} pages");
        }
    }

    #[test]
    #[should_panic(expected = "outside a bitmap")]
    fn set_range_past_end_panics() {
        PageBitmap::new(10).unwrap().set_range(5, 6);
    }

    #[test]
    fn whole_blocks_are_recorded_in_their_state_and_cut_blocks_in_words() {
        let pages = 3 * BLOCK_BITS + 100;
        let b = PageBitmap::new(pages).unwrap();
        assert_eq!(b.set_range(0, pages), pages);
        // No word was written: every block but the cut last one only changed state.
        assert!((0..3 * BLOCK_WORDS).all(|w| b.word(w).load(Ordering::Relaxed) == 0));
        assert_eq!(b.count_set(0, pages), pages);
        assert_eq!(b.first_clear(0, pages), None);
        assert_eq!(b.last_set(0, pages), Some(pages - 1));
        // Cutting a set block writes its words out as set, then clears the cut part.
        assert_eq!(b.clear_range(BLOCK_BITS - 3, 10), 10);
        assert_eq!(b.count_set(0, pages), pages - 10);
        assert_eq!(b.first_clear(0, pages), Some(BLOCK_BITS - 3));
        assert_eq!(
            b.first_set(BLOCK_BITS - 3, pages - BLOCK_BITS + 3),
            Some(BLOCK_BITS + 7)
        );
        assert!(b.get(BLOCK_BITS - 4) && !b.get(BLOCK_BITS + 6) && b.get(BLOCK_BITS + 7));
        // A whole-block clear over mixed blocks counts only the bits that were set.
        assert_eq!(b.clear_range(0, 2 * BLOCK_BITS), 2 * BLOCK_BITS - 10);
        assert_eq!(b.first_set(0, pages), Some(2 * BLOCK_BITS));
        // Stale words of a block cleared whole are not read back when it is cut again.
        assert_eq!(b.set_range(BLOCK_BITS + 1, 1), 1);
        assert_eq!(b.count_set(0, 2 * BLOCK_BITS), 1);
        assert_eq!(b.last_set(0, 2 * BLOCK_BITS), Some(BLOCK_BITS + 1));
        let other = PageBitmap::new(pages).unwrap();
        other.set_range(2 * BLOCK_BITS, BLOCK_BITS);
        assert_eq!(
            b.first_set_where_clear_in(&other, 0, pages),
            Some(BLOCK_BITS + 1)
        );
        assert_eq!(
            b.first_set_where_clear_in(&other, 2 * BLOCK_BITS, pages - 2 * BLOCK_BITS),
            Some(3 * BLOCK_BITS)
        );
        assert_eq!(other.first_set_where_clear_in(&b, 0, pages), None);
        // Empty ranges find nothing, also at a block's start.
        assert_eq!(b.first_clear(BLOCK_BITS, 0), None);
        assert_eq!(b.first_set(2 * BLOCK_BITS, 0), None);
        assert_eq!(b.set_range(pages, 0), 0);
    }

    #[test]
    fn concurrent_writers_never_count_a_bit_twice() {
        let pages = 2 * BLOCK_BITS + 64;
        let b = PageBitmap::new(pages).unwrap();
        let rounds = if cfg!(miri) { 4 } else { 100_000 };
        let start = std::sync::Barrier::new(2);
        // Each thread's net change: bits it set minus bits it cleared.
        let net = |set: usize, cleared: usize| set.cast_signed() - cleared.cast_signed();
        let counts: [isize; 2] = std::thread::scope(|s| {
            let whole = s.spawn(|| {
                start.wait();
                (0..rounds)
                    .map(|_| net(b.set_range(0, pages), b.clear_range(0, pages)))
                    .sum()
            });
            let cut = s.spawn(|| {
                start.wait();
                (0..rounds)
                    .map(|i| {
                        let at = (i * 997) % (pages - 70);
                        net(b.set_range(at, 70), b.clear_range(at + 10, 30))
                    })
                    .sum()
            });
            [whole.join().unwrap(), cut.join().unwrap()]
        });
        // Every change of a bit was counted by exactly one call.
        assert_eq!(counts[0] + counts[1], b.count_set(0, pages).cast_signed());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 1000 }))]
        #[test]
        fn bitmap_matches_bool_model(
            pages in 1usize..300,
            ops in proptest::collection::vec((any::<bool>(), 0usize..300, 0usize..300), 0..20),
        ) {
            let b = PageBitmap::new(pages).unwrap();
            let mut model = vec![false; pages];
            for (set, a, c) in ops {
                let first = a % pages;
                let count = c % (pages - first + 1);
                let changed = if set { b.set_range(first, count) } else { b.clear_range(first, count) };
                let want_changed = model[first..first + count].iter().filter(|&&x| x != set).count();
                prop_assert_eq!(changed, want_changed);
                for bit in &mut model[first..first + count] { *bit = set; }
                let first_q = (a / 2) % pages;
                let count_q = pages - first_q;
                let want_set = model[first_q..].iter().position(|&x| x).map(|i| i + first_q);
                let want_clear = model[first_q..].iter().position(|&x| !x).map(|i| i + first_q);
                prop_assert_eq!(b.first_set(first_q, count_q), want_set);
                prop_assert_eq!(b.first_clear(first_q, count_q), want_clear);
                let want_last = model[first_q..].iter().rposition(|&x| x).map(|i| i + first_q);
                prop_assert_eq!(b.last_set(first_q, count_q), want_last);
                let upto = model[..=first_q].iter().rposition(|&x| x);
                prop_assert_eq!(b.last_set(0, first_q + 1), upto);
                prop_assert_eq!(b.count_set(0, pages), model.iter().filter(|&&x| x).count());
                let none = PageBitmap::new(pages).unwrap();
                prop_assert_eq!(b.first_set_where_clear_in(&none, first_q, count_q), want_set);
                prop_assert_eq!(none.first_set_where_clear_in(&b, first_q, count_q), None);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        #[cfg_attr(miri, ignore = "models of several blocks are too slow under Miri")]
        fn bitmap_of_several_blocks_matches_bool_model(
            extra in 0usize..200,
            ops in proptest::collection::vec(
                (any::<bool>(), 0usize..4, 0usize..BLOCK_BITS, 0usize..4, 0usize..BLOCK_BITS),
                0..12,
            ),
        ) {
            // Ranges from and to block boundaries or anywhere near them, so that whole blocks,
            // cut blocks and both together all occur.
            let pages = 2 * BLOCK_BITS + extra;
            let b = PageBitmap::new(pages).unwrap();
            let mut model = vec![false; pages];
            let at = |block: usize, offset: usize| {
                let offset = if offset.is_multiple_of(3) { 0 } else { offset };
                (block * BLOCK_BITS + offset).min(pages)
            };
            for (set, b1, o1, b2, o2) in ops {
                let (lo, hi) = (at(b1, o1), at(b2, o2));
                let (first, end) = (lo.min(hi), lo.max(hi));
                let count = end - first;
                let changed = if set { b.set_range(first, count) } else { b.clear_range(first, count) };
                let want = model[first..end].iter().filter(|&&x| x != set).count();
                prop_assert_eq!(changed, want);
                for bit in &mut model[first..end] { *bit = set; }
                let q = lo.min(pages - 1);
                let want_set = model[q..].iter().position(|&x| x).map(|i| i + q);
                let want_clear = model[q..].iter().position(|&x| !x).map(|i| i + q);
                prop_assert_eq!(b.first_set(q, pages - q), want_set);
                prop_assert_eq!(b.first_clear(q, pages - q), want_clear);
                prop_assert_eq!(b.last_set(0, q + 1), model[..=q].iter().rposition(|&x| x));
                prop_assert_eq!(b.count_set(0, pages), model.iter().filter(|&&x| x).count());
                prop_assert_eq!(b.get(q), model[q]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        #[cfg_attr(miri, ignore = "models of several blocks are too slow under Miri")]
        fn two_bitmaps_of_several_blocks_answer_every_query_as_bool_models(
            extra in 0usize..130,
            ops in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), 0usize..3, -66isize..66, 0usize..3, -66isize..66),
                0..10,
            ),
            queries in proptest::collection::vec((0usize..3, -66isize..66, 0usize..3, -66isize..66), 3),
        ) {
            // Ranges from and to points at or near block edges (a word or a bit either side),
            // changing either bitmap, and every query over ranges of the same kind after each.
            let pages = 2 * BLOCK_BITS + extra;
            let bitmaps = [PageBitmap::new(pages).unwrap(), PageBitmap::new(pages).unwrap()];
            let mut models = [vec![false; pages], vec![false; pages]];
            let at = |block: usize, offset: isize| {
                (block * BLOCK_BITS).saturating_add_signed(offset).min(pages)
            };
            let range = |b1, o1, b2, o2| {
                let (lo, hi) = (at(b1, o1), at(b2, o2));
                (lo.min(hi), lo.max(hi))
            };
            for (which, set, b1, o1, b2, o2) in ops {
                let (first, end) = range(b1, o1, b2, o2);
                let (b, model) = (&bitmaps[usize::from(which)], &mut models[usize::from(which)]);
                let changed = if set {
                    b.set_range(first, end - first)
                } else {
                    b.clear_range(first, end - first)
                };
                prop_assert_eq!(changed, model[first..end].iter().filter(|&&x| x != set).count());
                model[first..end].fill(set);
                for &(q1, p1, q2, p2) in &queries {
                    let (first, end) = range(q1, p1, q2, p2);
                    let count = end - first;
                    for (b, model) in bitmaps.iter().zip(&models) {
                        let part = &model[first..end];
                        let at = |i: Option<usize>| i.map(|i| i + first);
                        prop_assert_eq!(b.first_set(first, count), at(part.iter().position(|&x| x)));
                        prop_assert_eq!(b.first_clear(first, count), at(part.iter().position(|&x| !x)));
                        prop_assert_eq!(b.last_set(first, count), at(part.iter().rposition(|&x| x)));
                        prop_assert_eq!(b.count_set(first, count), part.iter().filter(|&&x| x).count());
                        if first < pages {
                            prop_assert_eq!(b.get(first), model[first]);
                        }
                        if end > 0 {
                            prop_assert_eq!(b.get(end - 1), model[end - 1]);
                        }
                    }
                    for (here, there) in [(0, 1), (1, 0), (0, 0)] {
                        let want = (first..end).find(|&i| models[here][i] && !models[there][i]);
                        prop_assert_eq!(
                            bitmaps[here].first_set_where_clear_in(&bitmaps[there], first, count),
                            want
                        );
                    }
                }
            }
        }
    }

    /// The masks of the words that bits `first..end` touch, worked out bit by bit.
    fn chunks(first: usize, end: usize) -> impl DoubleEndedIterator<Item = (usize, u64)> {
        let words = if end > first {
            first / BITS..(end - 1) / BITS + 1
        } else {
            0..0
        };
        words.map(move |w| {
            let bits = first.max(w * BITS)..end.min((w + 1) * BITS);
            (w, bits.fold(0, |mask, i| mask | 1 << (i % BITS)))
        })
    }

    /// The states a flat bitmap passes through while calls `calls` of a cycle run, each call
    /// writing the words it changes in increasing order. A time `(c, k)` is the state once
    /// call `c` wrote the first `k` of its changed words.
    struct Timeline<'a> {
        /// The words before each call of the cycle (and, last, after the cycle).
        states: &'a [alloc::vec::Vec<u64>],
        /// The words each call of the cycle changes, in increasing order.
        changed: &'a [alloc::vec::Vec<usize>],
        calls: core::ops::Range<usize>,
    }

    impl Timeline<'_> {
        /// The earliest time no earlier than `from` at which word `w` satisfies `ok`.
        fn earliest(
            &self,
            w: usize,
            from: (usize, usize),
            ok: impl Fn(u64) -> bool,
        ) -> Option<(usize, usize)> {
            let cycle = self.changed.len();
            (from.0..self.calls.end).find_map(|c| {
                let start = if c == from.0 { from.1 } else { 0 };
                let old = self.states[c % cycle][w];
                let new = self.states[c % cycle + 1][w];
                match self.changed[c % cycle].binary_search(&w) {
                    Ok(p) if start > p => ok(new).then_some((c, start)),
                    Ok(p) => {
                        if ok(old) {
                            Some((c, start))
                        } else {
                            ok(new).then_some((c, p + 1))
                        }
                    }
                    Err(_) => ok(old).then_some((c, start)),
                }
            })
        }

        /// Whether a reader that reads the words of `chunks` in that order, each at a time of
        /// the timeline no earlier than the word before it, can find `answer` as the first
        /// (`last`: the last) bit equal to `value`.
        fn scan_allows(
            &self,
            chunks: impl Iterator<Item = (usize, u64)>,
            value: bool,
            last: bool,
            answer: Option<usize>,
        ) -> bool {
            let mut at = (self.calls.start, 0);
            for (w, mask) in chunks {
                let hits = |word: u64| if value { word } else { !word } & mask;
                if answer.is_some_and(|a| a / BITS == w) {
                    let found = |bits: u64| {
                        if last {
                            w * BITS + BITS - 1 - bits.leading_zeros() as usize
                        } else {
                            w * BITS + bits.trailing_zeros() as usize
                        }
                    };
                    return self
                        .earliest(w, at, |word| {
                            hits(word) != 0 && Some(found(hits(word))) == answer
                        })
                        .is_some();
                }
                match self.earliest(w, at, |word| hits(word) == 0) {
                    Some(time) => at = time,
                    None => return false,
                }
            }
            answer.is_none()
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a stress run of real threads; the loom models cover the orders"
    )]
    fn concurrent_readers_racing_a_writer_answer_as_an_ordered_scan_would() {
        // One writer runs a fixed cycle of whole-block, cut and block-crossing calls; readers
        // ask about ranges in and across the blocks meanwhile. Each answer must be one that a
        // scan of a flat bitmap gives: its words read in order, each in a state the writer
        // passed through during the query, never an earlier state than the word before.
        let pages = 2 * BLOCK_BITS + 100;
        let b = PageBitmap::new(pages).unwrap();
        let ops = [
            (true, 0, pages),
            (false, BLOCK_BITS - 1, 2),
            (false, 70, 1),
            (false, 3, 1),
            (true, 0, BLOCK_BITS),
            (false, 100, 1),
            (true, BLOCK_BITS - 1, 2),
            (false, 0, 2 * BLOCK_BITS),
            (true, 5, 1),
            (true, BLOCK_BITS + 3 * BITS, BITS),
            (true, 2 * BLOCK_BITS + 1, 99),
            (false, 0, pages),
        ];
        // `states[v]`: the words after the first `v` calls of the cycle, which ends where it
        // began; `changes[v]`: how many bits call `v` changes, `changed[v]` in which words.
        let mut states = vec![vec![0u64; pages.div_ceil(BITS)]];
        let mut changes = vec![];
        let mut changed_words = vec![];
        for &(set, first, count) in &ops {
            let before = states.last().unwrap().clone();
            let mut next = before.clone();
            let mut changed = 0;
            for i in first..first + count {
                let (w, bit) = (i / BITS, 1u64 << (i % BITS));
                changed += usize::from((next[w] & bit != 0) != set);
                next[w] = if set { next[w] | bit } else { next[w] & !bit };
            }
            changes.push(changed);
            changed_words.push((0..next.len()).filter(|&w| next[w] != before[w]).collect());
            states.push(next);
        }
        assert_eq!(states[0], states[ops.len()]);
        let cycle = ops.len();
        let calls = cycle * if cfg!(debug_assertions) { 1000 } else { 10_000 };
        let done = core::sync::atomic::AtomicUsize::new(0);
        let queries = [
            (0, BLOCK_BITS),
            (0, pages),
            (BLOCK_BITS - 100, 300),
            (60, 80),
            (BLOCK_BITS + 3 * BITS - 1, 2 * BITS),
            (2 * BLOCK_BITS - 1, 101),
        ];
        let checked = std::thread::scope(|s| {
            s.spawn(|| {
                for v in 0..calls {
                    let (set, first, count) = ops[v % cycle];
                    let changed = if set {
                        b.set_range(first, count)
                    } else {
                        b.clear_range(first, count)
                    };
                    assert_eq!(changed, changes[v % cycle], "call {v}");
                    done.store(v + 1, Ordering::Release);
                }
            });
            let readers: alloc::vec::Vec<_> = (0..2)
                .map(|r| {
                    let (b, states, changed_words, done) = (&b, &states, &changed_words, &done);
                    s.spawn(move || {
                        let mut checked = 0usize;
                        for i in r.. {
                            let before = done.load(Ordering::Acquire);
                            if before == calls {
                                break;
                            }
                            let (first, count) = queries[i % queries.len()];
                            let end = first + count;
                            let kind = (i / queries.len()) % 4;
                            let answer = match kind {
                                0 => b.first_clear(first, count),
                                1 => b.first_set(first, count),
                                2 => b.last_set(first, count),
                                _ => Some(usize::from(b.get(first + i % count))),
                            };
                            let after = done.load(Ordering::Acquire);
                            // The words were read while calls `before` to `after` ran (the
                            // last of them may have been under way).
                            let timeline = Timeline {
                                states,
                                changed: changed_words,
                                calls: before..(after + 1).min(calls),
                            };
                            if timeline.calls.len() > 2 * cycle {
                                continue;
                            }
                            let allowed = match kind {
                                0 => timeline.scan_allows(chunks(first, end), false, false, answer),
                                1 => timeline.scan_allows(chunks(first, end), true, false, answer),
                                2 => timeline.scan_allows(
                                    chunks(first, end).rev(),
                                    true,
                                    true,
                                    answer,
                                ),
                                _ => {
                                    let bit = first + i % count;
                                    let is = |word: u64| usize::from(word >> (bit % BITS) & 1 == 1);
                                    timeline
                                        .earliest(bit / BITS, (before, 0), |word| {
                                            Some(is(word)) == answer
                                        })
                                        .is_some()
                                }
                            };
                            assert!(
                                allowed,
                                "query {kind} of {first}+{count} answered {answer:?} between \
                                 calls {before} and {after}"
                            );
                            checked += 1;
                        }
                        checked
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().unwrap())
                .sum::<usize>()
        });
        assert!(checked > 0);
        assert_eq!(b.first_set(0, pages), None);
    }
}
