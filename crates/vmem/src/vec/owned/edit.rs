//! [`Vec`]: removing consecutive duplicates, splitting, appending, extending from itself, and
//! writing into committed spare capacity.

use core::mem::MaybeUninit;
use core::ops::{Bound, RangeBounds};
use core::{ptr, slice};

use super::{Vec, failed};
use crate::vec::error::{Error, Result};

impl<T> Vec<T> {
    /// Removes consecutive elements for which `same(current, previous_kept)` is `true`,
    /// keeping the first of each run.
    ///
    /// If `same` or a destructor panics, the vector keeps the elements already kept and every
    /// element not yet visited (as [`retain_mut`](Self::retain_mut)).
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend(["a", "A", "b", "B", "b", "c"]);
    /// v.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    /// assert_eq!(v, ["a", "b", "c"]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn dedup_by<F: FnMut(&mut T, &mut T) -> bool>(&mut self, mut same: F) {
        let base = self.ptr.as_ptr();
        let mut visited = 0usize;
        let mut removed = 0usize;
        self.retain_mut(|current| {
            let index = visited;
            visited += 1;
            if index == 0 {
                return true;
            }
            // SAFETY: `retain_mut` visits in order and has moved the elements it kept so far
            // to slots `0..index - removed` before visiting slot `index`, so the previous kept
            // element is at `index - removed - 1`, a different slot than `current`, and
            // nothing else refers to it during the call.
            let previous = unsafe { &mut *base.add(index - removed - 1) };
            if same(current, previous) {
                removed += 1;
                false
            } else {
                true
            }
        });
    }

    /// Removes consecutive elements with the same key, keeping the first of each run.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([10, 11, 20, 21, 10]);
    /// v.dedup_by_key(|x| *x / 10);
    /// assert_eq!(v, [10, 20, 10]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn dedup_by_key<K: PartialEq, F: FnMut(&mut T) -> K>(&mut self, mut key: F) {
        self.dedup_by(|a, b| key(a) == key(b));
    }

    /// Removes consecutive equal elements, keeping the first of each run.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([1, 1, 2, 2, 2, 1]);
    /// v.dedup();
    /// assert_eq!(v, [1, 2, 1]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn dedup(&mut self)
    where
        T: PartialEq,
    {
        self.dedup_by(|a, b| a == b);
    }

    /// Moves the elements from `at` on into a new vector with the same options (a
    /// reservation of its own), leaving `0..at` here.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `at > len()`; as [`Builder::build`](crate::vec::Builder::build)
    /// and [`try_reserve`](Self::try_reserve) for the new vector. The vector is unchanged
    /// after an error.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend(1..=5);
    /// let tail = v.try_split_off(3)?;
    /// assert_eq!(v, [1, 2, 3]);
    /// assert_eq!(tail, [4, 5]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn try_split_off(&mut self, at: usize) -> Result<Self> {
        if at > self.len {
            return Err(Error::OutOfRange {
                index: at,
                len: self.len,
            });
        }
        let mut tail = self.builder.build()?;
        let moved = self.len - at;
        tail.try_reserve(moved)?;
        // SAFETY: slots `at..len` hold elements of `self`; `tail` has `moved` committed empty
        // slots; the reservations are distinct. The elements change owner: `self` forgets
        // them by its length, `tail` takes them by its length.
        unsafe {
            ptr::copy_nonoverlapping(self.slot(at), tail.slot(0), moved);
            self.set_len(at);
            tail.set_len(moved);
        }
        Ok(tail)
    }

    /// As [`try_split_off`](Self::try_split_off), panicking on failure.
    ///
    /// # Panics
    /// Where `try_split_off` returns an error (for `at > len()`, as `std` does).
    #[track_caller]
    #[must_use = "the elements from `at` on are in the returned vector"]
    pub fn split_off(&mut self, at: usize) -> Self {
        match self.try_split_off(at) {
            Ok(tail) => tail,
            Err(e) => failed("split_off", &e),
        }
    }

    /// Moves every element of `other` to the end of this vector, all or none; `other` is left
    /// empty (keeping its memory).
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] or [`Error::Commit`] if they do not all fit; both vectors
    /// are unchanged then.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::vec::Vec;
    ///
    /// let mut a = Vec::with_capacity(8)?;
    /// let mut b = Vec::with_capacity(8)?;
    /// a.extend([1, 2]);
    /// b.extend([3, 4]);
    /// a.try_append(&mut b)?;
    /// assert_eq!(a, [1, 2, 3, 4]);
    /// assert!(b.is_empty());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn try_append(&mut self, other: &mut Self) -> Result<()> {
        let moved = other.len;
        self.try_reserve(moved)?;
        // SAFETY: `other`'s slots `0..moved` hold its elements; `self` has `moved` committed
        // empty slots after its last element; distinct reservations. Ownership moves by the
        // two lengths.
        unsafe {
            ptr::copy_nonoverlapping(other.slot(0), self.slot(self.len), moved);
            other.set_len(0);
            self.set_len(self.len + moved);
        }
        Ok(())
    }

    /// As [`try_append`](Self::try_append), panicking on failure.
    ///
    /// # Panics
    /// Where `try_append` returns an error (nothing moves then).
    #[track_caller]
    pub fn append(&mut self, other: &mut Self) {
        if let Err(e) = self.try_append(other) {
            failed("append", &e);
        }
    }

    /// Appends clones of the elements in `range` of this vector, all or none.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a range that is not inside `0..len()` (or whose start is
    /// after its end); [`Error::CapacityExceeded`] or [`Error::Commit`] if the clones do not
    /// all fit. The vector is unchanged then. If a clone panics, the clones made before stay.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend(['a', 'b', 'c']);
    /// v.try_extend_from_within(1..)?;
    /// assert_eq!(v, ['a', 'b', 'c', 'b', 'c']);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn try_extend_from_within<R: RangeBounds<usize>>(&mut self, range: R) -> Result<()>
    where
        T: Clone,
    {
        let len = self.len;
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(len),
        };
        let (start, end) = match (start, end) {
            (Some(start), Some(end)) if start <= end && end <= len => (start, end),
            (start, end) => {
                return Err(Error::OutOfRange {
                    index: end.unwrap_or(usize::MAX).max(start.unwrap_or(usize::MAX)),
                    len,
                });
            }
        };
        self.try_reserve(end - start)?;
        for index in start..end {
            // SAFETY: `index < len` at entry, so the slot holds an element that this loop
            // never moves or drops (it only appends after the old end).
            let value = unsafe { (*self.slot(index)).clone() };
            // SAFETY: room for `end - start` elements was committed above.
            unsafe { self.push_within_committed(value) };
        }
        Ok(())
    }

    /// As [`try_extend_from_within`](Self::try_extend_from_within), panicking on failure.
    ///
    /// # Panics
    /// Where `try_extend_from_within` returns an error, or a clone panics.
    #[track_caller]
    pub fn extend_from_within<R: RangeBounds<usize>>(&mut self, range: R)
    where
        T: Clone,
    {
        if let Err(e) = self.try_extend_from_within(range) {
            failed("extend_from_within", &e);
        }
    }

    /// The committed slots after the last element, to be written before
    /// [`set_len`](Self::set_len) makes them elements. Only committed memory is offered
    /// (see [`committed_capacity`](Self::committed_capacity)); [`try_reserve`](Self::try_reserve)
    /// commits more.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::<u32>::with_capacity(1024)?;
    /// v.try_reserve(3)?;
    /// let spare = v.spare_capacity_mut();
    /// spare[0].write(7);
    /// spare[1].write(8);
    /// // SAFETY: the first two spare slots were just written.
    /// unsafe { v.set_len(2) };
    /// assert_eq!(v, [7, 8]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<T>] {
        // SAFETY: slots `len..committed` are committed memory inside the reservation, hold no
        // element, and `&mut self` makes them ours; `MaybeUninit` needs no initialization.
        unsafe {
            slice::from_raw_parts_mut(
                self.slot(self.len).cast::<MaybeUninit<T>>(),
                self.committed - self.len,
            )
        }
    }
}
