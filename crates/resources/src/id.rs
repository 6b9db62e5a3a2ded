//! [`IdAllocator`]: integer IDs (GSIs, memory slots, device IDs) from an inclusive range of
//! `u16`, `u32` (the default) or `u64` values.

use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive as IdRange;

use crate::address::{HeldRuns, RunSet};
use crate::debug::List;
use crate::error::{Error, Result};
use crate::id_width::Id;

const BITS: usize = 64;

/// IDs the bitmap may always cover, however few are allocated: 8 KiB of leaves.
const DENSE_FLOOR: u64 = 1 << 16;

/// Bitmap bits allowed per allocated ID past [`DENSE_FLOOR`]: the bitmap grows to cover an ID
/// only while it then holds at most this many bits per allocated ID (8 bytes each, less than
/// the 28 of a run in the tree of IDs held past it).
const DENSE_BITS_PER_ID: u64 = 64;

/// Most IDs one allocator may manage: `last - first + 1` is at most 2^32, whatever the ID
/// width. The bitmap covers only IDs up to the highest one allocated, and only while it holds at
/// most 64 bits per allocated ID, so this bounds it at 512 MiB of leaves plus 8 MiB of summary
/// for a range that is really used to its end.
pub const MAX_ID_RANGE: u64 = 1 << 32;

/// Hands out IDs of type `I` (`u16`, `u32` by default, or `u64`) from an inclusive range,
/// smallest free first.
///
/// The state is a three-level bitmap: one bit per ID (set = allocated), one summary bit per
/// 64-ID word that says whether the word still has a free ID, and one top bit per summary word
/// that says whether it is non-zero. Finding the smallest free ID reads a handful of words;
/// freeing an ID the bitmap covers is O(1). The bitmap covers the IDs from the bottom of the range
/// up, and grows to cover an ID only while it then holds at most 64 bits (8 bytes) per allocated
/// ID, or covers at most 64 Ki IDs; IDs allocated above it are held as runs (28 bytes each) in a
/// search tree. So memory follows the IDs allocated (the most at any one time), not the highest
/// one: a dense range costs about one bit per ID, and one ID near the top of the whole `u32` range
/// a few dozen bytes. A range holds at most [`MAX_ID_RANGE`] IDs, which bounds the bitmap whatever
/// the width.
///
/// The allocator also remembers which IDs were never handed out, so that freeing one is told
/// apart from freeing one twice ([`Error::IdNeverAllocated`] vs [`Error::IdAlreadyFree`]).
///
/// The most recently freed ID is held aside with its bitmap bit still set until the next
/// allocation takes it (when it is the smallest free ID) or another free or a run operation
/// writes it back. Freeing an ID and allocating one again, the common churn, then only reads
/// the bitmap. This changes no answer: allocation is smallest free first either way.
///
/// ```
/// use memvisor_resources::{Error, IdAllocator};
///
/// let mut gsis = IdAllocator::new(5, 23)?;
/// assert_eq!(gsis.allocate_id()?, 5);
/// assert_eq!(gsis.allocate_id()?, 6);
/// gsis.allocate_id_at(10)?;
/// assert_eq!(gsis.allocate_ids(4, 4)?, 12..=15);
/// gsis.free_id(5)?;
/// assert_eq!(gsis.free_id(5), Err(Error::IdAlreadyFree(5)));
/// assert_eq!(gsis.free_id(20), Err(Error::IdNeverAllocated(20)));
/// assert_eq!(gsis.allocate_id()?, 5);
/// assert_eq!(gsis.iter().collect::<Vec<_>>(), [5, 6, 10, 12, 13, 14, 15]);
/// assert_eq!((gsis.used(), gsis.available()), (7, 12));
///
/// // Wider IDs: a window of 4096 IDs above 2^40.
/// let mut wide = IdAllocator::<u64>::with_range(1 << 40, (1 << 40) + 4095)?;
/// assert_eq!(wide.allocate_id()?, 1 << 40);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct IdAllocator<I: Id = u32> {
    first: I,
    last: I,
    /// Bit `i % 64` of word `i / 64` is set iff ID `first + i` is allocated. Bits past `last`
    /// in the final word are set so that they are never handed out. IDs past the vector are
    /// free.
    leaves: Vec<u64>,
    /// Bit `w % 64` of word `w / 64` is set iff `leaves[w]` has a clear (free) bit.
    summary: Vec<u64>,
    /// Bit `s % 64` of word `s / 64` is set iff `summary[s]` is not zero.
    top: Vec<u64>,
    /// Every `top` word below this index is zero.
    hint: usize,
    /// The most recently freed ID, if it has not been handed out again: free, but its bitmap bit
    /// is still set (the bitmap is brought up to date when another ID is freed or an operation
    /// other than `free_id`, `allocate_id` and `allocate_id_at` needs it exact). A free followed
    /// by an allocation then writes no bitmap word at all.
    parked: Option<u32>,
    /// Number of allocated IDs.
    used: u64,
    /// Runs `start..=end` (inclusive, offsets from `first`) of allocated IDs past the bitmap,
    /// which covers them only while it stays in proportion to the IDs allocated (see
    /// `dense_ok`); sorted, disjoint and not adjacent, every one at or past `bitmap_ids()`.
    /// Empty while IDs are handed out from the bottom.
    far: HeldRuns,
    /// Number of IDs in the runs of `far`, so that counting the free IDs inside the bitmap
    /// does not walk them.
    held_ids: u64,
    /// Runs `start..=end` (inclusive, offsets from `first`) of IDs never allocated; sorted,
    /// disjoint and not adjacent. Kept in a tree whose memory is reserved before it changes,
    /// so that a heap refusal is an error, not an abort.
    never: RunSet,
}

impl IdAllocator {
    /// Creates an allocator of the `u32` IDs `first..=last`, all free. For other widths, see
    /// [`with_range`](Self::with_range).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdRange`] if `first > last`.
    pub fn new(first: u32, last: u32) -> Result<Self> {
        Self::with_range(first, last)
    }
}

impl<I: Id> IdAllocator<I> {
    /// Creates an allocator of the IDs `first..=last`, all free.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdRange`] if `first > last`, [`Error::IdRangeTooLarge`] if the range
    /// holds more than [`MAX_ID_RANGE`] IDs, [`Error::HeapRefused`] if the heap refuses the
    /// node of the never-allocated run (a few dozen bytes).
    ///
    /// ```
    /// use memvisor_resources::{Error, IdAllocator, MAX_ID_RANGE};
    ///
    /// let mut ports = IdAllocator::<u16>::with_range(0xfff0, u16::MAX)?;
    /// assert_eq!(ports.allocate_ids(16, 16)?, 0xfff0..=u16::MAX);
    /// assert_eq!(
    ///     IdAllocator::<u64>::with_range(0, u64::MAX).err(),
    ///     Some(Error::IdRangeTooLarge { first: 0, last: u64::MAX, max: MAX_ID_RANGE })
    /// );
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_range(first: I, last: I) -> Result<Self> {
        let (lo, hi) = (first.to_u64(), last.to_u64());
        if lo > hi {
            return Err(Error::InvalidIdRange {
                first: lo,
                last: hi,
            });
        }
        let Ok(span) = u32::try_from(hi - lo) else {
            return Err(Error::IdRangeTooLarge {
                first: lo,
                last: hi,
                max: MAX_ID_RANGE,
            });
        };
        let never = RunSet::one(0, u64::from(span))?;
        Ok(Self {
            first,
            last,
            leaves: Vec::new(),
            summary: Vec::new(),
            top: Vec::new(),
            hint: 0,
            parked: None,
            used: 0,
            far: HeldRuns::new(),
            held_ids: 0,
            never,
        })
    }

    /// The first ID of the managed range.
    #[must_use]
    pub fn first(&self) -> I {
        self.first
    }

    /// The last ID of the managed range (inclusive).
    #[must_use]
    pub fn last(&self) -> I {
        self.last
    }

