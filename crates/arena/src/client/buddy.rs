//! Buddy blocks: free buddy blocks live in side tables, never in the block's memory: per
//! chunk and order a bitmap of free blocks and a summary word (bit `w` set while word `w` of
//! the bitmap is not zero), and per order a list of the client's chunks that have a free
//! block of that order (linked through the chunk records; `mask` bit `o` is set while list
//! `o` is not empty).

use super::held::HeldChunk;
use super::{State, chunk_index};
use crate::arena::{Arena, slot};
use crate::chunks::NIL;
use crate::config::Flags;
use crate::error::{Error, Result};

impl State {
    #[inline]
    pub(super) fn free_words(&self, chunk: HeldChunk) -> *mut u64 {
        // SAFETY: the client holds `chunk` (`HeldChunk`), so the words are its alone; each
        // chunk has `free_words` words, inside the table.
        unsafe { self.free_bits.add(chunk.index() * self.geo.free_words) }
    }

    #[inline]
    pub(super) fn is_free(&self, chunk: HeldChunk, order: u32, index: usize) -> bool {
        let words = self.free_words(chunk);
        let word = self.geo.order_word[slot(order)] + index / 64;
        // SAFETY: `index` is below `2^(max_order - order)`, so the word is inside the chunk's
        // bitmap of that order.
        unsafe { *words.add(word) & (1 << (index % 64)) != 0 }
    }

    /// The word of the order-`order` bitmap of `chunk` that holds block `index`.
    pub(super) fn free_word(&self, chunk: HeldChunk, order: u32, index: usize) -> u64 {
        let words = self.free_words(chunk);
        let word = self.geo.order_word[slot(order)] + index / 64;
        // SAFETY: as in `is_free`.
        unsafe { *words.add(word) }
    }

    /// Marks block `index` of `order` in `chunk` free.
    #[inline]
    pub(super) fn set_free(&mut self, chunk: HeldChunk, order: u32, index: usize) {
        let words = self.free_words(chunk);
        let word = self.geo.order_word[slot(order)] + index / 64;
        // SAFETY: as in `is_free`; the summary word of `order` is word `order`.
        let was_empty = unsafe {
            let summary = words.add(order as usize);
            let was_empty = *summary == 0;
            *words.add(word) |= 1 << (index % 64);
            *summary |= 1 << (index / 64);
            was_empty
        };
        if was_empty {
            let o = slot(order);
            let head = self.heads[o];
            let info = self.info(chunk);
            info.order_next[o] = head;
            info.order_prev[o] = NIL;
            if head != NIL {
                self.info(Self::listed(head)).order_prev[o] = chunk_index(chunk.index());
            }
            self.heads[o] = chunk_index(chunk.index());
            self.mask |= 1 << order;
        }
    }

    /// Marks free block `index` of `order` in `chunk` taken.
    #[inline]
    pub(super) fn clear_free(&mut self, chunk: HeldChunk, order: u32, index: usize) {
        let words = self.free_words(chunk);
        let word = self.geo.order_word[slot(order)] + index / 64;
        // SAFETY: as in `set_free`.
        let now_empty = unsafe {
            let w = words.add(word);
            let left = *w & !(1 << (index % 64));
            *w = left;
            // The summary bit goes with the word's last bit (without a branch on it).
            let summary = words.add(order as usize);
            *summary &= !(u64::from(left == 0) << (index / 64));
            *summary == 0
        };
        if now_empty {
            let o = slot(order);
            let (next, prev) = {
                let info = self.info(chunk);
                (info.order_next[o], info.order_prev[o])
            };
            if prev == NIL {
                self.heads[o] = next;
                if next == NIL {
                    self.mask &= !(1 << order);
                }
            } else {
                self.info(Self::listed(prev)).order_next[o] = next;
            }
            if next != NIL {
                self.info(Self::listed(next)).order_prev[o] = prev;
            }
        }
    }

