//! [`Snapshot`]: an immutable view of the address space, with O(log n) lookup, a last-hit
//! fast path, queries, and vm-memory's [`GuestMemoryBackend`] implementation.

mod owners;
mod table;

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vm_memory::{GuestAddress, GuestMemoryBackend};

use self::owners::{CHUNK, Chunk, Owners, max_chunks};
use self::table::{Entry, HIT_OFF, Table};
use crate::error::{Error, Result};
use crate::layout::{Layout, Placer};
use crate::region::Region;
use crate::spec::{NumaBinding, Protection, RegionType};

/// Where the region that [`Snapshot::find_removal`] found is in its snapshot, and its
/// memory-slot number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Removal {
    /// Its index in the table.
    at: usize,
    /// Its owner's chunk and place in the chunk.
    chunk: usize,
    pos: usize,
    /// The region's memory-slot number.
    pub(crate) slot: Option<u32>,
}

/// Slot value of a region without a memory-slot number.
const NO_SLOT: u32 = u32::MAX;

/// Lookups in a row that must find one region (after the first) before it becomes the hit.
#[cfg(test)]
const HIT_STREAK: usize = 1;

/// A sorted, immutable set of non-overlapping regions: what readers see of the address space
/// at one moment. Made by [`AddressSpace`](crate::AddressSpace); readers get one without
/// locking, keep it as long as they like, and the regions in it (and their host memory) stay
/// alive until the last snapshot holding them is dropped.
///
/// Lookup is a binary search over a flat array of start addresses, with a last-hit index
/// checked first, so repeated lookups in the same region cost two comparisons.
///
/// It implements vm-memory's [`GuestMemoryBackend`], so `vm_memory::Bytes<GuestAddress>` reads
/// and writes work on it and rust-vmm device crates can take it as their guest memory. That
/// `Bytes` is vm-memory's own, which reads a stream (`read_volatile_from`) once per region the
/// range crosses: a short read can leave a gap between regions that the count does not show.
/// [`Snapshot::bytes`] stops at the first short read instead.
///
/// # Lifetimes
///
/// What a lookup returns borrows the snapshot, as the snapshot is what keeps the regions (and
/// their memory) alive: a region found in a snapshot cannot outlive it (take an `Arc` with
/// [`find_arc`](Self::find_arc) to keep one)...
///
/// ```compile_fail,E0597
/// use memvisor_space::{AddressSpace, Layout, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
/// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)]).unwrap();
/// let region = {
///     let snapshot = space.snapshot();
///     snapshot.find_region(GuestAddress(0)).unwrap()
/// };
/// assert_eq!(region.size(), 0x1000);
/// ```
///
/// ...nor the guard [`AddressSpace::memory`](crate::AddressSpace::memory) gives, nor can
/// [`bytes`](Self::bytes)...
///
/// ```compile_fail,E0716
/// use memvisor_space::{AddressSpace, Layout, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
/// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)]).unwrap();
/// let region = space.memory().find_region(GuestAddress(0)).unwrap();
/// assert_eq!(region.size(), 0x1000);
/// ```
///
/// ```compile_fail,E0716
/// use memvisor_space::{AddressSpace, GuestBytes, Layout};
///
/// let space = AddressSpace::plan(Layout::x86_64().ram(1 << 30).build().unwrap(), []).unwrap();
/// let bytes: GuestBytes<'_> = space.snapshot().bytes();
/// drop(bytes);
/// ```
///
/// ...and a region a [`SpaceReader`](crate::SpaceReader) found is gone from view at the
/// reader's next lookup, which may move it to a newer snapshot and drop the old one:
///
/// ```compile_fail,E0499
/// use memvisor_space::{AddressSpace, Layout, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
/// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)]).unwrap();
/// let mut reader = space.reader();
/// let first = reader.find_region(GuestAddress(0)).unwrap();
/// let again = reader.find_region(GuestAddress(0)).unwrap();
/// assert_eq!(first.size(), again.size());
/// ```
///
/// A listener is told of a region only for the length of the call: it keeps an `Arc` (a clone
/// of `event.region`), never the borrowed event.
///
/// ```compile_fail,E0521
/// use std::sync::{Arc, Mutex};
///
/// use memvisor_space::{AddressSpace, Layout, Region, RegionEvent};
///
/// static KEPT: Mutex<Option<&'static Arc<Region>>> = Mutex::new(None);
/// let space = AddressSpace::plan(Layout::x86_64().ram(1 << 30).build().unwrap(), []).unwrap();
/// space.add_listener(Arc::new(|e: &RegionEvent<'_>| {
///     *KEPT.lock().unwrap() = Some(e.region);
///     Ok(())
/// })).unwrap();
/// ```
///
/// The same code holding what keeps the regions alive compiles:
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use memvisor_space::{AddressSpace, Layout, Region, RegionEvent, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build()?;
/// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 0x1000)])?;
/// let snapshot = space.snapshot();
/// let region = snapshot.find_region(GuestAddress(0)).unwrap();
/// let guard = space.memory();
/// let also = guard.find_region(GuestAddress(0)).unwrap();
/// let bytes = snapshot.bytes();
/// let mut reader = space.reader();
/// let size = reader.find_region(GuestAddress(0)).unwrap().size();
/// let again = reader.find_region(GuestAddress(0)).unwrap();
/// assert_eq!((region.size(), also.size(), size), (again.size(), 0x1000, 0x1000));
/// drop(bytes);
/// static KEPT: Mutex<Option<Arc<Region>>> = Mutex::new(None);
/// space.add_listener(Arc::new(|e: &RegionEvent<'_>| {
///     *KEPT.lock().unwrap() = Some(Arc::clone(e.region));
///     Ok(())
/// }))?;
/// # Ok::<(), memvisor_space::Error>(())
/// ```
pub struct Snapshot {
    /// Start address of each region, sorted (the binary search runs over this dense array),
    /// and the rest of each region's entry at the same index, in one allocation.
    table: Table,
    /// Owners of the regions, in chunks, in no particular order; they keep the entries valid.
    owners: Owners,
    layout: Arc<Layout>,
    generation: u64,
}

// SAFETY: the `NonNull<Region>` pointers in the entries point into regions owned by `owners`
// (`Arc<Region>`, and `Region` is `Send + Sync`), which live exactly as long as the snapshot;
// they are only used for shared access. The table's hit index is atomic.
unsafe impl Send for Snapshot {}
// SAFETY: as for `Send`: all `&self` methods only read, apart from the atomic hit index.
unsafe impl Sync for Snapshot {}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("regions", &self.regions().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// A snapshot of `regions` (with their slot numbers), which are sorted here and must not
    /// overlap.
    pub(crate) fn new(
        layout: Arc<Layout>,
        mut regions: Vec<(Arc<Region>, Option<u32>)>,
        generation: u64,
    ) -> Result<Self> {
        regions.sort_by_key(|(r, _)| r.base());
        for pair in regions.windows(2) {
            let (a, b) = (&pair[0].0, &pair[1].0);
            if b.base().0 <= a.last().0 {
                return Err(overlap(b, a));
            }
        }
        let starts: Vec<u64> = regions.iter().map(|(r, _)| r.base().0).collect();
        let entries: Vec<Entry> = regions.iter().map(|(r, slot)| entry(r, *slot)).collect();
        let owners = Owners::chunked(regions.into_iter().map(|(r, _)| r));
        Ok(Self {
            table: Table::from_parts(&starts, &entries),
            owners,
            layout,
            generation,
        })
    }

    /// The index of the region that would hold `addr`: the last one starting at or before it.
    #[inline]
    fn candidate(&self, addr: u64) -> Option<usize> {
        // The standard library's binary search compiles to conditional moves, with no
        // branch to mispredict per level; `partition_point` has no found / not-found split.
        self.table
            .starts()
            .partition_point(|&s| s <= addr)
            .checked_sub(1)
    }

    /// The index and entry of the region holding `addr`.
    #[inline]
    fn entry_of(&self, addr: GuestAddress) -> Option<(usize, &Entry)> {
        let (starts, entries) = (self.table.starts(), self.table.entries());
        let Some(index) = self.table.hit_index() else {
            // Small tables have none: a search of a few entries costs about what the hit index
            // would save.
            let i = self.candidate(addr.0)?;
            let (start, e) = (*starts.get(i)?, entries.get(i)?);
            // `start <= addr` (from `candidate`), so this does not wrap.
            return (addr.0 - start <= e.span).then_some((i, e));
        };
        let hit = index.hit.load(Ordering::Relaxed);
        // Off (the usual state under random lookups) makes this branch predictable.
        if hit != HIT_OFF {
            if let (Some(&start), Some(e)) = (starts.get(hit), entries.get(hit))
                && addr.0.wrapping_sub(start) <= e.span
            {
                return Some((hit, e));
            }
            index.hit.store(HIT_OFF, Ordering::Relaxed);
        }
        let i = self.candidate(addr.0)?;
        // `candidate` returns an index of `starts`, which is as long as `entries`.
        let (start, e) = (starts[i], entries.get(i)?);
        // `start <= addr` (from `candidate`), so this does not wrap.
        if addr.0 - start <= e.span {
            // The hit index is turned on only when two lookups in a row found one region, so
            // that random lookups mostly leave it off. `previous` is stored with the index just
            // found, which does not depend on what it held: no chain from one lookup to the
            // next runs through it (a streak count would be one, and would bound the rate of
            // random lookups).
            let previous = index.previous.load(Ordering::Relaxed);
            index.previous.store(i, Ordering::Relaxed);
            if previous == i {
                index.hit.store(i, Ordering::Relaxed);
            }
            Some((i, e))
        } else {
            None
        }
    }

    fn region_at(&self, i: usize) -> &Region {
        // SAFETY: every entry points to a region owned by `self.owners`, alive as long as
        // `self`; only shared references are made.
        unsafe { self.table.entries()[i].region.as_ref() }
    }

    /// The region holding `addr`, in O(log n), or at once if it is the one the previous lookup
    /// found.
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, Layout, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// let space = AddressSpace::builder(layout)
    ///     .region(RegionSpec::ram(GuestAddress(0), 1 << 20))
    ///     .plan()?;
    /// let snap = space.snapshot();
    /// assert_eq!(snap.find_region(GuestAddress(0x1234)).map(|r| r.base()), Some(GuestAddress(0)));
    /// assert!(snap.find_region(GuestAddress(1 << 20)).is_none());
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn find_region(&self, addr: GuestAddress) -> Option<&Region> {
        // SAFETY: every entry points to a region owned by `self.owners`, alive as long as
        // `self`; only shared references are made.
        self.entry_of(addr)
            .map(|(_, e)| unsafe { e.region.as_ref() })
    }

    /// The region holding `addr`, as a shared reference that outlives the snapshot.
    #[must_use]
    pub fn find_arc(&self, addr: GuestAddress) -> Option<Arc<Region>> {
        let (_, e) = self.entry_of(addr)?;
        let ptr = e.region.as_ptr().cast_const();
        // SAFETY: `ptr` came from `Arc::as_ptr` of an `Arc<Region>` in `self.owners`, which is
        // alive, so its strong count is at least 1 and stays so during these two calls; the
        // increment is then owned by the `Arc` made from it.
        unsafe {
            Arc::increment_strong_count(ptr);
            Some(Arc::from_raw(ptr))
        }
    }

    /// The memory-slot number of the region holding `addr` (regions with a memory backing get
    /// one when they enter the address space).
    #[must_use]
    pub fn slot(&self, addr: GuestAddress) -> Option<u32> {
        let slot = self.entry_of(addr)?.1.slot;
        (slot != NO_SLOT).then_some(slot)
    }

    /// The number of regions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.entries().len()
    }

    /// Whether there are no regions.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.entries().is_empty()
    }

    /// The regions in address order.
    pub fn regions(&self) -> impl DoubleEndedIterator<Item = &Region> + ExactSizeIterator + '_ {
        (0..self.table.entries().len()).map(|i| self.region_at(i))
    }

    /// The regions in address order with their memory-slot numbers.
    pub fn regions_with_slots(&self) -> impl ExactSizeIterator<Item = (&Region, Option<u32>)> + '_ {
        (0..self.table.entries().len()).map(|i| {
            let slot = self.table.entries()[i].slot;
            (self.region_at(i), (slot != NO_SLOT).then_some(slot))
        })
    }

    /// The type of the region holding `addr`.
    #[must_use]
    pub fn region_type(&self, addr: GuestAddress) -> Option<RegionType> {
        self.find_region(addr).map(Region::ty)
    }

    /// The access rights at `addr`.
    #[must_use]
    pub fn protection(&self, addr: GuestAddress) -> Option<Protection> {
        self.find_region(addr).map(Region::protection)
    }

    /// The NUMA binding of the region holding `addr`.
    #[must_use]
    pub fn numa_binding(&self, addr: GuestAddress) -> Option<&NumaBinding> {
        self.find_region(addr).and_then(Region::numa)
    }

    /// The (first) host NUMA node of the region holding `addr`.
    #[must_use]
    pub fn numa_node(&self, addr: GuestAddress) -> Option<u32> {
        self.numa_binding(addr).and_then(NumaBinding::first_node)
    }

    /// Whether `addr` is in a DAX region.
    #[must_use]
    pub fn is_dax(&self, addr: GuestAddress) -> bool {
        self.find_region(addr).is_some_and(Region::is_dax)
    }

    /// Whether `addr` is in a reserved region.
    #[must_use]
    pub fn is_reserved(&self, addr: GuestAddress) -> bool {
        self.region_type(addr) == Some(RegionType::Reserved)
    }

    /// The last address of the highest RAM region.
    #[must_use]
    pub fn last_ram_addr(&self) -> Option<GuestAddress> {
        self.regions()
            .rev()
            .find(|r| r.ty() == RegionType::Ram)
            .map(Region::last)
    }

    /// The last address of the highest region of any type.
    #[must_use]
    pub fn last_region_addr(&self) -> Option<GuestAddress> {
        let (start, e) = (self.table.starts().last()?, self.table.entries().last()?);
        Some(GuestAddress(start + e.span))
    }

    /// Total bytes of regions of type `ty`, at most `u64::MAX`: regions covering the whole
    /// 64-bit space (2^64 bytes) give `u64::MAX`.
    #[must_use]
    pub fn total_size(&self, ty: RegionType) -> u64 {
        self.regions()
            .filter(|r| r.ty() == ty)
            .fold(0, |total: u64, r| total.saturating_add(r.size()))
    }

    /// Gives the guest pages of `addr..addr + len` back to the host (balloon, virtio-mem,
    /// free page reporting); the range must lie inside one region. See [`Region::discard`].
    ///
    /// # Errors
    /// [`Error::RegionNotFound`] if no region holds `addr`; then as [`Region::discard`] (a
    /// range running past the region's end is [`Error::DiscardOutOfRange`]).
    pub fn discard(&self, addr: GuestAddress, len: u64) -> Result<()> {
        let region = self.find_region(addr).ok_or(Error::RegionNotFound {
            base: addr.0,
            size: len,
        })?;
        // `find_region` found `addr` inside the region, so this does not wrap.
        region.discard(addr.0 - region.base().0, len)
    }

    /// The layout the regions were checked against.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn layout_arc(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// How many changes the address space had seen when this snapshot was made.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A [`Placer`] over the layout with every region of this snapshot taken: where a new
    /// device window or hotplug slot can go. Besides the regions it holds only what KVM's
    /// in-kernel devices use on x86-64, as [`Layout::placer`](crate::Layout::placer) does (the
    /// timer's GSIs 0 and 2, the ports of
    /// [`Platform::kernel_ports`](crate::Platform::kernel_ports)): interrupts and I/O ports
    /// given out elsewhere (by a [`plan`](crate::plan::plan), whose
    /// [`Plan::placer`](crate::plan::Plan) has them all) are free in it, and so are hotplug
    /// slots planned but not plugged. A reserved region outside every window (where nothing
    /// can be placed) holds nothing in it.
    ///
    /// # Errors
    /// [`Error::Taken`] cannot happen for a valid snapshot; it is passed on from the placer.
    /// [`Error::Allocator`] if an allocator of the placer fails (the heap refused its
    /// bookkeeping).
    pub fn placer(&self) -> Result<Placer> {
        let platform = self.layout.arch().map(crate::Platform::new);
        let mut placer = self.layout.placer_with(platform.as_ref())?;
        if let Some(p) = &platform {
            p.hold_kernel_devices(&mut placer)?;
        }
        for r in self.regions() {
            // A reserved region may lie outside every window: nothing is placed there.
            placer.take_parts(r.range(), &format!("region {:#x}", r.base().0))?;
        }
        Ok(placer)
    }

    /// Checks that `region` does not overlap any region here; returns the index it would take.
    pub(crate) fn check_free(&self, region: &Region) -> Result<usize> {
        let at = self
            .table
            .starts()
            .partition_point(|&s| s < region.base().0);
        if let Some(prev) = at.checked_sub(1)
            && self.table.starts()[prev] + self.table.entries()[prev].span >= region.base().0
        {
            return Err(overlap(region, self.region_at(prev)));
        }
        if let Some(&next) = self.table.starts().get(at)
            && next <= region.last().0
        {
            return Err(overlap(region, self.region_at(at)));
        }
        Ok(at)
    }

    /// A new snapshot with `region` added.
    #[cfg(test)]
    pub(crate) fn with_inserted(
        &self,
        region: Arc<Region>,
        slot: Option<u32>,
        generation: u64,
    ) -> Result<Self> {
        let at = self.check_free(&region)?;
        self.with_inserted_at(at, region, slot, generation)
    }

    /// A new snapshot with `region` added at index `at`, which [`check_free`](Self::check_free)
    /// returned for it.
    ///
    /// # Errors
    /// [`Error::Allocator`] if the heap refuses the new table.
    pub(crate) fn with_inserted_at(
        &self,
        at: usize,
        region: Arc<Region>,
        slot: Option<u32>,
        generation: u64,
    ) -> Result<Self> {
        let table = self
            .table
            .inserted(at, region.base().0, entry(&region, slot))
            .map_err(|layout| table_refused(layout, region.base().0))?;
        // Growing the last chunk copies its references, a chunk of its own shares every
        // chunk: take the cheaper while the chunk list stays short.
        let chunks = self.owners.len();
        let owners = match self.owners.last() {
            Some((c, last))
                if last.len() < CHUNK
                    && (last.len() < chunks || chunks >= max_chunks(self.len() + 1)) =>
            {
                // Exact-size iterators: the new chunk is allocated once.
                let grown = last.iter().cloned().chain(std::iter::once(region));
                self.owners.replaced(c, Some(grown.collect()))
            }
            _ => self.owners.pushed(Chunk::One(region)),
        };
        Ok(self.successor(table, owners, generation))
    }

    /// A snapshot over the same layout with these contents.
    fn successor(&self, table: Table, owners: Owners, generation: u64) -> Self {
        Self {
            table,
            owners,
            layout: Arc::clone(&self.layout),
            generation,
        }
    }

    /// A new snapshot without the region at exactly `base` of `size` bytes, and where that
    /// region is in this one.
    #[cfg(test)]
    pub(crate) fn with_removed(
        &self,
        base: GuestAddress,
        size: u64,
        generation: u64,
    ) -> Result<(Self, Removal)> {
        let removal = self.find_removal(base, size)?;
        Ok((self.with_removed_at(&removal, generation)?, removal))
    }

    /// Where the region at exactly `base` of `size` bytes is, to take it out with
    /// [`with_removed_at`](Self::with_removed_at).
    #[inline]
    pub(crate) fn find_removal(&self, base: GuestAddress, size: u64) -> Result<Removal> {
        let not_found = || Error::RegionNotFound { base: base.0, size };
        let at = self
            .table
            .starts()
            .binary_search(&base.0)
            .map_err(|_| not_found())?;
        let e = &self.table.entries()[at];
        // The entry's span is the region's size less one (and sizes are not 0).
        if e.span != size.wrapping_sub(1) {
            return Err(not_found());
        }
        let target = e.region.as_ptr().cast_const();
        // Newest chunks first: hotplug tends to remove what it added last.
        let (chunk, pos) = (0..self.owners.len())
            .rev()
            .find_map(|c| {
                let pos = (self.owners.get(c)?.iter()).position(|r| Arc::as_ptr(r) == target)?;
                Some((c, pos))
            })
            .expect("every entry has an owner");
        Ok(Removal {
            at,
            chunk,
            pos,
            slot: (e.slot != NO_SLOT).then_some(e.slot),
        })
    }

    /// A new snapshot without the region that `removal` (which
    /// [`find_removal`](Self::find_removal) returned for this snapshot) names.
    ///
    /// # Errors
    /// [`Error::Allocator`] if the heap refuses the new table.
    #[inline]
    pub(crate) fn with_removed_at(&self, removal: &Removal, generation: u64) -> Result<Self> {
        let Removal {
            at, chunk: c, pos, ..
        } = *removal;
        // The table first: refused, nothing else was made.
        let table = self
            .table
            .removed(at)
            .map_err(|layout| table_refused(layout, self.table.starts()[at]))?;
        let chunk = self.owners.chunk(c);
        // Exact-size iterators: the new chunk is allocated once (not at all when empty).
        let shrunk = (chunk.len() > 1).then(|| {
            chunk[..pos]
                .iter()
                .chain(&chunk[pos + 1..])
                .cloned()
                .collect()
        });
        let mut owners = self.owners.replaced(c, shrunk);
        let len = self.table.len() - 1;
        if owners.len() > max_chunks(len) {
            // Many half-empty chunks after removals: repack.
            owners = Owners::chunked(owners.chunks().flat_map(|c| c.iter().cloned()));
        }
        Ok(self.successor(table, owners, generation))
    }

    /// The region that `removal` (from this snapshot's [`find_removal`](Self::find_removal))
    /// takes out.
    pub(crate) fn removed_region(&self, removal: &Removal) -> &Arc<Region> {
        &self.owners.chunk(removal.chunk)[removal.pos]
    }

    /// The region that `removal` takes out, from the snapshot it was found in: moved out when
    /// nobody else holds the snapshot any more (no reference-count update), else a new
    /// reference.
    pub(crate) fn take_removed(this: Arc<Self>, removal: &Removal) -> Arc<Region> {
        match Arc::try_unwrap(this) {
            Ok(snapshot) => snapshot.owners.take(removal.chunk, removal.pos),
            Err(shared) => Arc::clone(shared.removed_region(removal)),
        }
    }

    /// Checks the internal invariants (tests and debugging): sorted, non-overlapping entries
    /// that agree with their regions, each region owned exactly once.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        assert_eq!(self.table.starts().len(), self.table.entries().len());
        let mut prev_last: Option<u64> = None;
        for (i, r) in self.regions().enumerate() {
            assert_eq!(self.table.starts()[i], r.base().0);
            assert_eq!(self.table.entries()[i].span, r.size() - 1);
            if let Some(p) = prev_last {
                assert!(p < r.base().0, "regions overlap or are unsorted");
            }
            prev_last = Some(r.last().0);
        }
        let mut owned: Vec<*const Region> = self
            .owners
            .chunks()
            .flat_map(|c| c.iter().map(Arc::as_ptr))
            .collect();
        owned.sort_unstable();
        let mut pointed: Vec<*const Region> = self
            .table
            .entries()
            .iter()
            .map(|e| e.region.as_ptr().cast_const())
            .collect();
        pointed.sort_unstable();
        assert_eq!(owned, pointed, "regions not owned exactly once");
    }
}

