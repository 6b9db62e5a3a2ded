//! [`Builder`]: capacity, growth, alignment and commit mode of a vector; [`Growth`]: how much
//! memory is committed at a time.

use super::concurrent::{ConcurrentVec, MAX_BLOCK};
use super::error::{Error, Result};
use super::layout::VecLayout;
use super::owned::Vec;
use crate::page::page_size;
use crate::reservation::CommitMode;

/// How much memory a vector commits when it needs more. Every step is rounded up to whole
/// pages; zero means one page.
///
/// Larger steps mean fewer commit calls (each a system call in
/// [`CommitMode::Protected`]) and more memory committed ahead of use.
///
/// A [`Pusher`](super::Pusher) of a [`ConcurrentVec`] claims up to 512 slots at a time (256
/// where `usize` has 32 bits) but commits them as single-slot pushes do, a step at a time as
/// they fill: a `Pusher` of 1 MiB elements commits 2 MiB at a time with the default growth,
/// not 512 MiB. A thread pushing with plain pushes in blocks of
/// [`thread_block`](Builder::thread_block) slots commits each block whole when it claims it,
/// through the block's end or a step past what is committed, whichever reaches further: with
/// large elements more than a step at a time (blocks of 24 slots, the default for a capacity
/// of 100,000, of 1 MiB elements are 24 MiB; `thread_block(1)` keeps plain pushes to the step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Growth {
    /// Each commit adds at least this many bytes.
    Fixed(usize),
    /// Each commit adds at least as many bytes as are committed already (so the committed size
    /// doubles), but at least `min` and at most `max` bytes.
    Doubling {
        /// The least number of bytes committed at a time.
        min: usize,
        /// The greatest number of bytes committed at a time (more if one element needs more,
        /// or a thread's block of a [`ConcurrentVec`], see above).
        max: usize,
    },
}

impl Default for Growth {
    /// `Doubling` from 64 KiB up to 2 MiB at a time: few system calls, and at most 2 MiB
    /// committed ahead of use (but for the thread blocks of a [`ConcurrentVec`], see above).
    fn default() -> Self {
        Growth::Doubling {
            min: 64 << 10,
            max: 2 << 20,
        }
    }
}

impl Growth {
    /// Checks the policy: `min <= max`.
    pub(crate) fn validate(self) -> Result<Self> {
        match self {
            Growth::Doubling { min, max } if min > max => Err(Error::InvalidGrowth { min, max }),
            _ => Ok(self),
        }
    }

    /// The number of bytes to add to `committed` bytes, a non-zero multiple of `page` (or
    /// `usize::MAX` rounded down, for absurd steps; callers clamp to the region).
    pub(crate) fn step(self, committed: usize, page: usize) -> usize {
        let raw = match self {
            Growth::Fixed(step) => step,
            Growth::Doubling { min, max } => committed.clamp(min, max),
        };
        raw.max(page)
            .checked_next_multiple_of(page)
            .unwrap_or(usize::MAX - usize::MAX % page)
    }
}

/// Options for a [`Vec`] or a [`ConcurrentVec`]: the maximum capacity (required), how memory
/// is committed as the vector grows, the alignment of its start and the commit mode.
///
/// # Examples
/// ```
/// use memvisor_vmem::CommitMode;
/// use memvisor_vmem::vec::{Builder, Growth};
///
/// let builder = Builder::new(1 << 16)
///     .growth(Growth::Fixed(1 << 20))
///     .alignment(2 << 20)
///     .mode(CommitMode::Sparse);
/// let mut v = builder.build::<u32>()?;
/// v.push(1);
/// assert_eq!(v.as_ptr() as usize % (2 << 20), 0);
/// let c = builder.build_concurrent::<u32>()?;
/// assert_eq!(c.push(5), 0);
/// # Ok::<(), memvisor_vmem::vec::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Builder {
    capacity: usize,
    growth: Growth,
    alignment: usize,
    mode: CommitMode,
    huge_pages: bool,
    thread_block: Option<usize>,
}

