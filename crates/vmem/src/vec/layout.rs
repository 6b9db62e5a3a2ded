//! Where a vector's bytes live in its reservation, computed from the element's real size and
//! alignment: the slots first, then (for a [`ConcurrentVec`](super::ConcurrentVec)) one ready
//! bit per slot, each region a whole number of pages.
//!
//! ```text
//! offset 0                       data_len                      data_len + bits_len
//! | slot 0 | slot 1 | ... | pad  | ready bits (words) ... | pad |
//! ```
//!
//! A large slot region may use transparent huge pages (see [`VecLayout::huge`]): its start is
//! then aligned to a huge page, and slot memory past the first huge page is committed in whole
//! huge pages, each advised to the system as a huge-page candidate.
//!
//! Every size below is checked: a capacity whose bytes (slots and ready bits together) exceed
//! `isize::MAX` is [`Error::TooLarge`], never a wrapped product nor a region larger than a
//! slice may be.

use core::mem::{align_of, size_of};

use super::error::{Error, Result};
use crate::reservation::{HUGE_PAGE, HugePageAdvice, Reservation};

/// Bytes of one ready-bit word.
pub(crate) const WORD_BYTES: usize = size_of::<usize>();
/// Ready bits per word.
pub(crate) const WORD_BITS: usize = usize::BITS as usize;

/// The regions of a vector's reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VecLayout {
    /// `size_of::<T>()`.
    pub(crate) elem_size: usize,
    /// The maximum number of elements.
    pub(crate) capacity: usize,
    /// The page size all regions are multiples of.
    pub(crate) page: usize,
    /// Bytes of the slot region: `capacity * elem_size` rounded up to pages.
    pub(crate) data_len: usize,
    /// Bytes of the ready-bit region (0 without one), which starts at `data_len`.
    pub(crate) bits_len: usize,
    /// Bytes to reserve: both regions, at least one page.
    pub(crate) total: usize,
    /// Alignment of the reservation's start: the element's, the caller's and the page's (and
    /// the huge page's, when `huge` is not zero).
    pub(crate) align: usize,
    /// The huge-page size when the slot region uses transparent huge pages, else 0: asked for,
    /// supported by the system (Linux), and the slot region spans at least two huge pages.
    pub(crate) huge: usize,
}

fn round_up(value: usize, page: usize) -> Option<usize> {
    value.checked_next_multiple_of(page)
}

impl VecLayout {
    /// The layout for `capacity` elements of `T`, with ready bits if `ready_bits`, the start
    /// aligned to at least `min_align` (a power of two, checked by the reservation), with
    /// transparent huge pages for the slots if `huge_pages` and the slot region is large.
    pub(crate) fn new<T>(
        capacity: usize,
        page: usize,
        min_align: usize,
        ready_bits: bool,
        huge_pages: bool,
    ) -> Result<Self> {
        let elem_size = size_of::<T>();
        let too_large = Error::TooLarge {
            capacity,
            element_size: elem_size,
        };
        let data_len = capacity
            .checked_mul(elem_size)
            .and_then(|bytes| round_up(bytes, page))
            .ok_or(too_large.clone())?;
        let bits_len = if ready_bits {
            round_up(capacity.div_ceil(WORD_BITS) * WORD_BYTES, page).ok_or(too_large.clone())?
        } else {
            0
        };
        // No slice (and no allocation under Miri) may span more than `isize::MAX` bytes: a
        // system that would map more (a 32-bit process may reserve above 2 GiB) must not get a
        // vector whose `as_slice` breaks that rule, so the bound is checked here, the same on
        // every system, rather than left to the system's refusal.
        let total = data_len
            .checked_add(bits_len)
            .filter(|&total| isize::try_from(total).is_ok())
            .ok_or(too_large)?
            .max(page);
        let huge_page = HUGE_PAGE.max(page);
        let huge = if huge_pages && cfg!(target_os = "linux") && data_len >= 2 * huge_page {
            huge_page
        } else {
            0
        };
        Ok(Self {
            elem_size,
            capacity,
            page,
            data_len,
            bits_len,
            total,
            align: min_align.max(align_of::<T>()).max(page).max(huge),
            huge,
        })
    }

    /// Where to end a commit of slot bytes that must reach `needed` and that `growth_step` would
    /// take to `grown` (both page multiples): the larger of the two, rounded up to a huge page
    /// when the slots use huge pages and a growth step is at least one (so that huge pages are
    /// committed whole, at most a huge page beyond the step), and at most `data_len`.
    pub(crate) fn data_target(&self, needed: usize, grown: usize, growth_step: usize) -> usize {
        let end = needed.max(grown);
        let end = if self.huge != 0 && growth_step >= self.huge {
            end.checked_next_multiple_of(self.huge).unwrap_or(end)
        } else {
            end
        };
        end.min(self.data_len)
    }

