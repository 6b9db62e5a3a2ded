//! [`AddressAllocator`]: address ranges (MMIO, PIO, hotplug slots) inside one address space.

mod held;
mod keymap;
mod room;
mod room_tree;
mod runs;
mod set;
mod tree;

use alloc::vec::Vec;
use core::fmt;

pub(crate) use self::held::HeldRuns;
use self::room::{RoomBounds, Where};
pub use self::room_tree::RoomTree;
pub(crate) use self::runs::RunSet;
pub use self::set::AllocatorSet;
use self::tree::{MAX_NODES, NIL, Search, Tree};

/// Nodes of the AVL arenas (the address index, the ID runs) read on this thread so far, for
/// tests that bound the work of a search.
#[cfg(test)]
pub(crate) fn nodes_read() -> usize {
    Tree::nodes_read()
}
use crate::debug::List;
use crate::error::{Error, Refused, Result};
use crate::range::AddressRange;

/// Where [`AddressAllocator::allocate`] places a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AllocPolicy {
    /// The lowest aligned address where the range fits.
    #[default]
    FirstMatch,
    /// The highest aligned address where the range fits.
    LastMatch,
    /// Exactly at this address, which must have the requested alignment.
    ExactMatch(u64),
}

/// A validated allocation request: size, alignment, policy and an optional window.
///
/// ```
/// use memvisor_resources::{AllocPolicy, Error, AddressRange, Request};
///
/// let below_4g = AddressRange::new(0, 0xffff_ffff)?;
/// let req = Request::new(0x1000, 0x1000, AllocPolicy::LastMatch)?.within(below_4g);
/// assert_eq!(req.window(), Some(below_4g));
/// assert_eq!(
///     Request::new(0x1000, 3, AllocPolicy::FirstMatch),
///     Err(Error::InvalidAlignment(3))
/// );
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    size: u64,
    alignment: u64,
    policy: AllocPolicy,
    window: Option<AddressRange>,
}

impl Request {
    /// Creates a request for `size` units aligned to `alignment`, placed by `policy`.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] if `size` is 0, [`Error::InvalidAlignment`] if `alignment` is not a
    /// power of two, and for [`AllocPolicy::ExactMatch`]: [`Error::UnalignedAddress`] if the
    /// address is not a multiple of `alignment`, [`Error::Overflow`] if the range would go
    /// past `u64::MAX`.
    pub fn new(size: u64, alignment: u64, policy: AllocPolicy) -> Result<Self> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment(alignment));
        }
        if let AllocPolicy::ExactMatch(address) = policy {
            if address & (alignment - 1) != 0 {
                return Err(Error::UnalignedAddress { address, alignment });
            }
            AddressRange::from_start_and_size(address, size)?;
        }
        Ok(Self {
            size,
            alignment,
            policy,
            window: None,
        })
    }

    /// Restricts the placement to `window` (inclusive), which must lie inside the allocator's
    /// space when the request is used.
    #[must_use]
    pub fn within(mut self, window: AddressRange) -> Self {
        self.window = Some(window);
        self
    }

    /// The requested size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The requested alignment.
    #[must_use]
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The placement policy.
    #[must_use]
    pub fn policy(&self) -> AllocPolicy {
        self.policy
    }

    /// The window, if one was set.
    #[must_use]
    pub fn window(&self) -> Option<AddressRange> {
        self.window
    }
}

/// One live allocation, as listed by [`AddressAllocator::allocated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation<'a, T> {
    /// The allocated range.
    pub range: AddressRange,
    /// The owner tag given when it was allocated.
    pub tag: &'a T,
}

/// Hands out ranges of a `u64` address space: first fit, last fit or an exact address, with
/// any power-of-two alignment, optionally inside a window.
///
/// Each allocation carries an owner tag of type `T` (`()` by default), found again by address
/// or by tag. Allocation, free and lookup take O(log n) for n live ranges, whatever the
/// fragmentation (see the crate's DESIGN.md for the two cases that can add steps: free ranges
/// long enough but unusable at the alignment or in the window asked, and, for requests above
/// 2^24 units, free ranges shorter than the request by less than one part in 2^23).
/// The space may be the whole 64-bit space and ranges may end at `u64::MAX`.
///
/// ```
/// use memvisor_resources::{AddressAllocator, AllocPolicy, AddressRange};
///
/// let mut mmio = AddressAllocator::<u32>::new(AddressRange::new(0xd000_0000, 0xfebf_ffff)?);
/// let req = memvisor_resources::Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch)?;
/// let a = mmio.allocate_with(&req, 7)?;
/// assert_eq!(a, AddressRange::new(0xd000_0000, 0xd000_0fff)?);
/// assert_eq!(mmio.allocation_containing(0xd000_0800).map(|x| *x.tag), Some(7));
/// assert_eq!(mmio.free(&a)?, 7);
/// # Ok::<(), memvisor_resources::Error>(())
/// ```
#[derive(Clone)]
pub struct AddressAllocator<T = ()> {
    space: AddressRange,
    tree: Tree,
    /// Tag of each node, at the node's arena index.
    tags: Vec<T>,
    /// Free units after the last allocation (meaningless while there is none).
    tail: u64,
    used: u128,
    /// What is known of the largest aligned request each free range can hold (see `room.rs`).
    room: RoomBounds,
}

impl<T> AddressAllocator<T> {
    /// Creates an allocator of `space`, all free.
    #[must_use]
    pub fn new(space: AddressRange) -> Self {
        Self {
            space,
            tree: Tree::new(),
            tags: Vec::new(),
            tail: 0,
            used: 0,
            room: RoomBounds::new(space),
        }
    }

    /// The managed space.
    #[must_use]
    pub fn space(&self) -> AddressRange {
        self.space
    }

    /// The number of live allocations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether nothing is allocated.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Allocated units. A `u128` because the whole 64-bit space holds 2^64 units.
    #[must_use]
    pub fn used(&self) -> u128 {
        self.used
    }

    /// Free units.
    #[must_use]
    pub fn available(&self) -> u128 {
        self.space.size_u128() - self.used
    }