impl Builder {
    /// Options for a vector of at most `capacity` elements, with the default [`Growth`], page
    /// alignment (or the element's, if larger), [`CommitMode::Protected`] and small pages.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            growth: Growth::default(),
            alignment: 1,
            mode: CommitMode::Protected,
            huge_pages: false,
            thread_block: None,
        }
    }

    /// The maximum number of elements.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How much memory is committed at a time.
    #[must_use]
    pub fn growth(mut self, growth: Growth) -> Self {
        self.growth = growth;
        self
    }

    /// The first element's address will be a multiple of `alignment` (a power of two; 0 means
    /// no requirement), for example 2 MiB so that huge pages can back it. The page size and the
    /// element's alignment are always kept.
    #[must_use]
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    /// How the reservation commits pages (see [`CommitMode`]).
    #[must_use]
    pub fn mode(mut self, mode: CommitMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether large vectors use transparent huge pages (Linux; default off). When the slots
    /// span at least two huge pages (4 MiB on x86-64) and the [`Growth`] step reaches a huge page,
    /// slot memory past the first huge page is committed in whole huge pages (so at most one
    /// huge page more than the step) and advised as huge-page candidates (`MADV_HUGEPAGE`), and
    /// the start is aligned to a huge page. A large vector then takes one page fault per 2 MiB
    /// instead of per 4 KiB as it fills (single-thread pushes of `u64` about 1.4x faster); a
    /// small one is unaffected. Threads pushing into the same huge pages at once can each fault
    /// the same huge page, and were measured slower, not faster, in some runs: hence off unless
    /// asked for.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::vec::Builder;
    ///
    /// let v = Builder::new(1 << 20).huge_pages(true).build::<u64>()?;
    /// assert!(v.options().huge_pages_enabled());
    /// assert!(!Builder::new(1 << 20).huge_pages_enabled());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[must_use]
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Whether [`huge_pages`](Self::huge_pages) is on.
    #[must_use]
    pub fn huge_pages_enabled(&self) -> bool {
        self.huge_pages
    }

    /// How many slots a thread pushing into a [`ConcurrentVec`] claims at a time once it finds
    /// other threads pushing too (1 to 512, or to 256 where `usize` has 32 bits: eight words of
    /// ready bits; see [`ConcurrentVec::push`]). Blocks spare each push
    /// the cache lines other threads write, but slots a thread has claimed and not filled yet
    /// count in [`len`](ConcurrentVec::len) and are taken by nobody else, and a block the
    /// thread gives up (after 64 pushes in a row into other vectors, or at the thread's exit)
    /// leaves its rest empty for good: up to `slots - 1` slots each time, which add up to at most
    /// `slots - 1` of every `slots + 2` slots of the vector (see [`ConcurrentVec`]'s
    /// description). 1 makes every push claim exactly one slot. A multiple of 64 keeps blocks
    /// aligned, so each owns whole words of ready bits and publishes with plain stores; 512
    /// (the default for a capacity of 2 Mi or more; 256 from 1 Mi where `usize` has 32 bits)
    /// also keeps those words on a cache line of their own where `usize` has 64 bits (where it
    /// has 32, the 256 slots' words fill half a line). Default below that: `capacity / 4096`
    /// (at least 1), so that a thread holds at most 1/4096 of the capacity.
    ///
    /// Per-thread blocks need thread-locals (the `std` feature) and 64-bit atomics: without
    /// them every plain push claims one slot whatever this says (and a [`Pusher`](super::Pusher)
    /// still claims blocks of 512, or 256).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::vec::{Builder, Error};
    ///
    /// let v = Builder::new(100).thread_block(1).build_concurrent::<u8>()?;
    /// assert_eq!(v.thread_block(), 1);
    /// let e = Builder::new(100).thread_block(513).build_concurrent::<u8>().unwrap_err();
    /// assert_eq!(e, Error::InvalidThreadBlock { slots: 513 });
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[must_use]
    pub fn thread_block(mut self, slots: usize) -> Self {
        self.thread_block = Some(slots);
        self
    }

    /// The slots a thread claims at a time in a vector of this builder's capacity (see
    /// [`thread_block`](Self::thread_block)).
    ///
    /// # Errors
    /// [`Error::InvalidThreadBlock`] if a block outside 1 to 512 (256 where `usize` has 32 bits)
    /// was asked for.
    pub fn thread_block_slots(&self) -> Result<usize> {
        match self.thread_block {
            None => Ok((self.capacity / 4096).clamp(1, MAX_BLOCK)),
            Some(slots @ 1..=MAX_BLOCK) => Ok(slots),
            Some(slots) => Err(Error::InvalidThreadBlock { slots }),
        }
    }

    /// The settings: capacity, growth, alignment and mode.
    #[must_use]
    pub fn settings(&self) -> (usize, Growth, usize, CommitMode) {
        (self.capacity, self.growth, self.alignment, self.mode)
    }

    pub(crate) fn prepare<T>(&self, ready_bits: bool) -> Result<(VecLayout, Growth)> {
        let growth = self.growth.validate()?;
        self.thread_block_slots()?;
        if self.alignment != 0 && !self.alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment {
                align: self.alignment,
            });
        }
        let layout = VecLayout::new::<T>(
            self.capacity,
            page_size(),
            self.alignment,
            ready_bits,
            self.huge_pages,
        )?;
        Ok((layout, growth))
    }

    /// Reserves an empty [`Vec`]; nothing is committed until the first element.
    ///
    /// # Errors
    /// [`Error::InvalidGrowth`] for a growth policy whose minimum exceeds its maximum,
    /// [`Error::InvalidAlignment`] for an alignment that is not a power of two,
    /// [`Error::InvalidThreadBlock`] for a thread block outside 1 to 512 (256 where `usize` has
    /// 32 bits),
    /// [`Error::TooLarge`] if the capacity's bytes (with the ready bits of a `ConcurrentVec`),
    /// rounded up to whole pages, exceed `isize::MAX`, the most a slice may span,
    /// [`Error::Reserve`] if the system has no room.
    pub fn build<T>(&self) -> Result<Vec<T>> {
        Vec::from_builder(self)
    }

    /// Reserves an empty [`ConcurrentVec`]; nothing is committed until the first element.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`Error::TooLarge`] for a capacity above `isize::MAX`
    /// (which zero-sized elements could otherwise reach).
    pub fn build_concurrent<T>(&self) -> Result<ConcurrentVec<T>> {
        ConcurrentVec::from_builder(self)
    }

    pub(crate) fn mode_setting(&self) -> CommitMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_doubling_clamps_to_bounds() {
        let g = Growth::Doubling {
            min: 8192,
            max: 65536,
        };
        assert_eq!(g.step(0, 4096), 8192);
        assert_eq!(g.step(20_000, 4096), 20_480);
        assert_eq!(g.step(1 << 30, 4096), 65536);
    }

    #[test]
    fn step_fixed_rounds_to_pages() {
        assert_eq!(Growth::Fixed(0).step(0, 4096), 4096);
        assert_eq!(Growth::Fixed(5000).step(1 << 20, 4096), 8192);
        assert_eq!(Growth::Fixed(usize::MAX).step(0, 4096), usize::MAX - 4095);
    }

    #[test]
    fn validate_min_above_max_is_error() {
        let g = Growth::Doubling { min: 2, max: 1 };
        assert_eq!(g.validate(), Err(Error::InvalidGrowth { min: 2, max: 1 }));
    }

    #[test]
    fn builder_settings_round_trip() {
        let b = Builder::new(5)
            .capacity(7)
            .growth(Growth::Fixed(1))
            .alignment(64)
            .mode(CommitMode::Sparse);
        assert_eq!(b.settings(), (7, Growth::Fixed(1), 64, CommitMode::Sparse));
    }
}
