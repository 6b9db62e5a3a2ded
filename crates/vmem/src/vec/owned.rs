//! [`Vec`]: a vector with one owner that grows and shrinks in place inside a reservation.

use core::borrow::{Borrow, BorrowMut};
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::ops::{Bound, Deref, DerefMut, RangeBounds};
use core::ptr::{self, NonNull};
use core::{fmt, mem, slice};

use super::builder::{Builder, Growth};
use super::error::{Error, PushError, Result};
use super::iter::{Drain, IntoIter};
use super::layout::VecLayout;
use crate::reservation::Reservation;

mod edit;

/// A vector with one owner whose maximum capacity is reserved up front and whose memory is
/// committed as it grows and decommitted when it shrinks. Elements never move when it grows:
/// a pointer to an element keeps pointing at it until an edit moves or removes it (`insert`,
/// `remove`, `retain`, `drain` and the like shift elements between slots, as `std`'s do) or the
/// vector shrinks past it.
///
/// It behaves like `std::vec::Vec` (it dereferences to a slice, and most methods keep std's
/// names and meanings), with these differences:
/// - the capacity ([`capacity`](Self::capacity)) is a maximum fixed at creation;
///   [`try_push`](Self::try_push) returns the value at capacity, [`push`](Self::push) panics; so do
///   the other calls that add elements where std's would reallocate (`insert`, `extend`,
///   `extend_from_slice`, `extend_from_within`, `resize`, `resize_with`, `append`, `reserve`), and
///   `clone` and `split_off`, which reserve a new vector, panic if that fails. Each names its
///   reason; `try_insert`, `try_extend_from_slice`, `try_extend_from_within`, `try_append`,
///   `try_reserve`, `try_clone` and `try_split_off` return it as an [`Error`] instead, out-of-range
///   indices included. Indices and ranges out of bounds panic where std's do (`insert`, `remove`,
///   `swap_remove`, `drain`, `split_off`, `extend_from_within`, indexing);
/// - memory is committed in steps set by [`Growth`]
///   ([`committed_capacity`](Self::committed_capacity) elements fit in what is committed now), and
///   [`shrink_to_fit`](Self::shrink_to_fit) gives the pages past the last element back to the
///   system (it and [`shrink_to`](Self::shrink_to) return [`Error::Decommit`] if the system
///   refuses);
/// - creating one can fail (the address space is reserved then), so constructors return [`Result`].
///
/// Dropping it drops its elements, so they must outlive it. Its drop is checked as if it used
/// them: unlike std's, even elements without a destructor, such as plain references, must
/// outlive the vector.
/// ```compile_fail
/// use memvisor_vmem::vec::Vec;
///
/// struct Reads<'a>(&'a String);
/// impl Drop for Reads<'_> {
///     fn drop(&mut self) {
///         println!("{}", self.0);
///     }
/// }
///
/// let mut v = Vec::with_capacity(1).unwrap();
/// let s = String::from("dropped before the vector");
/// v.push(Reads(&s));
/// ```
///
/// # Examples
/// ```
/// use memvisor_vmem::vec::Vec;
///
/// let mut v = Vec::with_capacity(1 << 16)?; // address space for 64 Ki u64s, nothing committed
/// v.extend(0..5_000u64);
/// let first = v.as_ptr();
/// v.extend(5_000..10_000);
/// assert_eq!(v.as_ptr(), first); // grown in place
/// assert_eq!(v[7_500], 7_500);
/// v.truncate(10);
/// v.shrink_to_fit()?; // memory past element 10 goes back to the system
/// assert!(v.committed_bytes() < 10_000 * 8);
/// # Ok::<(), memvisor_vmem::vec::Error>(())
/// ```
///
/// # Threads
/// As `std::vec::Vec`: `Send` when `T: Send`, `Sync` when `T: Sync`.
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Vec<std::sync::MutexGuard<'static, u8>>>();
/// ```
/// Not `Sync` with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::Vec<std::cell::Cell<u8>>>();
/// ```
pub struct Vec<T> {
    ptr: NonNull<T>,
    len: usize,
    /// Elements that fit in the committed bytes (the capacity for zero-sized types).
    committed: usize,
    /// Bytes committed from the start of the reservation, a multiple of the page size.
    committed_bytes: usize,
    layout: VecLayout,
    growth: Growth,
    builder: Builder,
    reservation: Reservation,
    _owns: PhantomData<T>,
}

