//! [`AddressSpace`]: the hotplug handle. Readers take lock-free immutable [`Snapshot`]s;
//! writers are serialized by a mutex, build the next snapshot, tell the listeners and publish.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use arc_swap::cache::Cache;
use arc_swap::{ArcSwap, Guard};
use memvisor_resources::IdAllocator;
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::error::{Error, ListenerError, Result};
use crate::layout::{Layout, WindowKind};
use crate::memory::{self, BackingReport, HotplugWindow, RegionReport, Target};
use crate::region::Region;
use crate::snapshot::Snapshot;
use crate::spec::{RegionSpec, RegionType};

/// Default number of memory-slot numbers (KVM allows 32,764 user memory slots).
pub const DEFAULT_SLOTS: u32 = 32_764;

/// What happened to a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// It was added.
    Inserted,
    /// It was removed.
    Removed,
}

/// A change told to [`RegionListener`]s.
#[derive(Clone, Copy, Debug)]
pub struct RegionEvent<'a> {
    /// Added or removed.
    pub kind: ChangeKind,
    /// The region.
    pub region: &'a Arc<Region>,
    /// Its memory-slot number, if its backing has memory. A planned region (no host memory
    /// yet) of such a backing has one too, as it would backed, so a planned space numbers its
    /// slots as a backed one does.
    pub slot: Option<u32>,
    /// The generation of the snapshot that will hold the change.
    pub generation: u64,
}

/// Told of every insertion and removal, for example to update KVM memory slots.
///
/// Listeners run in the order they were added, under the writer lock, before the new snapshot
/// is published, so they see changes one at a time and in order. A listener that returns an
/// error cancels the change: the listeners before it are told the opposite change (their
/// errors and panics then ignored), and the operation returns [`Error::Listener`].
///
/// A listener that refuses (or panics on) that opposite change of an insertion is taken to
/// still map the region (a hypervisor slot it could not delete): a writable region over a file
/// is then compared with every region inserted or plugged later as a removed region still held
/// is ([`Error::FileAliased`]), until nothing holds it. Such a listener keeps the region's
/// `Arc` for as long as it maps its memory, and lets go of it when it can, at the latest when
/// asked to [`settle`](Self::settle).
///
/// A listener that panics is treated the same way: the change is cancelled, the listeners
/// before it are told the opposite change, the memory-slot number taken for it is given back,
/// and then the panic is resumed in the caller. (A panic is a bug in the listener, so it is not
/// turned into an error; but the address space and the listeners that did not panic stay in
/// step, and the address space stays usable once the caller catches the panic.)
///
/// A listener may read the address space it listens to ([`AddressSpace::snapshot`],
/// [`memory`](AddressSpace::memory), [`find_region`](AddressSpace::find_region)), and sees it
/// as it was before the change. It cannot change it: the change in progress holds the writer
/// lock until its listeners return, so [`insert_region`](AddressSpace::insert_region),
/// [`remove_region`](AddressSpace::remove_region) and [`plug`](AddressSpace::plug) called from
/// a listener of the same space return [`Error::ListenerReentry`] at once (pass it on to refuse
/// the change), as do [`add_listener`](AddressSpace::add_listener) and
/// [`remove_listener`](AddressSpace::remove_listener), rather than wait for that lock forever. A
/// listener may change another address space, unless a listener of that one changes this one from
/// another thread at the same time: each change would wait for the other's lock. The same holds for
/// [`settle`](Self::settle).
pub trait RegionListener: Send + Sync {
    /// Handles one change.
    ///
    /// # Errors
    /// Any reason to refuse the change.
    fn region_changed(&self, event: &RegionEvent<'_>) -> Result<(), ListenerError>;

    /// Lets go, if it can now, of regions the address space no longer holds but this listener
    /// still keeps (for example one whose insertion was refused, kept because an outside party
    /// still used its memory when the listener was told to undo it). A region plugged into
    /// the hotplug window keeps its place there until its last holder drops it, and a
    /// writable region over a file keeps its file bytes from other regions
    /// ([`Error::FileAliased`]), so [`AddressSpace::insert_region`] and
    /// [`AddressSpace::plug`] call this on every listener, in order, under the writer lock,
    /// before they compare the region with those held outside the space (and a plug before it
    /// claims the place; a place still kept afterwards is [`Error::SlotBusy`]). Nothing is
    /// being changed, so there is nothing to refuse. Does nothing unless overridden.
    ///
    /// # Panics
    /// A panic here leaves the insertion or the plug before it changed anything, and is
    /// resumed in its caller.
    fn settle(&self) {}
}

impl<F> RegionListener for F
where
    F: Fn(&RegionEvent<'_>) -> Result<(), ListenerError> + Send + Sync,
{
    fn region_changed(&self, event: &RegionEvent<'_>) -> Result<(), ListenerError> {
        self(event)
    }
}

/// The snapshot that the address space's `ArcSwap` holds, as its writers see it: a pointer to
/// it rather than a second reference, so that a change costs two reference-count updates less.
/// Only a writer holding the writer lock replaces the `ArcSwap`'s snapshot, in
/// [`AddressSpace::publish`], which points this at the new one; so whenever the writer state is
/// borrowed (the lock is held), this is the snapshot the `ArcSwap` holds and keeps alive, and it
/// stays there until the borrow ends.
struct Current(*const Snapshot);

// SAFETY: the pointer is only dereferenced into a shared reference, by the holder of the writer
// lock (see `Current`); `Snapshot` is `Send + Sync`.
unsafe impl Send for Current {}

impl Current {
    /// The published snapshot.
    fn get(&self) -> &Snapshot {
        // SAFETY: `self` is borrowed from the writer state, so the writer lock is held and the
        // `ArcSwap` (kept alive by the `AddressSpace` whose lock it is) holds this snapshot
        // until the borrow ends (see `Current`); only shared references are made.
        unsafe { &*self.0 }
    }
}

thread_local! {
    /// The writer locks this thread holds, by the address of their mutex. A listener runs
    /// under its space's writer lock: a writer method of that space called from it finds its
    /// lock here and fails instead of waiting for itself.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The writer lock of an address space, held by this thread (and recorded in [`HELD`] while
/// held).
struct WriterLock<'a> {
    guard: MutexGuard<'a, Writer>,
    key: usize,
}

impl Deref for WriterLock<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.guard
    }
}

impl DerefMut for WriterLock<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.guard
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        // `try_with`: a lock dropped while the thread's locals are torn down has nothing to
        // take out.
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|&k| k == self.key) {
                held.swap_remove(i);
            }
        });
    }
}

struct Writer {
    /// The published snapshot.
    current: Current,
    listeners: Vec<Arc<dyn RegionListener>>,
    slots: IdAllocator,
    windows: Vec<Arc<HotplugWindow>>,
    generation: u64,
    /// Writable regions over a file that were removed while something still held them (an
    /// older snapshot, the caller of `remove_region`), or whose insertion was refused while a
    /// listener that could not undo it still holds them (a hypervisor slot it could not
    /// delete): a writer through that holder would change the bytes of a new region over the
    /// same file without marking its dirty log, so they are compared with a region added as
    /// those of the current snapshot are, until the last holder lets go. Pruned at every
    /// removal and addition; a region inserted again leaves it (it is in the snapshot then),
    /// and one is never listed twice. Room for an entry is made before the change that may
    /// add it ([`reserve_retired`]), so a heap refusal is an error before anything changed.
    retired: Vec<Weak<Region>>,
}

impl Writer {
    /// The removed regions in `retired` that something still holds, dropping the others,
    /// for a region to be added at `base`.
    ///
    /// # Errors
    /// [`Error::Allocator`] (with [`memvisor_resources::Error::HeapRefused`]) if the heap
    /// refuses the copy; `retired` is only pruned then.
    fn held_retired(&mut self, base: u64) -> Result<Vec<Arc<Region>>> {
        self.retired.retain(|weak| weak.strong_count() > 0);
        let mut held = Vec::new();
        held.try_reserve_exact(self.retired.len())
            .map_err(|_| Error::Allocator {
                what: HELD_COPY,
                owner: format!("the region at {base:#x}"),
                source: memvisor_resources::Error::HeapRefused {
                    bytes: u64::try_from(
                        self.retired.len().saturating_mul(size_of::<Arc<Region>>()),
                    )
                    .unwrap_or(u64::MAX),
                },
            })?;
        // Room was made for every entry: the pushes below do not allocate.
        self.retired.retain(|weak| match weak.upgrade() {
            Some(region) => {
                held.push(region);
                true
            }
            None => false,
        });
        Ok(held)
    }
}