    /// Heap bytes held by the index and the tags (capacity included).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.tree.capacity_bytes() + self.tags.capacity() * core::mem::size_of::<T>()
    }

    /// Returns spare capacity to the heap (after many frees, say). Capacity grows by an eighth
    /// at a time, so without this call the allocator keeps room for its peak number of ranges.
    pub fn shrink_to_fit(&mut self) {
        self.tree.shrink_to_fit();
        self.tags.shrink_to_fit();
    }

    /// Changes the managed space to `space` (growing or shrinking either end, say when memory
    /// hotplug extends a window), keeping every live allocation. O(log n).
    ///
    /// # Errors
    ///
    /// [`Error::OutsideSpace`] if a live allocation would fall outside `space`: the lowest
    /// allocation if it starts below `space`, otherwise the highest. The allocator is unchanged
    /// on error.
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Error};
    ///
    /// let mut hotplug = AddressAllocator::with_base_and_size(0x1_0000_0000, 0x4000_0000)?;
    /// let dimm = hotplug.allocate(0x4000_0000, 0x1000, AllocPolicy::FirstMatch)?;
    /// assert!(hotplug.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch).is_err());
    /// // Grow the window by 1 GiB at the top.
    /// hotplug.resize(AddressRange::from_start_and_size(0x1_0000_0000, 0x8000_0000)?)?;
    /// assert_eq!(hotplug.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch)?.start(), 0x1_4000_0000);
    /// // Shrinking below a live range is refused.
    /// let small = AddressRange::from_start_and_size(0x1_0000_0000, 0x1000)?;
    /// assert_eq!(
    ///     hotplug.resize(small),
    ///     Err(Error::OutsideSpace { range: AddressRange::new(0x1_4000_0000, 0x1_4000_0fff)?, space: small })
    /// );
    /// # let _ = dimm;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn resize(&mut self, space: AddressRange) -> Result<()> {
        let mut nodes = self.tree.iter();
        let (Some(first), last_end) = (nodes.next(), self.space.end() - self.tail) else {
            self.space = space;
            self.room = RoomBounds::new(space);
            return Ok(());
        };
        let first_start = self.tree.node(first).start;
        if first_start < space.start() {
            let range = self.range_of(first, self.tree.successor(first));
            return Err(Error::OutsideSpace { range, space });
        }
        if last_end > space.end() {
            let last = self.tree.around(last_end).pred;
            let range = self.range_of(last, NIL);
            return Err(Error::OutsideSpace { range, space });
        }
        self.tree
            .update_gap(first_start, first_start - space.start());
        self.tail = space.end() - last_end;
        self.space = space;
        if first_start > space.start() {
            self.room
                .add_free(AddressRange::new(space.start(), first_start - 1)?);
        }
        if last_end < space.end() {
            self.room
                .add_free(AddressRange::new(last_end + 1, space.end())?);
        }
        Ok(())
    }

    /// Allocates a range as `request` says and tags it with `tag`.
    ///
    /// Placement: [`FirstMatch`](AllocPolicy::FirstMatch) picks the lowest aligned address
    /// where the range fits in free space (and in the window),
    /// [`LastMatch`](AllocPolicy::LastMatch) the highest, and
    /// [`ExactMatch`](AllocPolicy::ExactMatch) exactly the given address.
    ///
    /// On refusal `tag` is dropped; [`try_allocate_with`](Self::try_allocate_with) places the
    /// same way and gives it back.
    ///
    /// # Errors
    ///
    /// Those of [`try_allocate_with`](Self::try_allocate_with). The allocator is unchanged on
    /// error.
    pub fn allocate_with(&mut self, request: &Request, tag: T) -> Result<AddressRange> {
        self.try_allocate_with(request, tag).map_err(Error::from)
    }

    /// Allocates a range as [`allocate_with`](Self::allocate_with) does; on refusal, gives
    /// `tag` back with the error.
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::OutsideSpace`] if the window (or the
    /// exact range) is not inside the space (or the window), [`Error::Overlap`] if an exact
    /// range overlaps a live allocation, [`Error::OutOfSpace`] if no free range fits,
    /// [`Error::TooManyAllocations`] at 2^32 - 1 live ranges, [`Error::HeapRefused`] if the
    /// index must grow and the heap refuses it. The allocator is unchanged on error.
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AddressRange, AllocPolicy, Error, Request};
    /// use std::sync::Arc;
    ///
    /// let mut mmio = AddressAllocator::<Arc<str>>::new(AddressRange::new(0x1000, 0x1fff)?);
    /// let dev: Arc<str> = Arc::from("virtio-blk");
    /// let big = Request::new(0x2000, 0x1000, AllocPolicy::FirstMatch)?;
    /// let refused = mmio.try_allocate_with(&big, Arc::clone(&dev)).unwrap_err();
    /// assert_eq!(refused.error(), Error::OutOfSpace { size: 0x2000, alignment: 0x1000 });
    /// // The tag comes back: the same `Arc`, not a copy.
    /// let dev = refused.into_tag();
    /// assert_eq!(Arc::strong_count(&dev), 2);
    /// let page = Request::new(0x1000, 0x1000, AllocPolicy::FirstMatch)?;
    /// assert_eq!(mmio.try_allocate_with(&page, dev)?.start(), 0x1000);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_allocate_with(
        &mut self,
        request: &Request,
        tag: T,
    ) -> core::result::Result<AddressRange, Refused<T>> {
        match self.prepare_allocate(request) {
            Ok((range, host)) => Ok(self.commit(range, host, tag)),
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Everything [`allocate_with`](Self::allocate_with) does but the commit: the range, the
    /// node whose gap holds it, and room made for one more range.
    fn prepare_allocate(&mut self, request: &Request) -> Result<(AddressRange, u32)> {
        self.check_room()?;
        let (addr, host) = self.place(request)?;
        let range = AddressRange::from_start_and_size(addr, request.size)?;
        self.make_room()?;
        Ok((range, host))
    }

    /// Reserves exactly `range` (for example a hole the guest must not see) with `tag`.
    ///
    /// On refusal `tag` is dropped; [`try_reserve_with`](Self::try_reserve_with) gives it back.
    ///
    /// # Errors
    ///
    /// Those of [`try_reserve_with`](Self::try_reserve_with). The allocator is unchanged on
    /// error.
    pub fn reserve_with(&mut self, range: AddressRange, tag: T) -> Result<()> {
        self.try_reserve_with(range, tag).map_err(Error::from)
    }

    /// Reserves exactly `range` with `tag`, as [`reserve_with`](Self::reserve_with) does; on
    /// refusal, gives `tag` back with the error.
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::OutsideSpace`] if `range` is not
    /// inside the space, [`Error::Overlap`] if it overlaps a live allocation,
    /// [`Error::TooManyAllocations`] at 2^32 - 1 live ranges, [`Error::HeapRefused`] if the
    /// index must grow and the heap refuses it. The allocator is unchanged on error.
    pub fn try_reserve_with(
        &mut self,
        range: AddressRange,
        tag: T,
    ) -> core::result::Result<(), Refused<T>> {
        match self.prepare_reserve(range) {
            Ok(host) => {
                self.commit(range, host, tag);
                Ok(())
            }
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Everything [`reserve_with`](Self::reserve_with) does but the commit: the node whose gap
    /// holds `range`, and room made for one more range.
    fn prepare_reserve(&mut self, range: AddressRange) -> Result<u32> {
        self.check_room()?;
        if !self.space.contains_range(&range) {
            return Err(Error::OutsideSpace {
                range,
                space: self.space,
            });
        }
        let host = self.free_host(range)?;
        self.make_room()?;
        Ok(host)
    }

    /// Frees the allocation that is exactly `range` and returns its tag.
    ///
    /// # Errors
    ///
    /// [`Error::NotExactAllocation`] if `range` overlaps a live allocation without being
    /// exactly it (the lowest such allocation is reported), [`Error::NotAllocated`] if it
    /// overlaps none. The allocator is unchanged on error.
    pub fn free(&mut self, range: &AddressRange) -> Result<T> {
        let (node, succ) = self.exact(range)?;
        Ok(self.remove(node, succ))
    }

    /// Frees the allocation that contains `addr` and returns its range and tag.
    ///
    /// # Errors
    ///
    /// [`Error::AddressNotAllocated`] if no allocation contains `addr`.
    pub fn release_containing(&mut self, addr: u64) -> Result<(AddressRange, T)> {
        let (node, succ, range) = self
            .containing(addr)
            .ok_or(Error::AddressNotAllocated(addr))?;
        Ok((range, self.remove(node, succ)))
    }

    /// Moves the allocation that is exactly `old` to a place chosen by `request`, keeping its
    /// tag. The old range counts as free while the new one is placed, so the new range may
    /// overlap it. If no place is found, the old allocation stays where it was.
    ///
    /// # Errors
    ///
    /// Those of [`free`](Self::free) for `old`, then those of
    /// [`allocate_with`](Self::allocate_with) for `request`. The allocator is unchanged on
    /// error.
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AllocPolicy, AddressRange, Request};
    ///
    /// let mut a = AddressAllocator::<()>::with_base_and_size(0, 0x10000)?;
    /// let bar = a.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch)?;
    /// let moved = a.relocate(&bar, &Request::new(0x2000, 0x1000, AllocPolicy::LastMatch)?)?;
    /// assert_eq!(moved, AddressRange::new(0xe000, 0xffff)?);
    /// assert_eq!(a.len(), 1);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn relocate(&mut self, old: &AddressRange, request: &Request) -> Result<AddressRange> {
        let (node, succ) = self.exact(old)?;
        let tag = self.remove(node, succ);
        match self.place(request) {
            Ok((addr, host)) => {
                let range = AddressRange::from_start_and_size(addr, request.size)?;
                Ok(self.commit(range, host, tag))
            }
            Err(e) => {
                // The old range is free again (it was just released), so this puts everything
                // back as it was; the removal left a free slot, so nothing is allocated.
                let host = self.tree.around(old.start()).succ;
                self.commit(*old, host, tag);
                Err(e)
            }
        }
    }

    /// The allocation that contains `addr`, if any.
    #[must_use]
    pub fn allocation_containing(&self, addr: u64) -> Option<Allocation<'_, T>> {
        self.containing(addr).map(|(node, _, range)| Allocation {
            range,
            tag: &self.tags[node as usize],
        })
    }

    /// The ranges allocated with a tag equal to `tag`, in address order (a scan: O(n)).
    pub fn find_tagged<'a>(&'a self, tag: &'a T) -> impl Iterator<Item = AddressRange> + 'a
    where
        T: PartialEq,
    {
        self.allocated()
            .filter(move |a| a.tag == tag)
            .map(|a| a.range)
    }

    /// The live allocations in address order.
    #[must_use]
    pub fn allocated(&self) -> Allocations<'_, T> {
        let mut nodes = self.tree.iter();
        let next = nodes.next();
        Allocations {
            alloc: self,
            nodes,
            next,
        }
    }

    /// The free ranges in address order (adjacent free units always form one range).
    #[must_use]
    pub fn free_ranges(&self) -> FreeRanges<'_, T> {
        FreeRanges {
            alloc: self,
            nodes: self.tree.iter(),
            done: false,
        }
    }

    /// Checks every internal invariant: tree order and balance data, gaps matching the
    /// allocations, no overlap, counts. O(n); meant for tests and debugging.
    ///
    /// # Errors
    ///
    /// [`Error::Inconsistent`] naming the first broken invariant.
    pub fn check_invariants(&self) -> Result<()> {
        self.tree.check().map_err(Error::Inconsistent)?;
        if self.tags.len() != self.tree.len() {
            return Err(Error::Inconsistent("tag count differs from node count"));
        }
        let mut covered = 0u128;
        let mut used = 0u128;
        let mut expect = Some(self.space.start());
        let mut last_free = false;
        let mut pieces = 0usize;
        let mut allocs = self.allocated().peekable();
        let mut frees = self.free_ranges().peekable();
        // Walk both lists in address order: together they must tile the space exactly.
        loop {
            let (range, free) = match (allocs.peek(), frees.peek()) {
                (Some(a), Some(f)) if a.range.start() < f.start() => {
                    (allocs.next().map(|a| a.range), false)
                }
                (Some(_), Some(_)) | (None, Some(_)) => (frees.next(), true),
                (Some(_), None) => (allocs.next().map(|a| a.range), false),
                (None, None) => break,
            };
            let Some(range) = range else { break };
            if Some(range.start()) != expect {
                return Err(Error::Inconsistent("ranges do not tile the space"));
            }
            if free && last_free && pieces > 0 {
                return Err(Error::Inconsistent("two free ranges are adjacent"));
            }
            last_free = free;
            pieces += 1;
            covered += range.size_u128();
            if !free {
                used += range.size_u128();
            }
            expect = range.end().checked_add(1);
        }
        if covered != self.space.size_u128() || expect != self.space.end().checked_add(1) {
            return Err(Error::Inconsistent("ranges do not cover the space"));
        }
        if used != self.used {
            return Err(Error::Inconsistent("used count is wrong"));
        }
        for free in self.free_ranges() {
            if !self.room.covers(free) {
                return Err(Error::Inconsistent(
                    "a free range has more room than its bound",
                ));
            }
        }
        let largest = self.free_ranges().map(|f| f.size_u128()).max().unwrap_or(0);
        if self.largest_free() != largest {
            return Err(Error::Inconsistent("the largest free range is misreported"));
        }
        if u128::from(self.largest_free_bound()) < largest.min(u128::from(u64::MAX)) {
            return Err(Error::Inconsistent(
                "the largest free range is above its bound",
            ));
        }
        Ok(())
    }

    /// Levels of the index tree (0 when empty). The tree is balanced, so this is at most
    /// `1.44 * log2(len + 2)` whatever the addresses. O(n); a test hook.
    #[cfg(feature = "model")]
    #[must_use]
    pub fn index_height(&self) -> usize {
        self.tree.height()
    }

    /// Tree nodes visited by inserts and removes since the allocator was made (or loaded): a
    /// count of work that tests can bound without timing anything. A test hook.
    #[cfg(feature = "model")]
    #[must_use]
    pub fn index_work(&self) -> u64 {
        self.tree.work()
    }

    /// Builds an allocator of `space` holding `allocations`, which must be sorted by address,
    /// disjoint and inside `space`: O(n), the index built balanced in one pass.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideSpace`] for a range outside `space`, [`Error::Inconsistent`] if the
    /// ranges are not sorted or overlap, [`Error::TooManyAllocations`] past 2^32 - 1 ranges
    /// (as many as allocating can reach), [`Error::HeapRefused`] if the heap refuses the index
    /// or the tags.
    #[cfg(feature = "serde")]
    pub(crate) fn from_sorted(
        space: AddressRange,
        allocations: Vec<(AddressRange, T)>,
    ) -> Result<Self> {
        check_count(allocations.len())?;
        let mut prev: Option<AddressRange> = None;
        let mut used = 0u128;
        for (range, _) in &allocations {
            if !space.contains_range(range) {
                return Err(Error::OutsideSpace {
                    range: *range,
                    space,
                });
            }
            if prev.is_some_and(|p| range.start() <= p.end()) {
                return Err(Error::Inconsistent("allocations are not sorted or overlap"));
            }
            prev = Some(*range);
            used += range.size_u128();
        }
        let mut this = Self::new(space);
        // Each gap runs from the unit after the previous range (or the space start) to the
        // range's start; the order checked above keeps every subtraction in bounds.
        let mut next_free = Some(space.start());
        let items = allocations.iter().map(|(range, _)| {
            let gap = next_free.map_or(0, |f| range.start() - f);
            next_free = range.end().checked_add(1);
            (range.start(), gap)
        });
        this.tree.build(items)?;
        this.tail = match prev {
            Some(last) => space.end() - last.end(),
            None => 0,
        };
        this.used = used;
        // Into a vector of exactly `n` tags: `collect` would reuse the buffer of `allocations`
        // (grown by doubling while the list was decoded), holding up to twice the list's bytes.
        this.tags = Vec::new();
        this.tags
            .try_reserve_exact(allocations.len())
            .map_err(|_| tree::heap_refused::<T>(allocations.len()))?;
        this.tags
            .extend(allocations.into_iter().map(|(_, tag)| tag));
        Ok(this)
    }

    /// An upper bound on the size of the largest free range, in O(1): no request larger than
    /// it fits (one no larger may still find no room at its alignment). Exact below 2^24 units
    /// and above that rounded up by less than one part in 2^23 (the index keeps its bounds in
    /// 24 bits); `u64::MAX` for a whole 64-bit space that is all free (2^64 units). A caller
    /// that keeps many allocators can skip, with it, the ones too full for a request.
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AddressRange};
    ///
    /// let mut a = AddressAllocator::<()>::new(AddressRange::new(0, 0xfff)?);
    /// assert_eq!(a.largest_free_bound(), 0x1000);
    /// a.reserve(AddressRange::new(0x100, 0x1ff)?)?;
    /// assert_eq!(a.largest_free_bound(), 0xe00);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    #[must_use]
    pub fn largest_free_bound(&self) -> u64 {
        if self.tree.is_empty() {
            return self.space.size().unwrap_or(u64::MAX);
        }
        self.tree.largest_gap_bound().max(self.tail)
    }

    /// The size of the largest free range (0 when all is allocated; 2^64 for a whole 64-bit
    /// space that is all free): the largest of [`free_ranges`](Self::free_ranges), found
    /// through the index's largest-gap bounds instead of by walking them. O(log n) when free
    /// ranges are below 2^24 units; above that, each free range whose size rounds to the same
    /// 24-bit bound as the largest's may add a path of the index (at worst, every free range is
    /// looked at: O(n)).
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AddressRange};
    ///
    /// let mut a = AddressAllocator::<()>::new(AddressRange::new(0, 0xffff)?);
    /// a.reserve(AddressRange::new(0x1000, 0x1fff)?)?;
    /// a.reserve(AddressRange::new(0x8000, 0x8fff)?)?;
    /// assert_eq!(a.largest_free(), 0x7000);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    #[must_use]
    pub fn largest_free(&self) -> u128 {
        if self.tree.is_empty() {
            return self.space.size_u128();
        }
        u128::from(self.tree.largest_gap().max(self.tail))
    }

    /// Whether one more range fits.
    fn check_room(&self) -> Result<()> {
        check_count(self.tree.len().saturating_add(1))
    }

    /// Makes room for one more range in the index and the tags, so that
    /// [`commit`](Self::commit) allocates nothing. Both grow by an eighth (at least 16
    /// entries) at a time.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`] if the heap refuses; the allocator is unchanged then (only its
    /// spare capacity may have grown).
    fn make_room(&mut self) -> Result<()> {
        self.tree.try_reserve(1)?;
        let (len, cap) = (self.tags.len(), self.tags.capacity());
        if len == cap {
            let extra = (len / 8).max(16);
            self.tags
                .try_reserve_exact(extra)
                .map_err(|_| tree::heap_refused::<T>(extra))?;
        }
        Ok(())
    }

    /// The end of the allocation whose successor is `succ` (`NIL`: the last allocation).
    fn end_before(&self, succ: u32) -> u64 {
        if succ == NIL {
            self.space.end() - self.tail
        } else {
            let n = self.tree.node(succ);
            n.start - n.gap - 1
        }
    }

    fn range_of(&self, node: u32, succ: u32) -> AddressRange {
        AddressRange::new(self.tree.node(node).start, self.end_before(succ)).unwrap_or(self.space)
    }

    /// The free range in front of `succ` (`NIL`: the free tail), if not empty.
    fn gap_before(&self, succ: u32) -> Option<AddressRange> {
        if succ == NIL {
            if self.tree.is_empty() {
                return Some(self.space);
            }
            if self.tail == 0 {
                return None;
            }
            AddressRange::new(self.space.end() - self.tail + 1, self.space.end()).ok()
        } else {
            let n = self.tree.node(succ);
            if n.gap == 0 {
                return None;
            }
            AddressRange::new(n.start - n.gap, n.start - 1).ok()
        }
    }

    /// The allocation containing `addr`: node, successor and range.
    fn containing(&self, addr: u64) -> Option<(u32, u32, AddressRange)> {
        let around = self.tree.around(addr);
        if around.pred == NIL {
            return None;
        }
        let range = self.range_of(around.pred, around.succ);
        range
            .contains(addr)
            .then_some((around.pred, around.succ, range))
    }

    /// The node that is exactly `range` and its successor.
    fn exact(&self, range: &AddressRange) -> Result<(u32, u32)> {
        if let Some((node, succ, found)) = self.containing(range.start()) {
            if found == *range {
                return Ok((node, succ));
            }
            return Err(Error::NotExactAllocation {
                requested: *range,
                existing: found,
            });
        }
        match self.first_overlap(range) {
            Some(existing) => Err(Error::NotExactAllocation {
                requested: *range,
                existing,
            }),
            None => Err(Error::NotAllocated(*range)),
        }
    }

    /// The lowest allocation that overlaps `range`, given that none contains its start.
    fn first_overlap(&self, range: &AddressRange) -> Option<AddressRange> {
        let succ = self.tree.around(range.start()).succ;
        if succ == NIL || self.tree.node(succ).start > range.end() {
            return None;
        }
        Some(self.range_of(succ, self.tree.successor(succ)))
    }

    /// Checks that `range` is free; returns the node whose gap holds it (`NIL`: the tail).
    fn free_host(&self, range: AddressRange) -> Result<u32> {
        if let Some((_, _, existing)) = self.containing(range.start()) {
            return Err(Error::Overlap {
                requested: range,
                existing,
            });
        }
        if let Some(existing) = self.first_overlap(&range) {
            return Err(Error::Overlap {
                requested: range,
                existing,
            });
        }
        Ok(self.tree.around(range.start()).succ)
    }

    /// Finds a place for `request`: the address and the node whose gap holds it. When a first or
    /// last fit over the whole space finds nothing, records what that proves about the room of
    /// the free ranges (which changes no later answer, only how fast it comes).
    fn place(&mut self, request: &Request) -> Result<(u64, u32)> {
        let (found, learned) = self.search(request);
        let whole = request.window.is_none_or(|w| w == self.space);
        if let Err(Error::OutOfSpace { size, alignment }) = found
            && whole
        {
            let k = alignment.trailing_zeros();
            match learned {
                Learned::Nothing => {}
                Learned::AtMost(most) => self.room.found_none_anywhere(k, most),
                Learned::Below => self.room.found_none_inside(k, size),
            }
        }
        found
    }

    /// Finds a place for `request`, and says what a failed search proves.
    fn search(&self, request: &Request) -> (Result<(u64, u32)>, Learned) {
        let window = request.window.unwrap_or(self.space);
        if !self.space.contains_range(&window) {
            let e = Error::OutsideSpace {
                range: window,
                space: self.space,
            };
            return (Err(e), Learned::Nothing);
        }
        let (size, align) = (request.size, request.alignment);
        let rev = match request.policy {
            AllocPolicy::ExactMatch(addr) => {
                let exact = AddressRange::from_start_and_size(addr, size).and_then(|range| {
                    if !window.contains_range(&range) {
                        return Err(Error::OutsideSpace {
                            range,
                            space: window,
                        });
                    }
                    Ok((addr, self.free_host(range)?))
                });
                return (exact, Learned::Nothing);
            }
            AllocPolicy::FirstMatch => false,
            AllocPolicy::LastMatch => true,
        };
        let out = Err(Error::OutOfSpace {
            size,
            alignment: align,
        });
        match self.room.lookup(size, align.trailing_zeros()) {
            Where::Anywhere => match self.search_in(window, size, align, rev) {
                Ok(hit) => (Ok(hit), Learned::Nothing),
                Err(most) => (out, Learned::AtMost(most)),
            },
            Where::Inside(ranges) => {
                // Every free range that could hold the request lies inside one of `ranges`, so
                // the best fit among them is the best fit of all.
                let mut best: Option<(u64, u32)> = None;
                for w in ranges.into_iter().flatten() {
                    let Some(w) = w.intersection(&window) else {
                        continue;
                    };
                    if let Ok(hit) = self.search_in(w, size, align, rev)
                        && best.is_none_or(|b| if rev { hit.0 > b.0 } else { hit.0 < b.0 })
                    {
                        best = Some(hit);
                    }
                }
                match best {
                    Some(hit) => (Ok(hit), Learned::Nothing),
                    None => (out, Learned::Below),
                }
            }
        }
    }

    /// The first (or, with `rev`, last) fit of `size` units aligned to `align` in `window` (inside
    /// the space): the address and the node whose gap holds it. If there is none: an upper
    /// bound on the aligned room of every gap seen or skipped (with `window` the whole space,
    /// of every free range).
    fn search_in(
        &self,
        window: AddressRange,
        size: u64,
        align: u64,
        rev: bool,
    ) -> core::result::Result<(u64, u32), u64> {
        let k = align.trailing_zeros() as usize;
        let seen = |gap: AddressRange, most: &mut u64| {
            if let Some(room) = room::aligned_room(gap).nth(k) {
                *most = (*most).max(room);
            }
            fit_in(gap, window, size, align, rev)
        };
        let mut most = 0u64;
        let tail = self.gap_before(NIL);
        if rev && let Some(addr) = tail.and_then(|g| seen(g, &mut most)) {
            return Ok((addr, NIL));
        }
        let mut probe = |n: &tree::Node| {
            let here = if n.gap == 0 {
                None
            } else {
                AddressRange::new(n.start - n.gap, n.start - 1)
                    .ok()
                    .and_then(|g| seen(g, &mut most))
            };
            Search {
                here,
                // Gaps of lower nodes end before this node's gap begins; gaps of higher nodes
                // begin after this node's start.
                left: n.start - n.gap > window.start(),
                right: n.start < window.end(),
            }
        };
        let mut skipped = 0;
        if let Some((node, addr)) = self.tree.find(size, rev, &mut probe, &mut skipped) {
            return Ok((addr, node));
        }
        if !rev && let Some(addr) = tail.and_then(|g| seen(g, &mut most)) {
            return Ok((addr, NIL));
        }
        Err(most.max(skipped))
    }

    /// Records `range` (free, inside the gap in front of `host`) as allocated with `tag`. The
    /// caller has made room for it ([`make_room`](Self::make_room)), so nothing is allocated.
    fn commit(&mut self, range: AddressRange, host: u32, tag: T) -> AddressRange {
        let region_start = match self.gap_before(host) {
            Some(g) => g.start(),
            None => range.start(),
        };
        let gap = range.start() - region_start;
        if host == NIL {
            self.tail = self.space.end() - range.end();
        } else {
            let h = self.tree.node(host);
            self.tree.set_gap(host, h.start - range.end() - 1);
        }
        debug_assert!(self.tags.len() < self.tags.capacity(), "room not reserved");
        self.tree.insert(range.start(), gap);
        self.tags.push(tag);
        self.used += range.size_u128();
        range
    }

    /// Frees `node` (whose successor is `succ`) and returns its tag.
    fn remove(&mut self, node: u32, succ: u32) -> T {
        let n = self.tree.node(node);
        let range = self.range_of(node, succ);
        let region_start = n.start - n.gap;
        // The free range this removal leaves: from `region_start` to the successor's start (or
        // the end of the space).
        let region_end = if succ == NIL {
            self.space.end()
        } else {
            self.tree.node(succ).start - 1
        };
        if let Ok(region) = AddressRange::new(region_start, region_end) {
            self.room.add_free(region);
        }
        let mut succ_gap = None;
        if succ != NIL {
            let s = self.tree.node(succ);
            succ_gap = Some((s.start, s.start - region_start));
        } else if self.tree.len() > 1 {
            // Another allocation lies below, so `region_start` is above the space's start.
            self.tail = self.space.end() - (region_start - 1);
        } else {
            self.tail = 0;
        }
        self.used -= range.size_u128();
        let slot = self.tree.remove(n.start, succ_gap);
        self.tags.swap_remove(slot as usize)
    }
}