fn entry(region: &Arc<Region>, slot: Option<u32>) -> Entry {
    Entry {
        span: region.size() - 1,
        // SAFETY: `Arc::as_ptr` is never null. The pointer keeps the provenance of the whole
        // `Arc` allocation, so `find_arc` may turn it back into an `Arc`; it is only ever used
        // for shared access.
        region: unsafe { NonNull::new_unchecked(Arc::as_ptr(region).cast_mut()) },
        slot: slot.unwrap_or(NO_SLOT),
    }
}

fn overlap(new: &Region, old: &Region) -> Error {
    Error::Overlap {
        base: new.base().0,
        size: new.size(),
        other_base: old.base().0,
        other_size: old.size(),
    }
}

/// vm-memory's view of a snapshot is its guest memory: the regions with host memory. Device
/// (MMIO) and reserved regions, and every region of a planned address space, have none, so
/// vm-memory's `find_region` does not find them and `iter` / `num_regions` do not count them;
/// an e820 map or a memory-slot table built from `iter()` therefore never includes MMIO. (The
/// inherent [`Snapshot::find_region`], [`Snapshot::regions`] and [`Snapshot::len`] see every
/// region, of every type.)
impl GuestMemoryBackend for Snapshot {
    type R = Region;

    fn num_regions(&self) -> usize {
        self.regions().filter(|r| r.is_backed()).count()
    }

