//! Iterators that move elements out of a [`Vec`]: [`Drain`] and [`IntoIter`].

use core::iter::FusedIterator;
use core::ptr::NonNull;
use core::{fmt, ptr, slice};

use super::owned::Vec;

/// The elements of a range of a [`Vec`], moved out; made by [`Vec::drain`].
///
/// When dropped it drops the elements it did not yield and moves the elements after the range
/// left, also if one of those destructors panics.
///
/// # Threads
/// As `std::vec::Drain`: `Send` when `T: Send` (it moves elements out), `Sync` when `T: Sync`
/// (through `&Drain` only [`as_slice`](Self::as_slice), `as_ref` and `Debug` read them).
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Drain<'static, std::sync::MutexGuard<'static, u8>>>();
/// ```
/// Not `Sync` with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::Drain<'static, std::cell::Cell<u8>>>();
/// ```
pub struct Drain<'a, T> {
    vec: &'a mut Vec<T>,
    base: *mut T,
    /// The next element to yield from the front.
    next: usize,
    /// One past the next element to yield from the back.
    end: usize,
    /// Where the elements after the range start, and how many there are.
    tail_start: usize,
    tail_len: usize,
}

// SAFETY: the drain holds `&mut Vec<T>` and moves elements out of it (and drops the rest where
// it is dropped); sending it sends the elements (`T: Send`), as for `&mut Vec<T>` and
// `std::vec::Drain`. The raw `base` points into that same vector, so it shares nothing more.
unsafe impl<T: Send> Send for Drain<'_, T> {}
// SAFETY: `&Drain` only gives out `&[T]` (`as_slice`, `as_ref`, `Debug`): the `&mut Vec` is never
// handed out and nothing is moved or written through `&self`, so sharing it shares the elements
// (`T: Sync`, not `T: Send`), the bound of `std::vec::Drain`.
unsafe impl<T: Sync> Sync for Drain<'_, T> {}

impl<'a, T> Drain<'a, T> {
    /// Drains `start..end` of `vec`, whose length was `len` and has been set to `start`.
    pub(crate) fn new(vec: &'a mut Vec<T>, start: usize, end: usize, len: usize) -> Self {
        let base = vec.as_mut_ptr();
        Self {
            vec,
            base,
            next: start,
            end,
            tail_start: end,
            tail_len: len - end,
        }
    }

    /// The elements not yet yielded.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: slots `next..end` hold elements that are still owned by the drain.
        unsafe { slice::from_raw_parts(self.base.add(self.next), self.end - self.next) }
    }
}

impl<T> AsRef<[T]> for Drain<'_, T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: fmt::Debug> fmt::Debug for Drain<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Drain").field(&self.as_slice()).finish()
    }
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        self.next += 1;
        // SAFETY: slot `next - 1` held an element owned by the drain, now read out once.
        Some(unsafe { self.base.add(self.next - 1).read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<T> DoubleEndedIterator for Drain<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        self.end -= 1;
        // SAFETY: slot `end` held an element owned by the drain, now read out once.
        Some(unsafe { self.base.add(self.end).read() })
    }
}

impl<T> ExactSizeIterator for Drain<'_, T> {}

impl<T> FusedIterator for Drain<'_, T> {}

impl<T> Drop for Drain<'_, T> {
    fn drop(&mut self) {
        /// Moves the tail back after the drained range, also on unwind.
        struct MoveTail<'r, 'a, T>(&'r mut Drain<'a, T>);
        impl<T> Drop for MoveTail<'_, '_, T> {
            fn drop(&mut self) {
                let drain = &mut *self.0;
                let start = drain.vec.len();
                if drain.tail_len > 0 && drain.tail_start != start {
                    // SAFETY: slots `tail_start..tail_start + tail_len` hold the tail; they
                    // move to directly after the vector's elements (overlapping copy).
                    unsafe {
                        ptr::copy(
                            drain.base.add(drain.tail_start),
                            drain.base.add(start),
                            drain.tail_len,
                        );
                    }
                }
                // SAFETY: the first `start + tail_len` slots now hold the vector's elements.
                unsafe { drain.vec.set_len(start + drain.tail_len) };
            }
        }

        // SAFETY: slots `next..end` hold the elements not yet yielded.
        let rest = ptr::slice_from_raw_parts_mut(
            unsafe { self.base.add(self.next) },
            self.end - self.next,
        );
        self.next = self.end;
        let guard = MoveTail(self);
        // SAFETY: those elements are owned by the drain and dropped here exactly once (the
        // range is emptied above).
        unsafe { ptr::drop_in_place(rest) };
        drop(guard);
    }
}

