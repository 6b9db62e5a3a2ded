//! Host memory for regions: creating it (anonymous, memfd, hugetlbfs, file), binding it to
//! NUMA nodes, huge pages, prefault; the hotplug window's host reservation; and the report of
//! what was done.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fmt, io};

use memvisor_resources::{AddressAllocator, AddressRange};
use memvisor_vmem::{Advice, CommitMode, HugePageAdvice, HugeTlbSize, Reservation};
use vm_memory::{FileOffset, GuestAddress, MmapRegion};

use crate::error::{Error, Result};
use crate::layout::Window;
use crate::spec::{
    Backing, HugePageFallback, HugePageSize, HugePages, MAX_PREFAULT_THREADS, NumaBinding,
    RegionSpec, RegionType, host_page_size,
};
use crate::sys::{self, Feature, Source};

/// A region's host memory: one mapping of `len` bytes at `ptr`, unmapped (or, in the hotplug
/// window, turned back into reserved address space) when dropped.
pub(crate) struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
    file: Option<FileOffset>,
    /// Whether the mapping is of explicit huge pages (hugetlbfs), as obtained after any
    /// fallback; `None` for an adopted mapping that does not say.
    hugetlb: Option<bool>,
    owner: Owner,
}

enum Owner {
    /// A reservation of its own, holding the mapping from this offset to its end: 0, or for
    /// private transparent huge pages the guest base modulo 2 MiB (boxed: a reservation is
    /// large, and the window variant is the common one for hotplug).
    Mapping(Box<Reservation>, usize),
    /// A vm-memory mapping, kept alive by this reference.
    Foreign { _mapping: Arc<MmapRegion<()>> },
    /// A slot of the hotplug window's reservation, at this offset.
    Window(Arc<HotplugWindow>, usize),
    /// A slot given back (or kept claimed) by [`HostMemory::give_back`]: nothing left to do.
    GivenBack,
}

// SAFETY: `HostMemory` owns its mapping (or its slot of the window); the pointer is only an
// address, and all access to the memory goes through vm-memory's volatile accessors, which are
// sound from any thread.
unsafe impl Send for HostMemory {}
// SAFETY: as for `Send`: shared references only read the address and length.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn file_offset(&self) -> Option<&FileOffset> {
        self.file.as_ref()
    }

    /// Whether the mapping is of explicit huge pages, if known.
    pub(crate) fn hugetlb(&self) -> Option<bool> {
        self.hugetlb
    }

    /// Adopts a vm-memory mapping, keeping it alive as long as this memory.
    pub(crate) fn adopt(mapping: Arc<MmapRegion<()>>) -> Option<Self> {
        let ptr = NonNull::new(mapping.as_ptr())?;
        Some(Self {
            ptr,
            len: mapping.size(),
            file: mapping.file_offset().cloned(),
            hugetlb: sys::mapping_hugetlb(&mapping),
            owner: Owner::Foreign { _mapping: mapping },
        })
    }
}

impl HostMemory {
    /// Whether this is an adopted vm-memory mapping: memory this crate did not map, which
    /// another adopted region may map too (one `MmapRegion` at two guest addresses).
    pub(crate) fn is_adopted(&self) -> bool {
        matches!(self.owner, Owner::Foreign { .. })
    }

    /// The reservation holding the mapping and the mapping's offset in it (`None` for an
    /// adopted vm-memory mapping).
    fn place(&self) -> Option<(&Reservation, usize)> {
        match &self.owner {
            Owner::Mapping(reservation, offset) => Some((reservation, *offset)),
            Owner::Window(window, offset) => Some((&window.reservation, *offset)),
            Owner::Foreign { .. } | Owner::GivenBack => None,
        }
    }

    /// After `cause` failed a step of making this memory, or kept its region out of the
    /// address space: gives it back at once, and returns the error to report: `cause`, or
    /// [`Error::SlotNotRestored`] for a hotplug slot that cannot be turned back into reserved
    /// space (it then stays mapped and claimed, so that nothing else is mapped over it, until
    /// the address space is dropped).
    pub(crate) fn give_back(mut self, spec: &RegionSpec, cause: Error) -> Error {
        let Owner::Window(window, offset) = &self.owner else {
            return cause;
        };
        // SAFETY: the slot of this memory, which nothing refers to: the region it was made
        // for was never made, or never inserted and held by nothing else.
        let released = unsafe { window.release(*offset, self.len) };
        self.owner = Owner::GivenBack;
        match released {
            Ok(()) => cause,
            Err(restore) => Error::SlotNotRestored {
                base: spec.base,
                size: spec.size,
                cause: Box::new(cause),
                restore,
            },
        }
    }

    /// Gives the pages of `offset..offset + len` back to the host through the reservation:
    /// pages of a shared source (shared anonymous memory, memfd, hugetlbfs file) are removed
    /// from it (`MADV_REMOVE`, which punches a hole in the file), private pages dropped
    /// (`MADV_DONTNEED`). The range is inside the mapping and aligned to its page size
    /// (checked by the caller). `None` for an adopted vm-memory mapping, which this crate
    /// does not map.
    pub(crate) fn discard(&self, offset: usize, len: usize) -> Option<memvisor_vmem::Result<()>> {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        let (reservation, at) = self.place()?;
        // SAFETY: `offset..offset + len` is inside our mapping (checked by the caller), page
        // aligned; guest memory is only accessed through volatile accesses, so nothing relies
        // on its contents.
        Some(unsafe { reservation.purge_unchecked(at + offset, len) })
    }
}

impl fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMemory")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field(
                "in_hotplug_window",
                &matches!(self.owner, Owner::Window(..)),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        match &self.owner {
            // The reservation unmaps itself when dropped.
            Owner::Mapping(..) | Owner::Foreign { .. } | Owner::GivenBack => {}
            Owner::Window(window, offset) => {
                // SAFETY: our slot; as the region is being dropped, nothing refers to it. A
                // failure leaves the slot claimed (it answers `SlotBusy`), never mapped over.
                let _ = unsafe { window.release(*offset, self.len) };
            }
        }
    }
}

/// The host address range of the hotplug window: one `memvisor-vmem` reservation, into which
/// each plugged slot is mapped at `lead + guest address - window start`, so plugged memory is
/// contiguous on the host as it is in the guest, and each slot's host address is congruent to
/// its guest address modulo the reservation's alignment.
pub(crate) struct HotplugWindow {
    reservation: Reservation,
    guest_start: u64,
    /// Where the window starts in the reservation: the guest start modulo the reservation's
    /// alignment.
    lead: usize,
    /// Offsets of slots whose memory is mapped (freed when the slot's last user drops it).
    slots: Mutex<AddressAllocator>,
}

impl fmt::Debug for HotplugWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotplugWindow")
            .field("guest_start", &format_args!("{:#x}", self.guest_start))
            .field("host", &self.reservation.as_ptr().wrapping_add(self.lead))
            .field("len", &(self.reservation.len() - self.lead))
            .finish()
    }
}

