//! [`RoomTree`]: a max tree over upper bounds of the largest free range of many allocators.

use alloc::vec::Vec;

use super::tree::heap_refused;
use crate::error::Result;

/// Upper bounds on the largest free range of `len` allocators (or of anything else that has
/// room), in a max tree, so that the first one from a position on whose bound reaches a size
/// is found in O(log len) steps instead of by trying every one before it.
///
/// It is what [`AllocatorSet`](crate::AllocatorSet) keeps over its spaces, for a caller that
/// keeps a list of [`AddressAllocator`](crate::AddressAllocator)s of its own: after each
/// change of allocator `i`, [`set`](Self::set) its
/// [`largest_free_bound`](crate::AddressAllocator::largest_free_bound); a request of `size`
/// units then needs only the allocators [`first_from`](Self::first_from) names. Memory: two
/// `u64`s per entry of the next power of two at or above `len`.
///
/// ```
/// use memvisor_resources::RoomTree;
///
/// let mut t = RoomTree::new(3)?;
/// t.set(0, 0x10);
/// assert_eq!(t.set(1, 0x1000), Some(0));
/// t.set(2, 0x100);
/// // Past the last entry: nothing to set, nothing changes.
/// assert_eq!(t.set(3, 0x1000), None);
/// assert_eq!(t.first_from(0, 0x100), Some(1));
/// assert_eq!(t.first_from(2, 0x100), Some(2));
/// assert_eq!(t.first_from(0, 0x2000), None);
/// # Ok::<(), memvisor_resources::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomTree {
    /// Leaf `i` (at `room.len() / 2 + i`) is the bound of entry `i`, 0 past the last entry;
    /// every inner node `j` is the larger of `2j` and `2j + 1`; node 1 is the root. Empty for
    /// a tree of no entries (every method checks `len` before it reads a node), so that the
    /// nodes are a function of the bounds and derived equality compares bounds.
    room: Vec<u64>,
    len: usize,
}

