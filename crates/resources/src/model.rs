//! Reference models and operation scripts, for property tests and fuzzing.
//!
//! Each allocator has an operation enum ([`IdOp`], [`AddrOp`]) whose values are plain data, so a
//! fuzzer or a property-test strategy can produce them freely, and a naive model ([`IdModel`]:
//! a `BTreeSet`; [`AddrModel`]: a sorted `Vec` of ranges with brute-force first and last fit)
//! that answers every operation the simple way. [`run_id_ops`] and [`run_addr_ops`] drive an
//! allocator and its model side by side, compare every answer (errors included) and check the
//! invariants after each step.
//!
//! ```
//! use memvisor_resources::model::{run_addr_ops, run_id_ops, AddrOp, IdOp};
//! use memvisor_resources::{AllocPolicy, AddressRange};
//!
//! run_id_ops(0, 99, &[IdOp::Allocate, IdOp::AllocateAt(7), IdOp::Free(7), IdOp::Free(7)])?;
//! let alloc = AddrOp::Allocate {
//!     size: 0x10,
//!     alignment: 0x10,
//!     policy: AllocPolicy::LastMatch,
//!     window: None,
//!     tag: 1,
//! };
//! run_addr_ops(AddressRange::FULL, &[alloc, AddrOp::FreeNth(0), AddrOp::Lookup(u64::MAX)])?;
//! # Ok::<(), memvisor_resources::model::Mismatch>(())
//! ```

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive as IdRange;

use crate::{
    AddressAllocator, AddressRange, AllocPolicy, Error, Id, IdAllocator, MAX_ID_RANGE, Refused,
    Request,
};

/// A difference between an allocator and its model, or a broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the operation after which it was found.
    pub step: usize,
    /// What differed.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}", self.step, self.detail)
    }
}

impl core::error::Error for Mismatch {}

fn mismatch(step: usize, detail: String) -> Mismatch {
    Mismatch { step, detail }
}

/// One operation on an [`IdAllocator`] of `I` IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdOp<I: Id = u32> {
    /// [`IdAllocator::allocate_id`].
    Allocate,
    /// [`IdAllocator::allocate_id_at`].
    AllocateAt(I),
    /// [`IdAllocator::allocate_ids`].
    AllocateRun {
        /// Number of IDs.
        count: u32,
        /// Alignment of the first ID.
        alignment: u64,
    },
    /// [`IdAllocator::allocate_many`].
    AllocateMany(u32),
    /// [`IdAllocator::allocate_ids_at`].
    AllocateRunAt {
        /// First ID of the run.
        first: I,
        /// Number of IDs.
        count: u32,
    },
    /// [`IdAllocator::free_id`].
    Free(I),
    /// [`IdAllocator::free_ids`] of `first..=last`.
    FreeRun {
        /// First ID to free.
        first: I,
        /// Last ID to free.
        last: I,
    },
    /// [`IdAllocator::is_allocated`].
    IsAllocated(I),
}

/// The answer to an [`IdOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdAnswer<I: Id = u32> {
    /// An allocated ID.
    Id(I),
    /// An allocated run.
    Run(IdRange<I>),
    /// Allocated IDs, not necessarily contiguous.
    Ids(Vec<I>),
    /// A free succeeded.
    Freed,
    /// An `is_allocated` answer.
    Allocated(bool),
}

/// The naive model of an [`IdAllocator`]: the set of allocated IDs and the set of IDs ever
/// allocated. It computes in `u64` whatever the ID width.
#[derive(Clone, Debug)]
pub struct IdModel<I: Id = u32> {
    first: I,
    last: I,
    allocated: BTreeSet<I>,
    ever: BTreeSet<I>,
}

impl<I: Id> IdModel<I> {
    /// A model of `IdAllocator::<I>::with_range(first, last)`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdRange`] if `first > last`, [`Error::IdRangeTooLarge`] if the range
    /// holds more than [`MAX_ID_RANGE`] IDs.
    pub fn new(first: I, last: I) -> Result<Self, Error> {
        let (lo, hi) = (first.to_u64(), last.to_u64());
        if lo > hi {
            return Err(Error::InvalidIdRange {
                first: lo,
                last: hi,
            });
        }
        if hi - lo >= MAX_ID_RANGE {
            return Err(Error::IdRangeTooLarge {
                first: lo,
                last: hi,
                max: MAX_ID_RANGE,
            });
        }
        Ok(Self {
            first,
            last,
            allocated: BTreeSet::new(),
            ever: BTreeSet::new(),
        })
    }

