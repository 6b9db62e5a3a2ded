//! [`Backing`]: the memory an arena is carved from, and who frees it.

use alloc::alloc::{Layout, alloc, dealloc};
#[cfg(feature = "std")]
use alloc::boxed::Box;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

#[cfg(feature = "std")]
use memvisor_vmem::{CommitMode, Reservation};

use crate::config::MIN_BLOCK;
use crate::error::{Error, Exhausted, Result};

/// The backing memory an [`Arena`](crate::Arena) is made from (not to be confused with the
/// blocks clients allocate in it).
///
/// Backing memory is borrowed for the rest of the program (`&'static mut`), allocated from the
/// global allocator and freed with the arena, taken from a raw pointer the caller vouches for, or
/// (with the `std` feature) a reservation of address space whose chunks the arena commits as
/// clients need them.
///
/// # Examples
/// ```
/// use memvisor_arena::Backing;
///
/// let backing = Backing::heap(1 << 20, 4096)?;
/// assert_eq!(backing.len(), 1 << 20);
/// assert_eq!(backing.as_ptr() as usize % 4096, 0);
/// # Ok::<(), memvisor_arena::Error>(())
/// ```
pub struct Backing {
    ptr: NonNull<u8>,
    len: usize,
    source: Source,
}

enum Source {
    /// Borrowed or raw memory: nothing to free.
    Borrowed,
    /// From the global allocator with this layout.
    Heap(Layout),
    /// A reservation whose pages are committed chunk by chunk (boxed: its bookkeeping is large).
    #[cfg(feature = "std")]
    Reserved(Box<Reservation>),
}

// SAFETY: backing memory is plain memory owned (or exclusively borrowed) by it; nothing in it is
// tied to a thread, and a reservation is itself `Send`.
unsafe impl Send for Backing {}
// SAFETY: `&Backing` only gives out the pointer and length, and `&Reservation`, which is `Sync`;
// accesses to the memory are coordinated by the arena.
unsafe impl Sync for Backing {}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.source {
            Source::Borrowed => "borrowed",
            Source::Heap(_) => "heap",
            #[cfg(feature = "std")]
            Source::Reserved(_) => "reservation",
        };
        f.debug_struct("Backing")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("source", &kind)
            .finish()
    }
}

impl Backing {
    /// Backing memory borrowed for the rest of the program, for example a `static` buffer.
    ///
    /// # Examples
    /// ```
    /// use core::mem::MaybeUninit;
    ///
    /// use memvisor_arena::Backing;
    ///
    /// // Memory that lives as long as the program, for example a leaked buffer.
    /// let raw = Box::into_raw(vec![MaybeUninit::<u8>::uninit(); 1 << 17].into_boxed_slice());
    /// // SAFETY: `raw` is a unique, valid allocation that is never freed while borrowed.
    /// let memory: &'static mut [MaybeUninit<u8>] = unsafe { &mut *raw };
    /// let backing = Backing::from_static(memory);
    /// assert_eq!(backing.len(), 1 << 17);
    /// # drop(backing);
    /// # // SAFETY: the backing, the only borrower, is gone; freeing keeps leak checkers quiet.
    /// # drop(unsafe { Box::from_raw(raw) });
    /// ```
    #[must_use]
    pub fn from_static(memory: &'static mut [MaybeUninit<u8>]) -> Self {
        let len = memory.len();
        // A slice pointer is never null (dangling but non-null when empty).
        let ptr = NonNull::from(memory).cast::<u8>();
        Self {
            ptr,
            len,
            source: Source::Borrowed,
        }
    }