    /// Commits slot bytes `from..to` of `reservation` (page multiples, `from < to <= data_len`).
    /// A commit of at least a huge page then advises the huge pages it touches as huge-page
    /// candidates (the advice may reach into uncommitted bytes of those huge pages, which it
    /// does not commit). The advice is a hint: a system that refuses it (or lacks transparent
    /// huge pages) keeps small pages.
    pub(crate) fn commit_data(
        &self,
        reservation: &Reservation,
        from: usize,
        to: usize,
    ) -> crate::Result<()> {
        reservation.commit(from, to - from)?;
        if self.huge != 0 && to - from >= self.huge {
            let start = from - from % self.huge;
            let end = to
                .checked_next_multiple_of(self.huge)
                .map_or(self.data_len, |end| end.min(self.data_len));
            // Ignored on purpose: the memory is committed either way.
            let _ = reservation.advise_huge_pages(start, end - start, HugePageAdvice::Huge);
        }
        Ok(())
    }

    /// Reserves the layout's bytes.
    pub(crate) fn reserve(&self, mode: crate::CommitMode) -> Result<Reservation> {
        let mut reservation = Reservation::builder()
            .alignment(self.align)
            .mode(mode)
            .reserve(self.total)
            .map_err(|source| Error::Reserve {
                len: self.total,
                source,
            })?;
        // The vector reads, writes and drops its elements here: the unsafe calls that would
        // discard, replace or protect this memory are refused to whoever reaches the
        // reservation through the vector.
        reservation.hold_for_vector();
        Ok(reservation)
    }

    /// The end of the slot bytes for the first `slots` slots, rounded up to a page
    /// (`slots <= capacity`, so it never exceeds `data_len`).
    pub(crate) fn data_end(&self, slots: usize) -> usize {
        debug_assert!(slots <= self.capacity);
        (slots * self.elem_size).next_multiple_of(self.page)
    }

    /// The end of the ready-bit bytes for the first `slots` slots, relative to the start of the
    /// bit region, rounded up to a page (never exceeds `bits_len`).
    pub(crate) fn bits_end(&self, slots: usize) -> usize {
        debug_assert!(slots <= self.capacity);
        (slots.div_ceil(WORD_BITS) * WORD_BYTES).next_multiple_of(self.page)
    }

    /// How many slots whole pages of `data_bytes` slot bytes hold, at most `capacity`.
    pub(crate) fn slots_in(&self, data_bytes: usize) -> usize {
        data_bytes
            .checked_div(self.elem_size)
            .map_or(self.capacity, |n| n.min(self.capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(8192))]
    struct Big(#[allow(dead_code, reason = "only its size matters")] [u8; 8192]);

    #[test]
    fn new_u64_sizes_both_regions() {
        let l = VecLayout::new::<u64>(1000, 4096, 1, true, true).unwrap();
        assert_eq!(l.data_len, 8192);
        assert_eq!(l.bits_len, 4096);
        assert_eq!(l.total, 12288);
        assert_eq!(l.align, 4096);
    }

    #[test]
    fn new_overaligned_aligns_start_to_element() {
        let l = VecLayout::new::<Big>(3, 4096, 1, false, true).unwrap();
        assert_eq!(l.data_len, 3 * 8192);
        assert_eq!(l.align, 8192);
        assert_eq!(l.bits_len, 0);
    }

    #[test]
    fn new_zero_sized_reserves_one_page() {
        let l = VecLayout::new::<()>(usize::MAX, 4096, 1, false, true).unwrap();
        assert_eq!(l.data_len, 0);
        assert_eq!(l.total, 4096);
        assert_eq!(l.slots_in(0), usize::MAX);
    }

    #[test]
    fn new_overflowing_capacity_is_too_large() {
        let e = VecLayout::new::<u64>(usize::MAX / 4, 4096, 1, true, true).unwrap_err();
        assert_eq!(
            e,
            Error::TooLarge {
                capacity: usize::MAX / 4,
                element_size: 8
            }
        );
        let e = VecLayout::new::<u8>(usize::MAX - 10, 4096, 1, false, true).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
    }

    #[test]
    fn new_above_isize_max_bytes_is_too_large() {
        let max = isize::MAX as usize;
        let e = VecLayout::new::<u8>(max + 1, 4096, 1, false, false).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
        // The slots alone fit; with the ready bits after them they do not.
        let slots = max - max % 4096;
        let l = VecLayout::new::<u8>(slots, 4096, 1, false, false).unwrap();
        assert_eq!(l.total, slots);
        let e = VecLayout::new::<u8>(slots, 4096, 1, true, false).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
    }

    #[test]
    fn data_end_and_bits_end_round_to_pages() {
        let l = VecLayout::new::<u64>(10_000, 4096, 1, true, true).unwrap();
        assert_eq!(l.data_end(0), 0);
        assert_eq!(l.data_end(1), 4096);
        assert_eq!(l.data_end(512), 4096);
        assert_eq!(l.data_end(513), 8192);
        assert_eq!(l.bits_end(1), 4096);
        assert_eq!(l.bits_end(10_000), l.bits_len);
        assert_eq!(l.slots_in(8192), 1024);
        assert_eq!(l.slots_in(usize::MAX), 10_000);
    }
}
