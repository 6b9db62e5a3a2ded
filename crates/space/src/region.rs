//! [`Region`]: one region of the address space, with its host memory if it has any, and its
//! vm-memory [`GuestMemoryRegion`] implementation.

use std::num::NonZeroUsize;
use std::sync::Arc;

use vm_memory::bitmap::{AtomicBitmap, BS, Bitmap};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryError, GuestMemoryRegion, GuestMemoryRegionBytes,
    GuestRegionMmap, GuestUsize, MemoryRegionAddress, VolatileSlice,
};

use crate::error::Result;
use crate::memory::{self, HostMemory, Target};
use crate::spec::{HugePages, NumaBinding, Protection, RegionSpec, RegionType};
use crate::{Error, RegionReport};

/// A validated region of the guest physical address space: its [`RegionSpec`] and, when it
/// was backed, its host memory (unmapped when the last [`Snapshot`](crate::Snapshot) holding
/// the region is dropped).
///
/// Through vm-memory's [`GuestMemoryRegion`] and `Bytes<MemoryRegionAddress>` a backed,
/// read-write region is read and written with volatile accesses. An unbacked region answers
/// [`GuestMemoryError::HostAddressNotAvailable`] for slices, host addresses and accesses, and
/// so does a region whose host mapping is not read-write: vm-memory's slices allow writes,
/// callers of `get_host_address` may write through the address, and a write to a read-only
/// mapping would kill the process. ([`host_ptr`](Self::host_ptr) still gives its address;
/// [`Snapshot::bytes`](crate::Snapshot::bytes) reads such a region.)
///
/// ```
/// use memvisor_space::{Region, RegionSpec};
/// use memvisor_space::vm_memory::{Bytes, GuestAddress, GuestMemoryRegion, MemoryRegionAddress};
///
/// # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
/// let (region, report) = Region::back(RegionSpec::ram(GuestAddress(0x10_0000), 1 << 20))?;
/// assert_eq!(report.map(|r| r.size), Some(1 << 20));
/// region.write_obj(0xdead_beef_u32, MemoryRegionAddress(0x40)).unwrap();
/// assert_eq!(region.read_obj::<u32>(MemoryRegionAddress(0x40)).unwrap(), 0xdead_beef);
/// assert_eq!(region.start_addr(), GuestAddress(0x10_0000));
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Debug)]
pub struct Region {
    spec: RegionSpec,
    memory: Option<HostMemory>,
    /// Pages written, when the spec asks for dirty tracking (backed regions only).
    dirty: Option<AtomicBitmap>,
}

impl Region {
    /// A region without host memory, for planning and bookkeeping (and for device and
    /// reserved ranges, which never have any).
    ///
    /// # Errors
    /// As [`RegionSpec::validate`].
    pub fn plan(spec: RegionSpec) -> Result<Self> {
        spec.validate()?;
        Ok(Self {
            spec,
            memory: None,
            dirty: None,
        })
    }