impl AddressAllocator {
    /// Creates an untagged allocator of `size` units starting at `base`: what vm-allocator's
    /// `AddressAllocator::new(base, size)` makes. Code ported from vm-allocator calls this
    /// instead of `new`, which here takes an [`AddressRange`]. (For tagged ranges:
    /// `AddressAllocator::<T>::new(AddressRange::from_start_and_size(base, size)?)`.)
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] if `size` is 0, [`Error::Overflow`] if the space would go past
    /// `u64::MAX`.
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AllocPolicy};
    ///
    /// let mut pool = AddressAllocator::with_base_and_size(0x1000, 0x10000)?;
    /// let r = pool.allocate(0x100, 0x100, AllocPolicy::FirstMatch)?;
    /// assert_eq!((r.start(), r.end()), (0x1000, 0x10ff));
    /// pool.free(&r)?;
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn with_base_and_size(base: u64, size: u64) -> Result<Self> {
        Ok(Self::new(AddressRange::from_start_and_size(base, size)?))
    }
}

impl<T: Default> AddressAllocator<T> {
    /// Allocates `size` units aligned to `alignment`, placed by `policy`, with the default tag.
    ///
    /// # Errors
    ///
    /// Those of [`Request::new`] and [`allocate_with`](Self::allocate_with).
    ///
    /// ```
    /// use memvisor_resources::{AddressAllocator, AllocPolicy, AddressRange};
    ///
    /// let mut a = AddressAllocator::<()>::new(AddressRange::FULL);
    /// let top = a.allocate(0x1000, 0x1000, AllocPolicy::LastMatch)?;
    /// assert_eq!(top.end(), u64::MAX);
    /// let low = a.allocate(0x10, 0x10, AllocPolicy::FirstMatch)?;
    /// assert_eq!(low.start(), 0);
    /// # Ok::<(), memvisor_resources::Error>(())
    /// ```
    pub fn allocate(
        &mut self,
        size: u64,
        alignment: u64,
        policy: AllocPolicy,
    ) -> Result<AddressRange> {
        self.allocate_with(&Request::new(size, alignment, policy)?, T::default())
    }