    /// The allocated IDs.
    #[must_use]
    pub fn allocated(&self) -> &BTreeSet<I> {
        &self.allocated
    }

    /// The IDs of the range, in increasing order.
    fn all(&self) -> impl Iterator<Item = I> + use<I> {
        ids(self.first.to_u64(), self.last.to_u64())
    }

    fn check(&self, id: I) -> Result<(), Error> {
        if id < self.first || id > self.last {
            return Err(Error::IdOutOfRange {
                id: id.to_u64(),
                first: self.first.to_u64(),
                last: self.last.to_u64(),
            });
        }
        Ok(())
    }

    fn free_error(&self, id: I) -> Error {
        if self.ever.contains(&id) {
            Error::IdAlreadyFree(id.to_u64())
        } else {
            Error::IdNeverAllocated(id.to_u64())
        }
    }

    fn take(&mut self, id: I) {
        self.allocated.insert(id);
        self.ever.insert(id);
    }

    /// Applies `op` the naive way.
    ///
    /// # Errors
    ///
    /// The error the allocator must give.
    pub fn apply(&mut self, op: &IdOp<I>) -> Result<IdAnswer<I>, Error> {
        match *op {
            IdOp::Allocate => {
                let id =
                    self.all()
                        .find(|id| !self.allocated.contains(id))
                        .ok_or(Error::OutOfIds {
                            count: 1,
                            alignment: 1,
                        })?;
                self.take(id);
                Ok(IdAnswer::Id(id))
            }
            IdOp::AllocateAt(id) => {
                self.check(id)?;
                if self.allocated.contains(&id) {
                    return Err(Error::IdAlreadyAllocated(id.to_u64()));
                }
                self.take(id);
                Ok(IdAnswer::Id(id))
            }
            IdOp::AllocateRun { count, alignment } => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                if !alignment.is_power_of_two() {
                    return Err(Error::InvalidAlignment(alignment));
                }
                let out = Error::OutOfIds { count, alignment };
                let (first, last) = (
                    u128::from(self.first.to_u64()),
                    u128::from(self.last.to_u64()),
                );
                let mut start = first.next_multiple_of(u128::from(alignment));
                while start + u128::from(count) - 1 <= last {
                    // Both ends are at most `last`, so they fit in a `u64` and in `I`.
                    let lo = u64::try_from(start).map_err(|_| out)?;
                    let hi = lo + u64::from(count - 1);
                    if ids(lo, hi).all(|id| !self.allocated.contains(&id)) {
                        for id in ids(lo, hi) {
                            self.take(id);
                        }
                        return Ok(IdAnswer::Run(to_id(lo)..=to_id(hi)));
                    }
                    start += u128::from(alignment);
                }
                Err(out)
            }
            IdOp::AllocateMany(count) => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                let free: Vec<I> = self
                    .all()
                    .filter(|id| !self.allocated.contains(id))
                    .take(count as usize)
                    .collect();
                if free.len() < count as usize {
                    let available =
                        self.last.to_u64() - self.first.to_u64() + 1 - self.allocated.len() as u64;
                    return Err(Error::NotEnoughIds {
                        requested: count,
                        available,
                    });
                }
                for &id in &free {
                    self.take(id);
                }
                Ok(IdAnswer::Ids(free))
            }
            IdOp::AllocateRunAt { first, count } => {
                if count == 0 {
                    return Err(Error::ZeroIdCount);
                }
                self.check(first)?;
                let end = u128::from(first.to_u64()) + u128::from(count) - 1;
                let Ok(end) = u64::try_from(end) else {
                    return Err(Error::Overflow {
                        start: first.to_u64(),
                        size: u64::from(count),
                    });
                };
                let Some(last) = I::from_u64(end).filter(|&l| l <= self.last) else {
                    return Err(Error::IdOutOfRange {
                        id: end,
                        first: self.first.to_u64(),
                        last: self.last.to_u64(),
                    });
                };
                if let Some(&id) = self.allocated.range(first..=last).next() {
                    return Err(Error::IdAlreadyAllocated(id.to_u64()));
                }
                for id in ids(first.to_u64(), last.to_u64()) {
                    self.take(id);
                }
                Ok(IdAnswer::Run(first..=last))
            }
            IdOp::Free(id) => {
                self.check(id)?;
                if !self.allocated.remove(&id) {
                    return Err(self.free_error(id));
                }
                Ok(IdAnswer::Freed)
            }
            IdOp::FreeRun { first, last } => {
                if first > last {
                    return Err(Error::ZeroIdCount);
                }
                // The error of the lowest ID of the run that is not allocated.
                self.check(first)?;
                let end = last.min(self.last);
                if let Some(id) =
                    ids(first.to_u64(), end.to_u64()).find(|id| !self.allocated.contains(id))
                {
                    return Err(self.free_error(id));
                }
                if last > self.last {
                    return Err(Error::IdOutOfRange {
                        id: self.last.to_u64() + 1,
                        first: self.first.to_u64(),
                        last: self.last.to_u64(),
                    });
                }
                for id in ids(first.to_u64(), last.to_u64()) {
                    self.allocated.remove(&id);
                }
                Ok(IdAnswer::Freed)
            }
            IdOp::IsAllocated(id) => Ok(IdAnswer::Allocated(self.allocated.contains(&id))),
        }
    }
}

