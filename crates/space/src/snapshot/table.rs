//! [`Table`]: a snapshot's sorted start addresses and entries, and for more than
//! [`HIT_MIN_REGIONS`] regions its hit index, in one allocation.
//!
//! Lookups binary-search the dense array of starts and then read one entry; a change copies
//! both. Keeping them in one allocation (starts first, then entries, then the padded hit index)
//! makes every change one allocation and one free, and keeps the snapshot itself small, so that
//! making one moves a few words rather than the hit index's padding.

use std::alloc::{self, Layout};
use std::fmt;
use std::mem::{MaybeUninit, offset_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicUsize;

/// Up to this many regions, lookups search at once and the table has no hit index.
pub(super) const HIT_MIN_REGIONS: usize = 8;
/// `HitIndex::hit` when no region is hot.
pub(super) const HIT_OFF: usize = usize::MAX;

/// Bytes of padding on each side of the hit index: two cache lines, so that its stores share
/// no line (nor an adjacent-line prefetch pair) with the starts and entries or with whatever the
/// allocator puts next. Padding rather than alignment: an over-aligned block would take the
/// allocator's slower aligned path. The padding is never written nor read.
const HIT_PAD: usize = 128;

/// The index of the entry that the last lookups kept finding, and the index the previous
/// lookup found with its streak count.
pub(super) struct HitIndex {
    pub(super) hit: AtomicUsize,
    pub(super) previous: AtomicUsize,
}

/// The hit index with its padding, at the end of a big table's block.
#[repr(C)]
struct HitArea {
    _before: [MaybeUninit<u8>; HIT_PAD],
    index: HitIndex,
    _after: [MaybeUninit<u8>; HIT_PAD],
}

/// One region in address order: its size less one, a pointer to it, and its memory-slot
/// number. (Its start is in the table's starts, at the same index.)
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub(super) span: u64,
    pub(super) region: NonNull<crate::region::Region>,
    pub(super) slot: u32,
}

/// `len` start addresses followed by `len` entries, then for more than [`HIT_MIN_REGIONS`] a
/// [`HitArea`], in one heap block (none when empty).
pub(super) struct Table {
    /// The block: starts at offset 0, entries and the hit area after them (at the offsets
    /// `block` gives and `entries_offset` / `hit_offset` repeat). Dangling (and aligned for both
    /// element types) when `len` is 0.
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the table uniquely owns its block of plain data (`u64`s and `Entry`s, which are
// `Copy` and have no drop, and two atomics); `&self` methods only read it, apart from the
// atomics. The region pointers inside entries are
// data here: what they point to is kept alive and shared by the snapshot that owns the table.
unsafe impl Send for Table {}
// SAFETY: as for `Send`: shared access only reads.
unsafe impl Sync for Table {}

/// The block's layout for `len` elements, the offset of the entries and that of the hit index
/// (if the table has one).
///
/// # Panics
/// If the block would exceed `isize::MAX` bytes (as a `Vec` of that many entries would).
fn block(len: usize) -> (Layout, usize, Option<usize>) {
    let (layout, entries) = Layout::array::<u64>(len)
        .and_then(|starts| starts.extend(Layout::array::<Entry>(len)?))
        .expect("a table of this many regions exceeds the address space");
    if len <= HIT_MIN_REGIONS {
        return (layout.pad_to_align(), entries, None);
    }
    let (layout, area) = layout
        .extend(Layout::new::<HitArea>())
        .expect("a table of this many regions exceeds the address space");
    (
        layout.pad_to_align(),
        entries,
        Some(area + offset_of!(HitArea, index)),
    )
}

/// Where the entries of a table of `len` start: right after the starts (`Entry` has the
/// alignment of `u64`). The same offset as `block` gives, without its overflow checks (a table
/// of `len` elements exists, so they passed).
#[inline]
fn entries_offset(len: usize) -> usize {
    len * size_of::<u64>()
}

/// Where the hit index of a table of `len` (more than [`HIT_MIN_REGIONS`]) is: after the
/// entries (which end aligned for `HitArea`) and the padding before it. As `block` gives.
#[inline]
fn hit_offset(len: usize) -> usize {
    entries_offset(len) + len * size_of::<Entry>() + offset_of!(HitArea, index)
}

impl Table {
    /// An empty table (no allocation).
    pub(super) const fn empty() -> Self {
        Self {
            // Aligned for `u64` and for `Entry` (whose alignment is that of `u64`).
            base: NonNull::<u64>::dangling().cast(),
            len: 0,
        }
    }

    /// A table of `len` elements, filled by `fill` (which must write every element).
    fn build(
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u64>], &mut [MaybeUninit<Entry>]),
    ) -> Self {
        Self::try_build(len, fill).unwrap_or_else(|layout| alloc::handle_alloc_error(layout))
    }