    /// Takes some free block of `order` from `chunk`, which has one; returns its index.
    #[inline]
    pub(super) fn take_free(&mut self, chunk: HeldChunk, order: u32) -> usize {
        let words = self.free_words(chunk);
        // SAFETY: the summary word and the word it points at are inside the chunk's bitmaps.
        let index = unsafe {
            let w = (*words.add(order as usize)).trailing_zeros() as usize;
            let bits = *words.add(self.geo.order_word[slot(order)] + w);
            w * 64 + bits.trailing_zeros() as usize
        };
        self.clear_free(chunk, order, index);
        index
    }

    /// Takes a block of `pages` buddy pages aligned to `2^min_order` pages, taking a chunk if
    /// needed; the unused tail of the power-of-two block goes back as free blocks. Returns its
    /// offset; its page metadata is the caller's to set.
    pub(super) fn alloc_pages(
        &mut self,
        arena: &Arena,
        id: u32,
        pages: usize,
        min_order: u32,
        requested: usize,
    ) -> Result<usize> {
        let order = pages.next_power_of_two().trailing_zeros().max(min_order);
        let mut avail = self.mask >> order;
        if avail == 0 {
            if let Err(e) = self.add_chunk(arena, id, requested) {
                // Out of chunks: the other clients are asked to trim at their next call, and
                // the cached blocks go back first if that frees a block of `order`;
                // otherwise nothing changes.
                if !matches!(e, Error::OutOfMemory { .. }) {
                    return Err(e);
                }
                self.ask_others_to_trim(arena);
                if !self.flush_would_free(order) {
                    return Err(e);
                }
                self.flush(arena, true);
                debug_assert!(
                    self.mask >> order != 0,
                    "flush freed no block of order {order}"
                );
            }
            avail = self.mask >> order;
            if avail == 0 {
                return Err(Error::TooLarge {
                    size: requested,
                    max: self.geo.max_block,
                });
            }
        }
        let mut j = order + avail.trailing_zeros();
        let chunk = Self::listed(self.heads[slot(j)]);
        let rel = self.take_free(chunk, j) << j;
        while j > order {
            j -= 1;
            self.set_free(chunk, j, (rel >> j) + 1);
        }
        let mut pos = pages;
        while pos < 1 << order {
            let i = pos.trailing_zeros();
            self.set_free(chunk, i, (rel + pos) >> i);
            pos += 1 << i;
        }
        let shift = self.geo.page_shift;
        let info = self.info(chunk);
        let was_empty = info.used == 0;
        info.used += pages << shift;
        if was_empty {
            self.empty_chunks -= 1;
        }
        Ok((chunk.index() << self.geo.chunk_shift) + (rel << shift))
    }

    /// Gives back `pages` buddy pages at `off`, merging with free buddies.
    pub(super) fn free_pages(&mut self, arena: &Arena, off: usize, pages: usize) {
        let shift = self.geo.page_shift;
        // SAFETY: the pages at `off` are a block or slab of this client being given back.
        let chunk = unsafe { self.chunk_of(off) };
        let rel = (off >> shift) & ((1 << self.geo.max_order) - 1);
        let order = pages.next_power_of_two().trailing_zeros();
        if rel.is_multiple_of(1 << order) && self.take_tail(chunk, rel, pages, order) {
            // The tail `pages..2^order` that `alloc_pages` gave back is still free: the block
            // goes back whole, as the power-of-two block it was cut from.
            self.free_piece(chunk, rel, order);
        } else {
            // The pieces of the binary expansion of `pages`, largest first.
            let mut pos = 0;
            let mut rest = pages;
            while rest != 0 {
                let i = usize::BITS - 1 - rest.leading_zeros();
                self.free_piece(chunk, rel + pos, i);
                pos += 1 << i;
                rest &= !(1 << i);
            }
        }
        let info = self.info(chunk);
        info.used -= pages << shift;
        if info.used == 0 {
            self.empty_chunks += 1;
            // An empty chunk has no live block: it is one of the idle chunks, of which one
            // is kept.
            if self.idle_chunks > 1 {
                self.release_chunk(arena, chunk);
            }
        }
    }

