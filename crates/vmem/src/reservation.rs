//! [`Reservation`]: a range of address space, and the page operations on parts of it.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use serial::{Serial, SerialGuard};

use crate::bitmap::PageBitmap;
use crate::error::{Error, Operation, Result};
use crate::page::page_size;
use crate::sys::{self, Populated};

mod mapping;
mod serial;

#[cfg(unix)]
pub use mapping::FileSource;
pub use mapping::{Advice, HugeTlbSize, MapSource, NUMA_NODES, NumaPolicy};

/// How a reservation commits pages.
///
/// The choice is about the operating system's limit on the number of separate mappings a
/// process may have (`vm.max_map_count`, 65,530 by default on Linux): every protection change
/// in the middle of a mapping splits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CommitMode {
    /// Uncommitted pages are inaccessible (any access faults) and cost nothing; committing
    /// makes pages readable and writable and charges them against the system's commit limit;
    /// decommitting returns both the memory and the charge. Each committed run of pages that
    /// is not adjacent to another is a separate mapping, so a reservation committed in
    /// scattered single pages can hit the mapping limit (about 32,000 runs on Linux).
    #[default]
    Protected,
    /// The whole reservation is one read-write mapping the kernel does not charge
    /// (`MAP_NORESERVE` on Linux), and which pages are committed is kept in a bitmap. Commit
    /// and decommit never split the mapping, so any pattern of commits works; the price is that
    /// uncommitted pages are not protected by the hardware on Unix (they read as zero rather
    /// than fault), and memory is not charged at commit time. Guard pages still fault (they use
    /// Linux guard markers, which do not split mappings, where the kernel has them). On Windows
    /// both modes commit for real, since it has no such limit.
    Sparse,
}

/// Access rights of committed pages, and of a guest memory region's host mapping in
/// `memvisor-space`. Only combinations that every supported host can map exist: there is no
/// write or execute right without read. Shown as `rwx` flags (`rw-`, `r-x`, `---`).
///
/// ```
/// use memvisor_vmem::Protection;
///
/// assert_eq!(Protection::default(), Protection::ReadWrite);
/// assert!(Protection::ReadExecute.executable() && !Protection::ReadExecute.writable());
/// assert_eq!(Protection::ReadExecute.to_string(), "r-x");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Protection {
    /// No access: any access faults.
    None,
    /// Read only: writes fault.
    Read,
    /// Read and write (the state after commit, and the default).
    #[default]
    ReadWrite,
    /// Read and execute: writes fault.
    ReadExecute,
    /// Read, write and execute.
    ReadWriteExecute,
}

impl Protection {
    /// Whether the pages can be written.
    #[must_use]
    pub fn writable(self) -> bool {
        matches!(self, Protection::ReadWrite | Protection::ReadWriteExecute)
    }

    /// Whether the pages can be read.
    #[must_use]
    pub fn readable(self) -> bool {
        self != Protection::None
    }

    /// Whether code on the pages can be run.
    #[must_use]
    pub fn executable(self) -> bool {
        matches!(self, Protection::ReadExecute | Protection::ReadWriteExecute)
    }
}

impl fmt::Display for Protection {
    /// The rights as `rwx` flags, `-` for each one missing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.readable() { 'r' } else { '-' };
        let w = if self.writable() { 'w' } else { '-' };
        let x = if self.executable() { 'x' } else { '-' };
        write!(f, "{r}{w}{x}")
    }
}

/// Transparent-huge-page advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HugePageAdvice {
    /// Back the range with huge pages where possible (Linux `MADV_HUGEPAGE`).
    Huge,
    /// Never back the range with huge pages (Linux `MADV_NOHUGEPAGE`).
    NoHuge,
}

/// The transparent-huge-page size (2 MiB on x86-64 and on aarch64 with 4 KiB pages): prefault
/// parts are aligned to it, and vectors commit in steps of it; a bigger system page size wins
/// over it.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Options for reserving address space; made by [`Reservation::builder`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReservationBuilder {
    alignment: usize,
    mode: CommitMode,
}

impl ReservationBuilder {
    /// The start address will be a multiple of `alignment` (a power of two), for example
    /// 2 MiB so that huge pages can back the reservation. Alignments below the page size mean
    /// the page size.
    #[must_use]
    pub fn alignment(mut self, alignment: usize) -> Self {
        self.alignment = alignment;
        self
    }

    /// How pages are committed (default [`CommitMode::Protected`]).
    #[must_use]
    pub fn mode(mut self, mode: CommitMode) -> Self {
        self.mode = mode;
        self
    }

    /// Reserves `len` bytes, rounded up to a whole number of pages. Nothing is committed.
    ///
    /// A reservation spans at most `isize::MAX` bytes, the most a slice or pointer range may
    /// cover (a 32-bit process could otherwise be given more): a longer one is refused before
    /// the system is asked, so every pointer range over a reservation is valid for
    /// `ptr::add`.
    ///
    /// # Errors
    /// [`Error::ZeroLength`] for `len == 0`, [`Error::InvalidAlignment`] for an alignment that
    /// is not a power of two, [`Error::TooLarge`] for a `len` that rounded up to whole pages
    /// exceeds `isize::MAX` (`usize::MAX` included; checked before the alignment), and
    /// [`Error::Os`] when the operating system refuses (for example, no address space left,
    /// or an alignment whose over-reservation does not fit in the address space: `ENOMEM`).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{CommitMode, Reservation};
    ///
    /// let r = Reservation::builder().alignment(2 << 20).mode(CommitMode::Sparse).reserve(8 << 20)?;
    /// assert_eq!(r.as_ptr() as usize % (2 << 20), 0);
    /// assert_eq!(r.mode(), CommitMode::Sparse);
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn reserve(self, len: usize) -> Result<Reservation> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        let page = page_size();
        let limit = max_len(page);
        if len > limit {
            return Err(Error::TooLarge { len, limit });
        }
        let alignment = if self.alignment == 0 {
            1
        } else {
            self.alignment
        };
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment { align: alignment });
        }
        let align = alignment.max(page);
        // `len <= limit`, a page multiple below `usize::MAX`, so rounding up cannot overflow.
        let len = len.next_multiple_of(page);
        let ptr = sys::reserve(len, align, self.mode).map_err(|e| e.during(Operation::Reserve))?;
        let pages = len / page;
        // SAFETY: the bitmaps become fields of the reservation and are never moved out of it;
        // `committed`, which owns their mapping, is dropped with the others, and only then.
        let bitmaps = unsafe { PageBitmap::new_many::<14>(pages) };
        let [
            committed,
            writable,
            guarded,
            locked,
            huge,
            no_huge,
            inaccessible,
            executable,
            mapped,
            shared,
            no_hole_punch,
            dont_fork,
            dont_dump,
            lost,
        ] = match bitmaps {
            Ok(bitmaps) => bitmaps,
            Err(e) => {
                // SAFETY: the reservation was just made with this length and alignment and
                // nothing refers to it.
                unsafe { sys::release(ptr, len, align) };
                return Err(e.during(Operation::Reserve));
            }
        };
        Ok(Reservation {
            ptr,
            len,
            align,
            page,
            mode: self.mode,
            committed,
            committed_pages: AtomicUsize::new(0),
            writable,
            guarded,
            inaccessible,
            executable,
            mapped,
            shared,
            no_hole_punch,
            locked,
            huge,
            no_huge,
            dont_fork,
            dont_dump,
            lost,
            any_lost: AtomicBool::new(false),
            held_by_vector: false,
            hugetlb: HugeTlbPlanes::new(),
            lock_calls: Serial::default(),
        })
    }
}

/// Bitmaps spelling the size of explicit huge pages (see `Reservation::hugetlb`): enough bits
/// for the binary logarithm of any power of two that fits in `usize`.
const HUGETLB_PLANES: usize = usize::BITS.ilog2() as usize;

/// The bitmaps recording explicit huge pages (see `Reservation::hugetlb`), made by the first
/// `map` of explicit huge pages that the system grants, so that a reservation that never maps
/// any makes no mapping for them. That `map` makes them before it asks the system (a refusal
/// to make them changes nothing) and publishes them only once the system mapped the pages: a
/// refusal of the system drops them before any reader saw them. They are published once, under
/// the call lock, with `Release` when all are built; readers (the range checks run before the
/// call lock) read the flag with `Acquire` and see either no planes or all of them. They live
/// as long as the reservation.
struct HugeTlbPlanes {
    /// Whether `planes` holds built bitmaps: stored `true` once, with `Release`, after they
    /// were written.
    built: AtomicBool,
    /// Uninitialized until `built`; written only once, under the call lock, before `built`.
    planes: UnsafeCell<MaybeUninit<[PageBitmap; HUGETLB_PLANES]>>,
}

/// The planes a `map` of explicit huge pages records them in (see `Reservation::hugetlb_record`).
#[allow(
    clippy::large_enum_variant,
    reason = "a local of one map call, never stored; boxing would put the heap in its way"
)]
enum HugeTlbRecord<'a> {
    /// The reservation's, published by an earlier map.
    Published(&'a [PageBitmap; HUGETLB_PLANES]),
    /// Made for this map, the first of explicit huge pages, once the system mapped the pages,
    /// and published by its record.
    Unpublished([PageBitmap; HUGETLB_PLANES]),
}

