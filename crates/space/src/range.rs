//! [`GuestRange`]: a non-empty, inclusive range of guest physical addresses over the
//! workspace's range type.

use std::fmt;

use memvisor_resources::AddressRange;
use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::region::Region;
use crate::spec::{RegionSpec, RegionType};

/// A non-empty range of guest physical addresses, first and last inclusive, so that a range
/// may end at `u64::MAX` without wrapping. The same type names windows, planned ranges,
/// reservations and the ranges in errors.
///
/// ```
/// use memvisor_space::GuestRange;
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let r = GuestRange::new(GuestAddress(0x1000), 0x2000)?;
/// assert_eq!(r.last(), GuestAddress(0x2fff));
/// assert_eq!(r.size(), Some(0x2000));
/// assert_eq!(r.to_string(), "[0x1000, 0x2fff]");
/// let top = GuestRange::new(GuestAddress(u64::MAX), 1)?;
/// assert_eq!(top.last(), GuestAddress(u64::MAX));
/// assert!(GuestRange::new(GuestAddress(u64::MAX), 2).is_err());
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestRange(AddressRange);

impl GuestRange {
    /// The `size` bytes from `start`.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for 0, [`Error::Overflow`] if it passes `u64::MAX`.
    pub fn new(start: GuestAddress, size: u64) -> Result<Self> {
        AddressRange::from_start_and_size(start.0, size)
            .map(Self)
            .map_err(|e| match e {
                memvisor_resources::Error::ZeroSize => Error::ZeroSize { base: start.0 },
                _ => Error::Overflow {
                    base: start.0,
                    size,
                },
            })
    }

    /// `first..=last`.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] if `first > last`.
    pub fn inclusive(first: GuestAddress, last: GuestAddress) -> Result<Self> {
        AddressRange::new(first.0, last.0)
            .map(Self)
            .map_err(|_| Error::InvalidRange {
                first: first.0,
                last: last.0,
            })
    }

    /// The first address.
    #[must_use]
    pub fn start(&self) -> GuestAddress {
        GuestAddress(self.0.start())
    }

    /// The last address (inclusive).
    #[must_use]
    pub fn last(&self) -> GuestAddress {
        GuestAddress(self.0.end())
    }

    /// The size in bytes, or `None` for the whole 64-bit space.
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        self.0.size()
    }

    /// The size in bytes, exact for every range.
    #[must_use]
    pub fn size_u128(&self) -> u128 {
        self.0.size_u128()
    }

    /// Whether `addr` lies in the range.
    #[must_use]
    pub fn contains(&self, addr: GuestAddress) -> bool {
        self.0.contains(addr.0)
    }

    /// Whether `other` lies entirely inside this range.
    #[must_use]
    pub fn contains_range(&self, other: &Self) -> bool {
        self.0.contains_range(&other.0)
    }

    /// Whether the two ranges share an address.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        self.0.overlaps(&other.0)
    }

    /// The addresses both ranges share, if any.
    #[must_use]
    pub fn intersection(&self, other: &Self) -> Option<Self> {
        self.0.intersection(&other.0).map(Self)
    }

    /// The range as the workspace's range type, memvisor-resources' `AddressRange` (re-exported
    /// with its crate as [`memvisor_resources`](crate::memvisor_resources)).
    ///
    /// ```
    /// use memvisor_space::GuestRange;
    /// use memvisor_space::memvisor_resources::AddressRange;
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let range = GuestRange::new(GuestAddress(0x1000), 0x1000)?;
    /// assert_eq!(range.as_range(), AddressRange::new(0x1000, 0x1fff)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn as_range(&self) -> AddressRange {
        self.0
    }
}