    /// Reserves exactly `range` with the default tag.
    ///
    /// # Errors
    ///
    /// Those of [`reserve_with`](Self::reserve_with).
    pub fn reserve(&mut self, range: AddressRange) -> Result<()> {
        self.reserve_with(range, T::default())
    }
}

/// What a failed search proves about the room of the free ranges at the request's alignment.
#[derive(Clone, Copy, Debug)]
enum Learned {
    /// Nothing (an exact placement, or an error other than no room).
    Nothing,
    /// Every gap was searched: none has more room than this.
    AtMost(u64),
    /// Only the recent free ranges were searched: none has room for the request.
    Below,
}

/// Whether an allocator may hold `len` live ranges: at most [`MAX_NODES`] (2^32 - 1), as many
/// as one can reach by allocating.
fn check_count(len: usize) -> Result<()> {
    if len > MAX_NODES as usize {
        return Err(Error::TooManyAllocations(MAX_NODES));
    }
    Ok(())
}

/// The lowest (or, with `rev`, highest) address in `gap ∩ window` that is a multiple of `align`
/// and starts `size` free units.
fn fit_in(
    gap: AddressRange,
    window: AddressRange,
    size: u64,
    align: u64,
    rev: bool,
) -> Option<u64> {
    let free = gap.intersection(&window)?;
    let (lo, hi) = (free.start(), free.end());
    if hi - lo < size - 1 {
        return None;
    }
    if rev {
        let addr = (hi - (size - 1)) & !(align - 1);
        (addr >= lo).then_some(addr)
    } else {
        let addr = lo.checked_next_multiple_of(align)?;
        (addr <= hi && hi - addr >= size - 1).then_some(addr)
    }
}