impl RoomTree {
    /// A tree of `len` entries, each with bound 0 (no room). A tree of no entries holds no
    /// memory and equals `RoomTree::default()`.
    ///
    /// # Errors
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses its nodes.
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(Self::default());
        }
        let nodes = len
            .checked_next_power_of_two()
            .and_then(|w| w.checked_mul(2))
            .ok_or_else(|| heap_refused::<u64>(usize::MAX))?;
        let mut room = Vec::new();
        room.try_reserve_exact(nodes)
            .map_err(|_| heap_refused::<u64>(nodes))?;
        room.resize(nodes, 0);
        Ok(Self { room, len })
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bound of entry `i`, `None` past the last entry.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<u64> {
        (i < self.len).then(|| self.room[self.width() + i])
    }

    /// Sets the bound of entry `i` and returns the bound it had; `None`, and the tree
    /// unchanged, past the last entry (as [`get`](Self::get) answers there). O(log len).
    pub fn set(&mut self, i: usize, bound: u64) -> Option<u64> {
        if i >= self.len {
            return None;
        }
        let mut at = self.width() + i;
        let old = core::mem::replace(&mut self.room[at], bound);
        while at > 1 {
            at /= 2;
            self.room[at] = self.room[2 * at].max(self.room[2 * at + 1]);
        }
        Some(old)
    }

    /// The first entry from `from` on whose bound is at least `size`, if any. O(log len).
    #[must_use]
    pub fn first_from(&self, from: usize, size: u64) -> Option<usize> {
        let width = self.width();
        if from >= self.len {
            return None;
        }
        let mut at = width + from;
        // Up and right until a subtree that may hold it; running off the right edge of the
        // root (node 1) ends at node 0.
        while self.room[at] < size {
            while at % 2 == 1 {
                at /= 2;
            }
            if at == 0 {
                return None;
            }
            at += 1;
        }
        // Down to its leftmost leaf that may hold it.
        while at < width {
            at = if self.room[2 * at] >= size {
                2 * at
            } else {
                2 * at + 1
            };
        }
        // Padding leaves past the last entry are 0 and a `size` of 0 stops at the first leaf
        // reached, which is then at or after `from` and may be padding.
        (at - width < self.len).then_some(at - width)
    }

    /// The largest of `exact(i)` over the entries, where `exact(i)` is at most entry `i`'s
    /// bound: entries are visited in descending order of bound, and only while a bound is
    /// above the largest value found, so with exact bounds `exact` runs once, on the entry
    /// with the largest bound (O(log len)); bounds that are equal to the largest but above
    /// their exact values may each add a call. 0 for an empty tree.
    pub fn largest(&self, mut exact: impl FnMut(usize) -> u128) -> u128 {
        let width = self.width();
        let mut best = 0u128;
        // Each level leaves at most one sibling waiting, and a tree has at most 64 levels.
        let mut stack = [0usize; 2 * usize::BITS as usize];
        let mut depth = usize::from(self.len > 0);
        stack[0] = 1;
        while depth > 0 {
            depth -= 1;
            let at = stack[depth];
            if u128::from(self.room[at]) <= best {
                continue;
            }
            if at >= width {
                best = best.max(exact(at - width));
                continue;
            }
            let (l, r) = (2 * at, 2 * at + 1);
            let (later, first) = if self.room[l] >= self.room[r] {
                (r, l)
            } else {
                (l, r)
            };
            stack[depth] = later;
            stack[depth + 1] = first;
            depth += 2;
        }
        best
    }

    /// The number of leaves: a power of two at or above `len`.
    fn width(&self) -> usize {
        self.room.len() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first entry from `from` on with room for `size`, by a walk.
    fn walk(bounds: &[u64], from: usize, size: u64) -> Option<usize> {
        (from..bounds.len()).find(|&i| bounds[i] >= size)
    }

    #[test]
    fn first_from_and_largest_match_a_walk() {
        let mut next = crate::test_rng::xorshift(0x2545_F491_4F6C_DD1D_u64);
        let lens: &[usize] = if cfg!(miri) {
            &[0, 1, 3, 9]
        } else {
            &[0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 33]
        };
        for &len in lens {
            let mut t = RoomTree::new(len).unwrap();
            let mut bounds = alloc::vec![0u64; len];
            for _ in 0..if cfg!(miri) { 4 } else { 200 } {
                if len > 0 {
                    let i = usize::try_from(next() % len as u64).unwrap();
                    let b = next() % 16;
                    t.set(i, b);
                    bounds[i] = b;
                }
                for from in 0..=len + 1 {
                    for size in 0..=17 {
                        assert_eq!(t.first_from(from, size), walk(&bounds, from, size));
                    }
                }
                let max = bounds.iter().copied().max().unwrap_or(0);
                assert_eq!(t.largest(|i| u128::from(bounds[i])), u128::from(max));
                // Exact values below the bounds: the largest of them is still found.
                let half = bounds.iter().map(|b| b / 2).max().unwrap_or(0);
                assert_eq!(t.largest(|i| u128::from(bounds[i] / 2)), u128::from(half));
                for i in 0..len + 2 {
                    assert_eq!(t.get(i), bounds.get(i).copied());
                }
            }
        }
    }

    #[test]
    fn largest_calls_exact_once_when_the_bounds_are_exact() {
        let n = if cfg!(miri) { 100 } else { 1000 };
        let mut t = RoomTree::new(n).unwrap();
        for i in 0..n {
            t.set(i, (i as u64 * 7919) % 1000);
        }
        let mut calls = 0;
        let l = t.largest(|i| {
            calls += 1;
            u128::from((i as u64 * 7919) % 1000)
        });
        let max = (0..n as u64).map(|i| (i * 7919) % 1000).max().unwrap();
        assert_eq!((l, calls), (u128::from(max), 1));
    }

    #[test]
    fn setting_past_the_last_entry_changes_nothing() {
        for len in [0usize, 1, 3, 4] {
            let mut t = RoomTree::new(len).unwrap();
            for i in 0..len {
                let _ = t.set(i, 7);
            }
            let before = t.clone();
            for i in [len, len + 1, usize::MAX] {
                assert_eq!(t.set(i, u64::MAX), None);
                assert_eq!(t, before, "len {len}, entry {i}");
            }
            if len > 0 {
                assert_eq!(t.set(len - 1, 9), Some(7));
            }
            assert_eq!(t.first_from(0, 10), None);
        }
        let mut empty = RoomTree::default();
        assert_eq!(empty.set(0, 1), None);
        assert_eq!(empty, RoomTree::default());
    }

    #[test]
    fn trees_of_no_entries_are_equal_and_hold_no_memory() {
        let made = RoomTree::new(0).unwrap();
        assert_eq!(made, RoomTree::default());
        assert_eq!(made.room.capacity(), 0);
        let mut one = RoomTree::new(1).unwrap();
        let _ = one.set(0, 5);
        let _ = one.set(0, 0);
        assert_eq!(one, RoomTree::new(1).unwrap());
    }

    #[test]
    fn a_tree_too_large_for_the_address_space_is_refused() {
        assert!(matches!(
            RoomTree::new(usize::MAX),
            Err(crate::Error::HeapRefused { .. })
        ));
    }
}