    /// Backing memory of `len` bytes aligned to `align` from the global allocator, freed when the
    /// arena made from it is dropped. Its contents start uninitialised.
    ///
    /// # Errors
    /// [`Error::InvalidBackingAlignment`] if `align` is not a power of two of at least 16
    /// bytes, [`Error::EmptyBacking`] for `len == 0`, [`Error::BackingTooLarge`] if `len` rounded
    /// up to `align` exceeds `isize::MAX`, [`Error::OutOfMemory`] if the allocator refuses.
    pub fn heap(len: usize, align: usize) -> Result<Self> {
        if !align.is_power_of_two() || align < MIN_BLOCK {
            return Err(Error::InvalidBackingAlignment {
                align,
                min: MIN_BLOCK,
            });
        }
        if len == 0 {
            return Err(Error::EmptyBacking);
        }
        let layout = Layout::from_size_align(len, align)
            .map_err(|_| Error::BackingTooLarge { len, align })?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc(layout) }).ok_or(Error::OutOfMemory {
            size: len,
            requested: len,
            exhausted: Exhausted::HostMemory,
        })?;
        Ok(Self {
            ptr,
            len,
            source: Source::Heap(layout),
        })
    }

    /// Backing memory of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be valid for reads and writes, and nothing else may access it,
    /// for as long as the backing and any arena made from it live (the memory is not freed by
    /// this crate).
    #[must_use]
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        Self {
            ptr,
            len,
            source: Source::Borrowed,
        }
    }

    /// A reservation of `len` bytes of address space aligned to `align`, committed chunk by
    /// chunk as clients take chunks. The backing is `len` bytes long even where the
    /// reservation is rounded up to whole pages. The arena can then decommit chunks clients give
    /// back ([`Flags::DECOMMIT`](crate::Flags::DECOMMIT)) and put a guard page after each chunk
    /// ([`Flags::GUARD`](crate::Flags::GUARD)). For transparent huge pages, reserve with a
    /// 2 MiB alignment and advise the whole reservation
    /// ([`reservation`](Self::reservation), `Reservation::advise_huge_pages`) before
    /// [`Arena::new`](crate::Arena::new); the advice outlives decommits.
    ///
    /// # Errors
    /// [`Error::Vmem`] if the reservation fails, [`Error::TablesUnavailable`] (of
    /// [`HostTable::BackingRecord`](crate::HostTable::BackingRecord)) if the host's allocator
    /// refuses the backing's record.
    ///
    /// # Examples
    /// ```
    /// use memvisor_arena::Backing;
    /// use memvisor_arena::memvisor_vmem::CommitMode;
    ///
    /// let backing = Backing::reserve(4 << 20, 1 << 20, CommitMode::Protected)?;
    /// assert!(backing.is_reserved());
    /// # Ok::<(), memvisor_arena::Error>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn reserve(len: usize, align: usize, mode: CommitMode) -> Result<Self> {
        let reservation = Reservation::builder()
            .alignment(align)
            .mode(mode)
            .reserve(len)?;
        // The reservation holds at least `len` bytes (whole pages); the backing is what was
        // asked for.
        let (ptr, len) = (reservation.as_non_null(), len.min(reservation.len()));
        let record = crate::table::boxed(reservation).ok_or(Error::TablesUnavailable {
            bytes: core::mem::size_of::<Reservation>(),
            what: crate::HostTable::BackingRecord,
        })?;
        Ok(Self {
            ptr,
            len,
            source: Source::Reserved(record),
        })
    }

    /// The start of the backing memory.
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it is a reservation whose chunks are committed on demand.
    #[must_use]
    pub fn is_reserved(&self) -> bool {
        self.reservation().is_some()
    }

    /// The reservation behind the backing memory, if any.
    ///
    /// Its safe calls change no contents (advice, locking, committing, queries). Of the
    /// unsafe ones that do (`decommit_unchecked` and the like), an arena made from this
    /// backing allows only a decommit, and only while the arena has no client: from before
    /// the call until it returns, no client of the arena lives and none is made, on any
    /// thread. Every chunk is then free; each is committed again when a client takes it, and
    /// counts among [`ArenaStats::cached_chunks`](crate::ArenaStats::cached_chunks) until then.
    /// With [`Flags::GUARD`](crate::Flags::GUARD), a chunk a client held ends in a guard page:
    /// a range that holds one is refused with `memvisor_vmem::Error::Guarded`, and nothing
    /// changes (decommit each chunk's pages before its guard page instead).
    ///
    /// While clients live, no caller can name a chunk that stays free through its decommit:
    /// whichever client allocates next, on any thread, takes a free chunk without a lock the
    /// caller could hold, and a decommit that meets the take hands the client memory whose
    /// contents are then discarded (or that faults). The chunks clients hold keep the arena's
    /// own records in their free blocks (slab free lists, blocks freed through
    /// [`Arena::free`](crate::Arena::free)): changing their contents or access breaks the
    /// arena. [`Arena::decommit_free_chunks`](crate::Arena::decommit_free_chunks) is the safe
    /// way to give free chunks' memory back while clients live: it takes each out of the free
    /// set for its decommit.
    #[cfg(feature = "std")]
    #[must_use]
    pub fn reservation(&self) -> Option<&Reservation> {
        match &self.source {
            Source::Reserved(r) => Some(r),
            _ => None,
        }
    }

    #[cfg(not(feature = "std"))]
    fn reservation(&self) -> Option<&()> {
        None
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Source::Heap(layout) = self.source {
            // SAFETY: allocated by `Backing::heap` with this layout and no longer used: the arena
            // that used it is being dropped, and it borrowed no client beyond its life.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_bad_alignment_errors() {
        assert_eq!(
            Backing::heap(4096, 24).unwrap_err(),
            Error::InvalidBackingAlignment {
                align: 24,
                min: MIN_BLOCK
            }
        );
        assert_eq!(
            Backing::heap(4096, 8).unwrap_err(),
            Error::InvalidBackingAlignment {
                align: 8,
                min: MIN_BLOCK
            }
        );
    }

    #[test]
    fn heap_zero_length_errors() {
        assert_eq!(Backing::heap(0, 64).unwrap_err(), Error::EmptyBacking);
    }

    #[test]
    fn heap_length_over_isize_max_errors() {
        let len = usize::MAX - 8;
        assert_eq!(
            Backing::heap(len, 64).unwrap_err(),
            Error::BackingTooLarge { len, align: 64 }
        );
    }

    #[test]
    fn heap_aligned_and_sized() {
        let backing = Backing::heap(1 << 16, 1 << 12).unwrap();
        assert_eq!(backing.as_ptr() as usize % (1 << 12), 0);
        assert_eq!(backing.len(), 1 << 16);
        assert!(!backing.is_empty());
        assert!(!backing.is_reserved());
    }
}