/// Host alignment of a hotplug window's guest addresses: a slot lies at a host address
/// congruent to its guest address modulo 1 GiB, so that a slot aligned in the guest to any huge
/// page size is aligned on the host. (Under Miri, whose allocator-backed reservations cannot be
/// aligned past 512 MiB, 2 MiB: explicit huge pages do not exist there.)
const WINDOW_ALIGN: usize = if cfg!(miri) { 2 << 20 } else { 1 << 30 };

impl HotplugWindow {
    /// Reserves host address space for a window, its start congruent to the window's guest
    /// start modulo 1 GiB, so that a slot aligned in the guest to any huge page size is so
    /// aligned on the host (a window starting off a 1 GiB boundary reserves up to 1 GiB more
    /// address space, never memory). The window must start and end on host page boundaries, so
    /// that a slot at a page-aligned guest address is page aligned on the host too.
    pub(crate) fn new(window: &Window) -> Result<Self> {
        let (guest_start, size) = (window.start().0, window.size());
        let page_size = host_page_size();
        if !guest_start.is_multiple_of(page_size) || !size.is_multiple_of(page_size) {
            return Err(Error::WindowMisaligned {
                kind: window.kind(),
                start: guest_start,
                size,
                page_size,
            });
        }
        // Below `WINDOW_ALIGN`, so it fits.
        let lead = usize::try_from(guest_start % WINDOW_ALIGN as u64).unwrap_or(0);
        let len = usize::try_from(size)
            .ok()
            .and_then(|len| len.checked_add(lead))
            .ok_or(Error::Overflow {
                base: guest_start,
                size,
            })?;
        let reservation = Reservation::builder()
            .alignment(WINDOW_ALIGN)
            .mode(CommitMode::Protected)
            .reserve(len)
            .map_err(|source| Error::Reservation {
                window: window.range(),
                source,
            })?;
        let space = AddressRange::from_start_and_size(0, size)
            .map_err(|_| Error::ZeroSize { base: guest_start })?;
        Ok(Self {
            reservation,
            guest_start,
            lead,
            slots: Mutex::new(AddressAllocator::new(space)),
        })
    }

    /// The host address and length of the window (its part of the reservation).
    pub(crate) fn host_range(&self) -> (usize, usize) {
        (
            self.reservation.as_ptr() as usize + self.lead,
            self.reservation.len() - self.lead,
        )
    }

    /// Claims the slot for `base..base + size` (guest addresses); returns its offset in the
    /// reservation.
    fn claim(&self, base: u64, size: u64) -> Result<usize> {
        let offset = base
            .checked_sub(self.guest_start)
            .ok_or(Error::NoHotplugWindow { base })?;
        let range = AddressRange::from_start_and_size(offset, size)
            .map_err(|_| Error::Overflow { base, size })?;
        let host_offset = usize::try_from(offset).map_err(|_| Error::Overflow { base, size })?;
        let page_size = host_page_size();
        if !offset.is_multiple_of(page_size) || !size.is_multiple_of(page_size) {
            return Err(Error::Misaligned {
                base,
                size,
                page_size,
            });
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if range.end() > slots.space().end() {
            return Err(Error::NoHotplugWindow { base });
        }
        slots.reserve(range).map_err(|e| match e {
            memvisor_resources::Error::Overlap { .. } => Error::SlotBusy { base, size },
            // The heap refused the bookkeeping (the range is inside the space, checked above).
            source => Error::Allocator {
                what: "a hotplug slot",
                owner: format!("the region at {base:#x}"),
                source,
            },
        })?;
        // The window's offsets are below its size, which with `lead` fits a `usize`.
        Ok(self.lead + host_offset)
    }

    /// Frees the claim of the slot at `offset` in the reservation.
    fn unclaim(&self, offset: usize, len: usize) {
        let range = AddressRange::from_start_and_size((offset - self.lead) as u64, len as u64);
        if let Ok(range) = range {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let freed = slots.free(&range);
            debug_assert!(freed.is_ok(), "hotplug slot bookkeeping out of step");
        }
    }

    fn slot_ptr(&self, offset: usize) -> NonNull<u8> {
        // SAFETY: `claim` checked that the slot lies inside the reservation.
        unsafe { self.reservation.as_non_null().add(offset) }
    }

    /// Turns a slot back into reserved address space and frees it. If that fails the slot
    /// stays claimed, so that nothing else is mapped over whatever is left there.
    ///
    /// # Safety
    /// The slot was claimed for `offset..offset + len` and nothing refers to its memory.
    unsafe fn release(&self, offset: usize, len: usize) -> memvisor_vmem::Result<()> {
        // SAFETY: the caller's slot, which nothing refers to; `claim` checked that it is inside
        // the reservation and, as the window and the region are page aligned, page aligned.
        unsafe { self.reservation.decommit_unchecked(offset, len) }?;
        self.unclaim(offset, len);
        Ok(())
    }
}

/// What was done to give one region its host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionReport {
    /// The region's type.
    pub ty: RegionType,
    /// Its guest base address.
    pub base: GuestAddress,
    /// Its size.
    pub size: u64,
    /// The backing's short name ([`Backing::name`]).
    pub backing: &'static str,
    /// The host address of the mapping.
    pub host_addr: usize,
    /// The page size in use: the explicit huge page size (a hugetlbfs mount's, for a
    /// [`Backing::File`] on one) or the base page size.
    pub page_size: u64,
    /// The pages obtained (after any fallback): [`HugePages::Explicit`] also for a
    /// [`Backing::File`] on a hugetlbfs mount of 2 MiB or 1 GiB pages, whatever the spec asked
    /// (on a mount of another huge page size it is [`HugePages::None`], and `page_size` says
    /// the mount's size). [`HugePages::Transparent`] means the memory is
    /// advised `MADV_HUGEPAGE` and the host's setting gives transparent huge pages to this
    /// backing (the kernel may still use base pages where it finds no free huge page).
    pub huge_pages: HugePages,
    /// Whether the huge pages asked for (explicit ones the host has no free pages or no pool
    /// of, or transparent ones the host's setting does not give to this backing) could not be
    /// had, and the fallback was taken. A [`Backing::File`] on hugetlbfs that asked for
    /// transparent huge pages got the mount's explicit ones: no fallback.
    pub fell_back: bool,
    /// The NUMA binding applied.
    pub numa: Option<NumaBinding>,
    /// Threads that prefaulted the memory (0: not prefaulted): at most the spec's count and
    /// [`MAX_PREFAULT_THREADS`](crate::MAX_PREFAULT_THREADS), one per 64 MiB at least.
    pub prefault_threads: usize,
    /// Whether `MADV_DONTFORK` was applied.
    pub dontfork: bool,
    /// Whether the memory lies in the hotplug window's host reservation.
    pub in_hotplug_window: bool,
    /// Time taken.
    pub elapsed: Duration,
    /// What the caller should know: a fallback taken and why (each warning says what this
    /// region's memory got).
    pub warnings: Vec<String>,
}

