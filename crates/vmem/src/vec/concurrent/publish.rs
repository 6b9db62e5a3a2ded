//! [`ConcurrentVec`]: writing a claimed slot, publishing it with its ready bit, and moving
//! the published prefix over complete ready words.

use super::{ConcurrentVec, MAX_BLOCK};
use crate::sync::Ordering;
use crate::vec::layout::WORD_BITS;

impl<T> ConcurrentVec<T> {
    /// The bits of word `word` that are slots below the capacity (at least one).
    #[inline]
    pub(super) fn full_mask(&self, word: usize) -> usize {
        let slots = (self.layout.capacity - word * WORD_BITS).min(WORD_BITS);
        usize::MAX >> (WORD_BITS - slots)
    }

    /// After slot `index` was published: if it is the last slot of its ready word, moves the
    /// published prefix on. Only one push in [`WORD_BITS`] does so, and the others never learn
    /// the word's value, so publishing stays a single atomic or whose result is unused.
    #[inline]
    pub(super) fn after_publish(&self, index: usize) {
        if (index + 1).is_multiple_of(WORD_BITS) || index + 1 == self.layout.capacity {
            self.advance_prefix();
        }
    }

    /// Moves the published prefix over the complete ready words that follow it, and returns it.
    ///
    /// The prefix is a word boundary (or the capacity). Whoever finds the words at the prefix
    /// complete (acquire loads: every element of those words happens before) moves the prefix
    /// past all of them with one compare-exchange (release), so a reader that acquires the new
    /// prefix sees those elements. Every change of the prefix through `&self` is such a
    /// read-modify-write, so a reader that acquires a later value also synchronizes with every
    /// earlier move (release sequence). Bits are never cleared through `&self`, so a word once
    /// complete stays so.
    ///
    /// Nothing forces the prefix to keep up: a word completed out of order waits for the next
    /// call (the last publisher of a later word, or [`published_prefix`](Self::published_prefix)).
    /// A lagging prefix only sends `get` to the ready bit.
    #[cold]
    #[inline(never)]
    pub(super) fn advance_prefix(&self) -> usize {
        let capacity = self.layout.capacity;
        let mut start = self.prefix.0.load(Ordering::Acquire);
        loop {
            // Every ready word holding a slot below `limit` is committed.
            let limit = self.committed.0.load(Ordering::Acquire).min(capacity);
            let mut end = start;
            while end < limit {
                let word = end / WORD_BITS;
                // SAFETY: the word holds slot `end < committed`, so it is committed.
                let bits = unsafe { self.ready.word(word) }.load(Ordering::Acquire);
                if bits != self.full_mask(word) {
                    break;
                }
                end = (end + WORD_BITS).min(capacity);
            }
            if end == start {
                return start;
            }
            // One compare-exchange moves the prefix over every complete word found.
            match self
                .prefix
                .0
                .compare_exchange(start, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return end,
                // Another thread moved it (only ever forward through `&self`): look again from
                // there.
                Err(now) => start = now,
            }
        }
    }

    /// Writes `value` into slot `index`, claimed by this caller (alone or in a block), and
    /// publishes it.
    ///
    /// # Safety
    /// `index` was claimed by this caller and has not been written, and its memory is committed;
    /// if `exclusive`, it belongs to a block that owns the slot's ready word (see [`Block`]) and
    /// the caller is the block's only user.
    #[inline]
    pub(super) unsafe fn publish_claimed(&self, index: usize, value: T, exclusive: bool) {
        self.log.write(index);
        // SAFETY: the slot is committed, aligned, and exclusively ours until published (the
        // caller's promise).
        unsafe { self.slot(index).write(value) };
        if exclusive {
            // SAFETY: the word is committed with the slot and only this caller writes it.
            unsafe { self.ready.set_exclusive(index) };
            // A block's own words move the prefix once per cache line of them, not per word:
            // the prefix line and the other threads' words then stay out of the fill.
            if (index + 1).is_multiple_of(MAX_BLOCK) || index + 1 == self.layout.capacity {
                self.advance_prefix();
            }
        } else {
            // SAFETY: the word is committed with the slot.
            unsafe { self.ready.set(index) };
            self.after_publish(index);
        }
    }
}
