//! The iterators of [`ConcurrentVec`]: over published elements with or without their
//! indices, mutably, and by value.

use core::fmt;
use core::iter::FusedIterator;

use super::ConcurrentVec;
use crate::vec::layout::WORD_BITS;

impl<T> ConcurrentVec<T> {
    /// The published elements in index order (skipping unpublished slots), among the slots
    /// claimed when it was made. An element published after the iterator passed its slot is
    /// not yielded.
    ///
    /// # Examples
    /// ```
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// v.push(1);
    /// v.push(2);
    /// assert_eq!(v.iter().copied().collect::<Vec<_>>(), [1, 2]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            entries: self.entries(),
        }
    }

    /// As [`iter`](Self::iter), with each element's index.
    ///
    /// # Examples
    /// ```
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    ///
    /// let v = memvisor_vmem::vec::ConcurrentVec::with_capacity(8)?;
    /// v.push('a');
    /// // A constructor that panics leaves a hole at index 1.
    /// let hole = catch_unwind(AssertUnwindSafe(|| v.push_with(|_| -> char { panic!("no element") })));
    /// assert!(hole.is_err());
    /// v.push('c');
    /// assert_eq!(v.entries().collect::<Vec<_>>(), [(0, &'a'), (2, &'c')]);
    /// # Ok::<(), memvisor_vmem::vec::Error>(())
    /// ```
    pub fn entries(&self) -> Entries<'_, T> {
        self.entries_below(usize::MAX)
    }

    /// As [`entries`](Self::entries), among the slots below `limit` only.
    pub(super) fn entries_below(&self, limit: usize) -> Entries<'_, T> {
        Entries {
            vec: self,
            cursor: Cursor::new(self.scan_limit().min(limit)),
        }
    }

    /// The published elements in index order, mutably.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            cursor: Cursor::new(self.scan_limit()),
            vec: self,
        }
    }
}

/// Walks the ready bits below a limit one word at a time.
#[derive(Clone, Debug)]
struct Cursor {
    /// The next word to load.
    next_word: usize,
    /// The first slot of the loaded word.
    word_base: usize,
    /// The loaded word's ready slots not yet yielded.
    bits: usize,
    /// Slots at or after this are not visited.
    limit: usize,
}

impl Cursor {
    fn new(limit: usize) -> Self {
        Self {
            next_word: 0,
            word_base: 0,
            bits: 0,
            limit,
        }
    }

    /// The next published slot of `vec`.
    #[inline]
    fn advance<T>(&mut self, vec: &ConcurrentVec<T>) -> Option<usize> {
        loop {
            if self.bits != 0 {
                let bit = self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return Some(self.word_base + bit);
            }
            let first = self.next_word * WORD_BITS;
            if first >= self.limit {
                return None;
            }
            // SAFETY: the word holds slots below `limit`, which was at most `committed` when
            // the cursor was made, so it is committed.
            self.bits = unsafe { vec.ready.ready_in(self.next_word, first, self.limit) };
            self.word_base = first;
            self.next_word += 1;
        }
    }

    fn remaining_upper(&self) -> usize {
        self.bits.count_ones() as usize + self.limit.saturating_sub(self.next_word * WORD_BITS)
    }
}

/// The published elements of a [`ConcurrentVec`] with their indices; made by
/// [`ConcurrentVec::entries`].
///
/// # Threads
/// As `std::slice::Iter`: `Send` and `Sync` when `T: Sync`, since it only hands out `&T`
/// (the elements need not be `Send`). Neither with elements that cannot be shared:
///
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Entries<'static, std::cell::Cell<u8>>>();
/// ```
///
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::Entries<'static, std::cell::Cell<u8>>>();
/// ```
#[derive(Debug)]
pub struct Entries<'a, T> {
    vec: &'a ConcurrentVec<T>,
    cursor: Cursor,
}

// SAFETY: an `Entries` reads the vector's atomic ready bits and hands out `&'a T` of published
// elements, nothing else: it never exposes the `&ConcurrentVec` it holds (which would allow
// pushes, hence need `T: Send`), never moves, writes or drops an element. So moving it to
// another thread, or sharing it, only shares `&T` with that thread: `T: Sync`, the bound of
// `std::slice::Iter`. Its `Debug` shows elements through `&T` too. A thread that pushes into the
// vector meanwhile does so through its own `&ConcurrentVec`, which needs `ConcurrentVec<T>:
// Sync` (and so `T: Send`) to be there; the reads synchronize with the pushes through the
// acquire loads of the ready bits, as they do on one thread.
unsafe impl<T: Sync> Send for Entries<'_, T> {}
// SAFETY: `&Entries` gives only `&T` (through `Clone`, `Debug` and `size_hint`), see above.
unsafe impl<T: Sync> Sync for Entries<'_, T> {}

impl<T> Clone for Entries<'_, T> {
    fn clone(&self) -> Self {
        Self {
            vec: self.vec,
            cursor: self.cursor.clone(),
        }
    }
}