// SAFETY: the vector owns its elements and its reservation exclusively, as `std::vec::Vec`
// does; sending it sends the elements, which needs `T: Send` (and no more: no other thread
// keeps a reference to them). The bound of `std::vec::Vec`.
unsafe impl<T: Send> Send for Vec<T> {}
// SAFETY: `&Vec<T>` only gives out `&T` (and `&Reservation`, which is `Sync` and whose `&self`
// calls that would change the elements' memory are refused for a vector's reservation), so
// sharing it shares the elements, which needs `T: Sync` and not `T: Send`: nothing moves an
// element or writes one through `&self`. The bound of `std::vec::Vec`.
unsafe impl<T: Sync> Sync for Vec<T> {}

impl<T> Vec<T> {
    /// Reserves a vector of at most `capacity` elements with the default options (see
    /// [`Builder`]). Nothing is committed until the first element.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `capacity` elements, rounded up to whole pages, take more than
    /// `isize::MAX` bytes (the most a slice may span); [`Error::Reserve`] if the system has no
    /// room for them.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::Vec::<u8>::with_capacity(1 << 20)?;
    /// assert_eq!(v.capacity(), 1 << 20);
    /// assert_eq!(v.committed_bytes(), 0);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn with_capacity(capacity: usize) -> Result<Self> {
        Builder::new(capacity).build()
    }

    /// Options for a vector of at most `capacity` elements; shorthand for [`Builder::new`].
    #[must_use]
    pub fn builder(capacity: usize) -> Builder {
        Builder::new(capacity)
    }

    pub(crate) fn from_builder(builder: &Builder) -> Result<Self> {
        let (layout, growth) = builder.prepare::<T>(false)?;
        let reservation = layout.reserve(builder.mode_setting())?;
        Ok(Self {
            ptr: reservation.as_non_null().cast(),
            len: 0,
            committed: if layout.elem_size == 0 {
                layout.capacity
            } else {
                0
            },
            committed_bytes: 0,
            layout,
            growth,
            builder: *builder,
            reservation,
            _owns: PhantomData,
        })
    }

    /// The number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of elements, fixed at creation.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    /// How many elements fit in the memory committed now (the capacity for zero-sized types).
    #[must_use]
    pub fn committed_capacity(&self) -> usize {
        self.committed
    }

    /// The number of bytes committed for elements, a multiple of the page size.
    #[must_use]
    pub fn committed_bytes(&self) -> usize {
        self.committed_bytes
    }

    /// The reservation holding the elements, for queries and hints (residency, huge-page
    /// advice, locking). Its safe `&self` methods cannot change what the vector reads, and
    /// its unsafe ones that would discard, replace or protect memory (`decommit_unchecked`,
    /// `guard_unchecked`, `protect_unchecked`, `map_unchecked`, `free_unchecked`,
    /// `discard_unchecked`, `purge_unchecked`) refuse with
    /// [`Error::HeldByVector`](crate::Error::HeldByVector): the vector keeps its elements
    /// there whatever their callers vouch for.
    #[must_use]
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// The options the vector was made with.
    #[must_use]
    pub fn options(&self) -> Builder {
        self.builder
    }

    /// A pointer to the first element (the start of the reservation); valid for reads of
    /// `len()` elements, and stable for the vector's life.
    #[must_use]
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// A mutable pointer to the first element; see [`as_ptr`](Self::as_ptr).
    #[must_use]
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The start of the elements, never null (for the iterators).
    pub(super) fn as_non_null(&self) -> NonNull<T> {
        self.ptr
    }

    /// The elements as a slice.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` slots are committed and initialized; `ptr` is aligned and
        // non-null; `&self` keeps them from being mutated.
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The elements as a mutable slice.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`; `&mut self` makes the access exclusive.
        unsafe { slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// A pointer to slot `index` (`index <= capacity`).
    fn slot(&self, index: usize) -> *mut T {
        debug_assert!(index <= self.layout.capacity);
        // SAFETY: `index <= capacity`, so the offset stays inside the reservation (or one past
        // its slot region), which `VecLayout` sized for `capacity` elements.
        unsafe { self.ptr.as_ptr().add(index) }
    }

    /// Commits memory so that `slots` elements fit (`committed < slots <= capacity`): at least
    /// a growth step, or with `exact` only the pages they need.
    #[cold]
    fn commit_for(&mut self, slots: usize, exact: bool) -> Result<()> {
        let needed = self.layout.data_end(slots);
        let target = if exact {
            self.layout.data_target(needed, 0, 0)
        } else {
            let step = self.growth.step(self.committed_bytes, self.layout.page);
            self.layout
                .data_target(needed, self.committed_bytes.saturating_add(step), step)
        };
        let offset = self.committed_bytes;
        self.layout
            .commit_data(&self.reservation, offset, target)
            .map_err(|source| Error::Commit {
                offset,
                len: target - offset,
                source,
            })?;
        self.committed_bytes = target;
        self.committed = self.layout.slots_in(target);
        Ok(())
    }

    /// Makes room for `additional` more elements, committing memory if needed (at least a
    /// [`Growth`] step).
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] if `len() + additional` exceeds the capacity;
    /// [`Error::Commit`] if the system refuses the memory. The vector is unchanged then.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::<u64>::with_capacity(100)?;
    /// v.try_reserve(100)?;
    /// assert!(v.committed_capacity() >= 100);
    /// assert!(v.try_reserve(101).is_err());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn try_reserve(&mut self, additional: usize) -> Result<()> {
        self.try_reserve_by(additional, false)
    }

    /// Makes room for `additional` more elements, committing only the pages they need (no
    /// [`Growth`] step past them), as `std::vec::Vec::try_reserve_exact`.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve). The vector is unchanged then.
    ///
    /// # Examples
    /// ```
    /// use memvisor_vmem::page_size;
    /// use memvisor_vmem::vec::{Builder, Growth};
    ///
    /// let mut v = Builder::new(1 << 20).growth(Growth::Fixed(1 << 20)).build::<u8>()?;
    /// v.try_reserve_exact(1)?;
    /// assert_eq!(v.committed_bytes(), page_size());
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn try_reserve_exact(&mut self, additional: usize) -> Result<()> {
        self.try_reserve_by(additional, true)
    }

    /// As [`try_reserve_exact`](Self::try_reserve_exact), panicking on failure.
    ///
    /// # Panics
    /// Where `try_reserve_exact` returns an error.
    #[track_caller]
    pub fn reserve_exact(&mut self, additional: usize) {
        if let Err(e) = self.try_reserve_exact(additional) {
            failed("reserve_exact", &e);
        }
    }

    fn try_reserve_by(&mut self, additional: usize, exact: bool) -> Result<()> {
        let capacity = self.layout.capacity;
        let requested = self
            .len
            .checked_add(additional)
            .filter(|&n| n <= capacity)
            .ok_or(Error::CapacityExceeded {
                capacity,
                requested: self.len.saturating_add(additional),
            })?;
        if requested > self.committed {
            self.commit_for(requested, exact)?;
        }
        Ok(())
    }

    /// As [`try_reserve`](Self::try_reserve), panicking on failure.
    ///
    /// # Panics
    /// Where `try_reserve` returns an error.
    #[track_caller]
    pub fn reserve(&mut self, additional: usize) {
        if let Err(e) = self.try_reserve(additional) {
            failed("reserve", &e);
        }
    }

    /// Appends `value`, or hands it back if it does not fit.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] at capacity; [`Error::Commit`] if the system refuses the
    /// memory. The vector is unchanged then and the error carries `value`.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(1)?;
    /// assert!(v.try_push('a').is_ok());
    /// assert_eq!(v.try_push('b').unwrap_err().into_value(), 'b');
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.len == self.committed
            && let Err(e) = self.grow_one()
        {
            return Err(PushError::new(value, e));
        }
        // SAFETY: `len < committed <= capacity`: the slot is inside committed memory and
        // holds no element.
        unsafe { self.slot(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    #[cold]
    fn grow_one(&mut self) -> Result<()> {
        self.try_reserve(1)
    }

    /// Appends `value`.
    ///
    /// # Panics
    /// At capacity, or if the system refuses memory, with a message naming the reason.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.push(1);
    /// v.push(2);
    /// assert_eq!(v, [1, 2]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn push(&mut self, value: T) {
        if let Err(e) = self.try_push(value) {
            failed("push", e.error());
        }
    }

    /// Removes and returns the last element, if any.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.push(1);
    /// assert_eq!(v.pop(), Some(1));
    /// assert_eq!(v.pop(), None);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` held the last element, which is now outside the vector and read
        // out exactly once.
        Some(unsafe { self.slot(self.len).read() })
    }

    /// Inserts `value` at `index`, shifting the elements after it right, or hands it back if
    /// `index` is past the end or the value does not fit. It never panics.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `index > len()` (tested first); otherwise as
    /// [`try_push`](Self::try_push). The vector is unchanged either way.
    pub fn try_insert(&mut self, index: usize, value: T) -> Result<(), PushError<T>> {
        let len = self.len;
        if index > len {
            return Err(PushError::new(value, Error::OutOfRange { index, len }));
        }
        if let Err(e) = self.try_reserve(1) {
            return Err(PushError::new(value, e));
        }
        // SAFETY: `len + 1 <= committed`: slots `index..=len` are committed; the elements
        // `index..len` move one slot right (overlapping copy) and `index` is then written.
        unsafe {
            let p = self.slot(index);
            ptr::copy(p, p.add(1), len - index);
            p.write(value);
        }
        self.len = len + 1;
        Ok(())
    }

    /// Inserts `value` at `index`, shifting the elements after it right.
    ///
    /// # Panics
    /// If `index > len()`, at capacity, or if the system refuses memory.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([1, 3]);
    /// v.insert(1, 2);
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn insert(&mut self, index: usize, value: T) {
        let len = self.len;
        assert!(
            index <= len,
            "insertion index (is {index}) should be <= len (is {len})"
        );
        if let Err(e) = self.try_insert(index, value) {
            failed("insert", e.error());
        }
    }

    /// Removes and returns the element at `index`, shifting the elements after it left.
    ///
    /// # Panics
    /// If `index >= len()`.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([1, 2, 3]);
    /// assert_eq!(v.remove(0), 1);
    /// assert_eq!(v, [2, 3]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn remove(&mut self, index: usize) -> T {
        let len = self.len;
        assert!(
            index < len,
            "removal index (is {index}) should be < len (is {len})"
        );
        // SAFETY: `index < len`: the element is read out once and the elements after it move
        // one slot left over it (overlapping copy); `len` then drops by one.
        unsafe {
            let p = self.slot(index);
            let value = p.read();
            ptr::copy(p.add(1), p, len - index - 1);
            self.len = len - 1;
            value
        }
    }

    /// Removes and returns the element at `index`, moving the last element into its place.
    ///
    /// # Panics
    /// If `index >= len()`.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([1, 2, 3]);
    /// assert_eq!(v.swap_remove(0), 1);
    /// assert_eq!(v, [3, 2]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn swap_remove(&mut self, index: usize) -> T {
        let len = self.len;
        assert!(
            index < len,
            "swap_remove index (is {index}) should be < len (is {len})"
        );
        // SAFETY: `index < len`: the element is read out once and the last element (possibly
        // the same slot, hence `copy`) moves into its slot; `len` then drops by one.
        unsafe {
            let p = self.slot(index);
            let value = p.read();
            ptr::copy(self.slot(len - 1), p, 1);
            self.len = len - 1;
            value
        }
    }

    /// Keeps the first `len` elements and drops the rest; no effect if `len >= self.len()`.
    /// Memory stays committed (see [`shrink_to_fit`](Self::shrink_to_fit)).
    ///
    /// If an element's destructor panics, the others are still dropped and the vector holds
    /// the first `len` elements.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend([1, 2, 3]);
    /// v.truncate(1);
    /// assert_eq!(v, [1]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = ptr::slice_from_raw_parts_mut(self.slot(len), self.len - len);
        self.len = len;
        // SAFETY: the tail's elements are initialized and now outside the vector, so they are
        // dropped exactly once (slice drop glue goes on after a panicking element).
        unsafe { ptr::drop_in_place(tail) };
    }

    /// Drops every element. Memory stays committed.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps only the elements for which `keep` returns `true`, in order.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend(1..=6);
    /// v.retain(|&x| x % 2 == 0);
    /// assert_eq!(v, [2, 4, 6]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn retain<F: FnMut(&T) -> bool>(&mut self, mut keep: F) {
        self.retain_mut(|x| keep(x));
    }

    /// Keeps only the elements for which `keep` returns `true`, in order, letting `keep`
    /// change them.
    ///
    /// If `keep` or a destructor panics, the vector keeps the elements already kept and every
    /// element not yet visited; removed ones are dropped exactly once.
    pub fn retain_mut<F: FnMut(&mut T) -> bool>(&mut self, mut keep: F) {
        /// Closes the gap of removed elements and fixes `len`, also on unwind.
        struct Gap<'a, T> {
            vec: &'a mut Vec<T>,
            base: *mut T,
            processed: usize,
            deleted: usize,
            original: usize,
        }
        impl<T> Drop for Gap<'_, T> {
            fn drop(&mut self) {
                if self.deleted > 0 {
                    // SAFETY: slots `processed..original` hold elements not yet visited; they
                    // move left by `deleted` over removed (already dropped or moved) slots.
                    unsafe {
                        ptr::copy(
                            self.base.add(self.processed),
                            self.base.add(self.processed - self.deleted),
                            self.original - self.processed,
                        );
                    }
                }
                self.vec.len = self.original - self.deleted;
            }
        }

        let original = self.len;
        let base = self.ptr.as_ptr();
        // While visiting, the vector owns nothing; `Gap` restores the right length.
        self.len = 0;
        let mut gap = Gap {
            vec: self,
            base,
            processed: 0,
            deleted: 0,
            original,
        };
        while gap.processed < original {
            // SAFETY: `processed < original`: the slot holds an element not yet visited, and
            // nothing else refers to it.
            let current = unsafe { &mut *base.add(gap.processed) };
            if keep(current) {
                if gap.deleted > 0 {
                    // SAFETY: the destination slot's element was removed; the element moves
                    // there and its old slot is treated as vacated.
                    unsafe {
                        ptr::copy_nonoverlapping(
                            base.add(gap.processed),
                            base.add(gap.processed - gap.deleted),
                            1,
                        );
                    }
                }
                gap.processed += 1;
            } else {
                gap.processed += 1;
                gap.deleted += 1;
                // SAFETY: the element is removed: counted as deleted first, so it is dropped
                // exactly once even if its destructor panics.
                unsafe { ptr::drop_in_place(base.add(gap.processed - 1)) };
            }
        }
    }

    /// Removes the elements in `range` and returns them as an iterator; the elements after the
    /// range move left when the iterator is dropped. Elements the iterator did not yield are
    /// dropped then. If the iterator is leaked, the vector keeps the elements before the
    /// range only.
    ///
    /// # Panics
    /// If the range's start is after its end or its end is after `len()`.
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend(1..=5);
    /// let taken: std::vec::Vec<i32> = v.drain(1..3).collect();
    /// assert_eq!(taken, [2, 3]);
    /// assert_eq!(v, [1, 4, 5]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn drain<R: RangeBounds<usize>>(&mut self, range: R) -> Drain<'_, T> {
        let len = self.len;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s
                .checked_add(1)
                .unwrap_or_else(|| panic!("range start index overflows usize")),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e
                .checked_add(1)
                .unwrap_or_else(|| panic!("range end index overflows usize")),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => len,
        };
        assert!(
            start <= end,
            "slice index starts at {start} but ends at {end}"
        );
        assert!(
            end <= len,
            "range end index {end} out of range for slice of length {len}"
        );
        // Leak safety: until the drain is dropped the vector ends before the range.
        self.len = start;
        Drain::new(self, start, end, len)
    }

    /// Appends clones of `other`'s elements: room for all of them is made first, so an error
    /// appends none.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] or [`Error::Commit`] if they do not all fit; the vector is
    /// unchanged then.
    ///
    /// # Panics
    /// If a clone panics; the clones made before stay.
    pub fn try_extend_from_slice(&mut self, other: &[T]) -> Result<()>
    where
        T: Clone,
    {
        self.try_reserve(other.len())?;
        for item in other {
            // SAFETY: room for all of `other` was committed above, so this cannot fail.
            unsafe { self.push_within_committed(item.clone()) };
        }
        Ok(())
    }

    /// Appends clones of `other`'s elements.
    ///
    /// # Panics
    /// If they do not all fit (nothing is appended then) or a clone panics (the clones made
    /// before stay).
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.extend_from_slice(&[1, 2]);
    /// v.extend_from_slice(&[3]);
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn extend_from_slice(&mut self, other: &[T])
    where
        T: Clone,
    {
        if let Err(e) = self.try_extend_from_slice(other) {
            failed("extend_from_slice", &e);
        }
    }

    /// Writes `value` after the last element.
    ///
    /// # Safety
    /// `len() < committed_capacity()`.
    unsafe fn push_within_committed(&mut self, value: T) {
        debug_assert!(self.len < self.committed);
        // SAFETY: the caller promises the slot is committed; it holds no element.
        unsafe { self.slot(self.len).write(value) };
        self.len += 1;
    }

    /// Resizes to `new_len` elements, filling with clones of `value` or truncating.
    ///
    /// # Panics
    /// If `new_len` exceeds the capacity or the system refuses memory (nothing changes then).
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(8)?;
    /// v.resize(3, 0u8);
    /// assert_eq!(v, [0, 0, 0]);
    /// v.resize(1, 0);
    /// assert_eq!(v, [0]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    #[track_caller]
    pub fn resize(&mut self, new_len: usize, value: T)
    where
        T: Clone,
    {
        self.resize_with(new_len, || value.clone());
    }

    /// Resizes to `new_len` elements, filling with values returned by `fill` or truncating.
    ///
    /// # Panics
    /// If `new_len` exceeds the capacity or the system refuses memory (nothing changes then).
    #[track_caller]
    pub fn resize_with<F: FnMut() -> T>(&mut self, new_len: usize, mut fill: F) {
        if new_len <= self.len {
            self.truncate(new_len);
            return;
        }
        self.reserve(new_len - self.len);
        while self.len < new_len {
            // SAFETY: room for `new_len` elements was committed above.
            unsafe { self.push_within_committed(fill()) };
        }
    }

    /// Decommits the memory past the last element (rounded up to a page), giving it back to
    /// the system.
    ///
    /// # Errors
    /// [`Error::Decommit`] if the system refuses; the elements are unchanged then. The memory
    /// past them stays committed, unless the system refused only after decommitting it (giving
    /// advice from [`Reservation::advise`] or huge-page advice to the fresh pages again): it is
    /// then decommitted and no longer counted in
    /// [`committed_capacity`](Self::committed_capacity).
    ///
    /// # Examples
    /// ```
    /// let mut v = memvisor_vmem::vec::Vec::with_capacity(1 << 16)?;
    /// v.extend(0..10_000u32);
    /// v.clear();
    /// v.shrink_to_fit()?;
    /// assert_eq!(v.committed_bytes(), 0);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn shrink_to_fit(&mut self) -> Result<()> {
        self.shrink_to(0)
    }

    /// Decommits the memory past `max(len(), min_capacity)` elements (rounded up to a page).
    ///
    /// # Errors
    /// As [`shrink_to_fit`](Self::shrink_to_fit).
    pub fn shrink_to(&mut self, min_capacity: usize) -> Result<()> {
        let keep = self.len.max(min_capacity).min(self.layout.capacity);
        let target = self.layout.data_end(keep);
        if target >= self.committed_bytes {
            return Ok(());
        }
        let offset = target;
        let len = self.committed_bytes - target;
        if let Err(source) = self.reservation.decommit(offset, len) {
            // The system may refuse after the range was decommitted (giving its advice to the
            // fresh pages): then the vector must not count it, or a push would write there.
            if !matches!(self.reservation.is_committed(offset, len), Ok(true)) {
                self.committed_bytes = target;
                self.committed = self.layout.slots_in(target);
            }
            return Err(Error::Decommit {
                offset,
                len,
                source,
            });
        }
        self.committed_bytes = target;
        self.committed = self.layout.slots_in(target);
        Ok(())
    }

    /// A vector with the same options holding clones of the elements.
    ///
    /// # Errors
    /// As [`Builder::build`] and [`try_reserve`](Self::try_reserve).
    pub fn try_clone(&self) -> Result<Self>
    where
        T: Clone,
    {
        let mut copy = self.builder.build()?;
        copy.try_extend_from_slice(self)?;
        Ok(copy)
    }

    /// Gives up the elements without dropping them, for [`IntoIter`]: the length becomes zero.
    pub(crate) fn take_len(&mut self) -> usize {
        mem::take(&mut self.len)
    }

    /// Sets the length, without dropping or initializing anything (as `std`'s `set_len`).
    ///
    /// # Safety
    /// `len <= committed_capacity()`, and the first `len` slots hold initialized elements
    /// owned by the vector (for example written through
    /// [`spare_capacity_mut`](Self::spare_capacity_mut)); elements past `len` are forgotten.
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.committed);
        self.len = len;
    }
}