/// Whether `region`, once out of the space while something still holds it, is listed in
/// `Writer::retired`: a writable region over a file (nothing else can alias another region's
/// bytes through its holder).
fn retires(region: &Region) -> bool {
    region.protection().writable() && GuestMemoryRegion::file_offset(region).is_some()
}

/// What [`Error::Allocator`] says `Writer::retired` allocates.
const RETIRED_ENTRY: &str = "a place in the list of file regions held outside the space";
/// What [`Error::Allocator`] says `Writer::held_retired` allocates.
const HELD_COPY: &str = "a copy of the list of file regions held outside the space";

/// Makes room in `retired` for `region`, if it is one the list takes ([`retires`]), before the
/// change that may add it, so that adding it cannot fail (or abort) once the change is made.
/// The list grows by doubling, as `Vec::push` would.
///
/// # Errors
/// [`Error::Allocator`] (with [`memvisor_resources::Error::HeapRefused`]) if the heap refuses
/// the room; the list is as it was.
fn reserve_retired(retired: &mut Vec<Weak<Region>>, region: &Region) -> Result<()> {
    if !retires(region) || retired.len() < retired.capacity() {
        return Ok(());
    }
    let want = retired.capacity().saturating_mul(2).max(4);
    retired
        .try_reserve_exact(want - retired.len())
        .map_err(|_| Error::Allocator {
            what: RETIRED_ENTRY,
            owner: format!("the region at {:#x}", region.base().0),
            source: memvisor_resources::Error::HeapRefused {
                bytes: u64::try_from(want.saturating_mul(size_of::<Weak<Region>>()))
                    .unwrap_or(u64::MAX),
            },
        })
}

/// The guest physical address space: a cheap, cloneable handle shared by readers and writers.
///
/// - Readers call [`snapshot`](Self::snapshot), [`memory`](Self::memory) or a
///   [`reader`](Self::reader) and get an immutable [`Snapshot`] without taking any lock.
/// - Writers ([`insert_region`](Self::insert_region), [`remove_region`](Self::remove_region),
///   [`plug`](Self::plug)) are serialized by one mutex: each builds the next snapshot from the
///   current one and publishes it, so no concurrent change is lost.
/// - Removed regions (and their host memory) live until the last snapshot holding them goes.
///
/// ```
/// use memvisor_space::{AddressSpace, Layout, Region, RegionSpec};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let layout = Layout::x86_64().ram(1 << 30).build()?;
/// let space = AddressSpace::plan(layout, [RegionSpec::ram(GuestAddress(0), 1 << 20)])?;
/// let extra = Region::plan(RegionSpec::ram(GuestAddress(1 << 20), 1 << 20))?;
/// space.insert_region(extra.into())?;
/// assert_eq!(space.snapshot().len(), 2);
/// let removed = space.remove_region(GuestAddress(0), 1 << 20)?;
/// assert_eq!(removed.size(), 1 << 20);
/// assert_eq!(space.snapshot().len(), 1);
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone)]
pub struct AddressSpace {
    current: Arc<ArcSwap<Snapshot>>,
    writer: Arc<Mutex<Writer>>,
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("snapshot", &self.current.load())
            .finish_non_exhaustive()
    }
}

/// Builds an [`AddressSpace`]; made by [`AddressSpace::builder`].
#[derive(Debug, Clone)]
pub struct SpaceBuilder {
    layout: Layout,
    specs: Vec<RegionSpec>,
    slots: u32,
}

