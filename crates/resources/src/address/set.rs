//! [`AllocatorSet`]: several disjoint address spaces behind one allocator.

use alloc::vec::Vec;
use core::fmt;

use super::keymap::KeyMap as Map;
use super::room_tree::RoomTree;
use super::tree::{NIL, Tree, heap_refused};
use super::{AddressAllocator, AllocPolicy, Allocation, Request};
use crate::debug::List;
use crate::error::{Error, Refused, Result};
use crate::range::AddressRange;

/// Several disjoint address spaces (say MMIO below 4 GiB, then above) behind one allocator.
///
/// Placement tries the spaces in the order they were given, first with the set's preferred
/// alignment in every space, then with the required one (the larger of the request's alignment
/// and the set's minimum) in every space. A reservation may span spaces: it reserves its part in
/// each space it touches, all or nothing. Each space is an [`AddressAllocator`]. The set keeps
/// its spaces in address order and, for each, a bound on its largest free range in a max tree,
/// so an exact placement, a reservation, [`free`](Self::free) and
/// [`allocation_containing`](Self::allocation_containing) find their space in O(log s) for s
/// spaces, and a placement skips the spaces too full for its size in O(log s): every operation
/// costs O(log s + log n), plus O(log n) for each further space a spanning reservation (or its
/// `free`) touches. A placement restricted to a window looks at each space the window touches
/// (O(m log m) for m of them). What stays linear in s: a placement pays for gaps misaligned
/// for it in each space it tries, as [`AddressAllocator`] does, and a space whose largest free
/// range is large enough but has no room at the alignment asked is still tried (a request no
/// space can align costs O(s) then). [`len`](Self::len), [`is_empty`](Self::is_empty) and
/// [`used`](Self::used) are totals kept as allocations come and go: O(1). Memory: about 40
/// bytes per space for the two indexes, besides the spaces themselves.
///
/// Allocations may also carry a unique `u64` key ([`allocate_keyed`](Self::allocate_keyed),
/// [`reserve_keyed`](Self::reserve_keyed)), found and released by key in O(1) expected time
/// with the `std` feature (a hash map; O(log k) for k keys without it).
///
/// ```
/// use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Request};
///
/// let low = AddressRange::new(0xd000_0000, 0xdfff_ffff)?;
/// let high = AddressRange::new(0x10_0000_0000, 0x1f_ffff_ffff)?;
/// let mut mmio = AllocatorSet::<&str>::new(&[low, high])?.with_alignment(0x1000, 0x1_0000)?;
/// // 256 MiB fills the low window; the next BAR goes above 4 GiB.
/// let a = mmio.allocate_with(&Request::new(0x1000_0000, 1, AllocPolicy::FirstMatch)?, "gpu")?;
/// let b = mmio.allocate_with(&Request::new(0x10, 1, AllocPolicy::FirstMatch)?, "nic")?;
/// assert_eq!((a.start(), b.start()), (0xd000_0000, 0x10_0000_0000));
/// assert_eq!(mmio.allocation_containing(b.start()).map(|x| *x.tag), Some("nic"));
/// assert_eq!(b.size(), Some(0x10));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct AllocatorSet<T = ()> {
    pools: Vec<AddressAllocator<T>>,
    /// The indices of the spaces in address order. The spaces are disjoint, so their ends rise
    /// with their starts, and the spaces a range touches are one run of this list.
    by_start: Vec<usize>,
    /// An upper bound on each space's largest free range, in the set's order: a placement
    /// finds the first space that may hold it in O(log s) steps instead of trying every full
    /// space before it.
    room: RoomTree,
    min_align: u64,
    preferred_align: u64,
    /// Range of each keyed allocation, as it was given.
    keys: Map<AddressRange>,
    /// Key of each keyed allocation, by the start of its lowest part.
    key_at: Map<u64>,
    /// For each part of a reservation that spans spaces, by the part's start: the reservation's
    /// hull (its lowest part's start to its highest part's end). Parts of one reservation are
    /// freed together, and only together.
    spans: Map<AddressRange>,
    /// The live allocations of all spaces (each part of a spanning reservation counts).
    live: usize,
    /// The allocated units of all spaces.
    used: u128,
}