    /// The number of IDs in the managed range.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        u64::from(self.span()) + 1
    }

    /// The number of ID positions the bitmap's leaves cover (up to 2^32, which a 32-bit
    /// `usize` cannot hold, so counted in `u64`).
    fn bitmap_ids(&self) -> u64 {
        self.leaves.len() as u64 * BITS as u64
    }

    /// The number of allocated IDs.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The number of free IDs.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.capacity() - self.used
    }

    /// Whether `id` is currently allocated (`false` outside the managed range).
    #[must_use]
    pub fn is_allocated(&self, id: I) -> bool {
        self.offset(id).is_ok_and(|off| self.allocated(off))
    }

    /// Allocates the smallest free ID.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfIds`] (count 1, alignment 1) if every ID is allocated,
    /// [`Error::HeapRefused`] if the bitmap must grow to cover the ID (or the index of
    /// never-allocated runs must grow) and the heap refuses it; nothing changes then.
    pub fn allocate_id(&mut self) -> Result<I> {
        let found = self.smallest_clear();
        if let Some(p) = self.parked
            && found.is_none_or(|f| p < f)
        {
            // The parked ID is the smallest free one and its bit is still set.
            self.parked = None;
            self.used += 1;
            return Ok(self.id(p));
        }
        let off = found.ok_or(Error::OutOfIds {
            count: 1,
            alignment: 1,
        })?;
        self.set_allocated(off)?;
        Ok(self.id(off))
    }

    /// Allocates the given ID.
    ///
    /// # Errors
    ///
    /// [`Error::IdOutOfRange`] if `id` is outside the managed range,
    /// [`Error::IdAlreadyAllocated`] if it is allocated, [`Error::HeapRefused`] if the bitmap
    /// must grow to cover it (or, above the bitmap, the runs held there need a node) and the
    /// heap refuses that, or refuses the index of never-allocated runs room for the run the ID
    /// splits in two; nothing changes then.
    pub fn allocate_id_at(&mut self, id: I) -> Result<I> {
        let off = self.offset(id)?;
        if self.parked == Some(off) {
            self.parked = None;
            self.used += 1;
            return Ok(id);
        }
        if self.bit(off) {
            return Err(Error::IdAlreadyAllocated(id.to_u64()));
        }
        self.set_allocated(off)?;
        Ok(id)
    }

    /// Allocates `count` contiguous IDs, the first of which is a multiple of `alignment` (a
    /// power of two, up to 2^63 whatever the ID width), at the lowest place they fit. Either all
    /// are allocated or none.
    ///
    /// Cost: the search reads each bitmap word once (O(log count) bit operations per word,
    /// fully allocated stretches skipped through the summary): O(range / 64) in the worst case,
    /// whether it succeeds or fails; past the bitmap, the gaps between the runs of IDs held
    /// there are searched through their index, which skips every subtree whose gaps are all
    /// shorter than `count`: O(log h) for h held runs when no gap is long enough, plus O(log h)
    /// for each gap long enough but without an aligned place (a gap of `count + alignment - 1`
    /// IDs or more always has one, so a failed search pays this only for gaps of `count` to
    /// `count + alignment - 2` IDs, none when `alignment` is 1). The index knows gap lengths
    /// exactly below 2^24 IDs and rounded up by less than one part in 2^23 above, so a `count`
    /// above 2^24 also pays O(log h) for each gap shorter than `count` by less than
    /// `count / 2^23`: fewer than 2^32 / (`count` - `count` / 2^23), at most 256, fit in a
    /// range. Then O(count / 64) to mark the run, a word at a time, and one update of the
    /// never-allocated runs per run it overlaps.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroIdCount`] if `count` is 0, [`Error::InvalidAlignment`] if `alignment` is
    /// not a power of two, [`Error::OutOfIds`] if no such run of free IDs exists,
    /// [`Error::HeapRefused`] if the bitmap must grow to cover the run (or the index of
    /// never-allocated runs must grow) and the heap refuses it; nothing changes then.
    ///
    /// ```
    /// use memvisor_resources::IdAllocator;
    ///
    /// let mut vectors = IdAllocator::new(0, 63)?;
    /// vectors.allocate_id()?;
    /// assert_eq!(vectors.allocate_ids(8, 8)?, 8..=15);
    /// assert_eq!(vectors.allocate_ids(3, 1)?, 1..=3);
    ///
    /// // Any power of two up to 2^63 may be asked for.
    /// let mut wide = IdAllocator::<u64>::with_range((1 << 40) - 8, (1 << 40) + 8)?;
    /// assert_eq!(wide.allocate_ids(2, 1 << 40)?, 1 << 40..=(1 << 40) + 1);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn allocate_ids(&mut self, count: u32, alignment: u64) -> Result<IdRange<I>> {
        if count == 0 {
            return Err(Error::ZeroIdCount);
        }
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment(alignment));
        }
        let out = Error::OutOfIds { count, alignment };
        let span = count - 1;
        self.unpark();
        let start = self.find_run(count, alignment).ok_or(out)?;
        self.set_allocated_range(start, start + span)?;
        Ok(self.id(start)..=self.id(start + span))
    }

    /// Allocates the `count` smallest free IDs, contiguous or not. Either all are allocated or
    /// none. The IDs are returned in increasing order.
    ///
    /// Cost: O(count + words skipped), plus a map update per ID that had never been allocated
    /// (O(log runs)); when it takes IDs past the bitmap, plus O(1) per run of IDs held there
    /// below the highest ID taken (the bitmap grows over them) and the words the bitmap grows
    /// by. The runs held above the highest ID taken are not looked at.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroIdCount`] if `count` is 0, [`Error::NotEnoughIds`] if fewer than `count`
    /// IDs are free, [`Error::HeapRefused`] if the heap refuses the list of `count` IDs (or it
    /// is past `isize::MAX` bytes, as `u32::MAX` IDs of `u64` are on a 32-bit target) or the
    /// bitmap growing to the highest of them (grown, and the index of never-allocated runs
    /// given its room, before any ID is taken).
    ///
    /// ```
    /// use memvisor_resources::IdAllocator;
    ///
    /// let mut slots = IdAllocator::new(0, 4)?;
    /// slots.allocate_ids(5, 1)?;
    /// slots.free_id(1)?;
    /// slots.free_id(3)?;
    /// // No run of two is free, but two IDs are.
    /// assert!(slots.allocate_ids(2, 1).is_err());
    /// assert_eq!(slots.allocate_many(2)?, [1, 3]);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn allocate_many(&mut self, count: u32) -> Result<Vec<I>> {
        if count == 0 {
            return Err(Error::ZeroIdCount);
        }
        if self.available() < u64::from(count) {
            return Err(Error::NotEnoughIds {
                requested: count,
                available: self.available(),
            });
        }
        // The list is the caller's to ask for (up to 2^32 IDs, 32 GiB of `u64`): a heap that
        // refuses it is an error, before anything is allocated.
        let mut out = Vec::new();
        out.try_reserve_exact(count as usize)
            .map_err(|_| Error::HeapRefused {
                bytes: u64::from(count) * core::mem::size_of::<I>() as u64,
            })?;
        self.unpark();
        // The bitmap grows first, to the highest ID the loop takes, so that a heap that refuses
        // it fails the call before any ID is taken. IDs past the bitmap are free but for the
        // runs held there, and the loop takes the free ones inside it before any past it.
        let covered = self.bitmap_ids().min(self.capacity());
        // The count against the runs themselves, in the builds that test the crate.
        #[cfg(feature = "model")]
        debug_assert_eq!(
            self.held_ids,
            self.far.iter().map(|(lo, hi)| hi - lo + 1).sum::<u64>()
        );
        let past = self.capacity() - covered - self.held_ids;
        let inside = self.available() - past;
        if let Some(mut skip) = u64::from(count).checked_sub(inside + 1) {
            // The highest ID taken is the free one past the bitmap with `skip` free ones below
            // it. Every ID up to it is allocated once the loop is done, so a bitmap covering
            // them all stays in proportion to the IDs allocated.
            let mut pos = covered;
            for (lo, hi) in self.far.iter() {
                #[cfg(test)]
                tests::count_visited_run();
                if skip < lo - pos {
                    break;
                }
                skip -= lo - pos;
                pos = hi + 1;
            }
            // `count <= available`, so this is at most `span`.
            self.ensure(to_off32(pos + skip))?;
        }
        for _ in 0..count {
            // Enough IDs are free (checked above), so the search always finds one, and the
            // bitmap already covers it.
            let off = self
                .smallest_clear()
                .ok_or(Error::Inconsistent("free count is wrong"))?;
            self.set_allocated(off)?;
            out.push(self.id(off));
        }
        Ok(out)
    }

    /// Allocates the `count` IDs starting at `first`. Either all are allocated or none.
    ///
    /// Cost: O(count / 64) to check and to mark, plus one update of the never-allocated runs per
    /// run the IDs overlap.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroIdCount`] if `count` is 0, [`Error::IdOutOfRange`] if `first` or the last
    /// ID of the run is outside the managed range, [`Error::Overflow`] (`start` = `first`,
    /// `size` = `count`) if `first` is in range but the run's last ID would be past `u64::MAX`,
    /// [`Error::IdAlreadyAllocated`] naming the lowest allocated ID of the run,
    /// [`Error::HeapRefused`] if the bitmap must grow to cover the run (or the index of
    /// never-allocated runs must grow) and the heap refuses it; nothing changes then.
    ///
    /// ```
    /// use memvisor_resources::{Error, IdAllocator};
    ///
    /// let mut msi = IdAllocator::new(32, 255)?;
    /// assert_eq!(msi.allocate_ids_at(40, 8)?, 40..=47);
    /// assert_eq!(msi.allocate_ids_at(36, 8), Err(Error::IdAlreadyAllocated(40)));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn allocate_ids_at(&mut self, first: I, count: u32) -> Result<IdRange<I>> {
        if count == 0 {
            return Err(Error::ZeroIdCount);
        }
        let lo = self.offset(first)?;
        // A run whose last ID is past `u64::MAX` has no last ID to name: it is refused as the
        // overflow it is, as `AddressRange::from_start_and_size` refuses such a range.
        let end = first
            .to_u64()
            .checked_add(u64::from(count - 1))
            .ok_or(Error::Overflow {
                start: first.to_u64(),
                size: u64::from(count),
            })?;
        let Some(last) = I::from_u64(end).filter(|&l| l <= self.last) else {
            return Err(Error::IdOutOfRange {
                id: end,
                first: self.base(),
                last: self.last.to_u64(),
            });
        };
        let hi = self.offset(last)?;
        self.unpark();
        if let Some(taken) = self.next_allocated_from(lo, hi).filter(|&t| t <= hi) {
            return Err(Error::IdAlreadyAllocated(self.id(taken).to_u64()));
        }
        self.set_allocated_range(lo, hi)?;
        Ok(first..=last)
    }

    /// Frees an allocated ID.
    ///
    /// # Errors
    ///
    /// [`Error::IdOutOfRange`] if `id` is outside the managed range,
    /// [`Error::IdNeverAllocated`] if it was never handed out, [`Error::IdAlreadyFree`] if it
    /// was handed out and freed since, [`Error::HeapRefused`] if the ID is held above the bitmap
    /// strictly inside a run of allocated IDs, which freeing it splits in two, and the heap
    /// refuses the node for the second part (28 bytes); nothing changes then.
    pub fn free_id(&mut self, id: I) -> Result<()> {
        let off = self.offset(id)?;
        if !self.in_bitmap(off) {
            return self.free_held(off);
        }
        self.check_allocated(off)?;
        // Park it; the ID parked before goes back into the bitmap.
        if let Some(old) = self.parked.replace(off) {
            self.clear_bit(old);
        }
        self.used -= 1;
        Ok(())
    }

    /// [`free_id`](Self::free_id) of the offset `off` past the bitmap, where only the runs held
    /// there are allocated: freeing an ID inside a run splits it. One descent finds the run and
    /// keeps its path, which the change then takes back up. Kept out of line, away from the
    /// bitmap's path.
    ///
    /// # Errors
    ///
    /// Those of [`free_id`](Self::free_id) for an ID no run holds; [`Error::HeapRefused`] if
    /// the split needs a node and the heap refuses it. Nothing changes on error.
    #[cold]
    #[inline(never)]
    fn free_held(&mut self, off: u32) -> Result<()> {
        let v = u64::from(off);
        let found = self.far.find(v);
        let Some((lo, hi)) = found.run() else {
            // Past the bitmap an ID is allocated iff a run holds it (a parked ID lies inside the
            // bitmap).
            return Err(if self.is_never(off) {
                Error::IdNeverAllocated(self.id(off).to_u64())
            } else {
                Error::IdAlreadyFree(self.id(off).to_u64())
            });
        };
        if lo < v && v < hi {
            self.far.reserve_insert()?;
        }
        self.far.cut_found(&found, v);
        self.held_ids -= 1;
        self.used -= 1;
        Ok(())
    }

    /// Frees every ID in `ids`, all or nothing. O(len / 64) to check and to clear, a word at a
    /// time.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroIdCount`] if `ids` is empty; otherwise the error [`free_id`](Self::free_id)
    /// would give for the lowest ID of `ids` that is not allocated; [`Error::HeapRefused`] if
    /// every ID is allocated but those above the bitmap lie strictly inside a run held there,
    /// which freeing them splits in two, and the heap refuses the node for the second part. On
    /// error nothing is freed.
    pub fn free_ids(&mut self, ids: IdRange<I>) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::ZeroIdCount);
        }
        // The lowest ID of `ids` that is not allocated: its start if out of range, else the
        // first free one in range, else the first past the range.
        let lo = self.offset(*ids.start())?;
        let past = *ids.end() > self.last;
        let hi = if past {
            self.span()
        } else {
            self.offset(*ids.end())?
        };
        if let Some(gap) = self.next_free_from(lo, hi).filter(|&g| g <= hi) {
            self.check_allocated(gap)?;
        }
        if past {
            return Err(Error::IdOutOfRange {
                id: self.last.to_u64() + 1,
                first: self.base(),
                last: self.last.to_u64(),
            });
        }
        // Every ID of `lo..=hi` is allocated, so the part past the bitmap lies in one run,
        // which it splits in two unless it reaches an end of it.
        let covered = self.bitmap_ids();
        let far_lo = u64::from(lo).max(covered);
        if u64::from(hi) >= covered
            && self
                .far
                .run_from(far_lo)
                .is_some_and(|(rlo, rhi)| rlo < far_lo && u64::from(hi) < rhi)
        {
            self.far.reserve_insert()?;
        }
        self.unpark();
        if u64::from(lo) < covered {
            self.clear_bit_range(lo, hi.min(to_off32(covered - 1)));
        }
        if u64::from(hi) >= covered {
            self.far.cut(far_lo, u64::from(hi));
            self.held_ids -= u64::from(hi) - far_lo + 1;
        }
        self.used -= u64::from(hi - lo) + 1;
        Ok(())
    }

    /// The allocated IDs in increasing order.
    #[must_use]
    pub fn iter(&self) -> AllocatedIds<'_, I> {
        AllocatedIds {
            alloc: self,
            word: 0,
            bits: self.allocated_word(0).unwrap_or(0),
            span: self.span() as usize,
            last: self.last,
            past: false,
            run: None,
        }
    }

    /// Runs of allocated IDs, in increasing order.
    pub fn allocated_runs(&self) -> impl Iterator<Item = IdRange<I>> + '_ {
        let mut pos = 0u32;
        let mut done = false;
        core::iter::from_fn(move || {
            if done {
                return None;
            }
            let lo = self
                .next_allocated_from(pos, self.span())
                .filter(|&o| o <= self.span())?;
            let hi = match self.next_free_from(lo, self.span()) {
                Some(f) => f - 1,
                None => self.span(),
            };
            match hi.checked_add(1) {
                Some(next) if next <= self.span() => pos = next,
                _ => done = true,
            }
            Some(self.id(lo)..=self.id(hi))
        })
    }

    /// Runs of IDs that were never allocated, in increasing order.
    pub fn never_allocated_runs(&self) -> impl Iterator<Item = IdRange<I>> + '_ {
        self.never
            .iter()
            .map(|(lo, hi)| self.id(to_off32(lo))..=self.id(to_off32(hi)))
    }

    /// Heap bytes held by the allocator, for capacity planning: the bitmap, the
    /// never-allocated runs and the runs of IDs held above the bitmap (28 bytes each),
    /// capacity included.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        (self.leaves.capacity() + self.summary.capacity() + self.top.capacity()) * 8
            + self.never.heap_bytes()
            + self.far.heap_bytes()
    }

    #[cfg(feature = "serde")]
    /// Rebuilds an allocator from runs of allocated and never-allocated IDs, checking that
    /// they are consistent.
    pub(crate) fn from_runs(
        first: I,
        last: I,
        allocated: &[(I, I)],
        never: &[(I, I)],
        used: u64,
        max_bitmap_bytes: u64,
    ) -> Result<Self> {
        let mut this = Self::with_range(first, last).map_err(|e| match e {
            Error::InvalidIdRange { .. } => Error::Inconsistent("first > last"),
            _ => e,
        })?;
        check_runs(first, last, allocated)?;
        check_runs(first, last, never)?;
        // Leaves up to the highest allocated ID the bitmap will cover (the runs are marked in
        // order, each in the bitmap if it stays in proportion to the IDs allocated by then, as
        // calls would), one summary word per 64 leaf words, one top word per 64 summary words.
        let mut words = [0u64; 3];
        let mut dense = None;
        let mut counted = 0u64;
        for &(lo, hi) in allocated {
            counted += hi.to_u64() - lo.to_u64() + 1;
            let hi = to_off32(hi.to_u64() - first.to_u64());
            if dense_ok(hi, counted) {
                dense = Some(hi);
            }
        }
        if let Some(hi) = dense {
            let leaves = u64::from(hi) / BITS as u64 + 1;
            let summary = leaves.div_ceil(BITS as u64);
            words = [leaves, summary, summary.div_ceil(BITS as u64)];
            let needed = 8 * words.iter().sum::<u64>();
            if needed > max_bitmap_bytes {
                return Err(Error::SnapshotTooLarge {
                    needed,
                    limit: max_bitmap_bytes,
                });
            }
        }
        let total: u64 = allocated
            .iter()
            .map(|&(lo, hi)| hi.to_u64() - lo.to_u64() + 1)
            .sum();
        if total != used {
            return Err(Error::Inconsistent(
                "used count does not match the allocated runs",
            ));
        }
        // Both lists are sorted: a merge walk finds any overlap.
        let (mut a, mut n) = (allocated.iter().peekable(), never.iter().peekable());
        while let (Some(&&(alo, ahi)), Some(&&(nlo, nhi))) = (a.peek(), n.peek()) {
            if alo <= nhi && nlo <= ahi {
                return Err(Error::Inconsistent(
                    "an ID is both allocated and never allocated",
                ));
            }
            if ahi < nhi {
                a.next();
            } else {
                n.next();
            }
        }
        // The bitmap gets exactly the words counted against the limit, so growing it run by
        // run below reserves nothing more.
        for (vec, n) in [&mut this.leaves, &mut this.summary, &mut this.top]
            .into_iter()
            .zip(words)
        {
            // A range `with_range` accepts has at most 2^26 leaf words, so `n` fits a `usize`
            // (were it not to, the bitmap would just grow as it is filled).
            reserve_words(vec, usize::try_from(n).unwrap_or(0))?;
        }
        // Every run lies inside `first..=last` (checked above), so its offsets fit.
        let base = this.base();
        this.never = RunSet::from_sorted(
            never
                .iter()
                .map(|&(lo, hi)| (lo.to_u64() - base, hi.to_u64() - base)),
        )?;
        // A word of bits at a time: loading costs O(runs + bitmap words), however many IDs a
        // short run names.
        for &(lo, hi) in allocated {
            let (lo, hi) = (this.offset(lo)?, this.offset(hi)?);
            this.place(lo, hi)?;
            this.used += u64::from(hi - lo) + 1;
        }
        Ok(this)
    }

    /// `last - first`, which fits in a `u32` ([`MAX_ID_RANGE`]).
    fn span(&self) -> u32 {
        to_off32(self.last.to_u64() - self.base())
    }

    fn base(&self) -> u64 {
        self.first.to_u64()
    }

    /// The ID at offset `off`; `off` is at most `span()`, so the ID is in range.
    fn id(&self, off: u32) -> I {
        I::from_u64(self.base() + u64::from(off)).unwrap_or(self.last)
    }

    fn offset(&self, id: I) -> Result<u32> {
        if id < self.first || id > self.last {
            return Err(Error::IdOutOfRange {
                id: id.to_u64(),
                first: self.base(),
                last: self.last.to_u64(),
            });
        }
        Ok(to_off32(id.to_u64() - self.base()))
    }

    /// Whether ID offset `off` is allocated: its bit is set and it is not the parked ID.
    fn allocated(&self, off: u32) -> bool {
        self.bit(off) && self.parked != Some(off)
    }

    /// Leaf word `w` with the parked ID's bit cleared: bit `i` set iff ID offset `64 w + i` is
    /// allocated (or is padding past `last`). `None` past the bitmap.
    fn allocated_word(&self, w: usize) -> Option<u64> {
        let word = *self.leaves.get(w)?;
        Some(match self.parked {
            Some(p) if p as usize / BITS == w => word & !(1 << (p as usize % BITS)),
            _ => word,
        })
    }

    /// Puts the parked ID, if any, back into the bitmap as free, so that the bitmap alone is
    /// exact. The allocated set does not change.
    fn unpark(&mut self) {
        if let Some(p) = self.parked.take() {
            self.clear_bit(p);
        }
    }

    /// Whether the bit of ID offset `off` is set (the parked ID's bit is set too), or, past
    /// the bitmap, whether a run held there holds it.
    fn bit(&self, off: u32) -> bool {
        let i = off as usize;
        match self.leaves.get(i / BITS) {
            Some(w) => w & (1 << (i % BITS)) != 0,
            None => self.held(off),
        }
    }

    /// Whether a run held past the bitmap holds offset `off`. Kept out of line, away from the
    /// bitmap's path.
    #[cold]
    #[inline(never)]
    fn held(&self, off: u32) -> bool {
        self.far.contains(u64::from(off))
    }

    /// `pos` if no run held past the bitmap holds it, else the offset after that run. Kept out
    /// of line, away from the bitmap's path.
    #[cold]
    #[inline(never)]
    fn past_held(&self, pos: u64) -> u64 {
        match self.far.run_from(pos) {
            Some((lo, hi)) if lo <= pos => hi + 1,
            _ => pos,
        }
    }

    /// The run held past the bitmap that holds `pos`, or else the first after it. The lookup is
    /// kept out of line, away from the bitmap's path.
    fn held_from(&self, pos: u64) -> Option<(u64, u64)> {
        #[cold]
        #[inline(never)]
        fn lookup(far: &HeldRuns, pos: u64) -> Option<(u64, u64)> {
            far.run_from(pos)
        }
        if self.far.is_empty() {
            None
        } else {
            lookup(&self.far, pos)
        }
    }

    /// For [`AllocatedIds`], once past the bitmap (`past` false the first time): the next ID
    /// of the runs held there and the run left to list after it, `run` being the one left
    /// before. Kept out of line, away from the bitmap's loop.
    #[cold]
    #[inline(never)]
    fn next_held(&self, past: bool, run: Option<(u64, u64)>) -> (Option<(u64, u64)>, Option<I>) {
        let run = if past {
            run
        } else {
            self.held_from(self.bitmap_ids())
        };
        let Some((next, hi)) = run else {
            return (None, None);
        };
        let rest = if next < hi {
            Some((next + 1, hi))
        } else {
            self.held_from(hi + 1)
        };
        (rest, Some(self.id(to_off32(next))))
    }

    /// Whether ID offset `off` lies inside the bitmap.
    fn in_bitmap(&self, off: u32) -> bool {
        (off as usize / BITS) < self.leaves.len()
    }

    fn check_allocated(&self, off: u32) -> Result<()> {
        if self.allocated(off) {
            Ok(())
        } else if self.is_never(off) {
            Err(Error::IdNeverAllocated(self.id(off).to_u64()))
        } else {
            Err(Error::IdAlreadyFree(self.id(off).to_u64()))
        }
    }

    fn is_never(&self, off: u32) -> bool {
        self.never.contains(u64::from(off))
    }

    /// Offset of the smallest ID whose bit is clear, if any (the parked ID is not seen).
    fn smallest_clear(&mut self) -> Option<u32> {
        while self.hint < self.top.len() && self.top[self.hint] == 0 {
            self.hint += 1;
        }
        if let Some(&t) = self.top.get(self.hint) {
            let s = self.hint * BITS + t.trailing_zeros() as usize;
            let w = s * BITS + self.summary[s].trailing_zeros() as usize;
            let b = (!self.leaves[w]).trailing_zeros() as usize;
            return Some(to_off(w * BITS + b));
        }
        // Every tracked ID is allocated: the next one is the first past the bitmap, or past the
        // run held there that starts right at its end (runs do not touch, so the ID after it
        // is free).
        let mut next = self.bitmap_ids();
        if !self.far.is_empty() {
            next = self.past_held(next);
        }
        (next <= u64::from(self.span())).then(|| to_off32(next))
    }

    /// The lowest offset `o` such that `first + o` is a multiple of `alignment` and the `count`
    /// IDs from `o` are free and in range. One pass over the bitmap words: a free run that
    /// crosses words is tracked by its start; runs inside one word are found by shifting and
    /// masking (bit `p` of `r` stays set while bits `p..p + len` are all free).
    fn find_run(&self, count: u32, align: u64) -> Option<u32> {
        let (count, first) = (u64::from(count), self.base());
        let span_end = u64::from(self.span());
        // Offsets are below 2^32 + 64. `first + start`, or its rounding up to the alignment,
        // can pass `u64::MAX` only near the top of `u64` IDs; then no aligned start at or past
        // it exists, and the checked arithmetic reports no fit.
        let fits = |start: u64, end: u64| -> Option<u64> {
            let a = first.checked_add(start)?.checked_next_multiple_of(align)? - first;
            (a + count - 1 <= end).then_some(a)
        };
        let words = self.leaves.len();
        let mut run: Option<u64> = None;
        let mut w = 0usize;
        while w < words {
            let base = w as u64 * BITS as u64;
            let free = !self.leaves[w];
            if free == 0 {
                run = None;
                // Skip fully allocated words through the summary.
                let next = self.next_free_from(to_off32(base + BITS as u64), self.span());
                w = next.map_or(words, |o| o as usize / BITS).max(w + 1);
                continue;
            }
            if free == u64::MAX {
                let s = *run.get_or_insert(base);
                if let Some(a) = fits(s, base + 63) {
                    return u32::try_from(a).ok();
                }
                w += 1;
                continue;
            }
            let lead = u64::from(free.trailing_ones());
            if lead > 0
                && let Some(a) = fits(run.unwrap_or(base), base + lead - 1)
            {
                return u32::try_from(a).ok();
            }
            if count <= BITS as u64 {
                let (mut r, mut len) = (free, 1u64);
                while len < count {
                    let step = len.min(count - len);
                    r &= r >> step;
                    len += step;
                }
                let hits = r & align_mask(first.wrapping_add(base), align);
                if hits != 0 {
                    return u32::try_from(base + u64::from(hits.trailing_zeros())).ok();
                }
            }
            let trail = u64::from(free.leading_ones());
            run = (trail > 0).then(|| base + 64 - trail);
            w += 1;
        }
        // Past the bitmap every ID in range is free but those of the runs held there: the
        // search goes on through the gaps between them.
        let past = words as u64 * BITS as u64;
        let start = if past <= span_end {
            run.unwrap_or(past)
        } else {
            run?
        };
        let found = if self.far.is_empty() {
            fits(start, span_end)
        } else {
            self.find_held_gap(start, count, &fits)
        };
        found.and_then(|a| u32::try_from(a).ok())
    }

    /// The first gap between the runs held past the bitmap, from `start` on (up to the end of
    /// the range), that `fits` takes. The index skips every subtree whose gaps are all shorter
    /// than `count`: O(log h) when none is long enough, plus a path per gap long enough that
    /// `fits` refuses (only gaps shorter than `count + alignment - 1`) and, for a `count` above
    /// 2^24, per gap whose rounded bound reaches `count` (at most 256, see
    /// [`allocate_ids`](Self::allocate_ids)). Kept out of line, away from the bitmap's path.
    #[cold]
    #[inline(never)]
    fn find_held_gap(
        &self,
        start: u64,
        count: u64,
        fits: &impl Fn(u64, u64) -> Option<u64>,
    ) -> Option<u64> {
        self.far
            .first_fit(start, u64::from(self.span()), count, |lo, hi| {
                (hi - lo >= count - 1).then(|| fits(lo, hi)).flatten()
            })
    }

    /// Offset of the first free ID at or after `from`, if any (the parked ID included). The
    /// search stops past `until` (a result past it may still be given): its cost is bounded
    /// by `until - from`, not by where the next free ID lies.
    fn next_free_from(&self, from: u32, until: u32) -> Option<u32> {
        let clear = self.next_clear_from(from, until);
        match self.parked {
            Some(p) if p >= from && clear.is_none_or(|c| p < c) => Some(p),
            _ => clear,
        }
    }

    /// Offset of the first ID at or after `from` whose bit is clear, if any; the search stops
    /// past `until`, as for [`next_free_from`](Self::next_free_from).
    fn next_clear_from(&self, from_off: u32, until: u32) -> Option<u32> {
        let from = from_off as usize;
        let mut w = from / BITS;
        if let Some(&word) = self.leaves.get(w) {
            let free = !word & (u64::MAX << (from % BITS));
            if free != 0 {
                return Some(to_off(w * BITS + free.trailing_zeros() as usize));
            }
            w += 1;
            // Skip full words 64 at a time through the summary.
            let mut s = w / BITS;
            let mut mask = u64::MAX.checked_shl(to_off(w % BITS)).unwrap_or(0);
            while let Some(&sw) = self.summary.get(s) {
                #[cfg(test)]
                tests::count_scanned_word();
                if s > until as usize / (BITS * BITS) {
                    // Summary word `s` and those after cover IDs past `until` only, and the
                    // bitmap goes on past them.
                    return None;
                }
                let has = sw & mask;
                if has != 0 {
                    let w = s * BITS + has.trailing_zeros() as usize;
                    let b = (!self.leaves[w]).trailing_zeros() as usize;
                    return Some(to_off(w * BITS + b));
                }
                s += 1;
                mask = u64::MAX;
            }
            w = self.leaves.len();
        }
        let mut pos = u64::from(from_off).max(w as u64 * BITS as u64);
        // Past the bitmap, a run held there is allocated; the ID after it is free (runs do not
        // touch).
        if !self.far.is_empty() {
            pos = self.past_held(pos);
        }
        (pos <= u64::from(self.span())).then(|| to_off32(pos))
    }

    /// Offset of the first allocated ID at or after `from`, if any (may lie past `last` in
    /// the final word, where padding bits are set). The search stops past `until` (a result
    /// past it may still be given), so its cost is bounded by `until - from`.
    fn next_allocated_from(&self, from: u32, until: u32) -> Option<u32> {
        let from = from as usize;
        let mut w = from / BITS;
        let mut mask = u64::MAX << (from % BITS);
        while w <= until as usize / BITS
            && let Some(word) = self.allocated_word(w)
        {
            #[cfg(test)]
            tests::count_scanned_word();
            let set = word & mask;
            if set != 0 {
                return Some(to_off(w * BITS + set.trailing_zeros() as usize));
            }
            w += 1;
            mask = u64::MAX;
        }
        if w < self.leaves.len() {
            // Stopped past `until`, inside the bitmap.
            return None;
        }
        // Past the bitmap, the first run held there at or after `from`.
        let pos = (from as u64).max(self.bitmap_ids());
        self.far.run_from(pos).map(|(lo, _)| to_off32(lo.max(pos)))
    }

    /// Grows the bitmap so that it covers `off`, and makes room for the never-allocated run
    /// that marking IDs allocated may split in two.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses the memory; the bitmap and the runs are
    /// unchanged then (only their spare capacity may have grown).
    fn ensure(&mut self, off: u32) -> Result<()> {
        self.never.reserve_one()?;
        self.grow(off)
    }

    /// Grows the bitmap so that it covers `off`; the runs held past its old end that it now
    /// covers (in part or whole) move into it.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses the memory; nothing changes then (only the
    /// spare capacity may have grown).
    fn grow(&mut self, off: u32) -> Result<()> {
        let need = off as usize / BITS + 1;
        if need <= self.leaves.len() {
            return Ok(());
        }
        // Grow by an eighth at a time so that a dense range stays close to one bit per ID.
        let cap = self.leaves.capacity();
        if need > cap {
            let want = need.max(cap + cap / 8).min(self.span() as usize / BITS + 1);
            reserve_words(&mut self.leaves, want)?;
        }
        // One summary word per 64 leaf words, one top word per 64 summary words; these grow
        // by doubling, as `push` would grow them (an exact reservation here would copy the
        // summary once per 64 leaf words).
        let summary = need.div_ceil(BITS);
        reserve_more(&mut self.summary, summary)?;
        reserve_more(&mut self.top, summary.div_ceil(BITS))?;
        let total = self.capacity();
        while self.leaves.len() < need {
            let w = self.leaves.len();
            // Padding bits past `last` are set. `w` is below `total / 64` rounded up.
            let valid = (total - w as u64 * BITS as u64).min(BITS as u64);
            let word = if valid == BITS as u64 {
                0
            } else {
                u64::MAX << valid
            };
            self.leaves.push(word);
            if w.is_multiple_of(BITS) {
                if self.summary.len().is_multiple_of(BITS) {
                    self.top.push(0);
                }
                self.summary.push(0);
            }
            if word != u64::MAX {
                self.mark_has_free(w);
            }
        }
        // Cutting a run from its start adds no run, so this allocates nothing.
        let covered = self.bitmap_ids();
        while let Some((lo, hi)) = self.held_from(0).filter(|&(lo, _)| lo < covered) {
            let top = hi.min(covered - 1);
            self.set_bit_range(to_off32(lo), to_off32(top));
            self.far.cut(lo, top);
            self.held_ids -= top - lo + 1;
        }
        Ok(())
    }

    fn set_bit(&mut self, off: u32) {
        let off = off as usize;
        self.set_bits(off / BITS, 1 << (off % BITS));
    }

    /// Sets the bits `mask` of leaf word `w`, keeping the levels above true when it fills.
    fn set_bits(&mut self, w: usize, mask: u64) {
        #[cfg(test)]
        tests::count_written_word();
        self.leaves[w] |= mask;
        if self.leaves[w] == u64::MAX {
            let s = w / BITS;
            self.summary[s] &= !(1 << (w % BITS));
            if self.summary[s] == 0 {
                self.top[s / BITS] &= !(1 << (s % BITS));
            }
        }
    }

    /// [`set_allocated`](Self::set_allocated) of every offset of `lo..=hi`, all free: a word
    /// of bits and one update of the never-allocated runs at a time, not an ID at a time.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the bitmap cannot grow to `hi` (or the runs' index cannot
    /// get its room); nothing is marked then.
    fn set_allocated_range(&mut self, lo: u32, hi: u32) -> Result<()> {
        debug_assert!(lo <= hi);
        self.place(lo, hi)?;
        self.used += u64::from(hi - lo) + 1;
        self.mark_ever(lo, hi);
        Ok(())
    }

    /// Marks the free offsets `lo..=hi` allocated (the caller counts them in `used` and takes
    /// them from the never-allocated runs, whose room for a split this reserves): in the
    /// bitmap, grown to cover `hi` if it then stays in proportion to the IDs allocated
    /// ([`dense_ok`]); else the part past the bitmap goes into the runs held there.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses the bitmap's growth or a node for the runs;
    /// nothing is marked then.
    fn place(&mut self, lo: u32, hi: u32) -> Result<()> {
        self.never.reserve_one()?;
        if !self.in_bitmap(hi) {
            if dense_ok(hi, self.used + u64::from(hi - lo) + 1) {
                self.grow(hi)?;
            } else {
                self.far.reserve_insert()?;
                let covered = self.bitmap_ids();
                if u64::from(lo) < covered {
                    self.set_bit_range(lo, to_off32(covered - 1));
                }
                let held_lo = u64::from(lo).max(covered);
                self.far.insert(held_lo, u64::from(hi));
                self.held_ids += u64::from(hi) - held_lo + 1;
                return Ok(());
            }
        }
        self.set_bit_range(lo, hi);
        Ok(())
    }

    /// Sets the bits of `lo..=hi` (inside the bitmap), a word at a time.
    fn set_bit_range(&mut self, lo: u32, hi: u32) {
        for (w, mask) in word_masks(lo, hi) {
            self.set_bits(w, mask);
        }
    }

    /// Marks offset `off` (free) allocated.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the bitmap cannot grow to `off` (or the runs' index cannot
    /// get its room); nothing is marked then.
    fn set_allocated(&mut self, off: u32) -> Result<()> {
        if self.in_bitmap(off) {
            self.never.reserve_one()?;
            self.set_bit(off);
        } else {
            self.place(off, off)?;
        }
        self.used += 1;
        self.mark_ever(off, off);
        Ok(())
    }

    /// Clears the bit of ID offset `off` (the caller updates `used`).
    fn clear_bit(&mut self, off: u32) {
        let off = off as usize;
        self.clear_bits(off / BITS, 1 << (off % BITS));
    }

    /// Clears the bits of `lo..=hi` (inside the bitmap), a word at a time (the caller updates
    /// `used`).
    fn clear_bit_range(&mut self, lo: u32, hi: u32) {
        for (w, mask) in word_masks(lo, hi) {
            self.clear_bits(w, mask);
        }
    }

    /// Clears the bits `mask` of leaf word `w` and records that it has a free bit.
    fn clear_bits(&mut self, w: usize, mask: u64) {
        #[cfg(test)]
        tests::count_written_word();
        self.leaves[w] &= !mask;
        self.mark_has_free(w);
    }

    /// Records that leaf word `w` has a free bit, in the summary and the top level.
    fn mark_has_free(&mut self, w: usize) {
        let s = w / BITS;
        self.summary[s] |= 1 << (w % BITS);
        self.top[s / BITS] |= 1 << (s % BITS);
        self.hint = self.hint.min(s / BITS);
    }

    /// Removes `lo..=hi` from the never-allocated runs: each run it overlaps loses that part.
    /// A run split in two takes the room [`ensure`](Self::ensure) reserved, so this allocates
    /// nothing. (Once every ID has been handed out there are no runs.)
    fn mark_ever(&mut self, lo: u32, hi: u32) {
        self.never.cut(u64::from(lo), u64::from(hi));
    }
}