/// Iterator over the live allocations of an [`AddressAllocator`], in address order.
#[derive(Debug)]
pub struct Allocations<'a, T> {
    alloc: &'a AddressAllocator<T>,
    nodes: tree::InOrder<'a>,
    next: Option<u32>,
}

impl<'a, T> Iterator for Allocations<'a, T> {
    type Item = Allocation<'a, T>;

    fn next(&mut self) -> Option<Allocation<'a, T>> {
        let node = self.next?;
        self.next = self.nodes.next();
        let range = self.alloc.range_of(node, self.next.unwrap_or(NIL));
        Some(Allocation {
            range,
            tag: &self.alloc.tags[node as usize],
        })
    }
}

/// Iterator over the free ranges of an [`AddressAllocator`], in address order.
#[derive(Debug)]
pub struct FreeRanges<'a, T> {
    alloc: &'a AddressAllocator<T>,
    nodes: tree::InOrder<'a>,
    done: bool,
}

impl<T> Iterator for FreeRanges<'_, T> {
    type Item = AddressRange;

    fn next(&mut self) -> Option<AddressRange> {
        for node in self.nodes.by_ref() {
            if let Some(gap) = self.alloc.gap_before(node) {
                return Some(gap);
            }
        }
        if self.done {
            return None;
        }
        self.done = true;
        self.alloc.gap_before(NIL)
    }
}

impl<T: PartialEq> PartialEq for AddressAllocator<T> {
    /// Equal when the spaces are equal and the same ranges are allocated with equal tags.
    fn eq(&self, other: &Self) -> bool {
        self.space == other.space && self.allocated().eq(other.allocated())
    }
}

impl<T: Eq> Eq for AddressAllocator<T> {}

