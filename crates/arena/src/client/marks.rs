//! The marks table seen from a client: page metadata (what each buddy page is) and block
//! start bits (one per 16 bytes, set exactly at the start of each live block), and the
//! constant-time tests and claims of blocks built on them.

use super::held::HeldChunk;
use super::{State, block_size};
use crate::arena::{MARK_SHIFT, meta_slot, start_word};
use crate::config::MIN_BLOCK;
use crate::error::{Error, Result};
use crate::remote_bits::RemoteBits;
use crate::sync::{AtomicU32, Ordering};

impl State {
    /// Sets the metadata of buddy page `index` (counted from chunk 0).
    #[inline]
    pub(super) fn set_page(&mut self, index: usize, value: u16) {
        let slot = meta_slot(&self.geo, index << self.geo.page_shift);
        // SAFETY: callers pass the index of a page of a chunk this client holds; the marks
        // table has a `u16` slot for every page of every chunk (in the metadata word of the KiB
        // the page starts in), and `u16` is less aligned than the table's `u64`s.
        unsafe { *self.marks.cast::<u16>().add(slot) = value }
    }

    /// The metadata of the page that byte `off` lies in, read from the metadata word of the
    /// KiB of `off`: right for the first KiB of a page, and for every KiB of a slab's pages
    /// (see [`set_slab_pages`](Self::set_slab_pages)).
    #[inline]
    pub(super) fn page_at(&self, off: usize) -> u16 {
        // SAFETY: callers pass an offset in a chunk this client holds; as in `set_page`, the
        // metadata word of every KiB has a `u16` slot for each page starting in it, and pages
        // of 1 KiB or more use the first.
        unsafe { *self.marks.cast::<u16>().add(meta_slot(&self.geo, off)) }
    }

    /// Sets the metadata of the pages of the slab of `bytes` at `off` to `value`: each page's,
    /// and with pages over 1 KiB that of every KiB (so that [`page_at`](Self::page_at) finds
    /// it from any block of the slab).
    pub(super) fn set_slab_pages(&mut self, off: usize, bytes: usize, value: u16) {
        const KIB: usize = 1 << MARK_SHIFT;
        // A slab is whole KiBs: its length is a power of two of at least `MIN_SLAB` bytes, and
        // it starts at a multiple of the slab unit (`slab_start`), `MIN_SLAB` or a larger page.
        // So each metadata word is written at once, `value` in the slot of every page starting
        // in its KiB (the first `meta_mask + 1` slots; the others are unused and stay zero).
        const _: () = assert!(
            crate::classes::MIN_SLAB.is_multiple_of(KIB),
            "a slab is whole KiBs"
        );
        const _: () = assert!(
            MARK_SHIFT - crate::arena::MIN_PAGE_SHIFT <= 2,
            "4 slots a word"
        );
        debug_assert_eq!((off | bytes) & (KIB - 1), 0, "a slab is whole KiBs");
        let slots = (self.geo.meta_mask + 1) * 16;
        let word = (u64::MAX >> (64 - slots)) / 0xffff * u64::from(value);
        let mut at = off;
        while at < off + bytes {
            // SAFETY: `at` lies in the slab, in a chunk this client holds; the word after its
            // start-bit word is the metadata word of its KiB, the holder's plain memory.
            unsafe { *self.marks.add(start_word(at) + 1) = word };
            at += KIB;
        }
    }

    /// The start-bit word of byte offset `off`, which lies in the arena.
    #[inline]
    pub(super) fn start_bits(&self, off: usize) -> &core::sync::atomic::AtomicU64 {
        // SAFETY: the marks table covers the arena and is made of `AtomicU64`s (`marks` is
        // their pointer, cast), so the word is one, alive as long as the arena.
        unsafe {
            &*self
                .marks
                .add(start_word(off))
                .cast::<core::sync::atomic::AtomicU64>()
        }
    }

    /// Sets the start bit of the block just handed out at `off`. Only the holder writes its
    /// start-bit words, so a relaxed load and store (no locked read-modify-write) lose no
    /// other bit; they are atomic because other threads read the word
    /// ([`Arena::free`](crate::Arena::free), [`Arena::owner_of`](crate::Arena::owner_of)).
    #[inline]
    pub(super) fn set_start(&mut self, off: usize) {
        let word = self.start_bits(off);
        word.store(
            word.load(Ordering::Relaxed) | 1 << ((off >> 4) & 63),
            Ordering::Relaxed,
        );
    }

    /// Clears the start bit of the block at `off`, which is being freed (see
    /// [`set_start`](Self::set_start)).
    #[inline]
    pub(super) fn clear_start(&mut self, off: usize) {
        let word = self.start_bits(off);
        word.store(
            word.load(Ordering::Relaxed) & !(1 << ((off >> 4) & 63)),
            Ordering::Relaxed,
        );
    }