impl SpaceBuilder {
    /// Adds a region.
    #[must_use]
    pub fn region(mut self, spec: RegionSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// Adds regions.
    #[must_use]
    pub fn regions(mut self, specs: impl IntoIterator<Item = RegionSpec>) -> Self {
        self.specs.extend(specs);
        self
    }

    /// How many memory-slot numbers to hand out (default [`DEFAULT_SLOTS`]). At least one:
    /// [`plan`](Self::plan) and [`back`](Self::back) refuse 0 with [`Error::NoSlotNumber`],
    /// even when no region needs a slot number, because regions inserted or plugged later
    /// draw from the same numbers.
    #[must_use]
    pub fn slots(mut self, count: u32) -> Self {
        self.slots = count;
        self
    }

    /// Checks every region (valid, inside its window, no overlap) without making memory.
    fn check(&self) -> Result<()> {
        let mut sorted: Vec<&RegionSpec> = self.specs.iter().collect();
        for spec in &sorted {
            spec.validate()?;
            self.layout.check(spec)?;
        }
        sorted.sort_by_key(|s| s.base);
        for pair in sorted.windows(2) {
            // Each spec was validated above, so its range exists.
            if pair[1].base <= pair[0].range()?.last().0 {
                return Err(Error::Overlap {
                    base: pair[1].base,
                    size: pair[1].size,
                    other_base: pair[0].base,
                    other_size: pair[0].size,
                });
            }
        }
        crate::alias::check_paths(&self.specs)?;
        let need = self.specs.iter().filter(|s| s.backing.has_memory()).count();
        if self.slots == 0 || need > self.slots as usize {
            return Err(Error::NoSlotNumber {
                count: u64::from(self.slots),
            });
        }
        Ok(())
    }

    /// Builds the address space as bookkeeping only: no region gets host memory.
    ///
    /// # Errors
    /// As [`RegionSpec::validate`] and [`Layout::check`] for each region; [`Error::Overlap`]
    /// for overlapping regions; [`Error::FileAliased`] for two regions backed by the same path
    /// (as written: a plan reads nothing from the host) at overlapping offsets, one of them
    /// writable; [`Error::NoSlotNumber`] for 0 slot numbers, or when more regions
    /// need a slot number than there are; [`Error::Allocator`] if the heap refuses the
    /// memory-slot allocator's bookkeeping.
    pub fn plan(self) -> Result<AddressSpace> {
        self.check()?;
        let regions = self
            .specs
            .iter()
            .map(|s| Region::plan(s.clone()).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        self.finish(regions, Vec::new())
    }

    /// Builds the address space with host memory for every region that has a memory backing:
    /// reserves the host range of each hotplug window, maps each region (hot-pluggable ones
    /// inside their window), binds, advises and prefaults it as its spec says.
    ///
    /// # Errors
    /// As [`plan`](Self::plan); [`Error::Unsupported`] for a region that needs a feature this
    /// host does not have; [`Error::WindowMisaligned`] for a hotplug window whose host range
    /// would not start or end on a host page boundary; [`Error::Reservation`] if the host
    /// refuses a window's reservation; then as [`Region::back`] for each region. The specs, slot
    /// numbers, host features, NUMA nodes, huge page pools (without a fallback), files,
    /// transparent huge pages asked of a file (without a fallback) and two regions over the
    /// same bytes of one file ([`Error::FileAliased`], by what the paths name, so a hard or
    /// symbolic link is the same file; checked again on the files as opened, once they are
    /// mapped) are checked before any memory is made; what
    /// can only fail in the making (the host's refusal of a mapping or of huge pages, a
    /// prefault) may fail after earlier regions got memory, which is then unmapped: nothing
    /// stays mapped after an error. A hot-pluggable region is made in its slot of the window
    /// as [`AddressSpace::plug`] makes it, but where its making fails and its slot cannot be
    /// turned back into reserved space the error is [`Error::SlotNotRestoredWhileBacking`]:
    /// the window's reservation is unmapped with the error (but for pages the reservation
    /// lost, which it leaves alone), so no slot stays claimed.
    pub fn back(self) -> Result<(AddressSpace, BackingReport)> {
        self.check()?;
        for spec in self.specs.iter().filter(|s| s.backing.has_memory()) {
            memory::precheck(spec)?;
        }
        crate::alias::check_files(&self.specs)?;
        let windows = self
            .layout
            .windows_of(WindowKind::Hotplug)
            .map(|w| HotplugWindow::new(w).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let hotplug_windows: Vec<_> = windows.iter().map(|w| w.host_range()).collect();
        let mut report = BackingReport {
            regions: Vec::new(),
            hotplug_window: hotplug_windows.first().copied(),
            hotplug_windows,
        };
        let mut regions = Vec::with_capacity(self.specs.len());
        for spec in &self.specs {
            let target = target_for(&self.layout, &windows, spec)?;
            let (region, r) = Region::back_in(spec.clone(), target).map_err(|e| match e {
                // No space keeps the slot: the windows are unmapped with the error.
                Error::SlotNotRestored {
                    base,
                    size,
                    cause,
                    restore,
                } => Error::SlotNotRestoredWhileBacking {
                    base,
                    size,
                    cause,
                    restore,
                },
                other => other,
            })?;
            regions.push(Arc::new(region));
            report.regions.extend(r);
        }
        report.regions.sort_by_key(|r| r.base);
        let space = self.finish(regions, windows)?;
        Ok((space, report))
    }

    /// Builds the address space over the mappings of a vm-memory `GuestMemoryMmap`: each
    /// becomes a RAM region, kept alive as long as the region is, and takes one of the
    /// builder's memory-slot numbers ([`slots`](Self::slots)), so a VMM bound by KVM's slot
    /// limit adopts its memory in one call. The builder's own regions
    /// ([`region`](Self::region), [`regions`](Self::regions)) are planned beside them as
    /// [`plan`](Self::plan) plans them: bookkeeping only, no memory. No host range is reserved
    /// for the layout's hotplug windows either: [`AddressSpace::plug`] answers
    /// [`Error::NoHotplugWindow`], and memory for the window is inserted as a region with
    /// [`AddressSpace::insert_region`].
    ///
    /// The mappings are vm-memory's without a dirty bitmap, `GuestMemoryMmap<()>` (the alias's
    /// default). Memory that carries one, as Firecracker's
    /// (`GuestMemoryMmap<Option<AtomicBitmap>>`) and Cloud Hypervisor's
    /// (`GuestMemoryMmap<AtomicBitmap>`) do, is not taken, and vm-memory cannot take a region's
    /// bitmap off: such a VMM maps its memory without one to adopt it, or makes it with this
    /// crate ([`back`](Self::back), with
    /// [`RegionSpec::with_dirty_tracking`](crate::RegionSpec::with_dirty_tracking) for the
    /// regions whose writes it tracks).
    /// ```compile_fail,E0308
    /// use memvisor_space::vm_memory::bitmap::AtomicBitmap;
    /// use memvisor_space::vm_memory::{GuestAddress, GuestMemoryMmap};
    /// use memvisor_space::{AddressSpace, Layout};
    ///
    /// let memory = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)])
    ///     .expect("host memory");
    /// let layout = Layout::x86_64().ram(1 << 30).build().unwrap();
    /// let space = AddressSpace::builder(layout).adopt(&memory); // a bitmap: not taken
    /// ```
    ///
    /// ```
    /// use memvisor_space::{AddressSpace, Error, Layout};
    /// use memvisor_space::vm_memory::{GuestAddress, GuestMemoryMmap};
    ///
    /// let memory: GuestMemoryMmap =
    ///     GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 1 << 20)])
    ///         .expect("host memory");
    /// let layout = Layout::x86_64().ram(1 << 30).build()?;
    /// let space = AddressSpace::builder(layout.clone()).slots(2).adopt(&memory)?;
    /// assert_eq!(space.snapshot().len(), 2);
    /// let refused = AddressSpace::builder(layout).slots(1).adopt(&memory);
    /// assert!(matches!(refused, Err(Error::NoSlotNumber { count: 1 })));
    ///
    /// use memvisor_space::{RegionSpec, WindowKind};
    /// let layout = Layout::x86_64().ram(1 << 30).hotplug(1 << 30).build()?;
    /// let window = layout.windows_of(WindowKind::Hotplug).next().unwrap().start();
    /// let space = AddressSpace::builder(layout).adopt(&memory)?;
    /// let slot = RegionSpec::ram(window, 2 << 20).with_hotplug(true);
    /// assert!(matches!(space.plug(slot), Err(Error::NoHotplugWindow { .. })));
    /// assert_eq!(space.snapshot().len(), 2);
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`plan`](Self::plan) for the builder's own regions; then as
    /// [`Region::from_guest_region_mmap`] and [`Layout::check`] for each mapping;
    /// [`Error::Overlap`] for a region over another; [`Error::FileAliased`] for two mappings
    /// (or a mapping and a region of the builder, whose file is the one its path names now)
    /// over the same bytes of one file, one of them writable ([`Error::Os`] if a mapping's file
    /// cannot be looked at); [`Error::NoSlotNumber`] for 0 slot
    /// numbers, or when the mappings and the builder's regions with memory need more than
    /// there are. Nothing is kept after an error: the mappings stay the caller's alone.
    pub fn adopt(self, memory: &GuestMemoryMmap) -> Result<AddressSpace> {
        self.check()?;
        let mut regions = self
            .specs
            .iter()
            .map(|s| Region::plan(s.clone()).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let planned = regions.len();
        for r in memory.iter() {
            let region = Region::from_guest_region_mmap(RegionType::Ram, r)?;
            self.layout.check(region.spec())?;
            regions.push(Arc::new(region));
        }
        // A region of the builder on a file, against the mappings' files (by what its path
        // names, as `plan` checks the builder's regions against each other).
        for spec in &self.specs {
            crate::alias::check_spec(spec, regions[planned..].iter().map(|r| &**r))?;
        }
        self.finish(regions, Vec::new())
    }

    fn finish(
        self,
        regions: Vec<Arc<Region>>,
        windows: Vec<Arc<HotplugWindow>>,
    ) -> Result<AddressSpace> {
        // The files as opened: what the paths named when they were checked may have changed.
        crate::alias::check_regions(regions.iter().map(|r| &**r))?;
        let no_slot = Error::NoSlotNumber {
            count: u64::from(self.slots),
        };
        let last = self.slots.checked_sub(1).ok_or(no_slot)?;
        let count = u64::from(self.slots);
        // A range of at most 2^32 numbers is never refused but by the heap.
        let mut slots = IdAllocator::new(0, last).map_err(|source| Error::Allocator {
            what: SLOT_NUMBER,
            owner: "the address space".to_owned(),
            source,
        })?;
        let mut with_slots = Vec::with_capacity(regions.len());
        for r in regions {
            let slot = if r.spec().backing.has_memory() {
                Some(
                    slots
                        .allocate_id()
                        .map_err(|e| slot_error(e, count, r.spec().base))?,
                )
            } else {
                None
            };
            with_slots.push((r, slot));
        }
        let snapshot = Arc::new(Snapshot::new(Arc::new(self.layout), with_slots, 0)?);
        let current = Current(Arc::as_ptr(&snapshot));
        let space = AddressSpace {
            current: Arc::new(ArcSwap::new(snapshot)),
            writer: Arc::new(Mutex::new(Writer {
                current,
                listeners: Vec::new(),
                slots,
                windows,
                generation: 0,
                retired: Vec::new(),
            })),
        };
        Ok(space)
    }
}

/// The window a spec's memory goes in.
fn target_for<'a>(
    layout: &Layout,
    windows: &'a [Arc<HotplugWindow>],
    spec: &RegionSpec,
) -> Result<Target<'a>> {
    if !spec.hotplug {
        return Ok(Target::Own);
    }
    let window = layout
        .window_containing(spec.base())
        .filter(|w| w.kind() == WindowKind::Hotplug)
        .ok_or(Error::NoHotplugWindow { base: spec.base })?;
    let index = layout
        .windows_of(WindowKind::Hotplug)
        .position(|w| w == window)
        .ok_or(Error::NoHotplugWindow { base: spec.base })?;
    windows
        .get(index)
        .map(Target::Window)
        .ok_or(Error::NoHotplugWindow { base: spec.base })
}

/// A snapshot loaded through [`AddressSpace::memory`]: cheap to take, meant to be held briefly
/// (use [`AddressSpace::snapshot`] to keep one). It derefs to the [`Snapshot`] (so to vm-memory's
/// `GuestMemory`) and is `Clone`, so rust-vmm crates that take `M: Deref + Clone` with
/// `M::Target: GuestMemory` (virtio-queue's descriptor chains) take it as it is; a clone holds
/// a full reference to the snapshot.
pub struct SnapshotGuard(Guard<Arc<Snapshot>>);

impl Clone for SnapshotGuard {
    fn clone(&self) -> Self {
        Self(Guard::from_inner(Arc::clone(&self.0)))
    }
}

impl Deref for SnapshotGuard {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

impl fmt::Debug for SnapshotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SnapshotGuard").field(&**self).finish()
    }
}