/// Whether the bitmap may cover offset `hi` once `used` IDs are allocated: it then covers at
/// most [`DENSE_FLOOR`] IDs or [`DENSE_BITS_PER_ID`] bits per allocated ID.
fn dense_ok(hi: u32, used: u64) -> bool {
    u64::from(hi) < DENSE_FLOOR.max(used.saturating_mul(DENSE_BITS_PER_ID))
}

/// The leaf words of the bit offsets `lo..=hi`, each with the mask of its bits in the range.
fn word_masks(lo: u32, hi: u32) -> impl Iterator<Item = (usize, u64)> {
    let (lo_bit, hi_bit) = (lo as usize, hi as usize);
    let (first, last) = (lo_bit / BITS, hi_bit / BITS);
    (first..=last).map(move |w| {
        let from = if w == first { lo_bit % BITS } else { 0 };
        let to = if w == last { hi_bit % BITS } else { BITS - 1 };
        (w, (u64::MAX >> (BITS - 1 - (to - from))) << from)
    })
}

/// Bit `p` set iff `abs_base + p` is a multiple of `align` (a power of two).
fn align_mask(abs_base: u64, align: u64) -> u64 {
    let p0 = (align - abs_base % align) % align;
    if p0 >= 64 {
        return 0;
    }
    if align >= 64 {
        return 1 << p0;
    }
    // One bit every `align` bits: u64::MAX / (2^align - 1) is 0b...0001 repeated.
    (u64::MAX / ((1u64 << align) - 1)) << p0
}