impl<'a, T> Iterator for Entries<'a, T> {
    type Item = (usize, &'a T);

    #[inline]
    fn next(&mut self) -> Option<(usize, &'a T)> {
        let index = self.cursor.advance(self.vec)?;
        self.vec.log.read(index);
        // SAFETY: the slot's ready bit was seen set (acquire): its element is fully written,
        // never written again through `&self`, and lives as long as the borrow of the vector.
        Some((index, unsafe { &*self.vec.slot(index) }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining_upper()))
    }
}

impl<T> FusedIterator for Entries<'_, T> {}

/// The published elements of a [`ConcurrentVec`] in index order; made by
/// [`ConcurrentVec::iter`].
///
/// # Threads
/// As `std::slice::Iter`: `Send` and `Sync` when `T: Sync`, since it only hands out `&T`
/// (the elements need not be `Send`). Neither with elements that cannot be shared:
///
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::Iter<'static, std::cell::Cell<u8>>>();
/// ```
///
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::Iter<'static, std::cell::Cell<u8>>>();
/// ```
#[derive(Debug)]
pub struct Iter<'a, T> {
    entries: Entries<'a, T>,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        self.entries.next().map(|(_, value)| value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<T> FusedIterator for Iter<'_, T> {}

/// The published elements of a [`ConcurrentVec`] in index order, mutably; made by
/// [`ConcurrentVec::iter_mut`].
///
/// Its `Debug` shows the elements it has not yielded yet, as `IterMut([..])`: the ones it
/// has yielded are borrowed mutably by the caller, so they are never read.
///
/// # Threads
/// As `std::slice::IterMut`: `Send` when `T: Send` (it hands out `&mut T`), `Sync` when
/// `T: Sync` (through `&IterMut` only its `Debug` reads the elements).
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::IterMut<'static, std::sync::MutexGuard<'static, u8>>>();
/// ```
/// Not `Sync` with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::IterMut<'static, std::cell::Cell<u8>>>();
/// ```
pub struct IterMut<'a, T> {
    vec: &'a mut ConcurrentVec<T>,
    cursor: Cursor,
}

// `Send` is derived: `&mut ConcurrentVec<T>` is `Send` exactly when `T: Send`, the bound of
// `std::slice::IterMut` (it hands out `&mut T`, which can swap elements out).
// SAFETY: through `&IterMut` only its `Debug` (elements not yet yielded, as `&T`) and
// `size_hint` can be reached: the `&mut ConcurrentVec` is never handed out, so sharing it shares
// only `&T`: `T: Sync`, as for `std::slice::IterMut`.
unsafe impl<T: Sync> Sync for IterMut<'_, T> {}

impl<T: fmt::Debug> fmt::Debug for IterMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ahead = Entries {
            vec: &*self.vec,
            cursor: self.cursor.clone(),
        };
        f.debug_tuple("IterMut").field(&Values(ahead)).finish()
    }
}

/// Shows the elements of an [`Entries`] as a list, without their indices.
struct Values<'a, T>(Entries<'a, T>);

impl<T: fmt::Debug> fmt::Debug for Values<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.clone().map(|(_, value)| value))
            .finish()
    }
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    fn next(&mut self) -> Option<&'a mut T> {
        let index = self.cursor.advance(self.vec)?;
        self.vec.log.write(index);
        // SAFETY: published; the iterator holds `&mut` of the vector for `'a` and yields each
        // slot once, so the references never alias.
        Some(unsafe { &mut *self.vec.slot(index) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining_upper()))
    }
}

impl<T> FusedIterator for IterMut<'_, T> {}

/// The published elements of a [`ConcurrentVec`] in index order, moved out; made by its
/// `into_iter`. Elements not yielded are dropped with it.
///
/// # Threads
/// As `std::vec::IntoIter`: `Send` when `T: Send`, `Sync` when `T: Sync` (through `&IntoIter`
/// only its `Debug` reads the elements; nothing can push into the vector it owns).
/// Not `Send` with elements that must stay on their thread:
/// ```compile_fail
/// fn send<X: Send>() {}
/// send::<memvisor_vmem::vec::ConcurrentIntoIter<std::sync::MutexGuard<'static, u8>>>();
/// ```
/// Not `Sync` with elements that cannot be shared:
/// ```compile_fail
/// fn sync<X: Sync>() {}
/// sync::<memvisor_vmem::vec::ConcurrentIntoIter<std::cell::Cell<u8>>>();
/// ```
#[derive(Debug)]
pub struct IntoIter<T> {
    vec: ConcurrentVec<T>,
    cursor: Cursor,
}

// `Send` is derived: `ConcurrentVec<T>` is `Send` exactly when `T: Send`, the bound of
// `std::vec::IntoIter` (the elements and the reservation move with it).
// SAFETY: through `&IntoIter` only its `Debug` (the elements not yet yielded, as `&T`) and
// `size_hint` can be reached; the vector it owns is never handed out, so nothing can push
// into it (which would need `T: Send`). Sharing it shares `&T`: `T: Sync`, as for
// `std::vec::IntoIter`.
unsafe impl<T: Sync> Sync for IntoIter<T> {}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let index = self.cursor.advance(&self.vec)?;
        // SAFETY: published and below `committed`; the iterator owns the vector.
        Some(unsafe { self.vec.take(index) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining_upper()))
    }
}

impl<T> FusedIterator for IntoIter<T> {}

impl<T> IntoIterator for ConcurrentVec<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter {
            cursor: Cursor::new(self.scan_limit()),
            vec: self,
        }
    }
}

impl<'a, T> IntoIterator for &'a ConcurrentVec<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut ConcurrentVec<T> {
    type Item = &'a mut T;
    type IntoIter = IterMut<'a, T>;

    fn into_iter(self) -> IterMut<'a, T> {
        self.iter_mut()
    }
}
