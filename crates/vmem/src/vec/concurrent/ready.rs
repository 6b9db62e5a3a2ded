//! The ready bits of a [`ConcurrentVec`](super::ConcurrentVec): one bit per slot, set (with
//! release ordering) once the slot's element is fully written, read with acquire ordering.
//!
//! The words live in the vector's reservation, right after the slots, and are committed
//! together with them. Under loom they live in a boxed slice of loom atomics instead, so that
//! the model checker sees them; the protocol is the same.

use core::ptr::NonNull;

use crate::sync::{AtomicUsize, Ordering};
use crate::vec::layout::WORD_BITS;

/// The ready bits of `capacity` slots.
#[derive(Debug)]
pub(crate) struct ReadyBits {
    #[cfg(not(loom))]
    words: NonNull<AtomicUsize>,
    #[cfg(loom)]
    words: alloc::boxed::Box<[AtomicUsize]>,
}

impl ReadyBits {
    /// The bits whose words start at `start`.
    ///
    /// # Safety
    /// `start` is aligned for `usize`, lies in a reservation with room for one word per
    /// [`WORD_BITS`] slots of `capacity` after it, outlives `self`, and each word's page is
    /// committed (reading as zero at first) before the word is used.
    #[cfg_attr(
        loom,
        allow(unused_variables, reason = "loom keeps the words on the heap")
    )]
    #[cfg_attr(
        not(loom),
        allow(unused_variables, reason = "the reservation sizes the words")
    )]
    pub(crate) unsafe fn new(start: NonNull<u8>, capacity: usize) -> Self {
        Self {
            #[cfg(not(loom))]
            words: start.cast(),
            #[cfg(loom)]
            words: (0..capacity.div_ceil(WORD_BITS))
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }
    }

    /// The word holding the bits of slots `word * WORD_BITS..`.
    ///
    /// # Safety
    /// The word is in range and its page is committed.
    #[inline]
    pub(crate) unsafe fn word(&self, word: usize) -> &AtomicUsize {
        #[cfg(not(loom))]
        {
            // SAFETY: in range and committed (caller's promise); committed memory is zeroed or
            // was written only through `AtomicUsize`, which has the layout of `usize`, so it is
            // a valid `AtomicUsize`; the reservation outlives `self` (constructor's promise).
            unsafe { self.words.add(word).as_ref() }
        }
        #[cfg(loom)]
        {
            &self.words[word]
        }
    }

    /// Marks slot `index` ready, releasing its element to readers that see the bit. The old
    /// value is not returned: unused, the atomic or needs no compare-exchange loop.
    ///
    /// # Safety
    /// As [`word`](Self::word) for the slot's word.
    #[inline]
    pub(crate) unsafe fn set(&self, index: usize) {
        // SAFETY: the caller's promise.
        let word = unsafe { self.word(index / WORD_BITS) };
        word.fetch_or(1 << (index % WORD_BITS), Ordering::Release);
    }

    /// Marks slot `index` ready with a plain store, for a word no other thread writes.
    ///
    /// # Safety
    /// As [`word`](Self::word); no other thread modifies the slot's word during the call.
    #[inline]
    pub(crate) unsafe fn set_exclusive(&self, index: usize) {
        // SAFETY: the caller's promise.
        let word = unsafe { self.word(index / WORD_BITS) };
        let bits = word.load(Ordering::Relaxed) | (1 << (index % WORD_BITS));
        word.store(bits, Ordering::Release);
    }

    /// Whether slot `index` is ready; if so, its element's writes happen before this returns.
    ///
    /// # Safety
    /// As [`word`](Self::word) for the slot's word.
    #[inline]
    pub(crate) unsafe fn is_set(&self, index: usize) -> bool {
        // SAFETY: the caller's promise.
        let word = unsafe { self.word(index / WORD_BITS) };
        word.load(Ordering::Acquire) & (1 << (index % WORD_BITS)) != 0
    }

    /// Clears the bit of slot `index`.
    ///
    /// # Safety
    /// As [`word`](Self::word) for the slot's word.
    #[inline]
    pub(crate) unsafe fn clear(&self, index: usize) {
        // SAFETY: the caller's promise.
        let word = unsafe { self.word(index / WORD_BITS) };
        word.fetch_and(!(1 << (index % WORD_BITS)), Ordering::Relaxed);
    }

    /// The ready slots of word `word` at or after slot `from` and before slot `limit`, as a
    /// mask of the word (bit `b` is slot `word * WORD_BITS + b`).
    ///
    /// # Safety
    /// As [`word`](Self::word).
    #[inline]
    pub(crate) unsafe fn ready_in(&self, word: usize, from: usize, limit: usize) -> usize {
        let first = word * WORD_BITS;
        let lo = from.saturating_sub(first);
        let hi = (limit - first).min(WORD_BITS);
        if lo >= hi {
            return 0;
        }
        let mask = (usize::MAX >> (WORD_BITS - (hi - lo))) << lo;
        // SAFETY: the caller's promise.
        unsafe { self.word(word) }.load(Ordering::Acquire) & mask
    }
}
