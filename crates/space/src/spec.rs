//! Region descriptions: [`RegionSpec`] and the attribute types it is made of.

use std::fmt;
use std::path::PathBuf;

pub use memvisor_vmem::Protection;
use vm_memory::GuestAddress;

use crate::error::{Error, Result};

/// What a guest physical region is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionType {
    /// Guest RAM.
    Ram,
    /// A device's MMIO window (no host memory, or memory a device shares with the guest).
    Device,
    /// Memory a device exposes for direct access (DAX), such as a virtio-fs or virtio-pmem
    /// window, backed by a file or shared memory.
    Dax,
    /// Firmware (a flash or ROM image).
    Firmware,
    /// Addresses that nothing may use (for example interrupt controllers' ranges).
    Reserved,
}

impl fmt::Display for RegionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionType::Ram => "RAM",
            RegionType::Device => "device",
            RegionType::Dax => "DAX",
            RegionType::Firmware => "firmware",
            RegionType::Reserved => "reserved",
        })
    }
}

/// An explicit huge page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HugePageSize {
    /// 2 MiB pages.
    Size2M,
    /// 1 GiB pages.
    Size1G,
}

impl HugePageSize {
    /// The page size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            HugePageSize::Size2M => 2 << 20,
            HugePageSize::Size1G => 1 << 30,
        }
    }

    /// log2 of the page size (the value encoded in `MAP_HUGE_*` / `MFD_HUGE_*` flags).
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            HugePageSize::Size2M => 21,
            HugePageSize::Size1G => 30,
        }
    }

    /// The size whose byte count is `bytes`, if it is one of these.
    #[must_use]
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            0x20_0000 => Some(HugePageSize::Size2M),
            0x4000_0000 => Some(HugePageSize::Size1G),
            _ => None,
        }
    }
}

impl fmt::Display for HugePageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HugePageSize::Size2M => "2 MiB",
            HugePageSize::Size1G => "1 GiB",
        })
    }
}

/// Which pages back a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// Base pages only (transparent huge pages are explicitly refused with
    /// `MADV_NOHUGEPAGE` only if the system default would give them; this crate leaves the
    /// default alone).
    #[default]
    None,
    /// Transparent huge pages: the mapping is advised `MADV_HUGEPAGE`. KVM maps guest memory
    /// with huge pages only where guest and host addresses agree modulo the huge page (a
    /// memory slot where they do not gets none), so private anonymous memory of its own is
    /// placed at a host address congruent to the region's guest base modulo 2 MiB (2 MiB
    /// aligned for a 2 MiB-aligned base; for another base the region reserves, never commits,
    /// less than 2 MiB of inaccessible address space before its memory); shared memory (memfd,
    /// shared anonymous), whose huge pages the kernel lays out by file offset from the
    /// mapping's start, is mapped 2 MiB aligned, so only a 2 MiB-aligned guest base gets them
    /// in the guest. In a hotplug window a slot's host address is congruent to its guest
    /// address modulo 1 GiB, so a slot whose guest base is 2 MiB aligned is 2 MiB aligned on
    /// the host.
    Transparent,
    /// Explicit huge pages of this size (`MAP_HUGETLB` / `MFD_HUGETLB` with the size flag, or
    /// a hugetlbfs mount of that page size). Base and size must be multiples of it.
    Explicit(HugePageSize),
}

/// What to do when the huge pages asked for cannot be had: explicit huge pages the kernel has
/// no free pages for, or of a size the host has no pool of (no
/// `/sys/kernel/mm/hugepages/hugepages-<N>kB` where sysfs lists the pools), or transparent huge
/// pages the host's setting does not give to this
/// backing (`/sys/kernel/mm/transparent_hugepage/enabled` for private anonymous memory,
/// `shmem_enabled` for memfds and shared anonymous memory).
///
/// Only anonymous and memfd memory falls back: a [`Backing::Hugetlbfs`] file has no base pages,
/// so without free huge pages it fails with [`Error::HugePagesUnavailable`] whatever the
/// fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePageFallback {
    /// Fail with [`Error::HugePagesUnavailable`], [`Error::HugePageSizeUnavailable`] or
    /// [`Error::TransparentHugePagesUnavailable`] (the default: no silent downgrade).
    #[default]
    Fail,
    /// Explicit huge pages fall back to base pages with transparent-huge-page advice, when the
    /// host gives this backing transparent huge pages, else to base pages; transparent huge
    /// pages fall back to base pages. The [`RegionReport`](crate::RegionReport) says what was
    /// obtained, sets `fell_back` and carries a warning.
    Transparent,
    /// Fall back to base pages (no huge page advice); the report says so, as above.
    BasePages,
}