#[cfg(test)]
std::thread_local! {
    /// Spaces looked at by this thread's set operations, for tests that bound the work.
    static LOOKED_AT: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Counts one space looked at (a test hook; nothing outside tests).
#[inline]
fn look() {
    #[cfg(test)]
    LOOKED_AT.with(|c| c.set(c.get() + 1));
}

/// The parts of a reservation: space index, part, node whose gap holds it.
type Parts = Vec<(usize, AddressRange, u32)>;

/// The copies of `tag` a reservation of `parts` parts needs (one for each part but the last,
/// which takes `tag` itself), all made before the reservation changes the set: a `clone` that
/// panics leaves the set as it was.
///
/// # Errors
///
/// [`Error::HeapRefused`] if the heap refuses room for them.
fn copies<T: Clone>(tag: &T, parts: usize) -> Result<Vec<T>> {
    let n = parts.saturating_sub(1);
    let mut copies = Vec::new();
    copies
        .try_reserve_exact(n)
        .map_err(|_| heap_refused::<T>(n))?;
    copies.extend((0..n).map(|_| tag.clone()));
    Ok(copies)
}

impl<T> AllocatorSet<T> {
    /// Creates a set of the given spaces, tried in this order, with no alignment constraints of
    /// its own.
    ///
    /// # Errors
    ///
    /// [`Error::EmptySet`] if `spaces` is empty, [`Error::Overlap`] if two spaces overlap: the
    /// first space that overlaps an earlier one as `requested`, the first earlier one it
    /// overlaps as `existing` (in the order given), [`Error::HeapRefused`] if the heap refuses
    /// the list of spaces, the index that checks them or the set's own indexes (the spaces in
    /// address order, and a max tree of their free room). O(s log s).
    pub fn new(spaces: &[AddressRange]) -> Result<Self> {
        if spaces.is_empty() {
            return Err(Error::EmptySet);
        }
        // The spaces checked so far, by start, each node's `gap` field holding the space's
        // index. They are disjoint, so their ends rise with their starts: of those starting at
        // or before a new space's end, the ones overlapping it come last, and the walk back
        // stops at the first that ends before the new space begins. O(s log s) in all.
        let mut seen = Tree::without_bounds();
        seen.try_reserve(spaces.len())?;
        for (i, s) in spaces.iter().enumerate() {
            let mut first_hit: Option<usize> = None;
            let mut at = seen.around(s.end()).pred;
            while at != NIL {
                let n = seen.node(at);
                let j = usize::try_from(n.gap).unwrap_or(usize::MAX);
                if spaces[j].end() < s.start() {
                    break;
                }
                first_hit = Some(first_hit.map_or(j, |f| f.min(j)));
                at = n.start.checked_sub(1).map_or(NIL, |b| seen.around(b).pred);
            }
            if let Some(j) = first_hit {
                return Err(Error::Overlap {
                    requested: *s,
                    existing: spaces[j],
                });
            }
            // No space checked so far starts at `s.start()` (it would overlap `s`).
            seen.insert(s.start(), i as u64);
        }
        let mut pools = Vec::new();
        pools
            .try_reserve_exact(spaces.len())
            .map_err(|_| heap_refused::<AddressAllocator<T>>(spaces.len()))?;
        let mut by_start = Vec::new();
        by_start
            .try_reserve_exact(spaces.len())
            .map_err(|_| heap_refused::<usize>(spaces.len()))?;
        by_start.extend(0..spaces.len());
        by_start.sort_unstable_by_key(|&i| spaces[i].start());
        let room = RoomTree::new(spaces.len())?;
        pools.extend(spaces.iter().map(|&s| AddressAllocator::new(s)));
        let mut this = Self {
            pools,
            by_start,
            room,
            min_align: 1,
            preferred_align: 1,
            keys: Map::new(),
            key_at: Map::new(),
            spans: Map::new(),
            live: 0,
            used: 0,
        };
        for i in 0..this.pools.len() {
            this.refresh(i);
        }
        Ok(this)
    }

    /// Records the largest free range of space `i` (after a change of it) in the max tree.
    /// O(log s).
    fn refresh(&mut self, i: usize) {
        let old = self.room.set(i, self.pools[i].largest_free_bound());
        debug_assert!(old.is_some(), "space {i} has no entry in the max tree");
    }

    /// Space `i` has just allocated `range`: its bound in the max tree and the totals.
    fn took(&mut self, i: usize, range: AddressRange) {
        self.refresh(i);
        self.live += 1;
        self.used += range.size_u128();
    }

    /// Space `i` has just freed `range`: its bound in the max tree and the totals.
    fn gave(&mut self, i: usize, range: AddressRange) {
        self.refresh(i);
        self.live -= 1;
        self.used -= range.size_u128();
    }

    /// The first space from index `from` on, in the set's order, whose largest free range may
    /// hold `size` units (`size` > 0). O(log s).
    fn next_with_room(&self, from: usize, size: u64) -> Option<usize> {
        look();
        self.room.first_from(from, size)
    }

    /// The indices of the spaces `range` touches, in address order. O(log s).
    fn touching(&self, range: &AddressRange) -> &[usize] {
        let lo = self.by_start.partition_point(|&i| {
            look();
            self.pools[i].space().end() < range.start()
        });
        let hi = self.by_start.partition_point(|&i| {
            look();
            self.pools[i].space().start() <= range.end()
        });
        &self.by_start[lo..hi.max(lo)]
    }

    /// Sets the minimum alignment of every placement and the alignment tried first (raised to
    /// the minimum if below it), for a set fresh from [`new`](Self::new). On a set that already
    /// holds allocations, prefer [`set_alignment`](Self::set_alignment): this one consumes the
    /// set, so an error drops it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAlignment`] if either is not a power of two (the minimum is checked
    /// first).
    pub fn with_alignment(mut self, min_align: u64, preferred_align: u64) -> Result<Self> {
        self.set_alignment(min_align, preferred_align)?;
        Ok(self)
    }

    /// Sets the minimum alignment of every placement and the alignment tried first (raised to
    /// the minimum if below it), for the placements to come: live allocations stay where they
    /// are.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAlignment`] if either is not a power of two (the minimum is checked
    /// first). The set is unchanged on error.
    ///
    /// ```
    /// use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Request};
    ///
    /// let mut pio = AllocatorSet::<()>::new(&[AddressRange::new(0x1000, 0xffff)?])?;
    /// let req = Request::new(0x8, 1, AllocPolicy::FirstMatch)?;
    /// assert_eq!(pio.allocate_with(&req, ())?.start(), 0x1000);
    /// assert_eq!(pio.set_alignment(0x100, 3), Err(Error::InvalidAlignment(3)));
    /// pio.set_alignment(0x100, 0x100)?;
    /// assert_eq!(pio.allocate_with(&req, ())?.start(), 0x1100);
    /// assert_eq!(pio.len(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_alignment(&mut self, min_align: u64, preferred_align: u64) -> Result<()> {
        for a in [min_align, preferred_align] {
            if !a.is_power_of_two() {
                return Err(Error::InvalidAlignment(a));
            }
        }
        self.min_align = min_align;
        self.preferred_align = preferred_align.max(min_align);
        Ok(())
    }

    /// The spaces' allocators, in the set's order.
    #[must_use]
    pub fn pools(&self) -> &[AddressAllocator<T>] {
        &self.pools
    }

    /// The number of live allocations in all spaces.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is allocated.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Allocated units in all spaces.
    #[must_use]
    pub fn used(&self) -> u128 {
        self.used
    }

    /// Allocates a range as [`try_allocate_with`](Self::try_allocate_with) does, but drops
    /// `tag` on refusal (`try_allocate_with` gives it back).
    ///
    /// # Errors
    ///
    /// Those of [`try_allocate_with`](Self::try_allocate_with). The set is unchanged on error.
    pub fn allocate_with(&mut self, request: &Request, tag: T) -> Result<AddressRange> {
        self.try_allocate_with(request, tag).map_err(Error::from)
    }

    /// Allocates a range as `request` says (its alignment raised to the set's minimum) and tags
    /// it with `tag`; on refusal, gives `tag` back with the error. An exact placement goes to
    /// the space that holds it; a window is clipped to each space in turn (for an exact
    /// placement, to the space that holds it).
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::UnalignedAddress`] if an exact
    /// address lacks the set's minimum alignment, [`Error::OutsideSpace`] if an exact range
    /// lies in no single space (the first space is named) or outside the window (the window is
    /// named), or if the window touches no space, those of
    /// [`AddressAllocator::try_allocate_with`] for an exact placement, [`Error::OutOfSpace`] (with
    /// the required alignment) if no space fits, [`Error::HeapRefused`] if the space that fits
    /// must grow its index (or, for a placement in a window, the list of the spaces the window
    /// touches must be made) and the heap refuses it. The set is unchanged on error.
    pub fn try_allocate_with(
        &mut self,
        request: &Request,
        tag: T,
    ) -> core::result::Result<AddressRange, Refused<T>> {
        match self.prepare_allocate(request) {
            Ok((i, range, host)) => {
                let range = self.pools[i].commit(range, host, tag);
                self.took(i, range);
                Ok(range)
            }
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Everything [`allocate_with`](Self::allocate_with) does but the commit: the space, the
    /// range, the node whose gap holds it, and room made for one more range there.
    fn prepare_allocate(&mut self, request: &Request) -> Result<(usize, AddressRange, u32)> {
        let size = request.size();
        let align = request.alignment().max(self.min_align);
        let first_space = self.pools[0].space();
        if let AllocPolicy::ExactMatch(address) = request.policy() {
            if address & (align - 1) != 0 {
                return Err(Error::UnalignedAddress {
                    address,
                    alignment: align,
                });
            }
            let range = AddressRange::from_start_and_size(address, size)?;
            // The spaces are disjoint: one that holds `range` is the only one it touches.
            let Some(i) = (match self.touching(&range) {
                &[i] if self.pools[i].space().contains_range(&range) => Some(i),
                _ => None,
            }) else {
                return Err(Error::OutsideSpace {
                    range,
                    space: first_space,
                });
            };
            let mut req = Request::new(size, align, request.policy())?;
            if let Some(w) = request.window() {
                if !w.contains_range(&range) {
                    return Err(Error::OutsideSpace { range, space: w });
                }
                match w.intersection(&self.pools[i].space()) {
                    Some(clipped) => req = req.within(clipped),
                    None => return Err(Error::OutsideSpace { range, space: w }),
                }
            }
            let (range, host) = self.pools[i].prepare_allocate(&req)?;
            return Ok((i, range, host));
        }
        if let Some(w) = request.window()
            && self.touching(&w).is_empty()
        {
            return Err(Error::OutsideSpace {
                range: w,
                space: first_space,
            });
        }
        let passes = if self.preferred_align > align {
            [Some(self.preferred_align), Some(align)]
        } else {
            [Some(align), None]
        };
        // The spaces a window touches, in the set's order.
        let mut in_window = Vec::new();
        if let Some(w) = request.window() {
            let touched = self.touching(&w);
            in_window
                .try_reserve_exact(touched.len())
                .map_err(|_| heap_refused::<usize>(touched.len()))?;
            in_window.extend_from_slice(touched);
            in_window.sort_unstable();
        }
        for a in passes.into_iter().flatten() {
            let req = Request::new(size, a, request.policy())?;
            // Only the spaces whose largest free range may hold `size` are tried: the first
            // in the set's order from the max tree, or each space the window touches.
            let mut next = 0;
            loop {
                let i = if request.window().is_some() {
                    let Some(&i) = in_window.get(next) else {
                        break;
                    };
                    next += 1;
                    if self.room.get(i).is_some_and(|b| b < size) {
                        continue;
                    }
                    i
                } else {
                    let Some(i) = self.next_with_room(next, size) else {
                        break;
                    };
                    next = i + 1;
                    i
                };
                look();
                let pool = &mut self.pools[i];
                let mut req = req;
                if let Some(w) = request.window() {
                    let Some(clipped) = w.intersection(&pool.space()) else {
                        continue;
                    };
                    req = req.within(clipped);
                }
                if pool.check_room().is_err() {
                    continue;
                }
                if let Ok((addr, host)) = pool.place(&req) {
                    let range = AddressRange::from_start_and_size(addr, size)?;
                    pool.make_room()?;
                    return Ok((i, range, host));
                }
            }
        }
        Err(Error::OutOfSpace {
            size,
            alignment: align,
        })
    }

    /// Reserves `range` as [`try_reserve_with`](Self::try_reserve_with) does, but drops `tag`
    /// on refusal (`try_reserve_with` gives it back).
    ///
    /// # Errors
    ///
    /// Those of [`try_reserve_with`](Self::try_reserve_with). The set is unchanged on error.
    pub fn reserve_with(&mut self, range: AddressRange, tag: T) -> Result<()>
    where
        T: Clone,
    {
        self.try_reserve_with(range, tag).map_err(Error::from)
    }

    /// Reserves `range`, which may span several spaces: its part in each space it touches is
    /// reserved with a copy of `tag` (the last part gets `tag` itself), all or nothing. Parts
    /// outside every space are ignored. On refusal, gives `tag` back with the error.
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::OutsideSpace`] if `range` touches
    /// no space (the first space is named), [`Error::Overlap`] with the whole `range` as
    /// `requested` and the lowest live allocation it overlaps as `existing` (its owner's tag:
    /// `allocation_containing(existing.start())`), [`Error::TooManyAllocations`] if a space is
    /// full, [`Error::HeapRefused`] if the heap refuses memory the reservation needs. The set
    /// is unchanged on error, and `tag` was not cloned. The copies are all made before the set
    /// changes, so a `clone` of `tag` that panics leaves the set unchanged too.
    pub fn try_reserve_with(
        &mut self,
        range: AddressRange,
        tag: T,
    ) -> core::result::Result<(), Refused<T>>
    where
        T: Clone,
    {
        match self.prepare_parts(range, &tag) {
            Ok((parts, hull, copies)) => {
                self.commit_parts(parts, hull, copies, tag);
                Ok(())
            }
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Everything a reservation of `range` does but the commit: its parts (space, part, node
    /// whose gap holds it), their hull, room made for each part and its spanning entry, and
    /// the copies of `tag` the parts but the last take.
    fn prepare_parts(
        &mut self,
        range: AddressRange,
        tag: &T,
    ) -> Result<(Parts, AddressRange, Vec<T>)>
    where
        T: Clone,
    {
        let mut parts = Vec::new();
        let touched = self.touching(&range);
        // One part per space `range` touches, reserved so that a refusal is an error.
        parts
            .try_reserve_exact(touched.len())
            .map_err(|_| heap_refused::<(usize, AddressRange, u32)>(touched.len()))?;
        let mut lowest: Option<AddressRange> = None;
        for &i in touched {
            look();
            let pool = &self.pools[i];
            let Some(part) = range.intersection(&pool.space()) else {
                continue;
            };
            match pool.free_host(part) {
                Ok(host) => parts.push((i, part, host)),
                Err(Error::Overlap { existing, .. }) => {
                    if lowest.is_none_or(|l| existing.start() < l.start()) {
                        lowest = Some(existing);
                    }
                }
                Err(other) => return Err(other),
            }
        }
        if let Some(existing) = lowest {
            return Err(Error::Overlap {
                requested: range,
                existing,
            });
        }
        // Committed in the set's order, as the spaces are tried.
        parts.sort_unstable_by_key(|&(i, _, _)| i);
        let (Some(low), Some(high)) = (
            parts.iter().map(|p| p.1.start()).min(),
            parts.iter().map(|p| p.1.end()).max(),
        ) else {
            return Err(Error::OutsideSpace {
                range,
                space: self.pools[0].space(),
            });
        };
        for &(i, _, _) in &parts {
            self.pools[i].check_room()?;
        }
        let hull = AddressRange::new(low, high)?;
        // Every piece of memory the commit takes is reserved first: the index and tags of each
        // space, and the spanning parts' entries.
        for &(i, _, _) in &parts {
            self.pools[i].make_room()?;
        }
        if parts.len() > 1 {
            self.spans.reserve(parts.len())?;
        }
        let copies = copies(tag, parts.len())?;
        Ok((parts, hull, copies))
    }

    /// Commits the parts [`prepare_parts`](Self::prepare_parts) found, one of its `copies` in
    /// each but the last, which takes `tag`. Allocates nothing and
    /// calls no code of `T`, so nothing can stop it half-way.
    fn commit_parts(&mut self, parts: Parts, hull: AddressRange, mut copies: Vec<T>, tag: T) {
        let spanning = parts.len() > 1;
        let mut tag = Some(tag);
        for (i, part, host) in parts {
            if let Some(this) = copies.pop().or_else(|| tag.take()) {
                self.pools[i].commit(part, host, this);
                self.took(i, part);
            }
            if spanning {
                self.spans.insert(part.start(), hull);
            }
        }
    }

    /// Frees `range`: exactly one allocation, or, for a reservation that spans spaces, exactly
    /// its part in each space it touches (all or nothing). Returns the tag of its lowest part.
    /// Parts of `range` outside every space are ignored, as [`reserve_with`](Self::reserve_with)
    /// ignores them, so the range a reservation was given frees it; so does any range whose
    /// parts inside the spaces are exactly the allocation's (unlike
    /// [`AddressAllocator::free`], which wants the allocation's range itself). The copies of
    /// the tag that the other parts of a spanning reservation held are dropped once every part
    /// and its key are gone, so a copy whose drop panics leaves the reservation freed whole.
    ///
    /// # Errors
    ///
    /// [`Error::NotAllocated`] with `range` if it touches no space or overlaps no allocation;
    /// [`Error::NotExactAllocation`] with `range` as `requested` and the lowest allocation it
    /// overlaps as `existing` (for a reservation spanning spaces, the hull of its parts) if it
    /// overlaps an allocation without being exactly one: its part in some space is not exactly
    /// an allocation, or its parts are not all of one allocation (some parts of a spanning
    /// reservation, or allocations made apart); [`Error::HeapRefused`] if the heap refuses the
    /// list of its parts (one entry per space it touches). The set is unchanged on error.
    pub fn free(&mut self, range: &AddressRange) -> Result<T> {
        // Each part with the tag its space gives back, kept until the set is consistent again.
        let mut parts: Vec<(usize, AddressRange, Option<T>)> = Vec::new();
        let touched = self.touching(range);
        parts
            .try_reserve_exact(touched.len())
            .map_err(|_| heap_refused::<(usize, AddressRange, Option<T>)>(touched.len()))?;
        // The lowest allocation `range` overlaps (for a part of a spanning reservation, its
        // hull), and whether some part is not exactly an allocation.
        let mut lowest: Option<AddressRange> = None;
        let mut inexact = false;
        for &i in touched {
            look();
            let pool = &self.pools[i];
            let Some(part) = range.intersection(&pool.space()) else {
                continue;
            };
            let overlapped = match pool.exact(&part) {
                Ok(_) => part,
                Err(Error::NotExactAllocation { existing, .. }) => {
                    inexact = true;
                    existing
                }
                Err(Error::NotAllocated(_)) => {
                    inexact = true;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let whole = self.spans.get(overlapped.start()).unwrap_or(overlapped);
            if lowest.is_none_or(|l| whole.start() < l.start()) {
                lowest = Some(whole);
            }
            parts.push((i, part, None));
        }
        if inexact {
            return Err(match lowest {
                Some(existing) => Error::NotExactAllocation {
                    requested: *range,
                    existing,
                },
                None => Error::NotAllocated(*range),
            });
        }
        parts.sort_by_key(|&(_, part, _)| part.start());
        let (Some(&(_, low, _)), Some(&(_, high, _))) = (parts.first(), parts.last()) else {
            return Err(Error::NotAllocated(*range));
        };
        let hull = AddressRange::new(low.start(), high.end())?;
        // Each part must belong to the one allocation `hull` is: a part of a spanning
        // reservation names its whole, any other allocation itself.
        for &(_, part, _) in &parts {
            let whole = self.spans.get(part.start()).unwrap_or(part);
            if whole != hull {
                return Err(Error::NotExactAllocation {
                    requested: *range,
                    existing: whole,
                });
            }
        }
        for (i, part, tag) in &mut parts {
            let pool = &mut self.pools[*i];
            let (node, succ) = pool.exact(part)?;
            *tag = Some(pool.remove(node, succ));
            self.gave(*i, *part);
            self.spans.remove(part.start());
        }
        if let Some(key) = self.key_at.remove(hull.start()) {
            self.keys.remove(key);
        }
        // The set is consistent again: the copies of the tag held by the other parts of a
        // spanning reservation are dropped only now, so a drop that panics leaves it freed
        // whole (the other copies, and the tag, are still dropped while it unwinds).
        let first = parts.first_mut().and_then(|(_, _, tag)| tag.take());
        drop(parts);
        first.ok_or(Error::NotAllocated(*range))
    }

    /// Allocates as [`allocate_with`](Self::allocate_with) does and records the range under
    /// `key`. On refusal `tag` is dropped; [`try_allocate_keyed`](Self::try_allocate_keyed)
    /// gives it back.
    ///
    /// # Errors
    ///
    /// Those of [`try_allocate_keyed`](Self::try_allocate_keyed). The set is unchanged on
    /// error.
    ///
    /// ```
    /// use memvisor_resources::{AddressRange, AllocPolicy, AllocatorSet, Error, Request};
    ///
    /// let mut pio = AllocatorSet::<()>::new(&[AddressRange::new(0x1000, 0xffff)?])?;
    /// let req = Request::new(0x20, 0x20, AllocPolicy::FirstMatch)?;
    /// let r = pio.allocate_keyed(7, &req, ())?;
    /// assert_eq!(pio.get(7), Some(r));
    /// assert_eq!(pio.allocate_keyed(7, &req, ()), Err(Error::KeyInUse(7)));
    /// assert_eq!(pio.release(7)?, (r, ()));
    /// assert_eq!(pio.release(7), Err(Error::UnknownKey(7)));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn allocate_keyed(&mut self, key: u64, request: &Request, tag: T) -> Result<AddressRange> {
        self.try_allocate_keyed(key, request, tag)
            .map_err(Error::from)
    }

    /// Allocates as [`try_allocate_with`](Self::try_allocate_with) does and records the range
    /// under `key`; on refusal, gives `tag` back with the error.
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::KeyInUse`] if `key` names a live
    /// allocation, [`Error::HeapRefused`] if the key maps must grow and the heap refuses it,
    /// then those of [`try_allocate_with`](Self::try_allocate_with). The set is unchanged on
    /// error.
    pub fn try_allocate_keyed(
        &mut self,
        key: u64,
        request: &Request,
        tag: T,
    ) -> core::result::Result<AddressRange, Refused<T>> {
        match self
            .prepare_key(key)
            .and_then(|()| self.prepare_allocate(request))
        {
            Ok((i, range, host)) => {
                let range = self.pools[i].commit(range, host, tag);
                self.took(i, range);
                self.keys.insert(key, range);
                self.key_at.insert(range.start(), key);
                Ok(range)
            }
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Reserves as [`reserve_with`](Self::reserve_with) does and records the range under `key`.
    /// On refusal `tag` is dropped; [`try_reserve_keyed`](Self::try_reserve_keyed) gives it
    /// back.
    ///
    /// # Errors
    ///
    /// Those of [`try_reserve_keyed`](Self::try_reserve_keyed). The set is unchanged on error.
    pub fn reserve_keyed(&mut self, key: u64, range: AddressRange, tag: T) -> Result<()>
    where
        T: Clone,
    {
        self.try_reserve_keyed(key, range, tag).map_err(Error::from)
    }

    /// Reserves as [`try_reserve_with`](Self::try_reserve_with) does and records the range
    /// under `key`; on refusal, gives `tag` back with the error.
    ///
    /// # Errors
    ///
    /// A [`Refused`] holding `tag` and the error: [`Error::KeyInUse`] if `key` names a live
    /// allocation, [`Error::HeapRefused`] if the key maps must grow and the heap refuses it,
    /// then those of [`try_reserve_with`](Self::try_reserve_with). The set is unchanged on
    /// error.
    pub fn try_reserve_keyed(
        &mut self,
        key: u64,
        range: AddressRange,
        tag: T,
    ) -> core::result::Result<(), Refused<T>>
    where
        T: Clone,
    {
        match self
            .prepare_key(key)
            .and_then(|()| self.prepare_parts(range, &tag))
        {
            Ok((parts, hull, copies)) => {
                self.commit_parts(parts, hull, copies, tag);
                self.keys.insert(key, range);
                self.key_at.insert(hull.start(), key);
                Ok(())
            }
            Err(error) => Err(Refused::new(error, tag)),
        }
    }

    /// Checks that `key` is free and makes room for it in the key maps.
    fn prepare_key(&mut self, key: u64) -> Result<()> {
        if self.keys.get(key).is_some() {
            return Err(Error::KeyInUse(key));
        }
        self.keys.reserve(1)?;
        self.key_at.reserve(1)
    }

    /// The range allocated under `key`, if any.
    #[must_use]
    pub fn get(&self, key: u64) -> Option<AddressRange> {
        self.keys.get(key)
    }

    /// Frees the allocation recorded under `key` and returns its range and tag, as
    /// [`free`](Self::free) frees its range (the tag of its lowest part; the other copies of a
    /// spanning reservation's tag dropped once it and its key are gone).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKey`] if no live allocation has that key; [`Error::HeapRefused`] if the
    /// heap refuses the list of its parts, as [`free`](Self::free) gives it. The set is
    /// unchanged on error.
    pub fn release(&mut self, key: u64) -> Result<(AddressRange, T)> {
        let range = self.get(key).ok_or(Error::UnknownKey(key))?;
        let tag = self.free(&range)?;
        Ok((range, tag))
    }

    /// The allocation that contains `addr`, if any.
    #[must_use]
    pub fn allocation_containing(&self, addr: u64) -> Option<Allocation<'_, T>> {
        let here = AddressRange::new(addr, addr).ok()?;
        self.touching(&here)
            .first()
            .and_then(|&i| self.pools[i].allocation_containing(addr))
    }

    /// The live allocations, space by space in the set's order, each space in address order.
    pub fn allocated(&self) -> impl Iterator<Item = Allocation<'_, T>> + '_ {
        self.pools.iter().flat_map(AddressAllocator::allocated)
    }

    /// Checks every space's invariants, that the set's indexes are what a fresh look at the
    /// spaces gives (the spaces in address order, each once; each space's bound in the max
    /// tree equal to its [`largest_free_bound`](AddressAllocator::largest_free_bound)), and
    /// that every key and every part of a spanning reservation names a live allocation.
    /// O(n + k·s) for k keys.
    ///
    /// # Errors
    ///
    /// [`Error::Inconsistent`] naming the first broken invariant.
    pub fn check_invariants(&self) -> Result<()> {
        self.pools
            .iter()
            .try_for_each(AddressAllocator::check_invariants)?;
        let live: usize = self.pools.iter().map(AddressAllocator::len).sum();
        let used: u128 = self.pools.iter().map(AddressAllocator::used).sum();
        if (live, used) != (self.live, self.used) {
            return Err(Error::Inconsistent(
                "the set's totals differ from its spaces'",
            ));
        }
        // The max tree holds, for each space, what a fresh look at the space gives: no fit is
        // missed (each space's own bound holds its largest free range, which the space's
        // checks above verify) and no full space is named as having room.
        if self.room.len() != self.pools.len() {
            return Err(Error::Inconsistent(
                "the max tree and the spaces differ in number",
            ));
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if self.room.get(i) != Some(pool.largest_free_bound()) {
                return Err(Error::Inconsistent(
                    "a space's bound in the max tree differs from its own",
                ));
            }
        }
        // The address order names every space once, in order of start (the spaces being
        // disjoint, a strictly rising order names each at most once).
        if self.by_start.len() != self.pools.len()
            || self.by_start.iter().any(|&i| i >= self.pools.len())
            || self
                .by_start
                .windows(2)
                .any(|w| self.pools[w[0]].space().end() >= self.pools[w[1]].space().start())
        {
            return Err(Error::Inconsistent("the spaces are not in address order"));
        }
        let is_part = |start: u64| {
            self.allocation_containing(start)
                .is_some_and(|a| a.range.start() == start)
        };
        if !self
            .spans
            .iter()
            .all(|(start, hull)| hull.contains(start) && is_part(start))
        {
            return Err(Error::Inconsistent(
                "a spanning part is not a live allocation",
            ));
        }
        if self.key_at.len() != self.keys.len() {
            return Err(Error::Inconsistent(
                "keys and their starts differ in number",
            ));
        }
        for (key, range) in self.keys.iter() {
            let low = self
                .touching(&range)
                .iter()
                .filter_map(|&i| range.intersection(&self.pools[i].space()))
                .map(|part| part.start())
                .min();
            if low.is_none_or(|low| !is_part(low) || self.key_at.get(low) != Some(key)) {
                return Err(Error::Inconsistent("a key names no live allocation"));
            }
        }
        Ok(())
    }
}

impl<T: PartialEq> PartialEq for AllocatorSet<T> {
    /// Equal when the spaces (in order), their allocations and tags, the alignments, the keys
    /// and the spanning parts are equal; the indexes derived from them are not compared.
    fn eq(&self, other: &Self) -> bool {
        self.pools == other.pools
            && self.min_align == other.min_align
            && self.preferred_align == other.preferred_align
            && self.keys == other.keys
            && self.key_at == other.key_at
            && self.spans == other.spans
    }
}

impl<T: Eq> Eq for AllocatorSet<T> {}

impl<T: fmt::Debug> fmt::Debug for AllocatorSet<T> {
    /// The spaces (each as [`AddressAllocator`] prints it), the alignments, the keys with the
    /// ranges they were given, and the hull of each part of a spanning reservation, all in the
    /// order of the allocations (space by space, each in address order): equal sets print the
    /// same, whatever the layout of their maps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = List(|| {
            self.allocated().filter_map(|a| {
                let key = self.key_at.get(a.range.start())?;
                Some((key, self.keys.get(key)?))
            })
        });
        let spans = List(|| {
            self.allocated()
                .filter_map(|a| Some((a.range, self.spans.get(a.range.start())?)))
        });
        f.debug_struct("AllocatorSet")
            .field("pools", &self.pools)
            .field("min_align", &self.min_align)
            .field("preferred_align", &self.preferred_align)
            .field("keys", &keys)
            .field("spans", &spans)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spaces looked at while `f` runs.
    fn looked_at(f: impl FnOnce()) -> u64 {
        let before = LOOKED_AT.with(core::cell::Cell::get);
        f();
        LOOKED_AT.with(core::cell::Cell::get) - before
    }

    /// `s` spaces of 16 units, 32 apart, given from the highest down.
    fn spaces(s: u64) -> Vec<AddressRange> {
        (0..s)
            .rev()
            .map(|i| AddressRange::new(i * 32, i * 32 + 15).unwrap())
            .collect()
    }

    #[test]
    fn check_invariants_finds_an_index_that_differs_from_a_fresh_walk() {
        let mut set = AllocatorSet::<u64>::new(&spaces(4)).unwrap();
        let req = Request::new(4, 1, AllocPolicy::FirstMatch).unwrap();
        set.allocate_with(&req, 0).unwrap();
        set.check_invariants().unwrap();
        // A bound above the space's own (a full space still named as having room).
        let mut stale = set.clone();
        let _ = stale.room.set(0, 16);
        assert!(stale.check_invariants().is_err());
        // The address order with a space missing, or twice.
        let mut order = set.clone();
        order.by_start[1] = order.by_start[0];
        assert!(order.check_invariants().is_err());
        let mut short = set.clone();
        short.by_start.pop();
        assert!(short.check_invariants().is_err());
        // Totals that differ from the spaces'.
        let mut totals = set.clone();
        totals.used += 1;
        assert!(totals.check_invariants().is_err());
        let mut count = set.clone();
        count.live = 0;
        assert!(count.check_invariants().is_err());
        // A tree of another length than the list of spaces.
        let mut tree = set.clone();
        tree.room = RoomTree::new(3).unwrap();
        assert!(tree.check_invariants().is_err());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of spaces and calls, safe code only: slow under Miri"
    )]
    fn filling_many_spaces_looks_at_each_space_a_bounded_number_of_times() {
        const S: u64 = 4096;
        let mut set = AllocatorSet::<u64>::new(&spaces(S)).unwrap();
        let req = Request::new(16, 1, AllocPolicy::FirstMatch).unwrap();
        let work = looked_at(|| {
            for i in 0..S {
                set.allocate_with(&req, i).unwrap();
            }
            assert!(matches!(
                set.allocate_with(&req, S),
                Err(Error::OutOfSpace { .. })
            ));
        });
        // Each placement finds the first space with room in O(log s) steps, not by trying every
        // full space before it (s * s / 2, 8 million here).
        assert!(work <= 64 * S, "{work} spaces looked at");
        set.check_invariants().unwrap();
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "thousands of spaces and calls, safe code only: slow under Miri"
    )]
    fn exact_placement_free_and_lookup_look_at_a_bounded_number_of_spaces() {
        const S: u64 = 4096;
        let all = spaces(S);
        let mut set = AllocatorSet::<u64>::new(&all).unwrap();
        let work = looked_at(|| {
            for (i, s) in all.iter().enumerate() {
                let req = Request::new(4, 1, AllocPolicy::ExactMatch(s.start() + 4)).unwrap();
                set.allocate_keyed(i as u64, &req, 0).unwrap();
            }
            for s in &all {
                assert!(set.allocation_containing(s.start() + 5).is_some());
                let part = AddressRange::new(s.start(), s.start() + 1).unwrap();
                set.reserve_with(part, 1).unwrap();
                set.free(&part).unwrap();
            }
            for i in 0..S {
                set.release(i).unwrap();
            }
            // A window over the lowest space only, the spaces listed from the highest down.
            let low = AddressRange::new(0, 15).unwrap();
            let req = Request::new(16, 1, AllocPolicy::FirstMatch)
                .unwrap()
                .within(low);
            assert_eq!(set.allocate_with(&req, 2).unwrap(), low);
            // A reservation over the lowest two spaces and the hole between them.
            let two = AddressRange::new(32, 95).unwrap();
            set.reserve_with(two, 3).unwrap();
            assert_eq!(set.free(&two), Ok(3));
        });
        // Five calls per space, each finding its space by address in O(log s) steps (two
        // binary searches of 12 steps here), not by a walk over all spaces (67 million).
        assert!(work <= 5 * 32 * S, "{work} spaces looked at");
        set.check_invariants().unwrap();
    }
}