/// `v` as an `I`; the model only converts values inside its range, which fit.
fn to_id<I: Id>(v: u64) -> I {
    I::from_u64(v).unwrap_or(I::MAX)
}

/// The IDs `lo..=hi`, both inside an `I` range.
fn ids<I: Id>(lo: u64, hi: u64) -> impl Iterator<Item = I> {
    (lo..=hi).map(to_id)
}

/// Applies `op` to `alloc` and returns its answer, as [`run_id_ops_with`] does at each step.
///
/// # Errors
///
/// The error of the call `op` stands for.
pub fn apply_id<I: Id>(alloc: &mut IdAllocator<I>, op: &IdOp<I>) -> Result<IdAnswer<I>, Error> {
    Ok(match *op {
        IdOp::Allocate => IdAnswer::Id(alloc.allocate_id()?),
        IdOp::AllocateAt(id) => IdAnswer::Id(alloc.allocate_id_at(id)?),
        IdOp::AllocateRun { count, alignment } => {
            IdAnswer::Run(alloc.allocate_ids(count, alignment)?)
        }
        IdOp::AllocateMany(count) => IdAnswer::Ids(alloc.allocate_many(count)?),
        IdOp::AllocateRunAt { first, count } => IdAnswer::Run(alloc.allocate_ids_at(first, count)?),
        IdOp::Free(id) => {
            alloc.free_id(id)?;
            IdAnswer::Freed
        }
        IdOp::FreeRun { first, last } => {
            alloc.free_ids(first..=last)?;
            IdAnswer::Freed
        }
        IdOp::IsAllocated(id) => IdAnswer::Allocated(alloc.is_allocated(id)),
    })
}

/// Runs `ops` on a fresh `IdAllocator::new(first, last)` and its [`IdModel`], comparing every
/// answer and, after each step, the allocated IDs, runs and counts. For other ID widths, see
/// [`run_id_ops_with`].
///
/// # Errors
///
/// The first [`Mismatch`] found.
pub fn run_id_ops(first: u32, last: u32, ops: &[IdOp]) -> Result<(), Mismatch> {
    run_id_ops_with(first, last, ops)
}