impl fmt::Display for RegionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:#x}+{:#x} {} at host {:#x}, page {:#x}",
            self.ty, self.base.0, self.size, self.backing, self.host_addr, self.page_size
        )?;
        match self.huge_pages {
            HugePages::None => {}
            HugePages::Transparent => f.write_str(", THP")?,
            HugePages::Explicit(size) => write!(f, ", {size} pages")?,
        }
        if self.fell_back {
            f.write_str(" (fallback)")?;
        }
        if let Some(numa) = &self.numa {
            write!(f, ", NUMA {} {:?}", numa.policy(), numa.nodes())?;
        }
        if self.prefault_threads > 0 {
            write!(f, ", prefaulted by {} threads", self.prefault_threads)?;
        }
        if self.dontfork {
            f.write_str(", dontfork")?;
        }
        if self.in_hotplug_window {
            f.write_str(", in hotplug window")?;
        }
        write!(f, " in {:.1?}", self.elapsed)?;
        for w in &self.warnings {
            write!(f, "; warning: {w}")?;
        }
        Ok(())
    }
}

/// What building a backed address space did: one [`RegionReport`] per region with memory, and
/// the hotplug window's host reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackingReport {
    /// The regions given memory, by address.
    pub regions: Vec<RegionReport>,
    /// The host address and length of the first hotplug window (its part of the window's
    /// host reservation), if there is one: the first of
    /// [`hotplug_windows`](Self::hotplug_windows).
    pub hotplug_window: Option<(usize, usize)>,
    /// The host address and length of every hotplug window (its part of the window's host
    /// reservation), in layout order (by guest address); empty without one.
    pub hotplug_windows: Vec<(usize, usize)>,
}

impl BackingReport {
    /// Bytes of host memory mapped, at most `u64::MAX` (a report whose public sizes were
    /// changed to add up to more gives `u64::MAX`, as [`Snapshot::total_size`] does).
    ///
    /// [`Snapshot::total_size`]: crate::Snapshot::total_size
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.regions
            .iter()
            .fold(0, |total: u64, r| total.saturating_add(r.size))
    }
}

impl fmt::Display for BackingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.regions {
            writeln!(f, "{r}")?;
        }
        for (addr, len) in &self.hotplug_windows {
            writeln!(
                f,
                "hotplug window reserved at host {addr:#x}, {len:#x} bytes"
            )?;
        }
        Ok(())
    }
}

/// Where a region's memory goes.
pub(crate) enum Target<'a> {
    /// A mapping of its own.
    Own,
    /// Its slot in the hotplug window.
    Window(&'a Arc<HotplugWindow>),
}

/// Creates the host memory of a validated spec with a memory backing.
pub(crate) fn back(spec: &RegionSpec, target: Target<'_>) -> Result<(HostMemory, RegionReport)> {
    let started = Instant::now();
    require_features(spec)?;
    require_nodes(spec)?;
    let mut warnings = Vec::new();
    // Transparent huge pages asked of an existing file: the kernel gives none to a file outside
    // its own shared memory, but a file on hugetlbfs is made of the mount's explicit huge
    // pages, which only the opened file tells. Decided once it is mapped.
    let thp_of_file =
        spec.huge_pages == HugePages::Transparent && matches!(spec.backing, Backing::File { .. });
    let (wanted, mut fell_back) = match spec.huge_pages {
        HugePages::Transparent if thp_of_file => (HugePages::None, false),
        HugePages::Transparent => {
            let got = transparent_or_fallback(spec, spec.fallback, &mut warnings)?;
            (got, got != HugePages::Transparent)
        }
        HugePages::Explicit(_) if !sys::has(Feature::ExplicitHugePages) => {
            let got = lacking(
                spec,
                Feature::ExplicitHugePages,
                spec.fallback,
                &mut warnings,
            )?;
            (got, true)
        }
        other => (other, false),
    };
    let (memory, mut huge_pages, file_page) = match map(spec, wanted, &target) {
        Ok((memory, file_page)) => (memory, wanted, file_page),
        Err(e) => match e.shortage() {
            // Only explicit huge pages asked for fall back: a file on hugetlbfs has no others.
            Some(reason)
                if matches!(spec.huge_pages, HugePages::Explicit(_))
                    && spec.fallback != HugePageFallback::Fail
                    && is_anon_or_memfd(&spec.backing) =>
            {
                warnings.push(format!("{reason}; fell back"));
                let got = if spec.fallback == HugePageFallback::Transparent {
                    transparent_or_fallback(spec, HugePageFallback::BasePages, &mut warnings)?
                } else {
                    HugePages::None
                };
                let (memory, _) = map(spec, got, &target).map_err(|e| e.into_error(spec))?;
                fell_back = true;
                (memory, got, None)
            }
            _ => return Err(e.into_error(spec)),
        },
    };
    if thp_of_file && file_page.is_none() {
        // Not on hugetlbfs: no transparent huge pages for this file (an error without a
        // fallback, base pages and a warning with one). The mapping is given back on an error.
        match transparent_or_fallback(spec, spec.fallback, &mut warnings) {
            Ok(got) => huge_pages = got,
            Err(e) => return Err(memory.give_back(spec, e)),
        }
        fell_back = huge_pages != HugePages::Transparent;
    }
    // A file on hugetlbfs is mapped in the mount's huge pages, whatever the spec says.
    let (huge_pages, page_size) = match (file_page, huge_pages) {
        (Some(page), _) => (
            HugePageSize::from_bytes(page).map_or(huge_pages, HugePages::Explicit),
            page,
        ),
        (None, HugePages::Explicit(size)) => (huge_pages, size.bytes()),
        (None, _) => (huge_pages, host_page_size()),
    };
    let ptr = memory.ptr;
    let prefault_threads = match finish(&memory, spec, huge_pages, page_size) {
        Ok(threads) => threads,
        Err(e) => return Err(memory.give_back(spec, e)),
    };
    let report = RegionReport {
        ty: spec.ty,
        base: GuestAddress(spec.base),
        size: spec.size,
        backing: spec.backing.name(),
        host_addr: ptr.as_ptr() as usize,
        page_size,
        huge_pages,
        fell_back,
        numa: spec.numa.clone(),
        prefault_threads,
        dontfork: spec.dontfork,
        in_hotplug_window: matches!(target, Target::Window(_)),
        elapsed: started.elapsed(),
        warnings,
    };
    Ok((memory, report))
}

