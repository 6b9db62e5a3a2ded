//! Remote-free bits: one bit per 16 bytes, set by [`Arena::free`](crate::Arena::free) on
//! another thread than the block's holder when it claims the block, cleared by the holder when
//! it takes the block from its mailbox.
//!
//! They keep the holder's start bits its own: the holder writes its start-bit words with plain
//! (relaxed) loads and stores, never a locked read-modify-write, because no other thread
//! writes them. A free through the arena claims the block here instead, with one `fetch_or`
//! (of two such frees that reach it while the block is claimed, one wins), and the holder's
//! own free, `owns` and `size_of` refuse a block whose bit is set.
//!
//! A chunk's bits (one word per KiB, 8 bytes per KiB of chunk) are made the first time a free
//! through the arena lands in it, and kept until the arena is dropped, so an arena whose
//! blocks are all freed by their holders never pays for them.

use alloc::boxed::Box;
use core::ptr;

use crate::arena::MARK_SHIFT;
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use crate::table;

/// Per chunk, the remote-free bits of its blocks (null until the first free through the arena
/// in the chunk).
pub(crate) struct RemoteBits {
    tables: Box<[AtomicPtr<AtomicU64>]>,
    /// Words per chunk: one per KiB.
    words: usize,
    chunk_shift: u32,
    /// Tables made so far.
    made: AtomicUsize,
}