/// How a NUMA binding treats the listed nodes (Linux `mbind` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumaPolicy {
    /// Allocate on the lowest listed node when it has memory, elsewhere otherwise
    /// (`MPOL_PREFERRED`, which prefers the lowest node of its mask whatever the order the
    /// nodes were given in).
    Preferred,
    /// Allocate only on the listed nodes; pages already elsewhere are moved
    /// (`MPOL_BIND` with `MPOL_MF_STRICT | MPOL_MF_MOVE`).
    Bind,
    /// Spread pages round-robin over the listed nodes (`MPOL_INTERLEAVE`).
    Interleave,
}

impl fmt::Display for NumaPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumaPolicy::Preferred => "preferred",
            NumaPolicy::Bind => "bind",
            NumaPolicy::Interleave => "interleave",
        })
    }
}

/// Host NUMA placement of a region: a policy and the nodes it names (sorted, no repeats).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NumaBinding {
    policy: NumaPolicy,
    nodes: Vec<u32>,
}

impl NumaBinding {
    /// A binding of `policy` over `nodes` (sorted and deduplicated here). An empty node list,
    /// and a node at or past [`LINUX_MOST_NUMNODES`](crate::LINUX_MOST_NUMNODES) (1,024, more
    /// than any Linux host has), are refused when the region is validated
    /// ([`Error::InvalidSpec`]).
    ///
    /// ```
    /// use memvisor_space::{NumaBinding, NumaPolicy};
    /// let b = NumaBinding::new(NumaPolicy::Interleave, [1, 0, 1]);
    /// assert_eq!(b.nodes(), &[0, 1]);
    /// assert_eq!(b.first_node(), Some(0));
    /// ```
    #[must_use]
    pub fn new(policy: NumaPolicy, nodes: impl IntoIterator<Item = u32>) -> Self {
        let mut nodes: Vec<u32> = nodes.into_iter().collect();
        nodes.sort_unstable();
        nodes.dedup();
        Self { policy, nodes }
    }