    /// A table of `len` elements, filled by `fill` (which must write every element), or the
    /// layout of the block the heap refused (`fill` is not called then).
    fn try_build(
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u64>], &mut [MaybeUninit<Entry>]),
    ) -> Result<Self, Layout> {
        if len == 0 {
            return Ok(Self::empty());
        }
        let (layout, offset, hit) = block(len);
        debug_assert_eq!(offset, entries_offset(len));
        debug_assert!(hit.is_none_or(|h| h == hit_offset(len)));
        // SAFETY: `layout` has a non-zero size (`len > 0` and `u64` is not zero-sized).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            return Err(layout);
        };
        // SAFETY: the block is `layout.size()` bytes, with `len` `u64`s at offset 0 and `len`
        // entries at `offset` (both aligned: `Layout::extend` aligned them), not overlapping;
        // `MaybeUninit` slices may cover uninitialized memory, and both are unique borrows of
        // the fresh block.
        let (starts, entries) = unsafe {
            (
                std::slice::from_raw_parts_mut(base.as_ptr().cast::<MaybeUninit<u64>>(), len),
                std::slice::from_raw_parts_mut(
                    base.as_ptr().add(offset).cast::<MaybeUninit<Entry>>(),
                    len,
                ),
            )
        };
        if let Some(at) = hit {
            let index = HitIndex {
                hit: AtomicUsize::new(HIT_OFF),
                previous: AtomicUsize::new(HIT_OFF),
            };
            // SAFETY: `at` is the offset of the hit area's index in the fresh block (from
            // `block`), aligned for it and not overlapping the starts and entries.
            unsafe { base.as_ptr().add(at).cast::<HitIndex>().write(index) };
        }
        // The table owns the block from here on: should `fill` panic, it is freed (its
        // elements need no drop, and nothing reads them).
        let table = Self { base, len };
        fill(starts, entries);
        Ok(table)
    }

    /// A table of `starts` and `entries`, which must be as long.
    pub(super) fn from_parts(starts: &[u64], entries: &[Entry]) -> Self {
        assert_eq!(starts.len(), entries.len(), "one entry per start");
        Self::build(starts.len(), |s, e| {
            copy(s, starts);
            copy(e, entries);
        })
    }

    /// A copy with `start` and `entry` inserted at index `at` (at most `len`), or the layout
    /// of the block the heap refused.
    pub(super) fn inserted(&self, at: usize, start: u64, entry: Entry) -> Result<Self, Layout> {
        let (starts, entries) = (self.starts(), self.entries());
        Self::try_build(self.len + 1, |s, e| {
            copy(&mut s[..at], &starts[..at]);
            s[at].write(start);
            copy(&mut s[at + 1..], &starts[at..]);
            copy(&mut e[..at], &entries[..at]);
            e[at].write(entry);
            copy(&mut e[at + 1..], &entries[at..]);
        })
    }

    /// A copy without the element at index `at` (below `len`), or the layout of the block the
    /// heap refused.
    pub(super) fn removed(&self, at: usize) -> Result<Self, Layout> {
        let (starts, entries) = (self.starts(), self.entries());
        Self::try_build(self.len - 1, |s, e| {
            copy(&mut s[..at], &starts[..at]);
            copy(&mut s[at..], &starts[at + 1..]);
            copy(&mut e[..at], &entries[..at]);
            copy(&mut e[at..], &entries[at + 1..]);
        })
    }

    /// The start addresses, sorted.
    #[inline]
    pub(super) fn starts(&self) -> &[u64] {
        // SAFETY: `base` holds `len` initialized `u64`s at offset 0 (written by `build`), or is
        // dangling and aligned with `len` 0; the block lives and is not written while `self`
        // is borrowed.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<u64>(), self.len) }
    }

    /// The entries, at the same indices as the starts.
    #[inline]
    pub(super) fn entries(&self) -> &[Entry] {
        let offset = entries_offset(self.len);
        // SAFETY: `base` holds `len` initialized entries at `offset` (the offset `block` gives),
        // or is dangling and aligned with `len` 0 and offset 0; the block lives and its entries
        // are not written while `self` is borrowed.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast::<Entry>(), self.len)
        }
    }

    /// The hit index, for tables of more than [`HIT_MIN_REGIONS`] elements.
    #[inline]
    pub(super) fn hit_index(&self) -> Option<&HitIndex> {
        if self.len <= HIT_MIN_REGIONS {
            return None;
        }
        // SAFETY: a table of this length has a hit index at this offset (the one `block`
        // gives), initialized by `build`; it lives as long as the block, and is only used
        // through shared references (its fields are atomics).
        Some(unsafe {
            &*self
                .base
                .as_ptr()
                .add(hit_offset(self.len))
                .cast::<HitIndex>()
        })
    }

    /// The number of elements.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// Copies `src` into `dst`, which is as long.