/// The steps after the mapping of `memory`: advice, NUMA binding and prefault, as the spec
/// says; returns the number of prefault threads.
fn finish(
    memory: &HostMemory,
    spec: &RegionSpec,
    huge_pages: HugePages,
    page_size: u64,
) -> Result<usize> {
    let len = memory.len;
    let (reservation, at) = memory.place().ok_or(Error::ZeroSize { base: spec.base })?;
    if huge_pages == HugePages::Transparent {
        reservation
            .advise_huge_pages(at, len, HugePageAdvice::Huge)
            .map_err(|e| vmem_os("madvise", spec, e))?;
    }
    if spec.dontfork {
        reservation
            .advise(at, len, Advice::DontFork)
            .map_err(|e| vmem_os("madvise", spec, e))?;
    }
    if let Some(numa) = &spec.numa {
        let policy = match numa.policy() {
            crate::spec::NumaPolicy::Preferred => memvisor_vmem::NumaPolicy::Preferred,
            crate::spec::NumaPolicy::Bind => memvisor_vmem::NumaPolicy::Bind,
            crate::spec::NumaPolicy::Interleave => memvisor_vmem::NumaPolicy::Interleave,
        };
        reservation
            .bind_numa(at, len, policy, numa.nodes())
            .map_err(|e| vmem_os("mbind", spec, e))?;
    }
    let prefault_threads = if spec.prefault_threads > 0 && spec.protection.readable() {
        prefault(
            reservation,
            at,
            len,
            spec,
            page_size,
            huge_pages,
            spec.prefault_threads,
        )?
    } else {
        0
    };
    Ok(prefault_threads)
}

/// Everything about a validated spec with a memory backing that can be checked without making
/// memory: its host pages and end ([`RegionSpec::check_host_pages`]), the host features it
/// needs, its NUMA nodes, and its file (opened, and for hugetlbfs, a file made and removed at
/// once, without a size, so no huge page is reserved).
/// [`SpaceBuilder::back`](crate::SpaceBuilder::back) runs it over every spec before mapping
/// any, so a mistake in one spec costs no other spec's mapping and prefault.
///
/// # Errors
/// As [`back`] for these checks.
pub(crate) fn precheck(spec: &RegionSpec) -> Result<()> {
    spec.check_host_pages()?;
    require_features(spec)?;
    require_nodes(spec)?;
    let explicit = match spec.huge_pages {
        HugePages::Explicit(size) if sys::has(Feature::ExplicitHugePages) => Some(size),
        _ => None,
    };
    if spec.fallback == HugePageFallback::Fail {
        require_pool(explicit).map_err(|e| e.into_error(spec))?;
    }
    match &spec.backing {
        Backing::File { .. } => {
            let opened = open_source(spec, explicit).map_err(|e| e.into_error(spec))?;
            // Transparent huge pages without a fallback: a file on hugetlbfs is made of the
            // mount's huge pages, any other file gets none, which is refused here.
            let on_hugetlbfs = matches!(opened, Some((_, Some(_))));
            if spec.huge_pages == HugePages::Transparent
                && spec.fallback == HugePageFallback::Fail
                && !on_hugetlbfs
            {
                transparent_or_fallback(spec, HugePageFallback::Fail, &mut Vec::new())?;
            }
        }
        Backing::Hugetlbfs(dir) => {
            drop(open_hugetlbfs(spec, dir, explicit).map_err(|e| e.into_error(spec))?);
        }
        _ => {}
    }
    Ok(())
}