impl RegionSpec {
    /// The addresses the region covers, checked: no saturation for an invalid spec.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for size 0, [`Error::Overflow`] if it passes `u64::MAX`, each with
    /// the spec's own base.
    ///
    /// ```
    /// use memvisor_space::{Error, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let r = RegionSpec::ram(GuestAddress(0x1000), 0x1000).range()?;
    /// assert_eq!(r.last(), GuestAddress(0x1fff));
    /// let top = RegionSpec::ram(GuestAddress(u64::MAX), 2);
    /// assert!(matches!(top.range(), Err(Error::Overflow { base: u64::MAX, size: 2 })));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn range(&self) -> Result<GuestRange> {
        GuestRange::new(GuestAddress(self.base), self.size)
    }

    /// A region of type `ty` over `range`, with [`new`](Self::new)'s defaults: for a range the
    /// placer placed ([`GuestRange`]) or one allocated from the allocators it hands over
    /// (memvisor-resources' `AddressRange`), so that neither is taken apart into a base and a
    /// size by hand.
    ///
    /// # Errors
    /// [`Error::WholeAddressSpace`] for the range of all 2^64 addresses, whose size no `u64`
    /// holds.
    ///
    /// ```
    /// use memvisor_space::{Layout, RegionSpec, RegionType, WindowKind};
    ///
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// let mut placer = layout.placer();
    /// let net = placer.place(WindowKind::Device, 0x1000, 0x1000, "net0")?;
    /// let spec = RegionSpec::for_range(RegionType::Device, net)?;
    /// assert_eq!(spec.range()?, net);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn for_range(ty: RegionType, range: impl Into<GuestRange>) -> Result<Self> {
        Self::new(ty, GuestAddress(0), 0).with_range(range)
    }

    /// Sets the region's base and size to `range`'s.
    ///
    /// # Errors
    /// [`Error::WholeAddressSpace`] for the range of all 2^64 addresses, whose size no `u64`
    /// holds; the spec is dropped then.
    pub fn with_range(mut self, range: impl Into<GuestRange>) -> Result<Self> {
        let range = range.into();
        self.size = range.size().ok_or(Error::WholeAddressSpace)?;
        self.base = range.start().0;
        Ok(self)
    }
}

impl Region {
    /// The addresses the region covers, as the placer and the errors name ranges (and, through
    /// `From` or [`GuestRange::as_range`], as memvisor-resources' allocators do).
    ///
    /// ```
    /// use memvisor_space::{Region, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let region = Region::plan(RegionSpec::ram(GuestAddress(0x1000), 0x1000))?;
    /// assert_eq!(region.range(), RegionSpec::ram(GuestAddress(0x1000), 0x1000).range()?);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn range(&self) -> GuestRange {
        // Every constructor of a region validated its spec: size > 0 and `base + size - 1`
        // does not overflow, so `last` is at or after `base`.
        match AddressRange::new(self.base().0, self.last().0) {
            Ok(range) => range.into(),
            Err(e) => unreachable!("a validated region's range is refused: {e}"),
        }
    }
}

impl From<AddressRange> for GuestRange {
    fn from(range: AddressRange) -> Self {
        Self(range)
    }
}

impl From<GuestRange> for AddressRange {
    fn from(range: GuestRange) -> Self {
        range.0
    }
}

impl fmt::Display for GuestRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_bad_ranges_error_with_their_values() {
        assert!(matches!(
            GuestRange::new(GuestAddress(0x1000), 0),
            Err(Error::ZeroSize { base: 0x1000 })
        ));
        assert!(matches!(
            GuestRange::new(GuestAddress(u64::MAX - 1), 3),
            Err(Error::Overflow { size: 3, .. })
        ));
        assert!(matches!(
            GuestRange::inclusive(GuestAddress(2), GuestAddress(1)),
            Err(Error::InvalidRange { first: 2, last: 1 })
        ));
        let full = GuestRange::inclusive(GuestAddress(0), GuestAddress(u64::MAX)).unwrap();
        assert_eq!(full.size(), None);
        assert_eq!(full.size_u128(), 1 << 64);
    }
}
