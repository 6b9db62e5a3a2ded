//! Blocks larger than a chunk: runs of contiguous whole chunks taken from the arena at once,
//! held by one client, and given back at once when the block is freed.
//!
//! The first page of the first chunk says `LIVE | RUN` (a page count no buddy block has); the
//! metadata slots of its second and third pages hold the run's length in chunks (14 bits
//! each). The run's chunks are on the client's chunk list (so deleting the client gives them
//! back), count as wholly used, and have no free buddy blocks.

use super::held::HeldChunk;
use super::{KIND, LIVE, State, VALUE, meta};
use crate::arena::{Arena, Geometry, meta_slot};
use crate::chunks::NIL;
use crate::error::{Error, Result};

/// The page-metadata value of the first page of a run.
pub(super) const RUN: u16 = LIVE | VALUE;

/// Most chunks a run may have: two 14-bit metadata slots.
pub(crate) const MAX_RUN: usize = (1 << 28) - 1;

/// The length in chunks of the run starting at `off`, read from the marks table `marks` (as
/// `u16`s).
///
/// # Safety
/// A live run starts at `off`, and its metadata is not being written.
pub(crate) unsafe fn run_chunks(geo: &Geometry, marks: *const u16, off: usize) -> usize {
    let page = 1usize << geo.page_shift;
    // SAFETY: the caller's promise; pages 1 and 2 of the run's first chunk have slots.
    let (lo, hi) = unsafe {
        (
            *marks.add(meta_slot(geo, off + page)),
            *marks.add(meta_slot(geo, off + 2 * page)),
        )
    };
    usize::from(lo & VALUE) | usize::from(hi & VALUE) << 14
}

/// Whether page metadata `meta` starts a run.
#[inline]
pub(super) fn is_run(meta: u16) -> bool {
    meta & (KIND | VALUE) == RUN
}

impl State {
    /// Takes a run of whole chunks for `size` bytes (over a chunk); returns its offset and
    /// size.
    #[cold]
    pub(super) fn alloc_run(
        &mut self,
        arena: &Arena,
        id: u32,
        size: usize,
    ) -> Result<(usize, usize)> {
        let shift = self.geo.chunk_shift;
        let max = self.geo.max_run_bytes();
        if size > max {
            return Err(Error::TooLarge { size, max });
        }
        // At most `MAX_RUN`: `size` is at most that many chunks.
        let n = size.div_ceil(1 << shift);
        // Past the check of the request's size, which changes nothing: blocks freed through
        // the arena and trim requests are taken in before the run is sought.
        if self.has_mail(arena) {
            self.poll(arena);
        }
        let bytes = n << shift;
        self.check_quota(bytes)?;
        // The client's kept chunk (without a live block) goes back first if a run through it
        // is free, and the run is taken there: the client then holds the run alone.
        let mut at = None;
        if self.idle_chunks != 0
            && let Some(kept) = self.kept_chunk(arena, id)
            && let Some(first) = arena.run_around(n, kept.index())
        {
            self.purge(arena, kept.index());
            debug_assert!(HeldChunk::checked(arena.owners(), id, kept.index()).is_none());
            at = Some(first);
        }
        let first = match arena.acquire_run(id, n, at, size) {
            Ok(first) => first,
            Err(e) => {
                if matches!(e, Error::OutOfMemory { .. }) {
                    self.ask_others_to_trim(arena);
                }
                return Err(e);
            }
        };
        let usable = self.geo.usable_pages << self.geo.page_shift;
        // The arena just claimed chunks `first..first + n`: `n` fits and the sum is at most the
        // chunk count.
        for chunk in first..first + u32::try_from(n).unwrap_or(0) {
            let head = self.chunk_head;
            // SAFETY: the arena just handed the run's chunks to this client.
            let info = self.info(unsafe { HeldChunk::new_unchecked(chunk as usize) });
            info.next = head;
            info.prev = NIL;
            info.used = usable;
            if head != NIL {
                self.info(Self::listed(head)).prev = chunk;
            }
            self.chunk_head = chunk;
            arena.set_mailbox(chunk as usize, self.mailbox);
        }
        self.chunks += n;
        // Counted as a chunk without a live block until `alloc` counts the block in it.
        self.idle(arena, first);
        let off = (first as usize) << shift;
        let page = off >> self.geo.page_shift;
        self.set_page(page, RUN);
        self.set_page(page + 1, meta(0, n & usize::from(VALUE)));
        self.set_page(page + 2, meta(0, n >> 14));
        Ok((off, bytes))
    }

    /// The held chunk without a live block, if there is one (a run's chunks after its first
    /// have none, and are not it): for a run, which takes whole chunks. In constant time from
    /// `kept_hint`, the chunk that last became the only idle one, which every path keeps
    /// (a second idle chunk is given back at once); the chunk list is walked only if the hint
    /// does not hold such a chunk of this client.
    fn kept_chunk(&mut self, arena: &Arena, id: u32) -> Option<HeldChunk> {
        if let Some(held) = HeldChunk::checked(arena.owners(), id, self.kept_hint as usize)
            && self.is_kept(held)
        {
            return Some(held);
        }
        let mut chunk = self.chunk_head;
        while chunk != NIL {
            let held = Self::listed(chunk);
            if self.is_kept(held) {
                return Some(held);
            }
            chunk = self.info(held).next;
        }
        None
    }

    /// Whether held chunk `held` has no live block and is not part of a run after its first
    /// chunk.
    fn is_kept(&mut self, held: HeldChunk) -> bool {
        let usable = self.geo.usable_pages << self.geo.page_shift;
        let info = self.info(held);
        let (live, used) = (info.live, info.used);
        // A run's later chunks count as wholly used and have no page metadata; a chunk
        // wholly used by cached blocks and slabs has that of its first one.
        let run_part = used == usable && self.page_at(held.index() << self.geo.chunk_shift) == 0;
        live == 0 && !run_part
    }

    /// Gives the run at `off` (its block just freed, its start bit clear) back to the arena;
    /// returns its size.
    #[cold]
    pub(super) fn free_run(&mut self, arena: &Arena, off: usize) -> usize {
        // SAFETY: a live run starts at `off`; only this client writes its metadata.
        let n = unsafe { run_chunks(&self.geo, self.marks.cast::<u16>(), off) };
        let bytes = n << self.geo.chunk_shift;
        if self.free_flags {
            self.on_free(arena, off, bytes, 0);
        }
        let page = off >> self.geo.page_shift;
        for i in 0..3 {
            self.set_page(page + i, 0);
        }
        let first = off >> self.geo.chunk_shift;
        // SAFETY: the run's chunks are held by this client, which holds a run whole until it
        // is freed here.
        let run = move |chunk: usize| unsafe { HeldChunk::new_unchecked(chunk) };
        self.info(run(first)).live = 0;
        for chunk in first..first + n {
            self.unlink_chunk(run(chunk));
        }
        for chunk in first..first + n {
            let info = self.info(run(chunk));
            info.used = 0;
            info.next = if chunk + 1 < first + n {
                u32::try_from(chunk + 1).unwrap_or(NIL)
            } else {
                NIL
            };
        }
        self.chunks -= n;
        self.room += bytes;
        self.frees += 1;
        // No start bit (the block's was cleared when it was claimed), no page metadata (just
        // cleared) and no free bit (a run has none) is left: the tables are clean.
        arena.release_list(u32::try_from(first).unwrap_or(NIL), true);
        bytes
    }
}