    /// Binds strictly to one node ([`NumaPolicy::Bind`]).
    #[must_use]
    pub fn bind(node: u32) -> Self {
        Self::new(NumaPolicy::Bind, [node])
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> NumaPolicy {
        self.policy
    }

    /// The nodes, sorted.
    #[must_use]
    pub fn nodes(&self) -> &[u32] {
        &self.nodes
    }

    /// The lowest node, the region's "host NUMA node" in single-node terms.
    #[must_use]
    pub fn first_node(&self) -> Option<u32> {
        self.nodes.first().copied()
    }
}

/// Where a region's host memory comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backing {
    /// No host memory: the range is only an address (device MMIO, reserved ranges).
    #[default]
    None,
    /// Private anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS`).
    AnonymousPrivate,
    /// Shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`), shared with children.
    AnonymousShared,
    /// A memfd (`memfd_create`, with `MFD_HUGETLB` and the size flag for explicit huge
    /// pages), mapped shared, so that another process (a vhost-user back end) can map it. It is
    /// sealed against resizing and further seals (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`),
    /// so no process it is handed to can truncate it under the guest (on kernels before 4.16,
    /// which cannot seal memfds of huge pages, those stay unsealed).
    Memfd,
    /// A file created (and unlinked at once) in this directory, which must be on a hugetlbfs
    /// mount whose page size is the region's explicit huge page size. Unlike a memfd, a file on
    /// hugetlbfs cannot be sealed: if anything truncates it (through the region's
    /// `file_offset`, or a process it is handed to), the kernel raises `SIGBUS` in every
    /// process that maps it on the next access to a page past the new end, which no check here
    /// can turn into an error. For memory shared with processes that are not trusted with it,
    /// use [`Backing::Memfd`] with explicit huge pages, which is sealed (from Linux 4.16: an
    /// older kernel cannot seal a memfd of huge pages either).
    Hugetlbfs(PathBuf),
    /// An existing file, mapped shared from this byte offset (a multiple of the page size);
    /// the file must be at least `offset + size` long. No two regions of an address space may
    /// map the same bytes of one file unless both are read-only
    /// ([`Error::FileAliased`](crate::Error::FileAliased)). A file on a hugetlbfs mount is mapped
    /// in the mount's huge pages whatever the spec's [`HugePages`] say: the region's base and
    /// size and the offset must then be multiples of that huge page size
    /// ([`Error::Misaligned`](crate::Error::Misaligned) naming it, checked with the file
    /// before anything is mapped), the kernel reserves the pages when the file is mapped
    /// ([`Error::HugePagesUnavailable`](crate::Error::HugePagesUnavailable) if the pool has too
    /// few; there is no fallback), and the [`RegionReport`](crate::RegionReport) and vm-memory's
    /// `is_hugetlbfs` say huge pages (also when the spec asked for
    /// [`HugePages::Transparent`], whatever its fallback: neither a fallback nor a warning).
    /// A file elsewhere gets no transparent huge pages: asked for, they are
    /// [`Error::TransparentHugePagesUnavailable`](crate::Error::TransparentHugePagesUnavailable)
    /// without a fallback, base pages and a warning with one. It must be a regular file: a FIFO, a
    /// socket, a block or character device or a directory is refused with
    /// [`Error::File`](crate::Error::File) ("not a regular file (a FIFO)"), checked on the
    /// opened file before anything is mapped. The open never waits (`O_NONBLOCK`), so a FIFO
    /// without a writer is refused at once rather than waited on.
    ///
    /// The file must keep its length while the region's memory is mapped. Its length is
    /// checked when the region is backed, but a regular file cannot be sealed: if anything
    /// truncates it below `offset + size` later, the kernel raises `SIGBUS` in the process on
    /// the next access to a page past the new end (through `Bytes`, a slice or the guest), which
    /// no check here can turn into an error. Share memory with other processes through
    /// [`Backing::Memfd`], which is sealed against that.
    File {
        /// The file.
        path: PathBuf,
        /// Where the region starts in it.
        offset: u64,
    },
}

impl Backing {
    /// Whether this backing has host memory.
    #[must_use]
    pub fn has_memory(&self) -> bool {
        !matches!(self, Backing::None)
    }

    /// A short name (`none`, `anon-private`, `anon-shared`, `memfd`, `hugetlbfs`, `file`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Backing::None => "none",
            Backing::AnonymousPrivate => "anon-private",
            Backing::AnonymousShared => "anon-shared",
            Backing::Memfd => "memfd",
            Backing::Hugetlbfs(_) => "hugetlbfs",
            Backing::File { .. } => "file",
        }
    }
}

/// The full description of one guest physical region: where it is, what it is for, and how
/// its host memory is made. Built with [`RegionSpec::new`] and the setter methods, checked by
/// [`validate`](Self::validate) (and by everything that uses it).
///
/// ```
/// use memvisor_space::{Backing, HugePages, NumaBinding, RegionSpec, RegionType};
/// use memvisor_space::vm_memory::GuestAddress;
///
/// let spec = RegionSpec::new(RegionType::Ram, GuestAddress(0), 256 << 20)
///     .with_backing(Backing::Memfd)
///     .with_huge_pages(HugePages::Transparent)
///     .with_numa(NumaBinding::bind(0))
///     .with_prefault_threads(2)
///     .with_dontfork(true);
/// assert_eq!(spec.range()?.last(), GuestAddress((256 << 20) - 1));
/// spec.validate()?;
/// # Ok::<(), memvisor_space::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegionSpec {
    pub(crate) ty: RegionType,
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) numa: Option<NumaBinding>,
    pub(crate) backing: Backing,
    pub(crate) protection: Protection,
    pub(crate) huge_pages: HugePages,
    pub(crate) fallback: HugePageFallback,
    pub(crate) hotplug: bool,
    pub(crate) dontfork: bool,
    pub(crate) prefault_threads: usize,
    pub(crate) dirty_tracking: bool,
}

