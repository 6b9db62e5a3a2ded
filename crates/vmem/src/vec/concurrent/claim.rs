//! [`ConcurrentVec`]: claiming slots, one at a time from the shared counter or in blocks for
//! one thread, and committing their memory ahead of the writes.

use super::ConcurrentVec;
use crate::sync::Ordering;
use crate::vec::error::{Error, Result};
use crate::vec::layout::{WORD_BITS, WORD_BYTES};

/// The most slots a thread claims at a time: eight ready words, a cache line of them where
/// `usize` has 64 bits, so that blocks of different threads share neither element nor
/// ready-bit cache lines there (where it has 32 bits, two blocks' words share a line).
pub(crate) const MAX_BLOCK: usize = 8 * WORD_BITS;

/// Slots `start..end` claimed at once for one thread. The slots in `owned_start..owned_end` lie
/// in ready words that hold no slot of another claim (every slot of such a word below the
/// capacity is in the block), so their bits are set with plain stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) owned_start: usize,
    pub(crate) owned_end: usize,
}

impl Block {
    /// Whether slot `index` of the block lies in a ready word the block owns.
    #[inline]
    pub(crate) fn owns_word_of(&self, index: usize) -> bool {
        self.owned_start <= index && index < self.owned_end
    }
}

impl<T> ConcurrentVec<T> {
    /// Claims a committed slot for a push: from this thread's block, or a single slot. Returns
    /// the slot and whether it belongs to a block that owns its whole ready word.
    #[inline]
    pub(super) fn claim(&self) -> Result<(usize, bool)> {
        if let Some(claimed) = super::local::claim(self) {
            return claimed;
        }
        self.claim_one().map(|index| (index, false))
    }

    /// Claims one slot from the shared counter and makes sure its memory is committed.
    #[inline]
    pub(super) fn claim_one(&self) -> Result<usize> {
        let index = self.next.0.fetch_add(1, Ordering::Relaxed);
        if index >= self.committed.0.load(Ordering::Acquire) {
            self.claim_slow(index)?;
        }
        Ok(index)
    }