impl core::fmt::Debug for RemoteBits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RemoteBits")
            .field("chunks", &self.tables.len())
            .field("made", &self.made.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The word of a chunk's table and the bit in it of byte offset `off` (from chunk 0).
#[inline]
fn word_bit(off: usize, chunk_shift: u32) -> (usize, u64) {
    let word = (off & ((1usize << chunk_shift) - 1)) >> MARK_SHIFT;
    (word, 1u64 << ((off >> 4) & 63))
}

impl RemoteBits {
    /// No tables yet, for `nchunks` chunks of `2^chunk_shift` bytes; `None` if the allocator
    /// refuses the table pointers.
    pub(crate) fn new(nchunks: usize, chunk_shift: u32) -> Option<Self> {
        Some(Self {
            tables: table::empty(nchunks)?,
            words: (1usize << chunk_shift) >> MARK_SHIFT,
            chunk_shift,
            made: AtomicUsize::new(0),
        })
    }

    /// Bytes of the tables: a pointer per chunk and the tables made so far.
    pub(crate) fn bytes(&self) -> usize {
        self.tables.len() * core::mem::size_of::<usize>()
            + self.made.load(Ordering::Relaxed) * self.words * 8
    }

    /// The table of chunk `chunk`, or null. `Acquire`: pairs with the `Release` that
    /// published it, so its words are seen initialised.
    #[inline]
    fn table(&self, chunk: usize) -> *mut AtomicU64 {
        self.tables
            .get(chunk)
            .map_or(ptr::null_mut(), |t| t.load(Ordering::Acquire))
    }

    /// The word holding the bit of `off`, with that bit, if its chunk has a table.
    #[inline]
    fn word(&self, off: usize) -> Option<(&AtomicU64, u64)> {
        let table = self.table(off >> self.chunk_shift);
        if table.is_null() {
            return None;
        }
        let (word, bit) = word_bit(off, self.chunk_shift);
        // SAFETY: a non-null table has `words` words and lives as long as `self`; `word <
        // words` as `off`'s offset in its chunk is below the chunk size.
        Some((unsafe { &*table.add(word) }, bit))
    }

    /// Whether a free through the arena claimed the block at `off` (in the arena) and its
    /// holder has not taken it from its mailbox yet.
    #[inline]
    pub(crate) fn is_claimed(&self, off: usize) -> bool {
        self.word(off)
            .is_some_and(|(w, bit)| w.load(Ordering::Relaxed) & bit != 0)
    }

    /// [`is_claimed`](Self::is_claimed) for an `off` known to lie in chunk `chunk` of the
    /// arena, without the range check: the holder's own free, which has checked both.
    ///
    /// # Safety
    /// `chunk < nchunks` (the `nchunks` the bits were made for) and
    /// `chunk == off >> chunk_shift`.
    #[inline]
    pub(crate) unsafe fn is_claimed_in(&self, chunk: usize, off: usize) -> bool {
        debug_assert!(chunk < self.tables.len() && chunk == off >> self.chunk_shift);
        // SAFETY: the caller's promise: `chunk` is below `nchunks`, the tables' length.
        let table = unsafe { self.tables.get_unchecked(chunk) }.load(Ordering::Acquire);
        if table.is_null() {
            return false;
        }
        let (word, bit) = word_bit(off, self.chunk_shift);
        // SAFETY: as in `word`: `off` lies in chunk `chunk`, so `word < words`.
        unsafe { &*table.add(word) }.load(Ordering::Relaxed) & bit != 0
    }

    /// Claims the block at `off` (in the arena) for a free through the arena: sets its bit;
    /// false if it was set already (another such free won), `None` (nothing changed) if the
    /// chunk's table had to be made and the allocator refused its memory. `Acquire`: a claim
    /// made after the holder released the bit ([`release`](Self::release)) sees what the
    /// holder did before.
    pub(crate) fn claim(&self, off: usize) -> Option<bool> {
        let chunk = off >> self.chunk_shift;
        let mut table = self.table(chunk);
        if table.is_null() {
            table = self.make(chunk)?;
        }
        let (word, bit) = word_bit(off, self.chunk_shift);
        // SAFETY: as in `word`.
        let word = unsafe { &*table.add(word) };
        Some(word.fetch_or(bit, Ordering::Acquire) & bit == 0)
    }

    /// Bytes of one chunk's table.
    pub(crate) fn table_bytes(&self) -> usize {
        self.words * 8
    }

    /// Makes chunk `chunk`'s table if no other thread did first; returns the one in place, or
    /// `None` if the allocator refuses the memory of a new one.
    #[cold]
    fn make(&self, chunk: usize) -> Option<*mut AtomicU64> {
        let fresh = table::filled(self.words, |_| AtomicU64::new(0))?;
        let fresh = Box::into_raw(fresh).cast::<AtomicU64>();
        match self.tables[chunk].compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.made.fetch_add(1, Ordering::Relaxed);
                Some(fresh)
            }
            Err(theirs) => {
                // SAFETY: made above with `words` words by `Box`, and never published.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, self.words)) });
                Some(theirs)
            }
        }
    }

    /// Clears the bit of the block at `off`: its holder took it from its mailbox (after
    /// clearing its start bit), or a free through the arena that claimed it found it dead.
    /// `Release`: pairs with the `Acquire` of the next [`claim`](Self::claim).
    #[inline]
    pub(crate) fn release(&self, off: usize) {
        if let Some((word, bit)) = self.word(off) {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Clears every bit of chunk `chunk`, just taken from the free set (a deleted client may
    /// have left blocks in its mailbox).
    pub(crate) fn clear_chunk(&self, chunk: usize) {
        let table = self.table(chunk);
        if table.is_null() {
            return;
        }
        for i in 0..self.words {
            // SAFETY: as in `word`; `i < words`.
            unsafe { &*table.add(i) }.store(0, Ordering::Relaxed);
        }
    }

    /// Whether chunk `chunk` has no bit set (for checks).
    pub(crate) fn chunk_is_clear(&self, chunk: usize) -> bool {
        let table = self.table(chunk);
        // SAFETY: as in `word`; `i < words`.
        table.is_null()
            || (0..self.words).all(|i| unsafe { &*table.add(i) }.load(Ordering::Relaxed) == 0)
    }
}

impl Drop for RemoteBits {
    fn drop(&mut self) {
        for table in &*self.tables {
            let p = table.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: made by `make` with `words` words by `Box`, published once, and
                // nothing uses it any more (`&mut self`).
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, self.words)) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn is_claimed_in_agrees_with_is_claimed() {
        let shift = 16;
        let bits = RemoteBits::new(2, shift).unwrap();
        let block = (1 << shift) + 4096 + 48;
        let offs = [
            0,
            48,
            1 << shift,
            block - 16,
            block,
            block + 16,
            (2 << shift) - 16,
        ];
        let check = |claimed: Option<usize>| {
            for off in offs {
                let chunk = off >> shift;
                // SAFETY: every offset lies in one of the two chunks.
                let fast = unsafe { bits.is_claimed_in(chunk, off) };
                assert_eq!(fast, bits.is_claimed(off), "at {off:#x}");
                assert_eq!(fast, Some(off) == claimed, "at {off:#x}");
            }
        };
        check(None);
        assert_eq!(bits.claim(block), Some(true));
        check(Some(block));
        assert_eq!(bits.claim(block), Some(false), "claimed already");
        bits.release(block);
        check(None);
    }
}