impl RegionSpec {
    /// A region of type `ty` at `base` of `size` bytes. RAM, DAX and firmware regions start
    /// with [`Backing::AnonymousPrivate`] (DAX: [`Backing::AnonymousShared`]); device and
    /// reserved regions with [`Backing::None`]. Protection is read-write (firmware: read and
    /// execute), no huge pages, no NUMA binding, no prefault.
    #[must_use]
    pub fn new(ty: RegionType, base: GuestAddress, size: u64) -> Self {
        let backing = match ty {
            RegionType::Ram | RegionType::Firmware => Backing::AnonymousPrivate,
            RegionType::Dax => Backing::AnonymousShared,
            RegionType::Device | RegionType::Reserved => Backing::None,
        };
        let protection = match ty {
            RegionType::Firmware => Protection::ReadExecute,
            _ => Protection::ReadWrite,
        };
        Self {
            ty,
            base: base.0,
            size,
            numa: None,
            backing,
            protection,
            huge_pages: HugePages::None,
            fallback: HugePageFallback::Fail,
            hotplug: false,
            dontfork: false,
            prefault_threads: 0,
            dirty_tracking: false,
        }
    }

    /// A RAM region with default attributes.
    #[must_use]
    pub fn ram(base: GuestAddress, size: u64) -> Self {
        Self::new(RegionType::Ram, base, size)
    }

    /// Sets the host NUMA binding.
    #[must_use]
    pub fn with_numa(mut self, binding: NumaBinding) -> Self {
        self.numa = Some(binding);
        self
    }