    #[cold]
    pub(super) fn claim_slow(&self, index: usize) -> Result<()> {
        let capacity = self.layout.capacity;
        if index >= capacity {
            // Only pushes past the capacity give their increment back, so `next` stays at or
            // above the capacity and no index below it is handed out twice.
            self.next.0.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::CapacityExceeded {
                capacity,
                requested: index + 1,
            });
        }
        self.commit_through(index)
    }

    /// Makes `committed` exceed `index` (`index < capacity`), a growth step at a time.
    pub(super) fn commit_through(&self, index: usize) -> Result<()> {
        self.commit_through_by(index, false)
    }

    /// Makes `committed` exceed `index` (`index < capacity`): with `exact`, by the pages slot
    /// `index` needs and no growth step.
    pub(super) fn commit_through_by(&self, index: usize, exact: bool) -> Result<()> {
        let mut seen = self.committed.0.load(Ordering::Acquire);
        while index >= seen {
            let target = if exact {
                self.exact_target(index)
            } else {
                self.target(seen, index)
            };
            self.commit_slots(seen, target)?;
            let before = self.committed.0.fetch_max(target, Ordering::AcqRel);
            seen = before.max(target);
        }
        Ok(())
    }

    /// How many slots to have committed when `seen` are and slot `index` is needed: a growth
    /// step past `seen`, at least `index + 1`, widened to what the whole pages hold.
    pub(super) fn target(&self, seen: usize, index: usize) -> usize {
        let layout = &self.layout;
        // Zero-sized elements grow as if they took a byte, which paces the ready bits.
        let size = layout.elem_size.max(1);
        let bytes = seen * size;
        let step = self.growth.step(bytes, layout.page);
        let mut want = (bytes.saturating_add(step) / size)
            .max(index + 1)
            .min(layout.capacity);
        if layout.huge != 0 {
            want = want.max(layout.slots_in(layout.data_target(layout.data_end(want), 0, step)));
        }
        let data_fit = layout.slots_in(layout.data_end(want));
        let bits_fit = (layout.bits_end(want) / WORD_BYTES).saturating_mul(WORD_BITS);
        want.max(data_fit.min(bits_fit).min(layout.capacity))
    }

    /// How many slots to have committed when slot `index` is needed and nothing more:
    /// `index + 1`, widened to what the whole pages hold.
    fn exact_target(&self, index: usize) -> usize {
        let layout = &self.layout;
        let want = index + 1;
        let data_fit = layout.slots_in(layout.data_end(want));
        let bits_fit = (layout.bits_end(want) / WORD_BYTES).saturating_mul(WORD_BITS);
        want.max(data_fit.min(bits_fit).min(layout.capacity))
    }

    /// Commits the memory of slots `seen..target`, given that slots below `seen` have theirs.
    pub(super) fn commit_slots(&self, seen: usize, target: usize) -> Result<()> {
        let layout = &self.layout;
        #[cfg(loom)]
        if loom_refusals::take() {
            return Err(Error::Commit {
                offset: layout.data_end(seen),
                len: layout.data_end(target) - layout.data_end(seen),
                source: crate::Error::Os {
                    operation: crate::Operation::Commit,
                    source: crate::OsError::from_raw(12),
                },
            });
        }
        let commit = |offset: usize, end: usize, data: bool| {
            if end <= offset {
                return Ok(());
            }
            let result = if data {
                layout.commit_data(&self.reservation, offset, end)
            } else {
                self.reservation.commit(offset, end - offset)
            };
            result.map_err(|source| Error::Commit {
                offset,
                len: end - offset,
                source,
            })
        };
        commit(layout.data_end(seen), layout.data_end(target), true)?;
        commit(
            layout.data_len + layout.bits_end(seen),
            layout.data_len + layout.bits_end(target),
            false,
        )?;
        self.log.commit(seen, target);
        Ok(())
    }

    /// Claims a block of up to `len` slots (`1..=MAX_BLOCK`) at `next`, for a thread's pushes
    /// or a [`Pusher`](super::Pusher): `len` slots, or, when `len` is a multiple of
    /// [`WORD_BITS`], the slots up to the next multiple of `len` (so that the following blocks
    /// are aligned to it and own whole ready words); fewer at the capacity. Its memory is not
    /// committed yet: see [`commit_block`](Self::commit_block).
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] if no slot is left (nothing claimed).
    pub(super) fn claim_block(&self, len: usize) -> Result<Block> {
        debug_assert!((1..=MAX_BLOCK).contains(&len));
        let capacity = self.layout.capacity;
        let mut range = (0, 0);
        let claimed = self
            .next
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                if n >= capacity {
                    return None;
                }
                // `n < capacity <= isize::MAX` and `len` is small, so no sum overflows.
                let end = if len.is_multiple_of(WORD_BITS) {
                    (n / len + 1) * len
                } else {
                    n + len
                };
                range = (n, end.min(capacity));
                Some(range.1)
            });
        if claimed.is_err() {
            return Err(Error::CapacityExceeded {
                capacity,
                requested: capacity + 1,
            });
        }
        let (start, end) = range;
        // Whole words inside the block; the word at the capacity has no slots past it.
        let owned_start = start.next_multiple_of(WORD_BITS);
        let owned_end = if end == capacity {
            end
        } else {
            end - end % WORD_BITS
        };
        let (owned_start, owned_end) = if owned_start < owned_end {
            (owned_start, owned_end)
        } else {
            (end, end)
        };
        Ok(Block {
            start,
            end,
            owned_start,
            owned_end,
        })
    }

    /// Makes slot `index` (`index < capacity`) committed, a growth step at a time, and returns
    /// how many slots are committed then (more than `index`).
    ///
    /// # Errors
    /// [`Error::Commit`] if the memory cannot be committed (the committed count stays as it
    /// was).
    pub(super) fn commit_slot(&self, index: usize) -> Result<usize> {
        let committed = self.committed.0.load(Ordering::Acquire);
        if index < committed {
            return Ok(committed);
        }
        self.commit_through(index)?;
        Ok(self.committed.0.load(Ordering::Acquire))
    }

    /// Commits the memory of a block [`claim_block`](Self::claim_block) claimed. A refused
    /// commit leaves the block claimed: its claimer keeps it and tries again at its next push
    /// (committing is idempotent), so that a push retried under memory pressure does not claim
    /// a fresh block, and leave one more empty, at every try.
    ///
    /// # Errors
    /// [`Error::Commit`] if the memory cannot be committed.
    ///
    /// Only the per-thread claim caches (and tests) commit whole blocks: a `Pusher` commits
    /// its block as it fills.
    #[cfg(any(test, all(feature = "std", target_has_atomic = "64")))]
    pub(super) fn commit_block(&self, block: &Block) -> Result<()> {
        if block.end > self.committed.0.load(Ordering::Acquire) {
            self.commit_through(block.end - 1)?;
        }
        Ok(())
    }
}

/// Commits refused on purpose in loom models, so that they reach the states a refusal leaves
/// (a thread's block kept for the next push, holes): the system's refusals cannot be made to
/// happen at a chosen step of a model.
#[cfg(loom)]
pub(crate) mod loom_refusals {
    use core::cell::Cell;

    loom::thread_local! {
        static REFUSE: Cell<usize> = Cell::new(0);
    }

    /// Makes the next `count` commits of slots on this thread fail, before they change
    /// anything, as a refusal of the system would.
    pub fn refuse_commits(count: usize) {
        REFUSE.with(|refuse| refuse.set(count));
    }

    /// Whether this commit is to be refused (and counts it).
    pub(crate) fn take() -> bool {
        REFUSE.with(|refuse| {
            let left = refuse.get();
            refuse.set(left.saturating_sub(1));
            left > 0
        })
    }
}
