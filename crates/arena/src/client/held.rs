//! [`HeldChunk`]: the index of a chunk the client holds, which only code that has checked
//! ownership (or knows it from the client's own bookkeeping) can make.
//!
//! A chunk's records and free bitmaps are touched without locks by its holder alone
//! (invariant 1 of `DESIGN.md`), so every access to them needs to know the chunk is held.
//! Taking a `HeldChunk` instead of a bare index puts that knowledge in the type: the accessors
//! ([`State::info`](super::State), [`State::free_words`](super::State)) are safe, and the proof
//! is made once, where the value is built.

use crate::sync::{AtomicU32, Ordering};

/// A chunk that the client holds: its owner-table entry is the client's id, and it stays held
/// while the value is used (a client gives a chunk back only from its own methods, which drop
/// the values of that chunk they made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeldChunk(usize);

impl HeldChunk {
    /// Chunk `chunk` if the owner table says client `id` holds it. Only that client stores
    /// `id` into the table, so a relaxed load that reads `id` reads its own latest store.
    #[inline]
    pub(super) fn checked(owners: &[AtomicU32], id: u32, chunk: usize) -> Option<Self> {
        let owner = owners.get(chunk)?;
        (owner.load(Ordering::Relaxed) == id).then_some(Self(chunk))
    }

    /// Chunk `chunk`, known to be held.
    ///
    /// # Safety
    /// The client this value is used with holds `chunk`: the arena just handed it to the
    /// client, it is on one of the client's chunk lists, or a block or slab of the client
    /// (live, cached, in its mailbox or being handed out) lies in it.
    #[inline]
    pub(super) unsafe fn new_unchecked(chunk: usize) -> Self {
        Self(chunk)
    }

    /// Its index.
    #[inline]
    pub(super) fn index(self) -> usize {
        self.0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn checked_owner_table_says_who_holds() {
        let owners = [AtomicU32::new(0), AtomicU32::new(7), AtomicU32::new(8)];
        assert_eq!(
            HeldChunk::checked(&owners, 7, 1).map(HeldChunk::index),
            Some(1)
        );
        assert_eq!(HeldChunk::checked(&owners, 7, 0), None, "nobody holds it");
        assert_eq!(
            HeldChunk::checked(&owners, 7, 2),
            None,
            "another client holds it"
        );
        assert_eq!(HeldChunk::checked(&owners, 7, 3), None, "past the table");
    }
}
