//! [`ConcurrentVec`]: counting published elements, reserving ahead through `&self`,
//! extending, and comparing and hashing by the published elements in index order.

use core::cmp::Ordering as CmpOrdering;
use core::hash::{Hash, Hasher};

use super::ConcurrentVec;
use crate::sync::Ordering;
use crate::vec::error::{Error, Result};
use crate::vec::layout::WORD_BITS;

impl<T> ConcurrentVec<T> {
    /// The number of published elements (what [`iter`](Self::iter) would yield now), counted
    /// from the ready bits: one load per 64 slots. Unlike [`len`](Self::len) it leaves out
    /// slots being written and holes.
    ///
    /// # Examples
    /// ```
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    ///
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// v.push(1);
    /// let _ = catch_unwind(AssertUnwindSafe(|| v.push_with(|_| -> i32 { panic!("hole") })));
    /// v.push(3);
    /// assert_eq!(v.len(), 3);
    /// assert_eq!(v.count(), 2);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[must_use]
    pub fn count(&self) -> usize {
        let limit = self.scan_limit();
        (0..limit.div_ceil(WORD_BITS))
            // SAFETY: each word holds slots below `limit <= committed`, so it is committed.
            .map(|word| unsafe { self.ready.ready_in(word, word * WORD_BITS, limit) })
            .map(|bits| bits.count_ones() as usize)
            .sum()
    }

    /// Commits memory now for `additional` more slots past [`len`](Self::len), so that
    /// pushes that claim single slots among them do not commit (nor fail with
    /// [`Error::Commit`]). Through `&self`: safe while other threads push (memory is only ever
    /// added).
    ///
    /// A [`Pusher`](super::Pusher)'s pushes into these slots commit nothing either (its block
    /// is committed as it fills). Plain pushes once their thread moved to blocks of up to
    /// [`thread_block`](Self::thread_block) slots commit a whole block when they claim it, and
    /// a block claimed at one of these slots may end up to a block's length past them: it
    /// commits then, and may be refused. Reserving a block's length more (at most up to the
    /// capacity, where blocks end) covers those pushes too.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] if `len() + additional` exceeds the capacity;
    /// [`Error::Commit`] if the system refuses the memory.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::<u64>::with_capacity(1 << 20)?;
    /// v.reserve(100_000)?;
    /// assert!(v.committed_capacity() >= 100_000);
    /// assert!(v.reserve((1 << 20) + 1).is_err());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn reserve(&self, additional: usize) -> Result<()> {
        self.reserve_by(additional, false)
    }

    /// As [`reserve`](Self::reserve), but commits only the pages the `additional` slots need,
    /// without a [`Growth`](super::Growth) step past them (the call virtual-buffer's vectors
    /// and `std::vec::Vec` name `reserve_exact`; it returns the error where they panic).
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::page_size;
    /// use memvisor_vmem::vec::{Builder, Growth};
    ///
    /// let v = Builder::new(1 << 20)
    ///     .growth(Growth::Fixed(1 << 20))
    ///     .build_concurrent::<u8>()?;
    /// v.reserve_exact(1)?;
    /// // A page of slots and a page of ready bits, not the 1 MiB step.
    /// assert_eq!(v.committed_bytes(), 2 * page_size());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn reserve_exact(&self, additional: usize) -> Result<()> {
        self.reserve_by(additional, true)
    }

    fn reserve_by(&self, additional: usize, exact: bool) -> Result<()> {
        let len = self.len();
        let capacity = self.capacity();
        let end = len
            .checked_add(additional)
            .filter(|&end| end <= capacity)
            .ok_or(Error::CapacityExceeded {
                capacity,
                requested: len.saturating_add(additional),
            })?;
        if end == 0 || end <= self.committed.0.load(Ordering::Acquire) {
            return Ok(());
        }
        self.commit_through_by(end - 1, exact)
    }
}