/// [`run_id_ops`] for an allocator of `I` IDs: `IdAllocator::<I>::with_range(first, last)`.
///
/// # Errors
///
/// The first [`Mismatch`] found.
pub fn run_id_ops_with<I: Id>(first: I, last: I, ops: &[IdOp<I>]) -> Result<(), Mismatch> {
    let (mut real, mut model) = match (
        IdAllocator::<I>::with_range(first, last),
        IdModel::<I>::new(first, last),
    ) {
        (Ok(r), Ok(m)) => (r, m),
        (Err(a), Err(b)) if a == b => return Ok(()),
        (a, b) => return Err(mismatch(0, format!("new: {a:?} vs {b:?}"))),
    };
    let size = last.to_u64() - first.to_u64() + 1;
    for (step, op) in ops.iter().enumerate() {
        let got = apply_id(&mut real, op);
        let want = model.apply(op);
        if got != want {
            return Err(mismatch(
                step,
                format!("{op:?}: got {got:?}, model {want:?}"),
            ));
        }
        if !real.iter().eq(model.allocated.iter().copied()) {
            return Err(mismatch(step, format!("allocated IDs differ after {op:?}")));
        }
        let used = model.allocated.len() as u64;
        if real.used() != used || real.available() != size - used {
            return Err(mismatch(step, format!("counts differ after {op:?}")));
        }
        let runs: Vec<IdRange<I>> = real.allocated_runs().collect();
        let ids: Vec<I> = runs
            .iter()
            .flat_map(|r| ids::<I>(r.start().to_u64(), r.end().to_u64()))
            .collect();
        let separate = runs
            .windows(2)
            .all(|w| w[0].end().to_u64() + 1 < w[1].start().to_u64());
        if !ids.iter().eq(model.allocated.iter()) || !separate {
            return Err(mismatch(
                step,
                format!("allocated runs wrong after {op:?}: {runs:?}"),
            ));
        }
        for r in real.never_allocated_runs() {
            if model.ever.range(r.clone()).next().is_some() {
                return Err(mismatch(
                    step,
                    format!("never-allocated run {r:?} is wrong"),
                ));
            }
        }
    }
    Ok(())
}

/// One operation on an [`AddressAllocator<u32>`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrOp {
    /// [`AddressAllocator::allocate_with`], or with an odd tag
    /// [`AddressAllocator::try_allocate_with`] (a refusal must give the tag back).
    Allocate {
        /// Requested size.
        size: u64,
        /// Requested alignment.
        alignment: u64,
        /// Placement policy.
        policy: AllocPolicy,
        /// Optional window `(start, end)`; an inverted pair makes the request fail to build.
        window: Option<(u64, u64)>,
        /// Owner tag.
        tag: u32,
    },
    /// [`AddressAllocator::reserve_with`] of `start..=end`, or with an odd tag
    /// [`AddressAllocator::try_reserve_with`] (a refusal must give the tag back).
    Reserve {
        /// First unit.
        start: u64,
        /// Last unit.
        end: u64,
        /// Owner tag.
        tag: u32,
    },
    /// [`AddressAllocator::free`] of the live allocation at this index (modulo their number)
    /// in address order; nothing if there is none.
    FreeNth(usize),
    /// [`AddressAllocator::free`] of an arbitrary range.
    FreeRange {
        /// First unit.
        start: u64,
        /// Last unit.
        end: u64,
    },
    /// [`AddressAllocator::release_containing`].
    Release(u64),
    /// [`AddressAllocator::relocate`] of the live allocation at this index (modulo their
    /// number) to a new size, alignment and policy.
    RelocateNth {
        /// Which allocation.
        index: usize,
        /// New size.
        size: u64,
        /// New alignment.
        alignment: u64,
        /// Placement policy.
        policy: AllocPolicy,
    },
    /// [`AddressAllocator::allocation_containing`].
    Lookup(u64),
    /// [`AddressAllocator::resize`] to `start..=end`.
    Resize {
        /// First unit of the new space.
        start: u64,
        /// Last unit of the new space.
        end: u64,
    },
}

/// The answer to an [`AddrOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrAnswer {
    /// A placed range.
    Placed(AddressRange),
    /// A reservation succeeded.
    Reserved,
    /// A free returned this tag.
    Freed(u32),
    /// A release returned this range and tag.
    Released(AddressRange, u32),
    /// A lookup found this (or nothing).
    Found(Option<(AddressRange, u32)>),
    /// A resize succeeded.
    Resized,
    /// The operation did not apply (no live allocation to pick).
    Skipped,
}

/// The naive model of an [`AddressAllocator<u32>`]: a sorted `Vec` of allocated ranges, with
/// free ranges derived by a walk and brute-force first and last fit.
#[derive(Clone, Debug)]
pub struct AddrModel {
    space: AddressRange,
    ranges: Vec<(AddressRange, u32)>,
}

impl AddrModel {
    /// A model of an allocator of `space`.
    #[must_use]
    pub fn new(space: AddressRange) -> Self {
        Self {
            space,
            ranges: Vec::new(),
        }
    }

    /// The allocations, sorted by address.
    #[must_use]
    pub fn ranges(&self) -> &[(AddressRange, u32)] {
        &self.ranges
    }