/// Panics with the operation and the reason.
#[cold]
#[track_caller]
fn failed(operation: &str, error: &Error) -> ! {
    panic!("memvisor_vmem::vec::Vec::{operation}: {error}")
}

impl<T> Drop for Vec<T> {
    fn drop(&mut self) {
        let elements = ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: the first `len` slots hold initialized elements owned by the vector, dropped
        // here once; the reservation field is released after this.
        unsafe { ptr::drop_in_place(elements) };
    }
}

impl<T> Deref for Vec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> DerefMut for Vec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T> AsRef<[T]> for Vec<T> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<T> AsMut<[T]> for Vec<T> {
    fn as_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T> Borrow<[T]> for Vec<T> {
    fn borrow(&self) -> &[T] {
        self
    }
}

impl<T> BorrowMut<[T]> for Vec<T> {
    fn borrow_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T: fmt::Debug> fmt::Debug for Vec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl<T: Clone> Clone for Vec<T> {
    /// # Panics
    /// If the new reservation or its memory cannot be had (see [`Vec::try_clone`]).
    #[track_caller]
    fn clone(&self) -> Self {
        match self.try_clone() {
            Ok(copy) => copy,
            Err(e) => failed("clone", &e),
        }
    }
}

impl<T: Hash> Hash for Vec<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl<T, U> PartialEq<Vec<U>> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq> Eq for Vec<T> {}

impl<T, U> PartialEq<[U]> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &[U]) -> bool {
        self.as_slice() == other
    }
}