impl HugeTlbPlanes {
    const fn new() -> Self {
        Self {
            built: AtomicBool::new(false),
            planes: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The planes, if they were published.
    fn get(&self) -> Option<&[PageBitmap; HUGETLB_PLANES]> {
        if self.built.load(Ordering::Acquire) {
            // SAFETY: `built` is stored `true` (with `Release`) only after `planes` was
            // written, which this `Acquire` load orders before the read; once built, the
            // planes are never written as a whole again (their bits are atomics) and are
            // dropped only with `&mut self`.
            Some(unsafe { (*self.planes.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// Fresh planes for a reservation of `pages` pages, not published. They share one
    /// mapping, so a refusal of the system (or, in unit tests, an injected one) leaves none
    /// made.
    fn make(pages: usize) -> Result<[PageBitmap; HUGETLB_PLANES], sys::SysError> {
        #[cfg(test)]
        if tests::hugetlb_planes_refused() {
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the planes are kept, moved and dropped together.
        unsafe { PageBitmap::new_many(pages) }
    }

    /// Publishes `planes` (from [`make`](Self::make)) as the reservation's and returns them.
    /// The caller holds the reservation's call lock (`_serial`), so no other call publishes
    /// planes meanwhile; should some be published already, they are kept and returned, and
    /// `planes` dropped.
    fn publish(
        &self,
        planes: [PageBitmap; HUGETLB_PLANES],
        _serial: &SerialGuard<'_>,
    ) -> &[PageBitmap; HUGETLB_PLANES] {
        if let Some(published) = self.get() {
            return published;
        }
        // SAFETY: no reader reads `planes` before `built`, and no other writer writes it
        // (the call lock); nothing was written there before.
        unsafe { (*self.planes.get()).write(planes) };
        self.built.store(true, Ordering::Release);
        // SAFETY: written above, and published.
        unsafe { (*self.planes.get()).assume_init_ref() }
    }
}

// The planes are written whole, before `built` publishes them, and never replaced: a panic
// (on this thread or another) cannot leave a reader a half-made or half-changed set, and
// their bits are atomics like every other bitmap's. So a reservation stays usable after an
// unwind that crossed a `&` to it, as it was before the planes were made lazily.
impl core::panic::RefUnwindSafe for HugeTlbPlanes {}

impl Drop for HugeTlbPlanes {
    fn drop(&mut self) {
        if *self.built.get_mut() {
            // SAFETY: built, so initialized; `&mut self`, so no reader is left, and they are
            // dropped once.
            unsafe { self.planes.get_mut().assume_init_drop() };
        }
    }
}

/// The most halvings `Reservation::fill_hole` makes of a range whose fill the system refuses,
/// bounding its system calls (two per halving) whatever the holes look like.
const HOLE_SPLITS: usize = 1024;

/// The most threads a parallel prefault uses, whatever it is asked for: each costs a stack and
/// a system call, and the number asked for is the caller's input.
#[cfg(feature = "std")]
pub(crate) const MAX_PREFAULT_THREADS: usize = 256;

/// The size of each part of a parallel prefault of `len` bytes (the last may be shorter):
/// at most `threads` parts (and at most [`MAX_PREFAULT_THREADS`]), each a multiple of 2 MiB for
/// ranges of at least two huge pages (of the page size otherwise) and at least `min_part` bytes. A
/// result of `len` or more means one part.
#[cfg(feature = "std")]
fn part_size(len: usize, threads: usize, min_part: usize, page: usize) -> usize {
    let unit = if len >= 2 * HUGE_PAGE {
        HUGE_PAGE.max(page)
    } else {
        page
    };
    let min_part = min_part
        .checked_next_multiple_of(unit)
        .unwrap_or(usize::MAX);
    len.div_ceil(threads.min(MAX_PREFAULT_THREADS))
        .checked_next_multiple_of(unit)
        .unwrap_or(usize::MAX)
        .max(min_part)
}

/// Writes `byte` with its own value, atomically: prefault's touch of a page that the kernel
/// cannot populate. A store another thread or process makes meanwhile is never written over
/// with the byte's old value, as a read and a separate write back could. A compare-exchange,
/// since on x86-64 the compiler turns an atomic `fetch_or(0)` or `fetch_add(0)` whose result is
/// unused into a compiler fence, which touches no page. It expects zero first, without
/// reading the byte: a page never accessed reads as zero, and a compare-exchange is an access
/// for writing, so such a page takes one fault (reading first took one for reading, where Linux
/// maps the shared zero page, and another for writing); a byte that is not zero answers its
/// value, written back by the next try.
fn touch_for_writing(byte: &AtomicU8) {
    let mut seen = 0;
    while let Err(now) =
        byte.compare_exchange_weak(seen, seen, Ordering::Relaxed, Ordering::Relaxed)
    {
        seen = now;
    }
}

/// How a parallel prefault of `len` bytes at address `addr` is split: the length of the first
/// part and of each later part (the last may be shorter), from [`part_size`]. A first part of
/// `len` or more means one part.
///
/// The parts meet at addresses that are multiples of the part unit (2 MiB for ranges of at
/// least two huge pages), whatever `addr` is: the first part runs to the first such address at
/// least `part` bytes in, and every later part is `part` bytes, a multiple of the unit. So no
/// huge page is populated by two threads. The first part is shorter than `part` plus one
/// unit, so there are never more parts than `len.div_ceil(part)`.
#[cfg(feature = "std")]
fn prefault_split(
    addr: usize,
    len: usize,
    threads: usize,
    min_part: usize,
    page: usize,
) -> (usize, usize) {
    let part = part_size(len, threads, min_part, page);
    if part >= len {
        return (len, part);
    }
    let unit = if len >= 2 * HUGE_PAGE {
        HUGE_PAGE.max(page)
    } else {
        page
    };
    // `addr + part` is inside the range (`part < len`), and the range is mapped memory, so
    // neither this sum nor the rounding (to at most one unit past it) reaches `usize::MAX`;
    // the checked forms keep a wrapped value out all the same.
    let first = addr
        .checked_add(part)
        .and_then(|end| end.checked_next_multiple_of(unit))
        .map_or(len, |end| end - addr);
    (first, part)
}

/// A worker's result: a panic is an error naming its part, not a success.
#[cfg(feature = "std")]
fn worker_result(joined: std::thread::Result<Result<()>>, offset: usize, len: usize) -> Result<()> {
    joined.unwrap_or(Err(Error::WorkerPanicked { offset, len }))
}

/// The longest reservation: `isize::MAX` bytes rounded down to whole pages of `page` bytes (a
/// power of two), so that no slice or pointer range over a reservation breaks the limit of
/// `ptr::add` and `slice::from_raw_parts`.
fn max_len(page: usize) -> usize {
    isize::MAX as usize & !(page - 1)
}

/// `log2(huge page size / page size)` of the explicit huge page holding `page` as `planes`
/// record it, or 0 if the page is not in one: one bit read per plane.
fn hugetlb_shift(planes: &[PageBitmap; HUGETLB_PLANES], page: usize) -> u32 {
    planes
        .iter()
        .enumerate()
        .filter(|(_, plane)| plane.get(page))
        .map(|(bit, _)| 1 << bit)
        .sum()
}

/// A range of the process's address space, reserved so that nothing else is placed there, of
/// which page-aligned parts are committed, decommitted, protected and so on. The whole range
/// is unreserved when the reservation is dropped.
///
/// Which pages are committed, writable and guard pages is tracked in bitmaps of one bit per
/// page, mapped from the OS, so they cost memory only where used.
///
/// # Reading and writing
/// The memory is reached through [`as_ptr`](Self::as_ptr). Committed pages read as zero until
/// written. Operations that change what memory reads back or whether it can be accessed
/// ([`decommit`](Self::decommit), [`protect`](Self::protect), [`guard`](Self::guard),
/// [`prefault`](Self::prefault)) take `&mut self`, so no other thread is using the reservation
/// through this handle; their `_unchecked` forms take `&self` and put the same promise on the
/// caller. Commit and the hints take `&self`: they never change what existing memory reads.
///
/// # `fork`
/// A child process gets a copy of the reservation and its bookkeeping (ranges mapped from a
/// shared source stay shared with the parent). Pages advised
/// [`Advice::DontFork`](crate::Advice::DontFork) are not in the child at all: its copy's
/// bookkeeping still counts them, but its address space has a gap there, where the child's own
/// mappings may be placed; the copy's calls on those pages and its drop (which unmaps the whole
/// reservation) would then act on such mappings, so a child of a process with `DontFork` pages
/// should leave them alone and end with `exec` or `_exit`, without dropping the copy. Reads
/// through the copy, and of a vector's elements, take no lock. The calls that change pages take
/// turns through a lock of the reservation's: where another thread of the parent was inside such a
/// call when it forked, the child's copy of the lock stays held, and the calls on that
/// reservation that take the lock (commit, decommit, protect, lock, advice, map, a vector's
/// push that commits) may wait for ever in the child, as on any lock a fork copies held. Fork from
/// a thread that no other thread's such call overlaps, or in the child only read.
///
/// # Examples
/// ```
/// use memvisor_vmem::{Reservation, page_size};
///
/// let page = page_size();
/// let mut r = Reservation::new(64 * page)?;
/// r.commit(0, 4 * page)?;
/// // SAFETY: the first four pages are committed read-write and nothing else uses them.
/// unsafe { r.as_ptr().write(7) };
/// r.prefault(0, 4 * page)?;
/// assert_eq!(r.resident_pages(0, 4 * page)?, 4);
/// r.decommit(0, 4 * page)?;
/// r.commit(0, page)?;
/// // SAFETY: committed again; decommitted memory reads as zero.
/// assert_eq!(unsafe { r.as_ptr().read() }, 0);
/// # Ok::<(), memvisor_vmem::Error>(())
/// ```
pub struct Reservation {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
    page: usize,
    mode: CommitMode,
    committed: PageBitmap,
    /// The number of set bits of `committed`, kept by the calls that change them (which take
    /// turns, `lock_calls`), as a wrapping count read as zero above the reservation's pages
    /// (see `committed_bytes`).
    committed_pages: AtomicUsize,
    writable: PageBitmap,
    guarded: PageBitmap,
    /// Committed pages protected with `Protection::None`.
    inaccessible: PageBitmap,
    /// Committed pages that may be executable (protected or mapped with an executable
    /// protection, or left so by a refused protect).
    executable: PageBitmap,
    /// Pages that `map` put another source over (`shared`: a shared one).
    mapped: PageBitmap,
    shared: PageBitmap,
    /// Pages of a file source whose backing the system will not punch holes in (see
    /// `FileFacts::no_hole_punch`), which `purge` refuses up front.
    no_hole_punch: PageBitmap,
    /// Pages locked by `lock` and not unlocked, decommitted or guarded since.
    locked: PageBitmap,
    /// Pages whose last huge-page advice was `Huge` / `NoHuge`, re-applied after a decommit
    /// replaced their mapping.
    huge: PageBitmap,
    no_huge: PageBitmap,
    /// Pages advised `DontFork` / `DontDump` (and not advised back since), re-advised after a
    /// decommit replaced their mapping.
    dont_fork: PageBitmap,
    dont_dump: PageBitmap,
    /// Pages the system took from the reservation and did not give back (see
    /// [`Error::Lost`]): every call on a range with one is refused, and dropping the
    /// reservation leaves them alone.
    lost: PageBitmap,
    /// Whether `lost` has a page (set after its bits, with `Release`), so that ranges are
    /// checked against it only once a page was lost.
    any_lost: AtomicBool,
    /// Pages that `map` put explicit huge pages over (`MAP_HUGETLB`, or a hugetlbfs file),
    /// with the size of their huge pages: bit `i` of `log2(huge page size / page size)` in
    /// plane `i`, all clear for other pages. The system acts on such a range only in whole
    /// huge pages, so a call whose range cuts one is refused (see `check_whole`). Huge pages
    /// start at addresses that are multiples of their size (`map` checks it), so the size
    /// tells where each one starts, and a range of them sets and clears whole runs of bits:
    /// uniform blocks, whose words are never written. The planes are made by the first `map`
    /// of explicit huge pages that the system grants: until then ranges are not checked
    /// against them, and a reservation that never maps any (or whose maps of them are all
    /// refused) keeps no mapping for them.
    hugetlb: HugeTlbPlanes,
    /// Whether a vector keeps its elements here (set once by the vector that reserved it):
    /// the unsafe `&self` calls that discard, replace or protect memory are then refused with
    /// [`Error::HeldByVector`], since the vector reads, writes and drops its elements there
    /// whatever their contracts' callers vouch for (see `not_held_by_vector`).
    held_by_vector: bool,
    /// Held by every `&self` call that changes pages' mapping, protection, locks or advice,
    /// from its checks to its records (see `serial.rs`), so that the bitmaps tell what the
    /// system has: commit, protect, decommit, guard, map, lock, unlock, both advice calls and
    /// the content advice that refuses locked pages. The prefaults through `&self` hold it
    /// shared, from their checks to the end of their population, so that no such call takes
    /// their pages meanwhile; `bind_numa` too, which records nothing, so that its range is
    /// checked against lost pages and explicit huge pages with no decommit or `map` in between
    /// (see `cuts_no_hugetlb`).
    lock_calls: Serial,
}

// SAFETY: the reservation owns its mapping; `&self` methods only make OS calls that are safe
// from any thread and update the bitmaps atomically. The one plain write through `&self`,
// making the record of explicit huge pages (`HugeTlbPlanes`), is made once, under the call
// lock, before the `Release` store of the flag that every reader loads with `Acquire` first.
unsafe impl Send for Reservation {}
// SAFETY: as for `Send`; no safe `&self` method changes what memory reads back (the unsafe
// `_unchecked` ones leave that to their callers' contracts).
unsafe impl Sync for Reservation {}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("align", &self.align)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A checked range: first page index and number of pages.
#[derive(Clone, Copy, Debug)]
struct Pages {
    first: usize,
    count: usize,
}

impl Reservation {
    /// Reserves `len` bytes (rounded up to whole pages) in [`CommitMode::Protected`], aligned
    /// to the page size. Nothing is committed.
    ///
    /// # Errors
    /// As [`ReservationBuilder::reserve`].
    pub fn new(len: usize) -> Result<Self> {
        Self::builder().reserve(len)
    }

    /// Options for a reservation: alignment and commit mode.
    #[must_use]
    pub fn builder() -> ReservationBuilder {
        ReservationBuilder::default()
    }

    /// Marks the reservation as a vector's (see the `held_by_vector` field): done once by
    /// the vector that reserved it, before anyone else can reach it.
    pub(crate) fn hold_for_vector(&mut self) {
        self.held_by_vector = true;
    }

    /// Refuses an unsafe `&self` call that would discard, replace or protect memory of a
    /// vector's reservation. Vectors hand out `&Reservation` only, so their own calls go
    /// through the `&mut self` methods, which skip this check.
    pub(crate) fn not_held_by_vector(&self, operation: Operation) -> Result<()> {
        if self.held_by_vector {
            return Err(Error::HeldByVector { operation });
        }
        Ok(())
    }

    /// The start of the reservation.
    ///
    /// Accesses through it are the caller's to keep valid: only committed pages may be
    /// accessed, as their protection allows, and the calls that discard pages or change their
    /// access ([`decommit`](Self::decommit), [`protect`](Self::protect),
    /// [`guard`](Self::guard), [`map`](Self::map), [`free`](Self::free),
    /// [`discard`](Self::discard), [`purge`](Self::purge), and [`commit`](Self::commit), which
    /// takes execute away) do not wait for accesses on other threads: keep those away from the
    /// range while such a call runs. The prefaults touch only the first byte of each page,
    /// through a one-byte atomic (see [`prefault`](Self::prefault)).
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The start of the reservation, never null.
    #[must_use]
    pub fn as_non_null(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Its size in bytes, a multiple of the page size.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a reservation holds at least one page.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The alignment of the start address.
    #[must_use]
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// The page size all offsets and lengths are multiples of.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page
    }

    /// The commit mode.
    #[must_use]
    pub fn mode(&self) -> CommitMode {
        self.mode
    }

    /// Whether `ptr` points into the reservation.
    #[must_use]
    pub fn contains(&self, ptr: *const u8) -> bool {
        let start = self.ptr.as_ptr() as usize;
        (ptr as usize).wrapping_sub(start) < self.len
    }

    fn check(&self, offset: usize, len: usize) -> Result<Pages> {
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if !offset.is_multiple_of(self.page) {
            return Err(Error::Misaligned {
                what: "offset",
                value: offset,
                page_size: self.page,
            });
        }
        if !len.is_multiple_of(self.page) {
            return Err(Error::Misaligned {
                what: "length",
                value: len,
                page_size: self.page,
            });
        }
        let end = offset.checked_add(len).ok_or(Error::Overflow {
            value: offset,
            add: len,
        })?;
        if end > self.len {
            return Err(Error::OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        let pages = Pages {
            first: offset / self.page,
            count: len / self.page,
        };
        self.none_lost(pages)?;
        Ok(pages)
    }

    /// That no page of `pages` was lost (`Error::Lost` names the first that was).
    fn none_lost(&self, pages: Pages) -> Result<()> {
        if self.any_lost.load(Ordering::Acquire)
            && let Some(page) = self.lost.first_set(pages.first, pages.count)
        {
            return Err(Error::Lost {
                offset: page * self.page,
            });
        }
        Ok(())
    }

    /// [`check`](Self::check), and then that the range cuts no explicit huge page: the
    /// system changes such pages only whole (it refuses, or rounds the range), so every call
    /// that changes pages or their mapping is refused before it changes anything.
    ///
    /// The record is read without the call lock, so it may be half rewritten by a `map` under
    /// way (of huge pages of another size, or of base pages), and tell a size no huge page
    /// there ever had. A cut found so is therefore read again under the call lock, which
    /// every writer of the record holds: the refusal is the one the record gives once that
    /// map is done. Nothing that holds the lock calls this.
    fn check_whole(&self, offset: usize, len: usize) -> Result<Pages> {
        let pages = self.check(offset, len)?;
        if self.cuts_no_hugetlb(pages).is_err() {
            let _serial = self.lock_calls.hold();
            self.cuts_no_hugetlb(pages)?;
        }
        Ok(pages)
    }

    /// What `check_whole` found before the call lock, asked again by each call that takes the
    /// lock once it holds it: no page of `pages` is lost, and they cut no explicit huge page.
    /// Pages are lost, and huge pages recorded, only under the lock (by a decommit, guard or
    /// map on another thread, through the `_unchecked` forms, whose contracts forbid touching
    /// the range's memory, not calling on it), so what is found here holds until the caller
    /// lets the lock go: the call never acts on a hole another mapping may fill, nor on part
    /// of a huge page.
    fn check_held(&self, pages: Pages) -> Result<()> {
        self.none_lost(pages)?;
        self.cuts_no_hugetlb(pages)
    }

    /// That `pages` cut no explicit huge page, as recorded now. `check_whole` asks before the
    /// call lock, and each call that takes the lock asks again once it holds it
    /// (`check_held`): a `map` of huge pages that another thread made meanwhile (through
    /// `map_unchecked`) is then seen, so the range is refused as a cut instead of reaching the
    /// system.
    fn cuts_no_hugetlb(&self, pages: Pages) -> Result<()> {
        let Some(planes) = self.hugetlb.get() else {
            return Ok(());
        };
        let total = self.len / self.page;
        for (what, page) in [("offset", pages.first), ("end", pages.first + pages.count)] {
            if page >= total {
                continue;
            }
            let shift = hugetlb_shift(planes, page);
            if shift == 0 {
                continue;
            }
            // The huge page's size in bytes is `2^bits`; it starts where the address is a
            // multiple of that. `bits` may exceed `usize::BITS` only if the planes were read
            // while a racing `map` or decommit rewrote them; no page starts such a huge page.
            let bits = self.page.trailing_zeros() + shift;
            let addr = self.at(page * self.page) as usize;
            if addr.trailing_zeros() < bits {
                return Err(Error::Misaligned {
                    what,
                    value: page * self.page,
                    page_size: 1 << bits.min(usize::BITS - 1),
                });
            }
        }
        Ok(())
    }

    /// The first page of `pages` recorded as an explicit huge page, if any.
    fn first_hugetlb(&self, pages: Pages) -> Option<usize> {
        self.hugetlb
            .get()?
            .iter()
            .filter_map(|plane| plane.first_set(pages.first, pages.count))
            .min()
    }

    /// The planes a `map` of explicit huge pages records them in: the reservation's, or for
    /// its first map of them fresh ones that [`record_hugetlb_map`](Self::record_hugetlb_map)
    /// publishes (see `HugeTlbPlanes`). The caller holds the call lock. A refusal changes
    /// nothing.
    fn hugetlb_record(
        &self,
        _serial: &SerialGuard<'_>,
    ) -> Result<HugeTlbRecord<'_>, sys::SysError> {
        match self.hugetlb.get() {
            Some(planes) => Ok(HugeTlbRecord::Published(planes)),
            None => HugeTlbPlanes::make(self.len / self.page).map(HugeTlbRecord::Unpublished),
        }
    }

    /// Records `pages`, which the system mapped with explicit huge pages of `size` bytes, in
    /// `record` (from [`hugetlb_record`](Self::hugetlb_record), under the same hold of the
    /// call lock), publishing it first if it is not yet the reservation's. `size` and `pages`
    /// are as for [`record_hugetlb`](Self::record_hugetlb).
    fn record_hugetlb_map(
        &self,
        record: HugeTlbRecord<'_>,
        pages: Pages,
        size: usize,
        serial: &SerialGuard<'_>,
    ) {
        let planes = match record {
            HugeTlbRecord::Published(planes) => planes,
            HugeTlbRecord::Unpublished(planes) => self.hugetlb.publish(planes, serial),
        };
        self.record_hugetlb(planes, pages, size);
    }

    /// The reservation's planes recording explicit huge pages, made and published now if it
    /// has none, as the first map of explicit huge pages that the system grants does; the
    /// caller holds the call lock.
    #[cfg(test)]
    fn hugetlb_planes(
        &self,
        serial: &SerialGuard<'_>,
    ) -> Result<&[PageBitmap; HUGETLB_PLANES], sys::SysError> {
        match self.hugetlb_record(serial)? {
            HugeTlbRecord::Published(planes) => Ok(planes),
            HugeTlbRecord::Unpublished(planes) => Ok(self.hugetlb.publish(planes, serial)),
        }
    }

    /// Records `pages` as mapped with explicit huge pages of `size` bytes in `planes` (the
    /// reservation's, published). `size` is a power of two larger than the page
    /// size and `pages` a run of whole huge pages of that size that starts at an address that
    /// is a multiple of it (as `map` checks).
    fn record_hugetlb(&self, planes: &[PageBitmap; HUGETLB_PLANES], pages: Pages, size: usize) {
        debug_assert!(size > self.page && size.is_power_of_two());
        let shift = (size / self.page).trailing_zeros();
        // The callers hold the call lock, so no other call records huge pages meanwhile.
        for (bit, plane) in planes.iter().enumerate() {
            if shift >> bit & 1 != 0 {
                plane.set_range(pages.first, pages.count);
            } else {
                plane.clear_range(pages.first, pages.count);
            }
        }
    }

    /// Records `pages` as not mapped with explicit huge pages: nothing to do for a
    /// reservation that never mapped any (it has no planes).
    fn clear_hugetlb(&self, pages: Pages) {
        if let Some(planes) = self.hugetlb.get() {
            for plane in planes {
                plane.clear_range(pages.first, pages.count);
            }
        }
    }

    fn at(&self, offset: usize) -> *mut u8 {
        // SAFETY: callers pass offsets checked by `check`, so the result stays inside the
        // reservation (or one past its end).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    fn no_guard(&self, pages: Pages) -> Result<()> {
        match self.guarded.first_set(pages.first, pages.count) {
            Some(page) => Err(Error::Guarded {
                offset: page * self.page,
            }),
            None => Ok(()),
        }
    }

    fn all_committed(&self, pages: Pages) -> Result<()> {
        match self.committed.first_clear(pages.first, pages.count) {
            Some(page) => {
                if self.guarded.get(page) {
                    Err(Error::Guarded {
                        offset: page * self.page,
                    })
                } else {
                    Err(Error::NotCommitted {
                        offset: page * self.page,
                    })
                }
            }
            None => Ok(()),
        }
    }

    /// Commits the pages of `offset..offset + len`: they become readable and writable (also
    /// those committed before whose protection was lowered, and those made executable, which
    /// lose execute: do not commit over code a thread may run). Pages committed for the first
    /// time read as zero. Committing committed pages is allowed and keeps their contents.
    ///
    /// # Errors
    /// [`Error::ZeroLength`], [`Error::Misaligned`], [`Error::Overflow`] or
    /// [`Error::OutOfBounds`] for a bad range, [`Error::Lost`] for one holding a page the
    /// system took (see [`map`](Self::map)); [`Error::Misaligned`] naming the huge page size
    /// (`what` is `"offset"` or `"end"`) for a range that starts or ends inside an explicit
    /// huge page ([`map`](Self::map) with a [`HugeTlbSize`], or a hugetlbfs file), which the
    /// system changes only whole; [`Error::Guarded`] if it holds a guard page;
    /// [`Error::Os`] if the system refuses (for example the commit limit or, in
    /// [`CommitMode::Protected`], the mapping limit is reached). After an OS failure the
    /// bookkeeping is unchanged: no page of the range counts as newly committed. The system
    /// may have applied part of the change (Linux `mprotect` can stop half-way); such pages are
    /// accessible but not counted, and their charge is returned by a later decommit of the range
    /// or when the reservation is dropped. They are deliberately not decommitted here, since
    /// another thread may be filling the same pages, committed by an earlier call.
    ///
    /// Commits of one reservation run one at a time with its other calls that change pages or
    /// their records (decommit, protect, guard, map, lock, unlock, advice), from the checks
    /// to the record: a decommit or protect of the same pages between a commit's system call
    /// and its record would leave pages counted read-write that the system made inaccessible.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{Reservation, page_size};
    ///
    /// let r = Reservation::new(16 * page_size())?;
    /// r.commit(page_size(), 2 * page_size())?;
    /// assert!(r.is_committed(page_size(), 2 * page_size())?);
    /// assert!(!r.is_committed(0, page_size())?);
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    pub fn commit(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // A decommit, guard, protect or map of the same pages must not fall between the
        // system call and the record (it would leave pages counted read-write that the
        // system made inaccessible): one call at a time.
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.no_guard(pages)?;
        // SAFETY: the range is inside the reservation; committing changes no contents.
        unsafe { sys::commit(self.at(offset), len, self.mode) }
            .map_err(|e| e.during(Operation::Commit))?;
        self.restore_sparse_access(pages)
            .map_err(|e| e.during(Operation::Commit))?;
        let added = self.committed.set_range(pages.first, pages.count);
        self.committed_pages.fetch_add(added, Ordering::Relaxed);
        self.record_protection(pages, Protection::ReadWrite);
        Ok(())
    }

    /// In [`CommitMode::Sparse`] committing is bookkeeping, so committed pages whose
    /// protection was changed (lowered, or made executable) get plain read-write access back
    /// here, as commit and decommit promise. Pages of the mode's base state are left alone,
    /// so the mapping is not split.
    fn restore_sparse_access(&self, pages: Pages) -> Result<(), sys::SysError> {
        if self.mode != CommitMode::Sparse
            || (self
                .committed
                .first_set_where_clear_in(&self.writable, pages.first, pages.count)
                .is_none()
                && self
                    .executable
                    .first_set(pages.first, pages.count)
                    .is_none())
        {
            return Ok(());
        }
        // SAFETY: the range is inside the reservation; raising protection changes no contents.
        unsafe {
            sys::restore_sparse_access(self.at(pages.first * self.page), pages.count * self.page)
        }
    }

    /// Decommits the pages of `offset..offset + len`: their memory and commit charge go back
    /// to the operating system at once (on Linux in one `mmap` over the range, or
    /// `MADV_DONTNEED` in [`CommitMode::Sparse`]), and they read as zero once committed again.
    /// Decommitting uncommitted pages is allowed. Both modes treat the range alike: locked
    /// pages are unlocked (their memory is gone; committing them again does not lock them),
    /// and huge-page advice given with [`advise_huge_pages`](Self::advise_huge_pages) and
    /// `DontFork`/`DontDump` advice given with [`advise`](Self::advise) stay.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range, and [`Error::Os`] if the system refuses. Where
    /// a decommit maps fresh pages (any in [`CommitMode::Protected`]), the system may refuse
    /// to give the range's advice to them after the range was decommitted: the range is then
    /// decommitted, every other advice is still given again, and the refused advice is no
    /// longer recorded for the pages it was refused for (a later decommit does not give it).
    /// The fresh mapping itself may be refused after the system unmapped the old pages; the
    /// hole is then filled with the reservation's own fresh pages and the decommit goes on.
    /// If that is refused too, the pages of the hole are *lost* ([`Error::Lost`] for every
    /// later call on a range with one; see [`map`](Self::map)), no longer counted, and the
    /// error is returned. If only part of the run was unmapped, only that part is filled
    /// (found with a bounded number of probes), and the pages still mapped next to it are
    /// lost too: they cannot be told from a mapping another thread placed in the hole. A
    /// refusal that took no page (the system refused before it unmapped anything) leaves the
    /// pages committed, but unlocked. Pages still counted committed after a refusal keep the
    /// access they had: in [`CommitMode::Sparse`] the decommit first gives read-write access
    /// to the pages of a run with read-only, inaccessible or executable pages, which a
    /// refusal takes back. Only where the system refuses that too is such a page left
    /// read-write whatever access it is counted with: writable where it is counted read-only
    /// or inaccessible, and *not executable* where it is counted executable.
    pub fn decommit(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self` means no other thread uses the reservation through this handle;
        // raw pointers made from `as_ptr` are the caller's to keep away from the range.
        unsafe { self.decommit_inner(offset, len) }
    }

    /// [`decommit`](Self::decommit) through a shared reference.
    ///
    /// # Errors
    /// As [`decommit`](Self::decommit); first of all [`Error::HeldByVector`] for the reservation of
    /// a [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// No reference to any byte of the range may be live, and no other thread may access the
    /// range during or after the call until it is committed again: its contents are discarded
    /// (and in [`CommitMode::Protected`] any access faults).
    pub unsafe fn decommit_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        self.not_held_by_vector(Operation::Decommit)?;
        // SAFETY: the caller's promise.
        unsafe { self.decommit_inner(offset, len) }
    }

    /// The body of [`decommit`](Self::decommit) and
    /// [`decommit_unchecked`](Self::decommit_unchecked).
    ///
    /// # Safety
    /// As [`decommit_unchecked`](Self::decommit_unchecked), and the reservation's owner (a
    /// vector, for one) no longer counts the range's contents as its own.
    unsafe fn decommit_inner(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // From the first look at the bitmaps to the last record: a protect between the
        // access restored below and the decommit would leave an uncommitted page of a sparse
        // reservation inaccessible, which its next commit (no system call) would not undo.
        let serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.no_guard(pages)?;
        // Uncommitted pages of a sparse reservation are read-write: give lowered pages their
        // access back while the bitmaps still tell which they are. Runs with another source
        // mapped over them are replaced by fresh read-write pages instead (raising a read-only
        // file mapping's access would be refused).
        let restored = self.for_each_run(&self.mapped, false, pages, |own| {
            self.restore_sparse_access(own)
        });
        // SAFETY: the caller vouches that nothing refers to the range's contents.
        let decommitted = restored.and_then(|()| unsafe { self.decommit_pages(pages, &serial) });
        if decommitted.is_err() && self.mode == CommitMode::Sparse {
            // Refused with pages still counted committed, some maybe raised to read-write
            // above: they get their recorded access back, so a refusal raises no protection.
            self.reprotect_committed(pages);
        }
        decommitted.map_err(|e| e.during(Operation::Decommit))
    }

    /// Gives the committed pages of `pages` that are not plain read-write the protection
    /// their records say, after a refused sparse decommit that may have raised them to
    /// read-write. Where the system refuses this too, a page is left read-write whatever
    /// its records say (see [`decommit`](Self::decommit)).
    fn reprotect_committed(&self, pages: Pages) {
        let reprotect = |run: Pages, protection: Protection| {
            let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
            // SAFETY: the run is inside the reservation and committed; lowering its access
            // back to what it had before the refused decommit changes no contents.
            let _ = unsafe { sys::protect(ptr, len, protection) };
            Ok::<(), core::convert::Infallible>(())
        };
        let Ok(()) = self.for_each_run(&self.committed, true, pages, |committed| {
            self.for_each_run(&self.inaccessible, true, committed, |run| {
                reprotect(run, Protection::None)
            })?;
            self.for_each_run(&self.inaccessible, false, committed, |readable| {
                self.for_each_run(&self.executable, true, readable, |code| {
                    self.for_each_run(&self.writable, true, code, |run| {
                        reprotect(run, Protection::ReadWriteExecute)
                    })?;
                    self.for_each_run(&self.writable, false, code, |run| {
                        reprotect(run, Protection::ReadExecute)
                    })
                })?;
                self.for_each_run(&self.executable, false, readable, |data| {
                    self.for_each_run(&self.writable, false, data, |run| {
                        reprotect(run, Protection::Read)
                    })
                })
            })
        });
    }

    /// Decommits `pages` for `decommit` and `guard`, alike in both modes: locked pages are
    /// unlocked first (Linux refuses to discard locked pages of a sparse reservation, and
    /// replacing the mapping of a protected one drops the lock anyway), and huge-page advice
    /// is kept (a protected decommit maps fresh pages, which lose it, so it is given again).
    ///
    /// The caller holds `lock_calls` (`_serial`) from its checks to its records.
    ///
    /// # Safety
    /// Nothing refers to the contents of `pages`.
    unsafe fn decommit_pages(
        &self,
        pages: Pages,
        _serial: &SerialGuard<'_>,
    ) -> Result<(), sys::SysError> {
        self.for_each_run(&self.locked, true, pages, |run| {
            // SAFETY: the run is inside the reservation and locked; unlocking changes no
            // contents.
            unsafe { sys::unlock(self.at(run.first * self.page), run.count * self.page) }?;
            self.locked.clear_range(run.first, run.count);
            Ok(())
        })?;
        let (ptr, len) = (self.at(pages.first * self.page), pages.count * self.page);
        let replaced = self.mode == CommitMode::Protected
            || self.mapped.first_set(pages.first, pages.count).is_some();
        if self.mode == CommitMode::Protected {
            // SAFETY: the range is inside the reservation; the caller vouches that nothing
            // refers to its contents. This replaces the whole range, mapped runs included.
            if let Err(e) = unsafe { self.sys_replace(ptr, len) } {
                // SAFETY: as above.
                unsafe { self.fill_hole(pages) }.map_err(|()| e)?;
            }
            self.mapped.clear_range(pages.first, pages.count);
            self.shared.clear_range(pages.first, pages.count);
            self.no_hole_punch.clear_range(pages.first, pages.count);
            self.clear_hugetlb(pages);
        } else {
            // The reservation's own pages keep their mapping, and with it their NUMA policy;
            // only the runs another source is mapped over get the reservation's own pages
            // back (`MADV_DONTNEED` would keep the source mapped).
            self.for_each_run(&self.mapped, false, pages, |own| {
                let (ptr, len) = (self.at(own.first * self.page), own.count * self.page);
                // SAFETY: as above. (Outside Linux this maps fresh pages too.)
                if let Err(e) = unsafe { sys::decommit(ptr, len, self.mode) } {
                    // SAFETY: as above.
                    unsafe { self.fill_hole(own) }.map_err(|()| e)?;
                }
                Ok(())
            })?;
            self.for_each_run(&self.mapped, true, pages, |run| {
                let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
                // SAFETY: as above.
                if let Err(e) = unsafe { self.sys_replace(ptr, len) } {
                    // SAFETY: as above.
                    unsafe { self.fill_hole(run) }.map_err(|()| e)?;
                }
                self.mapped.clear_range(run.first, run.count);
                self.shared.clear_range(run.first, run.count);
                self.no_hole_punch.clear_range(run.first, run.count);
                self.clear_hugetlb(run);
                Ok(())
            })?;
        }
        let removed = self.committed.clear_range(pages.first, pages.count);
        self.committed_pages.fetch_sub(removed, Ordering::Relaxed);
        self.writable.clear_range(pages.first, pages.count);
        self.inaccessible.clear_range(pages.first, pages.count);
        self.executable.clear_range(pages.first, pages.count);
        if replaced {
            // The fresh mapping has none of the range's advice: give it again.
            self.readvise_all(pages)?;
        }
        Ok(())
    }

    /// After a mapping of fresh pages over `pages` was refused: `Ok` if the range holds the
    /// reservation's own fresh pages now, `Err` if it holds what it held before (the system
    /// refused before it changed anything), or if only part of it does.
    ///
    /// A `MAP_FIXED` mapping the system refuses may have unmapped the old pages first. If the
    /// range is still wholly mapped, nothing was taken (a mapping that filled the whole hole
    /// before this probe looks cannot be told from the reservation's own pages). Otherwise the
    /// unmapped pages are found and filled with fresh pages (see `sys::refill`: never over a
    /// mapping another thread placed there meanwhile): the range is filled in one call if it
    /// is wholly unmapped, and else split in halves, each probed (`msync`) and filled alike,
    /// so a hole costs a few calls per level of halving (`O(boundaries × log pages)` calls in
    /// all). Filled runs count as the reservation's own uncommitted pages (their recorded
    /// advice given again; a refusal clears its record). Pages of the range that are mapped
    /// while others are not cannot be told from a mapping another thread placed in the hole
    /// (the system unmaps the whole range of a refused `MAP_FIXED`, or nothing), and a range
    /// whose fill is refused for another reason than a mapping in it (the mapping limit, say)
    /// may receive one at any time: both are *lost*. Every later call
    /// on a range with a lost page is refused ([`Error::Lost`]), its bits are cleared, and
    /// `Drop` leaves it alone. The halving is bounded (`HOLE_SPLITS` per call): a range still
    /// undecided when they run out is lost as a whole.
    ///
    /// (The probe and the fill tell a mapped page from a hole, not whose the mapping is: a
    /// hole another thread filled wholly before the first probe looks like the reservation's
    /// own pages.)
    ///
    /// # Safety
    /// `pages` lie inside the reservation and nothing refers to their contents.
    unsafe fn fill_hole(&self, pages: Pages) -> core::result::Result<(), ()> {
        let (ptr, len) = (self.at(pages.first * self.page), pages.count * self.page);
        // SAFETY: the range is inside the reservation.
        if unsafe { sys::is_mapped(ptr, len) } {
            return Err(());
        }
        let mut splits = HOLE_SPLITS;
        // SAFETY: the caller's promise.
        if unsafe { self.fill_part(pages, &mut splits) } {
            Ok(())
        } else {
            Err(())
        }
    }

    /// Fills the unmapped pages of `pages`, which is not wholly mapped, for `fill_hole`, and
    /// loses the rest: `true` if all of them were unmapped and are filled now.
    ///
    /// # Safety
    /// As `fill_hole`.
    unsafe fn fill_part(&self, pages: Pages, splits: &mut usize) -> bool {
        let (ptr, len) = (self.at(pages.first * self.page), pages.count * self.page);
        // SAFETY: the caller's promise.
        let refused = match unsafe { self.sys_refill(ptr, len) } {
            Ok(()) => {
                self.refilled(pages);
                return true;
            }
            Err(e) => e,
        };
        // Only a range that is partly mapped is worth halving: any other refusal (the
        // mapping limit, say) would meet its unmapped pages again.
        if !refused.partly_mapped() || pages.count == 1 || *splits == 0 {
            self.lose(pages);
            return false;
        }
        *splits -= 1;
        let low = Pages {
            first: pages.first,
            count: pages.count / 2,
        };
        let high = Pages {
            first: low.first + low.count,
            count: pages.count - low.count,
        };
        let mut all = true;
        for half in [low, high] {
            let (ptr, len) = (self.at(half.first * self.page), half.count * self.page);
            // SAFETY: the half is inside the reservation.
            if unsafe { sys::is_mapped(ptr, len) } {
                // Mapped next to a hole: perhaps another's mapping, never claimed as ours.
                self.lose(half);
                all = false;
            // SAFETY: the caller's promise.
            } else if !unsafe { self.fill_part(half, splits) } {
                all = false;
            }
        }
        all
    }

    /// Marks `pages` lost (see [`Error::Lost`]) and clears their other bits.
    fn lose(&self, pages: Pages) {
        self.lost.set_range(pages.first, pages.count);
        self.any_lost.store(true, Ordering::Release);
        self.forget(pages);
    }

    /// Records that `pages` hold fresh pages of the reservation's own kind, put in a hole:
    /// uncommitted, of no source, unlocked, and with the advice recorded for them given again
    /// (a refusal clears its record).
    fn refilled(&self, pages: Pages) {
        self.clear_mapping(pages);
        // A refusal clears the advice's record for the run; the fill stands either way.
        let _ = self.readvise_all(pages);
    }

    /// Gives the recorded advice of `pages` again to fresh pages mapped over them (which have
    /// none of it). Every advice and run is tried, whatever the system refuses: a refused run
    /// loses its bits, the others keep advice and bits alike; the first refusal is returned.
    fn readvise_all(&self, pages: Pages) -> Result<(), sys::SysError> {
        let advise = |advice| {
            move |ptr, len| {
                // SAFETY: `readvise` passes runs inside the reservation; advice keeps contents.
                unsafe { sys::advise(ptr, len, advice) }
            }
        };
        let advise_huge = |advice| {
            move |ptr, len| {
                // SAFETY: as above.
                unsafe { sys::advise_huge(ptr, len, advice) }
            }
        };
        let fork = self.readvise(&self.dont_fork, pages, advise(sys::SysAdvice::DontFork));
        let dump = self.readvise(&self.dont_dump, pages, advise(sys::SysAdvice::DontDump));
        let huge = self.readvise(&self.huge, pages, advise_huge(HugePageAdvice::Huge));
        let no_huge = self.readvise(&self.no_huge, pages, advise_huge(HugePageAdvice::NoHuge));
        fork.and(dump).and(huge).and(no_huge)
    }

    /// Clears every bit of `pages` (their memory is gone, or they are lost): committed, with
    /// the count, protection, sources, locks and advice.
    fn forget(&self, pages: Pages) {
        self.clear_mapping(pages);
        for bitmap in [&self.huge, &self.no_huge, &self.dont_fork, &self.dont_dump] {
            bitmap.clear_range(pages.first, pages.count);
        }
    }

    /// Clears what `pages`' mapping records (committed, with the count, protection, sources,
    /// locks and huge page sizes), not their advice.
    fn clear_mapping(&self, pages: Pages) {
        let removed = self.committed.clear_range(pages.first, pages.count);
        self.committed_pages.fetch_sub(removed, Ordering::Relaxed);
        for bitmap in [
            &self.writable,
            &self.inaccessible,
            &self.executable,
            &self.mapped,
            &self.shared,
            &self.no_hole_punch,
            &self.locked,
        ] {
            bitmap.clear_range(pages.first, pages.count);
        }
        self.clear_hugetlb(pages);
    }

    /// `sys::refill`, with the failure of `sys_replace` injected in unit tests.
    ///
    /// # Safety
    /// The range lies inside the reservation and nothing refers to its contents.
    unsafe fn sys_refill(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(test)]
        tests::REFILLS.with(|f| f.set(f.get() + 1));
        #[cfg(all(test, unix, not(miri)))]
        if tests::replace_takes_pages_and_fails() {
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::refill(ptr, len, self.mode) }
    }

    /// Puts fresh pages of the reservation's own kind over `ptr..ptr + len` (a protected
    /// decommit, or a run another source was mapped over), with a failure injected in unit
    /// tests.
    ///
    /// # Safety
    /// The range lies inside the reservation and nothing refers to its contents.
    unsafe fn sys_replace(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(all(test, unix, not(miri)))]
        if tests::replace_refused() {
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        #[cfg(all(test, unix, not(miri)))]
        if tests::replace_takes_pages_and_fails() {
            // SAFETY: the caller's promise; the kernel's failed `MAP_FIXED` leaves the same
            // hole.
            let _ = unsafe { sys::unmap(NonNull::new(ptr).expect("inside"), len, self.page) };
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::replace(ptr, len, self.mode) }
    }

    /// Gives the advice `give` again to the runs of `pages` that `bitmap` records it for, after
    /// a decommit replaced their mapping. Every run is tried; a run the system refuses loses
    /// its bits, so the bitmap stays true. Returns the first refusal.
    fn readvise(
        &self,
        bitmap: &PageBitmap,
        pages: Pages,
        give: impl Fn(*mut u8, usize) -> Result<(), sys::SysError>,
    ) -> Result<(), sys::SysError> {
        let mut first_refusal = Ok(());
        let Ok(()) = self.for_each_run(bitmap, true, pages, |run| {
            let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
            #[cfg(test)]
            let given = if tests::readvise_refused() {
                Err(sys::SysError::Os(crate::OsError::from_raw(11)))
            } else {
                give(ptr, len)
            };
            #[cfg(not(test))]
            let given = give(ptr, len);
            if given.is_err() {
                bitmap.clear_range(run.first, run.count);
                first_refusal = first_refusal.and(given);
            }
            Ok::<(), core::convert::Infallible>(())
        });
        first_refusal
    }

    /// Records the protection of committed `pages`.
    fn record_protection(&self, pages: Pages, protection: Protection) {
        if protection.writable() {
            self.writable.set_range(pages.first, pages.count);
        } else {
            self.writable.clear_range(pages.first, pages.count);
        }
        if protection.readable() {
            self.inaccessible.clear_range(pages.first, pages.count);
        } else {
            self.inaccessible.set_range(pages.first, pages.count);
        }
        if protection.executable() {
            self.executable.set_range(pages.first, pages.count);
        } else {
            self.executable.clear_range(pages.first, pages.count);
        }
    }

    /// Calls `f` on each run of pages of `pages` whose bit in `bitmap` is `set`, in order,
    /// stopping at the first error.
    fn for_each_run<E>(
        &self,
        bitmap: &PageBitmap,
        set: bool,
        pages: Pages,
        mut f: impl FnMut(Pages) -> Result<(), E>,
    ) -> Result<(), E> {
        let find = |value: bool, from: usize, count: usize| {
            if value {
                bitmap.first_set(from, count)
            } else {
                bitmap.first_clear(from, count)
            }
        };
        let end = pages.first + pages.count;
        let mut from = pages.first;
        while from < end {
            let Some(first) = find(set, from, end - from) else {
                break;
            };
            let stop = find(!set, first, end - first).unwrap_or(end);
            f(Pages {
                first,
                count: stop - first,
            })?;
            from = stop;
        }
        Ok(())
    }

    /// Sets the protection of committed pages. Contents are kept.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NotCommitted`] for a page that is
    /// not committed; [`Error::Os`] if the system refuses. The system may refuse after
    /// changing part of the range (`ENOMEM` when the mapping cannot be split further): the
    /// reservation then counts each page of the range at the lower of its old and new access
    /// ([`prefault`](Self::prefault) refuses a page that may have lost write access; a
    /// [`commit`](Self::commit) over it gives it read-write access again).
    pub fn protect(&mut self, offset: usize, len: usize, protection: Protection) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.protect_inner(offset, len, protection) }
    }

    /// [`protect`](Self::protect) through a shared reference.
    ///
    /// # Errors
    /// As [`protect`](Self::protect); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// When lowering protection, no reference to the range may be live that the new protection
    /// forbids (no `&mut` into read-only pages, nothing at all into [`Protection::None`]
    /// pages), and no other thread may make such an access during or after the call.
    pub unsafe fn protect_unchecked(
        &self,
        offset: usize,
        len: usize,
        protection: Protection,
    ) -> Result<()> {
        self.not_held_by_vector(Operation::Protect)?;
        // SAFETY: the caller's promise.
        unsafe { self.protect_inner(offset, len, protection) }
    }

    /// The body of [`protect`](Self::protect) and
    /// [`protect_unchecked`](Self::protect_unchecked).
    ///
    /// # Safety
    /// As [`protect_unchecked`](Self::protect_unchecked), and nothing that owns the range's
    /// contents (a vector, for one) accesses them as the new protection forbids.
    unsafe fn protect_inner(
        &self,
        offset: usize,
        len: usize,
        protection: Protection,
    ) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // A commit, decommit or other protect of the same pages must not fall between the
        // check, the system call and the record: one call at a time.
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.all_committed(pages)?;
        // SAFETY: the range is inside the reservation and committed; references are the
        // caller's promise.
        if let Err(e) = unsafe { sys::protect(self.at(offset), len, protection) } {
            // The system may have changed part of the range before refusing (`mprotect`
            // answers `ENOMEM` when splitting the mapping passes the process's limit): each
            // page is counted at the lower of its old and new access, so that nothing relies
            // on access a page may have lost.
            if !protection.writable() {
                self.writable.clear_range(pages.first, pages.count);
            }
            if !protection.readable() {
                self.inaccessible.set_range(pages.first, pages.count);
            }
            // And as possibly executable if either is, so that a commit takes it away.
            if protection.executable() {
                self.executable.set_range(pages.first, pages.count);
            }
            return Err(e.during(Operation::Protect));
        }
        self.record_protection(pages, protection);
        Ok(())
    }

    /// Makes committed read-write pages resident now, so that first accesses do not fault:
    /// Linux `MADV_POPULATE_WRITE` (5.14 and later), elsewhere (or on older kernels) by
    /// touching each page, which keeps its contents: an atomic compare-exchange of the page's
    /// first byte with its own value, so a store that another thread makes meanwhile through an
    /// [`AtomicU8`](core::sync::atomic::AtomicU8) (from [`as_ptr`](Self::as_ptr)), or another
    /// process to shared memory, is kept and races nothing. Any other access to such a byte
    /// on another thread during the call (a plain one, or an atomic of another size) races
    /// the touch; the rest of each page is not accessed. A touch is a first access like any
    /// other: a page the system cannot supply then (out of memory, or a page past the end of
    /// a mapped file shortened since the [`map`](Self::map)) gets no error but what the system
    /// does to such an access (its out-of-memory handling, `SIGBUS`), where the kernel's
    /// populate answers [`Error::Os`].
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NotCommitted`] for a page that is
    /// not committed; [`Error::Guarded`] for a guard page; [`Error::Os`] with the error code
    /// where the kernel could not populate (for example out of memory, `ENOMEM`), or a page
    /// is not read-write (`EFAULT` or `EINVAL`), in which case some pages may be resident;
    /// [`Error::NotWritable`] for a page the reservation does not count as read-write.
    pub fn prefault(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other call on the reservation runs meanwhile. The reservation
        // hands out no references into its memory, and the touching fallback's accesses are
        // one-byte atomics: other threads' accesses through `as_ptr` to those bytes are theirs
        // to make one-byte atomics while this runs, as the docs above say.
        unsafe { self.prefault_unchecked(offset, len) }
    }

    /// [`prefault`](Self::prefault) split over `threads` threads (at most 256, however many
    /// are asked for: each costs a stack), each populating its own part of the range, so the
    /// kernel zeroes pages on several cores at once. Parts meet at addresses that are
    /// multiples of 2 MiB (of the page size, for ranges under 4 MiB), whatever the range's
    /// start, so huge pages are not split between threads (only the first and the last part
    /// may start or end inside one, where the range itself does). The calling thread works on the
    /// first part; with one thread, or a range of one part, no thread is spawned. Shorthand for
    /// [`prefault_parallel_with`] without a minimum part size.
    ///
    /// [`prefault_parallel_with`]: Self::prefault_parallel_with
    ///
    /// # Errors
    /// As [`prefault_parallel_with`](Self::prefault_parallel_with).
    ///
    /// # Examples
    /// ```
    /// use std::num::NonZeroUsize;
    ///
    /// use memvisor_vmem::Reservation;
    ///
    /// let mut r = Reservation::new(64 << 20)?;
    /// r.commit(0, 64 << 20)?;
    /// r.prefault_parallel(0, 64 << 20, NonZeroUsize::new(2).unwrap())?;
    /// assert_eq!(r.resident_pages(0, 64 << 20)?, (64 << 20) / r.page_size());
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn prefault_parallel(
        &mut self,
        offset: usize,
        len: usize,
        threads: core::num::NonZeroUsize,
    ) -> Result<()> {
        self.prefault_parallel_with(offset, len, threads, 0)
    }

    /// [`prefault_parallel`](Self::prefault_parallel) with parts of at least `min_part` bytes
    /// (rounded up to the part unit): a range shorter than `threads * min_part` uses fewer
    /// threads, since below some size a thread costs more than it saves.
    ///
    /// # Errors
    /// As [`prefault`](Self::prefault), checked for the whole range before any thread starts;
    /// then, after every started thread finished, the first error in range order of:
    /// [`Error::ThreadSpawn`] if a worker thread could not be started (no further thread is
    /// started and the caller's own part is not populated), [`Error::WorkerPanicked`] if a
    /// worker panicked, or a worker's [`prefault`](Self::prefault) error. Some pages may be
    /// resident after an error. Never panics.
    ///
    /// # Examples
    /// ```
    /// use std::num::NonZeroUsize;
    ///
    /// use memvisor_vmem::Reservation;
    ///
    /// let mut r = Reservation::new(8 << 20)?;
    /// r.commit(0, 8 << 20)?;
    /// // 8 MiB with parts of at least 64 MiB: one part, on this thread.
    /// r.prefault_parallel_with(0, 8 << 20, NonZeroUsize::new(4).unwrap(), 64 << 20)?;
    /// assert_eq!(r.resident_pages(0, 8 << 20)?, (8 << 20) / r.page_size());
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn prefault_parallel_with(
        &mut self,
        offset: usize,
        len: usize,
        threads: core::num::NonZeroUsize,
        min_part: usize,
    ) -> Result<()> {
        let pages = self.check(offset, len)?;
        self.all_committed(pages)?;
        if let Some(page) = self.writable.first_clear(pages.first, pages.count) {
            return Err(Error::NotWritable {
                offset: page * self.page,
            });
        }
        let (first, part) = prefault_split(
            self.at(offset) as usize,
            len,
            threads.get(),
            min_part,
            self.page,
        );
        if first >= len {
            return self.prefault(offset, len);
        }
        let this = &*self;
        std::thread::scope(|scope| {
            let mut workers = std::vec::Vec::new();
            let mut spawn_error = None;
            // `offset + len` does not overflow: `check` passed.
            let mut start = offset + first;
            while start < offset + len {
                let size = part.min(offset + len - start);
                let work = move || {
                    // SAFETY: `&mut self` is held for the whole scope, so only these threads
                    // use the reservation, each on its own disjoint part of the checked range,
                    // and no call changes its pages meanwhile (the parts run at once, not
                    // taking turns for the call lock).
                    unsafe { this.prefault_held(start, size) }
                };
                match std::thread::Builder::new().spawn_scoped(scope, work) {
                    Ok(handle) => workers.push((start, size, handle)),
                    Err(e) => {
                        spawn_error = Some(Error::ThreadSpawn {
                            index: workers.len() + 1,
                            source: crate::OsError::from_raw(e.raw_os_error().unwrap_or(0)),
                        });
                        break;
                    }
                }
                start += part;
            }
            let mut result = match spawn_error {
                Some(e) => Err(e),
                // SAFETY: as for the workers: the first part is this thread's alone.
                None => unsafe { this.prefault_held(offset, first) },
            };
            for (start, size, handle) in workers {
                let joined = worker_result(handle.join(), start, size);
                result = result.and(joined);
            }
            result
        })
    }

    /// [`prefault`](Self::prefault) through a shared reference.
    ///
    /// Other calls on the reservation may run on other threads meanwhile: the check that the
    /// range is committed read-write and the population run under the call lock, so a
    /// decommit, protect, guard or map of the range (through the `_unchecked` forms) waits
    /// for the prefault, or the prefault for it, and the answer is that of one of the two
    /// orders (a typed error for a page such a call took before the prefault, never a fault
    /// or the system's refusal). Those calls wait while the kernel populates the range;
    /// prefaults share the lock and do not wait for each other, but for one asked for while
    /// such a call waits for the lock, which goes after that call.
    ///
    /// # Errors
    /// As [`prefault`](Self::prefault).
    ///
    /// # Safety
    /// Where the kernel cannot populate (Linux before 5.14, other systems, Miri), the first
    /// byte of each page is written with its own value by a one-byte atomic compare-exchange
    /// (see [`prefault`](Self::prefault)): during the call other threads may access the first
    /// byte of a page of the range only through an `AtomicU8` (as other prefaults of the
    /// range do), and no reference to such a byte may be live but a `&AtomicU8`. The rest of
    /// each page is not accessed.
    pub unsafe fn prefault_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check(offset, len)?;
        // A decommit, protect, guard or map taking pages between the check and the
        // population would make the touching fallback fault: they hold the lock from their
        // checks to their records, so the check below holds until it is let go.
        let _serial = self.lock_calls.share();
        self.none_lost(pages)?;
        // SAFETY: the call lock is held; the caller's promise.
        unsafe { self.prefault_held(offset, len) }
    }

    /// The body of [`prefault_unchecked`](Self::prefault_unchecked), after the range checks.
    ///
    /// # Safety
    /// As [`prefault_unchecked`](Self::prefault_unchecked); `offset..offset + len` is a
    /// checked range of whole pages, and no call can change the pages' state until this
    /// returns: the caller holds the call lock, or `&mut self` for the whole call.
    unsafe fn prefault_held(&self, offset: usize, len: usize) -> Result<()> {
        let pages = Pages {
            first: offset / self.page,
            count: len / self.page,
        };
        self.all_committed(pages)?;
        if let Some(page) = self.writable.first_clear(pages.first, pages.count) {
            return Err(Error::NotWritable {
                offset: page * self.page,
            });
        }
        // SAFETY: the range is inside the reservation, committed and read-write, and stays so
        // for the call (the caller's promise).
        let populated = unsafe { sys::populate(self.at(offset), len) }
            .map_err(|e| e.during(Operation::Prefault))?;
        if populated == Populated::NeedsTouch {
            for page in 0..pages.count {
                // SAFETY: the byte is in a committed read-write page that stays so for the
                // call; any address is aligned for `AtomicU8`, and the caller promises no
                // live reference and no non-atomic access on another thread meanwhile.
                let byte = unsafe { AtomicU8::from_ptr(self.at(offset + page * self.page)) };
                touch_for_writing(byte);
            }
        }
        Ok(())
    }

    /// Locks committed pages into memory (`mlock`, `VirtualLock`), which also makes them
    /// resident. They stay locked until [`unlock`](Self::unlock)ed, decommitted or guarded.
    /// Locks do not nest: the system keeps one lock bit per page, not a count, so one
    /// `unlock` of a page undoes every `lock` of it. The lock and unlock calls of a reservation
    /// (and its commits, protects, decommits, guards and maps, which change what can be
    /// locked) run one at a time, waiting for each other.
    ///
    /// # Errors
    /// As [`protect`](Self::protect); [`Error::NotReadable`] for a page protected with
    /// [`Protection::None`] (or counted so after a refused [`protect`](Self::protect)), which
    /// cannot be made resident, before the system is asked; [`Error::Os`] where the lock
    /// limit is reached or the system cannot make the pages resident. A failed lock changes
    /// nothing: the system may lock part of the range before failing, and those of its pages
    /// that were not locked before the call are unlocked again (never pages another thread's
    /// lock locked, since the calls take turns). Only where the system refuses that unlock
    /// too (splitting mappings at the process's mapping limit) do such pages stay locked, and
    /// they are then counted as locked (an [`unlock`](Self::unlock) or decommit unlocks them).
    pub fn lock(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.all_committed(pages)?;
        // An inaccessible page cannot be made resident: Linux marks the range locked and
        // then refuses with `ENOMEM`, Windows refuses too. Refused up front, on every system.
        if let Some(page) = self.inaccessible.first_set(pages.first, pages.count) {
            return Err(Error::NotReadable {
                offset: page * self.page,
            });
        }
        // SAFETY: the range is inside the reservation; locking changes no contents.
        if let Err(e) = unsafe { self.sys_lock(self.at(offset), len) } {
            // The system may have locked part of the range before failing: unlock the pages
            // that were not locked before this call, so that a failed lock changes nothing.
            // A run the system refuses to unlock (`munlock` splits mappings too) may be locked:
            // it is counted so, and the content advice that locked pages make fail half-way
            // refuses it up front.
            let Ok(()) = self.for_each_run(&self.locked, false, pages, |run| {
                let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
                // SAFETY: the run is inside the reservation; unlocking changes no contents.
                if unsafe { self.sys_unlock(ptr, len) }.is_err() {
                    self.locked.set_range(run.first, run.count);
                }
                Ok::<(), core::convert::Infallible>(())
            });
            return Err(e.during(Operation::Lock));
        }
        self.locked.set_range(pages.first, pages.count);
        Ok(())
    }

    /// The platform lock, with a failure injected half-way in unit tests.
    ///
    /// # Safety
    /// The range lies inside the reservation.
    unsafe fn sys_lock(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(test)]
        if let Some(locked) = tests::LOCK_FAILS_AFTER.with(core::cell::Cell::take) {
            // SAFETY: a prefix of the caller's range.
            unsafe { sys::lock(ptr, locked.min(len)) }?;
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        let locked = unsafe { sys::lock(ptr, len) };
        #[cfg(test)]
        if let Some(after) = tests::AFTER_LOCK.with(core::cell::RefCell::take) {
            after();
        }
        locked
    }

    /// The platform unlock, with a failure injected in unit tests.
    ///
    /// # Safety
    /// The range lies inside the reservation.
    unsafe fn sys_unlock(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(test)]
        if tests::UNLOCK_FAILS.with(core::cell::Cell::take) {
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::unlock(ptr, len) }
    }

    /// Unlocks pages locked by [`lock`](Self::lock).
    ///
    /// # Errors
    /// As [`protect`](Self::protect); [`Error::Os`] if the system refuses.
    pub fn unlock(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        self.all_committed(pages)?;
        // SAFETY: the range is inside the reservation; unlocking changes no contents.
        unsafe { sys::unlock(self.at(offset), len) }.map_err(|e| e.during(Operation::Unlock))?;
        self.locked.clear_range(pages.first, pages.count);
        Ok(())
    }

    /// Transparent-huge-page advice for the range (Linux); reserve with a 2 MiB
    /// [`alignment`](ReservationBuilder::alignment) so that whole huge pages fit. The advice
    /// outlives [`decommit`](Self::decommit) and [`guard`](Self::guard) in both modes.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::Unsupported`] on systems without
    /// transparent huge pages; [`Error::Os`] if the kernel refuses (for example when built
    /// without them). The kernel may refuse after advising part of the range (splitting
    /// mappings at the process's mapping limit): pages advised before the call then get their
    /// advice back, and pages without any get this advice (no advice takes it away again);
    /// a page where the kernel refuses that too is no longer recorded with advice (a later
    /// decommit does not give it any).
    pub fn advise_huge_pages(
        &self,
        offset: usize,
        len: usize,
        advice: HugePageAdvice,
    ) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        // A decommit gives the recorded advice again to the fresh pages it maps: the advice
        // and its record must not fall on either side of one.
        let _serial = self.lock_calls.hold();
        self.check_held(pages)?;
        let (given, replaced) = match advice {
            HugePageAdvice::Huge => (&self.huge, &self.no_huge),
            HugePageAdvice::NoHuge => (&self.no_huge, &self.huge),
        };
        // SAFETY: the range is inside the reservation; the advice changes no contents.
        if let Err(e) = unsafe { self.sys_advise_huge(self.at(offset), len, advice) } {
            self.huge_advice_refused(pages, advice);
            return Err(e.during(Operation::HugePageAdvice));
        }
        #[cfg(test)]
        tests::after_advice();
        replaced.clear_range(pages.first, pages.count);
        given.set_range(pages.first, pages.count);
        Ok(())
    }

    /// After the system refused huge-page `advice` for `pages`: it may have advised part of
    /// them (`madvise` splits mappings and can stop at the process's limit). Pages recorded
    /// with advice get it back; pages without any get `advice` too (no advice takes huge-page
    /// advice away), recorded where the system accepts it. A run refused even that is
    /// recorded without advice, so the bitmaps never claim advice the pages may lack.
    fn huge_advice_refused(&self, pages: Pages, advice: HugePageAdvice) {
        for (bitmap, back) in [
            (&self.huge, HugePageAdvice::Huge),
            (&self.no_huge, HugePageAdvice::NoHuge),
        ] {
            let Ok(()) = self.for_each_run(bitmap, true, pages, |run| {
                let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
                // SAFETY: the run is inside the reservation; the advice changes no contents.
                if unsafe { sys::advise_huge(ptr, len, back) }.is_err() {
                    bitmap.clear_range(run.first, run.count);
                }
                Ok::<(), core::convert::Infallible>(())
            });
        }
        let given = match advice {
            HugePageAdvice::Huge => &self.huge,
            HugePageAdvice::NoHuge => &self.no_huge,
        };
        let Ok(()) = self.for_each_run(&self.huge, false, pages, |not_huge| {
            self.for_each_run(&self.no_huge, false, not_huge, |neither| {
                let (ptr, len) = (
                    self.at(neither.first * self.page),
                    neither.count * self.page,
                );
                // SAFETY: as above.
                if unsafe { sys::advise_huge(ptr, len, advice) }.is_ok() {
                    given.set_range(neither.first, neither.count);
                }
                Ok::<(), core::convert::Infallible>(())
            })
        });
    }

    /// The platform huge-page advice, with a failure injected half-way in unit tests.
    ///
    /// # Safety
    /// As [`sys::advise_huge`].
    unsafe fn sys_advise_huge(
        &self,
        ptr: *mut u8,
        len: usize,
        advice: HugePageAdvice,
    ) -> Result<(), sys::SysError> {
        #[cfg(test)]
        if let Some(applied) = tests::ADVISE_FAILS_AFTER.with(core::cell::Cell::take) {
            if applied > 0 {
                // SAFETY: a prefix of the caller's range, as `madvise` leaves it when it stops
                // half-way.
                unsafe { sys::advise_huge(ptr, applied.min(len), advice) }?;
            }
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::advise_huge(ptr, len, advice) }
    }

    /// Turns the range into guard pages: their contents are discarded, they are no longer
    /// committed (nor locked, as for [`decommit`](Self::decommit)), any access faults (in both
    /// modes), and they cannot be committed until
    /// [`unguard`](Self::unguard)ed. On Linux 6.13 and later, guard pages of a
    /// [`CommitMode::Sparse`] reservation are guard markers, which do not split the mapping.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::Os`] if the system refuses. A
    /// refusal may come after the range was decommitted (its contents are then gone): its pages
    /// are then uncommitted and not guard pages, committable as any others; only where the
    /// system also refuses to take back what it changed of the range are they counted as guard
    /// pages, for [`unguard`](Self::unguard) to restore. A refusal while decommitting leaves
    /// the range as a refused [`decommit`](Self::decommit) does: unlocked, and each page
    /// still committed (its contents maybe discarded) or decommitted.
    pub fn guard(&mut self, offset: usize, len: usize) -> Result<()> {
        // SAFETY: `&mut self`: no other thread uses the reservation through this handle.
        unsafe { self.guard_inner(offset, len) }
    }

    /// [`guard`](Self::guard) through a shared reference.
    ///
    /// # Errors
    /// As [`guard`](Self::guard); first of all [`Error::HeldByVector`] for the reservation of a
    /// [`vec::Vec`](crate::vec::Vec) or [`vec::ConcurrentVec`](crate::vec::ConcurrentVec)
    /// (reached through its `reservation()`), whose elements live in its memory whatever the
    /// caller vouches for: nothing changes then.
    ///
    /// # Safety
    /// As [`decommit_unchecked`](Self::decommit_unchecked).
    pub unsafe fn guard_unchecked(&self, offset: usize, len: usize) -> Result<()> {
        self.not_held_by_vector(Operation::Guard)?;
        // SAFETY: the caller's promise.
        unsafe { self.guard_inner(offset, len) }
    }

    /// The body of [`guard`](Self::guard) and [`guard_unchecked`](Self::guard_unchecked).
    ///
    /// # Safety
    /// As [`decommit_inner`](Self::decommit_inner).
    unsafe fn guard_inner(&self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        let ptr = self.at(offset);
        // Until the pages are recorded as guard pages: a commit in between would make them
        // accessible and count them committed.
        let serial = self.lock_calls.hold();
        self.check_held(pages)?;
        // SAFETY: the range is unreferenced (caller's promise).
        unsafe { self.decommit_pages(pages, &serial) }.map_err(|e| e.during(Operation::Guard))?;
        // SAFETY: the range is inside the reservation, unreferenced and now decommitted.
        if let Err(e) = unsafe { self.sys_guard(ptr, len) } {
            self.guard_refused(pages);
            return Err(e.during(Operation::Guard));
        }
        self.guarded.set_range(pages.first, pages.count);
        Ok(())
    }

    /// After the system refused to make decommitted `pages` guard pages: it may have changed
    /// part of them (the `mprotect` fallback stops half-way at the mapping limit, guard
    /// markers may be on some pages), and in [`CommitMode::Sparse`] a page whose protection
    /// was lowered keeps it through the decommit, while a sparse commit makes no system call
    /// for uncommitted pages. So the pages that were not guard pages before get the mode's
    /// uncommitted state back; a run the system refuses even that is counted as guard pages,
    /// which nothing commits or touches until an [`unguard`](Self::unguard) restores them.
    fn guard_refused(&self, pages: Pages) {
        let Ok(()) = self.for_each_run(&self.guarded, false, pages, |run| {
            let (ptr, len) = (self.at(run.first * self.page), run.count * self.page);
            // SAFETY: the run is inside the reservation, decommitted and unreferenced (the
            // guard's contract); taking guard markers or `PROT_NONE` away changes no
            // contents.
            if unsafe { sys::unguard(ptr, len, self.mode) }.is_err() {
                self.guarded.set_range(run.first, run.count);
            }
            Ok::<(), core::convert::Infallible>(())
        });
    }

    /// The platform guard, with a failure injected in unit tests.
    ///
    /// # Safety
    /// As [`sys::guard`].
    unsafe fn sys_guard(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(test)]
        if let Some(applied) = tests::GUARD_FAILS_AFTER.with(core::cell::Cell::take) {
            if applied > 0 {
                // SAFETY: a prefix of the caller's range, as the `mprotect` fallback leaves it
                // when it stops half-way.
                unsafe { sys::protect(ptr, applied.min(len), Protection::None) }?;
            }
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::guard(ptr, len, self.mode) }
    }

    /// Turns guard pages back into uncommitted pages.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NotGuarded`] for a page in it that
    /// is not a guard page; [`Error::Os`] if the system refuses. The system may refuse after
    /// making part of the range accessible (in [`CommitMode::Sparse`], the `mprotect`
    /// fallback for kernels without guard markers stops half-way at the mapping limit): the
    /// whole range is then made guard pages again, so a refused unguard changes nothing. Only
    /// where the system refuses that too may some of its pages, still counted as guard pages,
    /// be accessible.
    pub fn unguard(&mut self, offset: usize, len: usize) -> Result<()> {
        let pages = self.check_whole(offset, len)?;
        if let Some(page) = self.guarded.first_clear(pages.first, pages.count) {
            return Err(Error::NotGuarded {
                offset: page * self.page,
            });
        }
        // SAFETY: the range is inside the reservation and holds only guard pages.
        if let Err(e) = unsafe { self.sys_unguard(self.at(offset), len) } {
            // The system may have made part of the range accessible before refusing (the
            // `mprotect` of a sparse unguard stops half-way at the mapping limit): make all of
            // it guard pages again, as the bookkeeping still counts it.
            // Where even that is refused, the range stays counted as guard pages, the side on
            // which nothing is committed or touched that may fault, until an unguard succeeds.
            // SAFETY: the range is inside the reservation, and was guard pages (decommitted and
            // unreferenced) before the call; `&mut self` keeps it so.
            let _ = unsafe { sys::guard(self.at(offset), len, self.mode) };
            return Err(e.during(Operation::Unguard));
        }
        self.guarded.clear_range(pages.first, pages.count);
        Ok(())
    }

    /// The platform unguard, with a failure injected half-way in unit tests.
    ///
    /// # Safety
    /// As [`sys::unguard`].
    unsafe fn sys_unguard(&self, ptr: *mut u8, len: usize) -> Result<(), sys::SysError> {
        #[cfg(test)]
        if let Some(applied) = tests::UNGUARD_FAILS_AFTER.with(core::cell::Cell::take) {
            if applied > 0 {
                // SAFETY: a prefix of the caller's range, as an `mprotect` stopping half-way
                // leaves it.
                unsafe { sys::unguard(ptr, applied.min(len), self.mode) }?;
            }
            return Err(sys::SysError::Os(crate::OsError::from_raw(12)));
        }
        // SAFETY: the caller's promise.
        unsafe { sys::unguard(ptr, len, self.mode) }
    }

    /// Whether every page of the range is committed.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range.
    pub fn is_committed(&self, offset: usize, len: usize) -> Result<bool> {
        let pages = self.check(offset, len)?;
        Ok(self
            .committed
            .first_clear(pages.first, pages.count)
            .is_none())
    }

    /// Whether every page of the range is a guard page.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range.
    pub fn is_guarded(&self, offset: usize, len: usize) -> Result<bool> {
        let pages = self.check(offset, len)?;
        Ok(self.guarded.first_clear(pages.first, pages.count).is_none())
    }

    /// The number of committed bytes in the whole reservation, in constant time (a counter
    /// kept by commit, decommit and guard). While other threads commit or decommit it is one
    /// of the values the count passes through (those calls take turns, so each adds or
    /// subtracts after its system call and before the next call's).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::{Reservation, page_size};
    ///
    /// let mut r = Reservation::new(1 << 30)?;
    /// assert_eq!(r.committed_bytes(), 0);
    /// r.commit(0, 4 * page_size())?;
    /// r.commit(2 * page_size(), 4 * page_size())?;
    /// assert_eq!(r.committed_bytes(), 6 * page_size());
    /// r.decommit(0, page_size())?;
    /// assert_eq!(r.committed_bytes(), 5 * page_size());
    /// # Ok::<(), memvisor_vmem::Error>(())
    /// ```
    #[must_use]
    pub fn committed_bytes(&self) -> usize {
        let pages = self.committed_pages.load(Ordering::Relaxed);
        // A transient "negative" count (see the field) reads as zero.
        let pages = if pages > self.len / self.page {
            0
        } else {
            pages
        };
        pages * self.page
    }

    /// Which pages of the range are resident (committed and backed by memory now), one entry
    /// per page. Under Miri every committed page counts as resident. On Windows a page
    /// protected with [`Protection::None`] is outside the working set and reports not resident.
    ///
    /// The answer takes a byte per page of the range (256 MiB for 1 TiB of 4 KiB pages),
    /// allocated whole before anything else; for a count, [`resident_pages`](Self::resident_pages)
    /// allocates nothing. The system is asked only about the range's committed runs, as
    /// `resident_pages` does: the other pages are never resident.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) for the range; [`Error::NoMemory`] if the host's allocator
    /// refuses the answer's byte per page; [`Error::Os`] if the query fails.
    pub fn residency(&self, offset: usize, len: usize) -> Result<Vec<bool>> {
        let pages = self.check(offset, len)?;
        let mut out = Vec::new();
        out.try_reserve_exact(pages.count)
            .map_err(|_| Error::NoMemory {
                operation: Operation::Residency,
                bytes: pages.count,
            })?;
        // Uncommitted pages are never resident: only the committed runs are asked about, as
        // in `resident_pages`, and the pages between them answer `false`. Within the capacity
        // reserved above, so nothing more is allocated.
        self.for_each_run(&self.committed, true, pages, |run| {
            out.resize(run.first - pages.first, false);
            self.for_each_residency(run, |resident| out.push(resident))
        })?;
        out.resize(pages.count, false);
        Ok(out)
    }

    /// The number of resident pages in the range (see [`residency`](Self::residency)). Only
    /// the committed runs of the range are asked about (uncommitted pages never count), so the
    /// time is in proportion to the range's committed pages plus one bitmap word per 64 pages:
    /// a 1 TiB range with a few committed pages takes milliseconds.
    ///
    /// # Errors
    /// As [`residency`](Self::residency), but never [`Error::NoMemory`]: it allocates nothing.
    pub fn resident_pages(&self, offset: usize, len: usize) -> Result<usize> {
        let pages = self.check(offset, len)?;
        let mut count = 0;
        self.for_each_run(&self.committed, true, pages, |run| {
            self.for_each_residency(run, |resident| count += usize::from(resident))
        })?;
        Ok(count)
    }

    fn for_each_residency(&self, pages: Pages, mut f: impl FnMut(bool)) -> Result<()> {
        const BATCH: usize = 4096;
        let mut buf = [0u8; BATCH];
        let mut done = 0;
        while done < pages.count {
            let n = (pages.count - done).min(BATCH);
            let first = pages.first + done;
            // SAFETY: pages `first..first + n` are inside the reservation; `buf` holds `n`
            // bytes.
            unsafe { sys::residency(self.at(first * self.page), n * self.page, &mut buf[..n]) }
                .map_err(|e| e.during(Operation::Residency))?;
            for (i, byte) in buf[..n].iter().enumerate() {
                f(byte & 1 != 0 && self.committed.get(first + i));
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !*self.any_lost.get_mut() {
            // SAFETY: the mapping was made by `sys::reserve` with this length and alignment
            // and is no longer used: `&mut self`, and it is being dropped.
            unsafe { sys::release(self.ptr, self.len, self.align) };
            return;
        }
        // Lost pages may hold a mapping of someone else now: only the runs around them are
        // the reservation's to unmap (which only Unix systems lose pages to, see `fill_hole`).
        let all = Pages {
            first: 0,
            count: self.len / self.page,
        };
        let Ok(()) = self.for_each_run(&self.lost, false, all, |own| {
            // SAFETY: the pages of `own` are the reservation's own and no longer used.
            unsafe {
                sys::release(
                    self.ptr.add(own.first * self.page),
                    own.count * self.page,
                    self.page,
                );
            }
            Ok::<(), core::convert::Infallible>(())
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn protection_rights_and_display_agree() {
        let all = [
            (Protection::None, "---"),
            (Protection::Read, "r--"),
            (Protection::ReadWrite, "rw-"),
            (Protection::ReadExecute, "r-x"),
            (Protection::ReadWriteExecute, "rwx"),
        ];
        for (p, shown) in all {
            assert_eq!(p.to_string(), shown);
            assert_eq!(p.readable(), shown.starts_with('r'), "{p:?}");
            assert_eq!(p.writable(), &shown[1..2] == "w", "{p:?}");
            assert_eq!(p.executable(), shown.ends_with('x'), "{p:?}");
        }
        assert_eq!(Protection::default(), Protection::ReadWrite);
    }

    /// Pages recorded as explicit huge pages (here of four and of two pages, so that no huge
    /// page of the system is needed): every call that changes pages refuses a range cutting
    /// one, naming the huge page size, and changes nothing; queries and whole huge pages are
    /// accepted, and a decommit gives the pages back to the reservation's own.
    #[test]
    fn ranges_cutting_recorded_huge_pages_are_refused_before_any_change() {
        let p = page();
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            // Aligned as `map` aligns explicit huge pages.
            let mut r = Reservation::builder()
                .mode(mode)
                .alignment(16 * p)
                .reserve(16 * p)
                .unwrap();
            r.commit(0, 16 * p).unwrap();
            // Pages 4..12 in huge pages of four pages, 12..16 in huge pages of two, as a
            // `map` of explicit huge pages records them.
            for (first, count, size) in [(4, 8, 4 * p), (12, 4, 2 * p)] {
                let pages = Pages { first, count };
                r.mapped.set_range(first, count);
                record_huge_pages(&r, pages, size);
            }
            let cut = |what, value, page_size| Error::Misaligned {
                what,
                value,
                page_size,
            };
            let cases = [
                (5 * p, p, cut("offset", 5 * p, 4 * p)),
                (0, 5 * p, cut("end", 5 * p, 4 * p)),
                (4 * p, 7 * p, cut("end", 11 * p, 4 * p)),
                (10 * p, 2 * p, cut("offset", 10 * p, 4 * p)),
                (8 * p, 5 * p, cut("end", 13 * p, 2 * p)),
                (13 * p, 3 * p, cut("offset", 13 * p, 2 * p)),
            ];
            for (offset, len, expected) in cases {
                let expected = Err(expected);
                let what = alloc::format!("{mode:?} {offset:#x}+{len:#x}");
                assert_eq!(r.commit(offset, len), expected, "commit {what}");
                assert_eq!(r.decommit(offset, len), expected, "decommit {what}");
                assert_eq!(
                    r.protect(offset, len, Protection::Read),
                    expected,
                    "protect {what}"
                );
                assert_eq!(r.lock(offset, len), expected, "lock {what}");
                assert_eq!(r.unlock(offset, len), expected, "unlock {what}");
                assert_eq!(r.guard(offset, len), expected, "guard {what}");
                assert_eq!(r.unguard(offset, len), expected, "unguard {what}");
                assert_eq!(
                    r.advise_huge_pages(offset, len, HugePageAdvice::NoHuge),
                    expected,
                    "advise_huge_pages {what}"
                );
                assert_eq!(
                    r.advise(offset, len, crate::Advice::DontDump),
                    expected,
                    "advise {what}"
                );
                assert_eq!(
                    r.bind_numa(offset, len, crate::NumaPolicy::Default, &[]),
                    expected,
                    "bind_numa {what}"
                );
                assert_eq!(r.free(offset, len), expected, "free {what}");
                assert_eq!(r.discard(offset, len), expected, "discard {what}");
                assert_eq!(r.purge(offset, len), expected, "purge {what}");
                #[cfg(unix)]
                assert_eq!(
                    r.map(
                        offset,
                        len,
                        crate::MapSource::AnonymousShared,
                        Protection::ReadWrite,
                        None
                    ),
                    expected,
                    "map {what}"
                );
                assert_eq!(r.committed_bytes(), 16 * p, "{what}");
                assert!(r.is_committed(offset, len).unwrap(), "{what}");
                assert_eq!(r.writable.count_set(0, 16), 16, "{what}");
            }
            assert_eq!(
                r.free(0, 8 * p),
                Err(Error::HugeTlb {
                    offset: 4 * p,
                    operation: Operation::Free
                })
            );
            // Whole huge pages are accepted; their decommit puts the reservation's own pages
            // back, which any range may cut again.
            r.protect(4 * p, 4 * p, Protection::Read).unwrap();
            r.commit(12 * p, 2 * p).unwrap();
            r.decommit(4 * p, 12 * p).unwrap();
            assert_eq!(
                r.first_hugetlb(Pages {
                    first: 0,
                    count: 16
                }),
                None
            );
            r.commit(5 * p, p).unwrap();
            r.decommit(13 * p, p).unwrap();
        }
    }

    /// Records `pages` as mapped with explicit huge pages of `size` bytes, as a `map` of them
    /// records them (here without the system's huge pages).
    fn record_huge_pages(r: &Reservation, pages: Pages, size: usize) {
        let serial = r.lock_calls.hold();
        let planes = r.hugetlb_planes(&serial).unwrap();
        r.record_hugetlb(planes, pages, size);
    }

    /// A reservation makes no bitmaps for explicit huge pages until it maps some: reserving,
    /// committing, protecting, decommitting and mapping base pages leave it without them (and
    /// its ranges unchecked against them); the first map of explicit huge pages that the system
    /// grants makes them (here base pages stand in for the huge pages), and later ones keep
    /// them, granted or refused. (Where the platform cannot map, no map makes them.)
    #[cfg(any(target_os = "linux", miri))]
    #[test]
    fn planes_for_huge_pages_are_made_by_the_first_map_of_them() {
        const HUGE: usize = 2 << 20;
        let p = page();
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = Reservation::builder()
                .mode(mode)
                .alignment(HUGE)
                .reserve(2 * HUGE)
                .unwrap();
            r.commit(0, 4 * p).unwrap();
            r.protect(0, p, Protection::Read).unwrap();
            r.decommit(0, 2 * p).unwrap();
            let _ = r.map(
                HUGE,
                2 * p,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                None,
            );
            r.decommit(HUGE, 2 * p).unwrap();
            assert!(r.hugetlb.get().is_none(), "{mode:?}");
            HUGE_PAGES_GRANTED.with(|f| f.set(true));
            r.map(
                0,
                HUGE,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                Some(HugeTlbSize::Size2M),
            )
            .unwrap();
            let planes = r.hugetlb.get().expect("made by the map") as *const _;
            assert_eq!(
                r.commit(p, p),
                Err(Error::Misaligned {
                    what: "offset",
                    value: p,
                    page_size: HUGE
                })
            );
            r.decommit(0, HUGE).unwrap();
            // The host's answer, whichever it is.
            let _ = r.map(
                0,
                HUGE,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                Some(HugeTlbSize::Size2M),
            );
            // Made once: the second map found them.
            assert!(core::ptr::eq(r.hugetlb.get().unwrap(), planes), "{mode:?}");
        }
    }

    /// Only a map of explicit huge pages asks the system for the bitmaps that record them,
    /// once it was granted (here base pages stand in for the huge pages): reserving and every
    /// call on a reservation that never maps huge pages make no mapping for them.
    #[cfg(any(target_os = "linux", miri))]
    #[test]
    fn only_the_first_map_of_huge_pages_makes_their_bitmaps() {
        const HUGE: usize = 2 << 20;
        let p = page();
        let planes = usize::BITS.ilog2() as usize;
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let made = crate::bitmap::made();
            let mut r = Reservation::builder()
                .mode(mode)
                .alignment(HUGE)
                .reserve(2 * HUGE)
                .unwrap();
            let by_reserve = crate::bitmap::made() - made;
            r.commit(0, 4 * p).unwrap();
            r.protect(0, p, Protection::Read).unwrap();
            r.decommit(0, 2 * p).unwrap();
            let _ = r.map(
                HUGE,
                2 * p,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                None,
            );
            r.decommit(HUGE, 2 * p).unwrap();
            assert_eq!(crate::bitmap::made() - made, by_reserve, "{mode:?}");
            for _ in 0..2 {
                HUGE_PAGES_GRANTED.with(|f| f.set(true));
                r.map(
                    0,
                    HUGE,
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    Some(HugeTlbSize::Size2M),
                )
                .unwrap();
                assert_eq!(
                    crate::bitmap::made() - made,
                    by_reserve + planes,
                    "{mode:?}"
                );
            }
        }
    }

    /// Calls whose range checks run while another thread's map of explicit huge pages makes
    /// the bitmaps recording them see either none (the range is not checked against them)
    /// or all of them built: each answer is one that some order of the two calls gives. (Base
    /// pages stand in for the huge pages, which the host may have none of.)
    #[cfg(any(target_os = "linux", miri))]
    #[test]
    fn range_checks_racing_the_first_map_of_huge_pages_see_no_planes_or_built_ones() {
        const HUGE: usize = 2 << 20;
        let p = page();
        let r = Reservation::builder()
            .alignment(HUGE)
            .reserve(2 * HUGE)
            .unwrap();
        let cut = Err(Error::Misaligned {
            what: "offset",
            value: p,
            page_size: HUGE,
        });
        std::thread::scope(|s| {
            s.spawn(|| {
                HUGE_PAGES_GRANTED.with(|f| f.set(true));
                // SAFETY: nothing refers to the reservation's contents; the other thread only
                // commits and asks.
                unsafe {
                    r.map_unchecked(
                        0,
                        HUGE,
                        MapSource::AnonymousPrivate,
                        Protection::ReadWrite,
                        Some(HugeTlbSize::Size2M),
                    )
                }
                .unwrap();
            });
            for _ in 0..4 {
                let committed = r.commit(p, p);
                assert!(committed.is_ok() || committed == cut, "{committed:?}");
                r.commit(HUGE + p, p).unwrap();
                assert_eq!(
                    r.first_hugetlb(Pages {
                        first: HUGE / p,
                        count: HUGE / p
                    }),
                    None
                );
            }
        });
        assert!(r.hugetlb.get().is_some());
    }

    /// The bitmaps for explicit huge pages are made only once the system granted the first
    /// map of them. A refusal to make them then fails that map with the system's error, and
    /// the pages they cannot record are replaced by the reservation's own uncommitted ones, as
    /// after a map the system refused once it took the old pages: no bitmap stays made, nothing
    /// counts as mapped or committed, the range reads zero once committed, and the next map
    /// the system grants makes them.
    #[cfg(any(target_os = "linux", miri))]
    #[test]
    fn a_refused_plane_after_a_granted_map_puts_the_own_pages_back() {
        const HUGE: usize = 2 << 20;
        let p = page();
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = Reservation::builder()
                .mode(mode)
                .alignment(HUGE)
                .reserve(HUGE)
                .unwrap();
            r.commit(0, 2 * p).unwrap();
            r.protect(p, p, Protection::Read).unwrap();
            // SAFETY: the first page is committed read-write and nothing else uses it.
            unsafe { r.as_ptr().write(7) };
            let made = crate::bitmap::made();
            HUGE_PAGES_GRANTED.with(|f| f.set(true));
            HUGETLB_PLANES_REFUSED.with(|f| f.set(true));
            assert_eq!(
                r.map(
                    0,
                    HUGE,
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    Some(HugeTlbSize::Size2M),
                ),
                Err(Error::Os {
                    operation: Operation::Map,
                    source: crate::OsError::from_raw(12)
                }),
                "{mode:?}"
            );
            assert!(!HUGETLB_PLANES_REFUSED.with(core::cell::Cell::get));
            assert!(r.hugetlb.get().is_none(), "{mode:?}");
            assert_eq!(crate::bitmap::made(), made);
            assert_eq!(r.committed_bytes(), 0, "{mode:?}");
            assert_eq!(r.mapped.first_set(0, HUGE / p), None);
            assert!(!r.writable.get(0) && !r.inaccessible.get(1));
            r.commit(0, HUGE).unwrap();
            // SAFETY: committed read-write now; fresh pages.
            assert_eq!(unsafe { r.as_ptr().read() }, 0, "{mode:?}");
            r.decommit(0, HUGE).unwrap();
            // Refused no more: the next map the system grants makes them.
            HUGE_PAGES_GRANTED.with(|f| f.set(true));
            r.map(
                0,
                HUGE,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                Some(HugeTlbSize::Size2M),
            )
            .unwrap();
            assert!(r.hugetlb.get().is_some(), "{mode:?}");
        }
    }

    /// The reservation's own pages put back over huge pages whose record could not be made
    /// get the range's recorded advice again, as after a map the system refused once it took
    /// the old pages: the range is as it was but for its contents (pages left out of core
    /// dumps stay out).
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_refused_plane_after_a_granted_map_keeps_the_range_advice() {
        const HUGE: usize = 2 << 20;
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let r = Reservation::builder()
                .mode(mode)
                .alignment(HUGE)
                .reserve(HUGE)
                .unwrap();
            r.advise(0, HUGE, Advice::DontDump).unwrap();
            r.advise(0, HUGE, Advice::DontFork).unwrap();
            HUGE_PAGES_GRANTED.with(|f| f.set(true));
            HUGETLB_PLANES_REFUSED.with(|f| f.set(true));
            // SAFETY: nothing refers to the reservation's contents.
            let answer = unsafe {
                r.map_unchecked(
                    0,
                    HUGE,
                    MapSource::AnonymousPrivate,
                    Protection::ReadWrite,
                    Some(HugeTlbSize::Size2M),
                )
            };
            assert!(matches!(answer, Err(Error::Os { .. })), "{answer:?}");
            assert_eq!(r.lost.first_set(0, HUGE / page()), None, "{mode:?}");
            assert_eq!(r.dont_dump.first_clear(0, HUGE / page()), None, "{mode:?}");
            assert_eq!(r.dont_fork.first_clear(0, HUGE / page()), None, "{mode:?}");
            assert_eq!(all_have(&r, 0, HUGE, "dd"), Some(true), "{mode:?}");
            assert_eq!(all_have(&r, 0, HUGE, "dc"), Some(true), "{mode:?}");
        }
    }

    /// Where the system refuses to put the reservation's own pages back over huge pages whose
    /// record could not be made, and they are still mapped, they are lost: unrecorded, later
    /// calls would change them part-way.
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_refused_plane_and_refused_own_pages_lose_the_range() {
        const HUGE: usize = 2 << 20;
        let r = Reservation::builder()
            .alignment(HUGE)
            .reserve(2 * HUGE)
            .unwrap();
        HUGE_PAGES_GRANTED.with(|f| f.set(true));
        HUGETLB_PLANES_REFUSED.with(|f| f.set(true));
        REPLACE_REFUSED.with(|f| f.set(1));
        // SAFETY: nothing refers to the reservation's contents.
        let answer = unsafe {
            r.map_unchecked(
                0,
                HUGE,
                MapSource::AnonymousPrivate,
                Protection::ReadWrite,
                Some(HugeTlbSize::Size2M),
            )
        };
        assert_eq!(REPLACE_REFUSED.with(core::cell::Cell::get), 0);
        assert!(matches!(answer, Err(Error::Os { .. })), "{answer:?}");
        assert_eq!(r.commit(0, page()), Err(Error::Lost { offset: 0 }));
        assert_eq!(r.committed_bytes(), 0);
        r.commit(HUGE, HUGE).unwrap();
    }

    /// A call on a range through a shared reference.
    type Call = fn(&Reservation, usize, usize) -> Result<()>;

    /// Every call that takes the call lock, by name, over `offset..offset + len`.
    fn calls_that_take_the_call_lock() -> [(&'static str, Call); 13] {
        [
            ("commit", |r, o, l| r.commit(o, l)),
            ("lock", |r, o, l| r.lock(o, l)),
            ("unlock", |r, o, l| r.unlock(o, l)),
            ("advise_huge_pages", |r, o, l| {
                r.advise_huge_pages(o, l, HugePageAdvice::Huge)
            }),
            ("advise", |r, o, l| r.advise(o, l, crate::Advice::DontDump)),
            ("bind_numa", |r, o, l| {
                r.bind_numa(o, l, crate::NumaPolicy::Default, &[])
            }),
            // SAFETY: nothing refers to the reservation's contents (nor for the calls below).
            ("decommit", |r, o, l| unsafe { r.decommit_unchecked(o, l) }),
            // SAFETY: as above.
            ("protect", |r, o, l| unsafe {
                r.protect_unchecked(o, l, Protection::Read)
            }),
            // SAFETY: as above.
            ("guard", |r, o, l| unsafe { r.guard_unchecked(o, l) }),
            // SAFETY: as above.
            ("free", |r, o, l| unsafe { r.free_unchecked(o, l) }),
            // SAFETY: as above.
            ("discard", |r, o, l| unsafe { r.discard_unchecked(o, l) }),
            // SAFETY: as above.
            ("purge", |r, o, l| unsafe { r.purge_unchecked(o, l) }),
            ("map", |r, o, l| {
                let source = MapSource::AnonymousPrivate;
                // SAFETY: as above.
                unsafe { r.map_unchecked(o, l, source, Protection::ReadWrite, None) }
            }),
        ]
    }

    /// A call whose range checks ran before another thread recorded explicit huge pages over
    /// its range, and that then waited for the call lock while they were mapped, checks its
    /// range against them again once it holds the lock: it is refused as a cut, as if it came
    /// after the map, and changes nothing (the system would refuse or round the range).
    #[test]
    fn calls_waiting_for_the_call_lock_check_huge_pages_recorded_meanwhile() {
        const HUGE: usize = 2 << 20;
        let p = page();
        let calls = calls_that_take_the_call_lock();
        let cut = Err(Error::Misaligned {
            what: "offset",
            value: p,
            page_size: HUGE,
        });
        let mut wrong = Vec::new();
        for (name, call) in calls {
            for mode in [CommitMode::Protected, CommitMode::Sparse] {
                let r = Reservation::builder()
                    .mode(mode)
                    .alignment(HUGE)
                    .reserve(2 * HUGE)
                    .unwrap();
                r.commit(0, HUGE).unwrap();
                let answer = std::thread::scope(|s| {
                    let serial = r.lock_calls.hold();
                    let waiting = s.spawn(|| call(&r, p, p));
                    // Time for the call to pass its checks and wait for the lock.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let planes = r.hugetlb_planes(&serial).unwrap();
                    r.record_hugetlb(
                        planes,
                        Pages {
                            first: 0,
                            count: HUGE / p,
                        },
                        HUGE,
                    );
                    drop(serial);
                    waiting.join().unwrap()
                });
                if answer != cut {
                    wrong.push((name, mode, answer));
                    continue;
                }
                assert_eq!(r.committed_bytes(), HUGE, "{name} {mode:?}");
                for bitmap in [&r.locked, &r.mapped, &r.guarded, &r.dont_dump, &r.huge] {
                    assert_eq!(bitmap.first_set(0, 2 * HUGE / p), None, "{name} {mode:?}");
                }
                assert!(
                    r.writable.get(1) && !r.inaccessible.get(1),
                    "{name} {mode:?}"
                );
            }
        }
        assert!(wrong.is_empty(), "answered other than a cut: {wrong:?}");
    }

    /// A call whose range checks ran before another thread's decommit or map lost pages of
    /// its range (the system took them and refused to give them back), and that then waited
    /// for the call lock, checks its range for lost pages again once it holds the lock: it is
    /// refused with `Error::Lost` and never acts on the hole, where another mapping may be.
    #[test]
    // Lost pages happen on Unix only; the page marked lost here stays mapped, which Miri's
    // release of the runs around it cannot take apart.
    #[cfg(all(unix, not(miri)))]
    fn calls_waiting_for_the_call_lock_check_pages_lost_meanwhile() {
        let p = page();
        let lost = Err(Error::Lost { offset: p });
        let mut wrong = Vec::new();
        for (name, call) in calls_that_take_the_call_lock() {
            for mode in [CommitMode::Protected, CommitMode::Sparse] {
                let r = Reservation::builder().mode(mode).reserve(4 * p).unwrap();
                r.commit(0, 2 * p).unwrap();
                let answer = std::thread::scope(|s| {
                    let serial = r.lock_calls.hold();
                    let waiting = s.spawn(|| call(&r, p, p));
                    // Time for the call to pass its checks and wait for the lock.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    // As a decommit whose fill of the hole was refused records it (the page
                    // stays mapped here, so that nothing else can be placed there).
                    r.lose(Pages { first: 1, count: 1 });
                    drop(serial);
                    waiting.join().unwrap()
                });
                if answer != lost {
                    wrong.push((name, mode, answer));
                }
            }
        }
        assert!(wrong.is_empty(), "answered other than lost: {wrong:?}");
    }

    /// The prefaults through `&self` share the call lock: they run while another call shares
    /// it (so the parts `memvisor-space` populates from several threads run at once), and
    /// only a call that holds it alone waits for them.
    #[test]
    fn prefaults_through_shared_references_do_not_wait_for_each_other() {
        let p = page();
        let r = Reservation::new(4 * p).unwrap();
        r.commit(0, 4 * p).unwrap();
        let (done, answer) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            // Dropped before the scope joins, also if the wait below fails.
            let shared = r.lock_calls.share();
            s.spawn(|| {
                // SAFETY: nothing reads or writes the reservation's contents.
                let write = unsafe { r.prefault_unchecked(0, 2 * p) };
                // SAFETY: as above.
                let read = unsafe { r.prefault_read_unchecked(2 * p, 2 * p) };
                done.send((write, read)).unwrap();
            });
            let got = answer.recv_timeout(std::time::Duration::from_secs(120));
            drop(shared);
            assert_eq!(got, Ok((Ok(()), Ok(()))), "a prefault waited for a share");
        });
    }

    /// `bind_numa` shares the call lock: it runs while a prefault through `&self` shares it
    /// (here the test's share stands for one populating another range), so prefaults and
    /// binds go on while the kernel moves a bound range's pages; only a call that holds the
    /// lock alone waits for it.
    #[test]
    fn bind_numa_does_not_wait_for_a_prefault_in_progress() {
        let p = page();
        let r = Reservation::new(4 * p).unwrap();
        r.commit(0, 4 * p).unwrap();
        let (done, answer) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            // Dropped before the scope joins, also if the wait below fails.
            let shared = r.lock_calls.share();
            s.spawn(|| {
                let bind = r.bind_numa(0, 2 * p, crate::NumaPolicy::Default, &[]);
                let move_pages = r.bind_numa(2 * p, 2 * p, crate::NumaPolicy::Bind, &[0]);
                done.send((bind, move_pages)).unwrap();
            });
            let got = answer.recv_timeout(std::time::Duration::from_secs(60));
            drop(shared);
            let (bind, move_pages) = got.expect("bind_numa waited for a share of the lock");
            if cfg!(any(target_os = "linux", miri)) {
                assert_eq!(bind, Ok(()));
                // The system's to judge (it may lack NUMA support), but never a lock refusal.
                assert!(
                    !matches!(move_pages, Err(Error::NumaPolicyNodes { .. })),
                    "{move_pages:?}"
                );
            } else {
                assert!(matches!(bind, Err(Error::Unsupported { .. })), "{bind:?}");
            }
        });
    }

    /// The prefaults through `&self` check their range once they share the call lock: a page
    /// lost by a call that held the lock meanwhile (a decommit whose fill of the hole was
    /// refused, on another thread) is refused, never populated or touched.
    #[test]
    // As above: lost pages happen on Unix only, and Miri cannot release around them.
    #[cfg(all(unix, not(miri)))]
    fn prefaults_waiting_for_the_call_lock_see_pages_lost_meanwhile() {
        let p = page();
        let prefaults: [(&str, Call); 2] = [
            // SAFETY: nothing reads or writes the reservation's contents.
            ("prefault", |r, o, l| unsafe { r.prefault_unchecked(o, l) }),
            // SAFETY: as above.
            ("prefault_read", |r, o, l| unsafe {
                r.prefault_read_unchecked(o, l)
            }),
        ];
        for (name, call) in prefaults {
            for mode in [CommitMode::Protected, CommitMode::Sparse] {
                let r = Reservation::builder().mode(mode).reserve(4 * p).unwrap();
                r.commit(0, 2 * p).unwrap();
                let answer = std::thread::scope(|s| {
                    let serial = r.lock_calls.hold();
                    let waiting = s.spawn(|| call(&r, p, p));
                    // Time for the call to pass its checks and wait for the lock.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    r.lose(Pages { first: 1, count: 1 });
                    drop(serial);
                    waiting.join().unwrap()
                });
                assert_eq!(answer, Err(Error::Lost { offset: p }), "{name} {mode:?}");
            }
        }
    }

    /// A range check that reads the record of explicit huge pages while a map rewrites it
    /// (2 MiB pages replaced by base pages here, half of its planes cleared so far) may see a
    /// size no huge page there ever had: it gives its answer only as the record stands once
    /// that map is done, as some order of the two calls allows.
    #[test]
    fn a_cut_read_while_the_record_is_rewritten_is_answered_from_the_finished_record() {
        const HUGE: usize = 2 << 20;
        let p = page();
        let r = Reservation::builder()
            .alignment(HUGE)
            .reserve(2 * HUGE)
            .unwrap();
        let huge_pages = Pages {
            first: 0,
            count: HUGE / p,
        };
        record_huge_pages(&r, huge_pages, HUGE);
        let shift = (HUGE / p).trailing_zeros() as usize;
        let answer = std::thread::scope(|s| {
            let serial = r.lock_calls.hold();
            let planes = r.hugetlb_planes(&serial).unwrap();
            // Half way through the map's record of base pages: the lowest plane set for
            // 2 MiB pages is cleared, the others still say 2 MiB.
            let lowest = (0..HUGETLB_PLANES)
                .find(|bit| shift >> bit & 1 != 0)
                .unwrap();
            planes[lowest].clear_range(huge_pages.first, huge_pages.count);
            let checking = s.spawn(|| r.commit(p, p));
            std::thread::sleep(std::time::Duration::from_millis(100));
            // The map's record done.
            r.clear_hugetlb(huge_pages);
            drop(serial);
            checking.join().unwrap()
        });
        assert_eq!(answer, Ok(()));
        assert!(r.is_committed(p, p).unwrap());
    }

    std::thread_local! {
        /// When set, the next making of the bitmaps for explicit huge pages (by the first map
        /// of explicit huge pages) is refused, with `ENOMEM`.
        pub(super) static HUGETLB_PLANES_REFUSED: core::cell::Cell<bool> =
            const { core::cell::Cell::new(false) };
        /// When set, the next map of explicit huge pages of this thread that reaches the system
        /// maps base pages in their place (the host's pool may have no huge pages) and records
        /// them as the huge pages asked for, as a map the system grants does.
        pub(super) static HUGE_PAGES_GRANTED: core::cell::Cell<bool> =
            const { core::cell::Cell::new(false) };
        /// When set, the next lock of this thread locks this many bytes and then fails with
        /// `ENOMEM`, as the kernel may when it cannot populate the rest.
        pub(super) static LOCK_FAILS_AFTER: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
        /// When set, the next guard of this thread makes this many bytes inaccessible and then
        /// fails with `ENOMEM`, as the `mprotect` fallback may at the mapping limit.
        pub(super) static GUARD_FAILS_AFTER: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
        /// When set, the next unlock of this thread (also one undoing a failed lock) is refused
        /// with `ENOMEM`, as `munlock` may when splitting mappings at the limit.
        pub(super) static UNLOCK_FAILS: core::cell::Cell<bool> =
            const { core::cell::Cell::new(false) };
        /// When set, the next lock of this thread calls this after the system call returned.
        pub(super) static AFTER_LOCK: core::cell::RefCell<Option<alloc::boxed::Box<dyn FnOnce()>>> =
            const { core::cell::RefCell::new(None) };
        /// When set, the re-advice call of this thread's next decommit with this index
        /// (counted from zero over every run of every advice given again) is refused with
        /// `EAGAIN`.
        pub(crate) static READVISE_FAILS: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
        /// When set, the next unguard of this thread makes this many bytes accessible again and
        /// then fails with `ENOMEM`, as the `mprotect` of a sparse unguard may at the mapping
        /// limit.
        pub(super) static UNGUARD_FAILS_AFTER: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
        #[cfg(all(unix, not(miri)))]
        /// The number of this thread's next mappings of fresh pages over a range (a protected
        /// decommit, a decommit of a mapped run, putting pages back) that unmap the range and
        /// then fail with `ENOMEM`, as a `MAP_FIXED` mapping the kernel refuses after it
        /// unmapped the old pages does.
        pub(super) static REPLACE_TAKES_PAGES_AND_FAILS: core::cell::Cell<usize> =
            const { core::cell::Cell::new(0) };
        /// The number of fills of holes this thread tried.
        pub(super) static REFILLS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
        #[cfg(all(unix, not(miri)))]
        /// The number of this thread's next mappings of fresh pages over a range that fail
        /// with `ENOMEM` without changing anything (a test makes the hole it wants itself).
        pub(super) static REPLACE_REFUSED: core::cell::Cell<usize> =
            const { core::cell::Cell::new(0) };
        /// When set, the next `advise` of this thread gives its advice to this many bytes and
        /// then fails with `ENOMEM`, as `madvise` may when splitting mappings at the limit.
        pub(super) static ADVISE_FAILS_AFTER: core::cell::Cell<Option<usize>> =
            const { core::cell::Cell::new(None) };
        /// When set, the next advice of this thread (`advise`, `advise_huge_pages`) calls this
        /// after the system call returned.
        pub(super) static AFTER_ADVICE: core::cell::RefCell<Option<alloc::boxed::Box<dyn FnOnce()>>> =
            const { core::cell::RefCell::new(None) };
    }

    /// Whether the next fresh-pages mapping is to unmap its range and fail (see
    /// `REPLACE_TAKES_PAGES_AND_FAILS`).
    #[cfg(all(unix, not(miri)))]
    pub(super) fn replace_takes_pages_and_fails() -> bool {
        REPLACE_TAKES_PAGES_AND_FAILS.with(|f| {
            let left = f.get();
            f.set(left.saturating_sub(1));
            left > 0
        })
    }

    /// Whether the next fresh-pages mapping is to be refused without a change (see
    /// `REPLACE_REFUSED`).
    #[cfg(all(unix, not(miri)))]
    pub(super) fn replace_refused() -> bool {
        REPLACE_REFUSED.with(|f| {
            let left = f.get();
            f.set(left.saturating_sub(1));
            left > 0
        })
    }

    /// Whether making the bitmaps for explicit huge pages is to be refused (see
    /// `HUGETLB_PLANES_REFUSED`).
    pub(super) fn hugetlb_planes_refused() -> bool {
        HUGETLB_PLANES_REFUSED.with(|f| f.replace(false))
    }

    /// Whether the next map of explicit huge pages is to map base pages in their place (see
    /// `HUGE_PAGES_GRANTED`).
    pub(super) fn huge_pages_granted() -> bool {
        HUGE_PAGES_GRANTED.with(|f| f.replace(false))
    }

    /// Whether the next re-advice call is to be refused (see `READVISE_FAILS`).
    pub(super) fn readvise_refused() -> bool {
        READVISE_FAILS.with(|f| match f.get() {
            Some(0) => {
                f.set(None);
                true
            }
            Some(n) => {
                f.set(Some(n - 1));
                false
            }
            None => false,
        })
    }

    /// Runs the hook set in `AFTER_ADVICE`, if any.
    pub(super) fn after_advice() {
        if let Some(after) = AFTER_ADVICE.with(core::cell::RefCell::take) {
            after();
        }
    }

    /// The `VmFlags` of each kernel mapping that overlaps `addr..addr + len`.
    #[cfg(all(target_os = "linux", not(miri)))]
    fn vma_flags(addr: usize, len: usize) -> Vec<alloc::string::String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = Vec::new();
        let mut overlaps = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = head.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                overlaps = start < addr + len && addr < end;
            } else if let Some(flags) = line.strip_prefix("VmFlags:")
                && overlaps
            {
                out.push(alloc::string::String::from(flags.trim()));
            }
        }
        assert!(!out.is_empty(), "no mapping at {addr:#x}");
        out
    }

    /// Whether every mapping over the range has `flag`, or none has (`None` if mixed).
    #[cfg(all(target_os = "linux", not(miri)))]
    fn all_have(r: &Reservation, offset: usize, len: usize, flag: &str) -> Option<bool> {
        let flags = vma_flags(r.as_ptr() as usize + offset, len);
        let has = flags
            .iter()
            .filter(|f| f.split_whitespace().any(|x| x == flag))
            .count();
        if has == flags.len() {
            Some(true)
        } else if has == 0 {
            Some(false)
        } else {
            None
        }
    }

    #[test]
    fn decommit_locked_pages_succeeds_in_both_modes_and_unlocks_them() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = Reservation::builder()
                .mode(mode)
                .reserve(4 * page())
                .unwrap();
            r.commit(0, 4 * page()).unwrap();
            r.lock(0, 4 * page()).unwrap();
            r.decommit(page(), 2 * page()).unwrap();
            assert!(!r.is_committed(page(), page()).unwrap(), "{mode:?}");
            #[cfg(all(target_os = "linux", not(miri)))]
            {
                assert_eq!(
                    all_have(&r, page(), 2 * page(), "lo"),
                    Some(false),
                    "{mode:?}"
                );
                assert_eq!(all_have(&r, 0, page(), "lo"), Some(true), "{mode:?}");
                assert_eq!(
                    all_have(&r, 3 * page(), page(), "lo"),
                    Some(true),
                    "{mode:?}"
                );
            }
            r.commit(page(), 2 * page()).unwrap();
            r.unlock(0, 4 * page()).unwrap();
        }
    }

    #[test]
    fn guard_locked_pages_succeeds_in_both_modes() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = Reservation::builder()
                .mode(mode)
                .reserve(3 * page())
                .unwrap();
            r.commit(0, 3 * page()).unwrap();
            r.lock(0, 3 * page()).unwrap();
            r.guard(page(), page()).unwrap();
            assert!(r.is_guarded(page(), page()).unwrap(), "{mode:?}");
            #[cfg(all(target_os = "linux", not(miri)))]
            assert_eq!(all_have(&r, page(), page(), "lo"), Some(false), "{mode:?}");
            r.unguard(page(), page()).unwrap();
            r.commit(page(), page()).unwrap();
            // SAFETY: committed read-write again.
            assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn decommit_keeps_huge_page_advice_in_both_modes() {
        let huge = HUGE_PAGE.max(page());
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            for (advice, flag) in [(HugePageAdvice::Huge, "hg"), (HugePageAdvice::NoHuge, "nh")] {
                let mut r = Reservation::builder()
                    .alignment(huge)
                    .mode(mode)
                    .reserve(2 * huge)
                    .unwrap();
                r.commit(0, 2 * huge).unwrap();
                r.advise_huge_pages(0, 2 * huge, advice).unwrap();
                r.decommit(0, huge).unwrap();
                assert_eq!(
                    all_have(&r, 0, 2 * huge, flag),
                    Some(true),
                    "{mode:?} {advice:?}"
                );
                r.guard(0, page()).unwrap();
                assert_eq!(
                    all_have(&r, 0, 2 * huge, flag),
                    Some(true),
                    "{mode:?} {advice:?}"
                );
            }
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn lock_failing_half_way_unlocks_what_it_locked() {
        let r = reservation(8);
        r.commit(0, 8 * page()).unwrap();
        r.lock(0, 2 * page()).unwrap();
        LOCK_FAILS_AFTER.with(|f| f.set(Some(6 * page())));
        assert_eq!(
            r.lock(0, 8 * page()).unwrap_err(),
            Error::Os {
                operation: Operation::Lock,
                source: crate::OsError::from_raw(12)
            }
        );
        // Locked before the call: still locked. Locked by the failed call: unlocked.
        assert_eq!(all_have(&r, 0, 2 * page(), "lo"), Some(true));
        assert_eq!(all_have(&r, 2 * page(), 6 * page(), "lo"), Some(false));
        r.lock(0, 8 * page()).unwrap();
        assert_eq!(all_have(&r, 0, 8 * page(), "lo"), Some(true));
        r.unlock(0, 8 * page()).unwrap();
        assert_eq!(all_have(&r, 0, 8 * page(), "lo"), Some(false));
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn lock_failing_and_its_undo_refused_counts_pages_locked() {
        let mut r = reservation(8);
        r.commit(0, 8 * page()).unwrap();
        // SAFETY: committed read-write; nothing else uses it.
        unsafe { r.as_ptr().write(3) };
        LOCK_FAILS_AFTER.with(|f| f.set(Some(6 * page())));
        UNLOCK_FAILS.with(|f| f.set(true));
        assert!(matches!(
            r.lock(0, 8 * page()),
            Err(Error::Os {
                operation: Operation::Lock,
                ..
            })
        ));
        // The pages the system kept locked are counted locked, so that discarding them is
        // refused before any page is dropped.
        for i in 0..8 {
            if all_have(&r, i * page(), page(), "lo") == Some(true) {
                assert!(r.locked.get(i), "page {i} is locked but not counted so");
            }
        }
        assert!(matches!(
            r.discard(0, 8 * page()),
            Err(Error::Locked { .. })
        ));
        // SAFETY: committed read-write; nothing was dropped.
        assert_eq!(unsafe { r.as_ptr().read() }, 3);
        r.unlock(0, 8 * page()).unwrap();
        r.discard(0, 8 * page()).unwrap();
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn lock_failing_during_an_overlapping_lock_keeps_its_pages_locked() {
        use std::sync::mpsc;
        use std::time::Duration;

        let r = reservation(8);
        r.commit(0, 8 * page()).unwrap();
        let (locked_tx, locked_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let r = &r;
            let first = s.spawn(move || {
                // Between this lock's system call and its bookkeeping, let the other lock run
                // (for as long as it is not made to wait for this one).
                AFTER_LOCK.with(|f| {
                    *f.borrow_mut() = Some(alloc::boxed::Box::new(move || {
                        locked_tx.send(()).unwrap();
                        let _ = done_rx.recv_timeout(Duration::from_millis(300));
                    }));
                });
                r.lock(0, 4 * page())
            });
            locked_rx.recv().unwrap();
            LOCK_FAILS_AFTER.with(|f| f.set(Some(6 * page())));
            assert!(matches!(
                r.lock(2 * page(), 6 * page()),
                Err(Error::Os {
                    operation: Operation::Lock,
                    ..
                })
            ));
            let _ = done_tx.send(());
            first.join().unwrap().unwrap();
        });
        // The successful lock holds all its pages; the failed one left the rest unlocked.
        assert_eq!(all_have(&r, 0, 4 * page(), "lo"), Some(true));
        assert_eq!(all_have(&r, 4 * page(), 4 * page(), "lo"), Some(false));
        r.unlock(0, 8 * page()).unwrap();
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn guard_refused_in_sparse_mode_leaves_committable_read_write_pages() {
        // Nothing applied, and the first two pages made inaccessible before the refusal.
        for applied in [0, 2 * page()] {
            let mut r = Reservation::builder()
                .mode(CommitMode::Sparse)
                .reserve(4 * page())
                .unwrap();
            r.commit(0, 4 * page()).unwrap();
            r.protect(page(), page(), Protection::Read).unwrap();
            GUARD_FAILS_AFTER.with(|f| f.set(Some(applied)));
            assert_eq!(
                r.guard(0, 4 * page()).unwrap_err(),
                Error::Os {
                    operation: Operation::Guard,
                    source: crate::OsError::from_raw(12)
                }
            );
            // The pages are not guarded, and what the reservation counts of them is true: a
            // commit makes all of them read-write.
            assert!(!r.is_guarded(0, page()).unwrap(), "{applied}");
            assert_eq!(r.committed_bytes(), 0, "{applied}");
            r.commit(0, 4 * page()).unwrap();
            assert_eq!(all_have(&r, 0, 4 * page(), "wr"), Some(true), "{applied}");
            r.prefault(0, 4 * page()).unwrap();
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn guard_refused_in_sparse_mode_keeps_earlier_guard_pages() {
        let mut r = Reservation::builder()
            .mode(CommitMode::Sparse)
            .reserve(4 * page())
            .unwrap();
        r.commit(0, 4 * page()).unwrap();
        r.guard(page(), page()).unwrap();
        GUARD_FAILS_AFTER.with(|f| f.set(Some(0)));
        assert!(r.guard(0, 4 * page()).is_err());
        // The guard page made before still is one, and still faults: an access to it would
        // kill this process, so ask the kernel (a guard marker or `PROT_NONE` both make
        // `MADV_POPULATE_READ` fail).
        assert!(r.is_guarded(page(), page()).unwrap());
        assert!(!r.is_guarded(0, page()).unwrap());
        // SAFETY: populating for reading changes no contents.
        let populated = unsafe {
            libc::madvise(
                r.as_ptr().add(page()).cast(),
                page(),
                libc::MADV_POPULATE_READ,
            )
        };
        assert_eq!(populated, -1);
        r.commit(0, page()).unwrap();
        r.commit(2 * page(), 2 * page()).unwrap();
        r.prefault(0, page()).unwrap();
        r.prefault(2 * page(), 2 * page()).unwrap();
    }

    /// The advice bitmaps of page `i` agree with the flags of its kernel mapping.
    #[cfg(all(target_os = "linux", not(miri)))]
    fn assert_advice_true(r: &Reservation, pages: usize) {
        for i in 0..pages {
            for (bitmap, flag) in [
                (&r.dont_fork, "dc"),
                (&r.dont_dump, "dd"),
                (&r.huge, "hg"),
                (&r.no_huge, "nh"),
            ] {
                assert_eq!(
                    Some(bitmap.get(i)),
                    all_have(r, i * page(), page(), flag),
                    "page {i} flag {flag}"
                );
            }
        }
    }

    /// A reservation of 8 pages in `mode` whose pages 2..6 are committed and written, with
    /// `DontDump` advice; in sparse mode they are a shared source mapped over the reservation,
    /// so that the decommit maps fresh pages there.
    #[cfg(all(unix, not(miri)))]
    fn written_middle(mode: CommitMode) -> Reservation {
        let mut r = Reservation::builder()
            .mode(mode)
            .reserve(8 * page())
            .unwrap();
        if mode == CommitMode::Sparse {
            r.map(
                2 * page(),
                4 * page(),
                MapSource::AnonymousShared,
                Protection::ReadWrite,
                None,
            )
            .unwrap();
        } else {
            r.commit(2 * page(), 4 * page()).unwrap();
        }
        r.commit(7 * page(), page()).unwrap();
        #[cfg(target_os = "linux")]
        r.advise(2 * page(), 4 * page(), Advice::DontDump).unwrap();
        // SAFETY: committed read-write; nothing else uses the reservation.
        unsafe { r.at(2 * page()).write_bytes(9, 4 * page()) };
        r
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn decommit_whose_fresh_mapping_is_refused_after_the_pages_went_puts_them_back() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = written_middle(mode);
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(1));
            r.decommit(2 * page(), 4 * page()).unwrap();
            assert_eq!(REPLACE_TAKES_PAGES_AND_FAILS.with(core::cell::Cell::get), 0);
            // SAFETY: inside the reservation.
            assert!(unsafe { sys::is_mapped(r.at(0), r.len()) }, "{mode:?}");
            assert!(!r.is_committed(2 * page(), page()).unwrap(), "{mode:?}");
            assert_eq!(r.committed_bytes(), page(), "{mode:?}");
            #[cfg(target_os = "linux")]
            assert!(r.dont_dump.get(2), "{mode:?}: the advice stays");
            r.commit(2 * page(), 4 * page()).unwrap();
            // SAFETY: committed again: decommitted memory reads as zero.
            let bytes = unsafe { core::slice::from_raw_parts(r.at(2 * page()), 4 * page()) };
            assert!(bytes.iter().all(|&b| b == 0), "{mode:?}");
            r.decommit(0, r.len()).unwrap();
        }
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn the_mapped_probe_sees_a_hole_in_any_part_of_the_range() {
        let r = reservation(6);
        r.commit(0, 6 * page()).unwrap();
        // SAFETY: inside the reservation.
        assert!(unsafe { sys::is_mapped(r.at(0), 6 * page()) });
        // SAFETY: page 3, which nothing refers to: a hole in the middle of the range.
        unsafe { sys::unmap(NonNull::new(r.at(3 * page())).unwrap(), page(), page()) }.unwrap();
        for (first, count) in [(0, 6), (3, 1), (2, 2), (3, 3), (0, 4)] {
            // SAFETY: inside the reservation.
            let mapped = unsafe { sys::is_mapped(r.at(first * page()), count * page()) };
            assert!(!mapped, "pages {first}..{}", first + count);
        }
        for (first, count) in [(0, 3), (4, 2)] {
            // SAFETY: inside the reservation.
            let mapped = unsafe { sys::is_mapped(r.at(first * page()), count * page()) };
            assert!(mapped, "pages {first}..{}", first + count);
        }
        // Filled again, unless another test's thread placed a mapping in the hole meanwhile
        // (the page is then lost, and the drop leaves that mapping alone).
        // SAFETY: the hole, which nothing refers to.
        if unsafe { r.fill_hole(Pages { first: 3, count: 1 }) }.is_ok() {
            // SAFETY: inside the reservation.
            assert!(unsafe { sys::is_mapped(r.at(0), 6 * page()) });
        }
    }

    /// A reservation of 16 committed pages, each holding its index + 1, with the pages of
    /// `holes` unmapped: a refused mapping that took only part of its range.
    #[cfg(all(unix, not(miri)))]
    fn with_holes(mode: CommitMode, holes: &[(usize, usize)]) -> Reservation {
        let r = Reservation::builder()
            .mode(mode)
            .reserve(16 * page())
            .unwrap();
        r.commit(0, 16 * page()).unwrap();
        for i in 0..16 {
            // SAFETY: committed read-write; nothing else uses the reservation.
            unsafe { r.at(i * page()).write(u8::try_from(i + 1).unwrap()) };
        }
        for &(first, count) in holes {
            let at = NonNull::new(r.at(first * page())).unwrap();
            // SAFETY: pages of the reservation that nothing refers to.
            unsafe { sys::unmap(at, count * page(), page()) }.unwrap();
        }
        r
    }

    /// Whether page `i` of `r` is in one of `holes`.
    #[cfg(all(unix, not(miri)))]
    fn in_holes(i: usize, holes: &[(usize, usize)]) -> bool {
        holes
            .iter()
            .any(|&(first, count)| (first..first + count).contains(&i))
    }

    /// A decommit refused over `mode`'s reservation with a partial hole: whether every page
    /// of the hole was filled (another test's thread may map into a hole meanwhile; such a
    /// page is lost instead). The pages mapped next to the hole are lost, never claimed.
    #[cfg(all(unix, not(miri)))]
    fn refused_decommit_over_a_partial_hole(mode: CommitMode) -> bool {
        let holes = [(2, 2), (5, 1), (9, 3)];
        let mut r = with_holes(mode, &holes);
        if mode == CommitMode::Sparse {
            // A sparse decommit replaces only runs another source was mapped over.
            r.mapped.set_range(0, 16);
        }
        REPLACE_REFUSED.with(|f| f.set(1));
        let err = r.decommit(0, 16 * page()).unwrap_err();
        REPLACE_REFUSED.with(|f| f.set(0));
        assert_eq!(
            err,
            Error::Os {
                operation: Operation::Decommit,
                source: crate::OsError::from_raw(12)
            },
            "{mode:?}"
        );
        // SAFETY: inside the reservation.
        assert!(unsafe { sys::is_mapped(r.at(0), r.len()) }, "{mode:?}");
        assert_eq!(r.committed_bytes(), 0, "{mode:?}");
        let mut all_filled = true;
        for i in 0..16 {
            let got = r.commit(i * page(), page());
            if in_holes(i, &holes) && got.is_ok() {
                // SAFETY: committed just now: a filled hole reads as zero.
                assert_eq!(unsafe { r.at(i * page()).read() }, 0, "{mode:?} {i}");
                r.decommit(i * page(), page()).unwrap();
            } else {
                all_filled &= !in_holes(i, &holes);
                assert_eq!(got, Err(Error::Lost { offset: i * page() }), "{mode:?} {i}");
            }
        }
        assert_eq!(r.committed_bytes(), 0, "{mode:?}");
        // The drop unmaps the filled holes and leaves the lost pages alone.
        drop(r);
        all_filled
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn decommit_refused_over_a_partial_hole_refills_exactly_the_hole() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            assert!(
                (0..8).any(|_| refused_decommit_over_a_partial_hole(mode)),
                "{mode:?}: the hole was never filled"
            );
        }
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn a_refused_refill_loses_only_the_range_it_was_refused_for() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let r = with_holes(mode, &[(4, 4)]);
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(usize::MAX));
            // SAFETY: inside the reservation; nothing refers to the pages.
            let filled = unsafe { r.fill_hole(Pages { first: 4, count: 4 }) };
            let refills = usize::MAX - REPLACE_TAKES_PAGES_AND_FAILS.with(core::cell::Cell::get);
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(0));
            assert_eq!(filled, Err(()), "{mode:?}");
            // Refused for want of room, not for a mapping in the hole: not tried in halves.
            assert_eq!(refills, 1, "{mode:?}");
            assert_eq!(r.lost.count_set(0, 16), 4, "{mode:?}");
            assert_eq!(r.committed_bytes(), 12 * page(), "{mode:?}");
            assert_eq!(
                r.commit(0, 5 * page()),
                Err(Error::Lost { offset: 4 * page() })
            );
            r.commit(0, 4 * page()).unwrap();
            r.commit(8 * page(), 8 * page()).unwrap();
            for i in (0..4).chain(8..16) {
                // SAFETY: committed read-write; the system kept the page.
                let read = unsafe { r.at(i * page()).read() };
                assert_eq!(read, u8::try_from(i + 1).unwrap(), "{mode:?} {i}");
            }
            drop(r);
        }
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn finding_the_holes_costs_calls_per_boundary_not_per_page() {
        // A hole of 2^16 pages around one page still mapped: a few refills per level of
        // halving fill it all; a refill refused for want of room is not tried in halves.
        let pages = 1 << 16;
        let attempt = |refused: bool| {
            let r = Reservation::builder().reserve(pages * page()).unwrap();
            for (first, count) in [(0, pages / 2), (pages / 2 + 1, pages / 2 - 1)] {
                let at = NonNull::new(r.at(first * page())).unwrap();
                // SAFETY: pages of the reservation that nothing refers to.
                unsafe { sys::unmap(at, count * page(), page()) }.unwrap();
            }
            REFILLS.with(|f| f.set(0));
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(if refused { usize::MAX } else { 0 }));
            // SAFETY: inside the reservation; nothing refers to the pages.
            let filled = unsafe {
                r.fill_hole(Pages {
                    first: 0,
                    count: pages,
                })
            };
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(0));
            let refills = REFILLS.with(core::cell::Cell::get);
            assert_eq!(filled, Err(()));
            // SAFETY: inside the reservation.
            assert!(refused || unsafe { sys::is_mapped(r.at(0), r.len()) });
            assert!(r.lost.get(pages / 2));
            let lost = r.lost.count_set(0, pages);
            if refused {
                assert_eq!(refills, 1);
                assert_eq!(lost, pages);
                true
            } else {
                // Only the page mapped next to the hole is lost (unless another test's thread
                // mapped into the hole meanwhile: then its pages are lost too).
                refills <= 2 * 17 + 1 && lost == 1
            }
        };
        assert!(attempt(true));
        assert!(
            (0..8).any(|_| attempt(false)),
            "more than a few refills per level"
        );
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn filling_a_hole_never_replaces_a_mapping_placed_in_it() {
        let mut r = reservation(4);
        r.commit(0, 4 * page()).unwrap();
        let hole = r.at(page());
        // SAFETY: the middle pages of the reservation, which nothing refers to: the hole a
        // refused `MAP_FIXED` leaves.
        unsafe { sys::unmap(NonNull::new(hole).unwrap(), 2 * page(), page()) }.unwrap();
        // Someone else's mapping in part of the hole, as the system may place one (another
        // test's thread may have been quicker: then its mapping is there instead).
        let at = r.at(2 * page());
        // SAFETY: `MAP_FIXED_NOREPLACE` maps only into a hole; it replaces nothing.
        let theirs = unsafe {
            libc::mmap(
                at.cast(),
                page(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let ours = theirs != libc::MAP_FAILED;
        if ours {
            assert_eq!(theirs.cast::<u8>(), at, "the address was not taken");
            // SAFETY: the fresh read-write mapping above.
            unsafe { at.write_bytes(7, page()) };
        }
        let pages = Pages { first: 1, count: 2 };
        // SAFETY: the pages are inside the reservation; nothing of ours refers to them.
        assert_eq!(unsafe { r.fill_hole(pages) }, Err(()));
        // The other mapping's page is lost; the rest of the hole is the reservation's again
        // (or lost, had another test's thread mapped there meanwhile).
        assert_eq!(r.committed_bytes(), 2 * page());
        if ours {
            assert_eq!(
                r.commit(2 * page(), page()),
                Err(Error::Lost { offset: 2 * page() })
            );
        }
        if !r.lost.get(1) {
            r.commit(page(), page()).unwrap();
            r.decommit(page(), page()).unwrap();
        }
        drop(r);
        if ours {
            // SAFETY: the other mapping, still there and read-write.
            let bytes = unsafe { core::slice::from_raw_parts(at, page()) };
            assert!(
                bytes.iter().all(|&b| b == 7),
                "the other mapping was replaced"
            );
            // SAFETY: the mapping made above, no longer used.
            assert_eq!(unsafe { libc::munmap(theirs, page()) }, 0);
        }
    }

    #[test]
    #[cfg(all(unix, not(miri)))]
    fn decommit_whose_pages_the_system_keeps_marks_them_lost() {
        for mode in [CommitMode::Protected, CommitMode::Sparse] {
            let mut r = written_middle(mode);
            REPLACE_TAKES_PAGES_AND_FAILS.with(|f| f.set(2));
            assert_eq!(
                r.decommit(2 * page(), 4 * page()).unwrap_err(),
                Error::Os {
                    operation: Operation::Decommit,
                    source: crate::OsError::from_raw(12)
                },
                "{mode:?}"
            );
            assert_eq!(REPLACE_TAKES_PAGES_AND_FAILS.with(core::cell::Cell::get), 0);
            let lost = Error::Lost { offset: 2 * page() };
            assert_eq!(r.commit(2 * page(), page()), Err(lost.clone()), "{mode:?}");
            assert_eq!(r.is_committed(0, 3 * page()), Err(lost.clone()));
            assert_eq!(r.decommit(0, 8 * page()), Err(lost.clone()));
            assert_eq!(r.committed_bytes(), page(), "{mode:?}");
            // The pages around the hole still work.
            r.commit(0, 2 * page()).unwrap();
            r.decommit(6 * page(), 2 * page()).unwrap();
            drop(r);
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn decommit_readvice_refused_keeps_advice_bitmaps_true() {
        // Refuse the first, a middle and the last re-advice call of the decommit.
        for refused in 0..4 {
            let mut r = reservation(4);
            r.commit(0, 4 * page()).unwrap();
            r.advise(0, 4 * page(), Advice::DontFork).unwrap();
            // Two runs of `DontDump`.
            r.advise(0, page(), Advice::DontDump).unwrap();
            r.advise(2 * page(), page(), Advice::DontDump).unwrap();
            r.advise_huge_pages(0, 4 * page(), HugePageAdvice::NoHuge)
                .unwrap();
            READVISE_FAILS.with(|f| f.set(Some(refused)));
            assert_eq!(
                r.decommit(0, 4 * page()).unwrap_err(),
                Error::Os {
                    operation: Operation::Decommit,
                    source: crate::OsError::from_raw(11)
                },
                "{refused}"
            );
            assert_eq!(r.committed_bytes(), 0, "{refused}");
            assert_advice_true(&r, 4);
            // Exactly the refused run lost its advice.
            let kept = [
                r.dont_fork.get(0),
                r.dont_dump.get(0),
                r.dont_dump.get(2),
                r.no_huge.get(0),
            ];
            let mut want = [true; 4];
            want[refused] = false;
            assert_eq!(kept, want, "{refused}");
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn advise_racing_decommit_keeps_advice_bitmaps_true() {
        use std::sync::mpsc;
        use std::time::Duration;

        for huge in [false, true] {
            let r = reservation(4);
            r.commit(0, 4 * page()).unwrap();
            let (advised_tx, advised_rx) = mpsc::channel();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            std::thread::scope(|s| {
                let r = &r;
                let advising = s.spawn(move || {
                    // Between the advice's system call and its bookkeeping, let the decommit
                    // run (for as long as it is not made to wait for the advice).
                    AFTER_ADVICE.with(|f| {
                        *f.borrow_mut() = Some(alloc::boxed::Box::new(move || {
                            advised_tx.send(()).unwrap();
                            let _ = done_rx.recv_timeout(Duration::from_millis(200));
                        }));
                    });
                    if huge {
                        r.advise_huge_pages(0, 4 * page(), HugePageAdvice::NoHuge)
                    } else {
                        r.advise(0, 4 * page(), Advice::DontDump)
                    }
                });
                advised_rx.recv().unwrap();
                // SAFETY: no thread reads or writes the reservation's memory.
                unsafe { r.decommit_unchecked(0, 4 * page()) }.unwrap();
                let _ = done_tx.send(());
                advising.join().unwrap().unwrap();
            });
            assert_advice_true(&r, 4);
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn advise_panicking_while_serialized_leaves_later_calls_working() {
        use std::panic::{AssertUnwindSafe, catch_unwind};

        let mut r = reservation(4);
        r.commit(0, 4 * page()).unwrap();
        for huge in [false, true] {
            // A panic between the system call and the record, with the calls' lock held.
            AFTER_ADVICE.with(|f| {
                *f.borrow_mut() = Some(alloc::boxed::Box::new(|| panic!("inside the advice")));
            });
            let panicked = catch_unwind(AssertUnwindSafe(|| {
                if huge {
                    r.advise_huge_pages(0, 4 * page(), HugePageAdvice::NoHuge)
                } else {
                    r.advise(0, 4 * page(), Advice::DontDump)
                }
            }));
            assert!(panicked.is_err(), "{huge}");
        }
        // Every call that takes the lock still runs, and none waits for ever.
        r.advise(0, 4 * page(), Advice::DontFork).unwrap();
        r.advise_huge_pages(0, 4 * page(), HugePageAdvice::Huge)
            .unwrap();
        r.lock(0, page()).unwrap();
        r.unlock(0, page()).unwrap();
        r.decommit(0, 4 * page()).unwrap();
        assert_advice_true(&r, 4);
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn advise_refused_half_way_leaves_advice_as_it_was() {
        for (advice, before) in [(Advice::DontDump, false), (Advice::DoDump, true)] {
            let mut r = reservation(4);
            r.commit(0, 4 * page()).unwrap();
            // One page advised otherwise than the rest before the call.
            let other = if before {
                Advice::DoDump
            } else {
                Advice::DontDump
            };
            r.advise(
                0,
                4 * page(),
                if before {
                    Advice::DontDump
                } else {
                    Advice::DoDump
                },
            )
            .unwrap();
            r.advise(3 * page(), page(), other).unwrap();
            ADVISE_FAILS_AFTER.with(|f| f.set(Some(2 * page())));
            assert_eq!(
                r.advise(0, 4 * page(), advice).unwrap_err(),
                Error::Os {
                    operation: Operation::Advise,
                    source: crate::OsError::from_raw(12)
                },
                "{advice:?}"
            );
            assert_advice_true(&r, 4);
            let recorded: Vec<bool> = (0..4).map(|i| r.dont_dump.get(i)).collect();
            assert_eq!(recorded, [before, before, before, !before], "{advice:?}");
            // What is recorded is what a decommit gives the fresh pages.
            r.decommit(0, 4 * page()).unwrap();
            assert_advice_true(&r, 4);
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn advise_huge_pages_refused_half_way_keeps_advice_bitmaps_true() {
        let mut r = reservation(4);
        r.commit(0, 4 * page()).unwrap();
        r.advise_huge_pages(0, 2 * page(), HugePageAdvice::NoHuge)
            .unwrap();
        r.advise_huge_pages(3 * page(), page(), HugePageAdvice::Huge)
            .unwrap();
        ADVISE_FAILS_AFTER.with(|f| f.set(Some(3 * page())));
        assert_eq!(
            r.advise_huge_pages(0, 4 * page(), HugePageAdvice::Huge)
                .unwrap_err(),
            Error::Os {
                operation: Operation::HugePageAdvice,
                source: crate::OsError::from_raw(12)
            }
        );
        assert_advice_true(&r, 4);
        // Advised pages have their advice back; the page without any has the new one (no
        // advice takes huge-page advice away).
        let huge: Vec<bool> = (0..4).map(|i| r.huge.get(i)).collect();
        let no_huge: Vec<bool> = (0..4).map(|i| r.no_huge.get(i)).collect();
        assert_eq!(huge, [false, false, true, true]);
        assert_eq!(no_huge, [true, true, false, false]);
        r.decommit(0, 4 * page()).unwrap();
        assert_advice_true(&r, 4);
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn unguard_refused_half_way_in_sparse_mode_keeps_guard_pages_exact() {
        let mut r = Reservation::builder()
            .mode(CommitMode::Sparse)
            .reserve(4 * page())
            .unwrap();
        r.commit(0, 4 * page()).unwrap();
        r.guard(0, 4 * page()).unwrap();
        UNGUARD_FAILS_AFTER.with(|f| f.set(Some(2 * page())));
        assert_eq!(
            r.unguard(0, 4 * page()).unwrap_err(),
            Error::Os {
                operation: Operation::Unguard,
                source: crate::OsError::from_raw(12)
            }
        );
        // Every page the reservation counts as a guard page faults (a guard marker or
        // `PROT_NONE` both make `MADV_POPULATE_READ` fail; an access would kill this process).
        for i in 0..4 {
            assert!(r.is_guarded(i * page(), page()).unwrap(), "{i}");
            // SAFETY: populating for reading changes no contents.
            let populated = unsafe {
                libc::madvise(
                    r.as_ptr().add(i * page()).cast(),
                    page(),
                    libc::MADV_POPULATE_READ,
                )
            };
            assert_eq!(
                populated, -1,
                "page {i} is counted as a guard page but accessible"
            );
        }
        r.unguard(0, 4 * page()).unwrap();
        r.commit(0, 4 * page()).unwrap();
        r.prefault(0, 4 * page()).unwrap();
    }

    /// Resident bytes of all the reservation's bitmaps.
    #[cfg(all(target_os = "linux", target_pointer_width = "64", not(miri)))]
    fn bitmaps_resident_bytes(r: &Reservation) -> usize {
        [
            &r.committed,
            &r.writable,
            &r.guarded,
            &r.inaccessible,
            &r.executable,
            &r.mapped,
            &r.shared,
            &r.no_hole_punch,
            &r.locked,
            &r.huge,
            &r.no_huge,
            &r.dont_fork,
            &r.dont_dump,
            &r.lost,
        ]
        .into_iter()
        .chain(r.hugetlb.get().into_iter().flatten())
        .map(PageBitmap::resident_bytes)
        .sum()
    }

    /// A terabyte recorded as explicit 2 MiB huge pages (as a `map` of them records it, here
    /// without the system's huge pages) costs bitmap memory only where its ranges cut a block
    /// of pages, not a bit per huge page in every block; and ranges cutting one of its huge
    /// pages are still refused, whole ones accepted.
    #[cfg(all(target_os = "linux", target_pointer_width = "64", not(miri)))]
    #[test]
    fn recording_a_tib_of_huge_pages_costs_bitmap_memory_in_proportion_to_the_cuts() {
        const TIB: usize = 1 << 40;
        const HUGE: usize = 2 << 20;
        let p = page();
        let r = Reservation::builder().alignment(HUGE).reserve(TIB).unwrap();
        let before = bitmaps_resident_bytes(&r);
        let pages = |offset: usize, len: usize| Pages {
            first: offset / p,
            count: len / p,
        };
        // The whole reservation, then a range that starts and ends inside blocks.
        record_huge_pages(&r, pages(0, TIB), HUGE);
        record_huge_pages(&r, pages(HUGE, TIB - 3 * HUGE), HUGE);
        let grown = bitmaps_resident_bytes(&r) - before;
        // A bit per huge page in every block would be 32 MiB; each recorded range may cut two
        // blocks in each bitmap it writes (4 KiB of words each).
        assert!(
            grown <= 256 << 10,
            "recording grew the bitmaps by {grown} bytes"
        );
        let cut = |what, value| {
            Err(Error::Misaligned {
                what,
                value,
                page_size: HUGE,
            })
        };
        for base in [0, HUGE, TIB / 2, TIB - HUGE] {
            assert_eq!(r.commit(base + p, p), cut("offset", base + p), "{base:#x}");
            assert_eq!(r.commit(base, p), cut("end", base + p), "{base:#x}");
            r.commit(base, HUGE).unwrap();
        }
        assert_eq!(r.commit(TIB - HUGE, HUGE), Ok(()));
        assert_eq!(r.committed_bytes(), 4 * HUGE);
    }

    fn page() -> usize {
        page_size()
    }

    fn reservation(pages: usize) -> Reservation {
        Reservation::new(pages * page()).expect("reserve")
    }

    #[test]
    fn reserve_zero_length_is_error() {
        assert_eq!(Reservation::new(0).unwrap_err(), Error::ZeroLength);
    }

    #[test]
    fn reserve_rounds_length_up_to_page() {
        let r = Reservation::new(page() + 1).unwrap();
        assert_eq!(r.len(), 2 * page());
        assert!(!r.is_empty());
        assert_eq!(r.committed_bytes(), 0);
    }

    #[test]
    fn reserve_overflowing_length_is_too_large() {
        let err = Reservation::new(usize::MAX).unwrap_err();
        assert_eq!(
            err,
            Error::TooLarge {
                len: usize::MAX,
                limit: max_len(page())
            }
        );
    }

    // Miri would be asked for the allocation itself, which it cannot refuse gracefully.
    #[cfg(all(target_pointer_width = "64", not(miri)))]
    #[test]
    fn reserve_huge_length_is_os_error() {
        // Within `isize::MAX` and page-aligned, but larger than any address space of a 64-bit
        // process: the OS refuses.
        let len = max_len(page());
        let err = Reservation::new(len).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Os {
                    operation: Operation::Reserve,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn reserve_non_power_of_two_alignment_is_error() {
        let err = Reservation::builder()
            .alignment(3 * page())
            .reserve(page())
            .unwrap_err();
        assert_eq!(err, Error::InvalidAlignment { align: 3 * page() });
    }

    #[test]
    fn reserve_aligned_start_is_aligned() {
        let align = 64 * page();
        let r = Reservation::builder()
            .alignment(align)
            .reserve(3 * page())
            .unwrap();
        assert_eq!(r.as_ptr() as usize % align, 0);
        assert_eq!(r.alignment(), align);
    }

    #[test]
    fn reserve_small_alignment_means_page() {
        let r = Reservation::builder().alignment(8).reserve(page()).unwrap();
        assert_eq!(r.alignment(), page());
    }

    #[test]
    fn commit_misaligned_offset_is_error() {
        let r = reservation(4);
        assert_eq!(
            r.commit(1, page()).unwrap_err(),
            Error::Misaligned {
                what: "offset",
                value: 1,
                page_size: page()
            }
        );
    }

    #[test]
    fn commit_misaligned_length_is_error() {
        let r = reservation(4);
        assert_eq!(
            r.commit(0, page() + 1).unwrap_err(),
            Error::Misaligned {
                what: "length",
                value: page() + 1,
                page_size: page()
            }
        );
    }

    #[test]
    fn commit_zero_length_is_error() {
        assert_eq!(reservation(1).commit(0, 0).unwrap_err(), Error::ZeroLength);
    }

    #[test]
    fn commit_out_of_bounds_is_error_and_commits_nothing() {
        let r = reservation(4);
        let err = r.commit(2 * page(), 3 * page()).unwrap_err();
        assert_eq!(
            err,
            Error::OutOfBounds {
                offset: 2 * page(),
                len: 3 * page(),
                size: 4 * page()
            }
        );
        assert_eq!(r.committed_bytes(), 0);
    }

    #[test]
    fn commit_overflowing_range_is_error() {
        let r = reservation(4);
        let offset = usize::MAX - page() + 1;
        assert_eq!(
            r.commit(offset, 2 * page()).unwrap_err(),
            Error::Overflow {
                value: offset,
                add: 2 * page()
            }
        );
    }

    #[test]
    fn commit_then_write_reads_back() {
        let r = reservation(4);
        r.commit(page(), page()).unwrap();
        assert!(r.is_committed(page(), page()).unwrap());
        assert!(!r.is_committed(0, 2 * page()).unwrap());
        assert_eq!(r.committed_bytes(), page());
        // SAFETY: page 1 is committed read-write; nothing else uses it.
        unsafe {
            let p = r.as_ptr().add(page());
            assert_eq!(p.read(), 0);
            p.write(42);
            assert_eq!(p.read(), 42);
        }
    }

    #[test]
    fn commit_twice_keeps_contents() {
        let r = reservation(2);
        r.commit(0, page()).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().write(9) };
        r.commit(0, 2 * page()).unwrap();
        // SAFETY: still committed.
        assert_eq!(unsafe { r.as_ptr().read() }, 9);
    }

    #[test]
    fn decommit_then_commit_reads_zero() {
        let mut r = reservation(2);
        r.commit(0, 2 * page()).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().add(page()).write(5) };
        r.decommit(page(), page()).unwrap();
        assert!(!r.is_committed(page(), page()).unwrap());
        assert!(r.is_committed(0, page()).unwrap());
        r.commit(page(), page()).unwrap();
        // SAFETY: committed again.
        assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
    }

    #[test]
    fn decommit_uncommitted_is_ok() {
        let mut r = reservation(2);
        r.decommit(0, 2 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 0);
    }

    #[test]
    fn decommit_bad_range_is_error() {
        let mut r = reservation(2);
        r.commit(0, page()).unwrap();
        assert!(matches!(
            r.decommit(0, 3 * page()),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(r.is_committed(0, page()).unwrap());
    }

    #[test]
    fn protect_uncommitted_is_error() {
        let mut r = reservation(2);
        r.commit(0, page()).unwrap();
        assert_eq!(
            r.protect(0, 2 * page(), Protection::Read).unwrap_err(),
            Error::NotCommitted { offset: page() }
        );
    }

    #[test]
    fn protect_read_keeps_contents_and_blocks_prefault() {
        let mut r = reservation(1);
        r.commit(0, page()).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().write(3) };
        r.protect(0, page(), Protection::Read).unwrap();
        // SAFETY: readable.
        assert_eq!(unsafe { r.as_ptr().read() }, 3);
        assert_eq!(
            r.prefault(0, page()).unwrap_err(),
            Error::NotWritable { offset: 0 }
        );
        r.protect(0, page(), Protection::ReadWrite).unwrap();
        r.prefault(0, page()).unwrap();
        // SAFETY: read-write again.
        assert_eq!(unsafe { r.as_ptr().read() }, 3);
    }

    #[test]
    fn commit_restores_read_write_after_protect_none() {
        let mut r = reservation(1);
        r.commit(0, page()).unwrap();
        r.protect(0, page(), Protection::None).unwrap();
        r.commit(0, page()).unwrap();
        r.prefault(0, page()).unwrap();
    }

    #[cfg(feature = "std")]
    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot observe residency")]
    fn prefault_parallel_makes_every_part_resident() {
        let mut r = Reservation::new(5 * (2 << 20) + 3 * page()).unwrap();
        let len = r.len();
        r.commit(0, len).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().add(len - 1).write(6) };
        r.prefault_parallel(0, len, core::num::NonZeroUsize::new(3).unwrap())
            .unwrap();
        assert_eq!(r.resident_pages(0, len).unwrap(), len / page());
        // SAFETY: committed read-write.
        assert_eq!(unsafe { r.as_ptr().add(len - 1).read() }, 6);
    }

    #[cfg(feature = "std")]
    #[test]
    fn prefault_parallel_from_an_unaligned_offset_populates_every_part_and_keeps_contents() {
        let huge = HUGE_PAGE.max(page());
        let mut r = Reservation::builder()
            .alignment(huge)
            .reserve(5 * huge)
            .unwrap();
        // From one page in: every part boundary but the range's own ends is a huge page.
        let (offset, len) = (page(), 5 * huge - 2 * page());
        r.commit(offset, len).unwrap();
        let mark = |at: usize| u8::try_from(at / page() % 255).unwrap() + 1;
        for at in (offset..offset + len).step_by(huge / 2) {
            // SAFETY: committed read-write, and nothing else refers to it.
            unsafe { r.as_ptr().add(at).write(mark(at)) };
        }
        r.prefault_parallel(offset, len, core::num::NonZeroUsize::new(3).unwrap())
            .unwrap();
        for at in (offset..offset + len).step_by(huge / 2) {
            // SAFETY: as above.
            assert_eq!(unsafe { r.as_ptr().add(at).read() }, mark(at));
        }
        if !cfg!(miri) {
            assert_eq!(r.resident_pages(offset, len).unwrap(), len / page());
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn prefault_parallel_checks_like_prefault() {
        let mut r = reservation(8);
        let two = core::num::NonZeroUsize::new(2).unwrap();
        r.commit(0, 4 * page()).unwrap();
        assert_eq!(
            r.prefault_parallel(0, 8 * page(), two).unwrap_err(),
            Error::NotCommitted { offset: 4 * page() }
        );
        assert_eq!(
            r.prefault_parallel(0, 0, two).unwrap_err(),
            Error::ZeroLength
        );
        r.protect(page(), page(), Protection::Read).unwrap();
        assert_eq!(
            r.prefault_parallel(0, 4 * page(), two).unwrap_err(),
            Error::NotWritable { offset: page() }
        );
        r.protect(page(), page(), Protection::ReadWrite).unwrap();
        r.prefault_parallel(0, 4 * page(), two).unwrap();
    }

    #[cfg(feature = "std")]
    #[test]
    fn worker_result_panicked_worker_is_error() {
        let panicked: std::thread::Result<Result<()>> = Err(alloc::boxed::Box::new("boom"));
        assert_eq!(
            worker_result(panicked, 4 * page(), page()),
            Err(Error::WorkerPanicked {
                offset: 4 * page(),
                len: page()
            })
        );
        assert_eq!(worker_result(Ok(Ok(())), 0, page()), Ok(()));
        assert_eq!(
            worker_result(Ok(Err(Error::ZeroLength)), 0, page()),
            Err(Error::ZeroLength)
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn part_size_respects_threads_units_and_min_part() {
        let p = page();
        // Small ranges split in pages.
        assert_eq!(part_size(8 * p, 2, 0, p), 4 * p);
        assert_eq!(part_size(7 * p, 2, 0, p), 4 * p);
        // Large ranges split in huge pages.
        let huge = HUGE_PAGE.max(p);
        assert_eq!(part_size(10 * huge, 4, 0, p), 3 * huge);
        // A minimum part size lowers the number of parts.
        assert_eq!(part_size(10 * huge, 4, 4 * huge, p), 4 * huge);
        assert!(part_size(10 * huge, 4, 64 * huge, p) >= 10 * huge);
        // Huge minimums do not overflow.
        assert_eq!(part_size(10 * huge, 4, usize::MAX, p), usize::MAX);
    }

    /// The parts `prefault_split` makes of `len` bytes at `addr`, as `(start, len)` pairs.
    #[cfg(feature = "std")]
    fn prefault_parts(
        addr: usize,
        len: usize,
        threads: usize,
        min_part: usize,
    ) -> std::vec::Vec<(usize, usize)> {
        let (first, part) = prefault_split(addr, len, threads, min_part, page());
        let mut parts = std::vec![(addr, first.min(len))];
        let mut start = addr + first;
        while start < addr + len {
            parts.push((start, part.min(addr + len - start)));
            start += part;
        }
        parts
    }

    #[cfg(feature = "std")]
    #[test]
    fn prefault_parts_meet_at_huge_page_boundaries_of_the_address_space() {
        let p = page();
        let huge = HUGE_PAGE.max(p);
        // Ranges that start a page (or most of a huge page) past a huge-page boundary, as a
        // page-aligned reservation or an offset into one does.
        for skew in [p, huge - p, huge / 2] {
            let addr = 64 * huge + skew;
            for (len, threads, min_part) in [
                (10 * huge, 4, 0),
                (10 * huge - skew, 3, 0),
                (64 * huge, 256, 0),
                (64 * huge + p, 7, 3 * huge),
            ] {
                let parts = prefault_parts(addr, len, threads, min_part);
                assert!(parts.len() > 1, "{len:#x} over {threads} threads: one part");
                assert!(
                    parts.len() <= threads,
                    "{} parts for {threads} threads",
                    parts.len()
                );
                assert_eq!(parts.iter().map(|&(_, l)| l).sum::<usize>(), len);
                for pair in parts.windows(2) {
                    let ((start, size), (next, _)) = (pair[0], pair[1]);
                    assert_eq!(start + size, next, "parts are contiguous");
                    assert_eq!(
                        next % huge,
                        0,
                        "a part boundary at {next:#x} cuts a huge page"
                    );
                    assert!(size >= min_part.max(1));
                }
            }
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn part_size_bounds_the_threads_whatever_is_asked() {
        let p = page();
        let huge = HUGE_PAGE.max(p);
        // 8 GiB of 2 MiB pages; 2 GiB where `usize` has 32 bits.
        let len = huge * if usize::BITS == 64 { 4096 } else { 1024 };
        for threads in [MAX_PREFAULT_THREADS + 1, 1 << 20, usize::MAX] {
            let part = part_size(len, threads, 0, p);
            assert!(
                len.div_ceil(part) <= MAX_PREFAULT_THREADS,
                "{threads} threads asked: {} parts",
                len.div_ceil(part)
            );
        }
        assert_eq!(
            part_size(len, MAX_PREFAULT_THREADS, 0, p),
            len / MAX_PREFAULT_THREADS
        );
    }

    #[cfg(feature = "std")]
    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot observe residency")]
    fn prefault_parallel_with_min_part_populates_everything() {
        let mut r = Reservation::new(6 * (2 << 20)).unwrap();
        let len = r.len();
        r.commit(0, len).unwrap();
        let three = core::num::NonZeroUsize::new(3).unwrap();
        r.prefault_parallel_with(0, len, three, 4 << 20).unwrap();
        assert_eq!(r.resident_pages(0, len).unwrap(), len / page());
    }

    #[test]
    fn prefault_uncommitted_is_error() {
        let mut r = reservation(3);
        r.commit(0, page()).unwrap();
        assert_eq!(
            r.prefault(0, 3 * page()).unwrap_err(),
            Error::NotCommitted { offset: page() }
        );
    }

    /// The minor page faults this thread has taken.
    #[cfg(all(target_os = "linux", not(miri)))]
    fn minor_faults() -> libc::c_long {
        let mut usage = MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `usage` is writable for a `rusage`, which the call fills on success.
        let done = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(done, 0);
        // SAFETY: filled by the successful call.
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Prefault's touch of a page never accessed takes one fault, for writing, as the kernel's
    /// populate does: reading the byte first took a fault for reading (Linux maps the shared
    /// zero page) and then another for writing, twice the faults and about twice the time. (A
    /// sanitizer's shadow memory may add a fault per eight pages.)
    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn touching_a_fresh_page_for_writing_faults_once() {
        const PAGES: usize = 64;
        let r = reservation(PAGES);
        r.commit(0, PAGES * page()).unwrap();
        let before = minor_faults();
        for index in 0..PAGES {
            // SAFETY: the first byte of a committed read-write page, which only this thread
            // reaches.
            touch_for_writing(unsafe { AtomicU8::from_ptr(r.at(index * page())) });
        }
        let faults = usize::try_from(minor_faults() - before).unwrap();
        assert!(
            faults < PAGES * 3 / 2,
            "{faults} faults for {PAGES} fresh pages"
        );
        assert_eq!(r.resident_pages(0, PAGES * page()).unwrap(), PAGES);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot observe residency")]
    fn prefault_makes_pages_resident_and_keeps_contents() {
        let mut r = reservation(8);
        r.commit(0, 8 * page()).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().write(1) };
        r.prefault(0, 8 * page()).unwrap();
        assert_eq!(r.resident_pages(0, 8 * page()).unwrap(), 8);
        // SAFETY: committed read-write.
        assert_eq!(unsafe { r.as_ptr().read() }, 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot observe residency")]
    fn residency_counts_only_touched_pages() {
        let mut r = reservation(4);
        r.commit(0, 4 * page()).unwrap();
        // SAFETY: committed read-write.
        unsafe { r.as_ptr().add(2 * page()).write(1) };
        assert_eq!(
            r.residency(0, 4 * page()).unwrap(),
            [false, false, true, false]
        );
        r.decommit(0, 4 * page()).unwrap();
        assert_eq!(r.resident_pages(0, 4 * page()).unwrap(), 0);
    }

    #[test]
    fn residency_bad_range_is_error() {
        let r = reservation(1);
        assert!(matches!(
            r.residency(0, 2 * page()),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!(r.resident_pages(0, 0).unwrap_err(), Error::ZeroLength);
    }

    #[test]
    fn guard_blocks_commit_until_unguard() {
        let mut r = reservation(3);
        r.commit(0, 3 * page()).unwrap();
        r.guard(page(), page()).unwrap();
        assert!(r.is_guarded(page(), page()).unwrap());
        assert!(!r.is_committed(0, 3 * page()).unwrap());
        assert_eq!(
            r.commit(0, 3 * page()).unwrap_err(),
            Error::Guarded { offset: page() }
        );
        assert_eq!(
            r.prefault(page(), page()).unwrap_err(),
            Error::Guarded { offset: page() }
        );
        assert_eq!(
            r.decommit(0, 2 * page()).unwrap_err(),
            Error::Guarded { offset: page() }
        );
        // Pages around the guard keep working.
        assert!(r.is_committed(0, page()).unwrap());
        r.unguard(page(), page()).unwrap();
        assert!(!r.is_guarded(page(), page()).unwrap());
        r.commit(page(), page()).unwrap();
        // SAFETY: committed read-write.
        assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
    }

    #[test]
    fn unguard_non_guard_page_is_error() {
        let mut r = reservation(2);
        r.guard(0, page()).unwrap();
        assert_eq!(
            r.unguard(0, 2 * page()).unwrap_err(),
            Error::NotGuarded { offset: page() }
        );
        assert!(r.is_guarded(0, page()).unwrap());
    }

    #[test]
    fn sparse_mode_commits_and_decommits() {
        let mut r = Reservation::builder()
            .mode(CommitMode::Sparse)
            .reserve(4 * page())
            .unwrap();
        r.commit(page(), page()).unwrap();
        // SAFETY: committed.
        unsafe { r.as_ptr().add(page()).write(8) };
        r.decommit(page(), page()).unwrap();
        r.commit(page(), page()).unwrap();
        // SAFETY: committed; decommit zeroed it.
        assert_eq!(unsafe { r.as_ptr().add(page()).read() }, 0);
        r.guard(0, page()).unwrap();
        r.unguard(0, page()).unwrap();
        r.commit(0, page()).unwrap();
        // SAFETY: committed.
        unsafe { r.as_ptr().write(1) };
    }

    #[test]
    fn lock_uncommitted_is_error_and_lock_committed_works() {
        let r = reservation(2);
        assert_eq!(
            r.lock(0, page()).unwrap_err(),
            Error::NotCommitted { offset: 0 }
        );
        assert_eq!(
            r.unlock(0, page()).unwrap_err(),
            Error::NotCommitted { offset: 0 }
        );
        r.commit(0, page()).unwrap();
        r.lock(0, page()).unwrap();
        r.unlock(0, page()).unwrap();
    }

    #[test]
    fn huge_page_advice_checks_range() {
        let r = Reservation::builder()
            .alignment(2 << 20)
            .reserve(4 << 20)
            .unwrap();
        assert!(matches!(
            r.advise_huge_pages(0, 8 << 20, HugePageAdvice::Huge),
            Err(Error::OutOfBounds { .. })
        ));
        let result = r.advise_huge_pages(0, 4 << 20, HugePageAdvice::Huge);
        if cfg!(any(target_os = "linux", miri)) {
            result.unwrap();
            r.advise_huge_pages(0, 4 << 20, HugePageAdvice::NoHuge)
                .unwrap();
        } else {
            assert_eq!(
                result.unwrap_err(),
                Error::Unsupported {
                    operation: Operation::HugePageAdvice
                }
            );
        }
    }

    #[test]
    fn contains_checks_bounds() {
        let r = reservation(2);
        assert!(r.contains(r.as_ptr()));
        assert!(r.contains(r.as_ptr().wrapping_add(2 * page() - 1)));
        assert!(!r.contains(r.as_ptr().wrapping_add(2 * page())));
        assert!(!r.contains(r.as_ptr().wrapping_sub(1)));
    }

    #[test]
    fn reservation_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Reservation>();
    }

    /// Callers (an address space over reservations, say) pass references to one into
    /// `catch_unwind`; the lazily made huge-page record must not take that away.
    #[test]
    fn reservation_is_unwind_safe() {
        fn assert_unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
        assert_unwind_safe::<Reservation>();
    }

    #[test]
    fn committed_bytes_counts_overlapping_commits_once() {
        let mut r = reservation(8);
        r.commit(0, 4 * page()).unwrap();
        r.commit(2 * page(), 4 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 6 * page());
        r.guard(5 * page(), 2 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 5 * page());
        r.decommit(0, 3 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 2 * page());
        r.decommit(0, 5 * page()).unwrap();
        assert_eq!(r.committed_bytes(), 0);
    }

    #[test]
    fn committed_bytes_exact_after_concurrent_commit_and_decommit() {
        // Commits anywhere, racing with decommits; each thread decommits only in its own
        // quarter, as `decommit_unchecked` wants no other thread touching its range's memory
        // (commits do not touch it).
        let quarter = if cfg!(miri) { 4 } else { 64 };
        let pages = 4 * quarter;
        let rounds = if cfg!(miri) { 4 } else { 200 };
        let r = reservation(pages);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let r = &r;
                s.spawn(move || {
                    let mut x = t.wrapping_mul(0x9e37_79b9) | 1;
                    for _ in 0..rounds {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x & 0x10000 == 0 {
                            let first = x % pages;
                            let count = 1 + (x >> 8) % (pages - first).min(8);
                            r.commit(first * page(), count * page()).unwrap();
                        } else {
                            let first = t * quarter + x % quarter;
                            let count = 1 + (x >> 8) % (t * quarter + quarter - first);
                            // SAFETY: only this thread decommits in its quarter, and no
                            // thread reads or writes the reservation's memory.
                            unsafe { r.decommit_unchecked(first * page(), count * page()) }
                                .unwrap();
                        }
                    }
                });
            }
        });
        let counted = (0..pages)
            .filter(|&p| r.is_committed(p * page(), page()).unwrap())
            .count();
        assert_eq!(r.committed_bytes(), counted * page());
    }

    #[test]
    fn concurrent_commits_from_threads_all_land() {
        let r = reservation(16);
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..4 {
                        r.commit((t * 4 + i) * page(), page()).unwrap();
                    }
                });
            }
        });
        assert!(r.is_committed(0, 16 * page()).unwrap());
    }
}