    /// If the tail `pages..2^order` of the order-`order` block at page `rel` (aligned to it)
    /// consists of free whole blocks — the pieces `alloc_pages` gave back, largest last —
    /// takes them all and returns true; otherwise changes nothing and returns false.
    #[inline]
    pub(super) fn take_tail(
        &mut self,
        chunk: HeldChunk,
        rel: usize,
        pages: usize,
        order: u32,
    ) -> bool {
        let end = 1 << order;
        let mut pos = pages;
        while pos < end {
            let i = pos.trailing_zeros();
            if !self.is_free(chunk, i, (rel + pos) >> i) {
                return false;
            }
            pos += 1 << i;
        }
        let mut pos = pages;
        while pos < end {
            let i = pos.trailing_zeros();
            self.clear_free(chunk, i, (rel + pos) >> i);
            pos += 1 << i;
        }
        true
    }

    /// Frees the block of `2^order` pages at page `rel` of `chunk`, merging it with its buddy
    /// while the buddy is free and whole.
    #[inline]
    pub(super) fn free_piece(&mut self, chunk: HeldChunk, mut rel: usize, mut order: u32) {
        while order < self.geo.max_order {
            let buddy = rel ^ (1 << order);
            if !self.is_free(chunk, order, buddy >> order) {
                break;
            }
            self.clear_free(chunk, order, buddy >> order);
            rel = rel.min(buddy);
            order += 1;
        }
        self.set_free(chunk, order, rel >> order);
    }

    /// The blocks an empty chunk consists of, as (first page, order): the usable pages cut
    /// into power-of-two blocks, largest first.
    pub(super) fn pieces(&self) -> impl Iterator<Item = (usize, u32)> + use<> {
        let usable = self.geo.usable_pages;
        let mut pos = 0;
        (0..=self.geo.max_order)
            .rev()
            .filter(move |&i| usable & (1 << i) != 0)
            .map(move |i| {
                let at = pos;
                pos += 1 << i;
                (at, i)
            })
    }

    #[cold]
    pub(super) fn add_chunk(&mut self, arena: &Arena, id: u32, requested: usize) -> Result<()> {
        let chunk = arena.acquire(id, requested)?;
        // SAFETY: the arena just handed `chunk` to this client.
        let held = unsafe { HeldChunk::new_unchecked(chunk as usize) };
        let head = self.chunk_head;
        let info = self.info(held);
        info.next = head;
        info.prev = NIL;
        if head != NIL {
            self.info(Self::listed(head)).prev = chunk;
        }
        self.chunk_head = chunk;
        self.chunks += 1;
        self.empty_chunks += 1;
        self.idle(arena, chunk);
        arena.set_mailbox(chunk as usize, self.mailbox);
        for (at, order) in self.pieces() {
            self.set_free(held, order, at >> order);
        }
        Ok(())
    }

    #[cold]
    pub(super) fn release_chunk(&mut self, arena: &Arena, chunk: HeldChunk) {
        for (at, order) in self.pieces() {
            debug_assert!(self.is_free(chunk, order, at >> order));
            self.clear_free(chunk, order, at >> order);
        }
        self.unlink_chunk(chunk);
        self.info(chunk).next = NIL;
        self.chunks -= 1;
        self.empty_chunks -= 1;
        self.idle_chunks -= 1;
        if self.geo.flags.contains(Flags::STATISTICS) {
            arena.count_pinned(0, 1);
        }
        // An empty chunk's tables are all zero: no start bit (no live block), no page metadata
        // (cleared when each block or slab was freed) and, the canonical pieces just taken, no
        // free bit.
        arena.release_list(chunk_index(chunk.index()), true);
    }
}
