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
        let first = match arena.acquire_run(id, n, at) {
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
        self.kept_from_hint(arena, id)
            .or_else(|| self.kept_by_walk())
    }

    /// `kept_hint`, if it names a held chunk of client `id` without a live block that is not
    /// part of a run after its first chunk.
    fn kept_from_hint(&mut self, arena: &Arena, id: u32) -> Option<HeldChunk> {
        let held = HeldChunk::checked(arena.owners(), id, self.kept_hint as usize)?;
        self.is_kept(held).then_some(held)
    }

    /// The first chunk of the chunk list without a live block that is not part of a run after
    /// its first chunk.
    fn kept_by_walk(&mut self) -> Option<HeldChunk> {
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

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec::Vec;
    use core::alloc::Layout;
    use core::ptr::NonNull;

    use crate::arena::Arena;
    use crate::backing::Backing;
    use crate::chunks::NIL;
    use crate::client::{Client, State};
    use crate::config::{Config, Flags, Quota};

    const CHUNK: usize = 64 << 10;

    /// The held chunks of `s` that [`State::is_kept`] accepts, in chunk-list order.
    fn kept_chunks(s: &mut State) -> Vec<usize> {
        let mut all = Vec::new();
        let mut chunk = s.chunk_head;
        while chunk != NIL {
            let held = State::listed(chunk);
            if s.is_kept(held) {
                all.push(held.index());
            }
            chunk = s.info(held).next;
        }
        all
    }

    /// Checks that the client keeps at most one chunk without a live block, that its count of
    /// them says so, and that the hint names it whenever there is one: the hint gives the
    /// chunk the walk of the chunk list gives, without the walk.
    fn check_hint(client: &Client<'_>) {
        let arena = client.arena;
        let id = client.id();
        client.with(|s| {
            let kept = kept_chunks(s);
            assert!(kept.len() <= 1, "kept chunks {kept:?}");
            assert_eq!(s.idle_chunks, kept.len(), "kept chunks {kept:?}");
            let hint = s.kept_from_hint(arena, id).map(|h| h.index());
            let walk = s.kept_by_walk().map(|h| h.index());
            assert_eq!(walk, kept.first().copied());
            assert_eq!(hint, walk, "hint {}", s.kept_hint);
        });
    }

    /// Random allocations (small, buddy, whole-chunk and run sizes), frees by the client and
    /// through the arena, trims, and deletions of clients, over several clients of a small
    /// arena: after every step each client's hint names its kept chunk exactly as a walk of
    /// its chunk list finds it, so runs are placed as the walk placed them.
    #[test]
    fn kept_hint_names_the_chunk_the_walk_finds() {
        let steps = if cfg!(miri) { 40 } else { 20_000 };
        let mut next = crate::test_rng::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        for flags in [Flags::empty(), Flags::STATISTICS | Flags::GUARD] {
            let config = Config::new().with_chunk_size(CHUNK).with_flags(flags);
            let arena = Arena::new(Backing::heap(24 * CHUNK, 4096).unwrap(), config).unwrap();
            let mut clients: Vec<Option<(Client<'_>, Vec<NonNull<u8>>)>> =
                (0..3).map(|_| None).collect();
            for _ in 0..steps {
                let r = next();
                let c = usize::try_from(r % 3).unwrap();
                let pick = usize::try_from(r >> 32).unwrap();
                let slot = &mut clients[c];
                let Some((client, live)) = slot else {
                    // Some clients with a quota that refuses a request now and then.
                    let quota = if pick % 2 == 0 {
                        Quota::UNLIMITED
                    } else {
                        Quota::bytes(CHUNK * (1 + pick % 6))
                    };
                    *slot = Some((arena.create_client(quota).unwrap(), Vec::new()));
                    continue;
                };
                match (r >> 8) % 16 {
                    0..=5 => {
                        let size = match (r >> 12) % 5 {
                            0 => 1 + pick % 2048,
                            1 => 2049 + pick % (CHUNK / 2),
                            2 => CHUNK / 2 + pick % (CHUNK / 2),
                            3 => CHUNK + 1 + pick % (3 * CHUNK),
                            _ => 16,
                        };
                        // Alignments from 1 to twice a chunk (past what the arena supports).
                        let align = 1 << ((r >> 40) % 18);
                        let layout = Layout::from_size_align(size, align).unwrap();
                        if let Ok(p) = client.alloc(layout) {
                            live.push(p);
                        }
                    }
                    6..=10 if !live.is_empty() => {
                        let p = live.swap_remove(pick % live.len());
                        // SAFETY: `p` is a live block of the client, not used again.
                        unsafe { client.free(p) }.unwrap();
                    }
                    11..=12 if !live.is_empty() => {
                        let p = live.swap_remove(pick % live.len());
                        // SAFETY: as above; the client takes the free in at its next call.
                        unsafe { arena.free(p) }.unwrap();
                    }
                    13 => client.trim(),
                    14 if pick % 8 == 0 => {
                        let (client, _) = slot.take().unwrap();
                        arena.delete_client(client);
                        continue;
                    }
                    _ => arena.trim(),
                }
                for (client, _) in clients.iter().flatten() {
                    check_hint(client);
                }
            }
        }
    }
}