/// `v`, which the caller knows to be at most `u32::MAX`; saturating keeps an impossible value
/// out of range rather than wrapping.
fn to_off32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn to_off(i: usize) -> u32 {
    // Offsets handled here are bounded by `last - first + 63`, and callers filter out those
    // past `last`; saturating keeps an impossible value out of range rather than wrapping.
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Makes room in `words` for exactly `len` words in all (or keeps the room it has).
///
/// # Errors
///
/// [`Error::HeapRefused`] with the bytes asked for if the heap refuses them.
fn reserve_words(words: &mut Vec<u64>, len: usize) -> Result<()> {
    let more = len.saturating_sub(words.len());
    words
        .try_reserve_exact(more)
        .map_err(|_| Error::HeapRefused {
            bytes: more as u64 * 8,
        })
}

/// Makes room in `words` for at least `len` words in all, growing it by at least double when
/// it grows (as `push` does).
///
/// # Errors
///
/// [`Error::HeapRefused`] with the bytes asked for if the heap refuses them.
fn reserve_more(words: &mut Vec<u64>, len: usize) -> Result<()> {
    let more = len.saturating_sub(words.len());
    words.try_reserve(more).map_err(|_| Error::HeapRefused {
        bytes: more as u64 * 8,
    })
}

#[cfg(feature = "serde")]
fn check_runs<I: Id>(first: I, last: I, runs: &[(I, I)]) -> Result<()> {
    let mut prev: Option<I> = None;
    for &(lo, hi) in runs {
        if lo > hi {
            return Err(Error::Inconsistent("a run starts after it ends"));
        }
        if lo < first || hi > last {
            return Err(Error::Inconsistent("a run lies outside the ID range"));
        }
        if let Some(p) = prev {
            // Runs are sorted, disjoint and not adjacent (adjacent runs would be one run).
            if u128::from(lo.to_u64()) <= u128::from(p.to_u64()) + 1 {
                return Err(Error::Inconsistent("runs are not sorted, overlap or touch"));
            }
        }
        prev = Some(hi);
    }
    Ok(())
}

/// Iterator over the allocated IDs of an [`IdAllocator`], in increasing order.
#[derive(Clone, Debug)]
pub struct AllocatedIds<'a, I: Id = u32> {
    alloc: &'a IdAllocator<I>,
    word: usize,
    bits: u64,
    /// `span()` and `last` of the allocator, kept here so that the loop over the bitmap reads
    /// them from registers (the allocator is passed out of line past the bitmap).
    span: usize,
    last: I,
    /// Past the bitmap: the runs held there are listed.
    past: bool,
    /// The next offset of the run held past the bitmap being listed, and the run's last.
    run: Option<(u64, u64)>,
}

