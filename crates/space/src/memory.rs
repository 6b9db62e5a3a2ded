//! Host memory for regions: creating it (anonymous, memfd, hugetlbfs, file), binding it to
//! NUMA nodes, huge pages, prefault; the hotplug window's host reservation; and the report of
//! what was done.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fmt, io};

use memvisor_resources::{AddressAllocator, AddressRange};
use memvisor_vmem::{CommitMode, Reservation};
use vm_memory::{FileOffset, GuestAddress, MmapRegion};

use crate::error::{Error, Result};
use crate::region::{
    Backing, HugePageFallback, HugePageSize, HugePages, NumaBinding, RegionSpec, RegionType,
    host_page_size,
};
use crate::sys::{self, Advice, Source};

/// A region's host memory: one mapping of `len` bytes at `ptr`, unmapped (or, in the hotplug
/// window, turned back into reserved address space) when dropped.
pub(crate) struct HostMemory {
    ptr: NonNull<u8>,
    len: usize,
    file: Option<FileOffset>,
    owner: Owner,
}

enum Owner {
    /// A mapping of its own.
    Mapping,
    /// A vm-memory mapping, kept alive by this reference.
    Foreign { _mapping: Arc<MmapRegion> },
    /// A slot of the hotplug window's reservation, at this offset.
    Window(Arc<HotplugWindow>, usize),
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

    /// Adopts a vm-memory mapping, keeping it alive as long as this memory.
    pub(crate) fn adopt(mapping: Arc<MmapRegion>) -> Option<Self> {
        let ptr = NonNull::new(mapping.as_ptr())?;
        Some(Self {
            ptr,
            len: mapping.size(),
            file: mapping.file_offset().cloned(),
            owner: Owner::Foreign { _mapping: mapping },
        })
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
            // SAFETY: the mapping is ours and, as the region is being dropped, unreferenced.
            Owner::Mapping => unsafe { sys::unmap(self.ptr, self.len) },
            Owner::Foreign { .. } => {}
            Owner::Window(window, offset) => window.release(*offset, self.len),
        }
    }
}

/// The host address range of the hotplug window: one `memvisor-vmem` reservation, into which
/// each plugged slot is mapped at `guest address - window start`, so plugged memory is
/// contiguous on the host as it is in the guest.
pub(crate) struct HotplugWindow {
    reservation: Reservation,
    guest_start: u64,
    /// Offsets of slots whose memory is mapped (freed when the slot's last user drops it).
    slots: Mutex<AddressAllocator>,
}

impl fmt::Debug for HotplugWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotplugWindow")
            .field("guest_start", &format_args!("{:#x}", self.guest_start))
            .field("host", &self.reservation.as_ptr())
            .field("len", &self.reservation.len())
            .finish()
    }
}

impl HotplugWindow {
    /// Reserves host address space for a window at `guest_start` of `size` bytes, aligned to
    /// 1 GiB so that any huge page size fits.
    pub(crate) fn new(guest_start: u64, size: u64) -> Result<Self> {
        let len = usize::try_from(size).map_err(|_| Error::Overflow {
            base: guest_start,
            size,
        })?;
        let reservation = Reservation::builder()
            .alignment(1 << 30)
            .mode(CommitMode::Protected)
            .reserve(len)
            .map_err(Error::Reservation)?;
        let space = AddressRange::from_start_and_size(0, size)
            .map_err(|_| Error::ZeroSize { base: guest_start })?;
        Ok(Self {
            reservation,
            guest_start,
            slots: Mutex::new(AddressAllocator::new(space)),
        })
    }

    pub(crate) fn host_range(&self) -> (usize, usize) {
        (self.reservation.as_ptr() as usize, self.reservation.len())
    }

    /// Claims the slot for `base..base + size` (guest addresses).
    fn claim(&self, base: u64, size: u64) -> Result<usize> {
        let offset = base
            .checked_sub(self.guest_start)
            .ok_or(Error::NoHotplugWindow { base })?;
        let range = AddressRange::from_start_and_size(offset, size)
            .map_err(|_| Error::Overflow { base, size })?;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if range.end() > slots.space().end() {
            return Err(Error::NoHotplugWindow { base });
        }
        slots
            .reserve(range)
            .map_err(|_| Error::SlotBusy { base, size })?;
        usize::try_from(offset).map_err(|_| Error::Overflow { base, size })
    }