    /// Sets where the host memory comes from.
    #[must_use]
    pub fn with_backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// Sets the access rights.
    #[must_use]
    pub fn with_protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }

    /// Sets the page kind.
    #[must_use]
    pub fn with_huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Sets what happens when explicit huge pages cannot be had.
    #[must_use]
    pub fn with_fallback(mut self, fallback: HugePageFallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Marks the region as hot-pluggable: it lives in the layout's hotplug window and its
    /// host memory inside the window's host reservation.
    #[must_use]
    pub fn with_hotplug(mut self, hotplug: bool) -> Self {
        self.hotplug = hotplug;
        self
    }

    /// Keeps the memory out of child processes (`MADV_DONTFORK`).
    #[must_use]
    pub fn with_dontfork(mut self, dontfork: bool) -> Self {
        self.dontfork = dontfork;
        self
    }

    /// Makes the memory resident when it is created, split across `threads` threads
    /// (`MADV_POPULATE_WRITE`, or `MADV_POPULATE_READ` for read-only regions); `0` means no
    /// prefault. At most [`MAX_PREFAULT_THREADS`] threads run, the calling thread among them,
    /// and one per 64 MiB of the region at least, whatever the count; the threads of one
    /// region end before the next region is made, so no call starts more than that many at
    /// once. A thread the system refuses to start leaves its part to the calling thread. Memory
    /// without access (`Protection::None`) cannot be populated and is not prefaulted: its
    /// [`RegionReport`](crate::RegionReport) gives 0 threads.
    #[must_use]
    pub fn with_prefault_threads(mut self, threads: usize) -> Self {
        self.prefault_threads = threads;
        self
    }

    /// Tracks which pages are written (one bit per host base page, the unit of KVM's dirty
    /// log): every write through the region's or a snapshot's vm-memory `Bytes` and slices
    /// marks the pages it touches, and a dirty log fetched from KVM can be merged in
    /// ([`Region::merge_dirty_log`](crate::Region::merge_dirty_log)). Writes through a host
    /// address, or through a
    /// [`Snapshot::to_guest_memory_mmap`](crate::Snapshot::to_guest_memory_mmap) copy, whose
    /// regions have no bitmap, are not marked. Needs host memory.
    #[must_use]
    pub fn with_dirty_tracking(mut self, on: bool) -> Self {
        self.dirty_tracking = on;
        self
    }

    /// Whether writes are tracked ([`with_dirty_tracking`](Self::with_dirty_tracking)).
    #[must_use]
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking
    }

    /// The type.
    #[must_use]
    pub fn ty(&self) -> RegionType {
        self.ty
    }

    /// The first guest physical address.
    #[must_use]
    pub fn base(&self) -> GuestAddress {
        GuestAddress(self.base)
    }

    /// The size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The NUMA binding.
    #[must_use]
    pub fn numa(&self) -> Option<&NumaBinding> {
        self.numa.as_ref()
    }

    /// The backing.
    #[must_use]
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The access rights.
    #[must_use]
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The page kind.
    #[must_use]
    pub fn huge_pages(&self) -> HugePages {
        self.huge_pages
    }

    /// The huge page fallback.
    #[must_use]
    pub fn fallback(&self) -> HugePageFallback {
        self.fallback
    }

    /// Whether the region is hot-pluggable.
    #[must_use]
    pub fn hotplug(&self) -> bool {
        self.hotplug
    }

    /// Whether the memory is kept out of child processes.
    #[must_use]
    pub fn dontfork(&self) -> bool {
        self.dontfork
    }

    /// Threads used to prefault (`0`: no prefault).
    #[must_use]
    pub fn prefault_threads(&self) -> usize {
        self.prefault_threads
    }

    /// The page size the host memory is made of: the explicit huge page size, or the host's
    /// base page size (read at run time). Base, size and file offset must be multiples of it
    /// to back the region ([`check_host_pages`](Self::check_host_pages)). (A
    /// [`Backing::File`] on hugetlbfs is made of the mount's huge pages, which only the file
    /// tells: backing checks them and the report gives them.)
    #[must_use]
    pub fn page_size(&self) -> u64 {
        match self.huge_pages {
            HugePages::Explicit(size) => size.bytes(),
            _ => host_page_size(),
        }
    }

    /// The page size [`validate`](Self::validate) checks, which depends on no host value:
    /// the explicit huge page size, or [`GUEST_PAGE_SIZE`]. A layout may ask for more
    /// ([`Layout::guest_page_size`](crate::Layout::guest_page_size)).
    #[must_use]
    pub fn guest_page_size(&self) -> u64 {
        match self.huge_pages {
            HugePages::Explicit(size) => size.bytes(),
            _ => GUEST_PAGE_SIZE,
        }
    }

    /// Checks what memory for the region needs beyond [`validate`](Self::validate): base,
    /// size and file offset multiples of the host page size the memory is made of
    /// ([`page_size`](Self::page_size)), and an end (`base + size`) that fits in a `u64`, so
    /// the memory's last byte is below the last address of the 64-bit space. vm-memory's
    /// regions need that end, and its accesses take the address after the last byte of the
    /// space for address 0. Done only when backing, so that a plan depends on no host value
    /// and may reach the top of the space.
    ///
    /// # Errors
    /// [`Error::Misaligned`] naming the host page size; [`Error::Overflow`] for memory
    /// ending at the top of the space.
    pub fn check_host_pages(&self) -> Result<()> {
        if self.base.checked_add(self.size).is_none() {
            return Err(Error::Overflow {
                base: self.base,
                size: self.size,
            });
        }
        let page_size = self.page_size();
        if !self.base.is_multiple_of(page_size) || !self.size.is_multiple_of(page_size) {
            return Err(Error::Misaligned {
                base: self.base,
                size: self.size,
                page_size,
            });
        }
        if let Backing::File { offset, .. } = &self.backing
            && !offset.is_multiple_of(page_size)
        {
            return Err(Error::Misaligned {
                base: *offset,
                size: self.size,
                page_size,
            });
        }
        Ok(())
    }

    /// Checks everything that does not depend on a layout, other regions or the host: size,
    /// overflow, alignment to [`guest_page_size`](Self::guest_page_size), and that the options
    /// fit the type and each other.
    ///
    /// # Errors
    /// [`Error::ZeroSize`], [`Error::Overflow`], [`Error::Misaligned`] (base, size, or a file
    /// offset not a multiple of the guest page size), and [`Error::InvalidSpec`] for
    /// contradictions: memory for a reserved region, no memory for RAM, DAX or firmware,
    /// explicit huge pages on an existing file, a hugetlbfs backing without explicit huge
    /// pages, an empty NUMA node list, a NUMA node at or past
    /// [`LINUX_MOST_NUMNODES`](crate::LINUX_MOST_NUMNODES) (1,024: no Linux host has one, and
    /// the kernel refuses `mbind` past it; whether the host has a node below is asked when the
    /// region is backed, [`Error::NumaNodeMissing`]), or NUMA, huge pages or prefault on a
    /// region with no memory.
    ///
    /// ```
    /// use memvisor_space::{Error, RegionSpec};
    /// use memvisor_space::vm_memory::GuestAddress;
    ///
    /// let zero = RegionSpec::ram(GuestAddress(0), 0);
    /// assert!(matches!(zero.validate(), Err(Error::ZeroSize { base: 0 })));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let (base, size) = (self.base, self.size);
        if size == 0 {
            return Err(Error::ZeroSize { base });
        }
        if base.checked_add(size - 1).is_none() {
            return Err(Error::Overflow { base, size });
        }
        let page_size = self.guest_page_size();
        if !base.is_multiple_of(page_size) || !size.is_multiple_of(page_size) {
            return Err(Error::Misaligned {
                base,
                size,
                page_size,
            });
        }
        let invalid = |reason| Error::InvalidSpec {
            ty: self.ty,
            base,
            reason,
        };
        match (self.ty, self.backing.has_memory()) {
            (RegionType::Reserved, true) => {
                return Err(invalid("a reserved region has no host memory"));
            }
            (RegionType::Ram | RegionType::Dax | RegionType::Firmware, false) => {
                return Err(invalid("this region type needs host memory"));
            }
            _ => {}
        }
        if !self.backing.has_memory()
            && (self.numa.is_some()
                || self.huge_pages != HugePages::None
                || self.prefault_threads > 0
                || self.dontfork
                || self.dirty_tracking)
        {
            return Err(invalid(
                "NUMA, huge pages, prefault, dontfork and dirty tracking need host memory",
            ));
        }
        if self.numa.as_ref().is_some_and(|n| n.nodes.is_empty()) {
            return Err(invalid("the NUMA binding names no node"));
        }
        // The nodes are sorted: the last is the highest.
        if self
            .numa
            .as_ref()
            .and_then(|n| n.nodes.last())
            .is_some_and(|&node| node >= crate::LINUX_MOST_NUMNODES)
        {
            return Err(invalid(
                "the NUMA binding names a node at or past 1024, which no Linux host has",
            ));
        }
        match (&self.backing, self.huge_pages) {
            (Backing::File { offset, .. }, huge) => {
                if matches!(huge, HugePages::Explicit(_)) {
                    return Err(invalid(
                        "explicit huge pages need an anonymous, memfd or hugetlbfs backing",
                    ));
                }
                if !offset.is_multiple_of(page_size) {
                    return Err(Error::Misaligned {
                        base: *offset,
                        size,
                        page_size,
                    });
                }
            }
            (Backing::Hugetlbfs(_), huge) if !matches!(huge, HugePages::Explicit(_)) => {
                return Err(invalid("a hugetlbfs backing needs explicit huge pages"));
            }
            _ => {}
        }
        if self.hotplug && self.ty != RegionType::Ram {
            return Err(invalid("only RAM regions are hot-pluggable"));
        }
        if usize::try_from(size).is_err() {
            return Err(Error::Overflow { base, size });
        }
        Ok(())
    }
}