/// A per-thread reader that keeps the current snapshot and notices a new one with a single
/// atomic load per access: the fastest way to look addresses up through the handle.
///
/// It holds the snapshot it last loaded until its next access or its drop, as a kept
/// [`Snapshot`] does: the memory of a region removed since stays mapped meanwhile, and a
/// hotplug slot unplugged since cannot be plugged again ([`Error::SlotBusy`]). A thread that
/// may stay idle across an unplug drops its reader, or looks up through it again, to let go.
pub struct SpaceReader {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl fmt::Debug for SpaceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceReader").finish_non_exhaustive()
    }
}

impl SpaceReader {
    /// The current snapshot.
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.cache.load()
    }

    /// The region of the current snapshot holding `addr`.
    pub fn find_region(&mut self, addr: GuestAddress) -> Option<&Region> {
        self.cache.load().find_region(addr)
    }
}

impl AddressSpace {
    /// Starts building an address space over `layout`.
    #[must_use]
    pub fn builder(layout: Layout) -> SpaceBuilder {
        SpaceBuilder {
            layout,
            specs: Vec::new(),
            slots: DEFAULT_SLOTS,
        }
    }

    /// Shorthand for `builder(layout).regions(specs).plan()`.
    ///
    /// # Errors
    /// As [`SpaceBuilder::plan`].
    pub fn plan(layout: Layout, specs: impl IntoIterator<Item = RegionSpec>) -> Result<Self> {
        Self::builder(layout).regions(specs).plan()
    }

    /// Shorthand for `builder(layout).regions(specs).back()`.
    ///
    /// # Errors
    /// As [`SpaceBuilder::back`].
    pub fn back(
        layout: Layout,
        specs: impl IntoIterator<Item = RegionSpec>,
    ) -> Result<(Self, BackingReport)> {
        Self::builder(layout).regions(specs).back()
    }

    /// Shorthand for `builder(layout).adopt(memory)`: an address space of RAM regions over
    /// the mappings of a vm-memory `GuestMemoryMmap` without dirty bitmaps (as
    /// [`SpaceBuilder::adopt`] says), which stay alive as long as the regions do, with the
    /// default [`DEFAULT_SLOTS`] memory-slot numbers. A VMM that must keep
    /// within fewer (KVM's slot limit) calls [`SpaceBuilder::adopt`] on a builder given
    /// [`slots`](SpaceBuilder::slots).
    ///
    /// # Errors
    /// As [`SpaceBuilder::adopt`].
    pub fn from_guest_memory_mmap(layout: Layout, memory: &GuestMemoryMmap) -> Result<Self> {
        Self::builder(layout).adopt(memory)
    }

    /// The current snapshot, to keep as long as wanted.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot, for a short look (cheaper than [`snapshot`](Self::snapshot)).
    #[must_use]
    pub fn memory(&self) -> SnapshotGuard {
        SnapshotGuard(self.current.load())
    }

    /// A reader for one thread (see [`SpaceReader`]).
    #[must_use]
    pub fn reader(&self) -> SpaceReader {
        SpaceReader {
            cache: Cache::new(Arc::clone(&self.current)),
        }
    }

    /// The region holding `addr` in the current snapshot.
    #[must_use]
    pub fn find_region(&self, addr: GuestAddress) -> Option<Arc<Region>> {
        self.current.load().find_arc(addr)
    }

    /// Adds a listener, told of every later change. Waits for a change in progress to finish.
    ///
    /// # Errors
    /// [`Error::ListenerReentry`] if called by a listener of this address space during a
    /// change (see [`RegionListener`]): that change holds the writer lock until its listeners
    /// return, so waiting would never end. The listener is not added then.
    pub fn add_listener(&self, listener: Arc<dyn RegionListener>) -> Result<()> {
        self.lock("AddressSpace::add_listener")?
            .listeners
            .push(listener);
        Ok(())
    }