    fn unclaim(&self, offset: usize, len: usize) {
        let range = AddressRange::from_start_and_size(offset as u64, len as u64);
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

    /// Turns a slot back into reserved address space and frees it.
    fn release(&self, offset: usize, len: usize) {
        // SAFETY: the slot's region is being dropped: no snapshot holds it, so nothing refers to
        // its memory. The range is inside the reservation and page aligned.
        let restored = unsafe { self.reservation.decommit_unchecked(offset, len) };
        debug_assert!(restored.is_ok(), "restoring a hotplug slot failed");
        if restored.is_ok() {
            self.unclaim(offset, len);
        }
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
    /// The page size in use: the explicit huge page size or the base page size.
    pub page_size: u64,
    /// The pages obtained (after any fallback).
    pub huge_pages: HugePages,
    /// Whether explicit huge pages were asked for but could not be had, and the fallback was
    /// taken.
    pub fell_back: bool,
    /// The NUMA binding applied.
    pub numa: Option<NumaBinding>,
    /// Threads that prefaulted the memory (0: not prefaulted).
    pub prefault_threads: usize,
    /// Whether `MADV_DONTFORK` was applied.
    pub dontfork: bool,
    /// Whether the memory lies in the hotplug window's host reservation.
    pub in_hotplug_window: bool,
    /// Time taken.
    pub elapsed: Duration,
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
        write!(f, " in {:.1?}", self.elapsed)
    }
}

/// What building a backed address space did: one [`RegionReport`] per region with memory, and
/// the hotplug window's host reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackingReport {
    /// The regions given memory, by address.
    pub regions: Vec<RegionReport>,
    /// The host address and length of the hotplug window's reservation, if there is one.
    pub hotplug_window: Option<(usize, usize)>,
}

impl BackingReport {
    /// Bytes of host memory mapped.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }
}

impl fmt::Display for BackingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.regions {
            writeln!(f, "{r}")?;
        }
        if let Some((addr, len)) = self.hotplug_window {
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
    let (memory, huge_pages, fell_back) = match map(spec, spec.huge_pages, &target) {
        Ok(memory) => (memory, spec.huge_pages, false),
        Err(MapError::NoHugePages(source)) => {
            let HugePages::Explicit(size) = spec.huge_pages else {
                return Err(os("mmap", spec, source));
            };
            if spec.fallback == HugePageFallback::Transparent && is_anon_or_memfd(&spec.backing) {
                let memory =
                    map(spec, HugePages::Transparent, &target).map_err(|e| e.into_error(spec))?;
                (memory, HugePages::Transparent, true)
            } else {
                return Err(Error::HugePagesUnavailable {
                    base: spec.base,
                    size,
                    needed: spec.size / size.bytes(),
                    free: sys::free_huge_pages(size),
                    source,
                });
            }
        }
        Err(e) => return Err(e.into_error(spec)),
    };
    let ptr = memory.ptr;
    let len = memory.len;
    if huge_pages == HugePages::Transparent {
        // SAFETY: our fresh mapping; advice keeps contents.
        unsafe { sys::advise(ptr, len, Advice::HugePage) }.map_err(|e| os("madvise", spec, e))?;
    }
    if spec.dontfork {
        // SAFETY: as above.
        unsafe { sys::advise(ptr, len, Advice::DontFork) }.map_err(|e| os("madvise", spec, e))?;
    }
    if let Some(numa) = &spec.numa {
        // SAFETY: our fresh mapping, not yet shared with anyone.
        unsafe { sys::mbind(ptr, len, numa.policy(), numa.nodes()) }
            .map_err(|e| os("mbind", spec, e))?;
    }
    if spec.prefault_threads > 0 && spec.protection.readable() {
        prefault(ptr, len, spec, spec.prefault_threads)?;
    }
    let page_size = match huge_pages {
        HugePages::Explicit(size) => size.bytes(),
        _ => host_page_size(),
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
        prefault_threads: if spec.protection.readable() {
            spec.prefault_threads
        } else {
            0
        },
        dontfork: spec.dontfork,
        in_hotplug_window: matches!(target, Target::Window(_)),
        elapsed: started.elapsed(),
    };
    Ok((memory, report))
}

fn is_anon_or_memfd(backing: &Backing) -> bool {
    matches!(
        backing,
        Backing::AnonymousPrivate | Backing::AnonymousShared | Backing::Memfd
    )
}

fn os(op: &'static str, spec: &RegionSpec, source: io::Error) -> Error {
    Error::Os {
        op,
        base: spec.base,
        source,
    }
}

enum MapError {
    NoHugePages(io::Error),
    Other(Error),
}

impl MapError {
    fn into_error(self, spec: &RegionSpec) -> Error {
        match self {
            MapError::NoHugePages(e) => os("mmap", spec, e),
            MapError::Other(e) => e,
        }
    }
}