impl<T: fmt::Debug> fmt::Debug for AddressAllocator<T> {
    /// The space, the units used and the allocations with their tags, in address order: equal
    /// allocators print the same, whatever the layout of their index or what failed searches
    /// taught them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressAllocator")
            .field("space", &self.space)
            .field("used", &self.used)
            .field("allocations", &List(|| self.allocated()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> AddressRange {
        AddressRange::new(start, end).unwrap()
    }

    fn pool() -> AddressAllocator<u32> {
        AddressAllocator::new(r(0x1000, 0x1_0fff))
    }

    fn req(size: u64, align: u64, policy: AllocPolicy) -> Request {
        Request::new(size, align, policy).unwrap()
    }

    /// `n` one-page reservations leaving `n` one-page gaps, each starting half a page past a page
    /// boundary: every gap is large enough for a page but holds no page-aligned one.
    fn misaligned_gaps(n: u64) -> AddressAllocator<u32> {
        let mut a = AddressAllocator::new(r(0, n * 0x2000 - 1));
        for i in 0..n {
            let base = i * 0x2000;
            a.reserve_with(r(base, base + 0x7ff), 0).unwrap();
            a.reserve_with(r(base + 0x1800, base + 0x1fff), 0).unwrap();
        }
        a
    }

    #[test]
    fn largest_free_is_exact_when_gaps_round_to_one_bound() {
        // Gaps of 2^40 + k units, k distinct and small: their 24-bit bounds are all equal, so
        // the walk must look past the bounds to find the exact largest, wherever it lies.
        for top in [0u64, 37, 99] {
            let mut a = AddressAllocator::<u32>::new(AddressRange::FULL);
            let mut at = 0u64;
            for k in 0..100u64 {
                let gap = (1 << 40) + if k == top { 1000 } else { k };
                at += gap;
                a.reserve_with(r(at, at), 0).unwrap();
                at += 1;
            }
            a.reserve_with(r(at, u64::MAX), 0).unwrap();
            assert_eq!(a.largest_free(), (1 << 40) + 1000);
            a.check_invariants().unwrap();
        }
        let mut whole = AddressAllocator::<u32>::new(AddressRange::FULL);
        assert_eq!(whole.largest_free(), 1 << 64);
        assert_eq!(whole.largest_free_bound(), u64::MAX);
        whole.reserve_with(AddressRange::FULL, 0).unwrap();
        assert_eq!(whole.largest_free(), 0);
    }

    #[test]
    fn allocate_no_aligned_fit_repeated_fails_without_walking_gaps() {
        let n = if cfg!(miri) { 64 } else { 4096 };
        let mut a = misaligned_gaps(n);
        let before = a.clone();
        let out = Err(Error::OutOfSpace {
            size: 0x1000,
            alignment: 0x1000,
        });
        for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
            assert_eq!(a.allocate_with(&req(0x1000, 0x1000, policy), 1), out);
        }
        // The answer is known now: asking again (or for more, or more aligned) probes nothing.
        a.tree.probes.set(0);
        for (size, align) in [(0x1000, 0x1000), (0x1800, 0x1000), (0x1000, 0x4000)] {
            for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
                let got = a.allocate_with(&req(size, align, policy), 1);
                assert!(matches!(got, Err(Error::OutOfSpace { .. })), "{got:?}");
                let w = req(size, align, policy).within(r(0x4_0000, 0x8_0000));
                assert!(a.allocate_with(&w, 1).is_err());
            }
        }
        assert_eq!(a.tree.probes.get(), 0);
        assert_eq!(a, before);
        a.check_invariants().unwrap();
    }

    #[test]
    fn a_failed_allocate_past_2_24_units_probes_every_gap_its_rounded_bounds_let_in() {
        // Free ranges of 2^25 + 1 units between one-unit reservations, and the space ends at
        // the last one: bounds past 2^24 are rounded up (here to a multiple of 4), so every
        // subtree looks long enough for 2^25 + 2 units, which no gap holds.
        let n = if cfg!(miri) { 32 } else { 2048 };
        let step = (1u64 << 25) + 2;
        let mut a = AddressAllocator::<u32>::new(r(0, n * step));
        for i in 0..=n {
            a.reserve_with(r(i * step, i * step), 0).unwrap();
        }
        let before = a.clone();
        a.tree.probes.set(0);
        for policy in [AllocPolicy::FirstMatch, AllocPolicy::LastMatch] {
            let got = a.allocate_with(&req(step, 1, policy), 1);
            assert!(matches!(got, Err(Error::OutOfSpace { .. })), "{got:?}");
        }
        assert_eq!(a, before);
        // Every gap is probed (a search with exact bounds would probe none); one unit less and
        // the request fits.
        assert!(a.tree.probes.get() >= n, "{}", a.tree.probes.get());
        assert_eq!(
            a.allocate_with(&req(step - 1, 1, AllocPolicy::FirstMatch), 1),
            Ok(r(1, step - 1))
        );
    }

    #[test]
    fn allocate_after_free_among_misaligned_gaps_searches_only_new_room() {
        let n = if cfg!(miri) { 64 } else { 4096 };
        let mut a = misaligned_gaps(n);
        let page = req(0x1000, 0x1000, AllocPolicy::FirstMatch);
        assert!(a.allocate_with(&page, 1).is_err());
        a.tree.probes.set(0);
        for i in (1..n).step_by(97) {
            let base = i * 0x2000;
            a.free(&r(base, base + 0x7ff)).unwrap();
            assert_eq!(a.allocate_with(&page, 1), Ok(r(base, base + 0xfff)));
            assert!(a.allocate_with(&page, 1).is_err());
            a.check_invariants().unwrap();
        }
        // Each round searches one freed range: a few root-to-leaf paths, not every gap.
        let rounds = n.div_ceil(97);
        assert!(
            a.tree.probes.get() <= rounds * 100,
            "{}",
            a.tree.probes.get()
        );
    }

