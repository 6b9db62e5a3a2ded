//! What the arena keeps on the host's heap (its side tables as boxed slices, a client's
//! mailbox and bins, a backing's record), allocated fallibly: memory the host's allocator
//! cannot provide is an error ([`Error::TablesUnavailable`]), not an abort.
//!
//! [`Error::TablesUnavailable`]: crate::Error::TablesUnavailable

use alloc::alloc::{Layout, alloc, alloc_zeroed};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr;

/// `len` values, the `i`th made by `make(i)`; `None` if the allocator refuses the memory.
pub(crate) fn filled<T>(len: usize, make: impl FnMut(usize) -> T) -> Option<Box<[T]>> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).ok()?;
    values.extend((0..len).map(make));
    Some(values.into_boxed_slice())
}

/// `value` in a box; `None` (and `value` dropped) if the allocator refuses the memory.
pub(crate) fn boxed<T>(value: T) -> Option<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Some(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was just allocated by the global allocator with `T`'s layout, so it is valid
    // for a write of one, and `Box` frees it with that layout.
    unsafe {
        p.write(value);
        Some(Box::from_raw(p))
    }
}

/// A zero value in a box, from zeroed memory: it never passes through the stack, so a large
/// one can be made on a thread with a small stack; `None` if the allocator refuses the memory.
/// `T` takes memory (a zero-sized type does not build): every [`Zeroable`] type does.
pub(crate) fn zeroed_box<T: Zeroable>() -> Option<Box<T>> {
    const {
        assert!(
            size_of::<T>() != 0,
            "a zero-sized type needs no zeroed memory"
        )
    };
    let layout = Layout::new::<T>();
    // SAFETY: the layout has a non-zero size (asserted above when the function is built).
    let p = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was allocated by the global allocator with `T`'s layout, its bytes are zero,
    // which is a valid `T` (`T: Zeroable`), and `Box` frees it with that layout.
    Some(unsafe { Box::from_raw(p) })
}

/// Types whose all-zero bytes are a valid value.
///
/// # Safety
/// An implementor's all-zero bit pattern is a valid, initialized value of it.
pub(crate) unsafe trait Zeroable: Sized {}

// SAFETY: an `AtomicU64` has the layout of a `u64`; zero is the value 0.
unsafe impl Zeroable for core::sync::atomic::AtomicU64 {}
// SAFETY: an `UnsafeCell<u64>` has the layout of a `u64`; zero is the value 0.
unsafe impl Zeroable for UnsafeCell<u64> {}
// SAFETY: a `Slab` (in an `UnsafeCell`, which has its layout) holds integers only, so zero
// bytes are a valid record (one no slab uses).
unsafe impl Zeroable for UnsafeCell<crate::client::Slab> {}
// SAFETY: a `ChunkInfo` (in an `UnsafeCell`, which has its layout) holds integers and `bool`s
// only, so zero bytes are a valid record: that of a chunk never handed out (see
// `ChunkInfo`).
unsafe impl Zeroable for UnsafeCell<crate::arena::ChunkInfo> {}
// SAFETY: an `AtomicU32` has the layout of a `u32`; zero is the value 0. (Loom's atomics are
// not plain words: tables of them are filled, see `empty`.)
#[cfg(not(loom))]
unsafe impl Zeroable for core::sync::atomic::AtomicU32 {}
// SAFETY: an `AtomicPtr` has the layout of a `*mut T`; zero is the null pointer.
#[cfg(not(loom))]
unsafe impl<T> Zeroable for core::sync::atomic::AtomicPtr<T> {}

/// The arena's atomics (see [`crate::sync`]) whose empty value (0, null) is what a table of
/// them starts as.
pub(crate) trait Empty: Sized {
    /// The empty value: 0 or null. Outside loom builds its bytes are all zero, and tables of
    /// it come from zeroed memory instead of calling this.
    #[cfg_attr(not(loom), allow(dead_code, reason = "zeroed memory stands in for it"))]
    fn empty() -> Self;
}

impl Empty for crate::sync::AtomicU32 {
    fn empty() -> Self {
        Self::new(0)
    }
}

impl Empty for crate::sync::AtomicU64 {
    fn empty() -> Self {
        Self::new(0)
    }
}

impl<T> Empty for crate::sync::AtomicPtr<T> {
    fn empty() -> Self {
        Self::new(ptr::null_mut())
    }
}

/// `len` empty atomics (0, null), from zeroed memory: a large table costs no memory until
/// written; `None` if the allocator refuses the memory.
#[cfg(not(loom))]
pub(crate) fn empty<T: Empty + Zeroable>(len: usize) -> Option<Box<[T]>> {
    zeroed(len)
}

/// `len` empty atomics (0, null), each made by [`Empty::empty`]: loom's atomics have no
/// all-zero form, so the table is written (loom's models use small arenas); `None` if the
/// allocator refuses the memory.
#[cfg(loom)]
pub(crate) fn empty<T: Empty>(len: usize) -> Option<Box<[T]>> {
    filled(len, |_| T::empty())
}

/// `len` zero values, from zeroed memory (which the system gives untouched: a large table
/// costs no memory until it is written); `None` if the allocator refuses the memory.
pub(crate) fn zeroed<T: Zeroable>(len: usize) -> Option<Box<[T]>> {
    let layout = Layout::array::<T>(len).ok()?;
    if layout.size() == 0 {
        // SAFETY: `T: Zeroable`.
        return filled(len, |_| unsafe { core::mem::zeroed() });
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was allocated by the global allocator with the layout of `[T; len]`, and its
    // `len` values are zero bytes, which are valid `T`s (`T: Zeroable`).
    Some(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, len)) })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

    use super::*;

    #[test]
    fn filled_and_zeroed_tables_hold_their_values() {
        let t = filled(5, |i| i * 3).unwrap();
        assert_eq!(&*t, &[0, 3, 6, 9, 12]);
        let z: Box<[AtomicU64]> = zeroed(1000).unwrap();
        assert!(z.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        z[999].store(7, Ordering::Relaxed);
        assert_eq!(z[999].load(Ordering::Relaxed), 7);
        let empty: Box<[AtomicU64]> = zeroed(0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(*boxed(7u32).unwrap(), 7);
        boxed(()).unwrap();
        let empty: Box<[AtomicU64]> = zeroed(0).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn tables_past_the_address_space_are_refused() {
        assert!(zeroed::<AtomicU64>(usize::MAX / 4).is_none());
        assert!(filled(usize::MAX / 4, |_| 0u64).is_none());
        assert!(empty::<AtomicU32>(usize::MAX / 2).is_none());
        assert!(empty::<AtomicPtr<u8>>(usize::MAX / 4).is_none());
    }

    #[test]
    fn empty_tables_hold_the_empty_values() {
        let owners: Box<[AtomicU32]> = empty(3000).unwrap();
        assert!(owners.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert!(
            owners
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == AtomicU32::empty().into_inner())
        );
        owners[2999].store(5, Ordering::Relaxed);
        assert_eq!(owners[2999].load(Ordering::Relaxed), 5);
        let ptrs: Box<[AtomicPtr<u8>]> = empty(3000).unwrap();
        assert!(ptrs.iter().all(|p| p.load(Ordering::Relaxed).is_null()));
        assert!(AtomicPtr::<u8>::empty().into_inner().is_null());
        let words: Box<[AtomicU64]> = empty(70).unwrap();
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        assert_eq!(AtomicU64::empty().into_inner(), 0);
        assert!(empty::<AtomicU32>(0).unwrap().is_empty());
    }
}