impl From<Error> for MapError {
    fn from(e: Error) -> Self {
        MapError::Other(e)
    }
}

/// Opens the source and maps it at the target, with `huge` pages.
fn map(spec: &RegionSpec, huge: HugePages, target: &Target<'_>) -> Result<HostMemory, MapError> {
    let explicit = match huge {
        HugePages::Explicit(size) => Some(size),
        _ => None,
    };
    let len = usize::try_from(spec.size).map_err(|_| Error::Overflow {
        base: spec.base,
        size: spec.size,
    })?;
    let file = open_source(spec, explicit)?;
    let (ptr, owner) = match target {
        Target::Own => {
            let align = match huge {
                HugePages::Explicit(size) => size.bytes(),
                HugePages::Transparent => HugePageSize::Size2M.bytes(),
                HugePages::None => host_page_size(),
            };
            let align = usize::try_from(align).unwrap_or(usize::MAX);
            let ptr = sys::reserve(len, align).map_err(|e| os("mmap", spec, e))?;
            (ptr, Owner::Mapping)
        }
        Target::Window(window) => {
            let offset = window.claim(spec.base, spec.size)?;
            (
                window.slot_ptr(offset),
                Owner::Window(Arc::clone(window), offset),
            )
        }
    };
    // From here on, dropping `memory` undoes the reservation or the claim.
    let memory = HostMemory {
        ptr,
        len,
        file,
        owner,
    };
    let source = match (&spec.backing, &memory.file) {
        (Backing::AnonymousShared, _) => Source::SharedAnon,
        (_, Some(file)) => Source::File(file.file(), file.start()),
        _ => Source::PrivateAnon,
    };
    // SAFETY: the range is the reservation or window slot just taken, aligned to the page size
    // in use, and nothing refers to it.
    let mapped = unsafe { sys::map_fixed(ptr, len, spec.protection, source, explicit) };
    if let Err(e) = mapped {
        // Unmaps the reservation, or maps reserved pages back over the window slot.
        drop(memory);
        return Err(
            if explicit.is_some() && e.raw_os_error() == Some(libc::ENOMEM) {
                MapError::NoHugePages(e)
            } else {
                MapError::Other(os("mmap", spec, e))
            },
        );
    }
    Ok(memory)
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

fn open_source(
    spec: &RegionSpec,
    explicit: Option<HugePageSize>,
) -> Result<Option<FileOffset>, MapError> {
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
            FileOffset::new(file, 0)
        }
        Backing::Hugetlbfs(dir) => {
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
                    path: dir.clone(),
                    magic,
                }
                .into());
            }
            if let Some(wanted) = explicit
                && page != wanted.bytes()
            {
                return Err(Error::HugePageSizeMismatch {
                    path: dir.clone(),
                    found: page,
                    wanted,
                }
                .into());
            }
            file.set_len(spec.size)
                .map_err(|e| os("ftruncate", spec, e))?;
            FileOffset::new(file, 0)
        }
        Backing::File { path, offset } => {
            let file = OpenOptions::new()
                .read(true)
                .write(spec.protection.writable())
                .open(path)
                .map_err(|e| file_err(path, e))?;
            let len = file.metadata().map_err(|e| file_err(path, e))?.len();
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
            FileOffset::new(file, *offset)
        }
    };
    Ok(Some(file))
}

/// Minimum bytes per prefault thread: below this, more threads cost more than they save.
const PREFAULT_CHUNK_MIN: usize = 64 << 20;

/// Makes the mapping resident, split into page-aligned parts across up to `threads` threads.
fn prefault(ptr: NonNull<u8>, len: usize, spec: &RegionSpec, threads: usize) -> Result<()> {
    let write = spec.protection.writable();
    let page = usize::try_from(spec.page_size()).unwrap_or(len).max(1);
    let pages = len / page;
    let parts = threads.min(len / PREFAULT_CHUNK_MIN).min(pages).max(1);
    let base = ptr.as_ptr() as usize;
    let per = pages.div_ceil(parts) * page;
    let run = |index: usize| -> io::Result<()> {
        let start = index.saturating_mul(per).min(len);
        let end = start.saturating_add(per).min(len);
        if start == end {
            return Ok(());
        }
        // SAFETY: `base + start..base + end` is inside our fresh mapping (`end <= len`),
        // writable when `write` (the spec's protection says so).
        unsafe { sys::populate(base + start, end - start, write) }
    };
    let result = if parts == 1 {
        run(0)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..parts).map(|i| s.spawn(move || run(i))).collect();
            let mut result = run(0);
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("prefault thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    };
    result.map_err(|e| os("madvise(MADV_POPULATE)", spec, e))
}