    /// A region with host memory made as the spec says (a mapping of its own; hot-pluggable
    /// regions get theirs in the hotplug window through
    /// [`AddressSpace::plug`](crate::AddressSpace::plug) instead). A spec with
    /// [`Backing::None`](crate::Backing::None) gives an unbacked region and no report.
    ///
    /// # Errors
    /// As [`RegionSpec::validate`]; [`Error::Unsupported`] for a feature this host does not
    /// have (see the crate's "Platforms"); [`Error::NumaNodeMissing`], [`Error::NotHugetlbfs`],
    /// [`Error::HugePageSizeMismatch`], [`Error::HugePagesUnavailable`] (also for a backing
    /// file on hugetlbfs whose pages the pool cannot reserve),
    /// [`Error::HugePageSizeUnavailable`] (explicit huge pages of a size the host has no pool
    /// of, with the [`Fail`](crate::HugePageFallback::Fail) fallback), [`Error::Misaligned`] (base,
    /// size or offset of a backing file on hugetlbfs off its huge page size),
    /// [`Error::TransparentHugePagesUnavailable`] (transparent huge pages asked for with the
    /// [`Fail`](crate::HugePageFallback::Fail) fallback where the host gives none to this kind of
    /// memory), [`Error::File`] (a backing file that cannot be opened, is not a regular file —
    /// a FIFO is refused at once, never waited on — or is too small), [`Error::Os`] from
    /// making the memory, and [`Error::Allocator`] if the heap refuses the dirty bitmap of a
    /// region that tracks writes (asked for before any memory is made). Nothing is left mapped
    /// after an error.
    ///
    /// # Aborts
    /// vm-memory allocates the dirty bitmap infallibly, so its block is asked of the heap first
    /// and given back just before vm-memory asks for it: a heap that grants that first request
    /// and refuses vm-memory's right after (another thread having taken the block between)
    /// runs the global allocator's failure handler, an abort by default. See the crate's
    /// `DESIGN.md`, "Dirty tracking".
    ///
    /// Memory that is not prefaulted costs nothing until touched, however large the region:
    /// the host mapping's per-page records take one byte per 32,768 host pages for each of
    /// about a dozen records (backing a 1 TiB memfd region adds well under 1 MiB of resident
    /// memory and takes about a millisecond; 8 TiB, under 1 MiB and 10 ms). Dirty tracking,
    /// when asked for, adds vm-memory's bitmap of one bit per host page, allocated up front
    /// (and written whole: 32 MiB for 1 TiB of 4 KiB pages).
    pub fn back(spec: RegionSpec) -> Result<(Self, Option<RegionReport>)> {
        Self::back_in(spec, Target::Own)
    }

    /// After `cause` kept this region out of the address space, nothing else holding it:
    /// gives its memory back at once and returns the error to report, `cause` or
    /// [`Error::SlotNotRestored`] for a hotplug slot that cannot be turned back into reserved
    /// space (see `HostMemory::give_back`).
    pub(crate) fn give_back(mut self, cause: Error) -> Error {
        match self.memory.take() {
            Some(memory) => memory.give_back(&self.spec, cause),
            None => cause,
        }
    }

    pub(crate) fn back_in(
        spec: RegionSpec,
        target: Target<'_>,
    ) -> Result<(Self, Option<RegionReport>)> {
        spec.validate()?;
        if !spec.backing.has_memory() {
            return Ok((
                Self {
                    spec,
                    memory: None,
                    dirty: None,
                },
                None,
            ));
        }
        spec.check_host_pages()?;
        // The bitmap first: a heap that refuses it then leaves nothing made (no mapping, no
        // hotplug slot claimed, no page of a file written by a prefault). The memory is
        // `spec.size` bytes; a size past `usize` is `memory::back`'s `Error::Overflow`.
        let dirty = match usize::try_from(spec.size) {
            Ok(len) if spec.dirty_tracking => Some(new_dirty_bitmap(len, spec.base)?),
            _ => None,
        };
        let (memory, report) = memory::back(&spec, target)?;
        debug_assert!(dirty.as_ref().is_none_or(|d| d.byte_size() == memory.len()));
        Ok((
            Self {
                spec,
                memory: Some(memory),
                dirty,
            },
            Some(report),
        ))
    }

    /// A region of type `ty` over an existing vm-memory region's mapping, which it keeps alive.
    /// The mapping's protection is recorded as the region's, so a read-only mapping stays
    /// read-only through this crate too (no slice that would allow a write is handed out).
    /// The region is vm-memory's without a dirty bitmap, `GuestRegionMmap<()>`, as
    /// [`SpaceBuilder::adopt`](crate::SpaceBuilder::adopt) says.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a mapping with write or execute rights but not read (no
    /// [`Protection`] says so); as [`RegionSpec::validate`] for the region's range (for example
    /// a mapping that is not page aligned in size).
    pub fn from_guest_region_mmap(ty: RegionType, region: &GuestRegionMmap) -> Result<Self> {
        let mapping = region.get_mmap();
        let base = region.start_addr();
        let protection = crate::sys::mapping_protection(&mapping).ok_or(Error::InvalidSpec {
            ty,
            base: base.0,
            reason: "write or execute rights without read cannot be mapped",
        })?;
        let spec = RegionSpec::new(ty, base, region.len())
            .with_backing(crate::Backing::AnonymousShared)
            .with_protection(protection);
        spec.validate()?;
        let memory = HostMemory::adopt(mapping).ok_or(Error::ZeroSize { base: spec.base })?;
        Ok(Self {
            spec,
            memory: Some(memory),
            dirty: None,
        })
    }

