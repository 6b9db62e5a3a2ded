//! A fixed-size bitmap of pages with atomic updates.
//!
//! The words live in pages of their own, mapped straight from the OS (not the heap), so they
//! start zeroed and a large bitmap of which only a few words are touched costs address space but
//! almost no memory: a 64 GiB reservation's 2 MiB bitmap is resident only where written.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::page::page_size;
use crate::reservation::CommitMode;
use crate::sys::{self, SysError};

const BITS: usize = 64;

/// One bit per page; bit set means the page has the property the bitmap tracks.
pub(crate) struct PageBitmap {
    words: NonNull<AtomicU64>,
    len_words: usize,
    /// Bytes mapped for the words: a whole number of pages.
    mapped: usize,
    pages: usize,
}

// SAFETY: the bitmap owns its words and only touches them through atomics.
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

impl PageBitmap {
    /// A bitmap of `pages` clear bits.
    pub(crate) fn new(pages: usize) -> Result<Self, SysError> {
        let len_words = pages.div_ceil(BITS).max(1);
        let page = page_size();
        // `len_words * 8` cannot overflow: it is at most `usize::MAX / 8 + 8` bytes.
        let mapped = (len_words * size_of::<AtomicU64>()).next_multiple_of(page);
        // A sparse reservation is read-write and zeroed on Unix; committing it is needed on
        // Windows and free elsewhere.
        let base = sys::reserve(mapped, page, CommitMode::Sparse)?;
        // SAFETY: `base..base + mapped` is the reservation just made.
        if let Err(e) = unsafe { sys::commit(base.as_ptr(), mapped, CommitMode::Sparse) } {
            // SAFETY: releasing the reservation just made, which nothing else refers to.
            unsafe { sys::release(base, mapped, page) };
            return Err(e);
        }
        Ok(Self {
            words: base.cast(),
            len_words,
            mapped,
            pages,
        })
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.len_words,
            "bitmap word {index} out of {}",
            self.len_words
        );
        // SAFETY: `index` is in bounds (checked above); the words are fresh zeroed pages, page
        // aligned, and zero is a valid `AtomicU64`; the mapping lives as long as `self`.
        unsafe { self.words.add(index).as_ref() }
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

    /// Sets bits `first..first + count`; returns how many of them were clear before. Each
    /// bit's change is counted by the one atomic operation that made it, so concurrent calls
    /// never count a bit twice.
    pub(crate) fn set_range(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        word_masks(first, count)
            .map(|(w, mask)| {
                let old = self.word(w).fetch_or(mask, Ordering::AcqRel);
                (mask & !old).count_ones() as usize
            })
            .sum()
    }

    /// Clears bits `first..first + count`; returns how many of them were set before (counted
    /// as in [`set_range`](Self::set_range)).
    pub(crate) fn clear_range(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        word_masks(first, count)
            .map(|(w, mask)| {
                let old = self.word(w).fetch_and(!mask, Ordering::AcqRel);
                (mask & old).count_ones() as usize
            })
            .sum()
    }

    /// The first bit in `first..first + count` that is clear, if any.
    pub(crate) fn first_clear(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        word_masks(first, count).find_map(|(w, mask)| {
            let missing = !self.word(w).load(Ordering::Acquire) & mask;
            (missing != 0).then(|| w * BITS + missing.trailing_zeros() as usize)
        })
    }

    /// The first bit in `first..first + count` that is set, if any.
    pub(crate) fn first_set(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        word_masks(first, count).find_map(|(w, mask)| {
            let present = self.word(w).load(Ordering::Acquire) & mask;
            (present != 0).then(|| w * BITS + present.trailing_zeros() as usize)
        })
    }

    /// The last bit in `first..first + count` that is set, if any.
    pub(crate) fn last_set(&self, first: usize, count: usize) -> Option<usize> {
        self.check(first, count);
        word_masks(first, count).rev().find_map(|(w, mask)| {
            let present = self.word(w).load(Ordering::Acquire) & mask;
            (present != 0).then(|| w * BITS + (BITS - 1 - present.leading_zeros() as usize))
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
        word_masks(first, count).find_map(|(w, mask)| {
            let bits = self.word(w).load(Ordering::Acquire)
                & !other.word(w).load(Ordering::Acquire)
                & mask;
            (bits != 0).then(|| w * BITS + bits.trailing_zeros() as usize)
        })
    }

    /// Whether bit `index` is set.
    pub(crate) fn get(&self, index: usize) -> bool {
        self.check(index, 1);
        self.word(index / BITS).load(Ordering::Acquire) & (1 << (index % BITS)) != 0
    }

    /// The number of set bits in `first..first + count`.
    #[cfg(test)]
    pub(crate) fn count_set(&self, first: usize, count: usize) -> usize {
        self.check(first, count);
        word_masks(first, count)
            .map(|(w, mask)| (self.word(w).load(Ordering::Acquire) & mask).count_ones() as usize)
            .sum()
    }
}

impl Drop for PageBitmap {
    fn drop(&mut self) {
        // SAFETY: `words` was reserved in `new` with this length and the page alignment, and is
        // released once.
        unsafe { sys::release(self.words.cast(), self.mapped, page_size()) };
    }
}

#[cfg(test)]
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
    #[should_panic(expected = "outside a bitmap")]
    fn set_range_past_end_panics() {
        PageBitmap::new(10).unwrap().set_range(5, 6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 1000 }))]
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
}