    /// Removes a listener added with [`add_listener`](Self::add_listener) (the same `Arc`), so
    /// it is told of no later change. Waits for a change in progress to finish. Returns whether
    /// the listener was there.
    ///
    /// # Errors
    /// [`Error::ListenerReentry`] if called by a listener of this address space during a
    /// change (see [`RegionListener`]); the listener stays then.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use memvisor_space::{AddressSpace, Layout, ListenerError, RegionEvent, RegionListener};
    ///
    /// let space = AddressSpace::plan(Layout::x86_64().ram(1 << 30).build()?, [])?;
    /// let listener: Arc<dyn RegionListener> =
    ///     Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Ok(()) });
    /// space.add_listener(Arc::clone(&listener))?;
    /// assert!(space.remove_listener(&listener)?);
    /// assert!(!space.remove_listener(&listener)?);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn remove_listener(&self, listener: &Arc<dyn RegionListener>) -> Result<bool> {
        let mut writer = self.lock("AddressSpace::remove_listener")?;
        Ok(Self::take_listener(&mut writer, listener))
    }

    /// Takes `listener` out of the writer's list: whether it was there.
    fn take_listener(writer: &mut WriterLock<'_>, listener: &Arc<dyn RegionListener>) -> bool {
        let before = writer.listeners.len();
        writer.listeners.retain(|l| !Arc::ptr_eq(l, listener));
        writer.listeners.len() != before
    }

    /// Takes the writer lock for `op`.
    ///
    /// # Errors
    /// [`Error::ListenerReentry`] if this thread holds it already: only a listener of a change
    /// in progress can call a writer method then, and waiting would never end.
    fn lock(&self, op: &'static str) -> Result<WriterLock<'_>> {
        let key = Arc::as_ptr(&self.writer).addr();
        if HELD
            .try_with(|held| held.borrow().contains(&key))
            .unwrap_or(false)
        {
            return Err(Error::ListenerReentry { op });
        }
        // A panicking listener leaves the writer state as it was before the change (nothing
        // is committed before the listeners succeed), so a poisoned lock is still consistent.
        let guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = HELD.try_with(|held| held.borrow_mut().push(key));
        Ok(WriterLock { guard, key })
    }

    /// Adds a prepared region ([`Region::plan`], [`Region::back`]).
    ///
    /// The region must sit in a window of the kind its type needs ([`Layout::check`]): a
    /// hot-pluggable RAM region in a hotplug window, whatever memory it has. Its memory is
    /// taken as it is: one made by [`Region::back`] keeps its own mapping inside the hotplug
    /// window too (only [`plug`](Self::plug) maps memory through the window's host
    /// reservation), and holds its place there against a plug until it is removed.
    ///
    /// Every listener is first asked to [`settle`](RegionListener::settle), as by
    /// [`plug`](Self::plug), so a region a listener could let go of does not refuse this one.
    ///
    /// # Errors
    /// As [`Layout::check`]; [`Error::Overlap`] with a region already there; [`Error::FileAliased`]
    /// if it maps bytes of a file (whatever the path that named it) that a region already there
    /// maps too, one of them writable, or that a writable region removed from this space maps
    /// while anything (an older snapshot, the `Arc` [`remove_region`](Self::remove_region)
    /// returned) still holds it, or one whose insertion a listener could not undo while
    /// anything still holds it (see [`RegionListener`]; a region inserted again is no alias of
    /// itself); [`Error::NoSlotNumber`] when every memory-slot number is in use;
    /// [`Error::Allocator`] if the heap refuses the growth of the memory-slot allocator's
    /// bitmap, the copy of the list of file regions held outside the space that the region is
    /// compared with, (for a writable region over a file, with more than one listener) the
    /// growth of that list, or the next snapshot's table (made before any listener hears of
    /// the insertion); [`Error::Listener`];
    /// [`Error::ListenerReentry`] when called by a listener of this address space. The address
    /// space is unchanged after an error.
    ///
    /// # Panics
    /// Resumes a listener's panic in [`settle`](RegionListener::settle) (nothing changed
    /// then) or in the change, after the change was cancelled as for a refusal (see
    /// [`RegionListener`]).
    pub fn insert_region(&self, region: Arc<Region>) -> Result<()> {
        let mut writer = self.lock("AddressSpace::insert_region")?;
        // A listener may still keep a region over the same file bytes (one whose insertion it
        // could not undo): it lets go now if it can, as before a plug.
        for listener in &writer.listeners {
            listener.settle();
        }
        self.insert_locked(&mut writer, region)
    }

    fn insert_locked(&self, writer: &mut Writer, region: Arc<Region>) -> Result<()> {
        let held = writer.held_retired(region.base().0)?;
        let Writer {
            current,
            listeners,
            slots,
            generation,
            retired,
            ..
        } = writer;
        let snapshot = current.get();
        snapshot.layout().check(region.spec())?;
        let at = snapshot.check_free(&region)?;
        // A removed region inserted again is not an alias of itself: a write through an older
        // holder is a write to this region, marked in its own dirty log.
        crate::alias::check_region(
            &region,
            snapshot.regions().chain(
                held.iter()
                    .filter(|r| !Arc::ptr_eq(r, &region))
                    .map(|r| &**r),
            ),
        )?;
        drop(held);
        let inserted = Arc::as_ptr(&region);
        // Gives the slot number back on an error or a panicking listener.
        let mut slot = SlotGuard { slots, slot: None };
        if region.spec().backing.has_memory() {
            let count = slot.slots.capacity();
            slot.slot = Some(
                slot.slots
                    .allocate_id()
                    .map_err(|e| slot_error(e, count, region.spec().base))?,
            );
        }
        // A listener that cannot undo this insertion, should a later one refuse it, may still
        // map the region: it is listed then, in room made now (only a later listener can
        // refuse it after an earlier one took it).
        if listeners.len() > 1 {
            reserve_retired(retired, &region)?;
        }
        let next_generation = *generation + 1;
        // The next snapshot is made before any listener hears of the change, so that the heap
        // refusing its table refuses the change with nothing to undo.
        let next =
            snapshot.with_inserted_at(at, Arc::clone(&region), slot.slot, next_generation)?;
        notify(
            listeners,
            ChangeKind::Inserted,
            &region,
            slot.slot,
            next_generation,
            Some(retired),
        )?;
        // Every check passed and every listener accepted: from here on nothing fails.
        drop(region);
        drop(self.publish(current, next));
        *generation = next_generation;
        slot.slot = None;
        // Back in the space, it is compared as a region of the snapshot, and listed again
        // (once) if it is removed again.
        retired.retain(|weak| !std::ptr::eq(weak.as_ptr(), inserted));
        Ok(())
    }

    /// Removes the region at exactly `base` of `size` bytes and returns it. Its host memory
    /// stays mapped until the last snapshot holding it is dropped; while anything holds a
    /// writable region over a file, no other region over the same bytes of that file is taken
    /// ([`Error::FileAliased`]), since a write through the holder would change it unlogged (the
    /// region itself may be inserted again).
    ///
    /// # Errors
    /// [`Error::RegionNotFound`]; [`Error::Allocator`] if the heap refuses room for a writable
    /// region over a file in the list of such regions held outside the space, or the next
    /// snapshot's table (both made before any listener hears of the removal);
    /// [`Error::Listener`]; [`Error::ListenerReentry`] when
    /// called by a listener of this address space. The address space is unchanged after an
    /// error.
    ///
    /// # Panics
    /// Resumes a listener's panic, after the change was cancelled as for a refusal (see
    /// [`RegionListener`]).
    pub fn remove_region(&self, base: GuestAddress, size: u64) -> Result<Arc<Region>> {
        let mut writer = self.lock("AddressSpace::remove_region")?;
        let generation = writer.generation + 1;
        let Writer {
            current,
            listeners,
            retired,
            ..
        } = &mut *writer;
        let current = current.get();
        let removal = current.find_removal(base, size)?;
        let region = current.removed_region(&removal);
        // Pruned first, so the list holds no more than the regions still held, then room made
        // for this one before anything changes.
        retired.retain(|weak| weak.strong_count() > 0);
        reserve_retired(retired, region)?;
        // The next snapshot is made before any listener hears of the change, so that the heap
        // refusing its table refuses the change with nothing to undo.
        let next = current.with_removed_at(&removal, generation)?;
        notify(
            listeners,
            ChangeKind::Removed,
            region,
            removal.slot,
            generation,
            None,
        )?;
        // Every check passed and every listener accepted: from here on nothing fails.
        let old = self.publish(&mut writer.current, next);
        writer.generation = generation;
        if let Some(slot) = removal.slot {
            let _ = writer.slots.free_id(slot);
        }
        let removed = Snapshot::take_removed(old, &removal);
        if retires(&removed) {
            // Room was made above: this does not allocate.
            debug_assert!(writer.retired.len() < writer.retired.capacity());
            writer.retired.push(Arc::downgrade(&removed));
        }
        Ok(removed)
    }

    /// Hot-plugs a RAM region: checks it, maps its memory inside the hotplug window's host
    /// reservation (so plugged memory is contiguous on the host), binds, advises and prefaults
    /// it as its spec says, and inserts it.
    ///
    /// # Errors
    /// As [`RegionSpec::validate`]; [`Error::InvalidSpec`] for a spec not marked
    /// [`with_hotplug`](RegionSpec::with_hotplug); as [`Layout::check`] ([`Error::OutsideWindow`]
    /// for a region outside every hotplug window of the layout, or with none in it);
    /// [`Error::NoHotplugWindow`] if the address space was planned without memory or built by
    /// [`adopt`](SpaceBuilder::adopt), which reserves no hotplug window;
    /// [`Error::FileAliased`] for a backing file whose bytes a region already there maps, one
    /// of them writable, or a writable region removed from this space (or whose insertion a
    /// listener could not undo, see [`RegionListener`]) maps while anything
    /// still holds it (checked before anything is mapped, the removed regions after every
    /// listener was asked to [`settle`](RegionListener::settle), and again on the file as
    /// opened);
    /// [`Error::SlotBusy`] while an older snapshot (or any other holder of a region plugged
    /// there) still holds memory at that place, checked after every listener was asked to
    /// [`settle`](RegionListener::settle) (so a listener that lets go of such a region then
    /// frees the place for this plug) and before any listener hears of the plug (or for good
    /// once the place could not be restored to reserved space, [`Error::SlotNotRestored`]);
    /// [`Error::Allocator`] if the heap refuses the window's bookkeeping of the slot or the
    /// copy of the list of file regions held outside the space; then as
    /// [`Region::back`] (a backing file that is not a regular file is refused at once, without
    /// waiting under the writer lock) and [`insert_region`](Self::insert_region). After an
    /// error nothing of the plug is left, except after [`Error::SlotNotRestored`]: making the
    /// slot's memory or inserting the region failed and turning the slot back into reserved
    /// space failed too (or the refused mapping lost its pages), so the slot stays claimed,
    /// with whatever is mapped there, until the address space is dropped; and where a
    /// listener refused the insertion and could not let go of the region when told to undo
    /// it, the slot stays claimed until it does ([`Error::SlotBusy`]).
    ///
    /// # Panics
    /// Resumes a listener's panic in [`settle`](RegionListener::settle) (nothing changed
    /// then) or, as [`insert_region`](Self::insert_region), in the change.
    pub fn plug(&self, spec: RegionSpec) -> Result<(Arc<Region>, RegionReport)> {
        spec.validate()?;
        if !spec.hotplug || !spec.backing.has_memory() {
            return Err(Error::InvalidSpec {
                ty: spec.ty,
                base: spec.base,
                reason: "only hot-pluggable regions with memory are plugged",
            });
        }
        let mut writer = self.lock("AddressSpace::plug")?;
        let current = writer.current.get();
        current.layout().check(&spec)?;
        current.check_free(&Region::plan(spec.clone())?)?;
        target_for(current.layout(), &writer.windows, &spec)?;
        crate::alias::check_spec(&spec, current.regions())?;
        // A listener may still keep a region plugged here before (and so its place claimed),
        // or a removed region over the same file: it lets go now if it can. (Nothing changes
        // the regions of the space meanwhile: the writer lock is held.)
        for listener in &writer.listeners {
            listener.settle();
        }
        let held = writer.held_retired(spec.base)?;
        crate::alias::check_spec(&spec, held.iter().map(|r| &**r))?;
        drop(held);
        let current = writer.current.get();
        let target = target_for(current.layout(), &writer.windows, &spec)?;
        let (region, report) = Region::back_in(spec, target)?;
        let report = report.ok_or(Error::NoHotplugWindow {
            base: region.base().0,
        })?;
        let region = Arc::new(region);
        if let Err(e) = self.insert_locked(&mut writer, Arc::clone(&region)) {
            // Nothing else holds the region (unless a listener kept it, which gives the slot
            // back when it lets go): its slot is given back now, so that one that cannot be
            // turned back into reserved space is reported, not kept claimed unseen.
            return Err(match Arc::into_inner(region) {
                Some(region) => region.give_back(e),
                None => e,
            });
        }
        Ok((region, report))
    }

    /// Publishes `next` to readers, points `current` (the writer state's, whose lock is held)
    /// at it, and returns the snapshot it replaced (the `ArcSwap`'s reference).
    fn publish(&self, current: &mut Current, next: Snapshot) -> Arc<Snapshot> {
        let next = Arc::new(next);
        let ptr = Arc::as_ptr(&next);
        let old = self.current.swap(next);
        *current = Current(ptr);
        old
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> Arc<Layout> {
        Arc::clone(self.current.load().layout_arc())
    }
}

/// What [`Error::Allocator`] says the memory-slot allocator allocates.
const SLOT_NUMBER: &str = "a memory-slot number";

/// The error for a memory-slot number (of `count`) refused for the region at `base`:
/// [`Error::NoSlotNumber`] when every number is in use, [`Error::Allocator`] otherwise (the
/// heap refused the growth of its bitmap).
fn slot_error(e: memvisor_resources::Error, count: u64, base: u64) -> Error {
    match e {
        memvisor_resources::Error::OutOfIds { .. } => Error::NoSlotNumber { count },
        source => Error::Allocator {
            what: SLOT_NUMBER,
            owner: format!("the region at {base:#x}"),
            source,
        },
    }
}

/// Frees a memory-slot number on drop unless it was kept (`slot` set to `None`).
struct SlotGuard<'a> {
    slots: &'a mut IdAllocator,
    slot: Option<u32>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let _ = self.slots.free_id(slot);
        }
    }
}