    #[test]
    fn allocate_no_aligned_fit_then_free_finds_new_room() {
        let mut a = misaligned_gaps(64);
        let page = req(0x1000, 0x1000, AllocPolicy::FirstMatch);
        assert!(a.allocate_with(&page, 1).is_err());
        // Freeing the half page in front of gap 5 makes [0xa000, 0xb7ff] free: a page fits.
        a.free(&r(0xa000, 0xa7ff)).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.allocate_with(&page, 1), Ok(r(0xa000, 0xafff)));
        assert!(a.allocate_with(&page, 1).is_err());
        // A failed move learns in the space without the old range, then puts it back; freeing
        // it afterwards makes its room usable again.
        let old = r(0xa000, 0xafff);
        let big = req(0x1800, 0x800, AllocPolicy::FirstMatch);
        assert!(a.relocate(&old, &big).is_ok_and(|x| x == r(0xa000, 0xb7ff)));
        assert!(a.allocate_with(&page, 1).is_err());
        a.free(&r(0xa000, 0xb7ff)).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.allocate_with(&page, 1), Ok(r(0xa000, 0xafff)));
        // Shrinking keeps the bounds valid; an empty allocator resets them to its new space.
        let mut e = AddressAllocator::<u32>::new(r(0, 0xfff));
        assert!(
            e.allocate_with(&req(0x2000, 1, AllocPolicy::FirstMatch), 1)
                .is_err()
        );
        e.resize(r(0, 0x2fff)).unwrap();
        assert_eq!(
            e.allocate_with(&req(0x2000, 0x1000, AllocPolicy::LastMatch), 1),
            Ok(r(0x1000, 0x2fff))
        );
        e.check_invariants().unwrap();
        // Growing the space adds room at the top.
        let top = a.space().end();
        a.resize(r(0, top + 0x1000)).unwrap();
        assert_eq!(
            a.allocate_with(&req(0x1000, 0x1000, AllocPolicy::LastMatch), 2),
            Ok(r(top + 1, top + 0x1000))
        );
        a.check_invariants().unwrap();
    }

    /// The limit is 2^32 - 1 live ranges (one per index below `NIL`), the error names it, and
    /// loading accepts as many ranges as allocating can reach.
    #[test]
    fn live_range_limit_is_2_pow_32_minus_1_everywhere() {
        assert_eq!(check_count(u32::MAX as usize), Ok(()));
        if let Ok(past) = usize::try_from(u64::from(u32::MAX) + 1) {
            assert_eq!(check_count(past), Err(Error::TooManyAllocations(u32::MAX)));
        }
        assert_eq!(
            Error::TooManyAllocations(MAX_NODES).to_string(),
            "too many allocations: the limit of 4294967295 live ranges is reached"
        );
    }

    #[test]
    fn request_zero_size_fails() {
        assert_eq!(
            Request::new(0, 1, AllocPolicy::FirstMatch),
            Err(Error::ZeroSize)
        );
        assert_eq!(
            Error::ZeroSize.to_string(),
            "invalid size: a size of zero was requested"
        );
    }

    #[test]
    fn request_bad_alignment_fails() {
        assert_eq!(
            Request::new(1, 0, AllocPolicy::FirstMatch),
            Err(Error::InvalidAlignment(0))
        );
        assert_eq!(
            Request::new(1, 0x300, AllocPolicy::LastMatch),
            Err(Error::InvalidAlignment(0x300))
        );
        assert_eq!(
            Error::InvalidAlignment(0x300).to_string(),
            "invalid alignment 0x300: alignment must be a power of two"
        );
    }

    #[test]
    fn request_unaligned_exact_fails() {
        let err = Error::UnalignedAddress {
            address: 0x1800,
            alignment: 0x1000,
        };
        assert_eq!(
            Request::new(0x1000, 0x1000, AllocPolicy::ExactMatch(0x1800)),
            Err(err)
        );
        assert_eq!(err.to_string(), "address 0x1800 is not aligned to 0x1000");
    }

    #[test]
    fn request_exact_past_max_fails() {
        assert_eq!(
            Request::new(2, 1, AllocPolicy::ExactMatch(u64::MAX)),
            Err(Error::Overflow {
                start: u64::MAX,
                size: 2
            })
        );
        assert_eq!(
            Error::Overflow {
                start: u64::MAX,
                size: 2
            }
            .to_string(),
            "overflow: 0x2 units starting at 0xffffffffffffffff go past u64::MAX"
        );
    }

    #[test]
    fn with_base_and_size_overflow_fails() {
        assert_eq!(
            AddressAllocator::<()>::with_base_and_size(u64::MAX, 2).map(|a| a.space()),
            Err(Error::Overflow {
                start: u64::MAX,
                size: 2
            })
        );
    }

    #[test]
    fn allocate_first_match_takes_lowest_aligned() {
        let mut a = pool();
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::FirstMatch), 1),
            Ok(r(0x1000, 0x100f))
        );
        assert_eq!(
            a.allocate_with(&req(0x1000, 0x1000, AllocPolicy::FirstMatch), 2),
            Ok(r(0x2000, 0x2fff))
        );
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::FirstMatch), 3),
            Ok(r(0x1010, 0x101f))
        );
    }

    #[test]
    fn allocate_last_match_takes_highest_aligned() {
        let mut a = pool();
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::LastMatch), 1),
            Ok(r(0x1_0ff0, 0x1_0fff))
        );
        assert_eq!(
            a.allocate_with(&req(0x1000, 0x1000, AllocPolicy::LastMatch), 2),
            Ok(r(0xf000, 0xffff))
        );
    }

    #[test]
    fn allocate_exact_match_free_succeeds() {
        let mut a = pool();
        assert_eq!(
            a.allocate_with(&req(0x100, 0x100, AllocPolicy::ExactMatch(0x8000)), 9),
            Ok(r(0x8000, 0x80ff))
        );
        assert_eq!(
            a.free_ranges().collect::<Vec<_>>(),
            [r(0x1000, 0x7fff), r(0x8100, 0x1_0fff)]
        );
    }

    #[test]
    fn allocate_exact_match_overlap_fails_with_existing() {
        let mut a = pool();
        let first = a
            .allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(0x2000)), 1)
            .unwrap();
        let err = a.allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(0x1f80)), 2);
        let want = Error::Overlap {
            requested: r(0x1f80, 0x207f),
            existing: first,
        };
        assert_eq!(err, Err(want));
        assert_eq!(
            want.to_string(),
            "range [0x1f80, 0x207f] overlaps the existing allocation [0x2000, 0x20ff]"
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn allocate_exact_match_outside_space_fails() {
        let mut a = pool();
        assert_eq!(
            a.allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(0x1_0f80)), 1),
            Err(Error::OutsideSpace {
                range: r(0x1_0f80, 0x1_107f),
                space: a.space()
            })
        );
    }

    #[test]
    fn allocate_too_big_fails_out_of_space() {
        let mut a = pool();
        let want = Error::OutOfSpace {
            size: 0x1_0001,
            alignment: 1,
        };
        assert_eq!(
            a.allocate_with(&req(0x1_0001, 1, AllocPolicy::FirstMatch), 1),
            Err(want)
        );
        assert_eq!(
            want.to_string(),
            "out of space: no free range holds 0x10001 units aligned to 0x1"
        );
        assert_eq!(
            a.allocate_with(&req(0x1_0000, 1, AllocPolicy::LastMatch), 1),
            Ok(a.space())
        );
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn allocate_alignment_beyond_space_fails_out_of_space() {
        let mut a = pool();
        assert_eq!(
            a.allocate_with(&req(1, 1 << 20, AllocPolicy::FirstMatch), 1),
            Err(Error::OutOfSpace {
                size: 1,
                alignment: 1 << 20
            })
        );
    }

    #[test]
    fn allocate_window_restricts_both_policies() {
        let mut a = pool();
        let w = r(0x4000, 0x5fff);
        let first = req(0x800, 0x800, AllocPolicy::FirstMatch).within(w);
        let last = req(0x800, 0x800, AllocPolicy::LastMatch).within(w);
        assert_eq!(a.allocate_with(&first, 1), Ok(r(0x4000, 0x47ff)));
        assert_eq!(a.allocate_with(&last, 2), Ok(r(0x5800, 0x5fff)));
        assert_eq!(a.allocate_with(&first, 3), Ok(r(0x4800, 0x4fff)));
        assert_eq!(a.allocate_with(&last, 4), Ok(r(0x5000, 0x57ff)));
        assert_eq!(
            a.allocate_with(&first, 5),
            Err(Error::OutOfSpace {
                size: 0x800,
                alignment: 0x800
            })
        );
    }

    #[test]
    fn allocate_window_outside_space_fails() {
        let mut a = pool();
        let w = r(0, 0x1fff);
        let err = Error::OutsideSpace {
            range: w,
            space: a.space(),
        };
        assert_eq!(
            a.allocate_with(&req(1, 1, AllocPolicy::FirstMatch).within(w), 1),
            Err(err)
        );
        assert_eq!(
            err.to_string(),
            "range [0x0, 0x1fff] is outside the managed space [0x1000, 0x10fff]"
        );
    }

    #[test]
    fn allocate_exact_outside_window_fails() {
        let mut a = pool();
        let w = r(0x2000, 0x2fff);
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::ExactMatch(0x3000)).within(w), 1),
            Err(Error::OutsideSpace {
                range: r(0x3000, 0x300f),
                space: w
            })
        );
    }

    #[test]
    fn reserve_hole_is_skipped_by_allocations() {
        let mut a = pool();
        a.reserve_with(r(0x1000, 0x1fff), 0).unwrap();
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::FirstMatch), 1),
            Ok(r(0x2000, 0x200f))
        );
    }

    #[test]
    fn reserve_overlap_fails() {
        let mut a = pool();
        a.reserve_with(r(0x2000, 0x2fff), 0).unwrap();
        assert_eq!(
            a.reserve_with(r(0x1000, 0x2000), 1),
            Err(Error::Overlap {
                requested: r(0x1000, 0x2000),
                existing: r(0x2000, 0x2fff)
            })
        );
    }

    #[test]
    fn reserve_outside_space_fails() {
        let mut a = pool();
        assert_eq!(
            a.reserve_with(r(0, 0x1000), 1),
            Err(Error::OutsideSpace {
                range: r(0, 0x1000),
                space: a.space()
            })
        );
    }

    #[test]
    fn free_exact_allocation_returns_tag_and_merges() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 1)
            .unwrap();
        let y = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 2)
            .unwrap();
        let z = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 3)
            .unwrap();
        assert_eq!(a.free(&x), Ok(1));
        assert_eq!(a.free(&z), Ok(3));
        assert_eq!(
            a.free_ranges().collect::<Vec<_>>(),
            [x, r(z.start(), 0x1_0fff)]
        );
        assert_eq!(a.free(&y), Ok(2));
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), [a.space()]);
        assert!(a.is_empty());
    }

    #[test]
    fn free_part_of_allocation_fails() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 1)
            .unwrap();
        let part = r(0x1000, 0x107f);
        let err = Error::NotExactAllocation {
            requested: part,
            existing: x,
        };
        assert_eq!(a.free(&part), Err(err));
        assert_eq!(
            err.to_string(),
            "range [0x1000, 0x107f] is not an allocation: the allocation there is [0x1000, 0x10ff]"
        );
        assert_eq!(
            a.free(&r(0xf00, 0x1_0000)),
            Err(Error::NotExactAllocation {
                requested: r(0xf00, 0x1_0000),
                existing: x
            })
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn free_never_allocated_gap_fails() {
        let mut a = pool();
        let err = Error::NotAllocated(r(0x5000, 0x5fff));
        assert_eq!(a.free(&r(0x5000, 0x5fff)), Err(err));
        assert_eq!(err.to_string(), "range [0x5000, 0x5fff] is not allocated");
    }

    #[test]
    fn release_containing_frees_owner() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::LastMatch), 42)
            .unwrap();
        assert_eq!(a.release_containing(x.start() + 5), Ok((x, 42)));
        assert!(a.is_empty());
    }

    #[test]
    fn release_containing_free_address_fails() {
        let mut a = pool();
        assert_eq!(
            a.release_containing(0x1234),
            Err(Error::AddressNotAllocated(0x1234))
        );
        assert_eq!(
            Error::AddressNotAllocated(0x1234).to_string(),
            "address 0x1234 is not in any allocation"
        );
    }

    #[test]
    fn allocation_containing_finds_by_address() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 5)
            .unwrap();
        let got = a.allocation_containing(x.end()).unwrap();
        assert_eq!((got.range, *got.tag), (x, 5));
        assert!(a.allocation_containing(x.end() + 1).is_none());
        assert!(a.allocation_containing(0).is_none());
    }

    #[test]
    fn find_tagged_lists_owner_ranges() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 5)
            .unwrap();
        a.allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 6)
            .unwrap();
        let z = a
            .allocate_with(&req(0x100, 1, AllocPolicy::LastMatch), 5)
            .unwrap();
        assert_eq!(a.find_tagged(&5).collect::<Vec<_>>(), [x, z]);
    }

    #[test]
    fn relocate_moves_and_keeps_tag() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x1000, 0x1000, AllocPolicy::FirstMatch), 7)
            .unwrap();
        let y = a
            .relocate(
                &x,
                &req(0x2000, 0x1000, AllocPolicy::ExactMatch(0x1800 - 0x800)),
            )
            .unwrap();
        assert_eq!(y, r(0x1000, 0x2fff));
        assert_eq!(a.allocation_containing(0x2000).map(|a| *a.tag), Some(7));
        assert_eq!(a.len(), 1);
        assert_eq!(a.used(), 0x2000);
    }

    #[test]
    fn relocate_without_room_keeps_old() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x1000, 0x1000, AllocPolicy::FirstMatch), 7)
            .unwrap();
        let before = a.clone();
        assert_eq!(
            a.relocate(&x, &req(0x2_0000, 1, AllocPolicy::FirstMatch)),
            Err(Error::OutOfSpace {
                size: 0x2_0000,
                alignment: 1
            })
        );
        assert_eq!(a, before);
        a.check_invariants().unwrap();
    }

    #[test]
    fn relocate_not_allocated_fails() {
        let mut a = pool();
        assert_eq!(
            a.relocate(&r(0x1000, 0x1fff), &req(1, 1, AllocPolicy::FirstMatch)),
            Err(Error::NotAllocated(r(0x1000, 0x1fff)))
        );
    }

    #[test]
    fn used_and_available_track_allocations() {
        let mut a = pool();
        a.allocate_with(&req(0x300, 1, AllocPolicy::FirstMatch), 1)
            .unwrap();
        a.reserve_with(r(0x8000, 0x80ff), 2).unwrap();
        assert_eq!(a.used(), 0x400);
        assert_eq!(a.available(), 0x1_0000 - 0x400);
    }

    #[test]
    fn allocated_iterates_in_address_order() {
        let mut a = pool();
        for (i, addr) in [0x9000u64, 0x2000, 0x5000].into_iter().enumerate() {
            a.allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(addr)), i as u32)
                .unwrap();
        }
        let got: Vec<(AddressRange, u32)> = a.allocated().map(|x| (x.range, *x.tag)).collect();
        assert_eq!(
            got,
            [
                (r(0x2000, 0x20ff), 1),
                (r(0x5000, 0x50ff), 2),
                (r(0x9000, 0x90ff), 0)
            ]
        );
    }

    #[test]
    fn many_allocations_keep_invariants() {
        let mut a = AddressAllocator::<u32>::new(r(0, 0xf_ffff));
        let mut live = Vec::new();
        for i in 0..600u32 {
            let policy = if i % 2 == 0 {
                AllocPolicy::FirstMatch
            } else {
                AllocPolicy::LastMatch
            };
            live.push(
                a.allocate_with(&req(0x100 + u64::from(i % 7) * 0x10, 0x10, policy), i)
                    .unwrap(),
            );
            if i % 3 == 0 {
                let victim = live.swap_remove((i as usize * 7) % live.len());
                a.free(&victim).unwrap();
            }
        }
        a.check_invariants().unwrap();
        assert_eq!(a.len(), live.len());
    }

    #[test]
    fn shrink_to_fit_after_frees_releases_capacity() {
        let mut a = AddressAllocator::<()>::new(r(0, u64::MAX));
        let ranges: Vec<AddressRange> = (0..1000)
            .map(|_| a.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch).unwrap())
            .collect();
        for x in &ranges[..900] {
            a.free(x).unwrap();
        }
        let before = a.heap_bytes();
        a.shrink_to_fit();
        assert!(a.heap_bytes() <= 100 * 28, "{before} -> {}", a.heap_bytes());
        a.check_invariants().unwrap();
        assert_eq!(
            a.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch),
            Ok(ranges[0])
        );
    }

    #[test]
    fn resize_grow_both_ends_keeps_allocations() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(0x2000)), 1)
            .unwrap();
        a.resize(r(0x800, 0x2_0fff)).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(
            a.free_ranges().collect::<Vec<_>>(),
            [r(0x800, 0x1fff), r(0x2100, 0x2_0fff)]
        );
        assert_eq!(
            a.allocate_with(&req(0x10, 1, AllocPolicy::FirstMatch), 2),
            Ok(r(0x800, 0x80f))
        );
        assert_eq!(a.allocated().next().map(|a| a.range), Some(r(0x800, 0x80f)));
        assert_eq!(a.allocation_containing(0x2000).map(|a| a.range), Some(x));
    }

    #[test]
    fn resize_shrink_to_allocations_succeeds() {
        let mut a = pool();
        let x = a
            .allocate_with(&req(0x100, 1, AllocPolicy::ExactMatch(0x2000)), 1)
            .unwrap();
        a.resize(x).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.available(), 0);
        assert_eq!(a.free(&x), Ok(1));
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), [x]);
    }

    #[test]
    fn resize_dropping_allocation_fails_unchanged() {
        let mut a = pool();
        let low = a
            .allocate_with(&req(0x100, 1, AllocPolicy::FirstMatch), 1)
            .unwrap();
        let high = a
            .allocate_with(&req(0x100, 1, AllocPolicy::LastMatch), 2)
            .unwrap();
        let before = a.clone();
        let s = r(0x1080, 0x1_0fff);
        assert_eq!(
            a.resize(s),
            Err(Error::OutsideSpace {
                range: low,
                space: s
            })
        );
        let s = r(0x1000, 0x1_0f80);
        assert_eq!(
            a.resize(s),
            Err(Error::OutsideSpace {
                range: high,
                space: s
            })
        );
        assert_eq!(a, before);
        assert_eq!(a.space(), before.space());
        a.check_invariants().unwrap();
    }

    #[test]
    fn resize_empty_moves_space() {
        let mut a = pool();
        a.resize(r(0, 0xf)).unwrap();
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), [r(0, 0xf)]);
        a.check_invariants().unwrap();
    }

    #[test]
    fn heap_bytes_at_most_32_per_range() {
        let n = if cfg!(miri) { 500 } else { 10_000 };
        let mut a = AddressAllocator::<()>::new(r(0, u64::MAX));
        for _ in 0..n {
            a.allocate(0x1000, 0x1000, AllocPolicy::FirstMatch).unwrap();
        }
        assert!(a.heap_bytes() <= 32 * n, "{} bytes", a.heap_bytes());
    }
}