impl<T> Extend<T> for ConcurrentVec<T> {
    /// Pushes every item.
    ///
    /// # Panics
    /// As [`ConcurrentVec::push`]; the items pushed before stay.
    #[track_caller]
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for item in iter {
            self.push(item);
        }
    }
}

impl<'a, T: Copy + 'a> Extend<&'a T> for ConcurrentVec<T> {
    /// Pushes a copy of every item.
    ///
    /// # Panics
    /// As [`ConcurrentVec::push`].
    #[track_caller]
    fn extend<I: IntoIterator<Item = &'a T>>(&mut self, iter: I) {
        self.extend(iter.into_iter().copied());
    }
}

/// Vectors are equal when their published elements, in index order, are equal: holes,
/// indices and `len` are not compared (the rule of [`ConcurrentVec`]'s docs).
impl<T: PartialEq<U>, U> PartialEq<ConcurrentVec<U>> for ConcurrentVec<T> {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for ConcurrentVec<T> {}

/// Equal when the published elements, in index order, equal the slice's: holes are skipped
/// and `len` is not compared, as between two vectors (the rule of [`ConcurrentVec`]'s docs),
/// so a vector of `len` 3 with a hole equals a slice of 2.
impl<T: PartialEq<U>, U> PartialEq<[U]> for ConcurrentVec<T> {
    fn eq(&self, other: &[U]) -> bool {
        self.iter().eq(other.iter())
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<&[U]> for ConcurrentVec<T> {
    fn eq(&self, other: &&[U]) -> bool {
        *self == **other
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<&mut [U]> for ConcurrentVec<T> {
    fn eq(&self, other: &&mut [U]) -> bool {
        *self == **other
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U, const N: usize> PartialEq<[U; N]> for ConcurrentVec<T> {
    fn eq(&self, other: &[U; N]) -> bool {
        *self == other[..]
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U, const N: usize> PartialEq<&[U; N]> for ConcurrentVec<T> {
    fn eq(&self, other: &&[U; N]) -> bool {
        *self == other[..]
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<alloc::vec::Vec<U>> for ConcurrentVec<T> {
    fn eq(&self, other: &alloc::vec::Vec<U>) -> bool {
        *self == other[..]
    }
}

/// As the comparison with a slice.
impl<T: PartialEq<U>, U: Clone> PartialEq<alloc::borrow::Cow<'_, [U]>> for ConcurrentVec<T> {
    fn eq(&self, other: &alloc::borrow::Cow<'_, [U]>) -> bool {
        *self == **other
    }
}

/// As the vector's comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<ConcurrentVec<U>> for [T] {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        self.iter().eq(other.iter())
    }
}

/// As the vector's comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<ConcurrentVec<U>> for &[T] {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        **self == *other
    }
}

/// As the vector's comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<ConcurrentVec<U>> for &mut [T] {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        **self == *other
    }
}

/// As the vector's comparison with a slice.
impl<T: PartialEq<U>, U> PartialEq<ConcurrentVec<U>> for alloc::vec::Vec<T> {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        self[..] == *other
    }
}

/// As the vector's comparison with a slice.
impl<T: PartialEq<U> + Clone, U> PartialEq<ConcurrentVec<U>> for alloc::borrow::Cow<'_, [T]> {
    fn eq(&self, other: &ConcurrentVec<U>) -> bool {
        **self == *other
    }
}

/// Lexicographic order of the published elements in index order (holes skipped, as for
/// equality).
impl<T: PartialOrd> PartialOrd for ConcurrentVec<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        self.iter().partial_cmp(other.iter())
    }
}

impl<T: Ord> Ord for ConcurrentVec<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.iter().cmp(other.iter())
    }
}

/// Hashes the published elements in index order, then their number, so that equal vectors
/// hash alike.
impl<T: Hash> Hash for ConcurrentVec<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut count = 0usize;
        for item in self.iter() {
            item.hash(state);
            count += 1;
        }
        state.write_usize(count);
    }
}