impl<T, U> PartialEq<&[U]> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &&[U]) -> bool {
        self.as_slice() == *other
    }
}

impl<T, U, const N: usize> PartialEq<[U; N]> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &[U; N]) -> bool {
        self.as_slice() == other
    }
}

impl<T, U> PartialEq<&mut [U]> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &&mut [U]) -> bool {
        self.as_slice() == &**other
    }
}

impl<T, U, const N: usize> PartialEq<&[U; N]> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &&[U; N]) -> bool {
        self.as_slice() == *other
    }
}

impl<T, U> PartialEq<Vec<U>> for [T]
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        self == other.as_slice()
    }
}

impl<T, U> PartialEq<Vec<U>> for &[T]
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        *self == other.as_slice()
    }
}

impl<T, U> PartialEq<Vec<U>> for &mut [T]
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        **self == *other.as_slice()
    }
}

impl<T, U> PartialEq<Vec<U>> for alloc::vec::Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// Equal when the slice's elements equal the vector's, as between `Cow` and `std::vec::Vec`.
impl<T, U> PartialEq<Vec<U>> for alloc::borrow::Cow<'_, [T]>
where
    T: PartialEq<U> + Clone,
{
    fn eq(&self, other: &Vec<U>) -> bool {
        **self == other[..]
    }
}