/// The elements of a [`Vec`], moved out in order; made by its `into_iter`.
///
/// # Threads
/// As `std::vec::IntoIter`: `Send` when `T: Send`, `Sync` when `T: Sync` (through `&IntoIter`
/// only [`as_slice`](Self::as_slice), `as_ref` and `Debug` read the elements).
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::IntoIter<std::sync::MutexGuard<'static, u8>>>();
/// ```
/// Not `Sync` with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::IntoIter<std::cell::Cell<u8>>>();
/// ```
pub struct IntoIter<T> {
    /// The vector, whose length is zero: the iterator owns the elements `next..end`.
    vec: Vec<T>,
    /// `NonNull` (not `*mut T`) keeps the iterator covariant in `T`, as `std`'s is.
    base: NonNull<T>,
    next: usize,
    end: usize,
}

// SAFETY: the iterator owns the elements and the reservation, like the `Vec` it came from;
// sending it sends the elements (`T: Send`), the bound of `std::vec::IntoIter`.
unsafe impl<T: Send> Send for IntoIter<T> {}
// SAFETY: `&IntoIter` only gives out `&[T]` (`as_slice`, `as_ref`, `Debug`) and `&Reservation`
// (`Sync`, refusing the calls that would change a vector's memory); nothing is moved or written
// through `&self`. So sharing it needs `T: Sync` only, the bound of `std::vec::IntoIter`.
unsafe impl<T: Sync> Sync for IntoIter<T> {}

impl<T> IntoIter<T> {
    pub(crate) fn new(mut vec: Vec<T>) -> Self {
        let end = vec.take_len();
        let base = vec.as_non_null();
        Self {
            vec,
            base,
            next: 0,
            end,
        }
    }

    /// The elements not yet yielded.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: slots `next..end` hold elements owned by the iterator; the vector's
        // reservation is alive as long as `self`.
        unsafe { slice::from_raw_parts(self.base.as_ptr().add(self.next), self.end - self.next) }
    }

    /// The elements not yet yielded, mutably.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: slots `next..end` hold elements owned by the iterator, and `&mut self`
        // excludes every other access to them.
        unsafe {
            slice::from_raw_parts_mut(self.base.as_ptr().add(self.next), self.end - self.next)
        }
    }

    /// The reservation that still holds the elements (as [`Vec::reservation`]).
    #[must_use]
    pub fn reservation(&self) -> &crate::Reservation {
        self.vec.reservation()
    }
}

impl<T> AsRef<[T]> for IntoIter<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: fmt::Debug> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IntoIter").field(&self.as_slice()).finish()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        self.next += 1;
        // SAFETY: slot `next - 1` held an element owned by the iterator, now read out once.
        Some(unsafe { self.base.as_ptr().add(self.next - 1).read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<T> DoubleEndedIterator for IntoIter<T> {
    fn next_back(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        self.end -= 1;
        // SAFETY: slot `end` held an element owned by the iterator, now read out once.
        Some(unsafe { self.base.as_ptr().add(self.end).read() })
    }
}

impl<T> ExactSizeIterator for IntoIter<T> {}

impl<T> FusedIterator for IntoIter<T> {}

impl<T> Drop for IntoIter<T> {
    fn drop(&mut self) {
        // SAFETY: slots `next..end` hold the elements not yet yielded.
        let rest = ptr::slice_from_raw_parts_mut(
            unsafe { self.base.as_ptr().add(self.next) },
            self.end - self.next,
        );
        self.next = self.end;
        // SAFETY: those elements are owned by the iterator and dropped exactly once; the
        // vector (of length zero) then releases the reservation, also on unwind.
        unsafe { ptr::drop_in_place(rest) };
    }
}
