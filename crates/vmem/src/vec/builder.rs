//! [`Builder`]: capacity, growth, alignment and commit mode of a vector; [`Growth`]: how much
//! memory is committed at a time.

use super::concurrent::ConcurrentVec;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Growth {
    /// Each commit adds at least this many bytes.
    Fixed(usize),
    /// Each commit adds at least as many bytes as are committed already (so the committed size
    /// doubles), but at least `min` and at most `max` bytes.
    Doubling {
        /// The least number of bytes committed at a time.
        min: usize,
        /// The greatest number of bytes committed at a time (more if one element needs more).
        max: usize,
    },
}

impl Default for Growth {
    /// `Doubling` from 64 KiB up to 2 MiB at a time: few system calls, and at most 2 MiB
    /// committed ahead of use.
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
}

impl Builder {
    /// Options for a vector of at most `capacity` elements, with the default [`Growth`], page
    /// alignment (or the element's, if larger) and [`CommitMode::Protected`].
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            growth: Growth::default(),
            alignment: 1,
            mode: CommitMode::Protected,
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

    /// The settings: capacity, growth, alignment and mode.
    #[must_use]
    pub fn settings(&self) -> (usize, Growth, usize, CommitMode) {
        (self.capacity, self.growth, self.alignment, self.mode)
    }

    pub(crate) fn prepare<T>(&self, ready_bits: bool) -> Result<(VecLayout, Growth)> {
        let growth = self.growth.validate()?;
        if self.alignment != 0 && !self.alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment {
                align: self.alignment,
            });
        }
        let layout = VecLayout::new::<T>(self.capacity, page_size(), self.alignment, ready_bits)?;
        Ok((layout, growth))
    }

    /// Reserves an empty [`Vec`]; nothing is committed until the first element.
    ///
    /// # Errors
    /// [`Error::InvalidGrowth`] for a growth policy whose minimum exceeds its maximum,
    /// [`Error::InvalidAlignment`] for an alignment that is not a power of two,
    /// [`Error::TooLarge`] if the capacity's bytes do not fit in the address space,
    /// [`Error::Reserve`] if the system has no room.
    pub fn build<T>(&self) -> Result<Vec<T>> {
        Vec::from_builder(self)
    }

    /// Reserves an empty [`ConcurrentVec`]; nothing is committed until the first element.
    ///
    /// # Errors
    /// As [`build`](Self::build).
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