fn copy<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy between slices of one length");
    // SAFETY: `dst` and `src` are `len` elements each (checked), `MaybeUninit<T>` has `T`'s
    // layout, and a unique and a shared borrow cannot overlap.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len()) }
}

const _: () = assert!(align_of::<Entry>() == align_of::<u64>());

impl Drop for Table {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: a table with elements owns a block allocated by `build` with exactly
            // this layout; its elements need no drop.
            unsafe { alloc::dealloc(self.base.as_ptr(), block(self.len).0) };
        }
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.starts()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(span: u64) -> Entry {
        Entry {
            span,
            region: NonNull::dangling(),
            slot: 0,
        }
    }

    fn spans(t: &Table) -> Vec<u64> {
        t.entries().iter().map(|e| e.span).collect()
    }

    #[test]
    fn inserted_and_removed_keep_starts_and_entries_paired() {
        let t = Table::from_parts(&[10, 30], &[entry(1), entry(3)]);
        let t = t.inserted(1, 20, entry(2)).unwrap();
        assert_eq!(t.starts(), [10, 20, 30]);
        assert_eq!(spans(&t), [1, 2, 3]);
        let t = t
            .inserted(3, 40, entry(4))
            .unwrap()
            .inserted(0, 0, entry(0))
            .unwrap();
        assert_eq!(t.starts(), [0, 10, 20, 30, 40]);
        assert_eq!(spans(&t), [0, 1, 2, 3, 4]);
        let t = t
            .removed(0)
            .unwrap()
            .removed(3)
            .unwrap()
            .removed(1)
            .unwrap();
        assert_eq!(t.starts(), [10, 30]);
        assert_eq!(spans(&t), [1, 3]);
        let t = t.removed(0).unwrap().removed(0).unwrap();
        assert_eq!(t.len(), 0);
        assert!(t.starts().is_empty() && t.entries().is_empty());
    }

    #[test]
    fn hit_index_only_past_the_minimum() {
        let small: Vec<u64> = (0..HIT_MIN_REGIONS as u64).collect();
        let entries: Vec<Entry> = small.iter().map(|&s| entry(s)).collect();
        let t = Table::from_parts(&small, &entries);
        assert!(t.hit_index().is_none());
        let t = t.inserted(HIT_MIN_REGIONS, 99, entry(99)).unwrap();
        let index = t.hit_index().expect("a big table has a hit index");
        assert_eq!(
            index.hit.load(std::sync::atomic::Ordering::Relaxed),
            HIT_OFF
        );
        assert_eq!(spans(&t).last(), Some(&99));
        let t = t.removed(0).unwrap();
        assert!(t.hit_index().is_none());
        assert_eq!(t.starts()[0], 1);
    }

    #[test]
    fn empty_inserted_has_one_element() {
        let t = Table::empty().inserted(0, 7, entry(9)).unwrap();
        assert_eq!(t.starts(), [7]);
        assert_eq!(spans(&t), [9]);
    }

    #[test]
    fn build_fill_panic_frees_block() {
        let result = std::panic::catch_unwind(|| {
            Table::build(3, |_, _| panic!("fill failed"));
        });
        assert!(result.is_err());
    }
}
