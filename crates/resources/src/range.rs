//! Inclusive ranges of `u64` units (addresses, port numbers, ...).

use core::fmt;

use crate::error::{Error, Result};

/// A non-empty range of `u64` units, `start..=end`.
///
/// The end is inclusive so that a range can reach `u64::MAX`; `[0, u64::MAX]`, the whole 64-bit
/// space, is a valid range. Its length, 2^64, does not fit in a `u64`: [`size`](Self::size)
/// returns `None` for it alone, and [`size_u128`](Self::size_u128) is exact for every range.
///
/// ```
/// use memvisor_resources::AddressRange;
///
/// let r = AddressRange::from_start_and_size(0x1000, 0x1000)?;
/// assert_eq!((r.start(), r.end()), (0x1000, 0x1fff));
/// assert_eq!(r.size(), Some(0x1000));
/// let top = AddressRange::new(u64::MAX - 1, u64::MAX)?;
/// assert_eq!(top.size(), Some(2));
/// assert_eq!(AddressRange::new(0, u64::MAX)?.size(), None);
/// # Ok::<(), memvisor_resources::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    start: u64,
    end: u64,
}

impl AddressRange {
    /// The whole 64-bit space, `[0, u64::MAX]`.
    pub const FULL: Self = Self {
        start: 0,
        end: u64::MAX,
    };

    /// Creates `start..=end`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRange`] if `start > end`.
    pub const fn new(start: u64, end: u64) -> Result<Self> {
        if start > end {
            return Err(Error::InvalidRange { start, end });
        }
        Ok(Self { start, end })
    }

    /// Creates the range of `size` units that begins at `start`.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] if `size` is 0; [`Error::Overflow`] if the range would go past
    /// `u64::MAX` (a range that ends exactly at `u64::MAX` is fine).
    ///
    /// ```
    /// use memvisor_resources::{Error, AddressRange};
    ///
    /// assert!(AddressRange::from_start_and_size(u64::MAX, 1).is_ok());
    /// assert_eq!(
    ///     AddressRange::from_start_and_size(u64::MAX, 2),
    ///     Err(Error::Overflow { start: u64::MAX, size: 2 })
    /// );
    /// ```
    pub const fn from_start_and_size(start: u64, size: u64) -> Result<Self> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        match start.checked_add(size - 1) {
            Some(end) => Ok(Self { start, end }),
            None => Err(Error::Overflow { start, size }),
        }
    }

    /// The first unit.
    #[must_use]
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// The last unit (inclusive).
    #[must_use]
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// The number of units, or `None` for the whole 64-bit space (2^64 units do not fit in a
    /// `u64`).
    #[must_use]
    pub const fn size(&self) -> Option<u64> {
        (self.end - self.start).checked_add(1)
    }

    /// The number of units, exact for every range including the whole 64-bit space.
    #[must_use]
    pub const fn size_u128(&self) -> u128 {
        (self.end - self.start) as u128 + 1
    }

    /// Whether `unit` lies in the range.
    #[must_use]
    pub const fn contains(&self, unit: u64) -> bool {
        self.start <= unit && unit <= self.end
    }

    /// Whether `other` lies entirely inside this range.
    #[must_use]
    pub const fn contains_range(&self, other: &Self) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share at least one unit.
    #[must_use]
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The units both ranges share, if any.
    #[must_use]
    pub fn intersection(&self, other: &Self) -> Option<Self> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(Self { start, end })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_start_after_end_fails() {
        assert_eq!(
            AddressRange::new(2, 1),
            Err(Error::InvalidRange { start: 2, end: 1 })
        );
    }

    #[test]
    fn new_full_space_succeeds() {
        let r = AddressRange::new(0, u64::MAX).unwrap();
        assert_eq!(r, AddressRange::FULL);
        assert_eq!(r.size(), None);
        assert_eq!(r.size_u128(), 1u128 << 64);
    }

    #[test]
    fn new_single_unit_at_max_has_size_one() {
        let r = AddressRange::new(u64::MAX, u64::MAX).unwrap();
        assert_eq!(r.size(), Some(1));
        assert!(r.contains(u64::MAX));
    }

    #[test]
    fn from_start_and_size_zero_fails() {
        assert_eq!(
            AddressRange::from_start_and_size(5, 0),
            Err(Error::ZeroSize)
        );
    }

    #[test]
    fn from_start_and_size_reaching_max_succeeds() {
        let r = AddressRange::from_start_and_size(u64::MAX - 9, 10).unwrap();
        assert_eq!(r.end(), u64::MAX);
        let all = AddressRange::from_start_and_size(0, u64::MAX).unwrap();
        assert_eq!(all.end(), u64::MAX - 1);
    }

    #[test]
    fn from_start_and_size_past_max_fails() {
        assert_eq!(
            AddressRange::from_start_and_size(u64::MAX - 9, 11),
            Err(Error::Overflow {
                start: u64::MAX - 9,
                size: 11
            })
        );
    }

    #[test]
    fn overlaps_and_contains_edges_agree() {
        let a = AddressRange::new(10, 20).unwrap();
        let b = AddressRange::new(20, 30).unwrap();
        let c = AddressRange::new(21, 30).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert!(a.contains_range(&AddressRange::new(10, 20).unwrap()));
        assert!(!a.contains_range(&b));
        assert_eq!(a.intersection(&b), Some(AddressRange::new(20, 20).unwrap()));
        assert_eq!(a.intersection(&c), None);
    }

    #[test]
    fn display_shows_hex_bounds() {
        let r = AddressRange::new(0x10, 0x1f).unwrap();
        assert_eq!(r.to_string(), "[0x10, 0x1f]");
    }
}