/// [`Error::NumaNodeMissing`] if the spec binds to a node the host does not have.
fn require_nodes(spec: &RegionSpec) -> Result<()> {
    if let Some(numa) = &spec.numa {
        for &node in numa.nodes() {
            if !sys::node_exists(node) {
                return Err(Error::NumaNodeMissing {
                    node,
                    online: sys::online_nodes(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses, before anything is made, a spec with memory that needs a feature this host does
/// not have ([`Error::Unsupported`]): its backing's source, NUMA binding, dontfork, and huge
/// pages without a fallback (with one, [`back`] falls back to what the host has). On Linux
/// nothing is refused.
pub(crate) fn require_features(spec: &RegionSpec) -> Result<()> {
    let base = spec.base;
    match spec.backing {
        Backing::None | Backing::AnonymousPrivate => {}
        Backing::AnonymousShared => Feature::SharedAnonymous.require(base)?,
        Backing::Memfd => Feature::Memfd.require(base)?,
        Backing::Hugetlbfs(_) => Feature::Hugetlbfs.require(base)?,
        Backing::File { .. } => Feature::FileMapping.require(base)?,
    }
    if spec.numa.is_some() {
        Feature::NumaBinding.require(base)?;
    }
    if spec.dontfork {
        Feature::DontFork.require(base)?;
    }
    if spec.fallback == HugePageFallback::Fail {
        match spec.huge_pages {
            HugePages::None => {}
            HugePages::Transparent => Feature::TransparentHugePages.require(base)?,
            HugePages::Explicit(_) => Feature::ExplicitHugePages.require(base)?,
        }
    }
    Ok(())
}

/// Whether the host gives transparent huge pages to a mapping of `backing` advised
/// `MADV_HUGEPAGE`, given the selected value of the setting that governs it
/// ([`thp_setting_path`]); `None` when the setting cannot be read.
pub(crate) fn thp_in_effect(backing: &Backing, setting: Option<&str>) -> bool {
    match (backing, setting) {
        (Backing::AnonymousPrivate, Some(s)) => matches!(s, "always" | "madvise"),
        (Backing::AnonymousShared | Backing::Memfd, Some(s)) => {
            matches!(s, "always" | "within_size" | "advise" | "force")
        }
        // Files outside the kernel's own shared memory get huge pages only from their file
        // system's mount options (tmpfs `huge=`) or read-only: not something to promise.
        _ => false,
    }
}

/// The sysfs file whose setting decides whether `backing` gets transparent huge pages.
pub(crate) fn thp_setting_path(backing: &Backing) -> Option<&'static str> {
    match backing {
        Backing::AnonymousPrivate => Some(sys::THP_ENABLED),
        Backing::AnonymousShared | Backing::Memfd => Some(sys::THP_SHMEM_ENABLED),
        _ => None,
    }
}

/// [`HugePages::Transparent`] if the host gives them to the spec's backing; otherwise an error
/// (`fallback` is [`HugePageFallback::Fail`]) or [`HugePages::None`] and a warning.
fn transparent_or_fallback(
    spec: &RegionSpec,
    fallback: HugePageFallback,
    warnings: &mut Vec<String>,
) -> Result<HugePages> {
    if !sys::has(Feature::TransparentHugePages) {
        return lacking(spec, Feature::TransparentHugePages, fallback, warnings);
    }
    let path = thp_setting_path(&spec.backing);
    let setting = path.and_then(sys::sysfs_choice);
    if thp_in_effect(&spec.backing, setting.as_deref()) {
        return Ok(HugePages::Transparent);
    }
    let path = path.unwrap_or("the file system's mount options");
    let setting = setting.unwrap_or_else(|| "unknown".to_owned());
    if fallback == HugePageFallback::Fail {
        return Err(Error::TransparentHugePagesUnavailable {
            base: spec.base,
            backing: spec.backing.name(),
            path,
            setting,
        });
    }
    warnings.push(format!(
        "transparent huge pages are off for {} memory ({path} is {setting}); base pages used",
        spec.backing.name()
    ));
    Ok(HugePages::None)
}

/// What a spec gets for huge pages of a `feature` this host does not have: with
/// [`HugePageFallback::Fail`], [`Error::Unsupported`]; with any other fallback, base pages and a
/// warning (a host without explicit huge pages has no transparent ones either).
fn lacking(
    spec: &RegionSpec,
    feature: Feature,
    fallback: HugePageFallback,
    warnings: &mut Vec<String>,
) -> Result<HugePages> {
    if fallback == HugePageFallback::Fail {
        return Err(feature.unsupported(spec.base));
    }
    warnings.push(format!(
        "{} is only on {}; base pages used",
        feature.name(),
        feature.hosts()
    ));
    Ok(HugePages::None)
}

fn is_anon_or_memfd(backing: &Backing) -> bool {
    matches!(
        backing,
        Backing::AnonymousPrivate | Backing::AnonymousShared | Backing::Memfd
    )
}

/// The `io::Error` of a `memvisor-vmem` error: the OS error code where there is one, else
/// the vmem error itself (its message, and its cause as its `source()`, such as the OS error
/// of a worker thread that could not be started).
pub(crate) fn vmem_io(e: &memvisor_vmem::Error) -> io::Error {
    match e {
        memvisor_vmem::Error::Os { source, .. } => io::Error::from_raw_os_error(source.raw()),
        other => io::Error::other(other.clone()),
    }
}

fn vmem_os(op: &'static str, spec: &RegionSpec, e: memvisor_vmem::Error) -> Error {
    os(op, spec, vmem_io(&e))
}

fn os(op: &'static str, spec: &RegionSpec, source: io::Error) -> Error {
    Error::Os {
        op,
        base: spec.base,
        source,
    }
}

enum MapError {
    /// The kernel had no huge pages of this size for the mapping (`ENOMEM` where hugetlb
    /// reserves them).
    NoHugePages(HugePageSize, io::Error),
    /// The host has no pool of huge pages of this size (its sysfs directory is missing), so
    /// the kernel would refuse the mapping with `EINVAL`; nothing was opened or mapped.
    NoPool(HugePageSize, PathBuf),
    Other(Error),
}

impl MapError {
    /// Why the huge pages asked for could not be had, if that is the failure (the
    /// fallback's warning).
    fn shortage(&self) -> Option<String> {
        match self {
            MapError::NoHugePages(size, source) => {
                Some(format!("no {size} huge pages to be had ({source})"))
            }
            MapError::NoPool(size, pool) => Some(format!(
                "no {size} huge page pool on this host ({} is missing)",
                pool.display()
            )),
            MapError::Other(_) => None,
        }
    }

    fn into_error(self, spec: &RegionSpec) -> Error {
        match self {
            MapError::NoHugePages(size, source) => Error::HugePagesUnavailable {
                base: spec.base,
                size,
                needed: spec.size / size.bytes(),
                free: sys::free_huge_pages(size),
                source,
            },
            MapError::NoPool(size, pool) => Error::HugePageSizeUnavailable {
                base: spec.base,
                size,
                pool,
            },
            MapError::Other(e) => e,
        }
    }
}

/// [`MapError::NoPool`] if explicit huge pages of `size` are asked for and the host's sysfs
/// lists its huge page pools without one of that size. When sysfs cannot tell, the kernel
/// decides (and its `EINVAL` stays an [`Error::Os`]).
fn require_pool(explicit: Option<HugePageSize>) -> Result<(), MapError> {
    match explicit.map(|size| (size, sys::huge_pool(size))) {
        Some((size, (Some(false), pool))) => Err(MapError::NoPool(size, pool)),
        _ => Ok(()),
    }
}

impl From<Error> for MapError {
    fn from(e: Error) -> Self {
        MapError::Other(e)
    }
}

/// Opens the source and maps it at the target, with `huge` pages; returns the memory and, for
/// a file on hugetlbfs, the mount's huge page size (the size its memory is made of).
fn map(
    spec: &RegionSpec,
    huge: HugePages,
    target: &Target<'_>,
) -> Result<(HostMemory, Option<u64>), MapError> {
    let explicit = match huge {
        HugePages::Explicit(size) => Some(size),
        _ => None,
    };
    let len = usize::try_from(spec.size).map_err(|_| Error::Overflow {
        base: spec.base,
        size: spec.size,
    })?;
    require_pool(explicit)?;
    let (file, file_page) = match open_source(spec, explicit)? {
        Some((file, page)) => (Some(file), page),
        None => (None, None),
    };
    let protection = spec.protection;
    let source = match (&spec.backing, &file) {
        (Backing::AnonymousShared, _) => Source::AnonymousShared,
        (_, Some(file)) => Source::File(file),
        _ => Source::AnonymousPrivate,
    };
    let huge_tlb = explicit.map(|size| match size {
        HugePageSize::Size2M => HugeTlbSize::Size2M,
        HugePageSize::Size1G => HugeTlbSize::Size1G,
    });
    // The huge pages the mapping is made of: those asked for, or a hugetlbfs file's.
    let huge_size = explicit.or_else(|| file_page.and_then(HugePageSize::from_bytes));
    let failed = |e: memvisor_vmem::Error| {
        let e = vmem_io(&e);
        match huge_size {
            Some(size) if e.raw_os_error() == Some(libc::ENOMEM) => MapError::NoHugePages(size, e),
            _ => MapError::Other(os("mmap", spec, e)),
        }
    };
    let (ptr, owner) = match target {
        Target::Own => {
            let align = match huge {
                HugePages::Explicit(size) => size.bytes(),
                HugePages::Transparent => HugePageSize::Size2M.bytes(),
                HugePages::None => host_page_size(),
            };
            // KVM maps a memory slot with huge pages only where its guest and host addresses
            // agree modulo the huge page, so private transparent huge pages start in a 2 MiB
            // aligned reservation at the guest base modulo 2 MiB (the lead, never mapped).
            // Shared memory's huge pages follow its file offsets from the mapping's start,
            // so it is mapped 2 MiB aligned.
            let lead = match (huge, source) {
                (HugePages::Transparent, Source::AnonymousPrivate) => {
                    usize::try_from(spec.base % HugePageSize::Size2M.bytes()).unwrap_or(0)
                }
                _ => 0,
            };
            let reserved = len.checked_add(lead).ok_or(Error::Overflow {
                base: spec.base,
                size: spec.size,
            })?;
            // A hugetlbfs file is mapped at addresses aligned to its huge page.
            let align = usize::try_from(align.max(file_page.unwrap_or(0))).unwrap_or(usize::MAX);
            let reservation = Reservation::builder()
                .alignment(align)
                .mode(CommitMode::Protected)
                .reserve(reserved)
                .map_err(|e| vmem_os("mmap", spec, e))?;
            // A failure drops (unmaps) the fresh reservation.
            // SAFETY: the fresh reservation, which nothing refers to; `lead + len` is its
            // length.
            unsafe { sys::map(&reservation, lead, len, source, protection, huge_tlb) }
                .map_err(failed)?;
            // SAFETY: `lead` is inside the reservation, which is `lead + len` bytes long.
            let ptr = unsafe { reservation.as_non_null().add(lead) };
            (ptr, Owner::Mapping(Box::new(reservation), lead))
        }
        Target::Window(window) => {
            let offset = window.claim(spec.base, spec.size)?;
            // SAFETY: the slot just claimed, which nothing refers to (the claim keeps every
            // other plug out of it, and a slot is only claimed again after its region, and so
            // every reference to its memory, is gone).
            let mapped = unsafe {
                sys::map(
                    &window.reservation,
                    offset,
                    len,
                    source,
                    protection,
                    huge_tlb,
                )
            };
            if let Err(e) = mapped {
                // A refused map leaves the slot's reserved pages as they were (where the
                // kernel took them before refusing, the reservation put its own back), unless
                // they are lost, which every call on them then answers: only then does the
                // slot stay claimed. No decommit here: at the mapping limit, which refuses the
                // map, it would be refused too, and the slot lost for nothing.
                if let Err(restore) = window.reservation.is_committed(offset, len) {
                    return Err(MapError::Other(Error::SlotNotRestored {
                        base: spec.base,
                        size: spec.size,
                        cause: Box::new(failed(e).into_error(spec)),
                        restore,
                    }));
                }
                window.unclaim(offset, len);
                return Err(failed(e));
            }
            (
                window.slot_ptr(offset),
                Owner::Window(Arc::clone(window), offset),
            )
        }
    };
    Ok((
        HostMemory {
            ptr,
            len,
            file,
            hugetlb: Some(explicit.is_some() || file_page.is_some()),
            owner,
        },
        file_page,
    ))
}

/// A name unique within the process for memfds and hugetlbfs files.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "memvisor-space-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new file, already unlinked, in the hugetlbfs mount `dir`, of no size yet; checked to be on
/// hugetlbfs and, with `explicit`, of that page size.
fn open_hugetlbfs(
    spec: &RegionSpec,
    dir: &Path,
    explicit: Option<HugePageSize>,
) -> Result<File, MapError> {
    let file_err = |path: &Path, source| Error::File {
        path: path.to_owned(),
        base: spec.base,
        source,
    };
    let path: PathBuf = dir.join(unique_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| file_err(&path, e))?;
    let _ = std::fs::remove_file(&path);
    let (magic, page) = sys::fs_info(&file).map_err(|e| file_err(dir, e))?;
    if magic != sys::HUGETLBFS_MAGIC {
        return Err(Error::NotHugetlbfs {
            path: dir.to_owned(),
            magic,
        }
        .into());
    }
    if let Some(wanted) = explicit
        && page != wanted.bytes()
    {
        return Err(Error::HugePageSizeMismatch {
            path: dir.to_owned(),
            found: page,
            wanted,
        }
        .into());
    }
    Ok(file)
}

/// Opens the source of a spec's memory, if it has one: the file and offset to map and, for an
/// existing file on hugetlbfs, the mount's huge page size, which the region's base and size and
/// the offset are checked to be multiples of.
fn open_source(
    spec: &RegionSpec,
    explicit: Option<HugePageSize>,
) -> Result<Option<(FileOffset, Option<u64>)>, MapError> {
    let file_err = |path: &Path, source| Error::File {
        path: path.to_owned(),
        base: spec.base,
        source,
    };
    let file = match &spec.backing {
        Backing::None | Backing::AnonymousPrivate | Backing::AnonymousShared => return Ok(None),
        Backing::Memfd => {
            let name = CString::new(unique_name()).unwrap_or_default();
            let file = sys::memfd(&name, explicit).map_err(|e| os("memfd_create", spec, e))?;
            file.set_len(spec.size)
                .map_err(|e| os("ftruncate", spec, e))?;
            sys::seal_size(&file).map_err(|e| os("fcntl(F_ADD_SEALS)", spec, e))?;
            (FileOffset::new(file, 0), None)
        }
        Backing::Hugetlbfs(dir) => {
            let file = open_hugetlbfs(spec, dir, explicit)?;
            file.set_len(spec.size)
                .map_err(|e| os("ftruncate", spec, e))?;
            (FileOffset::new(file, 0), None)
        }
        Backing::File { path, offset } => {
            let file = sys::open_backing_file(path, spec.protection.writable())
                .map_err(|e| file_err(path, e))?;
            let len = file.metadata().map_err(|e| file_err(path, e))?.len();
            // A file on hugetlbfs is mapped in whole huge pages of its mount: a region or an
            // offset off them would be refused by the kernel part-way, after other regions
            // were made.
            let page = sys::hugetlbfs_page(&file).map_err(|e| file_err(path, e))?;
            if let Some(page_size) = page {
                let (base, size) = (spec.base, spec.size);
                if !base.is_multiple_of(page_size) || !size.is_multiple_of(page_size) {
                    return Err(Error::Misaligned {
                        base,
                        size,
                        page_size,
                    }
                    .into());
                }
                if !offset.is_multiple_of(page_size) {
                    return Err(Error::Misaligned {
                        base: *offset,
                        size,
                        page_size,
                    }
                    .into());
                }
            }
            let needed = offset.checked_add(spec.size).ok_or(Error::Overflow {
                base: *offset,
                size: spec.size,
            })?;
            if len < needed {
                return Err(file_err(
                    path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file is {len:#x} bytes; the region needs {needed:#x}"),
                    ),
                )
                .into());
            }
            (FileOffset::new(file, *offset), page)
        }
    };
    Ok(Some(file))
}

/// Minimum bytes per prefault thread: below this, more threads cost more than they save.
const PREFAULT_CHUNK_MIN: usize = 64 << 20;

/// Makes `at..at + len` of the reservation resident, split into page-aligned parts across up
/// to `threads` threads (for writing if the region is writable, else for reading).
/// Populates `at..at + len` of the fresh mapping with up to `threads` threads, at most
/// [`MAX_PREFAULT_THREADS`] (one per [`PREFAULT_CHUNK_MIN`] at least); returns how many threads
/// populated it (a thread the system refuses to start leaves its part to the calling thread). With
/// transparent huge pages the parts meet at 2 MiB-aligned host addresses ([`prefault_part`]), so
/// that no huge page is faulted by two threads.
fn prefault(
    reservation: &Reservation,
    at: usize,
    len: usize,
    spec: &RegionSpec,
    page_size: u64,
    huge_pages: HugePages,
    threads: usize,
) -> Result<usize> {
    let write = spec.protection.writable();
    let page = usize::try_from(page_size).unwrap_or(len).max(1);
    let unit = if huge_pages == HugePages::Transparent {
        usize::try_from(HugePageSize::Size2M.bytes()).map_or(page, |huge| huge.max(page))
    } else {
        page
    };
    let addr = (reservation.as_ptr() as usize).wrapping_add(at);
    let split = prefault_split(threads, len, page);
    // Rounding the parts up to whole units may leave the last ones empty: no thread for them.
    let parts = (1..split)
        .take_while(|&i| prefault_part(i, addr, len, split, unit).0 < len)
        .count()
        + 1;
    let run = |index: usize| -> memvisor_vmem::Result<()> {
        let (start, end) = prefault_part(index, addr, len, split, unit);
        if start == end {
            return Ok(());
        }
        // SAFETY: `at + start..at + end` is inside the fresh mapping (`end <= len`), which
        // nothing else refers to yet; each thread populates its own part.
        unsafe {
            if write {
                reservation.prefault_unchecked(at + start, end - start)
            } else {
                reservation.prefault_read_unchecked(at + start, end - start)
            }
        }
    };
    let (result, used) = if parts == 1 {
        (run(0), 1)
    } else {
        std::thread::scope(|s| {
            let mut inline = Vec::new();
            let mut handles = Vec::new();
            for i in 1..parts {
                match std::thread::Builder::new().spawn_scoped(s, move || run(i)) {
                    Ok(h) => handles.push((i, h)),
                    Err(_) => inline.push(i),
                }
            }
            let used = 1 + handles.len();
            let mut result = run(0);
            for i in inline {
                let r = run(i);
                if result.is_ok() {
                    result = r;
                }
            }
            for (i, h) in handles {
                let r = h.join().unwrap_or_else(|_| {
                    let (start, end) = prefault_part(i, addr, len, split, unit);
                    Err(memvisor_vmem::Error::WorkerPanicked {
                        offset: at + start,
                        len: end - start,
                    })
                });
                if result.is_ok() {
                    result = r;
                }
            }
            (result, used)
        })
    };
    result.map_err(|e| vmem_os("madvise(MADV_POPULATE)", spec, e))?;
    Ok(used)
}

/// How many parts a prefault of `len` bytes in pages of `page` bytes asked of `threads`
/// threads is split into: at least one, and at most `threads` and [`MAX_PREFAULT_THREADS`],
/// one per [`PREFAULT_CHUNK_MIN`] bytes and one per page.
fn prefault_split(threads: usize, len: usize, page: usize) -> usize {
    threads
        .min(MAX_PREFAULT_THREADS)
        .min(len / PREFAULT_CHUNK_MIN)
        .min(len / page.max(1))
        .max(1)
}

/// The offsets `start..end` of part `index` of a prefault of `len` bytes at host address
/// `addr` split into up to `parts` parts that meet at host addresses that are multiples of
/// `unit` (a power of two: the huge page for transparent huge pages, else the page), so that
/// no huge page is faulted by two threads whatever the range's start: every part but the first
/// and the last is `len / parts` rounded up to `unit`, and the first runs to the first multiple
/// of `unit` at least that far in. Parts past the end are empty (`start == end == len`).
fn prefault_part(
    index: usize,
    addr: usize,
    len: usize,
    parts: usize,
    unit: usize,
) -> (usize, usize) {
    let per = len
        .div_ceil(parts.max(1))
        .checked_next_multiple_of(unit)
        .unwrap_or(len);
    // The range is mapped memory, so `addr + per` (at most one unit past it) and its rounding
    // do not wrap; the checked forms keep a wrapped value out all the same.
    let first = addr
        .checked_add(per)
        .and_then(|end| end.checked_next_multiple_of(unit))
        .map_or(len, |end| end - addr)
        .min(len);
    if index == 0 {
        return (0, first);
    }
    let start = first
        .saturating_add((index - 1).saturating_mul(per))
        .min(len);
    (start, start.saturating_add(per).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a prefault cover the range once, in order, no more of them than asked,
    /// and meet at multiples of the unit on the host whatever the range's start: a region
    /// with transparent huge pages at a guest base off a 2 MiB boundary starts off one on the
    /// host too, and two threads faulting one huge page would each zero it.
    #[test]
    fn prefault_parts_meet_at_huge_page_boundaries() {
        const HUGE: usize = 2 << 20;
        let page = 4096;
        for lead in [0, page, HUGE / 2, HUGE - page] {
            let addr = 64 * HUGE + lead;
            for (len, parts) in [
                (256 << 20, 2),
                (130 << 20, 2),
                (200 << 20, 3),
                (4 * HUGE, 4),
            ] {
                let mut next = 0;
                let mut used = 0;
                for index in 0..parts {
                    let (start, end) = prefault_part(index, addr, len, parts, HUGE);
                    assert_eq!(start, next, "{lead:#x} {len:#x} {parts}: part {index}");
                    assert!(end >= start);
                    if end > start {
                        used += 1;
                    }
                    if start > 0 && start < len {
                        assert_eq!((addr + start) % HUGE, 0, "{lead:#x} {len:#x} {parts}");
                    }
                    next = end;
                }
                assert_eq!(next, len, "{lead:#x} {len:#x} {parts}");
                assert!(used >= 1 && used <= parts);
                assert_eq!(prefault_part(parts, addr, len, parts, HUGE), (len, len));
            }
        }
        // Base pages: the range starts on a page, so parts of even length meet on pages.
        let (start, end) = prefault_part(1, 0x1000, 128 << 20, 2, page);
        assert_eq!((start, end), (64 << 20, 128 << 20));
        assert_eq!(prefault_part(0, 0x1000, 128 << 20, 1, page), (0, 128 << 20));
    }

    /// However many threads a spec asks for and however large its region, a prefault starts
    /// at most `MAX_PREFAULT_THREADS` (the calling thread among them): a region of 1 TiB asked
    /// for `usize::MAX` threads would otherwise start 16,383 of them at once.
    #[test]
    fn prefault_split_bounded_by_max_threads() {
        let page = 4096;
        for len in [1 << 30, 1 << 40, usize::MAX / 2] {
            for threads in [MAX_PREFAULT_THREADS + 1, 1 << 20, usize::MAX] {
                assert_eq!(prefault_split(threads, len, page), MAX_PREFAULT_THREADS);
            }
        }
        assert_eq!(prefault_split(3, 1 << 40, page), 3);
        assert_eq!(prefault_split(usize::MAX, 128 << 20, page), 2);
        assert_eq!(prefault_split(usize::MAX, 4096, page), 1);
        assert_eq!(prefault_split(0, 1 << 30, page), 1);
    }

    /// A vmem error other than `Os` keeps its cause: the `io::Error` holds the vmem error
    /// itself, and walking its sources reaches the OS error once.
    #[test]
    fn vmem_io_keeps_the_cause_of_a_vmem_error() {
        let code = libc::EAGAIN;
        let os_text = io::Error::from_raw_os_error(code).to_string();
        let vmem = memvisor_vmem::Error::ThreadSpawn {
            index: 1,
            source: memvisor_vmem::OsError::from_raw(code),
        };
        let e = Error::Os {
            op: "prefault",
            base: 0x1000,
            source: vmem_io(&vmem),
        };
        let mut chain = Vec::new();
        let mut next: Option<&dyn std::error::Error> = Some(&e);
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        let said = chain.join(": ");
        assert_eq!(said.matches(&os_text).count(), 1, "{said}");
        assert!(said.contains("worker thread 1"), "{said}");
        let Error::Os { source, .. } = &e else {
            unreachable!()
        };
        let inner = source
            .get_ref()
            .and_then(|i| i.downcast_ref::<memvisor_vmem::Error>());
        assert_eq!(inner, Some(&vmem), "{source:?}");
        // The OS error of `Os` is still the io::Error's own code.
        let os = memvisor_vmem::Error::Os {
            operation: memvisor_vmem::Operation::Reserve,
            source: memvisor_vmem::OsError::from_raw(libc::ENOMEM),
        };
        assert_eq!(vmem_io(&os).raw_os_error(), Some(libc::ENOMEM));
    }

    #[test]
    fn huge_pages_a_host_lacks_fall_back_or_are_refused() {
        let spec = RegionSpec::ram(GuestAddress(0x20_0000), 2 << 20);
        for feature in [Feature::ExplicitHugePages, Feature::TransparentHugePages] {
            let mut warnings = Vec::new();
            let err = lacking(&spec, feature, HugePageFallback::Fail, &mut warnings).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Unsupported {
                        base: 0x20_0000,
                        only_on: "Linux",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(warnings.is_empty());
            for fallback in [HugePageFallback::BasePages, HugePageFallback::Transparent] {
                let got = lacking(&spec, feature, fallback, &mut warnings).unwrap();
                assert_eq!(got, HugePages::None);
                let warning = warnings.pop().unwrap();
                assert!(warning.contains(feature.name()), "{warning}");
                assert!(
                    warning.ends_with("is only on Linux; base pages used"),
                    "{warning}"
                );
            }
        }
    }

    /// Explicit huge pages of a size the host has no pool for (the kernel answers `EINVAL`):
    /// refused as such before anything is mapped without a fallback, the fallback taken with
    /// one. The host's sysfs is stood in for by a directory listing 2 MiB pages only.
    #[cfg(target_os = "linux")]
    #[test]
    #[cfg_attr(miri, ignore = "reads a directory standing for sysfs")]
    fn huge_pages_of_a_size_without_a_pool_fall_back_or_are_refused() {
        let root =
            std::env::temp_dir().join(format!("memvisor-space-no-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("hugepages/hugepages-2048kB")).unwrap();
        sys::FAKE_SYSFS_MM.with(|f| *f.borrow_mut() = Some(root.clone()));
        let missing = root.join("hugepages/hugepages-1048576kB");
        let size = HugePageSize::Size1G;
        for backing in [
            Backing::AnonymousPrivate,
            Backing::AnonymousShared,
            Backing::Memfd,
        ] {
            let spec = RegionSpec::ram(GuestAddress(0x4000_0000), size.bytes())
                .with_backing(backing.clone())
                .with_huge_pages(HugePages::Explicit(size));
            for err in [
                precheck(&spec).unwrap_err(),
                back(&spec, Target::Own).unwrap_err(),
            ] {
                assert!(
                    matches!(
                        &err,
                        Error::HugePageSizeUnavailable { base: 0x4000_0000, size: s, pool }
                            if *s == size && *pool == missing
                    ),
                    "{backing:?}: {err:?}"
                );
                assert!(err.to_string().contains("no 1 GiB huge page pool"), "{err}");
            }
            for fallback in [HugePageFallback::BasePages, HugePageFallback::Transparent] {
                let spec = spec.clone().with_fallback(fallback);
                precheck(&spec).unwrap();
                let (memory, report) = back(&spec, Target::Own).unwrap();
                assert!(report.fell_back, "{report}");
                assert!(
                    matches!(report.huge_pages, HugePages::None | HugePages::Transparent),
                    "{report}"
                );
                assert_eq!(report.page_size, host_page_size(), "{report}");
                assert_eq!(memory.hugetlb(), Some(false));
                assert!(
                    report.warnings[0].contains("no 1 GiB huge page pool"),
                    "{report}"
                );
            }
        }
        // The size the host has a pool of is not refused for want of one.
        let spec = RegionSpec::ram(GuestAddress(0), 2 << 20)
            .with_huge_pages(HugePages::Explicit(HugePageSize::Size2M));
        precheck(&spec).unwrap();
        sys::FAKE_SYSFS_MM.with(|f| *f.borrow_mut() = None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Transparent huge pages asked of a file that is not on hugetlbfs, without a fallback,
    /// are refused by the checks made before any region of a space gets memory.
    #[cfg(unix)]
    #[test]
    #[cfg_attr(miri, ignore = "opens a file")]
    fn precheck_refuses_transparent_huge_pages_of_a_plain_file() {
        let path = std::env::temp_dir().join(format!(
            "memvisor-space-precheck-thp-{}",
            std::process::id()
        ));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let spec = RegionSpec::ram(GuestAddress(0), 2 << 20)
            .with_backing(Backing::File {
                path: path.clone(),
                offset: 0,
            })
            .with_huge_pages(HugePages::Transparent);
        let err = precheck(&spec).unwrap_err();
        let expected = if sys::has(Feature::TransparentHugePages) {
            matches!(err, Error::TransparentHugePagesUnavailable { base: 0, .. })
        } else {
            matches!(err, Error::Unsupported { base: 0, .. })
        };
        assert!(expected, "{err:?}");
        precheck(&spec.with_fallback(HugePageFallback::BasePages)).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn thp_in_effect_follows_the_setting_of_each_backing() {
        let shared = [Backing::Memfd, Backing::AnonymousShared];
        for s in ["always", "within_size", "advise", "force"] {
            for b in &shared {
                assert!(thp_in_effect(b, Some(s)), "{b:?} {s}");
            }
        }
        for s in ["never", "deny"] {
            for b in &shared {
                assert!(!thp_in_effect(b, Some(s)), "{b:?} {s}");
            }
        }
        assert!(thp_in_effect(&Backing::AnonymousPrivate, Some("madvise")));
        assert!(thp_in_effect(&Backing::AnonymousPrivate, Some("always")));
        assert!(!thp_in_effect(&Backing::AnonymousPrivate, Some("never")));
        assert!(!thp_in_effect(&Backing::Memfd, None));
        let file = Backing::File {
            path: "/tmp/x".into(),
            offset: 0,
        };
        assert!(!thp_in_effect(&file, Some("always")));
        assert_eq!(
            thp_setting_path(&Backing::Memfd),
            Some(sys::THP_SHMEM_ENABLED)
        );
        assert_eq!(
            thp_setting_path(&Backing::AnonymousPrivate),
            Some(sys::THP_ENABLED)
        );
    }
}