    /// The spec it was made from.
    #[must_use]
    pub fn spec(&self) -> &RegionSpec {
        &self.spec
    }

    /// The type.
    #[must_use]
    pub fn ty(&self) -> RegionType {
        self.spec.ty
    }

    /// The first guest address.
    #[must_use]
    pub fn base(&self) -> GuestAddress {
        GuestAddress(self.spec.base)
    }

    /// The size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.spec.size
    }

    /// The last guest address (inclusive).
    #[must_use]
    pub fn last(&self) -> GuestAddress {
        // Validated: no overflow, size > 0.
        GuestAddress(self.spec.base + (self.spec.size - 1))
    }

    /// Whether `addr` is inside the region.
    #[must_use]
    pub fn contains(&self, addr: GuestAddress) -> bool {
        addr.0 >= self.spec.base && addr.0 - self.spec.base < self.spec.size
    }

    /// The access rights.
    #[must_use]
    pub fn protection(&self) -> Protection {
        self.spec.protection
    }

    /// The NUMA binding.
    #[must_use]
    pub fn numa(&self) -> Option<&NumaBinding> {
        self.spec.numa.as_ref()
    }

    /// The page kind asked for.
    #[must_use]
    pub fn huge_pages(&self) -> HugePages {
        self.spec.huge_pages
    }

    /// Whether the region is hot-pluggable.
    #[must_use]
    pub fn hotplug(&self) -> bool {
        self.spec.hotplug
    }

    /// Whether it is a DAX region.
    #[must_use]
    pub fn is_dax(&self) -> bool {
        self.spec.ty == RegionType::Dax
    }

    /// Whether it has host memory.
    #[must_use]
    #[inline]
    pub fn is_backed(&self) -> bool {
        self.memory.is_some()
    }

    /// The host address of its first byte, if it has host memory, whatever its protection
    /// (vm-memory's `get_host_address` gives addresses in read-write memory only).
    #[must_use]
    pub fn host_ptr(&self) -> Option<*mut u8> {
        self.memory.as_ref().map(HostMemory::as_ptr)
    }

    /// The host addresses `start..end` of an adopted vm-memory mapping
    /// ([`from_guest_region_mmap`](Self::from_guest_region_mmap)); `None` for memory this crate
    /// mapped, whose host ranges never overlap another region's.
    pub(crate) fn adopted_host_range(&self) -> Option<(u64, u64)> {
        let memory = self.memory.as_ref().filter(|m| m.is_adopted())?;
        let start = memory.as_ptr().addr() as u64;
        Some((start, start.saturating_add(memory.len() as u64)))
    }

    /// The dirty-page bitmap, if the region tracks writes
    /// ([`RegionSpec::with_dirty_tracking`]): one bit per host base page, set by every write
    /// through the region's or a snapshot's vm-memory `Bytes` and slices (and by
    /// [`merge_dirty_log`](Self::merge_dirty_log) and [`discard`](Self::discard)); not by
    /// writes through a host address or a
    /// [`Snapshot::to_guest_memory_mmap`](crate::Snapshot::to_guest_memory_mmap) copy.
    #[must_use]
    pub fn dirty_bitmap(&self) -> Option<&AtomicBitmap> {
        self.dirty.as_ref()
    }

    /// Whether the page holding `offset` (from the region's start) was written since the log
    /// was last taken; `false` when the region does not track writes.
    #[must_use]
    pub fn is_dirty(&self, offset: u64) -> bool {
        match (&self.dirty, usize::try_from(offset)) {
            (Some(bitmap), Ok(offset)) => bitmap.is_addr_set(offset),
            _ => false,
        }
    }

    /// Takes the dirty log and clears it, atomically word by word: bit `i % 64` of word
    /// `i / 64` is page `i` of the region (KVM's `KVM_GET_DIRTY_LOG` layout). `None` when the
    /// region does not track writes.
    ///
    /// The log is a new vector of one word per 64 host pages (32 MiB for 1 TiB of 4 KiB
    /// pages), allocated infallibly: if the heap refuses it, the process aborts, as for any
    /// vector. [`try_take_dirty_log`](Self::try_take_dirty_log) returns [`Error::Allocator`]
    /// instead.
    ///
    /// ```
    /// use memvisor_space::{Region, RegionSpec};
    /// use memvisor_space::vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};
    ///
    /// # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
    /// let spec = RegionSpec::ram(GuestAddress(0), 1 << 20).with_dirty_tracking(true);
    /// let (region, _) = Region::back(spec)?;
    /// region.write_obj(7u8, MemoryRegionAddress(0)).unwrap();
    /// let log = region.take_dirty_log().unwrap();
    /// assert_eq!(log[0] & 1, 1);
    /// assert!(!region.is_dirty(0));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    #[must_use]
    pub fn take_dirty_log(&self) -> Option<Vec<u64>> {
        self.dirty.as_ref().map(AtomicBitmap::get_and_reset)
    }

    /// [`take_dirty_log`](Self::take_dirty_log), with the heap asked for the log's words
    /// first: `Ok(None)` when the region does not track writes.
    ///
    /// vm-memory copies the bitmap into a vector it allocates infallibly, so the heap is asked
    /// for a block of that size and layout first, and given it back right before vm-memory asks
    /// for it again: a heap that grants the first request but refuses the second (another
    /// thread took the memory meanwhile) still aborts the process.
    ///
    /// # Errors
    /// [`Error::Allocator`] with [`memvisor_resources::Error::HeapRefused`] (`"the dirty log"`)
    /// if the heap refuses the log's words (one per 64 host pages); the log is left as it was,
    /// nothing taken or cleared.
    ///
    /// ```
    /// use memvisor_space::{Region, RegionSpec};
    /// use memvisor_space::vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};
    ///
    /// # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
    /// let spec = RegionSpec::ram(GuestAddress(0), 1 << 20).with_dirty_tracking(true);
    /// let (region, _) = Region::back(spec)?;
    /// region.write_obj(7u8, MemoryRegionAddress(0)).unwrap();
    /// let log = region.try_take_dirty_log()?.expect("the region tracks writes");
    /// assert_eq!(log[0] & 1, 1);
    /// assert!(!region.is_dirty(0));
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn try_take_dirty_log(&self) -> Result<Option<Vec<u64>>> {
        let Some(bitmap) = &self.dirty else {
            return Ok(None);
        };
        // The words `AtomicBitmap::get_and_reset` collects: one per 64 pages.
        probe_words(bitmap.len().div_ceil(64), "the dirty log", self.spec.base)?;
        Ok(Some(bitmap.get_and_reset()))
    }

    /// Clears the dirty log (no-op when the region does not track writes).
    pub fn clear_dirty_log(&self) {
        if let Some(bitmap) = &self.dirty {
            bitmap.reset();
        }
    }

    /// Merges a dirty log fetched from elsewhere (KVM's `KVM_GET_DIRTY_LOG` for this region's
    /// memory slot: bit `i % 64` of word `i / 64` is page `i`, in host base pages) into the
    /// region's own, so that one log covers writes by the guest and by the VMM.
    ///
    /// # Errors
    /// [`Error::DirtyLogUnavailable`] when the region does not track writes;
    /// [`Error::DirtyLogSize`] when `log` does not have exactly one bit per page of the region
    /// (rounded up to whole words), or has bits set past its last page. Nothing is merged
    /// after an error.
    pub fn merge_dirty_log(&self, log: &[u64]) -> Result<()> {
        let bitmap = self.dirty.as_ref().ok_or(Error::DirtyLogUnavailable {
            base: self.spec.base,
        })?;
        let pages = bitmap.len();
        let words = pages.div_ceil(64);
        let tail_ok = match (pages % 64, log.last()) {
            (0, _) | (_, None) => true,
            (used, Some(&last)) => last >> used == 0,
        };
        if log.len() != words || !tail_ok {
            return Err(Error::DirtyLogSize {
                base: self.spec.base,
                pages: pages as u64,
                words: log.len() as u64,
            });
        }
        for (w, &word) in log.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bitmap.set_bit(w * 64 + bit);
                bits &= bits - 1;
            }
        }
        Ok(())
    }
}