/// Tells every listener of a change. When one refuses it or panics, the earlier ones are told
/// the opposite change (their refusals and panics then ignored: the state they are being
/// brought back to is one they accepted); then a refusal is returned as [`Error::Listener`]
/// and a panic is resumed.
///
/// An earlier listener that refuses (or panics on) the undo of an insertion may still map the
/// region: with `retired` given (room made for it, [`reserve_retired`]), a region the list
/// takes ([`retires`]) is listed there then, so that it is compared with later regions until
/// nothing holds it.
fn notify(
    listeners: &[Arc<dyn RegionListener>],
    kind: ChangeKind,
    region: &Arc<Region>,
    slot: Option<u32>,
    generation: u64,
    retired: Option<&mut Vec<Weak<Region>>>,
) -> Result<()> {
    let event = RegionEvent {
        kind,
        region,
        slot,
        generation,
    };
    for (i, listener) in listeners.iter().enumerate() {
        // The listener sees only the event; whatever state of its own a panic leaves broken
        // is its business, ours is unchanged until every listener has accepted.
        let failure =
            match panic::catch_unwind(AssertUnwindSafe(|| listener.region_changed(&event))) {
                Ok(Ok(())) => continue,
                Ok(Err(source)) => Ok(source),
                Err(payload) => Err(payload),
            };
        let undo = RegionEvent {
            kind: match kind {
                ChangeKind::Inserted => ChangeKind::Removed,
                ChangeKind::Removed => ChangeKind::Inserted,
            },
            ..event
        };
        let mut undone = true;
        for earlier in listeners[..i].iter().rev() {
            undone &= matches!(
                panic::catch_unwind(AssertUnwindSafe(|| earlier.region_changed(&undo))),
                Ok(Ok(()))
            );
        }
        if !undone
            && let Some(retired) = retired
            && retires(region)
            && !retired
                .iter()
                .any(|weak| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(region)))
        {
            // Room was made before the change: this does not allocate.
            debug_assert!(retired.len() < retired.capacity());
            retired.push(Arc::downgrade(region));
        }
        match failure {
            Ok(source) => {
                return Err(Error::Listener {
                    base: region.base().0,
                    source,
                });
            }
            Err(payload) => panic::resume_unwind(payload),
        }
    }
    Ok(())
}

impl GuestAddressSpace for AddressSpace {
    type M = Snapshot;
    type T = Arc<Snapshot>;

    fn memory(&self) -> Arc<Snapshot> {
        self.snapshot()
    }
}