/// Equal when the vector's elements equal the slice's, as between `std::vec::Vec` and `Cow`.
impl<T, U> PartialEq<alloc::borrow::Cow<'_, [U]>> for Vec<T>
where
    T: PartialEq<U>,
    U: Clone,
{
    fn eq(&self, other: &alloc::borrow::Cow<'_, [U]>) -> bool {
        self[..] == **other
    }
}

/// Lexicographic order of the elements, as `std::vec::Vec`'s.
impl<T: PartialOrd> PartialOrd for Vec<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        self.as_slice().partial_cmp(other.as_slice())
    }
}

/// Lexicographic order of the elements, as `std::vec::Vec`'s.
impl<T: Ord> Ord for Vec<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl<T, U> PartialEq<alloc::vec::Vec<U>> for Vec<T>
where
    T: PartialEq<U>,
{
    fn eq(&self, other: &alloc::vec::Vec<U>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T> Extend<T> for Vec<T> {
    /// # Panics
    /// At capacity or if the system refuses memory; the elements appended before stay.
    #[track_caller]
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for item in iter {
            self.push(item);
        }
    }
}

impl<'a, T: Copy + 'a> Extend<&'a T> for Vec<T> {
    /// # Panics
    /// At capacity or if the system refuses memory; the elements appended before stay.
    #[track_caller]
    fn extend<I: IntoIterator<Item = &'a T>>(&mut self, iter: I) {
        for item in iter {
            self.push(*item);
        }
    }
}