    #[inline]
    fn find_region(&self, addr: GuestAddress) -> Option<&Region> {
        Snapshot::find_region(self, addr).filter(|r| r.is_backed())
    }

    fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions().filter(|r| r.is_backed())
    }
}

/// The error for a snapshot table of `layout` that the heap refused, for a change of the
/// region at `base`.
fn table_refused(layout: std::alloc::Layout, base: u64) -> Error {
    Error::Allocator {
        what: "the snapshot table",
        owner: format!("the region at {base:#x}"),
        source: memvisor_resources::Error::HeapRefused {
            bytes: u64::try_from(layout.size()).unwrap_or(u64::MAX),
        },
    }
}
#[cfg(test)]
mod tests {
    use super::table::HIT_MIN_REGIONS;
    use super::*;
    use crate::spec::{RegionSpec, host_page_size};

    fn layout() -> Arc<Layout> {
        Arc::new(Layout::new(GuestAddress(u64::MAX), []).unwrap())
    }

    fn region(ty: RegionType, page: u64, pages: u64) -> Arc<Region> {
        let p = host_page_size();
        let spec = RegionSpec::new(ty, GuestAddress(page * p), pages * p);
        Arc::new(Region::plan(spec).unwrap())
    }

    fn snapshot(pages: &[(u64, u64)]) -> Snapshot {
        let regions = pages
            .iter()
            .map(|&(at, n)| (region(RegionType::Reserved, at, n), None))
            .collect();
        Snapshot::new(layout(), regions, 0).unwrap()
    }