    /// The free ranges, sorted, computed from the allocations.
    #[must_use]
    pub fn free_ranges(&self) -> Vec<AddressRange> {
        let mut out = Vec::new();
        let mut next = u128::from(self.space.start());
        for (r, _) in &self.ranges {
            if u128::from(r.start()) > next {
                out.push(range128(next, u128::from(r.start()) - 1));
            }
            next = u128::from(r.end()) + 1;
        }
        if next <= u128::from(self.space.end()) {
            out.push(range128(next, u128::from(self.space.end())));
        }
        out
    }

    fn lowest_overlap(&self, range: &AddressRange) -> Option<usize> {
        self.ranges
            .iter()
            .position(|(r, _)| r.start() <= range.end() && range.start() <= r.end())
    }

    fn insert(&mut self, range: AddressRange, tag: u32) {
        let at = self
            .ranges
            .partition_point(|(r, _)| r.start() < range.start());
        self.ranges.insert(at, (range, tag));
    }

    fn request(
        size: u64,
        alignment: u64,
        policy: AllocPolicy,
        window: Option<(u64, u64)>,
    ) -> Result<Option<AddressRange>, Error> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if alignment == 0 || alignment & (alignment - 1) != 0 {
            return Err(Error::InvalidAlignment(alignment));
        }
        if let AllocPolicy::ExactMatch(address) = policy {
            if address % alignment != 0 {
                return Err(Error::UnalignedAddress { address, alignment });
            }
            if u128::from(address) + u128::from(size) - 1 > u128::from(u64::MAX) {
                return Err(Error::Overflow {
                    start: address,
                    size,
                });
            }
        }
        window
            .map(|(start, end)| {
                if start > end {
                    Err(Error::InvalidRange { start, end })
                } else {
                    Ok(range128(u128::from(start), u128::from(end)))
                }
            })
            .transpose()
    }

    /// Where the allocator must place a (validated) request, or why it cannot.
    fn place(
        &self,
        size: u64,
        alignment: u64,
        policy: AllocPolicy,
        window: Option<AddressRange>,
    ) -> Result<AddressRange, Error> {
        let window = window.unwrap_or(self.space);
        if window.start() < self.space.start() || window.end() > self.space.end() {
            return Err(Error::OutsideSpace {
                range: window,
                space: self.space,
            });
        }
        let (size, align) = (u128::from(size), u128::from(alignment));
        if let AllocPolicy::ExactMatch(addr) = policy {
            let range = range128(u128::from(addr), u128::from(addr) + size - 1);
            if range.start() < window.start() || range.end() > window.end() {
                return Err(Error::OutsideSpace {
                    range,
                    space: window,
                });
            }
            if let Some(i) = self.lowest_overlap(&range) {
                return Err(Error::Overlap {
                    requested: range,
                    existing: self.ranges[i].0,
                });
            }
            return Ok(range);
        }
        let mut candidates = Vec::new();
        for free in self.free_ranges() {
            let lo = u128::from(free.start().max(window.start()));
            let hi = u128::from(free.end().min(window.end()));
            if lo > hi {
                continue;
            }
            // Lowest and highest aligned starts inside [lo, hi] that leave room for `size`.
            let first = lo.div_ceil(align) * align;
            if first + size - 1 <= hi {
                let last = (hi + 1 - size) / align * align;
                candidates.push((first, last));
            }
        }
        let start = match policy {
            AllocPolicy::FirstMatch => candidates.first().map(|c| c.0),
            _ => candidates.last().map(|c| c.1),
        };
        start
            .map(|s| range128(s, s + size - 1))
            .ok_or(Error::OutOfSpace {
                size: u64::try_from(size).unwrap_or(u64::MAX),
                alignment,
            })
    }

    /// Applies `op` the naive way.
    ///
    /// # Errors
    ///
    /// The error the allocator must give.
    pub fn apply(&mut self, op: &AddrOp) -> Result<AddrAnswer, Error> {
        match *op {
            AddrOp::Resize { start, end } => {
                let space = AddressRange::new(start, end)?;
                if let Some(&(r, _)) = self.ranges.first()
                    && r.start() < start
                {
                    return Err(Error::OutsideSpace { range: r, space });
                }
                if let Some(&(r, _)) = self.ranges.last()
                    && r.end() > end
                {
                    return Err(Error::OutsideSpace { range: r, space });
                }
                self.space = space;
                Ok(AddrAnswer::Resized)
            }
            AddrOp::Allocate {
                size,
                alignment,
                policy,
                window,
                tag,
            } => {
                let window = Self::request(size, alignment, policy, window)?;
                let range = self.place(size, alignment, policy, window)?;
                self.insert(range, tag);
                Ok(AddrAnswer::Placed(range))
            }
            AddrOp::Reserve { start, end, tag } => {
                if start > end {
                    return Err(Error::InvalidRange { start, end });
                }
                let range = range128(u128::from(start), u128::from(end));
                if !self.space.contains_range(&range) {
                    return Err(Error::OutsideSpace {
                        range,
                        space: self.space,
                    });
                }
                if let Some(i) = self.lowest_overlap(&range) {
                    return Err(Error::Overlap {
                        requested: range,
                        existing: self.ranges[i].0,
                    });
                }
                self.insert(range, tag);
                Ok(AddrAnswer::Reserved)
            }
            AddrOp::FreeNth(n) => {
                if self.ranges.is_empty() {
                    return Ok(AddrAnswer::Skipped);
                }
                let (_, tag) = self.ranges.remove(n % self.ranges.len());
                Ok(AddrAnswer::Freed(tag))
            }
            AddrOp::FreeRange { start, end } => {
                if start > end {
                    return Err(Error::InvalidRange { start, end });
                }
                let range = range128(u128::from(start), u128::from(end));
                match self.lowest_overlap(&range) {
                    Some(i) if self.ranges[i].0 == range => {
                        Ok(AddrAnswer::Freed(self.ranges.remove(i).1))
                    }
                    Some(i) => Err(Error::NotExactAllocation {
                        requested: range,
                        existing: self.ranges[i].0,
                    }),
                    None => Err(Error::NotAllocated(range)),
                }
            }
            AddrOp::Release(addr) => {
                let i = self
                    .ranges
                    .iter()
                    .position(|(r, _)| r.contains(addr))
                    .ok_or(Error::AddressNotAllocated(addr))?;
                let (r, tag) = self.ranges.remove(i);
                Ok(AddrAnswer::Released(r, tag))
            }
            AddrOp::RelocateNth {
                index,
                size,
                alignment,
                policy,
            } => {
                Self::request(size, alignment, policy, None)?;
                if self.ranges.is_empty() {
                    return Ok(AddrAnswer::Skipped);
                }
                let i = index % self.ranges.len();
                let (old, tag) = self.ranges.remove(i);
                match self.place(size, alignment, policy, None) {
                    Ok(range) => {
                        self.insert(range, tag);
                        Ok(AddrAnswer::Placed(range))
                    }
                    Err(e) => {
                        self.ranges.insert(i, (old, tag));
                        Err(e)
                    }
                }
            }
            AddrOp::Lookup(addr) => Ok(AddrAnswer::Found(
                self.ranges.iter().find(|(r, _)| r.contains(addr)).copied(),
            )),
        }
    }
}