impl<T> IntoIterator for Vec<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter::new(self)
    }
}

impl<'a, T> IntoIterator for &'a Vec<T> {
    type Item = &'a T;
    type IntoIter = slice::Iter<'a, T>;

    fn into_iter(self) -> slice::Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut Vec<T> {
    type Item = &'a mut T;
    type IntoIter = slice::IterMut<'a, T>;

    fn into_iter(self) -> slice::IterMut<'a, T> {
        self.iter_mut()
    }
}

#[cfg(all(test, feature = "std", target_os = "linux", not(miri)))]
mod tests {
    use super::*;
    use crate::reservation::tests::READVISE_FAILS;
    use crate::{Advice, page_size};

    #[test]
    fn shrink_to_fit_readvice_refused_counts_only_committed_memory() {
        let page = page_size();
        let mut v = Vec::<u8>::with_capacity(4 * page).unwrap();
        v.resize(4 * page, 1);
        v.reservation()
            .advise(0, 4 * page, Advice::DontDump)
            .unwrap();
        v.truncate(page);
        // The decommit goes through, then the system refuses to give the advice again.
        READVISE_FAILS.with(|f| f.set(Some(0)));
        assert!(matches!(v.shrink_to_fit(), Err(Error::Decommit { .. })));
        // What the vector counts as committed is committed: the next pushes write there.
        let counted = v.committed_bytes();
        assert!(v.reservation().is_committed(0, counted).unwrap());
        assert!(v.committed_capacity() >= v.len());
        v.resize(4 * page, 2);
        assert_eq!(v[page - 1], 1);
        assert_eq!(v[4 * page - 1], 2);
    }
}