    #[test]
    fn new_unsorted_input_sorts() {
        let s = snapshot(&[(10, 2), (0, 1), (4, 4)]);
        let bases: Vec<u64> = s.regions().map(|r| r.base().0 / host_page_size()).collect();
        assert_eq!(bases, [0, 4, 10]);
        s.check_invariants();
    }

    #[test]
    fn new_overlap_errors() {
        let regions = vec![
            (region(RegionType::Reserved, 0, 2), None),
            (region(RegionType::Reserved, 1, 2), None),
        ];
        let err = Snapshot::new(layout(), regions, 0).unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }), "{err}");
    }

    #[test]
    fn find_region_edges_and_gaps() {
        let p = host_page_size();
        let s = snapshot(&[(1, 2), (5, 1)]);
        assert!(s.find_region(GuestAddress(0)).is_none());
        assert_eq!(s.find_region(GuestAddress(p)).unwrap().base().0, p);
        assert_eq!(s.find_region(GuestAddress(3 * p - 1)).unwrap().base().0, p);
        assert!(s.find_region(GuestAddress(3 * p)).is_none());
        assert_eq!(s.find_region(GuestAddress(5 * p)).unwrap().base().0, 5 * p);
        assert!(s.find_region(GuestAddress(u64::MAX)).is_none());
        // The last-hit path answers the same after a miss elsewhere.
        assert_eq!(s.find_region(GuestAddress(p + 1)).unwrap().base().0, p);
        assert_eq!(s.find_region(GuestAddress(p + 2)).unwrap().base().0, p);
        assert!(s.find_region(GuestAddress(4 * p)).is_none());
    }

    #[test]
    fn find_region_streak_turns_hit_on_and_a_miss_turns_it_off() {
        let p = host_page_size();
        let mut pages: Vec<(u64, u64)> = (0..=HIT_MIN_REGIONS as u64)
            .map(|i| (10 + 2 * i, 1))
            .collect();
        pages.extend([(0, 1), (2, 1), (4, 1)]);
        let s = snapshot(&pages);
        let hit = || {
            s.table
                .hit_index()
                .map_or(HIT_OFF, |h| h.hit.load(Ordering::Relaxed))
        };
        // Alternating lookups never make a streak.
        for _ in 0..8 {
            assert_eq!(s.find_region(GuestAddress(0)).unwrap().base().0, 0);
            assert_eq!(s.find_region(GuestAddress(2 * p)).unwrap().base().0, 2 * p);
        }
        assert_eq!(hit(), HIT_OFF);
        // A streak of lookups in one region makes it the hit.
        for _ in 0..=HIT_STREAK {
            assert_eq!(
                s.find_region(GuestAddress(4 * p + 8)).unwrap().base().0,
                4 * p
            );
        }
        assert_eq!(hit(), 2);
        assert_eq!(s.find_region(GuestAddress(4 * p)).unwrap().base().0, 4 * p);
        // A lookup elsewhere (found or not) turns it off, and answers right.
        assert!(s.find_region(GuestAddress(p)).is_none());
        assert_eq!(hit(), HIT_OFF);
        assert_eq!(
            s.find_region(GuestAddress(2 * p + 1)).unwrap().base().0,
            2 * p
        );
    }

    #[test]
    fn find_region_few_regions_searches_without_hit_index() {
        let p = host_page_size();
        let s = snapshot(&[(0, 2), (4, 1)]);
        for _ in 0..=HIT_STREAK {
            assert_eq!(s.find_region(GuestAddress(p)).unwrap().base().0, 0);
        }
        assert_eq!(
            s.table
                .hit_index()
                .map_or(HIT_OFF, |h| h.hit.load(Ordering::Relaxed)),
            HIT_OFF
        );
        assert!(s.find_region(GuestAddress(2 * p)).is_none());
        assert_eq!(s.find_region(GuestAddress(4 * p)).unwrap().base().0, 4 * p);
    }

    #[test]
    fn find_region_empty_is_none() {
        let s = snapshot(&[]);
        assert!(s.find_region(GuestAddress(0)).is_none());
        assert!(s.is_empty());
        assert_eq!(s.last_region_addr(), None);
    }

    #[test]
    fn with_inserted_overlap_errors_and_keeps_original() {
        let s = snapshot(&[(2, 2)]);
        let err = s
            .with_inserted(region(RegionType::Reserved, 3, 2), None, 1)
            .unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }));
        let err = s
            .with_inserted(region(RegionType::Reserved, 1, 2), None, 1)
            .unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }));
        assert_eq!(s.len(), 1);
        s.check_invariants();
    }

    #[test]
    fn with_inserted_many_chunks_then_removed_all() {
        let mut s = snapshot(&[]);
        let n = if cfg!(miri) { 70 } else { 300 };
        for i in (0..n).rev() {
            s = s
                .with_inserted(region(RegionType::Reserved, 2 * i, 1), Some(7), i + 1)
                .unwrap();
        }
        s.check_invariants();
        assert_eq!(s.len(), usize::try_from(n).unwrap());
        assert_eq!(s.slot(GuestAddress(0)), Some(7));
        let p = host_page_size();
        for i in 0..n {
            let (next, removal) = s.with_removed(GuestAddress(2 * i * p), p, 0).unwrap();
            assert_eq!(s.removed_region(&removal).base().0, 2 * i * p);
            assert_eq!(removal.slot, Some(7));
            // Each snapshot checked natively; under Miri, where a check walks every region
            // interpreted, every eighth and the last.
            if !cfg!(miri) || i % 8 == 0 || i + 1 == n {
                next.check_invariants();
            }
            s = next;
        }
        assert!(s.is_empty());
    }

    #[test]
    fn with_removed_wrong_size_errors() {
        let p = host_page_size();
        let s = snapshot(&[(2, 2)]);
        assert!(matches!(
            s.with_removed(GuestAddress(2 * p), p, 1),
            Err(Error::RegionNotFound { .. })
        ));
        assert!(matches!(
            s.with_removed(GuestAddress(3 * p), p, 1),
            Err(Error::RegionNotFound { .. })
        ));
    }

    #[test]
    fn find_arc_outlives_snapshot() {
        let p = host_page_size();
        let s = snapshot(&[(2, 2)]);
        let r = s.find_arc(GuestAddress(2 * p)).unwrap();
        drop(s);
        assert_eq!(r.base().0, 2 * p);
        assert_eq!(Arc::strong_count(&r), 1);
    }

    #[test]
    fn queries_answer_per_region() {
        let p = host_page_size();
        let ram =
            Arc::new(
                Region::plan(RegionSpec::ram(GuestAddress(0), p).with_numa(
                    crate::NumaBinding::new(crate::NumaPolicy::Interleave, [3, 1]),
                ))
                .unwrap(),
            );
        let dax = Arc::new(
            Region::plan(RegionSpec::new(RegionType::Dax, GuestAddress(4 * p), p)).unwrap(),
        );
        let res = region(RegionType::Reserved, 8, 1);
        let s = Snapshot::new(
            layout(),
            vec![(ram, Some(0)), (dax, Some(1)), (res, None)],
            0,
        )
        .unwrap();
        assert_eq!(s.numa_node(GuestAddress(0)), Some(1));
        assert_eq!(s.numa_node(GuestAddress(4 * p)), None);
        assert!(s.is_dax(GuestAddress(4 * p)));
        assert!(!s.is_dax(GuestAddress(0)));
        assert!(s.is_reserved(GuestAddress(8 * p)));
        assert_eq!(s.protection(GuestAddress(0)), Some(Protection::ReadWrite));
        assert_eq!(s.last_ram_addr(), Some(GuestAddress(p - 1)));
        assert_eq!(s.last_region_addr(), Some(GuestAddress(9 * p - 1)));
        assert_eq!(s.total_size(RegionType::Dax), p);
        assert_eq!(s.slot(GuestAddress(8 * p)), None);
        assert_eq!(s.slot(GuestAddress(4 * p)), Some(1));
        assert_eq!(s.len(), 3);
        // None of these planned regions has host memory: vm-memory sees no guest memory.
        assert_eq!(GuestMemoryBackend::num_regions(&s), 0);
        assert!(GuestMemoryBackend::find_region(&s, GuestAddress(0)).is_none());
        assert_eq!(GuestMemoryBackend::iter(&s).count(), 0);
    }
}