impl Snapshot {
    /// A vm-memory `GuestMemoryMmap` over the backed regions' host memory (regions without
    /// memory, or whose mapping is not read-write, are left out: vm-memory's slices allow
    /// writes). Each region keeps its file and offset (a memfd, hugetlbfs or backing file), so
    /// the result can be handed to a vhost-user back end, and says whether it is on hugetlbfs.
    /// Its regions have no dirty bitmap: writes through it are not marked in the regions' logs
    /// ([`RegionSpec::with_dirty_tracking`]).
    ///
    /// # Errors
    /// [`Error::Os`] if vm-memory refuses a region; [`Error::Unsupported`] on Windows for a
    /// backed region, as vm-memory's Windows mappings cannot be made over memory they do not
    /// own.
    ///
    /// # Safety
    /// The result refers to the regions' memory without keeping it alive: this snapshot (or
    /// the regions) must outlive it and every region or slice taken from it.
    pub unsafe fn to_guest_memory_mmap(&self) -> Result<GuestMemoryMmap> {
        let mut out = Vec::new();
        for r in self.regions() {
            let Some(ptr) = r.host_ptr() else { continue };
            if !r.protection().writable() {
                continue;
            }
            let len = usize::try_from(r.size()).map_err(|_| Error::Overflow {
                base: r.base().0,
                size: r.size(),
            })?;
            crate::sys::Feature::VmMemoryMapping.require(r.base().0)?;
            // SAFETY: `ptr..ptr + len` is the region's live mapping, with its protection; the
            // caller keeps it alive as long as the result. The same open file and offset, so
            // that the result can be shared (vhost-user).
            let mapping = unsafe {
                crate::sys::mmap_region(
                    ptr,
                    len,
                    r.protection(),
                    r.hugetlb_pages() == Some(true),
                    r.file_offset(),
                )
            }
            .map_err(|source| Error::Os {
                op: "vm-memory region",
                base: r.base().0,
                source,
            })?;
            let region =
                vm_memory::GuestRegionMmap::new(mapping, r.base()).ok_or(Error::Overflow {
                    base: r.base().0,
                    size: r.size(),
                })?;
            out.push(region);
        }
        if out.is_empty() {
            return Ok(GuestMemoryMmap::default());
        }
        GuestMemoryMmap::from_regions(out).map_err(|e| Error::Os {
            op: "vm-memory collection",
            base: 0,
            source: std::io::Error::other(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::spec::host_page_size;

    fn layout() -> Layout {
        Layout::x86_64()
            .ram(1 << 30)
            .hotplug(1 << 30)
            .build()
            .unwrap()
    }

    fn planned(base: u64, size: u64) -> Arc<Region> {
        Arc::new(Region::plan(RegionSpec::ram(GuestAddress(base), size)).unwrap())
    }

    #[test]
    fn plan_overlapping_specs_error() {
        let p = host_page_size();
        let err = AddressSpace::plan(
            layout(),
            [
                RegionSpec::ram(GuestAddress(0), 2 * p),
                RegionSpec::ram(GuestAddress(p), p),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }), "{err}");
    }

    #[test]
    fn plan_zero_slots_errors() {
        let err = AddressSpace::builder(layout()).slots(0).plan().unwrap_err();
        assert_eq!(err.to_string(), "all 0 memory-slot numbers are in use");
    }

    #[test]
    fn insert_region_outside_window_errors_and_keeps_state() {
        let space = AddressSpace::plan(layout(), []).unwrap();
        let err = space.insert_region(planned(3 << 30, 4096)).unwrap_err();
        assert!(matches!(err, Error::OutsideWindow { .. }), "{err}");
        assert!(space.snapshot().is_empty());
        assert_eq!(space.snapshot().generation(), 0);
    }

    #[test]
    fn zero_slot_numbers_are_refused_even_without_regions() {
        let err = AddressSpace::builder(layout()).slots(0).plan().unwrap_err();
        assert!(matches!(err, Error::NoSlotNumber { count: 0 }), "{err}");
    }

    #[test]
    fn insert_region_slots_are_reused_after_remove() {
        let p = host_page_size();
        let space = AddressSpace::builder(layout()).slots(2).plan().unwrap();
        space.insert_region(planned(0, p)).unwrap();
        space.insert_region(planned(p, p)).unwrap();
        let err = space.insert_region(planned(2 * p, p)).unwrap_err();
        assert!(matches!(err, Error::NoSlotNumber { count: 2 }), "{err}");
        assert_eq!(space.snapshot().len(), 2);
        space.remove_region(GuestAddress(0), p).unwrap();
        space.insert_region(planned(2 * p, p)).unwrap();
        assert_eq!(space.snapshot().slot(GuestAddress(2 * p)), Some(0));
    }

    #[test]
    fn listener_refusal_undoes_earlier_and_keeps_state() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let first = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&first);
        space
            .add_listener(Arc::new(move |e: &RegionEvent<'_>| {
                match e.kind {
                    ChangeKind::Inserted => f.fetch_add(1, Ordering::SeqCst),
                    ChangeKind::Removed => f.fetch_sub(1, Ordering::SeqCst),
                };
                Ok(())
            }))
            .unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| {
                if e.region.base().0 == 0 {
                    Err("slot table full".into())
                } else {
                    Ok(())
                }
            }))
            .unwrap();
        let err = space.insert_region(planned(0, p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a listener refused the change of the region at 0x0"
        );
        assert_eq!(first.load(Ordering::SeqCst), 0);
        assert!(space.snapshot().is_empty());
        space.insert_region(planned(p, p)).unwrap();
        assert_eq!(first.load(Ordering::SeqCst), 1);
        assert_eq!(space.snapshot().generation(), 1);
    }

    #[test]
    fn listener_panic_leaves_space_usable() {
        let p = host_page_size();
        let space = AddressSpace::builder(layout()).slots(1).plan().unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| {
                assert!(e.region.base().0 != 0, "listener bug");
                Ok(())
            }))
            .unwrap();
        let s = space.clone();
        let result = std::panic::catch_unwind(move || s.insert_region(planned(0, p)));
        assert!(result.is_err());
        assert!(space.snapshot().is_empty());
        space.insert_region(planned(p, p)).unwrap();
        assert_eq!(space.snapshot().len(), 1);
        // The only slot number, taken by the panicked insert, was given back.
        assert_eq!(space.snapshot().slot(GuestAddress(p)), Some(0));
        space.snapshot().check_invariants();
    }

    #[test]
    fn remove_listener_stops_its_events_and_keeps_the_others() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let removed = Arc::new(AtomicUsize::new(0));
        let kept = Arc::new(AtomicUsize::new(0));
        let (r, k) = (Arc::clone(&removed), Arc::clone(&kept));
        let listener: Arc<dyn RegionListener> = Arc::new(move |_: &RegionEvent<'_>| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        space.add_listener(Arc::clone(&listener)).unwrap();
        space
            .add_listener(Arc::new(move |_: &RegionEvent<'_>| {
                k.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
            .unwrap();
        space.insert_region(planned(0, p)).unwrap();
        assert!(space.remove_listener(&listener).unwrap());
        assert!(!space.remove_listener(&listener).unwrap(), "removed twice");
        space.insert_region(planned(p, p)).unwrap();
        assert_eq!(removed.load(Ordering::SeqCst), 1);
        assert_eq!(kept.load(Ordering::SeqCst), 2);
    }

    /// A listener that keeps a KVM-like slot table: it refuses a slot number already in use.
    #[derive(Default)]
    struct SlotTable(Mutex<std::collections::BTreeMap<u32, u64>>);

    impl RegionListener for SlotTable {
        fn region_changed(&self, e: &RegionEvent<'_>) -> Result<(), ListenerError> {
            let Some(slot) = e.slot else { return Ok(()) };
            let mut table = self.0.lock().unwrap();
            match e.kind {
                ChangeKind::Inserted => {
                    if table.insert(slot, e.region.base().0).is_some() {
                        return Err(format!("slot {slot} already in use").into());
                    }
                }
                ChangeKind::Removed => {
                    if table.remove(&slot).is_none() {
                        return Err(format!("slot {slot} not in use").into());
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn insert_listener_panic_undoes_earlier_listeners() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let table = Arc::new(SlotTable::default());
        space
            .add_listener(Arc::clone(&table) as Arc<dyn RegionListener>)
            .unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| {
                assert!(e.region.base().0 != 0, "listener bug");
                Ok(())
            }))
            .unwrap();
        let s = space.clone();
        let result = std::panic::catch_unwind(move || s.insert_region(planned(0, p)));
        assert!(result.is_err(), "the panic is resumed");
        assert!(
            table.0.lock().unwrap().is_empty(),
            "the slot table was undone"
        );
        assert!(space.snapshot().is_empty());
        assert_eq!(space.snapshot().generation(), 0);
        // The slot number given back is taken again, and the slot table accepts it.
        space.insert_region(planned(p, p)).unwrap();
        space.insert_region(planned(2 * p, p)).unwrap();
        assert_eq!(space.snapshot().slot(GuestAddress(p)), Some(0));
        assert_eq!(space.snapshot().slot(GuestAddress(2 * p)), Some(1));
        assert_eq!(table.0.lock().unwrap().len(), 2);
        space.snapshot().check_invariants();
    }

    #[test]
    fn remove_listener_panic_undoes_earlier_listeners() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let table = Arc::new(SlotTable::default());
        space
            .add_listener(Arc::clone(&table) as Arc<dyn RegionListener>)
            .unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| {
                assert!(e.kind == ChangeKind::Inserted, "listener bug");
                Ok(())
            }))
            .unwrap();
        space.insert_region(planned(0, p)).unwrap();
        let s = space.clone();
        let result = std::panic::catch_unwind(move || s.remove_region(GuestAddress(0), p));
        assert!(result.is_err(), "the panic is resumed");
        // The region is still there, and so is its slot in the table.
        assert_eq!(space.snapshot().len(), 1);
        assert_eq!(space.snapshot().slot(GuestAddress(0)), Some(0));
        assert_eq!(table.0.lock().unwrap().get(&0), Some(&0));
        space.insert_region(planned(p, p)).unwrap();
        assert_eq!(space.snapshot().slot(GuestAddress(p)), Some(1));
    }

    #[test]
    fn undo_listener_panic_is_contained() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| {
                assert!(e.kind == ChangeKind::Inserted, "undo bug");
                Ok(())
            }))
            .unwrap();
        space
            .add_listener(Arc::new(|_: &RegionEvent<'_>| Err("refused".into())))
            .unwrap();
        let err = space.insert_region(planned(0, p)).unwrap_err();
        assert!(matches!(err, Error::Listener { base: 0, .. }), "{err}");
        assert!(space.snapshot().is_empty());
    }

    #[test]
    fn remove_region_with_or_without_readers_returns_it() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let (first, second) = (planned(0, p), planned(2 * p, p));
        space.insert_region(Arc::clone(&first)).unwrap();
        space.insert_region(Arc::clone(&second)).unwrap();
        // A reader holds the snapshot the region leaves: it is shared, not moved out.
        let held = space.snapshot();
        let removed = space.remove_region(GuestAddress(0), p).unwrap();
        assert!(Arc::ptr_eq(&removed, &first));
        assert_eq!(
            held.find_region(GuestAddress(0)).map(Region::base),
            Some(first.base())
        );
        held.check_invariants();
        drop(held);
        // Nobody else holds it: the region is moved out of the old snapshot.
        let removed = space.remove_region(GuestAddress(2 * p), p).unwrap();
        assert!(Arc::ptr_eq(&removed, &second));
        assert_eq!(Arc::strong_count(&second), 2, "the caller's and the test's");
        assert!(space.snapshot().is_empty());
    }

    #[test]
    fn reader_sees_new_snapshot() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), []).unwrap();
        let mut reader = space.reader();
        assert!(reader.find_region(GuestAddress(0)).is_none());
        space.insert_region(planned(0, p)).unwrap();
        assert!(reader.find_region(GuestAddress(0)).is_some());
        assert!(space.find_region(GuestAddress(0)).is_some());
        assert_eq!(GuestAddressSpace::memory(&space).len(), 1);
    }

    #[test]
    fn plug_on_planned_space_errors() {
        let space = AddressSpace::plan(layout(), []).unwrap();
        let spec = RegionSpec::ram(GuestAddress(4 << 30), 2 << 20).with_hotplug(true);
        let err = space.plug(spec).unwrap_err();
        assert!(matches!(err, Error::NoHotplugWindow { .. }), "{err}");
        let err = space
            .plug(RegionSpec::ram(GuestAddress(4 << 30), 2 << 20))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    }

    /// Whether the writer state's snapshot is the one readers get.
    fn writer_sees_published(space: &AddressSpace) -> bool {
        std::ptr::eq(
            space.lock("test").unwrap().current.get(),
            Arc::as_ptr(&space.snapshot()),
        )
    }

    #[test]
    fn changes_keep_writer_snapshot_the_published_one() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), [RegionSpec::ram(GuestAddress(0), p)]).unwrap();
        assert!(writer_sees_published(&space));
        space.insert_region(planned(2 * p, p)).unwrap();
        assert!(writer_sees_published(&space));
        // A reader holding the snapshot a removal replaces: the region is shared, not moved.
        let held = space.snapshot();
        let removed = space.remove_region(GuestAddress(2 * p), p).unwrap();
        assert!(writer_sees_published(&space));
        assert_eq!(held.len(), 2);
        assert!(std::ptr::eq(
            held.find_region(GuestAddress(2 * p)).unwrap(),
            Arc::as_ptr(&removed)
        ));
        // Failed changes publish nothing.
        assert!(space.remove_region(GuestAddress(2 * p), p).is_err());
        assert!(space.insert_region(planned(0, p)).is_err());
        assert!(writer_sees_published(&space));
        assert_eq!(space.snapshot().generation(), 2);
        // Snapshots outlive the handle.
        drop(space);
        assert_eq!(held.find_region(GuestAddress(0)).unwrap().size(), p);
    }

    /// A region removed and inserted again, over and over while something holds it, is listed
    /// among the removed regions still held at most once: the list holds no more than the
    /// removed regions still held, whatever the number of changes.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "makes memfds")]
    fn a_region_inserted_again_leaves_the_removed_list() {
        let p = host_page_size();
        let spec = RegionSpec::ram(GuestAddress(0), p).with_backing(crate::spec::Backing::Memfd);
        let (space, _) = AddressSpace::back(layout(), [spec]).unwrap();
        let held = space.snapshot();
        for _ in 0..8 {
            let removed = space.remove_region(GuestAddress(0), p).unwrap();
            assert_eq!(space.lock("test").unwrap().retired.len(), 1);
            space.insert_region(removed).unwrap();
            assert_eq!(space.lock("test").unwrap().retired.len(), 0);
        }
        drop(held);
        assert_eq!(space.snapshot().len(), 1);
    }

    /// A region whose insertion a later listener refuses again and again, with an earlier one
    /// refusing every undo, is listed once among the regions held outside the space, also
    /// when it was listed already as a removed region still held; taken at last, it leaves the
    /// list, and a region nothing holds any more is pruned.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "makes memfds")]
    fn a_region_whose_undo_fails_again_and_again_is_listed_once() {
        let p = host_page_size();
        let memfd = |base: u64| {
            RegionSpec::ram(GuestAddress(base), p).with_backing(crate::spec::Backing::Memfd)
        };
        let (space, _) = AddressSpace::back(layout(), [memfd(0)]).unwrap();
        let retired = || space.lock("test").unwrap().retired.len();
        let removed = space.remove_region(GuestAddress(0), p).unwrap();
        assert_eq!(retired(), 1);
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| match e.kind {
                ChangeKind::Inserted => Ok(()),
                ChangeKind::Removed => Err("still mapped".into()),
            }))
            .unwrap();
        let refuse: Arc<dyn RegionListener> =
            Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("no".into()) });
        space.add_listener(Arc::clone(&refuse)).unwrap();
        let fresh = Arc::new(Region::back(memfd(4 * p)).unwrap().0);
        for _ in 0..8 {
            let err = space.insert_region(Arc::clone(&removed)).unwrap_err();
            assert!(matches!(err, Error::Listener { base: 0, .. }), "{err}");
            assert_eq!(retired(), 1);
        }
        for _ in 0..8 {
            assert!(space.insert_region(Arc::clone(&fresh)).is_err());
            assert_eq!(retired(), 2);
        }
        assert!(space.snapshot().is_empty());
        drop(fresh);
        assert!(space.remove_listener(&refuse).unwrap());
        space.insert_region(removed).unwrap();
        assert_eq!(retired(), 0);
        assert_eq!(space.snapshot().len(), 1);
    }

    /// A removal a listener refuses, or panics in, lists nothing among the removed regions:
    /// the region is still in the space.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "makes memfds")]
    fn a_removal_undone_lists_nothing() {
        let p = host_page_size();
        let spec = RegionSpec::ram(GuestAddress(0), p).with_backing(crate::spec::Backing::Memfd);
        let (space, _) = AddressSpace::back(layout(), [spec]).unwrap();
        let held = space.snapshot();
        let refuse: Arc<dyn RegionListener> =
            Arc::new(|_: &RegionEvent<'_>| -> Result<(), ListenerError> { Err("busy".into()) });
        space.add_listener(Arc::clone(&refuse)).unwrap();
        let err = space.remove_region(GuestAddress(0), p).unwrap_err();
        assert!(matches!(err, Error::Listener { base: 0, .. }), "{err}");
        assert!(space.lock("test").unwrap().retired.is_empty());
        assert!(space.remove_listener(&refuse).unwrap());
        space
            .add_listener(Arc::new(
                |_: &RegionEvent<'_>| -> Result<(), ListenerError> { panic!("listener bug") },
            ))
            .unwrap();
        let panicked =
            panic::catch_unwind(AssertUnwindSafe(|| space.remove_region(GuestAddress(0), p)));
        assert!(panicked.is_err());
        assert!(space.lock("test").unwrap().retired.is_empty());
        assert_eq!(space.snapshot().len(), 1);
        drop(held);
    }

    #[test]
    fn remove_region_refused_by_listener_keeps_state() {
        let p = host_page_size();
        let space = AddressSpace::plan(layout(), [RegionSpec::ram(GuestAddress(0), p)]).unwrap();
        space
            .add_listener(Arc::new(|e: &RegionEvent<'_>| match e.kind {
                ChangeKind::Removed => Err("slot in use".into()),
                ChangeKind::Inserted => Ok(()),
            }))
            .unwrap();
        let before = space.snapshot();
        let err = space.remove_region(GuestAddress(0), p).unwrap_err();
        assert!(matches!(err, Error::Listener { base: 0, .. }), "{err}");
        assert!(Arc::ptr_eq(&before, &space.snapshot()));
        assert!(writer_sees_published(&space));
        assert_eq!(space.snapshot().slot(GuestAddress(0)), Some(0));
        space.snapshot().check_invariants();
    }
}
