//! Mapping other sources into a reservation, NUMA policy, advice beyond huge pages, and
//! populating for reading: the operations a guest-memory layer needs, so that every `mmap`,
//! `madvise` and `mbind` of the workspace goes through the `sys` layer of this crate.
//!
//! Each keeps the bitmaps true: a mapped range is committed, with the protection it was
//! mapped with, and not locked; decommitting it puts the reservation's own pages back.

use core::sync::atomic::{AtomicU8, Ordering};

use super::{Pages, Reservation};
use crate::error::{Error, Operation, Result};
use crate::reservation::Protection;
use crate::sys::{self, Populated, SysAdvice};

/// What [`Reservation::map`] puts over part of a reservation. A file source borrows its
/// descriptor for `'fd`, so the descriptor stays open while the source can be used (I/O
/// safety): it can only be made from a `BorrowedFd`, never from a bare number.
///
/// A descriptor number is not a file source:
///
/// ```compile_fail
/// use memvisor_vmem::{FileSource, MapSource};
/// let source = MapSource::File(FileSource { fd: 3, offset: 0 });
/// ```
///
/// and a source cannot outlive its file (which could then be closed and its number reused):
///
/// ```compile_fail
/// use std::os::fd::AsFd;
/// use memvisor_vmem::MapSource;
/// let source = {
///     let file = std::fs::File::open("/dev/zero").unwrap();
///     MapSource::file(file.as_fd(), 0)
/// };
/// let _ = source;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MapSource<'fd> {
    /// Fresh private anonymous memory (reads as zero; copy-on-write across `fork`).
    AnonymousPrivate,
    /// Fresh shared anonymous memory (reads as zero; shared with children after `fork`).
    AnonymousShared,
    /// A file, memfd or hugetlbfs file, mapped shared from a byte offset (a multiple of the
    /// page size, or of the huge page size for hugetlbfs); the mapping keeps the file alive
    /// after it is closed. Made with [`MapSource::file`].
    #[cfg(unix)]
    File(FileSource<'fd>),
    /// Never made: where there are no file sources, it keeps the lifetime in the type.
    #[cfg(not(unix))]
    #[doc(hidden)]
    Unmade(
        core::marker::PhantomData<&'fd ()>,
        core::convert::Infallible,
    ),
}

/// A borrowed file descriptor and a byte offset in its file: the source of a file mapping
/// ([`MapSource::file`]).
#[cfg(unix)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileSource<'fd> {
    /// The descriptor, open for `'fd`.
    fd: i32,
    /// Byte offset in the file of the range's first byte.
    offset: u64,
    borrow: core::marker::PhantomData<&'fd ()>,
}

#[cfg(unix)]
impl FileSource<'_> {
    /// The descriptor.
    pub(crate) fn raw_fd(self) -> i32 {
        self.fd
    }

    /// Byte offset in the file of the range's first byte.
    #[must_use]
    pub fn offset(self) -> u64 {
        self.offset
    }
}

impl<'fd> MapSource<'fd> {
    /// A file source from a descriptor borrowed for as long as the source is used.
    #[cfg(all(unix, feature = "std"))]
    #[must_use]
    pub fn file(fd: std::os::fd::BorrowedFd<'fd>, offset: u64) -> Self {
        use std::os::fd::AsRawFd;
        MapSource::File(FileSource {
            fd: fd.as_raw_fd(),
            offset,
            borrow: core::marker::PhantomData,
        })
    }

    fn is_shared(self) -> bool {
        !matches!(self, MapSource::AnonymousPrivate)
    }
}

/// An explicit (hugetlb) huge page size for [`Reservation::map`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HugeTlbSize {
    /// 2 MiB pages.
    Size2M,
    /// 1 GiB pages.
    Size1G,
}

impl HugeTlbSize {
    /// The page size in bytes.
    #[must_use]
    pub fn bytes(self) -> usize {
        1 << self.shift()
    }

    /// The log2 of the page size.
    #[must_use]
    pub fn shift(self) -> u32 {
        match self {
            HugeTlbSize::Size2M => 21,
            HugeTlbSize::Size1G => 30,
        }
    }
}

/// A NUMA memory policy for [`Reservation::bind_numa`] (Linux `mbind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NumaPolicy {
    /// The thread's or process's policy (`MPOL_DEFAULT`); takes no nodes.
    Default,
    /// Allocate on one preferred node if possible (`MPOL_PREFERRED`): the lowest-numbered of
    /// the given nodes that exist, not the first in the slice; with no nodes, on the node of
    /// the allocating CPU.
    Preferred,
    /// Allocate only on the given nodes, moving pages already there (`MPOL_BIND` with
    /// `MPOL_MF_STRICT | MPOL_MF_MOVE`); takes at least one node.
    Bind,
    /// Spread pages over the given nodes (`MPOL_INTERLEAVE`); takes at least one node.
    Interleave,
}

/// Advice that never changes contents, for [`Reservation::advise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// Leave the range out of children made by `fork` (`MADV_DONTFORK`): a child has a gap
    /// of its address space there (see the `fork` section of [`Reservation`]'s docs).
    DontFork,
    /// Undo [`DontFork`](Self::DontFork) (`MADV_DOFORK`).
    DoFork,
    /// Leave the range out of core dumps (`MADV_DONTDUMP`).
    DontDump,
    /// Undo [`DontDump`](Self::DontDump) (`MADV_DODUMP`).
    DoDump,
}

/// Checks that the offset, length and file offset of a mapping are multiples of `unit`.
fn check_units(offset: usize, len: usize, source: MapSource<'_>, unit: usize) -> Result<()> {
    for (what, value) in [("offset", offset), ("length", len)] {
        if !value.is_multiple_of(unit) {
            return Err(Error::Misaligned {
                what,
                value,
                page_size: unit,
            });
        }
    }
    #[cfg(unix)]
    if let MapSource::File(file) = source
        && !file.offset().is_multiple_of(unit as u64)
    {
        return Err(Error::FileOffsetMisaligned {
            file_offset: file.offset(),
            page_size: unit,
        });
    }
    #[cfg(not(unix))]
    let _ = source;
    Ok(())
}

/// Host NUMA node numbers accepted by [`Reservation::bind_numa`] are below this: the most
/// nodes any Linux build maps (`MAX_NUMNODES` is `1 << CONFIG_NODES_SHIFT`, and every
/// architecture's Kconfig bounds the shift at 10), so a node numbered this or more is on no
/// Linux host.
pub const NUMA_NODES: u32 = 1024;