impl Region {
    /// Whether the memory is explicit huge pages as obtained (after any fallback); for an
    /// adopted vm-memory mapping that does not say, whether the spec asks for them. `None`
    /// without memory. (vm-memory's `GuestMemoryRegion::is_hugetlbfs` on Linux.)
    pub(crate) fn hugetlb_pages(&self) -> Option<bool> {
        self.memory.as_ref().map(|m| {
            m.hugetlb()
                .unwrap_or(matches!(self.spec.huge_pages, HugePages::Explicit(_)))
        })
    }

    /// Gives the guest pages of `offset..offset + len` (from the region's start) back to the
    /// host, as a balloon or virtio-mem device does when the guest gives them up: private
    /// anonymous memory with `MADV_DONTNEED`, shared anonymous memory, memfds and hugetlbfs
    /// files with `MADV_REMOVE`, which punches a hole in the file (for huge pages, whole huge
    /// pages).
    /// The memory stays mapped and reads zeros until written again. In a region that tracks
    /// writes, the discarded pages are marked dirty (their contents changed).
    ///
    /// This is safe: guest memory is only ever read and written through volatile accesses
    /// (the guest may change it at any time), so no reference relies on its contents.
    ///
    /// # Errors
    /// [`Error::DiscardRefused`] for a region that is not RAM, has no host memory (or only an
    /// adopted vm-memory mapping), is not writable, or is backed by an existing file (whose
    /// contents discarding would erase);
    /// [`Error::DiscardOutOfRange`] for a range of length zero or past the region's end;
    /// [`Error::Misaligned`] (with the range's guest address) if `offset` or `len` is not a
    /// multiple of the region's page size (the huge page size for explicit huge pages);
    /// [`Error::Unsupported`] off Linux (after those checks); [`Error::Os`] if the kernel
    /// refuses.
    ///
    /// ```
    /// use memvisor_space::{Region, RegionSpec};
    /// use memvisor_space::vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};
    ///
    /// # if cfg!(miri) { return Ok(()); } // Miri cannot map memory.
    /// # if !cfg!(target_os = "linux") { return Ok(()); } // Discarding is Linux's.
    /// let (region, _) = Region::back(RegionSpec::ram(GuestAddress(0), 1 << 20))?;
    /// region.write_obj(7u8, MemoryRegionAddress(0)).unwrap();
    /// region.discard(0, 1 << 20)?;
    /// assert_eq!(region.read_obj::<u8>(MemoryRegionAddress(0)).unwrap(), 0);
    /// # Ok::<(), memvisor_space::Error>(())
    /// ```
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let base = self.spec.base;
        let refused = |reason| Error::DiscardRefused { base, reason };
        if self.spec.ty != RegionType::Ram {
            return Err(refused("only RAM regions give pages back"));
        }
        let memory = self
            .memory
            .as_ref()
            .ok_or_else(|| refused("the region has no host memory"))?;
        if !self.spec.protection.writable() {
            return Err(refused("the region is not writable"));
        }
        if matches!(self.spec.backing, crate::Backing::File { .. }) {
            return Err(refused(
                "discarding would erase the backing file's contents",
            ));
        }
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > self.spec.size)
        {
            return Err(Error::DiscardOutOfRange {
                base,
                offset,
                len,
                size: self.spec.size,
            });
        }
        let page_size = self.spec.page_size();
        if !offset.is_multiple_of(page_size) || !len.is_multiple_of(page_size) {
            return Err(Error::Misaligned {
                // Inside the region (checked above), so this does not wrap.
                base: base + offset,
                size: len,
                page_size,
            });
        }
        // Inside the region, whose size fits a `usize` (validated).
        let (offset, len) = (
            usize::try_from(offset).map_err(|_| Error::Overflow { base, size: len })?,
            usize::try_from(len).map_err(|_| Error::Overflow { base, size: len })?,
        );
        crate::sys::Feature::Discard.require(base)?;
        let done = memory
            .discard(offset, len)
            .ok_or_else(|| refused("the memory is a vm-memory mapping this crate did not make"))?;
        // The guest now reads zeros there: a migration must send those pages again. Marked
        // also when the kernel refused part way, since some pages may be gone.
        if let Some(dirty) = &self.dirty {
            dirty.set_addr_range(offset, len);
        }
        done.map_err(|e| Error::Os {
            op: "discard",
            base,
            source: crate::memory::vmem_io(&e),
        })
    }
}

