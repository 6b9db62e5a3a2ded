//! The per-thread claim cache of [`ConcurrentVec::push`](super::ConcurrentVec::push).
//!
//! Each thread keeps one [`LocalClaim`]: the vector (by id) it last pushed into, how it claims
//! slots there, and the block of slots it claimed but has not filled yet. A thread claims one
//! slot per push until it sees another thread's claim between two of its own; it then claims
//! blocks and fills them alone (no shared cache line per push), and goes back to single slots
//! once [`ALONE_AFTER`] blocks in a row each followed its previous one with nobody's claims
//! between.
//!
//! Entries name vectors by a process-wide id that is never reused, so an entry of a dropped
//! vector (or of one whose claims were reset by `clear`) never matches again.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{Block, ConcurrentVec};
use crate::vec::error::Result;

/// A thread's claim state for one vector. Each field is a cell of its own, so that a push reads
/// and writes only the words it needs.
#[derive(Debug)]
pub(super) struct LocalClaim {
    /// The id of the vector this entry is about; 0 means none.
    pub(super) vec: Cell<u64>,
    /// The slot this thread claimed last on its own (single-slot mode), to tell whether another
    /// thread claimed since.
    pub(super) last: Cell<usize>,
    /// The next slot of the thread's block.
    pub(super) next: Cell<usize>,
    /// The end of the thread's block (`next == end`: no slot left).
    pub(super) end: Cell<usize>,
    /// The slots of the block whose ready words it owns: `owned_start..owned_end`.
    pub(super) owned_start: Cell<usize>,
    /// See `owned_start`.
    pub(super) owned_end: Cell<usize>,
    /// Whether the thread claims blocks (it saw other threads' claims among its own).
    pub(super) blocks: Cell<bool>,
    /// Blocks in a row that followed the thread's previous block directly (nobody else claimed
    /// in between).
    pub(super) streak: Cell<u32>,
    /// Pushes in a row into other vectors while the entry held slots, as of the last one.
    pub(super) misses: Cell<u32>,
    /// `next` when `misses` was last counted. A push into the entry's vector since then took a
    /// slot of the block and moved `next`, so the pushes elsewhere were not in a row: comparing
    /// here keeps the push that takes a slot from writing `misses`.
    pub(super) missed_at: Cell<usize>,
    /// A block of this entry's vector claimed whose commit the system refused (empty when
    /// `pending_start == pending_end`): the next refill commits it instead of claiming another.
    pub(super) pending_start: Cell<usize>,
    /// See `pending_start`.
    pub(super) pending_end: Cell<usize>,
    /// The slots of the pending block whose ready words it owns.
    pub(super) pending_owned_start: Cell<usize>,
    /// See `pending_owned_start`.
    pub(super) pending_owned_end: Cell<usize>,
}

impl LocalClaim {
    /// No entry.
    const fn new() -> Self {
        Self {
            vec: Cell::new(0),
            last: Cell::new(0),
            next: Cell::new(0),
            end: Cell::new(0),
            owned_start: Cell::new(0),
            owned_end: Cell::new(0),
            blocks: Cell::new(false),
            streak: Cell::new(0),
            misses: Cell::new(0),
            missed_at: Cell::new(0),
            pending_start: Cell::new(0),
            pending_end: Cell::new(0),
            pending_owned_start: Cell::new(0),
            pending_owned_end: Cell::new(0),
        }
    }

    /// Makes this the entry of vector `vec` after a single-slot claim of `index`, with no block.
    pub(super) fn reset(&self, vec: u64, index: usize) {
        self.vec.set(vec);
        self.last.set(index);
        self.next.set(0);
        self.end.set(0);
        self.owned_start.set(0);
        self.owned_end.set(0);
        self.blocks.set(false);
        self.streak.set(0);
        self.misses.set(0);
        self.missed_at.set(0);
        self.set_pending(None);
    }

    /// The block whose commit was refused, if any.
    pub(super) fn pending(&self) -> Option<Block> {
        (self.pending_start.get() < self.pending_end.get()).then(|| Block {
            start: self.pending_start.get(),
            end: self.pending_end.get(),
            owned_start: self.pending_owned_start.get(),
            owned_end: self.pending_owned_end.get(),
        })
    }

    /// Records the block whose commit was refused, or that none is.
    pub(super) fn set_pending(&self, block: Option<Block>) {
        let block = block.unwrap_or(Block {
            start: 0,
            end: 0,
            owned_start: 0,
            owned_end: 0,
        });
        self.pending_start.set(block.start);
        self.pending_end.set(block.end);
        self.pending_owned_start.set(block.owned_start);
        self.pending_owned_end.set(block.owned_end);
    }