/// The smallest guest page of every supported architecture (x86-64 and AArch64's 4 KiB
/// granule): what [`RegionSpec::validate`] aligns regions to, whatever the host's page size.
pub const GUEST_PAGE_SIZE: u64 = 0x1000;

/// The most threads that prefault one region, the calling thread among them, whatever
/// [`RegionSpec::with_prefault_threads`] asks: populating memory is bound by the memory's
/// bandwidth and the kernel's page allocator long before this many threads, and a larger count
/// taken from a configuration would start a thread per 64 MiB of the region (16,384 for 1 TiB).
/// Cloud Hypervisor and QEMU bound their preallocation threads at the same 16.
pub const MAX_PREFAULT_THREADS: usize = 16;

#[cfg(test)]
thread_local! {
    static HOST_PAGE_SIZE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The host's base page size in bytes (a test may simulate another one).
pub(crate) fn host_page_size() -> u64 {
    #[cfg(test)]
    if let Some(page) = HOST_PAGE_SIZE.with(std::cell::Cell::get) {
        return page;
    }
    memvisor_vmem::page_size() as u64
}

/// Runs `f` with [`host_page_size`] answering `page` on this thread.
#[cfg(test)]
pub(crate) fn with_host_page_size<R>(page: u64, f: impl FnOnce() -> R) -> R {
    let old = HOST_PAGE_SIZE.with(|c| c.replace(Some(page)));
    let out = f();
    HOST_PAGE_SIZE.with(|c| c.set(old));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> u64 {
        host_page_size()
    }

    #[test]
    fn validate_good_ram_ok() {
        RegionSpec::ram(GuestAddress(0), 16 * page())
            .validate()
            .unwrap();
    }

    #[test]
    fn validate_overflow_errors() {
        let spec = RegionSpec::ram(GuestAddress(u64::MAX - page() + 1), 2 * page());
        assert!(matches!(spec.validate(), Err(Error::Overflow { .. })));
    }

    #[test]
    fn validate_region_ending_at_top_ok() {
        let spec = RegionSpec::new(
            RegionType::Reserved,
            GuestAddress(u64::MAX - page() + 1),
            page(),
        );
        spec.validate().unwrap();
        assert_eq!(spec.range().unwrap().last(), GuestAddress(u64::MAX));
    }

    #[test]
    fn validate_misaligned_for_huge_pages_errors() {
        let spec = RegionSpec::ram(GuestAddress(0x20_0000), 0x20_0000)
            .with_huge_pages(HugePages::Explicit(HugePageSize::Size1G));
        let err = spec.validate().unwrap_err();
        assert!(matches!(
            err,
            Error::Misaligned {
                page_size: 0x4000_0000,
                ..
            }
        ));
    }

    #[test]
    fn validate_misaligned_base_errors() {
        let spec = RegionSpec::ram(GuestAddress(1), page());
        assert!(matches!(
            spec.validate(),
            Err(Error::Misaligned { base: 1, .. })
        ));
    }

    #[test]
    fn validate_contradictions_error() {
        let p = page();
        let cases = [
            RegionSpec::new(RegionType::Reserved, GuestAddress(0), p).with_backing(Backing::Memfd),
            RegionSpec::ram(GuestAddress(0), p).with_backing(Backing::None),
            RegionSpec::new(RegionType::Device, GuestAddress(0), p).with_prefault_threads(1),
            RegionSpec::ram(GuestAddress(0), p).with_numa(NumaBinding::new(NumaPolicy::Bind, [])),
            RegionSpec::ram(GuestAddress(0), p)
                .with_backing(Backing::Hugetlbfs("/dev/hugepages".into())),
            RegionSpec::new(RegionType::Dax, GuestAddress(0), p).with_hotplug(true),
        ];
        for spec in cases {
            assert!(
                matches!(spec.validate(), Err(Error::InvalidSpec { .. })),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn validate_file_offset_misaligned_errors() {
        let spec = RegionSpec::ram(GuestAddress(0), page()).with_backing(Backing::File {
            path: "/tmp/x".into(),
            offset: 3,
        });
        assert!(matches!(
            spec.validate(),
            Err(Error::Misaligned { base: 3, .. })
        ));
    }

    #[test]
    fn new_firmware_is_read_execute_and_others_read_write() {
        let at = GuestAddress(0);
        let firmware = RegionSpec::new(RegionType::Firmware, at, page());
        assert_eq!(firmware.protection().to_string(), "r-x");
        assert_eq!(
            RegionSpec::ram(at, page()).protection(),
            Protection::ReadWrite
        );
    }

    #[test]
    fn huge_page_size_round_trips() {
        for size in [HugePageSize::Size2M, HugePageSize::Size1G] {
            assert_eq!(HugePageSize::from_bytes(size.bytes()), Some(size));
            assert_eq!(1u64 << size.shift(), size.bytes());
        }
        assert_eq!(HugePageSize::from_bytes(4096), None);
    }
}