/// A dirty bitmap over `len` bytes, one bit per host base page, for the region at `base`.
///
/// # Errors
/// As [`probe_words`], for `"the dirty bitmap"`.
fn new_dirty_bitmap(len: usize, base: u64) -> Result<AtomicBitmap> {
    let page = NonZeroUsize::new(memvisor_vmem::page_size()).unwrap_or(NonZeroUsize::MIN);
    // The words `AtomicBitmap::new` allocates: one bit per page, in whole 64-bit words.
    probe_words(
        len.div_ceil(page.get()).div_ceil(64),
        "the dirty bitmap",
        base,
    )?;
    Ok(AtomicBitmap::new(len, page))
}

/// Asks the heap for `words` 64-bit words (the size and alignment of the vector vm-memory
/// allocates next, infallibly, for `what` of the region at `base`) and gives them back, so that
/// a heap that refuses them makes an error rather than an abort. The block is given back before
/// vm-memory asks for it, so the two never both need to fit; a heap that grants this request
/// but refuses vm-memory's right after still aborts.
///
/// # Errors
/// [`Error::Allocator`] with [`memvisor_resources::Error::HeapRefused`] if the heap refuses the
/// words.
fn probe_words(words: usize, what: &'static str, base: u64) -> Result<()> {
    let mut probe = Vec::<std::sync::atomic::AtomicU64>::new();
    probe
        .try_reserve_exact(words)
        .map_err(|_| Error::Allocator {
            what,
            owner: format!("the region at {base:#x}"),
            source: memvisor_resources::Error::HeapRefused {
                bytes: (words as u64).saturating_mul(8),
            },
        })
}