/// Builds a range from values the caller knows to be valid `u64` bounds in order.
fn range128(start: u128, end: u128) -> AddressRange {
    let start = u64::try_from(start).unwrap_or(u64::MAX);
    let end = u64::try_from(end).unwrap_or(u64::MAX);
    AddressRange::new(start, end).unwrap_or(AddressRange::FULL)
}

fn nth_range(alloc: &AddressAllocator<u32>, n: usize) -> Option<AddressRange> {
    let len = alloc.len();
    (len > 0).then(|| alloc.allocated().nth(n % len).map(|a| a.range))?
}

/// Applies `op` to `alloc` and returns its answer, as [`run_addr_ops`] does at each step.
///
/// # Errors
///
/// The error of the call `op` stands for (or of building its request or range).
pub fn apply_addr(alloc: &mut AddressAllocator<u32>, op: &AddrOp) -> Result<AddrAnswer, Error> {
    Ok(match *op {
        AddrOp::Allocate {
            size,
            alignment,
            policy,
            window,
            tag,
        } => {
            let mut req = Request::new(size, alignment, policy)?;
            if let Some((start, end)) = window {
                req = req.within(AddressRange::new(start, end)?);
            }
            AddrAnswer::Placed(if tag % 2 == 1 {
                alloc
                    .try_allocate_with(&req, tag)
                    .map_err(|refused| given_back(&refused, tag))?
            } else {
                alloc.allocate_with(&req, tag)?
            })
        }
        AddrOp::Reserve { start, end, tag } => {
            let range = AddressRange::new(start, end)?;
            if tag % 2 == 1 {
                alloc
                    .try_reserve_with(range, tag)
                    .map_err(|refused| given_back(&refused, tag))?;
            } else {
                alloc.reserve_with(range, tag)?;
            }
            AddrAnswer::Reserved
        }
        AddrOp::FreeNth(n) => match nth_range(alloc, n) {
            Some(r) => AddrAnswer::Freed(alloc.free(&r)?),
            None => AddrAnswer::Skipped,
        },
        AddrOp::FreeRange { start, end } => {
            AddrAnswer::Freed(alloc.free(&AddressRange::new(start, end)?)?)
        }
        AddrOp::Release(addr) => {
            let (r, tag) = alloc.release_containing(addr)?;
            AddrAnswer::Released(r, tag)
        }
        AddrOp::RelocateNth {
            index,
            size,
            alignment,
            policy,
        } => {
            let req = Request::new(size, alignment, policy)?;
            match nth_range(alloc, index) {
                Some(r) => AddrAnswer::Placed(alloc.relocate(&r, &req)?),
                None => AddrAnswer::Skipped,
            }
        }
        AddrOp::Lookup(addr) => {
            AddrAnswer::Found(alloc.allocation_containing(addr).map(|a| (a.range, *a.tag)))
        }
        AddrOp::Resize { start, end } => {
            alloc.resize(AddressRange::new(start, end)?)?;
            AddrAnswer::Resized
        }
    })
}