impl<I: Id> Iterator for AllocatedIds<'_, I> {
    type Item = I;

    fn next(&mut self) -> Option<I> {
        loop {
            if self.bits != 0 {
                let off = self.word * BITS + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                if off > self.span {
                    return None;
                }
                // `off` is at most `span`, so the ID is in range.
                let first = self.last.to_u64() - self.span as u64;
                return Some(I::from_u64(first + off as u64).unwrap_or(self.last));
            }
            self.word += 1;
            match self.alloc.allocated_word(self.word) {
                Some(bits) => self.bits = bits,
                None => {
                    // The iterator's state is passed by value, so that it can stay in
                    // registers in the loop above.
                    let (run, id) = self.alloc.next_held(self.past, self.run);
                    (self.past, self.run) = (true, run);
                    return id;
                }
            }
        }
    }
}

impl<'a, I: Id> IntoIterator for &'a IdAllocator<I> {
    type Item = I;
    type IntoIter = AllocatedIds<'a, I>;

    fn into_iter(self) -> AllocatedIds<'a, I> {
        self.iter()
    }
}

impl<I: Id> PartialEq for IdAllocator<I> {
    /// Two allocators are equal when they manage the same range and the same IDs are allocated
    /// and never allocated.
    fn eq(&self, other: &Self) -> bool {
        self.first == other.first
            && self.last == other.last
            && self.used == other.used
            && self.never == other.never
            && self.iter().eq(other.iter())
    }
}

impl<I: Id> Eq for IdAllocator<I> {}