impl GuestMemoryRegion for Region {
    type B = Option<AtomicBitmap>;

    #[inline]
    fn len(&self) -> GuestUsize {
        self.spec.size
    }

    #[inline]
    fn start_addr(&self) -> GuestAddress {
        GuestAddress(self.spec.base)
    }

    #[inline]
    fn bitmap(&self) -> BS<'_, Self::B> {
        self.dirty.slice_at(0)
    }

    /// The host address of `addr`, for read-write memory only: callers of vm-memory's
    /// `get_host_address` may write through it, and a write to a read-only mapping would kill
    /// the process ([`host_ptr`](Region::host_ptr) gives the address whatever the protection).
    #[inline]
    fn get_host_address(&self, addr: MemoryRegionAddress) -> vm_memory::GuestMemoryResult<*mut u8> {
        let memory = self
            .memory
            .as_ref()
            .filter(|_| self.spec.protection.writable())
            .ok_or(GuestMemoryError::HostAddressNotAvailable)?;
        let offset = usize::try_from(addr.0)
            .ok()
            .filter(|&o| o < memory.len())
            .ok_or(GuestMemoryError::InvalidBackendAddress)?;
        Ok(memory.as_ptr().wrapping_add(offset))
    }

    fn file_offset(&self) -> Option<&FileOffset> {
        self.memory.as_ref().and_then(HostMemory::file_offset)
    }

    #[inline]
    fn get_slice(
        &self,
        offset: MemoryRegionAddress,
        count: usize,
    ) -> vm_memory::GuestMemoryResult<VolatileSlice<'_, BS<'_, Self::B>>> {
        if !self.spec.protection.writable() {
            return Err(GuestMemoryError::HostAddressNotAvailable);
        }
        let offset =
            usize::try_from(offset.0).map_err(|_| GuestMemoryError::InvalidBackendAddress)?;
        self.volatile_slice(offset, count)
    }

    /// Whether the memory is explicit huge pages (see `hugetlb_pages`). vm-memory has this
    /// method on Linux only.
    #[cfg(target_os = "linux")]
    fn is_hugetlbfs(&self) -> Option<bool> {
        self.hugetlb_pages()
    }
}