impl Reservation {
    /// Maps `source` over `offset..offset + len` with `protection`, replacing what was there
    /// (`MAP_FIXED` over the reservation's own pages): the range becomes committed, with that
    /// protection, and unlocked, without huge-page advice or [`advise`](Self::advise)d
    /// fork and dump behaviour. With `huge`, anonymous sources use explicit huge pages of that
    /// size (`MAP_HUGETLB`), and the range must be aligned to it. File sources take their
    /// pages from the file and ignore `huge`: a regular file or a plain memfd is mapped in base
    /// pages (any page-aligned range), and a hugetlbfs file (a memfd made with `MFD_HUGETLB`
    /// included) in its own huge pages, so its range and file offset must be multiples of its
    /// huge page size, whichever size `huge` names. Explicit huge
    /// pages also need an aligned address: reserve with an
    /// [`alignment`](crate::ReservationBuilder::alignment) of at least the huge page size. A
    /// regular file must be long enough for the range when it is mapped (afterwards it is the
    /// caller's to keep it so: where it is shortened later, accesses past its end fault with
    /// `SIGBUS`). [`decommit`](Self::decommit) later puts the reservation's own uncommitted
    /// pages back, in both modes. The huge page size of such a range is recorded: until its
    /// pages are decommitted or mapped over whole, every call that changes pages or their
    /// mapping (commit, decommit, protect, lock, unlock, advice, NUMA policy, guard, unguard,
    /// free, discard, purge, map) refuses a range that starts or ends inside one of its huge
    /// pages with [`Error::Misaligned`] naming the huge page size, before changing anything
    /// (the system would refuse such a range part-way, or round it and act on more or less than
    /// asked); queries and prefaults accept any range.
    ///
    /// The bookkeeping costs one byte per bitmap for each whole block of 32,768 pages in the
    /// range (128 MiB with 4 KiB pages) and 4 KiB per bitmap for each block the range only
    /// cuts, whatever the range's length: mapping a memfd over 8 TiB writes under 1 MiB and
    /// takes milliseconds. Explicit huge pages are recorded by their size, at the same cost
    /// whatever their number, in bitmaps of their own that the first map of explicit huge
    /// pages the system grants makes (one mapping, made once the system mapped the pages): a
    /// reservation that never maps any, or whose maps of them are all refused, does not pay
    /// for them, and a refused map makes nothing at all.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::Misaligned`] for a range that is
    /// not a multiple of the page size, of the huge page size named (for an anonymous
    /// source), or of a hugetlbfs file's huge page size, [`Error::FileOffsetMisaligned`] for a
    /// file offset that is not a multiple of the page size the file is mapped in (its whole
    /// `u64` value, past 4 GiB on a 32-bit host too), and [`Error::Misaligned`] (`what`
    /// `"address"`) for explicit huge pages whose start address is not a multiple of their size
    /// (the system would refuse it); [`Error::PastEndOfFile`] for a range reaching past the end
    /// of a regular file; [`Error::Guarded`] if it holds a guard page; [`Error::Unsupported`]
    /// where the platform cannot map into a reservation (Windows, and anonymous explicit huge
    /// pages outside Linux), before anything is made or changed;
    /// [`Error::Os`] if the system refuses (for example `ENOMEM` when no huge pages are free,
    /// `EBADF`/`EACCES` for the descriptor, also when its file cannot be examined, and when
    /// the first map of explicit huge pages cannot make the bitmaps that record them once the
    /// system mapped the pages: the reservation's own uncommitted pages are then put back
    /// over them, as below, and where the system refuses that and the huge pages stay, the
    /// range is *lost*, as below). After an error the range is as it was, except where the
    /// system took its pages before refusing (explicit huge pages that cannot be had) or
    /// mapped them (the bitmaps refused): then the range holds the reservation's own
    /// uncommitted pages again, as the bookkeeping says, and its old contents are gone (they were
    /// to be replaced anyway; where only part of the range was unmapped, only that part is
    /// filled, and the pages mapped next to it are lost, as for [`decommit`](Self::decommit)).
    /// If the system refuses that too, the range's pages are *lost*: another mapping may be
    /// placed there, so every later call on a range with a lost page fails with [`Error::Lost`]
    /// (queries too), and dropping the reservation unmaps only the pages around them.
    ///
    /// # Examples
    /// ```
    /// # #[cfg(unix)] {
    /// use memvisor_vmem::{MapSource, Protection, Reservation, page_size};
    ///
    /// let page = page_size();
    /// let mut r = Reservation::new(16 * page)?;
    /// r.map(4 * page, 4 * page, MapSource::AnonymousShared, Protection::ReadWrite, None)?;
    /// assert!(r.is_committed(4 * page, 4 * page)?);
    /// assert_eq!(r.committed_bytes(), 4 * page);
    /// r.decommit(4 * page, 4 * page)?;
    /// assert_eq!(r.committed_bytes(), 0);
    /// # }
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn map(
        &mut self,
        offset: usize,
        len: usize,
        source: MapSource<'_>,
        protection: Protection,
        huge: Option<HugeTlbSize>,
    ) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.map_inner(offset, len, source, protection, huge) }
    }

    /// [`map`](Self::map) through a shared reference.
    ///
    /// # Errors
    /// As [`map`](Self::map); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// As [`decommit_unchecked`](Self::decommit_unchecked): the range's contents are
    /// replaced.
    pub unsafe fn map_unchecked(
        &self,
        offset: usize,
        len: usize,
        source: MapSource<'_>,
        protection: Protection,
        huge: Option<HugeTlbSize>,
    ) -> Result<()> {
        self.not_held_by_vector(Operation::Map)?;
        // SAFETY: the caller's promise.
        unsafe { self.map_inner(offset, len, source, protection, huge) }
    }

    /// The body of [`map`](Self::map) and [`map_unchecked`](Self::map_unchecked).
    ///
    /// # Safety
    /// As [`decommit_unchecked`](Self::decommit_unchecked), and the reservation's owner (a
    /// vector, for one) no longer counts the range's contents as its own.
    unsafe fn map_inner(
        &self,
        offset: usize,
        len: usize,
        source: MapSource<'_>,
        protection: Protection,
        huge: Option<HugeTlbSize>,
    ) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // A file is mapped in its own pages: base pages for a regular file or memfd, its huge
        // pages for a hugetlbfs file (checked below). The system takes `huge` (`MAP_HUGETLB`)
        // for anonymous memory only, so it asks nothing of a file's range.
        #[cfg_attr(not(unix), allow(unused_mut, reason = "only Unix maps files"))]
        let mut huge = huge;
        #[cfg(unix)]
        if let MapSource::File(_) = source {
            huge = None;
        }
        let unit = huge.map_or(self.page, |h| h.bytes().max(self.page));
        check_units(offset, len, source, unit)?;
        #[cfg_attr(not(unix), allow(unused_mut, reason = "only Unix maps files"))]
        let mut no_hole_punch = false;
        // The size of the explicit huge pages the range is mapped in, if any: for a file, its
        // own, else the one named.
        #[cfg_attr(not(unix), allow(unused_mut, reason = "only Unix maps files"))]
        let mut hugetlb_size = huge.map(HugeTlbSize::bytes);
        #[cfg(unix)]
        if let MapSource::File(file) = source {
            let facts = sys::file_facts(file.raw_fd()).map_err(|e| e.during(Operation::Map))?;
            no_hole_punch = facts.no_hole_punch;
            hugetlb_size = facts.page_size;
            // The system maps a hugetlbfs file in whole huge pages, rounding the length up:
            // a shorter range would replace memory past its end.
            if let Some(file_page) = facts.page_size
                && file_page > unit
            {
                check_units(offset, len, source, file_page)?;
            }
            // Past the end of a regular file every access faults (`SIGBUS`).
            if let Some(file_len) = facts.len
                && file
                    .offset()
                    .checked_add(len as u64)
                    .is_none_or(|end| end > file_len)
            {
                return Err(Error::PastEndOfFile {
                    file_offset: file.offset(),
                    len,
                    file_len,
                });
            }
        }
        // Explicit huge pages are mapped only at an address aligned to their size (the
        // system refuses others with `EINVAL`); the reservation's start is a multiple of the
        // page size only, unless it was reserved with a larger alignment.
        let addr = self.at(offset) as usize;
        if let Some(size) = hugetlb_size
            && !addr.is_multiple_of(size)
        {
            return Err(Error::Misaligned {
                what: "address",
                value: addr,
                page_size: size,
            });
        }
        // The new mapping drops the system's locks of the range, and a commit or protect
        // between the check and the record would be undone unseen: one call at a time.
        let serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.no_guard(pages)?;
        // A map the platform cannot make (any on Windows, explicit huge pages outside Linux)
        // is refused before anything is made for it.
        let huge_shift = huge.map(HugeTlbSize::shift);
        sys::can_map(huge_shift).map_err(|e| e.during(Operation::Map))?;
        // Unit tests may have base pages stand in for huge pages the host has none of.
        #[cfg(test)]
        let huge_shift = huge_shift.filter(|_| !super::tests::huge_pages_granted());
        // SAFETY: the range is inside the reservation; the caller vouches that nothing refers
        // to its contents.
        let mapped = unsafe { sys::map(self.at(offset), len, source, protection, huge_shift) };
        if let Err(e) = mapped {
            // The system may have taken the old pages before it refused (explicit huge pages
            // that cannot be had): the reservation's own uncommitted pages go back, or the
            // pages are lost.
            // SAFETY: the range is inside the reservation; the caller gave up its contents.
            if unsafe { self.fill_hole(pages) }.is_ok() {
                self.forget(pages);
            }
            return Err(e.during(Operation::Map));
        }
        // The record of explicit huge pages is made for the first map of them only once the
        // system granted the pages, so that a map it refuses (no huge pages free, the common
        // refusal) makes nothing at all. Should the record be refused then, the pages it
        // cannot hold are replaced by the reservation's own uncommitted ones.
        let hugetlb = match hugetlb_size.filter(|&size| size > self.page) {
            Some(size) => match self.hugetlb_record(&serial) {
                Ok(record) => Some((record, size)),
                Err(e) => {
                    // SAFETY: the range is inside the reservation; the caller gave up its
                    // contents.
                    unsafe { self.unmake_map(pages) };
                    return Err(e.during(Operation::Map));
                }
            },
            None => None,
        };
        let added = self.committed.set_range(pages.first, pages.count);
        self.committed_pages
            .fetch_add(added, core::sync::atomic::Ordering::Relaxed);
        self.record_protection(pages, protection);
        self.mapped.set_range(pages.first, pages.count);
        if source.is_shared() {
            self.shared.set_range(pages.first, pages.count);
        } else {
            self.shared.clear_range(pages.first, pages.count);
        }
        if no_hole_punch {
            self.no_hole_punch.set_range(pages.first, pages.count);
        } else {
            self.no_hole_punch.clear_range(pages.first, pages.count);
        }
        match hugetlb {
            Some((record, size)) => self.record_hugetlb_map(record, pages, size, &serial),
            None => self.clear_hugetlb(pages),
        }
        // A fresh mapping is neither locked nor advised.
        self.locked.clear_range(pages.first, pages.count);
        self.huge.clear_range(pages.first, pages.count);
        self.no_huge.clear_range(pages.first, pages.count);
        self.dont_fork.clear_range(pages.first, pages.count);
        self.dont_dump.clear_range(pages.first, pages.count);
        Ok(())
    }

    /// After the system mapped explicit huge pages over `pages` whose record could not be
    /// made: puts the reservation's own fresh pages back over them and counts them
    /// uncommitted, with the range's recorded advice given again, as after a map the system
    /// refused once it took the old pages. Where the
    /// system refuses that and the huge pages are still there, they are lost (left mapped
    /// until the process ends): unrecorded, they would be changed part-way by later calls (a
    /// huge page rounds what `MADV_DONTNEED` frees) and read back stale where the record
    /// promises zero. Where the refusal left a hole, it is filled as after a refused map
    /// (see `fill_hole`). The caller holds the call lock.
    ///
    /// # Safety
    /// `pages` lie inside the reservation and nothing refers to their contents.
    unsafe fn unmake_map(&self, pages: Pages) {
        let (ptr, len) = (self.at(pages.first * self.page), pages.count * self.page);
        // SAFETY: the caller's promise.
        if unsafe { self.sys_replace(ptr, len) }.is_ok() {
            // Fresh pages, as a filled hole: the range's recorded advice is given again.
            self.refilled(pages);
            return;
        }
        // SAFETY: the range is inside the reservation.
        if unsafe { sys::is_mapped(ptr, len) } {
            self.lose(pages);
            return;
        }
        // SAFETY: the caller's promise.
        if unsafe { self.fill_hole(pages) }.is_ok() {
            self.forget(pages);
        }
    }

    /// Sets the NUMA memory policy of the range (Linux `mbind`) for the given node numbers;
    /// with [`NumaPolicy::Bind`] pages already present move to those nodes. Contents are kept.
    /// The range need not be committed; the policy applies to pages committed later too, until
    /// a decommit or guard in [`CommitMode::Protected`](crate::CommitMode::Protected) or a
    /// [`map`](Self::map) replaces the pages (a later decommit of pages a `map` replaced keeps
    /// them without it; the other pages of its range keep theirs in
    /// [`CommitMode::Sparse`](crate::CommitMode::Sparse)).
    ///
    /// The system call runs under the reservation's call lock, shared (so that no page of the
    /// range is lost, and no explicit huge page mapped over part of it, between the range
    /// checks and the policy): other binds and the prefaults through `&self`, which share it
    /// too, run meanwhile, but every call on the reservation that holds it alone (commit,
    /// lock, unlock, both advice calls, and decommit, protect, guard, map, free, discard and
    /// purge through their `_unchecked` forms) waits for it, on every range, and so does
    /// every share asked for once such a call waits. With [`NumaPolicy::Bind`] that includes
    /// the kernel moving the range's resident pages, which takes as long as copying them: set
    /// the policy before the pages are made resident (nothing moves then), or give ranges
    /// that are bound while in use a reservation of their own.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NumaNode`] for a node number of
    /// 1024 or more; [`Error::NumaPolicyNodes`] for nodes given with [`NumaPolicy::Default`],
    /// or none with [`NumaPolicy::Bind`] or [`NumaPolicy::Interleave`] (checked in this order,
    /// before the system is asked, on every system); [`Error::Unsupported`] outside Linux;
    /// [`Error::Os`] if the kernel refuses (`EIO` if pages could not be moved). Nodes that do
    /// not exist, or that the process may not use, are left out by the kernel without an
    /// error, as long as one of the given nodes is left (`EINVAL` if none is); but a node
    /// number at or past the most the kernel was built for (it may support fewer than 1024
    /// nodes, `CONFIG_NODES_SHIFT`) is `EINVAL` whatever the other nodes are.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{NumaPolicy, Reservation, page_size};
    ///
    /// let r = Reservation::new(4 * page_size())?;
    /// if cfg!(target_os = "linux") {
    ///     // Node 0 exists on every Linux system (NUMA support permitting).
    ///     let _ = r.bind_numa(0, 4 * page_size(), NumaPolicy::Preferred, &[0]);
    /// }
    /// assert!(r.bind_numa(0, 4 * page_size(), NumaPolicy::Bind, &[5000]).is_err());
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn bind_numa(
        &self,
        offset: usize,
        len: usize,
        policy: NumaPolicy,
        nodes: &[u32],
    ) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        const WORDS: usize = NUMA_NODES as usize / 64;
        let mut mask = [0u64; WORDS];
        for &node in nodes {
            if node >= NUMA_NODES {
                return Err(Error::NumaNode {
                    node,
                    limit: NUMA_NODES,
                });
            }
            // `node < 1024`, so the index and shift are in range.
            mask[node as usize / 64] |= 1 << (node % 64);
        }
        // The system refuses these with `EINVAL`, which would not say whose mistake it was.
        let fits = match policy {
            NumaPolicy::Default => nodes.is_empty(),
            NumaPolicy::Preferred => true,
            NumaPolicy::Bind | NumaPolicy::Interleave => !nodes.is_empty(),
        };
        if !fits {
            return Err(Error::NumaPolicyNodes {
                policy,
                nodes: nodes.len(),
            });
        }
        // MPOL_* and MPOL_MF_* values of `include/uapi/linux/mempolicy.h`.
        let (mode, flags) = match policy {
            NumaPolicy::Default => (0, 0),
            NumaPolicy::Preferred => (1, 0),
            NumaPolicy::Bind => (2, 1 | 2),
            NumaPolicy::Interleave => (3, 0),
        };
        // Pages another thread's decommit or map lost since the check, or explicit huge pages
        // it mapped over the range, would have the policy set on a hole or refused (`EINVAL`
        // for a range that cuts a huge page): check again, with no such call in between. Those
        // calls hold the lock alone, so a share keeps them out until the policy is set; what
        // may run meanwhile (the prefaults through `&self`, other binds) changes no mapping
        // and no record, and the kernel orders their page tables against the move.
        let _serial = self.lock_calls.share();
        self.check_held(pages)?;
        // SAFETY: the range is inside the reservation; a policy keeps contents.
        unsafe { sys::bind_numa(self.at(offset), len, mode, &mask, flags) }
            .map_err(|e| e.during(Operation::BindNuma))
    }

    /// Gives `advice`, which never changes contents, for the range (Linux `madvise`). The
    /// advice outlives [`decommit`](Self::decommit) and [`guard`](Self::guard) (until a
    /// [`map`](Self::map) of the pages).
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::Unsupported`] outside Linux;
    /// [`Error::Os`] if the kernel refuses. The kernel may refuse after advising part of the
    /// range (splitting mappings at the process's mapping limit): each page then gets back the
    /// fork or dump behaviour it had before the call, so a refused advice changes nothing;
    /// where the kernel refuses that too, a page it may have left without `DontFork` or
    /// `DontDump` is no longer recorded with it (a later decommit does not give it again).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{Advice, Reservation, page_size};
    ///
    /// let r = Reservation::new(4 * page_size())?;
    /// let advised = r.advise(0, 4 * page_size(), Advice::DontFork);
    /// assert_eq!(advised.is_ok(), cfg!(target_os = "linux"));
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn advise(&self, offset: usize, len: usize, advice: Advice) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // A decommit gives the recorded advice again to the fresh pages it maps: the advice
        // and its record must not fall on either side of one.
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        let advice = match advice {
            Advice::DontFork => SysAdvice::DontFork,
            Advice::DoFork => SysAdvice::DoFork,
            Advice::DontDump => SysAdvice::DontDump,
            Advice::DoDump => SysAdvice::DoDump,
        };
        let (bitmap, on, given, taken) = match advice {
            SysAdvice::DontFork | SysAdvice::DoFork => (
                &self.dont_fork,
                advice == SysAdvice::DontFork,
                SysAdvice::DontFork,
                SysAdvice::DoFork,
            ),
            _ => (
                &self.dont_dump,
                advice == SysAdvice::DontDump,
                SysAdvice::DontDump,
                SysAdvice::DoDump,
            ),
        };
        // SAFETY: the range is inside the reservation; this advice keeps contents.
        if let Err(e) = unsafe { self.sys_advise(self.at(offset), len, advice) } {
            // The system may have advised part of the range before refusing (`madvise`
            // splits mappings and can stop at the process's limit): give every run back the
            // advice its record says. A run refused even that is recorded without the advice,
            // so the record never claims advice the pages may lack.
            let Ok(()) = self.for_each_run(bitmap, true, pages, |run| {
                let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
                // SAFETY: the run is inside the reservation; this advice keeps contents.
                if unsafe { sys::advise(ptr, len, given) }.is_err() {
                    bitmap.clear_range(run.first, run.count);
                }
                Ok::<(), core::convert::Infallible>(())
            });
            let Ok(()) = self.for_each_run(bitmap, false, pages, |run| {
                let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
                // SAFETY: as above.
                let _ = unsafe { sys::advise(ptr, len, taken) };
                Ok::<(), core::convert::Infallible>(())
            });
            return Err(e.during(Operation::Advise));
        }
        #[cfg(test)]
        super::tests::after_advice();
        if on {
            bitmap.set_range(pages.first, pages.count);
        } else {
            bitmap.clear_range(pages.first, pages.count);
        }
        Ok(())
    }

    /// The platform advice, with a failure injected half-way in unit tests.
    ///
    /// # Safety
    /// As [`sys::advise`].
    unsafe fn sys_advise(
        &self,
        ptr: *mut u8,
        len: usize,
        advice: SysAdvice,
    ) -> core::result::Result<(), sys::SysError> {
        #[cfg(test)]
        if let Some(applied) = super::tests::ADVISE_FAILS_AFTER.with(core::cell::Cell::take) {
            if applied > 0 {
                // SAFETY: a prefix of the caller's range, as `madvise` leaves it when it stops
                // half-way.
                unsafe { sys::advise(ptr, applied.min(len), advice) }?;
            }
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::advise(ptr, len, advice) }
    }

    /// Lets the system free the committed pages of the range when it needs memory
    /// (`MADV_FREE`): until they are written again, each reads back either unchanged or as
    /// zero. They stay committed. Only for private memory (the reservation's own, or
    /// [`MapSource::AnonymousPrivate`]).
    ///
    /// # Errors
    /// As [`discard`](Self::discard); [`Error::Shared`] for a page of a shared source, and
    /// [`Error::HugeTlb`] for an explicit huge page, which Linux does not free lazily (nothing
    /// is freed then).
    pub fn free(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.free_inner(offset, len) }
    }

    /// [`free`](Self::free) through a shared reference.
    ///
    /// # Errors
    /// As [`free`](Self::free); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// No reference to the range may be live and no other thread may access it during the
    /// call: its contents may change to zero.
    pub unsafe fn free_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        self.not_held_by_vector(Operation::Free)?;
        // SAFETY: the caller's promise.
        unsafe { self.free_inner(offset, len) }
    }

    /// The body of [`free`](Self::free) and [`free_unchecked`](Self::free_unchecked).
    ///
    /// # Safety
    /// As [`free_unchecked`](Self::free_unchecked), and the reservation's owner (a vector,
    /// for one) does not rely on the range's contents.
    unsafe fn free_inner(&self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: the caller's promise.
        unsafe { self.advise_contents(offset, len, Operation::Free, |_| SysAdvice::Free) }
    }

    /// Drops the contents of the committed pages of the range now (`MADV_DONTNEED`); they
    /// stay committed: private pages read as zero, pages of a shared source read from it
    /// again.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NotCommitted`] or
    /// [`Error::Guarded`] for a page that is not committed; [`Error::Locked`] for a page
    /// [`lock`](Self::lock)ed (nothing is dropped then); [`Error::Unsupported`] outside
    /// Linux; [`Error::Os`] if the kernel refuses (pages locked by other means, such as
    /// `mlockall`, give `EINVAL`; the kernel may have dropped the pages before the one it
    /// refused).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{Reservation, page_size};
    ///
    /// let mut r = Reservation::new(2 * page_size())?;
    /// r.commit(0, page_size())?;
    /// // SAFETY: committed read-write, nothing else uses it.
    /// unsafe { r.as_ptr().write(7) };
    /// if r.discard(0, page_size()).is_ok() {
    ///     // SAFETY: still committed.
    ///     assert_eq!(unsafe { r.as_ptr().read() }, 0);
    /// }
    /// assert!(r.is_committed(0, page_size())?);
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn discard(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.discard_inner(offset, len) }
    }

    /// [`discard`](Self::discard) through a shared reference.
    ///
    /// # Errors
    /// As [`discard`](Self::discard); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// As [`free_unchecked`](Self::free_unchecked).
    pub unsafe fn discard_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        self.not_held_by_vector(Operation::Discard)?;
        // SAFETY: the caller's promise.
        unsafe { self.discard_inner(offset, len) }
    }

    /// The body of [`discard`](Self::discard) and
    /// [`discard_unchecked`](Self::discard_unchecked).
    ///
    /// # Safety
    /// As [`free_inner`](Self::free_inner).
    unsafe fn discard_inner(&self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: the caller's promise.
        unsafe { self.advise_contents(offset, len, Operation::Discard, |_| SysAdvice::DontNeed) }
    }

    /// As [`discard`](Self::discard), and frees the backing of pages of a shared source as
    /// well (`MADV_REMOVE`: a hole is punched in the memfd or file, so it reads as zero); the
    /// reservation's own and private pages are discarded. They stay committed.
    ///
    /// # Errors
    /// As [`discard`](Self::discard); [`Error::ReadOnlySource`] for a page of a file source
    /// mapped from a descriptor not open for writing, or of a file sealed against writes
    /// (nothing is dropped then: the system would drop the pages before it and then refuse);
    /// [`Error::Os`] with `EOPNOTSUPP` where the file system cannot punch holes (ramfs, for
    /// example), or `EPERM` for a file sealed, made append-only or immutable after it was
    /// mapped. The pages of shared sources are purged first, in address order, and the private
    /// ones only after all of them, so such a refusal drops no private page and nothing of
    /// the refused source. Only where the range holds pages of several shared sources may
    /// those before the refused one (in address order) have been punched already: the system
    /// cannot tell which file refuses until it tries.
    pub fn purge(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.purge_inner(offset, len) }
    }

    /// [`purge`](Self::purge) through a shared reference.
    ///
    /// # Errors
    /// As [`purge`](Self::purge); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// As [`free_unchecked`](Self::free_unchecked).
    pub unsafe fn purge_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        self.not_held_by_vector(Operation::Purge)?;
        // SAFETY: the caller's promise.
        unsafe { self.purge_inner(offset, len) }
    }

    /// The body of [`purge`](Self::purge) and [`purge_unchecked`](Self::purge_unchecked).
    ///
    /// # Safety
    /// As [`free_inner`](Self::free_inner).
    unsafe fn purge_inner(&self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: the caller's promise.
        unsafe {
            self.advise_contents(offset, len, Operation::Purge, |shared| {
                if shared {
                    SysAdvice::Remove
                } else {
                    SysAdvice::DontNeed
                }
            })
        }
    }

    /// Gives content-changing advice over committed `offset..offset + len`, run by run of
    /// pages that are or are not of a shared source (`pick` chooses the advice for each).
    ///
    /// # Safety
    /// Nothing refers to the range's contents.
    unsafe fn advise_contents(
        &self,
        offset: usize,
        len: usize,
        operation: Operation,
        pick: impl Fn(bool) -> SysAdvice,
    ) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // No page may be locked, or decommitted, between the check and the advice.
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.all_committed(pages)?;
        // Linux refuses to drop locked pages, but only after dropping those before them in the
        // range: refuse up front so that a refusal changes nothing.
        if let Some(page) = self.locked.first_set(pages.first, pages.count) {
            return Err(Error::Locked {
                offset: page * self.page,
            });
        }
        // `MADV_FREE` is refused for shared pages, after the private ones before them were
        // given it: refuse up front too.
        if operation == Operation::Free
            && let Some(page) = self.shared.first_set(pages.first, pages.count)
        {
            return Err(Error::Shared {
                offset: page * self.page,
            });
        }
        // `MADV_FREE` is refused for explicit huge pages, after the pages before them were
        // given it: refuse up front too.
        if operation == Operation::Free
            && let Some(page) = self.first_hugetlb(pages)
        {
            return Err(Error::HugeTlb {
                offset: page * self.page,
                operation,
            });
        }
        // `MADV_REMOVE` is refused for a file the system will not punch holes in, after the
        // pages before it were dropped: refuse up front too.
        if operation == Operation::Purge
            && let Some(page) = self.no_hole_punch.first_set(pages.first, pages.count)
        {
            return Err(Error::ReadOnlySource {
                offset: page * self.page,
            });
        }
        // Runs of a shared source first: `MADV_REMOVE` is what the system may refuse (a file
        // system that cannot punch holes, `EOPNOTSUPP`), and a refusal then comes before any
        // private page was dropped. (For the other advice the order does not matter.)
        for shared in [true, false] {
            self.for_each_run(&self.shared, shared, pages, |run: Pages| {
                // SAFETY: the run is inside the reservation and committed; the caller vouches
                // that nothing refers to its contents.
                unsafe {
                    sys::advise(
                        self.at(run.first * self.page),
                        run.count * self.page,
                        pick(shared),
                    )
                }
            })
            .map_err(|e| e.during(operation))?;
        }
        Ok(())
    }

    /// Makes committed readable pages resident for reading, for read-only ranges that
    /// [`prefault`](Self::prefault) (which populates for writing) refuses: Linux
    /// `MADV_POPULATE_READ` (5.14 and later), elsewhere (or on older kernels) by reading each
    /// page's first byte with a relaxed one-byte atomic load (one the compiler must make: its
    /// value goes to a volatile write), which races no store another
    /// thread makes meanwhile through an [`AtomicU8`] (any other write of that byte on another
    /// thread during the call, a plain one or an atomic of another size, does race it). A
    /// page the system cannot supply to that read gets no error, as for
    /// [`prefault`](Self::prefault)'s touches. Contents are kept; private pages never written
    /// map the shared zero page.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NotCommitted`] or
    /// [`Error::Guarded`] for a page that is not committed; [`Error::NotReadable`] for a page
    /// protected with [`Protection::None`]; [`Error::Os`] where the kernel could not populate.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{Protection, Reservation, page_size};
    ///
    /// let mut r = Reservation::new(4 * page_size())?;
    /// r.commit(0, 4 * page_size())?;
    /// r.protect(0, 4 * page_size(), Protection::Read)?;
    /// assert!(r.prefault(0, 4 * page_size()).is_err());
    /// r.prefault_read(0, 4 * page_size())?;
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn prefault_read(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other call on the reservation runs meanwhile. The reservation
        // hands out no references into its memory, and the reading fallback's loads are
        // one-byte atomics: other threads' stores through `as_ptr` to those bytes are theirs to
        // make one-byte atomics while this runs, as the docs above say.
        unsafe { self.prefault_read_unchecked(offset, len) }
    }

    /// [`prefault_read`](Self::prefault_read) through a shared reference.
    ///
    /// Other calls on the reservation may run on other threads meanwhile: the check that the
    /// range is committed and readable and the population run under the call lock, so a
    /// decommit, protect, guard or map of the range (through the `_unchecked` forms) waits
    /// for the prefault, or the prefault for it, and the answer is that of one of the two
    /// orders (a typed error for a page such a call took before the prefault, never a fault
    /// or the system's refusal). Those calls wait while the kernel populates the range;
    /// prefaults share the lock and do not wait for each other, but for one asked for while
    /// such a call waits for the lock, which goes after that call.
    ///
    /// # Errors
    /// As [`prefault_read`](Self::prefault_read).
    ///
    /// # Safety
    /// Where the kernel cannot populate (Linux before 5.14, other systems, Miri), the first
    /// byte of each page is read with a relaxed one-byte atomic load: during the call other
    /// threads may write the first byte of a page of the range only through an `AtomicU8` (as
    /// [`prefault_unchecked`](Self::prefault_unchecked) of the range does), and no `&mut`
    /// reference to such a byte may be live. The rest of each page is not accessed.
    pub unsafe fn prefault_read_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check(offset, len)?;
        // A decommit, protect, guard or map taking pages between the check and the
        // population would make the reading fallback fault: they hold the lock from their
        // checks to their records, so the check below holds until it is let go.
        let _serial = self.lock_calls.share();
        self.none_lost(pages)?;
        self.all_committed(pages)?;
        if let Some(page) = self.inaccessible.first_set(pages.first, pages.count) {
            return Err(Error::NotReadable {
                offset: page * self.page,
            });
        }
        // SAFETY: the range is inside the reservation, committed and readable.
        let populated = unsafe { sys::populate_read(self.at(offset), len) }
            .map_err(|e| e.during(Operation::PrefaultRead))?;
        if populated == Populated::NeedsTouch {
            // Each value read goes to a volatile write: an effect the compiler must keep, with
            // the value only the load gives, so the load is made (a load whose value nothing
            // uses, atomic or not, is one the language lets the compiler leave out).
            let mut sink = 0u8;
            for page in 0..pages.count {
                // SAFETY: the byte is in a committed readable page that stays so while the call
                // lock is held; any address is aligned for `AtomicU8`; the caller promises no
                // live `&mut` reference and no non-atomic write on another thread meanwhile.
                // The page may be read-only: a relaxed load of one byte is an atomic access
                // that works on read-only memory on every architecture the crate builds for
                // (the `core::sync::atomic` rules), and it races no atomic store.
                let byte = unsafe { AtomicU8::from_ptr(self.at(offset + page * self.page)) };
                // SAFETY: `sink` is a live local `u8`, written by nothing else.
                unsafe { core::ptr::write_volatile(&raw mut sink, byte.load(Ordering::Relaxed)) };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use crate::CommitMode;
    use crate::page_size;

    fn page() -> usize {
        page_size()
    }

    // Mapping a source is a Unix operation; Windows refuses it (below).
    #[cfg(unix)]
    #[test]
    fn map_then_write_discard_and_decommit_keep_bitmaps_true() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = Reservation::builder()
                .mode(mode)
                .reserve(8 * page())
                .unwrap();
            r.map(
                2 * page(),
                2 * page(),
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                None,
            )
            .unwrap();
            assert!(r.is_committed(2 * page(), 2 * page()).unwrap());
            assert_eq!(r.committed_bytes(), 2 * page());
            let p = r.as_ptr().wrapping_add(2 * page());
            // SAFETY: mapped read-write; nothing else uses it.
            unsafe { p.write(5) };
            // SAFETY: as above.
            assert_eq!(unsafe { p.read() }, 5);
            r.prefault_read(2 * page(), 2 * page()).unwrap();
            if r.discard(2 * page(), 2 * page()).is_ok() {
                // SAFETY: still mapped read-write.
                assert_eq!(unsafe { p.read() }, 0);
            }
            r.decommit(0, 8 * page()).unwrap();
            assert_eq!(r.committed_bytes(), 0);
            r.commit(2 * page(), page()).unwrap();
            // SAFETY: committed read-write; fresh pages read zero.
            assert_eq!(unsafe { p.read() }, 0);
        }
    }

    #[cfg(unix)]
    #[test]
    fn map_read_only_blocks_prefault_and_allows_read_prefault() {
        let mut r = Reservation::new(4 * page()).unwrap();
        r.map(
            0,
            4 * page(),
            MapSource::AnonymousShared,
            Protection::Read,
            None,
        )
        .unwrap();
        assert_eq!(
            r.prefault(0, page()).unwrap_err(),
            Error::NotWritable { offset: 0 }
        );
        r.prefault_read(0, 4 * page()).unwrap();
        r.map(
            0,
            page(),
            MapSource::AnonymousPrivate,
            Protection::None,
            None,
        )
        .unwrap();
        assert_eq!(
            r.prefault_read(0, page()).unwrap_err(),
            Error::NotReadable { offset: 0 }
        );
        assert_eq!(r.committed_bytes(), 4 * page());
    }

    #[cfg(unix)]
    #[test]
    fn free_over_a_shared_page_is_refused_and_frees_nothing() {
        let mut r = Reservation::new(4 * page()).unwrap();
        r.commit(0, 2 * page()).unwrap();
        // SAFETY: committed read-write; nothing else uses it.
        unsafe { r.as_ptr().write(3) };
        r.map(
            2 * page(),
            page(),
            MapSource::AnonymousShared,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        assert_eq!(
            r.free(0, 3 * page()).unwrap_err(),
            Error::Shared { offset: 2 * page() }
        );
        // SAFETY: still committed; nothing was freed.
        assert_eq!(unsafe { r.as_ptr().read() }, 3);
        r.free(0, 2 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 3 * page());
    }

    #[cfg(all(target_os = "linux", feature = "std", not(miri)))]
    #[test]
    fn purge_over_a_file_that_refuses_hole_punching_is_refused_and_drops_nothing() {
        use std::os::fd::{AsFd, FromRawFd};

        for how in ["read-only descriptor", "write-sealed memfd"] {
            // SAFETY: a fresh memfd, owned below.
            let fd = unsafe { libc::memfd_create(c"purge".as_ptr(), libc::MFD_ALLOW_SEALING) };
            assert!(fd >= 0);
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            let memfd = unsafe { std::fs::File::from_raw_fd(fd) };
            memfd.set_len(page() as u64).unwrap();
            let file = if how == "read-only descriptor" {
                std::fs::File::open(std::format!("/proc/self/fd/{fd}")).unwrap()
            } else {
                // SAFETY: sealing a memfd this test owns.
                let sealed = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
                assert_eq!(sealed, 0);
                memfd.try_clone().unwrap()
            };
            let mut r = Reservation::new(4 * page()).unwrap();
            r.commit(0, 2 * page()).unwrap();
            // SAFETY: committed read-write; nothing else uses it.
            unsafe { r.as_ptr().write(3) };
            let source = MapSource::file(file.as_fd(), 0);
            r.map(2 * page(), page(), source, Protection::Read, None)
                .unwrap();
            assert_eq!(
                r.purge(0, 3 * page()).unwrap_err(),
                Error::ReadOnlySource { offset: 2 * page() },
                "{how}"
            );
            // SAFETY: still committed; nothing was dropped.
            assert_eq!(unsafe { r.as_ptr().read() }, 3, "{how}");
            // Discarding does not punch holes, and a fresh mapping of the pages forgets it.
            r.discard(0, 3 * page()).unwrap();
            r.decommit(2 * page(), page()).unwrap();
            r.commit(2 * page(), page()).unwrap();
            r.purge(0, 3 * page()).unwrap();
        }
    }

    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn purge_over_a_read_only_mapping_of_a_writable_source_punches_it() {
        let mut r = Reservation::new(2 * page()).unwrap();
        r.map(
            0,
            page(),
            MapSource::AnonymousShared,
            Protection::ReadWrite,
            None,
        )
        .unwrap();
        // SAFETY: mapped read-write; nothing else uses it.
        unsafe { r.as_ptr().write(3) };
        r.protect(0, page(), Protection::Read).unwrap();
        r.purge(0, page()).unwrap();
        // SAFETY: mapped readable; the purge punched the backing.
        assert_eq!(unsafe { r.as_ptr().read() }, 0);
    }

    #[cfg(windows)]
    #[test]
    fn map_on_windows_is_unsupported_and_changes_nothing() {
        let mut r = Reservation::new(4 * page()).unwrap();
        let err = r
            .map(
                0,
                page(),
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                None,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert_eq!(r.committed_bytes(), 0);
    }

    /// A map of explicit huge pages that the platform refuses leaves the reservation without
    /// the record of explicit huge pages (which every later call would check its range
    /// against): where the platform cannot map them (Windows; anonymous huge pages outside
    /// Linux) the answer is `Unsupported` before anything is made or touched; Linux refuses a
    /// size it has no free huge pages of (`ENOMEM`) or no pool of (`EINVAL`) only when asked,
    /// and the record is made only once it granted them: a refused map makes no bitmap at all.
    /// (A host with free huge pages maps them: then the record is made and says so.)
    #[cfg(not(miri))]
    #[test]
    fn a_refused_map_of_huge_pages_leaves_no_record() {
        use crate::reservation::tests::REFILLS;

        let p = page();
        for size in [HugeTlbSize::Size2M, HugeTlbSize::Size1G] {
            let huge = size.bytes();
            for mode in [crate::CommitMode::Protected, crate::CommitMode::Sparse] {
                for source in [MapSource::AnonymousPrivate, MapSource::AnonymousShared] {
                    let case = std::format!("{size:?} {mode:?} {source:?}");
                    let mut r = Reservation::builder()
                        .mode(mode)
                        .alignment(huge)
                        .reserve(huge)
                        .unwrap();
                    r.commit(0, 2 * p).unwrap();
                    r.protect(p, p, Protection::Read).unwrap();
                    // SAFETY: the first page is committed read-write and nothing else uses it.
                    unsafe { r.as_ptr().write(7) };
                    let made = crate::bitmap::made();
                    let refills = REFILLS.with(core::cell::Cell::get);
                    let answer = r.map(0, huge, source, Protection::ReadWrite, Some(size));
                    #[cfg(target_os = "linux")]
                    {
                        let _ = refills;
                        match answer {
                            Ok(()) => {
                                assert!(r.hugetlb.get().is_some(), "{case}");
                                assert_eq!(
                                    r.commit(p, p),
                                    Err(Error::Misaligned {
                                        what: "offset",
                                        value: p,
                                        page_size: huge
                                    }),
                                    "{case}"
                                );
                                r.decommit(0, huge).unwrap();
                                continue;
                            }
                            Err(Error::Os {
                                operation: Operation::Map,
                                source: e,
                            }) => assert!(
                                [libc::ENOMEM, libc::EINVAL].contains(&e.raw()),
                                "{case}: {e:?}"
                            ),
                            other => panic!("{case}: {other:?}"),
                        }
                        assert!(r.hugetlb.get().is_none(), "{case}");
                        assert_eq!(crate::bitmap::made(), made, "{case}");
                    }
                    #[cfg(not(target_os = "linux"))]
                    {
                        assert_eq!(
                            answer,
                            Err(Error::Unsupported {
                                operation: Operation::Map
                            }),
                            "{case}"
                        );
                        assert!(r.hugetlb.get().is_none(), "{case}");
                        // Nothing was made, mapped or filled; pages, records and contents
                        // are as they were.
                        assert_eq!(crate::bitmap::made(), made, "{case}");
                        assert_eq!(REFILLS.with(core::cell::Cell::get), refills, "{case}");
                        assert_eq!(r.committed_bytes(), 2 * p, "{case}");
                        assert!(r.writable.get(0) && !r.writable.get(1), "{case}");
                        assert_eq!(r.mapped.first_set(0, huge / p), None, "{case}");
                        // SAFETY: still committed, and written above.
                        assert_eq!(unsafe { r.as_ptr().read() }, 7, "{case}");
                    }
                    // No record: nothing is refused as cutting a huge page, and no later call
                    // makes one.
                    r.commit(p, p).unwrap();
                    r.decommit(0, huge).unwrap();
                    assert_eq!(r.committed_bytes(), 0, "{case}");
                    assert!(r.hugetlb.get().is_none(), "{case}");
                }
            }
        }
    }

    #[test]
    fn huge_tlb_sizes_are_powers_of_two() {
        assert_eq!(HugeTlbSize::Size2M.bytes(), 2 << 20);
        assert_eq!(HugeTlbSize::Size1G.bytes(), 1 << 30);
    }

    /// A node set that does not fit the policy is the caller's mistake, told by a typed error
    /// before the system is asked, on every system, whatever the range's pages are.
    #[test]
    fn bind_numa_node_set_that_does_not_fit_the_policy_is_a_typed_error() {
        let r = Reservation::new(2 * page()).unwrap();
        r.commit(0, page()).unwrap();
        let cases: [(NumaPolicy, &[u32]); 4] = [
            (NumaPolicy::Default, &[0]),
            (NumaPolicy::Default, &[0, 1, 1023]),
            (NumaPolicy::Bind, &[]),
            (NumaPolicy::Interleave, &[]),
        ];
        for (policy, nodes) in cases {
            assert_eq!(
                r.bind_numa(0, 2 * page(), policy, nodes),
                Err(Error::NumaPolicyNodes {
                    policy,
                    nodes: nodes.len()
                }),
                "{policy:?} {nodes:?}"
            );
        }
        // The range is checked first, then each node number.
        assert_eq!(
            r.bind_numa(page(), 2 * page(), NumaPolicy::Default, &[0]),
            Err(Error::OutOfBounds {
                offset: page(),
                len: 2 * page(),
                size: 2 * page()
            })
        );
        assert_eq!(
            r.bind_numa(0, page(), NumaPolicy::Default, &[NUMA_NODES]),
            Err(Error::NumaNode {
                node: NUMA_NODES,
                limit: NUMA_NODES
            })
        );
        assert!(r.is_committed(0, page()).unwrap());
        assert!(!r.is_committed(page(), page()).unwrap());
        // Node sets that fit are the system's to judge (it may lack NUMA support, or node 0).
        let fitting: [(NumaPolicy, &[u32]); 5] = [
            (NumaPolicy::Default, &[]),
            (NumaPolicy::Preferred, &[]),
            (NumaPolicy::Preferred, &[0]),
            (NumaPolicy::Bind, &[0]),
            (NumaPolicy::Interleave, &[0, 1]),
        ];
        for (policy, nodes) in fitting {
            let result = r.bind_numa(0, 2 * page(), policy, nodes);
            assert!(
                !matches!(result, Err(Error::NumaPolicyNodes { .. })),
                "{policy:?} {nodes:?}: {result:?}"
            );
        }
    }

    #[test]
    fn bind_numa_node_out_of_range_is_error() {
        let r = Reservation::new(page()).unwrap();
        assert_eq!(
            r.bind_numa(0, page(), NumaPolicy::Interleave, &[0, NUMA_NODES])
                .unwrap_err(),
            Error::NumaNode {
                node: NUMA_NODES,
                limit: NUMA_NODES
            }
        );
        assert_eq!(
            r.bind_numa(0, 0, NumaPolicy::Default, &[]).unwrap_err(),
            Error::ZeroLength
        );
    }
}