    /// Checks that `ptr` is the start of a live block of client `id` that no free through the
    /// arena has claimed, and claims it by clearing its start bit; returns its offset, its
    /// chunk, its page metadata and its metadata slot. A free through the arena ordered after
    /// this one then sees the bit clear; one ordered before set the block's remote-free bit,
    /// seen here.
    #[inline(always)]
    pub(super) fn claim(
        &mut self,
        owners: &[AtomicU32],
        remote: &RemoteBits,
        id: u32,
        ptr: *const u8,
    ) -> Result<(usize, HeldChunk, u16)> {
        let addr = ptr.addr();
        let off = addr.wrapping_sub(self.geo.base_addr);
        if off >= self.geo.len {
            return Err(Error::Foreign { addr });
        }
        let chunk = off >> self.geo.chunk_shift;
        debug_assert!(chunk < owners.len() && chunk < self.geo.nchunks);
        // SAFETY: `off < len = nchunks << chunk_shift`, so `chunk < nchunks`, the length of
        // the owner table.
        let owner = unsafe { owners.get_unchecked(chunk) };
        if owner.load(Ordering::Relaxed) != id {
            return Err(Error::NotOwned { addr, chunk });
        }
        // SAFETY: the owner table says this client holds `chunk` (a relaxed load that reads
        // `id` reads this client's own store, as in `HeldChunk::checked`).
        let held = unsafe { HeldChunk::new_unchecked(chunk) };
        let bit = 1u64 << ((off >> 4) & 63);
        // The KiB's start-bit word and, next to it, its metadata word (`meta_slot`).
        let kib = self.marks.wrapping_add(start_word(off));
        // SAFETY: as in `start_bits`: the marks table covers the arena and is made of
        // `AtomicU64`s.
        let word = unsafe { &*kib.cast::<core::sync::atomic::AtomicU64>() };
        let bits = word.load(Ordering::Relaxed);
        if !off.is_multiple_of(MIN_BLOCK)
            || bits & bit == 0
            // SAFETY: `chunk < nchunks` (above) and `chunk == off >> chunk_shift`.
            || unsafe { remote.is_claimed_in(chunk, off) }
        {
            return Err(Error::NotABlock { addr });
        }
        word.store(bits & !bit, Ordering::Relaxed);
        let page = (off >> self.geo.page_shift) & self.geo.meta_mask;
        debug_assert_eq!(
            kib.wrapping_add(1).cast::<u16>().wrapping_add(page),
            self.marks
                .cast::<u16>()
                .wrapping_add(meta_slot(&self.geo, off))
        );
        // SAFETY: the `u16` at `page` of the metadata word after `kib` is the metadata slot of
        // `off` (`meta_slot`), in the marks table, in a chunk this client holds; only this
        // client writes it.
        let meta = unsafe { *kib.add(1).cast::<u16>().add(page) };
        Ok((off, held, meta))
    }

    /// Checks that `ptr` is the start of a live block of client `id` (its start bit is set
    /// and no free through the arena claimed it); returns its offset.
    #[inline]
    pub(super) fn locate(
        &self,
        owners: &[AtomicU32],
        remote: &RemoteBits,
        id: u32,
        ptr: *const u8,
    ) -> Result<usize> {
        let addr = ptr.addr();
        let off = addr.wrapping_sub(self.geo.base_addr);
        if off >= self.geo.len {
            return Err(Error::Foreign { addr });
        }
        let chunk = off >> self.geo.chunk_shift;
        if HeldChunk::checked(owners, id, chunk).is_none() {
            return Err(Error::NotOwned { addr, chunk });
        }
        let g = off >> 4;
        if !off.is_multiple_of(MIN_BLOCK)
            || self.start_bits(off).load(Ordering::Relaxed) & (1 << (g & 63)) == 0
            || remote.is_claimed(off)
        {
            return Err(Error::NotABlock { addr });
        }
        Ok(off)
    }

    /// [`locate`](Self::locate), with the metadata of the block's page and its slot in the
    /// marks table (as `u16`s).
    #[inline]
    pub(super) fn locate_meta(
        &self,
        owners: &[AtomicU32],
        remote: &RemoteBits,
        id: u32,
        ptr: *const u8,
    ) -> Result<(usize, u16, usize)> {
        let off = self.locate(owners, remote, id, ptr)?;
        // A live block starts a buddy block (on a page) or lies in a slab.
        let slot = meta_slot(&self.geo, off);
        Ok((off, self.page_at(off), slot))
    }

    /// The size of the live block at `off`, whose page metadata is `meta`.
    #[inline]
    pub(super) fn block_size(&self, off: usize, meta: u16) -> usize {
        // SAFETY: callers located a live block of this client at `off`; only this client
        // writes its metadata.
        unsafe { block_size(&self.geo, self.marks.cast::<u16>(), off, meta) }
    }
}