impl<I: Id> fmt::Debug for IdAllocator<I> {
    /// The range, the count and the runs of allocated and never-allocated IDs: what the
    /// snapshot holds, so equal allocators print the same, whatever their bitmap's capacity,
    /// search hint or recently freed ID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdAllocator")
            .field("first", &self.first)
            .field("last", &self.last)
            .field("used", &self.used)
            .field("allocated", &List(|| self.allocated_runs()))
            .field("never_allocated", &List(|| self.never_allocated_runs()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "id_held_script.rs"]
mod held_script;

#[cfg(test)]
mod tests {
    use super::*;

    std::thread_local! {
        /// Bitmap and summary words the scans of this thread have looked at.
        static SCANNED: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    pub(super) fn count_scanned_word() {
        SCANNED.with(|c| c.set(c.get() + 1));
    }

    std::thread_local! {
        /// Leaf-word writes, on this thread.
        static WRITTEN: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    pub(super) fn count_written_word() {
        WRITTEN.with(|c| c.set(c.get() + 1));
    }

    std::thread_local! {
        /// Runs held above the bitmap that `allocate_many` looked at, on this thread.
        static VISITED: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    pub(super) fn count_visited_run() {
        VISITED.with(|c| c.set(c.get() + 1));
    }

    /// Nodes of the address arena (the held runs' index among them) read by `f`.
    fn nodes_read_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = crate::address::nodes_read();
        let r = f();
        (r, crate::address::nodes_read() - before)
    }

    /// A range of `runs` IDs 1000 apart, each allocated where it lies: all but the few the
    /// bitmap's 64 Ki-ID floor covers are held above it, with 999 free IDs between each two.
    fn held_every_thousand(runs: u32) -> IdAllocator {
        let mut a = IdAllocator::new(0, (runs - 1) * 1000).unwrap();
        for i in 0..runs {
            a.allocate_id_at(i * 1000).unwrap();
        }
        a
    }

    #[test]
    fn allocate_ids_failing_among_many_held_runs_reads_a_few_paths() {
        let runs = if cfg!(miri) { 600 } else { 20_000 };
        let mut a = held_every_thousand(runs);
        let before = a.clone();
        // No gap holds 1000 IDs.
        let (r, read) = nodes_read_by(|| a.allocate_ids(1000, 1));
        assert_eq!(
            r,
            Err(Error::OutOfIds {
                count: 1000,
                alignment: 1
            })
        );
        assert_eq!(a, before);
        assert_eq!(a.far.check(), Ok(()));
        // A few root-to-leaf paths (each under 1.44 * log2(runs + 2) levels, so under 1.5 times
        // the bit length of `runs + 2`), not one read per run held.
        let bits = u32::BITS - (runs + 2).leading_zeros();
        let levels = usize::try_from(3 * bits / 2 + 1).unwrap();
        assert!(read <= 8 * levels, "{read} nodes read for {runs} runs");
        // A gap made long enough is found, the lowest such one, with as few reads.
        let (low, high) = (runs / 3 * 1000, runs / 3 * 2000);
        a.free_id(high).unwrap();
        a.free_id(low).unwrap();
        let (r, read) = nodes_read_by(|| a.allocate_ids(1000, 1));
        assert_eq!(r, Ok(low - 999..=low));
        assert!(read <= 16 * levels, "{read} nodes read for {runs} runs");
        // 1999 free IDs around `high`: 1000 aligned to 8 take its first multiple of 8.
        let s = (high - 999).next_multiple_of(8);
        assert_eq!(a.allocate_ids(1000, 8), Ok(s..=s + 999));
        assert_eq!(a.far.check(), Ok(()));
    }

    #[test]
    fn a_failed_aligned_allocate_ids_reads_a_path_per_long_enough_gap_with_no_aligned_place() {
        let runs = if cfg!(miri) { 600 } else { 20_000 };
        // One ID at every multiple of 1024 and one halfway between, so that every free
        // stretch holds 511 IDs, except after each multiple listed in `long`: 1023 IDs, enough
        // for 600 but with no multiple of 1024 to start them at.
        let build = |long: &[u32]| {
            let mut a = IdAllocator::new(0, (runs - 1) * 1024).unwrap();
            for j in 0..runs {
                a.allocate_id_at(j * 1024).unwrap();
                if j + 1 < runs && !long.contains(&j) {
                    a.allocate_id_at(j * 1024 + 512).unwrap();
                }
            }
            a
        };
        let mut reads = Vec::new();
        for k in [0u32, 1, 4, 16, 64] {
            // Long stretches spread over the held runs, none under the bitmap.
            let long: Vec<u32> = (0..k).map(|i| runs / 2 + i * (runs / 200)).collect();
            let mut a = build(&long);
            let levels = a.far.height();
            let before = a.clone();
            let (r, read) = nodes_read_by(|| a.allocate_ids(600, 1024));
            assert_eq!(
                r,
                Err(Error::OutOfIds {
                    count: 600,
                    alignment: 1024
                })
            );
            assert_eq!(a, before);
            // Each node the search enters lies on the path to a stretch of 600 IDs or more,
            // and it reads it, the bounds of its two children and, going back up, it again:
            // at most four reads per node of those k + 1 paths (the first, to the stretch
            // below the first run, is clipped to start at the bitmap's end).
            assert!(
                read <= 4 * (k as usize + 1) * levels,
                "{read} nodes read for {k} long stretches, {levels} levels"
            );
            reads.push(read);
            // Joined to the stretch after it, the first long one holds the request.
            if let Some(&j) = long.first() {
                let s = (j + 1) * 1024;
                a.free_id(s).unwrap();
                a.free_id(s + 512).unwrap();
                assert_eq!(a.allocate_ids(600, 1024), Ok(s..=s + 599));
                assert_eq!(a.far.check(), Ok(()));
            }
        }
        // The work grows with the number of long stretches, not with the runs held.
        assert!(reads[0] < 200 && reads[4] > reads[1], "{reads:?}");
    }

    #[test]
    fn a_failed_allocate_ids_past_2_24_reads_a_path_per_gap_its_rounded_bounds_let_in() {
        // One ID every 2^25 + 2, the last at the range's end: 127 gaps of 2^25 + 1 IDs held
        // above the bitmap. Bounds past 2^24 are rounded up (here to a multiple of 4), so a
        // request for 2^25 + 2 IDs, which no gap holds, finds every bound long enough.
        let step = (1u32 << 25) + 2;
        let mut a = IdAllocator::new(0, 127 * step).unwrap();
        for j in 0..=127 {
            a.allocate_id_at(j * step).unwrap();
        }
        let levels = a.far.height();
        let before = a.clone();
        let (r, read) = nodes_read_by(|| a.allocate_ids(step, 1));
        assert_eq!(
            r,
            Err(Error::OutOfIds {
                count: step,
                alignment: 1
            })
        );
        assert_eq!(a, before);
        // Exact bounds would let the search read one path; the rounded ones let in every gap
        // shorter than `count` by less than `count / 2^23`, and a range holds fewer than
        // 2^32 / (count - count / 2^23) of those, here 128: at most four reads per node of
        // those paths.
        assert!(read > 4 * levels, "{read} nodes read, {levels} levels");
        assert!(
            read <= 4 * 128 * levels,
            "{read} nodes read, {levels} levels"
        );
        // One more ID and the gap after the first held run holds the request.
        a.free_id(step).unwrap();
        assert_eq!(a.allocate_ids(step, 1), Ok(1..=step));
        assert_eq!(a.far.check(), Ok(()));
    }

    #[test]
    fn freeing_and_taking_back_the_edge_of_a_held_run_descends_once_to_change_it() {
        let runs = if cfg!(miri) { 600 } else { 20_000 };
        // Runs of three IDs, 1000 apart: all but those under the bitmap's floor held above it.
        let mut a = IdAllocator::new(0, (runs - 1) * 1000 + 2).unwrap();
        for i in 0..runs {
            a.allocate_ids_at(i * 1000, 3).unwrap();
        }
        let levels = a.far.height();
        let mut most = [0usize; 2];
        for i in [runs / 3, runs / 2, runs - 7] {
            let lo = i * 1000;
            for id in [lo, lo + 2] {
                let before = a.clone();
                let (r, freed) = nodes_read_by(|| a.free_id(id));
                assert_eq!(r, Ok(()));
                assert!(!a.is_allocated(id));
                assert_eq!(a.far.check(), Ok(()));
                let (r, taken) = nodes_read_by(|| a.allocate_id_at(id));
                assert_eq!(r, Ok(id));
                assert_eq!(a.far.check(), Ok(()));
                assert_eq!(a, before);
                most = [most[0].max(freed), most[1].max(taken)];
            }
        }
        // Freeing: one descent that checks the ID, finds its run and keeps the path, which
        // brings the bounds on it up to date (a gap that grows reads no sibling). Taking it
        // back: the look-ups in the held and the never-allocated runs, then that descent,
        // reading the other child of each node on the path whose bound shrinks. A second
        // descent to change the node (and both children of each node on its path) made these
        // 118 and 107 at 15 levels; two look-ups before the descent, 68 for the free.
        assert!(
            most[0] <= 2 * levels,
            "{most:?} nodes read, {levels} levels"
        );
        assert!(
            most[1] <= 6 * levels,
            "{most:?} nodes read, {levels} levels"
        );
    }

    #[test]
    fn allocate_many_looks_only_at_the_held_runs_it_steps_over() {
        // Thousands of runs held far above the bitmap; a few IDs taken from the bitmap look at
        // none of them, and IDs taken past it at only those below the highest one taken (which
        // the bitmap then covers).
        let runs = if cfg!(miri) { 200u32 } else { 5000 };
        let mut a = IdAllocator::new(0, u32::MAX).unwrap();
        for k in 0..runs {
            a.allocate_id_at((1 << 30) + 2 * k).unwrap();
        }
        a.allocate_id_at(70_000).unwrap();
        a.allocate_id_at(70_002).unwrap();
        let visited = |a: &mut IdAllocator, n: u32| {
            let before = VISITED.with(core::cell::Cell::get);
            let ids = a.allocate_many(n).unwrap();
            (ids, VISITED.with(core::cell::Cell::get) - before)
        };
        for round in 0..50u32 {
            let (ids, seen) = visited(&mut a, 3);
            assert_eq!(ids, [3 * round, 3 * round + 1, 3 * round + 2]);
            assert!(seen <= 2, "round {round}: {seen} held runs looked at");
        }
        // The rest of the bitmap's floor, then the two runs just above it and one more ID.
        let (ids, _) = visited(&mut a, 65_536 - 150);
        assert_eq!(ids.last(), Some(&65_535));
        let (ids, seen) = visited(&mut a, 70_003 - 65_536 - 2 + 1);
        assert_eq!(ids.first(), Some(&65_536));
        assert_eq!(ids.last(), Some(&70_003));
        assert!(!ids.contains(&70_000) && !ids.contains(&70_002));
        assert!(seen <= 4, "{seen} held runs looked at");
        assert_eq!(a.next_allocated_from(70_004, u32::MAX), Some(1 << 30));
    }

    /// Leaf-word writes while `f` runs.
    fn written_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = WRITTEN.with(core::cell::Cell::get);
        let r = f();
        (r, WRITTEN.with(core::cell::Cell::get) - before)
    }

    #[test]
    fn free_ids_long_run_clears_a_word_at_a_time() {
        // Freeing a run costs its words, not its IDs, as allocating it did (the whole `u32`
        // range would otherwise take seconds).
        let n = if cfg!(miri) { 1u32 << 12 } else { 1u32 << 20 };
        let mut a = IdAllocator::new(0, u32::MAX).unwrap();
        a.allocate_ids(n, 1).unwrap();
        a.free_id(5).unwrap();
        let (freed, writes) = written_by(|| a.free_ids(70..=n - 3));
        assert_eq!(freed, Ok(()));
        assert!(
            writes <= (n as usize).div_ceil(BITS) + 2,
            "{writes} word writes"
        );
        let left: Vec<u32> = a.iter().collect();
        let want: Vec<u32> = (0..5).chain(6..70).chain(n - 2..n).collect();
        assert_eq!(left, want);
        assert_eq!(a.used(), 71);
        // Freed IDs are found again, smallest first, the parked one included.
        assert_eq!(a.allocate_id(), Ok(5));
        assert_eq!(a.allocate_ids(3, 64), Ok(128..=130));
        assert_eq!(a.allocate_id(), Ok(70));
        assert_eq!(a.free_ids(69..=71), Err(Error::IdAlreadyFree(71)));
        // Free now: 71..=127 and n - 69..=n - 3, then everything from n on.
        assert_eq!(a.allocate_ids(n - 200, 1), Ok(131..=n - 70));
        let many = a.allocate_many(61).unwrap();
        assert_eq!(many, (71..=127).chain(n - 69..=n - 66).collect::<Vec<_>>());
        assert_eq!(a.allocate_ids(64, 1), Ok(n..=n + 63));
        assert_eq!(a.allocate_id(), Ok(n - 65));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn from_runs_long_run_sets_a_word_at_a_time() {
        // A snapshot of a few bytes naming one long run: loading writes each leaf word once,
        // not each ID, so its time is bounded by the bitmap the limit allows.
        let n = if cfg!(miri) { 1u32 << 12 } else { 1u32 << 20 };
        let (loaded, writes) = written_by(|| {
            IdAllocator::<u32>::from_runs(0, u32::MAX, &[(0, n - 1)], &[], n.into(), 1 << 20)
        });
        let loaded = loaded.unwrap();
        assert!(
            writes <= (n as usize).div_ceil(BITS) + 2,
            "{writes} word writes"
        );
        let mut built = IdAllocator::new(0, u32::MAX).unwrap();
        built.allocate_ids(n, 1).unwrap();
        built.never = RunSet::new();
        assert_eq!(loaded, built);
        // Runs that start and end inside words, and the IDs around them, stay exact.
        let runs = [(3, 70), (130, 130), (200, 4200)];
        let used = runs.iter().map(|&(lo, hi)| u64::from(hi - lo + 1)).sum();
        let mut a = IdAllocator::<u32>::from_runs(0, 5000, &runs, &[], used, 1 << 20).unwrap();
        let ids: Vec<u32> = a.iter().collect();
        let want: Vec<u32> = runs.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
        assert_eq!(ids, want);
        assert_eq!(a.allocate_ids(60, 1), Ok(131..=190));
        assert_eq!(a.allocate_ids(59, 1), Ok(71..=129));
        assert_eq!(a.allocate_id(), Ok(0));
        assert_eq!(a.allocate_ids(800, 1), Ok(4201..=5000));
    }

    /// Words scanned while `f` runs.
    fn scanned_by(f: impl FnOnce()) -> usize {
        let before = SCANNED.with(core::cell::Cell::get);
        f();
        SCANNED.with(core::cell::Cell::get) - before
    }

    #[test]
    fn run_checks_scan_the_run_not_up_to_the_next_allocated_or_free_id() {
        // (A smaller range under Miri, still far more words than a run's.)
        let top = if cfg!(miri) { 1u32 << 14 } else { 1u32 << 22 };
        // One ID allocated far above: checking a run of 1 or 100 low down looks at a word or
        // three, not the thousands of words up to it.
        let mut a = IdAllocator::new(0u32, top).unwrap();
        a.allocate_id_at(top).unwrap();
        assert!(scanned_by(|| assert_eq!(a.allocate_ids_at(5, 1), Ok(5..=5))) <= 2);
        assert!(scanned_by(|| assert_eq!(a.allocate_ids_at(64, 100), Ok(64..=163))) <= 3);
        // The allocated ID right after a run, in the same word, is still seen.
        assert_eq!(a.allocate_ids_at(2, 4), Err(Error::IdAlreadyAllocated(5)));
        assert_eq!(
            a.allocate_ids_at(top - 3, 4),
            Err(Error::IdAlreadyAllocated(top.into()))
        );
        // Everything allocated: freeing a run low down looks at its words, not at all the
        // summary words up to the end.
        let mut b = IdAllocator::new(0u32, top).unwrap();
        b.allocate_ids(top + 1, 1).unwrap();
        assert!(scanned_by(|| b.free_ids(7..=7).unwrap()) <= 2);
        assert!(scanned_by(|| b.free_ids(5000..=9999).unwrap()) <= 3);
        // A free ID right after a run is not in it.
        assert_eq!(b.free_ids(8..=4999), Ok(()));
        assert_eq!(
            b.free_ids(7..=7),
            Err(Error::IdAlreadyFree(7)),
            "the parked or cleared ID is found"
        );
        assert_eq!(b.free_ids(10_000..=top), Ok(()));
        assert_eq!(b.used(), 7);
        assert_eq!(b.free_ids(0..=7), Err(Error::IdAlreadyFree(7)));
        assert_eq!(b.free_ids(0..=6), Ok(()));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn align_mask_marks_aligned_positions() {
        assert_eq!(align_mask(0, 1), u64::MAX);
        assert_eq!(align_mask(0, 2), 0x5555_5555_5555_5555);
        assert_eq!(align_mask(1, 4), 0x8888_8888_8888_8888);
        assert_eq!(align_mask(0, 64), 1);
        assert_eq!(align_mask(65, 64), 1 << 63);
        assert_eq!(align_mask(1, 128), 0);
    }

    #[test]
    fn allocate_ids_every_other_free_fails_then_finds_tail() {
        let mut a = IdAllocator::new(0, 4095).unwrap();
        a.allocate_ids(2048, 1).unwrap();
        for id in (0..2048).step_by(2) {
            a.free_id(id).unwrap();
        }
        assert_eq!(a.allocate_ids(2, 1), Ok(2048..=2049));
        assert_eq!(a.allocate_ids(64, 64), Ok(2112..=2175));
        assert_eq!(
            a.allocate_ids(4096, 1),
            Err(Error::OutOfIds {
                count: 4096,
                alignment: 1
            })
        );
        assert_eq!(a.allocate_ids(1, 2), Ok(0..=0));
    }

    /// `allocate_ids` against a brute-force search, for runs longer than a word and alignments
    /// up to two words, on random bitmaps with free runs of every length.
    #[test]
    fn allocate_ids_matches_brute_force_across_words() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1du64);
        let rounds = if cfg!(miri) { 3 } else { 60 };
        for _ in 0..rounds {
            let first = u32::try_from(next() % 200).unwrap();
            let last = first + 300 + u32::try_from(next() % 700).unwrap();
            let mut a = IdAllocator::new(first, last).unwrap();
            let density = next() % 100;
            let mut id = first;
            while id <= last {
                if next() % 100 < density {
                    a.allocate_id_at(id).unwrap();
                }
                id += 1 + u32::try_from(next() % 3).unwrap()
                    * u32::from(next().is_multiple_of(4))
                    * 40;
            }
            for count in [1u32, 3, 63, 64, 65, 130] {
                for align in [1u64, 2, 8, 64, 128] {
                    let want = (first..=last)
                        .filter(|&s| u64::from(s) % align == 0)
                        .find(|&s| {
                            u64::from(s) + u64::from(count) - 1 <= u64::from(last)
                                && (s..s + count).all(|i| !a.is_allocated(i))
                        })
                        .map(|s| s..=s + count - 1)
                        .ok_or(Error::OutOfIds {
                            count,
                            alignment: align,
                        });
                    assert_eq!(
                        a.clone().allocate_ids(count, align),
                        want,
                        "{count} {align}"
                    );
                }
            }
        }
    }

    #[test]
    fn allocate_many_fragmented_takes_smallest_free() {
        let mut a = IdAllocator::new(10, 19).unwrap();
        a.allocate_ids(10, 1).unwrap();
        for id in [11, 14, 18] {
            a.free_id(id).unwrap();
        }
        assert_eq!(a.allocate_many(3), Ok(vec![11, 14, 18]));
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn allocate_many_too_many_fails_and_changes_nothing() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_many(8).unwrap();
        let before = a.clone();
        let err = Error::NotEnoughIds {
            requested: 3,
            available: 2,
        };
        assert_eq!(a.allocate_many(3), Err(err));
        assert_eq!(err.to_string(), "not enough IDs: 3 requested, 2 free");
        assert_eq!(a.allocate_many(0), Err(Error::ZeroIdCount));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            before.iter().collect::<Vec<_>>()
        );
        assert_eq!(a.used(), before.used());
    }

    #[test]
    fn allocate_ids_at_free_run_succeeds() {
        let mut a = IdAllocator::new(0, 200).unwrap();
        assert_eq!(a.allocate_ids_at(60, 70), Ok(60..=129));
        assert_eq!(a.used(), 70);
        assert_eq!(a.free_id(59), Err(Error::IdNeverAllocated(59)));
        assert_eq!(a.allocate_id(), Ok(0));
    }

    #[test]
    fn allocate_ids_at_overlap_or_outside_fails_and_changes_nothing() {
        let mut a = IdAllocator::new(5, 100).unwrap();
        a.allocate_id_at(50).unwrap();
        assert_eq!(
            a.allocate_ids_at(45, 10),
            Err(Error::IdAlreadyAllocated(50))
        );
        assert_eq!(
            a.allocate_ids_at(95, 10),
            Err(Error::IdOutOfRange {
                id: 104,
                first: 5,
                last: 100
            })
        );
        assert_eq!(
            a.allocate_ids_at(4, 1),
            Err(Error::IdOutOfRange {
                id: 4,
                first: 5,
                last: 100
            })
        );
        assert_eq!(a.allocate_ids_at(7, 0), Err(Error::ZeroIdCount));
        assert_eq!(a.iter().collect::<Vec<_>>(), [50]);
        assert_eq!(a.free_id(45), Err(Error::IdNeverAllocated(45)));
    }

    #[test]
    fn allocate_ids_at_past_u32_max_fails() {
        let mut a = IdAllocator::new(u32::MAX - 3, u32::MAX).unwrap();
        assert_eq!(
            a.allocate_ids_at(u32::MAX - 1, 5),
            Err(Error::IdOutOfRange {
                id: u64::from(u32::MAX) + 3,
                first: u64::from(u32::MAX) - 3,
                last: u64::from(u32::MAX)
            })
        );
        assert_eq!(
            a.allocate_ids_at(u32::MAX - 1, 2),
            Ok(u32::MAX - 1..=u32::MAX)
        );
    }

    #[test]
    fn with_range_more_than_max_ids_fails() {
        let too_big = IdAllocator::<u64>::with_range(1 << 40, (1 << 40) + MAX_ID_RANGE);
        assert_eq!(
            too_big,
            Err(Error::IdRangeTooLarge {
                first: 1 << 40,
                last: (1 << 40) + MAX_ID_RANGE,
                max: MAX_ID_RANGE
            })
        );
        let widest = IdAllocator::<u64>::with_range(u64::MAX - (MAX_ID_RANGE - 1), u64::MAX);
        assert_eq!(widest.map(|a| a.capacity()), Ok(MAX_ID_RANGE));
    }

    #[test]
    fn u64_ids_above_u32_allocate_free_and_iterate() {
        let base = 1u64 << 40;
        let mut a = IdAllocator::<u64>::with_range(base, base + 4095).unwrap();
        assert_eq!(a.allocate_id(), Ok(base));
        assert_eq!(a.allocate_ids(4, 4), Ok(base + 4..=base + 7));
        assert_eq!(
            a.allocate_ids_at(base + 100, 3),
            Ok(base + 100..=base + 102)
        );
        assert_eq!(a.allocate_many(2), Ok(vec![base + 1, base + 2]));
        assert_eq!(
            a.free_id(base + 50),
            Err(Error::IdNeverAllocated(base + 50))
        );
        a.free_ids(base + 100..=base + 102).unwrap();
        assert_eq!(a.free_id(base + 101), Err(Error::IdAlreadyFree(base + 101)));
        assert!(a.is_allocated(base + 7) && !a.is_allocated(base + 4096));
        assert_eq!(
            a.allocated_runs().collect::<Vec<_>>(),
            [base..=base + 2, base + 4..=base + 7]
        );
    }

    #[test]
    fn u64_run_past_type_end_fails_and_changes_nothing() {
        let mut a = IdAllocator::<u64>::with_range(u64::MAX - 9, u64::MAX).unwrap();
        // The run's last ID would be 2^64 + 2, which no `u64` can name.
        assert_eq!(
            a.allocate_ids_at(u64::MAX - 1, 5),
            Err(Error::Overflow {
                start: u64::MAX - 1,
                size: 5
            })
        );
        assert_eq!(
            a.allocate_ids_at(u64::MAX, 2),
            Err(Error::Overflow {
                start: u64::MAX,
                size: 2
            })
        );
        assert_eq!(
            a.allocate_ids_at(u64::MAX, u32::MAX),
            Err(Error::Overflow {
                start: u64::MAX,
                size: u64::from(u32::MAX)
            })
        );
        assert_eq!(a.used(), 0);
        assert_eq!(a.allocate_ids_at(u64::MAX, 1), Ok(u64::MAX..=u64::MAX));
        assert_eq!(a.free_id(u64::MAX), Ok(()));
        assert_eq!(a.allocate_ids(2, 2), Ok(u64::MAX - 9..=u64::MAX - 8));
        assert_eq!(
            a.allocate_ids_at(u64::MAX - 1, 2),
            Ok(u64::MAX - 1..=u64::MAX)
        );
    }

    #[test]
    fn u16_full_range_fills_to_the_top() {
        let mut a = IdAllocator::<u16>::with_range(0, u16::MAX).unwrap();
        assert_eq!(a.allocate_ids(65_535, 1), Ok(0..=65_534));
        assert_eq!(a.allocate_id(), Ok(u16::MAX));
        assert_eq!(
            a.allocate_id(),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1
            })
        );
        assert_eq!(a.iter().last(), Some(u16::MAX));
    }