    /// Makes `block` the thread's block, none of it taken yet.
    pub(super) fn set_block(&self, block: Block) {
        self.next.set(block.start);
        self.end.set(block.end);
        self.owned_start.set(block.owned_start);
        self.owned_end.set(block.owned_end);
    }

    /// Takes the next slot of the block, if one is left, with whether the block owns its ready
    /// word.
    #[inline]
    pub(super) fn take(&self) -> Option<(usize, bool)> {
        let next = self.next.get();
        (next < self.end.get()).then(|| {
            self.next.set(next + 1);
            let owned = self.owned_start.get() <= next && next < self.owned_end.get();
            (next, owned)
        })
    }

    /// Whether the entry holds slots it has not filled: its block has slots left, or a block
    /// whose commit was refused waits for the next push.
    pub(super) fn holds_slots(&self) -> bool {
        self.next.get() < self.end.get() || self.pending_start.get() < self.pending_end.get()
    }

    /// Counts a push into another vector while the entry holds slots, and returns whether it
    /// should give way: [`EVICT_AFTER`] such pushes in a row, with no push into the entry's
    /// vector between them.
    pub(super) fn miss(&self) -> bool {
        let next = self.next.get();
        let misses = if self.missed_at.get() == next {
            self.misses.get() + 1
        } else {
            1
        };
        self.misses.set(misses);
        self.missed_at.set(next);
        misses >= EVICT_AFTER
    }
}

/// Blocks in a row, each right after the previous one, after which a thread goes back to
/// single slots: the other threads have stopped claiming (or are not running). Going back after
/// one such block made a thread flip between modes while another thread still pushed, and its
/// single claims then raced with the other thread's block claims on the shared counter.
pub(super) const ALONE_AFTER: u32 = 8;

/// Pushes in a row into other vectors after which an entry that still holds unfilled slots
/// gives way (those slots then stay empty for good); a push into the entry's vector starts the
/// count over. Entries without such slots give way at once.
pub(super) const EVICT_AFTER: u32 = 64;

#[cfg(not(loom))]
std::thread_local! {
    static LOCAL: LocalClaim = const { LocalClaim::new() };
}

#[cfg(loom)]
loom::thread_local! {
    static LOCAL: LocalClaim = LocalClaim::new();
}

/// Runs `f` on this thread's entry; `None` if the thread's locals are gone (during thread
/// exit), in which case the caller claims without the cache.
#[inline]
pub(super) fn with<R>(f: impl FnOnce(&LocalClaim) -> R) -> Option<R> {
    LOCAL.try_with(f).ok()
}

/// A fresh vector id, never 0 and never handed out twice (a 64-bit counter does not wrap).
pub(super) fn new_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn take_hands_out_the_block_in_order_then_none() {
        let entry = LocalClaim::new();
        entry.reset(1, 3);
        entry.set_block(Block {
            start: 4,
            end: 7,
            owned_start: 5,
            owned_end: 6,
        });
        assert!(entry.holds_slots());
        assert_eq!(entry.take(), Some((4, false)));
        assert_eq!(entry.take(), Some((5, true)));
        assert_eq!(entry.take(), Some((6, false)));
        assert_eq!(entry.take(), None);
        assert!(!entry.holds_slots());
        assert_eq!(entry.next.get(), 7);
    }

    #[test]
    fn reset_forgets_the_block() {
        let entry = LocalClaim::new();
        entry.next.set(4);
        entry.end.set(6);
        entry.blocks.set(true);
        entry.misses.set(3);
        entry.reset(2, 8);
        assert_eq!((entry.vec.get(), entry.last.get()), (2, 8));
        assert!(!entry.holds_slots() && !entry.blocks.get());
        assert_eq!(entry.misses.get(), 0);
    }

    #[test]
    fn only_misses_in_a_row_evict() {
        let entry = LocalClaim::new();
        entry.reset(1, 0);
        entry.set_block(Block {
            start: 0,
            end: 8,
            owned_start: 8,
            owned_end: 8,
        });
        entry.take();
        for _ in 1..EVICT_AFTER {
            assert!(!entry.miss());
        }
        // A slot taken between the misses starts the count over.
        entry.take();
        for _ in 1..EVICT_AFTER {
            assert!(!entry.miss());
        }
        assert!(entry.miss());
        // A new block starts it over too.
        entry.set_block(Block {
            start: 8,
            end: 16,
            owned_start: 16,
            owned_end: 16,
        });
        entry.take();
        assert!(!entry.miss());
        assert_eq!(entry.misses.get(), 1);
    }

    #[test]
    fn a_block_whose_commit_was_refused_is_held_until_misses_in_a_row_evict_it() {
        let entry = LocalClaim::new();
        entry.reset(1, 0);
        let block = Block {
            start: 8,
            end: 16,
            owned_start: 16,
            owned_end: 16,
        };
        entry.set_pending(Some(block));
        assert!(entry.holds_slots());
        assert_eq!(entry.pending(), Some(block));
        for _ in 1..EVICT_AFTER {
            assert!(!entry.miss());
        }
        assert!(entry.miss());
        entry.reset(2, 0);
        assert!(!entry.holds_slots());
        assert_eq!(entry.pending(), None);
    }

    #[test]
    fn ids_are_distinct_and_not_zero() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, 0);
        assert_ne!(a, b);
    }

    #[test]
    fn with_reaches_this_threads_entry() {
        with(|entry| entry.reset(7, 9));
        assert_eq!(
            with(|entry| (entry.vec.get(), entry.last.get())),
            Some((7, 9))
        );
        with(|entry| entry.reset(0, 0));
    }
}