/// The error of a refusal that gave `tag` back; [`Error::Inconsistent`] (which no model
/// answers) if it gave back another tag.
pub fn given_back(refused: &Refused<u32>, tag: u32) -> Error {
    if *refused.tag() == tag {
        refused.error()
    } else {
        Error::Inconsistent("a refusal gave back another tag")
    }
}

/// Runs `ops` on a fresh `AddressAllocator::<u32>::new(space)` and its [`AddrModel`],
/// comparing every answer and, after each step, the allocations with their tags, the free
/// ranges, the counts and the allocator's own invariant check (no overlap, free and allocated
/// ranges tiling the space, adjacent free ranges merged).
///
/// # Errors
///
/// The first [`Mismatch`] found.
pub fn run_addr_ops(space: AddressRange, ops: &[AddrOp]) -> Result<(), Mismatch> {
    let mut real = AddressAllocator::<u32>::new(space);
    let mut model = AddrModel::new(space);
    for (step, op) in ops.iter().enumerate() {
        let got = apply_addr(&mut real, op);
        let want = model.apply(op);
        if got != want {
            return Err(mismatch(
                step,
                format!("{op:?}: got {got:?}, model {want:?}"),
            ));
        }
        check_addr(&real, &model).map_err(|d| mismatch(step, format!("after {op:?}: {d}")))?;
    }
    Ok(())
}

/// Compares an allocator with its model; the text says what differs.
///
/// # Errors
///
/// A description of the first difference or broken invariant.
pub fn check_addr(real: &AddressAllocator<u32>, model: &AddrModel) -> Result<(), String> {
    real.check_invariants().map_err(|e| format!("{e}"))?;
    let allocs: Vec<(AddressRange, u32)> = real.allocated().map(|a| (a.range, *a.tag)).collect();
    if allocs != model.ranges {
        return Err(format!("allocations {allocs:?}, model {:?}", model.ranges));
    }
    let frees: Vec<AddressRange> = real.free_ranges().collect();
    if frees != model.free_ranges() {
        return Err(format!(
            "free ranges {frees:?}, model {:?}",
            model.free_ranges()
        ));
    }
    let used: u128 = model.ranges.iter().map(|(r, _)| r.size_u128()).sum();
    if real.used() != used || real.available() != model.space.size_u128() - used {
        return Err(format!(
            "used {} available {}, model used {used}",
            real.used(),
            real.available()
        ));
    }
    if real.len() != model.ranges.len() {
        return Err(format!("len {}, model {}", real.len(), model.ranges.len()));
    }
    Ok(())
}
