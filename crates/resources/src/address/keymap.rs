//! [`KeyMap`]: a `u64`-keyed map whose growth is reserved (and may be refused) before any
//! insert, for the keys and spanning parts of an [`AllocatorSet`](super::AllocatorSet).
//!
//! With `std` it is a hash map (O(1) expected, randomly keyed). Without `std` it is a
//! [`TreeMap`]: the entries live in a dense vector and an AVL tree of the address index maps
//! each key to its slot (the node's `gap` field holds the slot; the tree keeps no largest-gap
//! bounds): O(log k) for k keys.

#[cfg(any(test, not(feature = "std")))]
use alloc::vec::Vec;

#[cfg(any(test, not(feature = "std")))]
use super::tree::{NIL, Tree};
use crate::error::Result;

/// The map of the `std` build: a hash map. Room for new entries is made by
/// [`reserve`](Self::reserve), so that [`insert`](Self::insert) never allocates.
#[cfg(feature = "std")]
#[derive(Clone, Debug)]
pub(crate) struct KeyMap<V> {
    map: std::collections::HashMap<u64, V>,
}

/// The map of the `no_std` build.
#[cfg(not(feature = "std"))]
pub(crate) type KeyMap<V> = TreeMap<V>;

#[cfg(feature = "std")]
impl<V: Copy> KeyMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            map: std::collections::HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, key: u64) -> Option<V> {
        self.map.get(&key).copied()
    }

    /// Makes room for `more` new entries.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses; the map is
    /// unchanged.
    pub(crate) fn reserve(&mut self, more: usize) -> Result<()> {
        self.map
            .try_reserve(more)
            .map_err(|_| super::tree::heap_refused::<(u64, V)>(more))
    }

    /// Inserts `key` (absent) with `value`, in the room [`reserve`](Self::reserve) made.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        self.map.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        self.map.remove(&key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.map.iter().map(|(&k, &v)| (k, v))
    }
}

#[cfg(feature = "std")]
impl<V: Copy + PartialEq> PartialEq for KeyMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

#[cfg(feature = "std")]
impl<V: Copy + Eq> Eq for KeyMap<V> {}

/// A map from `u64` to `V` over a dense entry vector and an AVL index from key to slot. Room
/// for new entries is made by [`reserve`](Self::reserve), so that [`insert`](Self::insert)
/// never allocates.
#[cfg(any(test, not(feature = "std")))]
#[derive(Clone, Debug)]
pub(crate) struct TreeMap<V> {
    index: Tree,
    entries: Vec<(u64, V)>,
}

#[cfg(any(test, not(feature = "std")))]
impl<V: Copy> TreeMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            index: Tree::without_bounds(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The slot of `key`, if present.
    fn slot(&self, key: u64) -> Option<usize> {
        let t = self.index.around(key).pred;
        if t == NIL {
            return None;
        }
        let n = self.index.node(t);
        (n.start == key).then(|| usize::try_from(n.gap).unwrap_or(usize::MAX))
    }

    pub(crate) fn get(&self, key: u64) -> Option<V> {
        self.slot(key).map(|i| self.entries[i].1)
    }

    /// Makes room for `more` new entries.
    ///
    /// # Errors
    ///
    /// [`Error::HeapRefused`](crate::Error::HeapRefused) if the heap refuses; the map is
    /// unchanged (only its spare capacity may have grown).
    pub(crate) fn reserve(&mut self, more: usize) -> Result<()> {
        self.index.try_reserve(more)?;
        self.entries
            .try_reserve(more)
            .map_err(|_| super::tree::heap_refused::<(u64, V)>(more))
    }

    /// Inserts `key` (absent) with `value`, in the room [`reserve`](Self::reserve) made.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        debug_assert!(self.slot(key).is_none(), "key present");
        self.index.insert(key, self.entries.len() as u64);
        self.entries.push((key, value));
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        let i = self.slot(key)?;
        self.index.remove(key, None);
        let (_, value) = self.entries.swap_remove(i);
        // The last entry moved into slot `i`: point its key there.
        if let Some(&(moved, _)) = self.entries.get(i) {
            let t = self.index.around(moved).pred;
            self.index.set_unbounded(t, moved, i as u64);
        }
        Some(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.entries.iter().copied()
    }
}

#[cfg(any(test, not(feature = "std")))]
impl<V: Copy + PartialEq> PartialEq for TreeMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

#[cfg(any(test, not(feature = "std")))]
impl<V: Copy + Eq> Eq for TreeMap<V> {}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeMap;

    use super::*;

    #[test]
    fn tree_map_answers_as_a_btree_map() {
        let mut map = TreeMap::<u32>::new();
        let mut model = BTreeMap::new();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000u32 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Keys from a small set so that inserts, hits and removals all happen, and the
            // extremes of `u64`.
            let key = match s % 10 {
                0 => 0,
                1 => u64::MAX,
                _ => (s >> 8) % 600,
            };
            if s & 0x100 == 0 {
                assert_eq!(map.remove(key), model.remove(&key));
            } else if let Some(&v) = model.get(&key) {
                assert_eq!(map.get(key), Some(v));
            } else {
                assert_eq!(map.get(key), None);
                map.reserve(1).unwrap();
                map.insert(key, step);
                model.insert(key, step);
            }
            assert_eq!(map.len(), model.len());
        }
        let mut all: Vec<(u64, u32)> = map.iter().collect();
        all.sort_unstable();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        let other = map.clone();
        assert_eq!(map, other);
    }
}