/// A vector's name in the claim caches.
pub(super) type VecId = u64;

/// Claims a slot for a push through this thread's cache entry, if the vector hands out
/// blocks: `None` when the caller should claim one slot from the shared counter instead.
#[inline]
pub(super) fn claim<T>(vec: &ConcurrentVec<T>) -> Option<Result<(usize, bool)>> {
    if vec.thread_block <= 1 {
        return None;
    }
    match with(|entry| vec.claim_local(entry))? {
        LocalStep::Claimed(index, exclusive) => Some(Ok((index, exclusive))),
        LocalStep::Check(index) => Some(vec.claim_slow(index).map(|()| (index, false))),
        LocalStep::Refill => with(|entry| vec.refill_local(entry)),
    }
}

/// What the fast part of a claim through the thread's cache entry found.
#[derive(Clone, Copy, Debug)]
enum LocalStep {
    /// This committed slot, and whether its block owns its ready word.
    Claimed(usize, bool),
    /// This slot was taken from the shared counter but lies at or past the committed slots: the
    /// capacity check and the commit remain.
    Check(usize),
    /// The thread claims blocks and its block is used up.
    Refill,
}

impl<T> ConcurrentVec<T> {
    /// The fast part of [`claim`](Self::claim) through this thread's cache entry (see the
    /// `local` module): a slot of the thread's block, or one slot from the shared counter.
    #[inline]
    fn claim_local(&self, entry: &LocalClaim) -> LocalStep {
        if entry.vec.get() == self.id {
            if let Some((index, exclusive)) = entry.take() {
                return LocalStep::Claimed(index, exclusive);
            }
            if entry.blocks.get() {
                return LocalStep::Refill;
            }
            let index = self.next.0.fetch_add(1, Ordering::Relaxed);
            // Another thread claimed since this thread's last claim: blocks from now on.
            entry.blocks.set(index != entry.last.get().wrapping_add(1));
            entry.last.set(index);
            return self.checked(index);
        }
        let index = self.next.0.fetch_add(1, Ordering::Relaxed);
        let replace = !entry.holds_slots() || entry.miss();
        if replace {
            entry.reset(self.id, index);
        }
        self.checked(index)
    }

    /// A slot just taken from the shared counter: claimed if its memory is committed, else it
    /// needs [`claim_slow`](Self::claim_slow).
    #[inline]
    fn checked(&self, index: usize) -> LocalStep {
        if index < self.committed.0.load(Ordering::Acquire) {
            LocalStep::Claimed(index, false)
        } else {
            LocalStep::Check(index)
        }
    }

    /// Claims this thread's next block and takes its first slot.
    #[cold]
    fn refill_local(&self, entry: &LocalClaim) -> Result<(usize, bool)> {
        // A block claimed at an earlier push whose commit was refused is still this thread's:
        // its commit is tried again instead of claiming another.
        let block = match entry.pending() {
            Some(block) => block,
            None => self.claim_block(self.thread_block)?,
        };
        if let Err(e) = self.commit_block(&block) {
            entry.set_pending(Some(block));
            // A push into the entry's vector: pushes elsewhere count from zero again (a refused
            // push does not move `next`, which `miss` compares).
            entry.misses.set(0);
            return Err(e);
        }
        entry.set_pending(None);
        // A block right after the previous one means nobody else claimed in between; after
        // enough of those in a row, back to single slots once this one is filled.
        let streak = if block.start == entry.end.get() {
            entry.streak.get() + 1
        } else {
            0
        };
        entry.streak.set(streak);
        entry.blocks.set(streak < ALONE_AFTER);
        entry.last.set(block.end - 1);
        entry.set_block(block);
        Ok(entry
            .take()
            .expect("a claimed block holds at least one slot"))
    }
}