impl Region {
    /// A volatile slice of `offset..offset + count` of the mapping, whatever its protection:
    /// callers only use it as the protection allows (the slice itself would allow writes).
    #[inline]
    pub(crate) fn volatile_slice(
        &self,
        offset: usize,
        count: usize,
    ) -> vm_memory::GuestMemoryResult<VolatileSlice<'_, BS<'_, Option<AtomicBitmap>>>> {
        let memory = self
            .memory
            .as_ref()
            .ok_or(GuestMemoryError::HostAddressNotAvailable)?;
        offset
            .checked_add(count)
            .filter(|&end| end <= memory.len())
            .ok_or(GuestMemoryError::InvalidBackendAddress)?;
        // SAFETY: `offset..offset + count` is inside the region's mapping (checked above), which
        // lives as long as `self`, the slice's lifetime; volatile access is how guest memory,
        // which the guest may change at any time, is read and written.
        Ok(unsafe {
            VolatileSlice::with_bitmap(
                memory.as_ptr().add(offset),
                count,
                self.dirty.slice_at(offset),
                None,
            )
        })
    }
}

impl GuestMemoryRegionBytes for Region {}

/// A shared region, as snapshots hold them.
pub type RegionRef = Arc<Region>;

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;
    use crate::spec::host_page_size;

    #[test]
    fn plan_unbacked_slice_errors() {
        let r = Region::plan(RegionSpec::ram(GuestAddress(0), host_page_size())).unwrap();
        assert!(!r.is_backed());
        assert!(matches!(
            r.get_slice(MemoryRegionAddress(0), 1),
            Err(GuestMemoryError::HostAddressNotAvailable)
        ));
        assert!(r.write_obj(1u8, MemoryRegionAddress(0)).is_err());
    }

    #[test]
    fn contains_bounds_are_inclusive() {
        let p = host_page_size();
        let r = Region::plan(RegionSpec::ram(GuestAddress(p), p)).unwrap();
        assert!(!r.contains(GuestAddress(p - 1)));
        assert!(r.contains(GuestAddress(p)));
        assert!(r.contains(GuestAddress(2 * p - 1)));
        assert!(!r.contains(GuestAddress(2 * p)));
        assert_eq!(r.last(), GuestAddress(2 * p - 1));
    }

    #[test]
    fn back_slice_past_end_errors() {
        let p = host_page_size();
        let (r, _) = Region::back(RegionSpec::ram(GuestAddress(0), p)).unwrap();
        let len = usize::try_from(p).unwrap();
        assert!(r.get_slice(MemoryRegionAddress(0), len).is_ok());
        assert!(r.get_slice(MemoryRegionAddress(1), len).is_err());
        assert!(r.get_host_address(MemoryRegionAddress(p)).is_err());
        assert!(r.write_slice(&[1, 2], MemoryRegionAddress(p - 1)).is_err());
    }
}