    #[test]
    fn new_first_after_last_fails() {
        assert_eq!(
            IdAllocator::new(23, 5),
            Err(Error::InvalidIdRange { first: 23, last: 5 })
        );
    }

    #[test]
    fn allocate_id_fresh_returns_smallest() {
        let mut a = IdAllocator::new(5, 23).unwrap();
        assert_eq!(a.allocate_id(), Ok(5));
        assert_eq!(a.allocate_id(), Ok(6));
    }

    #[test]
    fn allocate_id_after_free_reuses_smallest() {
        let mut a = IdAllocator::new(0, 999).unwrap();
        for _ in 0..300 {
            a.allocate_id().unwrap();
        }
        a.free_id(250).unwrap();
        a.free_id(70).unwrap();
        assert_eq!(a.allocate_id(), Ok(70));
        assert_eq!(a.allocate_id(), Ok(250));
        assert_eq!(a.allocate_id(), Ok(300));
    }

    #[test]
    fn allocate_id_exhausted_fails() {
        let mut a = IdAllocator::new(u32::MAX - 1, u32::MAX).unwrap();
        assert_eq!(a.allocate_id(), Ok(u32::MAX - 1));
        assert_eq!(a.allocate_id(), Ok(u32::MAX));
        assert_eq!(
            a.allocate_id(),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1
            })
        );
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn allocate_id_at_free_id_succeeds() {
        let mut a = IdAllocator::new(0, 100).unwrap();
        assert_eq!(a.allocate_id_at(77), Ok(77));
        assert!(a.is_allocated(77));
        assert_eq!(a.allocate_id(), Ok(0));
    }

    #[test]
    fn allocate_id_at_allocated_fails() {
        let mut a = IdAllocator::new(0, 100).unwrap();
        a.allocate_id_at(7).unwrap();
        assert_eq!(a.allocate_id_at(7), Err(Error::IdAlreadyAllocated(7)));
        assert_eq!(a.used(), 1);
    }

    #[test]
    fn allocate_id_at_out_of_range_fails() {
        let mut a = IdAllocator::new(10, 20).unwrap();
        let err = Error::IdOutOfRange {
            id: 21,
            first: 10,
            last: 20,
        };
        assert_eq!(a.allocate_id_at(21), Err(err));
        assert_eq!(
            err.to_string(),
            "ID 21 is outside the managed range 10..=20"
        );
    }

    #[test]
    fn allocate_ids_aligned_run_skips_taken() {
        let mut a = IdAllocator::new(0, 63).unwrap();
        a.allocate_id_at(9).unwrap();
        assert_eq!(a.allocate_ids(4, 4), Ok(0..=3));
        assert_eq!(a.allocate_ids(4, 4), Ok(4..=7));
        assert_eq!(a.allocate_ids(4, 4), Ok(12..=15));
        assert_eq!(a.allocate_ids(3, 1), Ok(16..=18));
        assert_eq!(a.allocate_ids(1, 1), Ok(8..=8));
    }

    #[test]
    fn allocate_ids_alignment_is_absolute() {
        let mut a = IdAllocator::new(3, 100).unwrap();
        assert_eq!(a.allocate_ids(2, 8), Ok(8..=9));
    }

    #[test]
    fn allocate_ids_across_words_succeeds() {
        let mut a = IdAllocator::new(0, 1000).unwrap();
        a.allocate_id_at(5).unwrap();
        assert_eq!(a.allocate_ids(200, 1), Ok(6..=205));
        assert_eq!(a.used(), 201);
        assert!(a.iter().eq((5..=205).collect::<Vec<_>>()));
    }

    #[test]
    fn allocate_ids_no_room_fails_and_changes_nothing() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_id_at(5).unwrap();
        let before = a.clone();
        assert_eq!(
            a.allocate_ids(6, 1),
            Err(Error::OutOfIds {
                count: 6,
                alignment: 1
            })
        );
        assert_eq!(a, before);
    }

    #[test]
    fn allocate_ids_zero_count_fails() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        assert_eq!(a.allocate_ids(0, 1), Err(Error::ZeroIdCount));
    }

    #[test]
    fn allocate_ids_u64_alignment_past_2_pow_31_is_honoured() {
        let base = 1u64 << 40;
        let mut a = IdAllocator::<u64>::with_range(base - 100, base + 100).unwrap();
        assert_eq!(a.allocate_ids(3, 1 << 40), Ok(base..=base + 2));
        let before = a.clone();
        assert_eq!(
            a.allocate_ids(1, 1 << 40),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1 << 40
            })
        );
        assert_eq!(
            a.allocate_ids(1, 1 << 63),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1 << 63
            })
        );
        assert_eq!(
            a.allocate_ids(1, (1 << 40) + 1),
            Err(Error::InvalidAlignment((1 << 40) + 1))
        );
        assert_eq!(a, before);
        let half = 1u64 << 63;
        let mut b = IdAllocator::<u64>::with_range(half - 5, half + 5).unwrap();
        assert_eq!(b.allocate_ids(2, half), Ok(half..=half + 1));
        let mut top = IdAllocator::<u64>::with_range(u64::MAX - 9, u64::MAX).unwrap();
        assert_eq!(
            top.allocate_ids(1, half),
            Err(Error::OutOfIds {
                count: 1,
                alignment: half
            })
        );
        let mut low = IdAllocator::<u16>::with_range(0, 9).unwrap();
        assert_eq!(low.allocate_ids(2, 1 << 40), Ok(0..=1));
        assert_eq!(
            low.allocate_ids(1, 1 << 40),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1 << 40
            })
        );
    }

    #[test]
    fn allocate_ids_bad_alignment_fails() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        assert_eq!(a.allocate_ids(1, 0), Err(Error::InvalidAlignment(0)));
        assert_eq!(a.allocate_ids(1, 6), Err(Error::InvalidAlignment(6)));
    }

    #[test]
    fn allocate_ids_ending_at_u32_max_succeeds() {
        let mut a = IdAllocator::new(u32::MAX - 15, u32::MAX).unwrap();
        assert_eq!(a.allocate_ids(16, 16), Ok(u32::MAX - 15..=u32::MAX));
        assert_eq!(a.available(), 0);
        assert_eq!(
            a.allocate_ids(1, 1),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1
            })
        );
    }

    #[test]
    fn free_id_allocated_succeeds() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_id().unwrap();
        assert_eq!(a.free_id(0), Ok(()));
        assert!(!a.is_allocated(0));
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn free_id_never_allocated_fails() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_id().unwrap();
        assert_eq!(a.free_id(3), Err(Error::IdNeverAllocated(3)));
        assert_eq!(
            Error::IdNeverAllocated(3).to_string(),
            "ID 3 was never allocated"
        );
    }

    #[test]
    fn free_id_twice_fails_already_free() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_id().unwrap();
        a.free_id(0).unwrap();
        assert_eq!(a.free_id(0), Err(Error::IdAlreadyFree(0)));
        assert_eq!(Error::IdAlreadyFree(0).to_string(), "ID 0 is already free");
    }

    #[test]
    fn free_id_out_of_range_fails() {
        let mut a = IdAllocator::new(10, 20).unwrap();
        assert_eq!(
            a.free_id(9),
            Err(Error::IdOutOfRange {
                id: 9,
                first: 10,
                last: 20
            })
        );
    }

    #[test]
    fn free_ids_partly_free_fails_and_changes_nothing() {
        let mut a = IdAllocator::new(0, 99).unwrap();
        a.allocate_ids(10, 1).unwrap();
        a.free_id(6).unwrap();
        let before = a.clone();
        assert_eq!(a.free_ids(2..=8), Err(Error::IdAlreadyFree(6)));
        assert_eq!(a, before);
        assert_eq!(a.free_ids(7..=12), Err(Error::IdNeverAllocated(10)));
        assert_eq!(a.free_ids(7..=9), Ok(()));
        assert_eq!(a.used(), 6);
    }

    #[test]
    fn free_ids_past_the_range_reports_the_lowest_id_not_allocated() {
        let mut a = IdAllocator::new(0, 3).unwrap();
        let before = a.clone();
        assert_eq!(a.free_ids(0..=4), Err(Error::IdNeverAllocated(0)));
        assert_eq!(a, before);
        let mut a = IdAllocator::new(10, 20).unwrap();
        a.allocate_ids_at(10, 11).unwrap();
        a.free_id(12).unwrap();
        let before = a.clone();
        assert_eq!(a.free_ids(12..=25), Err(Error::IdAlreadyFree(12)));
        // Every ID of the range allocated: the first past it is the lowest not allocated.
        assert_eq!(
            a.free_ids(13..=25),
            Err(Error::IdOutOfRange {
                id: 21,
                first: 10,
                last: 20
            })
        );
        assert_eq!(
            a.free_ids(5..=15),
            Err(Error::IdOutOfRange {
                id: 5,
                first: 10,
                last: 20
            })
        );
        assert_eq!(a, before);
        assert_eq!(a.free_ids(13..=20), Ok(()));
        assert_eq!(a.used(), 2);
    }

    #[test]
    fn free_ids_empty_fails() {
        let mut a = IdAllocator::new(0, 99).unwrap();
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 5..=4;
        assert_eq!(a.free_ids(empty), Err(Error::ZeroIdCount));
    }

    #[test]
    fn is_allocated_out_of_range_is_false() {
        let a = IdAllocator::new(10, 20).unwrap();
        assert!(!a.is_allocated(5));
        assert!(!a.is_allocated(25));
    }

    #[test]
    fn iter_lists_allocated_in_order() {
        let mut a = IdAllocator::new(100, 400).unwrap();
        for id in [399, 100, 164, 163, 250] {
            a.allocate_id_at(id).unwrap();
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [100, 163, 164, 250, 399]);
        assert_eq!(
            a.allocated_runs().collect::<Vec<_>>(),
            [100..=100, 163..=164, 250..=250, 399..=399]
        );
    }

    #[test]
    fn never_allocated_runs_shrink_as_ids_are_used() {
        let mut a = IdAllocator::new(0, 9).unwrap();
        a.allocate_id_at(4).unwrap();
        a.free_id(4).unwrap();
        assert_eq!(a.never_allocated_runs().collect::<Vec<_>>(), [0..=3, 5..=9]);
    }

    #[test]
    fn full_u32_range_allocates_densely_without_huge_memory() {
        let mut a = IdAllocator::new(0, u32::MAX).unwrap();
        for want in 0..1000 {
            assert_eq!(a.allocate_id(), Ok(want));
        }
        assert_eq!(a.available(), (1u64 << 32) - 1000);
        assert!(a.heap_bytes() < 4096);
    }

    #[test]
    fn full_u32_range_counts_its_ids_past_a_32_bit_usize() {
        // 2^32 IDs, one more than a 32-bit `usize` holds: every count of them, and every bit
        // position of a bitmap covering them, is taken in `u64`.
        let mut a = IdAllocator::new(0, u32::MAX).unwrap();
        assert_eq!(a.allocate_id(), Ok(0));
        assert_eq!(a.allocate_id(), Ok(1));
        assert!(!a.is_allocated(2));
        assert_eq!(a.allocate_many(3), Ok(vec![2, 3, 4]));
        assert_eq!(a.allocate_ids(2, 64), Ok(64..=65));
        assert_eq!(a.free_ids(0..=4), Ok(()));
        assert_eq!(a.allocate_ids(5, 1), Ok(0..=4));
        assert_eq!(a.allocate_id_at(200), Ok(200));
        assert_eq!(a.allocate_many(2), Ok(vec![5, 6]));
        assert_eq!(a.used(), 10);
        assert_eq!(a.available(), (1u64 << 32) - 10);
    }

    #[test]
    fn dense_memory_is_about_one_bit_per_id() {
        let n: u32 = if cfg!(miri) { 20_000 } else { 1_000_000 };
        let mut a = IdAllocator::new(0, n - 1).unwrap();
        for _ in 0..n {
            a.allocate_id().unwrap();
        }
        // n bits, plus at most an eighth of growth slack and the summary level.
        let bits = n as usize / 8;
        assert!(
            a.heap_bytes() < bits + bits / 8 + bits / 32 + 64,
            "{} bytes",
            a.heap_bytes()
        );
    }

    /// An allocator of `0..=63` with every ID allocated.
    fn full64() -> IdAllocator {
        let mut a = IdAllocator::new(0, 63).unwrap();
        a.allocate_ids(64, 1).unwrap();
        a
    }

    #[test]
    fn free_id_then_allocate_id_hands_the_same_id_back() {
        let mut a = full64();
        a.free_id(40).unwrap();
        assert!(!a.is_allocated(40));
        assert_eq!((a.used(), a.available()), (63, 1));
        assert_eq!(a.allocate_id(), Ok(40));
        assert!(a.is_allocated(40));
        assert_eq!(
            a.allocate_id(),
            Err(Error::OutOfIds {
                count: 1,
                alignment: 1
            })
        );
    }

    #[test]
    fn free_id_recently_freed_twice_fails_already_free() {
        let mut a = full64();
        a.free_id(7).unwrap();
        assert_eq!(a.free_id(7), Err(Error::IdAlreadyFree(7)));
        assert_eq!(a.used(), 63);
    }

    #[test]
    fn allocate_id_recently_freed_above_older_free_takes_smallest() {
        let mut a = full64();
        a.free_id(3).unwrap();
        a.free_id(50).unwrap();
        assert_eq!(a.allocate_id(), Ok(3));
        assert_eq!(a.allocate_id(), Ok(50));
        a.free_id(50).unwrap();
        a.free_id(3).unwrap();
        assert_eq!(a.allocate_id(), Ok(3));
        assert_eq!(a.allocate_id(), Ok(50));
    }

    #[test]
    fn iter_and_runs_recently_freed_is_left_out() {
        let mut a = full64();
        a.free_id(10).unwrap();
        assert_eq!(a.iter().count(), 63);
        assert!(a.iter().all(|id| id != 10));
        assert_eq!(a.allocated_runs().collect::<Vec<_>>(), [0..=9, 11..=63]);
        let mut b = full64();
        b.free_ids(10..=10).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn range_ops_over_recently_freed_see_it_free() {
        let mut a = full64();
        a.free_id(20).unwrap();
        assert_eq!(a.free_ids(19..=21), Err(Error::IdAlreadyFree(20)));
        assert_eq!(a.allocate_ids_at(20, 1), Ok(20..=20));
        a.free_id(20).unwrap();
        assert_eq!(a.allocate_ids(1, 4), Ok(20..=20));
        a.free_id(20).unwrap();
        assert_eq!(a.allocate_many(1), Ok(vec![20]));
        a.free_id(20).unwrap();
        assert_eq!(a.allocate_id_at(20), Ok(20));
        assert_eq!(a.allocate_id_at(20), Err(Error::IdAlreadyAllocated(20)));
        assert_eq!(a, full64());
    }
}
